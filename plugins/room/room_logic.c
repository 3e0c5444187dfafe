/* Room plugin: pure logic (validation, rating math, document shaping). */
#include "room_logic.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef enum { F_STRING, F_INT } ftype_t;

typedef struct field_rule {
    const char *name;
    ftype_t type;
    int required;
    long long min, max; /* F_STRING: code points; F_INT: value */
    int nonblank;       /* F_STRING: needs a non-space character */
} field_rule_t;

static const field_rule_t room_rules[] = {
    {"name", F_STRING, 1, 1, ROOM_NAME_MAX, 1},      {"description", F_STRING, 1, 0, ROOM_DESCRIPTION_MAX, 0},
    {"city", F_STRING, 1, 1, ROOM_CITY_MAX, 1},      {"pricePerNight", F_INT, 1, 1, ROOM_PRICE_MAX, 0},
    {"capacity", F_INT, 1, 1, ROOM_CAPACITY_MAX, 0}, {NULL, 0, 0, 0, 0, 0},
};

static const field_rule_t patch_rules[] = {
    {"name", F_STRING, 0, 1, ROOM_NAME_MAX, 1},
    {"description", F_STRING, 0, 0, ROOM_DESCRIPTION_MAX, 0},
    {"pricePerNight", F_INT, 0, 1, ROOM_PRICE_MAX, 0},
    {"capacity", F_INT, 0, 1, ROOM_CAPACITY_MAX, 0},
    {NULL, 0, 0, 0, 0, 0},
};

static const field_rule_t review_rules[] = {
    {"rating", F_INT, 1, 1, 5, 0},
    {"content", F_STRING, 1, 1, ROOM_REVIEW_MAX, 1},
    {NULL, 0, 0, 0, 0, 0},
};

static const char *const room_server_owned[] = {"id",         "hostId",  "status",  "reviewCnt", "rating",
                                                "bookingCnt", "version", "reviews", "ratingSum", NULL};
/* city is part of a room but may not change after creation. */
static const char *const patch_server_owned[] = {"id",      "hostId",  "status",    "reviewCnt", "rating", "bookingCnt",
                                                 "version", "reviews", "ratingSum", "city",      NULL};
static const char *const review_server_owned[] = {"id", "roomId", "authorId", "createdAt", NULL};

static int fail(room_err_t *err, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(room_err_t *err, int status, const char *field, const char *fmt, ...)
{
    va_list ap;
    err->status = status;
    snprintf(err->field, sizeof(err->field), "%s", field);
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
    return status;
}

size_t room_utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static int is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return 0;
    return 1;
}

static int in_list(const char *const *list, const char *key)
{
    for (; *list; list++)
        if (strcmp(*list, key) == 0)
            return 1;
    return 0;
}

static const field_rule_t *find_rule(const field_rule_t *rules, const char *key)
{
    for (; rules->name; rules++)
        if (strcmp(rules->name, key) == 0)
            return rules;
    return NULL;
}

/* Shape errors (400) first for every field, then values (422), so the
 * answer does not depend on the order of members in the body. */
static int check(const json_t *body, const field_rule_t *rules, const char *const *server_owned, room_err_t *err)
{
    const char *key;
    json_t *v;

    memset(err, 0, sizeof(*err));
    if (!json_is_object(body))
        return fail(err, 400, "", "the request body must be a JSON object");
    json_object_foreach((json_t *)body, key, v)
    {
        if (in_list(server_owned, key))
            return fail(err, 400, key, "field '%s' is set by the server and cannot be given", key);
        if (!find_rule(rules, key))
            return fail(err, 400, key, "unknown field '%s'", key);
    }
    for (const field_rule_t *r = rules; r->name; r++) {
        v = json_object_get(body, r->name);
        if (!v) {
            if (r->required)
                return fail(err, 400, r->name, "missing required field '%s'", r->name);
            continue;
        }
        if (r->type == F_STRING && !json_is_string(v))
            return fail(err, 400, r->name, "field '%s' must be a string", r->name);
        if (r->type == F_INT && !json_is_integer(v))
            return fail(err, 400, r->name, "field '%s' must be an integer", r->name);
    }
    for (const field_rule_t *r = rules; r->name; r++) {
        if (!(v = json_object_get(body, r->name)))
            continue;
        if (r->type == F_STRING) {
            const char *s = json_string_value(v);
            size_t n = room_utf8_len(s);
            if (strlen(s) != json_string_length(v))
                return fail(err, 422, r->name, "field '%s' must not contain NUL characters", r->name);
            if ((long long)n < r->min || (long long)n > r->max || (r->nonblank && is_blank(s)))
                return fail(err, 422, r->name, "field '%s' must be %lld to %lld characters%s", r->name, r->min, r->max,
                            r->nonblank ? " and not blank" : "");
        } else {
            json_int_t i = json_integer_value(v);
            if (i < r->min || i > r->max)
                return fail(err, 422, r->name, "field '%s' must be between %lld and %lld", r->name, r->min, r->max);
        }
    }
    return 0;
}

int room_check_create(const json_t *body, room_err_t *err)
{
    return check(body, room_rules, room_server_owned, err);
}

int room_check_patch(const json_t *body, room_err_t *err)
{
    return check(body, patch_rules, patch_server_owned, err);
}

int room_check_review(const json_t *body, room_err_t *err)
{
    return check(body, review_rules, review_server_owned, err);
}

double room_rating(int64_t sum, int64_t cnt)
{
    if (cnt <= 0 || sum <= 0)
        return 0.0;
    /* round(sum / cnt, 1) half up, in integers: tenths = floor((20*sum + cnt) / (2*cnt)) */
    int64_t tenths = (20 * sum + cnt) / (2 * cnt);
    return (double)tenths / 10.0;
}

void room_iso8601(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static int64_t get_int(const json_t *doc, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(doc, key));
}

json_t *room_new_doc(const json_t *body, const char *id, const char *host_id)
{
    return json_pack("{s:s, s:s, s:O, s:O, s:O, s:O, s:O, s:s, s:I, s:I, s:I, s:[], s:[]}", "id", id, "hostId", host_id,
                     "name", json_object_get(body, "name"), "description", json_object_get(body, "description"), "city",
                     json_object_get(body, "city"), "pricePerNight", json_object_get(body, "pricePerNight"), "capacity",
                     json_object_get(body, "capacity"), "status", "ACTIVE", "reviewCnt", (json_int_t)0, "ratingSum",
                     (json_int_t)0, "bookingCnt", (json_int_t)0, "reviews", "bookings");
}

int room_apply_patch(json_t *doc, const json_t *body)
{
    const char *key;
    json_t *v;
    int changed = 0;
    json_object_foreach((json_t *)body, key, v)
    {
        if (!json_equal(json_object_get(doc, key), v)) {
            json_object_set(doc, key, v);
            changed = 1;
        }
    }
    return changed;
}

json_t *room_view(const json_t *doc, int64_t version)
{
    return json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:I, s:f, s:I, s:I}", "id", json_object_get(doc, "id"),
                     "hostId", json_object_get(doc, "hostId"), "name", json_object_get(doc, "name"), "description",
                     json_object_get(doc, "description"), "city", json_object_get(doc, "city"), "pricePerNight",
                     json_object_get(doc, "pricePerNight"), "capacity", json_object_get(doc, "capacity"), "status",
                     json_object_get(doc, "status"), "reviewCnt", (json_int_t)get_int(doc, "reviewCnt"), "rating",
                     room_rating(get_int(doc, "ratingSum"), get_int(doc, "reviewCnt")), "bookingCnt",
                     (json_int_t)get_int(doc, "bookingCnt"), "version", (json_int_t)version);
}

json_t *room_deleted_data(const json_t *doc, int64_t version)
{
    return json_pack("{s:O, s:O, s:s, s:I}", "id", json_object_get(doc, "id"), "hostId", json_object_get(doc, "hostId"),
                     "status", "DELETED", "version", (json_int_t)version);
}

int room_is_active(const json_t *doc)
{
    const char *st = json_string_value(json_object_get(doc, "status"));
    return st && strcmp(st, "ACTIVE") == 0;
}

json_t *room_new_review(const char *id, const char *room_id, const char *author_id, int rating, const char *content,
                        int64_t now_ms)
{
    char ts[32];
    room_iso8601(now_ms, ts);
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s}", "id", id, "roomId", room_id, "authorId", author_id, "rating",
                     rating, "content", content, "createdAt", ts);
}

int room_add_review(json_t *doc, json_t *review)
{
    json_t *arr = json_object_get(doc, "reviews");
    int64_t rating = get_int(review, "rating");
    if (!json_is_array(arr)) {
        arr = json_array();
        if (!arr || json_object_set_new(doc, "reviews", arr) != 0) {
            json_decref(review);
            return -1;
        }
    }
    if (json_array_append_new(arr, review) != 0)
        return -1;
    json_object_set_new(doc, "reviewCnt", json_integer(get_int(doc, "reviewCnt") + 1));
    json_object_set_new(doc, "ratingSum", json_integer(get_int(doc, "ratingSum") + rating));
    return 0;
}

const json_t *room_find_review(const json_t *doc, const char *review_id)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(doc, "reviews"), i, r)
    {
        const char *id = json_string_value(json_object_get(r, "id"));
        if (id && strcmp(id, review_id) == 0)
            return r;
    }
    return NULL;
}

int room_remove_review(json_t *doc, const char *review_id, json_t **removed)
{
    json_t *arr = json_object_get(doc, "reviews"), *r;
    size_t i;
    int64_t cnt, sum;
    *removed = NULL;
    json_array_foreach(arr, i, r)
    {
        const char *id = json_string_value(json_object_get(r, "id"));
        if (id && strcmp(id, review_id) == 0) {
            *removed = json_incref(r);
            json_array_remove(arr, i);
            cnt = get_int(doc, "reviewCnt") - 1;
            sum = get_int(doc, "ratingSum") - get_int(*removed, "rating");
            json_object_set_new(doc, "reviewCnt", json_integer(cnt < 0 ? 0 : cnt));
            json_object_set_new(doc, "ratingSum", json_integer(sum < 0 || cnt <= 0 ? 0 : sum));
            return 0;
        }
    }
    return -1;
}

json_t *room_review_event_data(const json_t *review, const json_t *doc, int64_t version)
{
    return json_pack("{s:O, s:O, s:O, s:O, s:O, s:{s:I, s:f, s:I}}", "id", json_object_get(review, "id"), "roomId",
                     json_object_get(review, "roomId"), "authorId", json_object_get(review, "authorId"), "rating",
                     json_object_get(review, "rating"), "content", json_object_get(review, "content"), "room",
                     "reviewCnt", (json_int_t)get_int(doc, "reviewCnt"), "rating",
                     room_rating(get_int(doc, "ratingSum"), get_int(doc, "reviewCnt")), "version", (json_int_t)version);
}

int room_parse_resv_event(const json_t *event, room_resv_event_t *out, char *why, size_t whylen)
{
    const char *type;
    json_t *data;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(event)) {
        snprintf(why, whylen, "event is not a JSON object");
        return -1;
    }
    out->event_id = json_string_value(json_object_get(event, "id"));
    type = json_string_value(json_object_get(event, "type"));
    if (!out->event_id || !*out->event_id) {
        snprintf(why, whylen, "event has no string id");
        return -1;
    }
    if (!type) {
        snprintf(why, whylen, "event has no string type");
        return -1;
    }
    if (strcmp(type, "ReservationConfirmed") == 0)
        out->kind = ROOM_RESV_CONFIRMED;
    else if (strcmp(type, "ReservationCancelled") == 0)
        out->kind = ROOM_RESV_CANCELLED;
    else
        return 0; /* not ours to act on */
    data = json_object_get(event, "data");
    if (!json_is_object(data)) {
        snprintf(why, whylen, "%s event has no data object", type);
        return -1;
    }
    out->reservation_id = json_string_value(json_object_get(data, "id"));
    out->room_id = json_string_value(json_object_get(data, "roomId"));
    if (!out->reservation_id || !*out->reservation_id) {
        snprintf(why, whylen, "%s event has no string data.id", type);
        return -1;
    }
    if (!out->room_id || !*out->room_id) {
        snprintf(why, whylen, "%s event has no string data.roomId", type);
        return -1;
    }
    return 0;
}

int room_apply_booking(json_t *doc, room_resv_kind_t kind, const char *reservation_id)
{
    json_t *arr = json_object_get(doc, "bookings"), *v;
    size_t i, found = (size_t)-1;

    if (!json_is_array(arr)) {
        arr = json_array();
        if (!arr || json_object_set_new(doc, "bookings", arr) != 0)
            return -1;
    }
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        if (s && strcmp(s, reservation_id) == 0)
            found = i;
    }
    if (kind == ROOM_RESV_CONFIRMED) {
        if (found != (size_t)-1)
            return 0;
        if (json_array_append_new(arr, json_string(reservation_id)) != 0)
            return -1;
    } else if (kind == ROOM_RESV_CANCELLED) {
        if (found == (size_t)-1)
            return 0;
        json_array_remove(arr, found);
    } else {
        return 0;
    }
    json_object_set_new(doc, "bookingCnt", json_integer((json_int_t)json_array_size(arr)));
    return 1;
}

/* Room plugin: pure logic (validation, rating math, document shaping). */
#include "room_logic.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum { F_STRING, F_INT } ftype_t;

typedef struct field_rule {
    const char *name;
    ftype_t type;
    int required;
    long long min, max; /* F_STRING: code points; F_INT: value */
    int nonblank;       /* F_STRING: needs a non-space character */
    int text;           /* F_STRING: 1 = may hold tab / line breaks; 0 = no control character at all */
} field_rule_t;

static const field_rule_t room_rules[] = {
    {"name", F_STRING, 1, 1, ROOM_NAME_MAX, 1, 0},      {"description", F_STRING, 1, 0, ROOM_DESCRIPTION_MAX, 0, 1},
    {"city", F_STRING, 1, 1, ROOM_CITY_MAX, 1, 0},      {"pricePerNight", F_INT, 1, 1, ROOM_PRICE_MAX, 0, 0},
    {"capacity", F_INT, 1, 1, ROOM_CAPACITY_MAX, 0, 0}, {NULL, 0, 0, 0, 0, 0, 0},
};

static const field_rule_t patch_rules[] = {
    {"name", F_STRING, 0, 1, ROOM_NAME_MAX, 1, 0},
    {"description", F_STRING, 0, 0, ROOM_DESCRIPTION_MAX, 0, 1},
    {"pricePerNight", F_INT, 0, 1, ROOM_PRICE_MAX, 0, 0},
    {"capacity", F_INT, 0, 1, ROOM_CAPACITY_MAX, 0, 0},
    {NULL, 0, 0, 0, 0, 0, 0},
};

static const field_rule_t review_rules[] = {
    {"rating", F_INT, 1, 1, 5, 0, 0},
    {"content", F_STRING, 1, 1, ROOM_REVIEW_MAX, 1, 1},
    {NULL, 0, 0, 0, 0, 0, 0},
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

/* 1 when s (len bytes, UTF-8) holds a control character: C0 (NUL included)
 * except tab / CR / LF when `text`, DEL, or C1 (U+0080..U+009F). */
static int has_control(const char *s, size_t len, int text)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 && !(text && (c == '\t' || c == '\n' || c == '\r')))
            return 1;
        if (c == 0x7f ||
            (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f))
            return 1;
    }
    return 0;
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
        if (r->type == F_STRING && has_control(json_string_value(v), json_string_length(v), r->text))
            return fail(err, 400, r->name, "field '%s' must not contain control characters", r->name);
    }
    for (const field_rule_t *r = rules; r->name; r++) {
        if (!(v = json_object_get(body, r->name)))
            continue;
        if (r->type == F_STRING) {
            const char *s = json_string_value(v);
            size_t n = room_utf8_len(s);
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
    return json_pack("{s:s, s:s, s:O, s:O, s:O, s:O, s:O, s:s, s:I, s:I, s:I}", "id", id, "hostId", host_id, "name",
                     json_object_get(body, "name"), "description", json_object_get(body, "description"), "city",
                     json_object_get(body, "city"), "pricePerNight", json_object_get(body, "pricePerNight"), "capacity",
                     json_object_get(body, "capacity"), "status", "ACTIVE", "reviewCnt", (json_int_t)0, "ratingSum",
                     (json_int_t)0, "bookingCnt", (json_int_t)0);
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

json_t *room_review_doc(const json_t *review, int64_t now_ms)
{
    json_t *doc = json_deep_copy(review);
    if (doc && json_object_set_new(doc, "createdMs", json_integer((json_int_t)now_ms)) != 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

json_t *room_review_view(const json_t *doc)
{
    return json_pack("{s:O, s:O, s:O, s:O, s:O, s:O}", "id", json_object_get(doc, "id"), "roomId",
                     json_object_get(doc, "roomId"), "authorId", json_object_get(doc, "authorId"), "rating",
                     json_object_get(doc, "rating"), "content", json_object_get(doc, "content"), "createdAt",
                     json_object_get(doc, "createdAt"));
}

void room_count_review(json_t *room, int sign, int64_t rating)
{
    int64_t cnt = get_int(room, "reviewCnt") + sign, sum = get_int(room, "ratingSum") + sign * rating;
    json_object_set_new(room, "reviewCnt", json_integer(cnt < 0 ? 0 : cnt));
    json_object_set_new(room, "ratingSum", json_integer(sum < 0 || cnt <= 0 ? 0 : sum));
}

json_t *room_review_event_data(const json_t *review, const json_t *doc, int64_t version)
{
    return json_pack("{s:O, s:O, s:O, s:O, s:O, s:{s:I, s:f, s:I}}", "id", json_object_get(review, "id"), "roomId",
                     json_object_get(review, "roomId"), "authorId", json_object_get(review, "authorId"), "rating",
                     json_object_get(review, "rating"), "content", json_object_get(review, "content"), "room",
                     "reviewCnt", (json_int_t)get_int(doc, "reviewCnt"), "rating",
                     room_rating(get_int(doc, "ratingSum"), get_int(doc, "reviewCnt")), "version", (json_int_t)version);
}

/* ---- dates ------------------------------------------------------------------- */

/* Days since 1970-01-01 of y-m-d (proleptic Gregorian; H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)((int64_t)yoe + era * 400 + (*m <= 2));
}

int room_parse_date(const char *s, int64_t *day)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return -1;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    unsigned m = (unsigned)((s[5] - '0') * 10 + (s[6] - '0')), d = (unsigned)((s[8] - '0') * 10 + (s[9] - '0'));
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] + (m == 2 && leap))
        return -1;
    *day = days_from_civil(y, m, d);
    return 0;
}

void room_format_date(int64_t day, char out[11])
{
    int y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    snprintf(out, 11, "%04d-%02u-%02u", y % 10000, m % 100, d % 100);
}

void room_month_bounds(int64_t day, int64_t *first, int64_t *next)
{
    int y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    *first = day - (d - 1);
    *next = m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1);
}

/* ---- query parameters --------------------------------------------------------- */

static int hexv(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decode s[0..len) (form encoding: '+' is a space) into a new string; NULL
 * when a '%' is not followed by two hex digits or encodes NUL. */
static char *qdecode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int h, l;
            if (i + 2 >= len || (h = hexv(s[i + 1])) < 0 || (l = hexv(s[i + 2])) < 0 || (h | l) == 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* A parameter name fit for a message: printable ASCII, at most 40 characters. */
static void printable(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < outlen && o < 40; i++)
        out[o++] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
    out[o] = '\0';
}

/* A decimal integer in [min, max] (digits only, at most 12). 0 or -1. */
static int parse_int(const char *v, int64_t min, int64_t max, int64_t *out)
{
    int64_t n = 0;
    size_t len = strlen(v);
    if (len == 0 || len > 12)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    if (n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

/* 1 when s is valid UTF-8. */
static int valid_utf8(const unsigned char *s)
{
    while (*s) {
        int n = *s < 0x80 ? 0 : (*s & 0xe0) == 0xc0 ? 1 : (*s & 0xf0) == 0xe0 ? 2 : (*s & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0 || (n == 1 && *s < 0xc2))
            return 0;
        s++;
        for (int i = 0; i < n; i++, s++)
            if ((*s & 0xc0) != 0x80)
                return 0;
    }
    return 1;
}

void room_list_query_free(room_list_query_t *q)
{
    free(q->city);
    free(q->cursor);
    free(q->host_id);
    q->city = q->cursor = q->host_id = NULL;
}

int room_parse_list_query(const char *raw, room_query_kind_t kind, int64_t max_nights, room_list_query_t *q,
                          room_err_t *err)
{
    static const char *const room_names[] = {"city",     "guests", "minPrice", "maxPrice", "checkIn",
                                             "checkOut", "limit",  "cursor",   "hostId",   NULL};
    static const char *const review_names[] = {"limit", "cursor", NULL};
    const char *const *names = kind == ROOM_QUERY_ROOMS ? room_names : review_names;
    char *vals[9] = {0};
    char pname[48];
    int rc = 0;

    memset(err, 0, sizeof(*err));
    memset(q, 0, sizeof(*q));
    q->guests = q->min_price = q->max_price = q->check_in = q->check_out = -1;
    q->limit = ROOM_LIMIT_DEFAULT;

    for (const char *p = raw; p && *p;) {
        const char *amp = strchr(p, '&'), *eq;
        size_t seg = amp ? (size_t)(amp - p) : strlen(p), kl;
        char *key = NULL, *val = NULL;
        int idx = -1;
        if (seg == 0)
            goto next; /* "a=1&&b=2", a trailing '&' */
        eq = memchr(p, '=', seg);
        kl = eq ? (size_t)(eq - p) : seg;
        printable(p, kl, pname, sizeof(pname));
        if (!(key = qdecode(p, kl))) {
            rc = fail(err, 400, pname, "query parameter name '%s' has broken percent-encoding", pname);
            goto out;
        }
        for (int i = 0; names[i]; i++)
            if (strcmp(names[i], key) == 0)
                idx = i;
        if (idx < 0) {
            printable(key, strlen(key), pname, sizeof(pname));
            free(key);
            rc = fail(err, 400, pname, "unknown query parameter '%s' (allowed: %s)", pname,
                      kind == ROOM_QUERY_ROOMS
                          ? "city, guests, minPrice, maxPrice, checkIn, checkOut, limit, cursor, hostId"
                          : "limit, cursor");
            goto out;
        }
        free(key);
        if (vals[idx]) {
            rc = fail(err, 400, names[idx], "query parameter '%s' is given more than once", names[idx]);
            goto out;
        }
        if (!(val = eq ? qdecode(eq + 1, seg - kl - 1) : strdup(""))) {
            rc = fail(err, 400, names[idx], "query parameter '%s' has broken percent-encoding", names[idx]);
            goto out;
        }
        vals[idx] = val;
    next:
        if (!amp)
            break;
        p = amp + 1;
    }

    for (int i = 0; names[i]; i++) {
        const char *n = names[i], *v = vals[i];
        if (!v)
            continue;
        if (strcmp(n, "limit") == 0) {
            int64_t l;
            if (parse_int(v, 1, ROOM_LIMIT_MAX, &l) != 0) {
                rc = fail(err, 400, n, "query parameter 'limit' must be an integer from 1 to %d", ROOM_LIMIT_MAX);
                goto out;
            }
            q->limit = (size_t)l;
        } else if (strcmp(n, "cursor") == 0) {
            size_t len = strlen(v);
            int ok = len > 0 && len <= ROOM_CURSOR_MAX;
            for (size_t k = 0; ok && k < len; k++)
                ok = (unsigned char)v[k] > 0x20 && (unsigned char)v[k] < 0x7f;
            if (!ok) {
                rc = fail(err, 400, n, "query parameter 'cursor' is not a cursor of this list");
                goto out;
            }
            q->cursor = strdup(v);
        } else if (strcmp(n, "hostId") == 0) {
            size_t len = strlen(v);
            if (len < 1 || len > ROOM_HOST_ID_MAX || !valid_utf8((const unsigned char *)v) || has_control(v, len, 0)) {
                rc = fail(err, 400, n, "query parameter 'hostId' must be 1 to %d bytes, no control characters",
                          ROOM_HOST_ID_MAX);
                goto out;
            }
            q->host_id = strdup(v);
        } else if (strcmp(n, "city") == 0) {
            size_t len = strlen(v), cp = room_utf8_len(v);
            if (cp < 1 || cp > ROOM_CITY_MAX || !valid_utf8((const unsigned char *)v) || has_control(v, len, 0) ||
                is_blank(v)) {
                rc = fail(err, 400, n, "query parameter 'city' must be 1 to %d characters, no control characters",
                          ROOM_CITY_MAX);
                goto out;
            }
            q->city = strdup(v);
        } else if (strcmp(n, "guests") == 0) {
            if (parse_int(v, 1, ROOM_CAPACITY_MAX, &q->guests) != 0) {
                rc = fail(err, 400, n, "query parameter 'guests' must be an integer from 1 to %d", ROOM_CAPACITY_MAX);
                goto out;
            }
        } else if (strcmp(n, "minPrice") == 0 || strcmp(n, "maxPrice") == 0) {
            if (parse_int(v, 0, ROOM_PRICE_MAX, n[1] == 'i' ? &q->min_price : &q->max_price) != 0) {
                rc = fail(err, 400, n, "query parameter '%s' must be an integer from 0 to %lld", n, ROOM_PRICE_MAX);
                goto out;
            }
        } else { /* checkIn, checkOut */
            if (room_parse_date(v, n[5] == 'I' ? &q->check_in : &q->check_out) != 0) {
                rc = fail(err, 400, n, "query parameter '%s' must be a date YYYY-MM-DD", n);
                goto out;
            }
        }
    }
    if (q->host_id && (q->city || q->guests >= 0 || q->min_price >= 0 || q->max_price >= 0 || q->check_in >= 0)) {
        rc = fail(err, 400, "hostId", "query parameter 'hostId' is given with only 'limit' and 'cursor'");
        goto out;
    }
    if (q->min_price >= 0 && q->max_price >= 0 && q->min_price > q->max_price) {
        rc = fail(err, 400, "minPrice", "query parameter 'minPrice' must not be above 'maxPrice'");
        goto out;
    }
    if ((q->check_in >= 0) != (q->check_out >= 0)) {
        const char *missing = q->check_in >= 0 ? "checkOut" : "checkIn";
        rc = fail(err, 400, missing, "query parameter '%s' is required with '%s'", missing,
                  q->check_in >= 0 ? "checkIn" : "checkOut");
        goto out;
    }
    if (q->check_in >= 0 && q->check_out <= q->check_in) {
        rc = fail(err, 400, "checkOut", "query parameter 'checkOut' must be after 'checkIn'");
        goto out;
    }
    if (q->check_in >= 0 && q->check_out - q->check_in > max_nights) {
        rc = fail(err, 400, "checkOut", "query parameter 'checkOut': a stay may have at most %lld nights",
                  (long long)max_nights);
        goto out;
    }
out:
    for (int i = 0; i < 9; i++)
        free(vals[i]);
    if (rc != 0)
        room_list_query_free(q);
    return rc;
}

/* ---- the availability read model ------------------------------------------------ */

int room_nights_id(const char *room_id, int64_t day, char *out, size_t outlen)
{
    char d[11];
    room_format_date(day, d);
    int n = snprintf(out, outlen, "%s|%.7s", room_id, d);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

json_t *room_nights_new(const char *room_id, int64_t day)
{
    char d[11];
    room_format_date(day, d);
    return json_pack("{s:s, s:s#, s:{}}", "roomId", room_id, "month", d, (size_t)7, "nights");
}

/* [from, to) clipped to the month of doc; 0 or -1 when doc has no valid month. */
static int clip_to_month(const json_t *doc, int64_t *from, int64_t *to)
{
    char first[11];
    int64_t lo, hi, day;
    const char *m = json_string_value(json_object_get(doc, "month"));
    if (!m || strlen(m) != 7)
        return -1;
    snprintf(first, sizeof(first), "%s-01", m);
    if (room_parse_date(first, &day) != 0)
        return -1;
    room_month_bounds(day, &lo, &hi);
    *from = *from < lo ? lo : *from;
    *to = *to > hi ? hi : *to;
    return 0;
}

int room_nights_apply(json_t *doc, int64_t from, int64_t to, const char *resv, int hold)
{
    json_t *nights = json_object_get(doc, "nights");
    int changed = 0;
    if (clip_to_month(doc, &from, &to) != 0)
        return -1;
    if (!json_is_object(nights)) {
        if (!(nights = json_object()) || json_object_set_new(doc, "nights", nights) != 0)
            return -1;
    }
    for (int64_t day = from; day < to; day++) {
        char d[11];
        json_t *held, *v;
        size_t i, found = (size_t)-1;
        room_format_date(day, d);
        held = json_object_get(nights, d);
        json_array_foreach(held, i, v) if (json_is_string(v) && strcmp(json_string_value(v), resv) == 0) found = i;
        if (hold && found == (size_t)-1) {
            if (!json_is_array(held)) {
                if (!(held = json_array()) || json_object_set_new(nights, d, held) != 0)
                    return -1;
            }
            if (json_array_append_new(held, json_string(resv)) != 0)
                return -1;
            changed = 1;
        } else if (!hold && found != (size_t)-1) {
            json_array_remove(held, found);
            if (json_array_size(held) == 0)
                json_object_del(nights, d);
            changed = 1;
        }
    }
    return changed;
}

int room_nights_free(const json_t *doc, int64_t from, int64_t to)
{
    json_t *nights;
    if (!doc)
        return 1;
    nights = json_object_get(doc, "nights");
    if (clip_to_month(doc, &from, &to) != 0)
        return 0;
    for (int64_t day = from; day < to; day++) {
        char d[11];
        room_format_date(day, d);
        if (json_array_size(json_object_get(nights, d)) > 0)
            return 0;
    }
    return 1;
}

/* ---- reservation events ------------------------------------------------------------ */

int room_parse_resv_event(const json_t *event, room_resv_event_t *out, char *why, size_t whylen)
{
    static const struct {
        const char *type;
        room_resv_kind_t kind;
    } kinds[] = {{"ReservationPlaced", ROOM_RESV_PLACED},
                 {"ReservationConfirmed", ROOM_RESV_CONFIRMED},
                 {"ReservationRejected", ROOM_RESV_REJECTED},
                 {"ReservationCancelled", ROOM_RESV_CANCELLED}};
    const char *type, *ci, *co;
    json_t *data;

    memset(out, 0, sizeof(*out));
    out->check_in = out->check_out = -1;
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
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(type, kinds[i].type) == 0)
            out->kind = kinds[i].kind;
    if (out->kind == ROOM_RESV_IGNORE)
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
    if (!out->room_id || !*out->room_id || strchr(out->room_id, '|')) {
        snprintf(why, whylen, "%s event has no valid string data.roomId", type);
        return -1;
    }
    ci = json_string_value(json_object_get(data, "checkIn"));
    co = json_string_value(json_object_get(data, "checkOut"));
    if (room_parse_date(ci, &out->check_in) != 0 || room_parse_date(co, &out->check_out) != 0 ||
        out->check_out <= out->check_in || out->check_out - out->check_in > ROOM_STAY_EVENT_MAX_NIGHTS) {
        snprintf(why, whylen, "%s event has no valid data.checkIn / data.checkOut (at most %d nights)", type,
                 ROOM_STAY_EVENT_MAX_NIGHTS);
        return -1;
    }
    return 0;
}

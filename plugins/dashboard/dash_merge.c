/*
 * Dashboard read model: the pure merge logic. See dash_merge.h.
 */
#include "dash_merge.h"

#include "bnb_plugin.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ID_MAX 64

/* ---- checking ------------------------------------------------------------ */

static int why_set(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int why_set(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    if (why && whylen) {
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return BNB_EINVAL;
}

/* Ids are UUIDs in practice; accept [A-Za-z0-9._:-]{1,64}. */
static int id_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == ':'))
            return 0;
    }
    return n > 0 && n <= ID_MAX;
}

static int date_ok(const char *s)
{
    static const char pat[] = "dddd-dd-dd";
    if (strlen(s) != sizeof(pat) - 1)
        return 0;
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i])
            return 0;
    }
    return 1;
}

typedef enum { T_ID = 1, T_STR, T_DATE, T_INT, T_NUM, T_VER, T_ANY } ftype_t;

typedef struct {
    const char *name;
    ftype_t type;
    int required; /* 1: must be present and not null */
} field_t;

static int check_fields(const json_t *data, const char *where, const field_t *f, char *why, size_t whylen)
{
    for (; f->name; f++) {
        json_t *v = json_object_get(data, f->name);
        if (!v || json_is_null(v)) {
            if (f->required)
                return why_set(why, whylen, "%s.%s is missing", where, f->name);
            continue;
        }
        switch (f->type) {
        case T_ID:
            if (!json_is_string(v) || !id_ok(json_string_value(v)))
                return why_set(why, whylen, "%s.%s is not a valid id", where, f->name);
            break;
        case T_STR:
            if (!json_is_string(v))
                return why_set(why, whylen, "%s.%s is not a string", where, f->name);
            break;
        case T_DATE:
            if (!json_is_string(v) || !date_ok(json_string_value(v)))
                return why_set(why, whylen, "%s.%s is not a YYYY-MM-DD date", where, f->name);
            break;
        case T_INT:
            if (!json_is_integer(v))
                return why_set(why, whylen, "%s.%s is not an integer", where, f->name);
            break;
        case T_NUM:
            if (!json_is_number(v))
                return why_set(why, whylen, "%s.%s is not a number", where, f->name);
            break;
        case T_VER:
            if (!json_is_integer(v) || json_integer_value(v) < 1)
                return why_set(why, whylen, "%s.%s is not a positive integer version", where, f->name);
            break;
        case T_ANY:
            break;
        }
    }
    return 0;
}

static const field_t room_fields[] = {
    {"id", T_ID, 1},
    {"version", T_VER, 1},
    {"hostId", T_STR, 0},
    {"name", T_STR, 0},
    {"description", T_STR, 0},
    {"city", T_STR, 0},
    {"pricePerNight", T_INT, 0},
    {"capacity", T_INT, 0},
    {"status", T_STR, 0},
    {"reviewCnt", T_INT, 0},
    {"rating", T_NUM, 0},
    {"bookingCnt", T_INT, 0},
    {NULL, 0, 0},
};

static const field_t room_deleted_fields[] = {
    {"id", T_ID, 1}, {"version", T_VER, 1}, {"hostId", T_STR, 0}, {"status", T_STR, 0}, {NULL, 0, 0},
};

static const field_t review_fields[] = {
    {"id", T_STR, 0},     {"roomId", T_ID, 1}, {"authorId", T_STR, 0},
    {"rating", T_NUM, 0}, {"room", T_ANY, 1},  {NULL, 0, 0},
};

static const field_t review_room_fields[] = {
    {"reviewCnt", T_INT, 1},
    {"rating", T_NUM, 1},
    {"version", T_VER, 1},
    {NULL, 0, 0},
};

static const field_t reservation_fields[] = {
    {"id", T_ID, 1},         {"roomId", T_ID, 1},   {"version", T_VER, 1},   {"status", T_STR, 1},
    {"hostId", T_STR, 0},    {"guestId", T_STR, 0}, {"checkIn", T_DATE, 0},  {"checkOut", T_DATE, 0},
    {"guests", T_INT, 0},    {"amount", T_INT, 0},  {"paymentId", T_STR, 0}, {"reason", T_STR, 0},
    {"createdAt", T_INT, 0}, {NULL, 0, 0},
};

static const field_t payment_fields[] = {
    {"id", T_ID, 1},      {"reservationId", T_ID, 1}, {"roomId", T_ID, 1},  {"version", T_VER, 1}, {"status", T_STR, 1},
    {"amount", T_INT, 0}, {"payerId", T_STR, 0},      {"hostId", T_STR, 0}, {NULL, 0, 0},
};

static const struct {
    const char *type;
    dash_ev_kind_t kind;
} kinds[] = {
    {"RoomRegistered", DASH_EV_ROOM},
    {"RoomModified", DASH_EV_ROOM},
    {"RoomDeleted", DASH_EV_ROOM_DELETED},
    {"ReviewCreated", DASH_EV_REVIEW},
    {"ReviewDeleted", DASH_EV_REVIEW},
    {"ReservationPlaced", DASH_EV_RESERVATION},
    {"ReservationConfirmed", DASH_EV_RESERVATION},
    {"ReservationRejected", DASH_EV_RESERVATION},
    {"ReservationCancelRequested", DASH_EV_RESERVATION},
    {"ReservationCancelled", DASH_EV_RESERVATION},
    {"PaymentApproved", DASH_EV_PAYMENT},
    {"PaymentDeclined", DASH_EV_PAYMENT},
    {"PaymentCancelled", DASH_EV_PAYMENT},
};

int dash_event_check(const json_t *ev, dash_ev_kind_t *kind, const char **room_id, const char **res_id, char *why,
                     size_t whylen)
{
    const char *type, *subject;
    json_t *data, *v;
    dash_ev_kind_t k = DASH_EV_IGNORE;
    int rc;

    if (!json_is_object(ev))
        return why_set(why, whylen, "event is not a JSON object");
    v = json_object_get(ev, "id");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return why_set(why, whylen, "event id is missing or not a string");
    v = json_object_get(ev, "type");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return why_set(why, whylen, "event type is missing or not a string");
    type = json_string_value(v);
    v = json_object_get(ev, "subject");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return why_set(why, whylen, "event subject is missing or not a string");
    subject = json_string_value(v);
    data = json_object_get(ev, "data");
    if (!json_is_object(data))
        return why_set(why, whylen, "event data is missing or not an object");

    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(kinds[i].type, type) == 0) {
            k = kinds[i].kind;
            break;
        }
    }
    if (k == DASH_EV_IGNORE)
        return 1;

    switch (k) {
    case DASH_EV_ROOM:
        rc = check_fields(data, "data", room_fields, why, whylen);
        break;
    case DASH_EV_ROOM_DELETED:
        rc = check_fields(data, "data", room_deleted_fields, why, whylen);
        break;
    case DASH_EV_REVIEW:
        rc = check_fields(data, "data", review_fields, why, whylen);
        if (rc == 0 && !json_is_object(json_object_get(data, "room")))
            rc = why_set(why, whylen, "data.room is not an object");
        if (rc == 0)
            rc = check_fields(json_object_get(data, "room"), "data.room", review_room_fields, why, whylen);
        break;
    case DASH_EV_RESERVATION:
        rc = check_fields(data, "data", reservation_fields, why, whylen);
        break;
    case DASH_EV_PAYMENT:
        rc = check_fields(data, "data", payment_fields, why, whylen);
        break;
    default:
        rc = why_set(why, whylen, "unhandled kind");
        break;
    }
    if (rc)
        return rc;

    /* The subject is the aggregate id (and the partition key). */
    const char *agg = json_string_value(json_object_get(data, k == DASH_EV_REVIEW ? "roomId" : "id"));
    if (strcmp(agg, subject) != 0)
        return why_set(why, whylen, "%s: subject '%.64s' is not the aggregate id '%s'", type, subject, agg);

    if (kind)
        *kind = k;
    if (room_id)
        *room_id = json_string_value(
            json_object_get(data, (k == DASH_EV_ROOM || k == DASH_EV_ROOM_DELETED) ? "id" : "roomId"));
    if (res_id)
        *res_id = k == DASH_EV_RESERVATION ? json_string_value(json_object_get(data, "id"))
                  : k == DASH_EV_PAYMENT   ? json_string_value(json_object_get(data, "reservationId"))
                                           : NULL;
    return 0;
}

int64_t dash_time_ms(const char *s)
{
    struct tm tm;
    int64_t ms = 0;
    const char *p;

    if (!s)
        return -1;
    memset(&tm, 0, sizeof(tm));
    p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -1;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (strcmp(p, "Z") != 0)
        return -1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* ---- merging ------------------------------------------------------------- */

const char *const dash_statuses[] = {"PENDING", "CONFIRMED", "REJECTED", "CANCEL_REQUESTED", "CANCELLED", NULL};

static json_int_t src_version(const json_t *src)
{
    return json_is_object(src) ? json_integer_value(json_object_get(src, "v")) : 0;
}

/* A copy of data[names...] (missing -> null) plus "v": version. */
static json_t *make_source(const json_t *data, const char *const *names, json_int_t version)
{
    json_t *s = json_object();
    if (!s)
        return NULL;
    if (json_object_set_new(s, "v", json_integer(version)))
        goto fail;
    for (; *names; names++) {
        json_t *v = json_object_get(data, *names);
        if (json_object_set_new(s, *names, v ? json_deep_copy(v) : json_null()))
            goto fail;
    }
    return s;
fail:
    json_decref(s);
    return NULL;
}

/* Replace holder[key] by a new source when `version` is strictly newer.
 * 1 replaced, 0 stale, BNB_ENOMEM. */
static int put_source(json_t *holder, const char *key, const json_t *data, const char *const *names, json_int_t version)
{
    if (version <= src_version(json_object_get(holder, key)))
        return 0;
    json_t *s = make_source(data, names, version);
    if (!s || json_object_set_new(holder, key, s))
        return BNB_ENOMEM;
    return 1;
}

/* src[name] or null (new reference). */
static json_t *pick(const json_t *src, const char *name)
{
    json_t *v = json_is_object(src) ? json_object_get(src, name) : NULL;
    return v ? json_deep_copy(v) : json_null();
}

/* Copy doc[key] (or null) into out[key]; 1 on failure. */
static int keep(json_t *out, const json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);
    return json_object_set(out, key, v ? v : json_null()) != 0;
}

/* Replace doc's members by out's (out's references are taken over). */
static int replace_members(json_t *doc, json_t *out)
{
    int rc = (json_object_clear(doc) || json_object_update(doc, out)) ? BNB_ENOMEM : 0;
    json_decref(out);
    return rc;
}

static const char *const room_src_names[] = {"hostId",        "name",       "description", "city",
                                             "pricePerNight", "capacity",   "status",      "reviewCnt",
                                             "rating",        "bookingCnt", NULL};
static const char *const reviews_src_names[] = {"reviewCnt", "rating", NULL};
static const char *const deleted_src_names[] = {"hostId", "status", NULL};
static const char *const res_src_names[] = {"roomId", "hostId", "guestId",   "checkIn", "checkOut", "guests",
                                            "amount", "status", "paymentId", "reason",  NULL};
static const char *const pay_src_names[] = {"id", "status", "amount", NULL};

/* ---- room summary -------------------------------------------------------- */

static int counted_status(const char *s)
{
    for (int i = 0; s && dash_statuses[i]; i++)
        if (strcmp(dash_statuses[i], s) == 0)
            return 1;
    return 0;
}

/* Rebuild the summary's visible fields from its sources, keys in a fixed
 * order, so that the document depends only on its sources. */
static int derive_sum(json_t *doc)
{
    json_t *out = json_object();
    json_t *room = json_object_get(doc, "_room"), *rev = json_object_get(doc, "_reviews");
    json_t *del = json_object_get(doc, "_deleted"), *counts = json_object_get(doc, "_counts");
    json_int_t vroom = src_version(room), vrev = src_version(rev), vdel = src_version(del);
    int bad = !out;

    if (bad)
        return BNB_ENOMEM;
    json_t *rc = (rev && vrev > vroom) ? rev : room;
    json_t *host = (json_is_object(room) && json_is_string(json_object_get(room, "hostId"))) ? room : del;
    json_t *status = (del && vdel > vroom) ? del : room;
    json_int_t version = vroom > vrev ? vroom : vrev;
    version = version > vdel ? version : vdel;

    bad = bad || keep(out, doc, "id");
    if (json_is_object(room) || json_is_object(del))
        bad = bad || json_object_set_new(out, "listed", json_integer(1));
    bad = bad || json_object_set_new(out, "hostId", pick(host, "hostId"));
    bad = bad || json_object_set_new(out, "name", pick(room, "name"));
    bad = bad || json_object_set_new(out, "description", pick(room, "description"));
    bad = bad || json_object_set_new(out, "city", pick(room, "city"));
    bad = bad || json_object_set_new(out, "pricePerNight", pick(room, "pricePerNight"));
    bad = bad || json_object_set_new(out, "capacity", pick(room, "capacity"));
    bad = bad || json_object_set_new(out, "status", pick(status, "status"));
    if (!bad && json_is_object(del) && status == del && json_is_null(json_object_get(out, "status")))
        bad = json_object_set_new(out, "status", json_string("DELETED"));
    bad = bad || json_object_set_new(out, "reviewCnt", pick(rc, "reviewCnt"));
    bad = bad || json_object_set_new(out, "rating", pick(rc, "rating"));
    bad = bad || json_object_set_new(out, "bookingCnt", pick(room, "bookingCnt"));
    bad = bad || json_object_set_new(out, "version", json_integer(version));
    bad = bad || json_object_set(out, "_room", room ? room : json_null());
    bad = bad || json_object_set(out, "_reviews", rev ? rev : json_null());
    bad = bad || json_object_set(out, "_deleted", del ? del : json_null());
    if (json_is_object(counts))
        bad = bad || json_object_set(out, "_counts", counts);
    else
        bad = bad || json_object_set_new(out, "_counts", json_object());
    if (bad) {
        json_decref(out);
        return BNB_ENOMEM;
    }
    return replace_members(doc, out);
}

json_t *dash_sum_new(const char *room_id)
{
    json_t *doc = json_object();
    if (!doc || json_object_set_new(doc, "id", json_string(room_id)) || derive_sum(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

int dash_sum_apply(json_t *sum, const json_t *ev)
{
    dash_ev_kind_t kind;
    const char *room_id;
    json_t *data = json_object_get(ev, "data"), *room;
    int rc;

    if (!json_is_object(sum) || dash_event_check(ev, &kind, &room_id, NULL, NULL, 0) != 0)
        return BNB_EINVAL;
    if (strcmp(room_id, json_string_value(json_object_get(sum, "id")) ?: "") != 0)
        return BNB_EINVAL;
    switch (kind) {
    case DASH_EV_ROOM:
        rc = put_source(sum, "_room", data, room_src_names, json_integer_value(json_object_get(data, "version")));
        break;
    case DASH_EV_ROOM_DELETED:
        rc = put_source(sum, "_deleted", data, deleted_src_names, json_integer_value(json_object_get(data, "version")));
        break;
    case DASH_EV_REVIEW:
        room = json_object_get(data, "room");
        rc = put_source(sum, "_reviews", room, reviews_src_names, json_integer_value(json_object_get(room, "version")));
        break;
    default:
        return BNB_EINVAL;
    }
    if (rc <= 0)
        return rc;
    rc = derive_sum(sum);
    return rc ? rc : 1;
}

static int count_add(json_t *counts, const char *status, json_int_t delta)
{
    if (!status || !counted_status(status))
        return 0;
    json_int_t n = json_integer_value(json_object_get(counts, status)) + delta;
    return json_object_set_new(counts, status, json_integer(n)) ? BNB_ENOMEM : 0;
}

int dash_sum_count(json_t *sum, const char *from, const char *to)
{
    json_t *counts = json_object_get(sum, "_counts");
    if (!json_is_object(counts)) {
        counts = json_object();
        if (!counts || json_object_set_new(sum, "_counts", counts))
            return BNB_ENOMEM;
    }
    int rc = count_add(counts, from, -1);
    return rc ? rc : count_add(counts, to, 1);
}

int dash_sum_has_room(const json_t *sum)
{
    return json_is_object(json_object_get(sum, "_room")) || json_is_object(json_object_get(sum, "_deleted"));
}

static void strip_private(json_t *obj)
{
    const char *key;
    void *tmp;
    json_t *v;
    json_object_foreach_safe(obj, tmp, key, v)
    {
        if (key[0] == '_')
            json_object_del(obj, key);
    }
}

json_t *dash_sum_public(const json_t *sum)
{
    json_t *v = json_deep_copy(sum), *b = json_object(), *counts = json_object_get(sum, "_counts");
    json_int_t total = 0;
    int bad = !v || !b;

    for (int i = 0; !bad && dash_statuses[i]; i++) {
        json_int_t n = json_integer_value(json_object_get(counts, dash_statuses[i]));
        total += n;
        bad = json_object_set_new(b, dash_statuses[i], json_integer(n)) != 0;
    }
    bad = bad || json_object_set_new(b, "total", json_integer(total));
    if (bad) {
        json_decref(v);
        json_decref(b);
        return NULL;
    }
    strip_private(v);
    json_object_del(v, "listed");
    if (json_object_set_new(v, "bookings", b)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ---- reservation view ---------------------------------------------------- */

/* Rebuild the view's visible fields from its sources (fixed key order). The
 * top-level roomId/guestId/createdAt (the declared, indexed fields) are set
 * only once a reservation event has arrived: a view known only from its
 * payment is listed nowhere. */
static int derive_view(json_t *doc)
{
    json_t *out = json_object();
    json_t *res = json_object_get(doc, "_res"), *pay = json_object_get(doc, "_pay");
    json_t *pid = json_is_object(res) ? json_object_get(res, "paymentId") : NULL;
    json_t *amount = json_is_object(res) ? json_object_get(res, "amount") : NULL;
    json_t *t = json_object_get(doc, "_t");
    int bad = !out;

    /* The reservation service is the authority for paymentId and amount (a
     * rejected reservation keeps paymentId null); the payment fills them in
     * only while no reservation event has arrived yet. */
    if (!json_is_object(res) && json_is_object(pay)) {
        pid = json_object_get(pay, "id");
        amount = json_object_get(pay, "amount");
    }
    bad = bad || keep(out, doc, "id");
    if (json_is_object(res)) {
        bad = bad || json_object_set_new(out, "roomId", pick(res, "roomId"));
        bad = bad || json_object_set_new(out, "guestId", pick(res, "guestId"));
        bad = bad || json_object_set_new(out, "createdAt", json_is_integer(t) ? json_copy(t) : json_null());
    }
    bad = bad || json_object_set_new(out, "hostId", pick(res, "hostId"));
    bad = bad || json_object_set_new(out, "checkIn", pick(res, "checkIn"));
    bad = bad || json_object_set_new(out, "checkOut", pick(res, "checkOut"));
    bad = bad || json_object_set_new(out, "guests", pick(res, "guests"));
    bad = bad || json_object_set_new(out, "amount", amount ? json_deep_copy(amount) : json_null());
    bad = bad || json_object_set_new(out, "status", pick(res, "status"));
    bad = bad || json_object_set_new(out, "paymentId", pid ? json_deep_copy(pid) : json_null());
    bad = bad || json_object_set_new(out, "paymentStatus", pick(pay, "status"));
    bad = bad || json_object_set_new(out, "reason", pick(res, "reason"));
    bad = bad || keep(out, doc, "_res");
    bad = bad || keep(out, doc, "_pay");
    bad = bad || keep(out, doc, "_t");
    bad = bad || keep(out, doc, "_counted");
    if (json_is_array(json_object_get(doc, "_pending")))
        bad = bad || keep(out, doc, "_pending");
    else
        bad = bad || json_object_set_new(out, "_pending", json_array());
    if (bad) {
        json_decref(out);
        return BNB_ENOMEM;
    }
    return replace_members(doc, out);
}

json_t *dash_view_new(const char *res_id)
{
    json_t *doc = json_object();
    if (!doc || json_object_set_new(doc, "id", json_string(res_id)) || derive_view(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* The reservation's status changed to the one of source `res`: record the
 * transition the summary has to count. */
static int note_transition(json_t *view, const json_t *res)
{
    json_t *counted = json_object_get(view, "_counted"), *pending = json_object_get(view, "_pending");
    const char *from = json_string_value(json_object_get(counted, "s"));
    const char *to = json_string_value(json_object_get(res, "status"));
    json_int_t v = src_version(res);
    char mark[96];

    if (!counted_status(from))
        from = NULL;
    if (!counted_status(to))
        to = NULL;
    if ((from == NULL && to == NULL) || (from && to && strcmp(from, to) == 0))
        return 0;
    if (!json_is_array(pending)) {
        pending = json_array();
        if (!pending || json_object_set_new(view, "_pending", pending))
            return BNB_ENOMEM;
    }
    snprintf(mark, sizeof(mark), "n:%s:%lld", json_string_value(json_object_get(view, "id")) ?: "", (long long)v);
    json_t *tr = json_pack("{s:O, s:s?, s:s?, s:s}", "room", json_object_get(res, "roomId"), "from", from, "to", to,
                           "mark", mark);
    if (!tr || json_array_append_new(pending, tr))
        return BNB_ENOMEM;
    json_t *c = json_pack("{s:s?, s:I}", "s", to, "v", v);
    if (!c || json_object_set_new(view, "_counted", c))
        return BNB_ENOMEM;
    return 0;
}

int dash_view_apply(json_t *view, const json_t *ev)
{
    dash_ev_kind_t kind;
    const char *room_id, *res_id;
    json_t *data = json_object_get(ev, "data");
    int rc, changed = 0;

    if (!json_is_object(view) || dash_event_check(ev, &kind, &room_id, &res_id, NULL, 0) != 0)
        return BNB_EINVAL;
    if (strcmp(res_id, json_string_value(json_object_get(view, "id")) ?: "") != 0)
        return BNB_EINVAL;
    switch (kind) {
    case DASH_EV_RESERVATION: {
        /* createdAt: the data's own when it carries one, else the earliest
         * reservation event time seen (ReservationPlaced's once it came). */
        json_t *ca = json_object_get(data, "createdAt"), *t = json_object_get(view, "_t");
        int64_t ms = json_is_integer(ca) ? (int64_t)json_integer_value(ca)
                                         : dash_time_ms(json_string_value(json_object_get(ev, "time")));
        int64_t old = json_is_integer(t) ? (int64_t)json_integer_value(t) : -1;
        if (ms >= 0 && (old < 0 || (json_is_integer(ca) ? ms != old : ms < old))) {
            if (json_object_set_new(view, "_t", json_integer(ms)))
                return BNB_ENOMEM;
            changed = 1;
        }
        rc = put_source(view, "_res", data, res_src_names, json_integer_value(json_object_get(data, "version")));
        if (rc == 1) {
            changed = 1;
            rc = note_transition(view, json_object_get(view, "_res"));
        }
        break;
    }
    case DASH_EV_PAYMENT:
        rc = put_source(view, "_pay", data, pay_src_names, json_integer_value(json_object_get(data, "version")));
        changed = rc == 1;
        break;
    default:
        return BNB_EINVAL;
    }
    if (rc < 0)
        return rc;
    if (!changed)
        return 0;
    rc = derive_view(view);
    return rc ? rc : 1;
}

const json_t *dash_view_pending(const json_t *view)
{
    return json_object_get(view, "_pending");
}

int dash_view_drop_pending(json_t *view, const char *mark)
{
    json_t *p = json_object_get(view, "_pending"), *e;
    size_t i;
    json_array_foreach(p, i, e)
    {
        const char *m = json_string_value(json_object_get(e, "mark"));
        if (m && strcmp(m, mark) == 0)
            return json_array_remove(p, i) == 0;
    }
    return 0;
}

json_t *dash_view_public(const json_t *view)
{
    json_t *v = json_deep_copy(view);
    if (!v)
        return NULL;
    strip_private(v);
    json_object_del(v, "hostId");
    return v;
}

/* ---- documents of the first dashboard ------------------------------------ */

/* data = the source's fields (without "v") + version; NULL when not an object
 * with a positive version. */
static json_t *legacy_data(const json_t *src)
{
    json_int_t v = src_version(src);
    const char *key;
    json_t *val, *data;
    if (!json_is_object(src) || v < 1 || !(data = json_object()))
        return NULL;
    json_object_foreach((json_t *)src, key, val)
    {
        if (strcmp(key, "v") != 0 && json_object_set(data, key, val)) {
            json_decref(data);
            return NULL;
        }
    }
    if (json_object_set_new(data, "version", json_integer(v))) {
        json_decref(data);
        return NULL;
    }
    return data;
}

/* Append {id: "legacy:<agg>:<part>", type, subject, correlationId?, data} when
 * it passes dash_event_check (data is taken over). 0 or BNB_ENOMEM. */
static int legacy_add(json_t *out, const char *agg, const char *part, const char *type, const char *subject,
                      const char *corr, json_t *data)
{
    char id[160];
    if (!data)
        return 0;
    snprintf(id, sizeof(id), "legacy:%s:%s", agg, part);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:o}", "id", id, "type", type, "source", "dashboard-migration",
                           "subject", subject, "correlationId", corr, "data", data);
    if (!ev)
        return BNB_ENOMEM;
    if (dash_event_check(ev, NULL, NULL, NULL, NULL, 0) != 0) {
        json_decref(ev);
        return 0; /* not well formed: left out */
    }
    return json_array_append_new(out, ev) ? BNB_ENOMEM : 0;
}

static const char *legacy_res_type(const char *status)
{
    if (status && strcmp(status, "CONFIRMED") == 0)
        return "ReservationConfirmed";
    if (status && strcmp(status, "REJECTED") == 0)
        return "ReservationRejected";
    if (status && strcmp(status, "CANCEL_REQUESTED") == 0)
        return "ReservationCancelRequested";
    if (status && strcmp(status, "CANCELLED") == 0)
        return "ReservationCancelled";
    return "ReservationPlaced";
}

static const char *legacy_pay_type(const char *status)
{
    if (status && strcmp(status, "DECLINED") == 0)
        return "PaymentDeclined";
    if (status && strcmp(status, "CANCELLED") == 0)
        return "PaymentCancelled";
    return "PaymentApproved";
}

json_t *dash_legacy_events(const json_t *old, const char *room_id)
{
    json_t *out = json_array(), *e, *d;
    const json_t *room = json_object_get(old, "_room"), *del = json_object_get(old, "_deleted");
    const json_t *host = json_string_value(json_object_get(room, "hostId")) ? json_object_get(room, "hostId")
                                                                            : json_object_get(del, "hostId");
    size_t i;
    int rc = out ? 0 : BNB_ENOMEM;

    if (!rc && (d = legacy_data(room)) != NULL && json_object_set_new(d, "id", json_string(room_id)) == 0)
        rc = legacy_add(out, room_id, "room", "RoomModified", room_id, NULL, d);
    if (!rc && (d = legacy_data(del)) != NULL && json_object_set_new(d, "id", json_string(room_id)) == 0)
        rc = legacy_add(out, room_id, "deleted", "RoomDeleted", room_id, NULL, d);
    if (!rc && (d = legacy_data(json_object_get(old, "_reviews"))) != NULL) {
        json_t *data = json_pack("{s:s, s:o}", "roomId", room_id, "room", d);
        rc = data ? legacy_add(out, room_id, "reviews", "ReviewCreated", room_id, NULL, data) : BNB_ENOMEM;
    }
    json_array_foreach(json_object_get(old, "reservations"), i, e)
    {
        const char *res_id = json_string_value(json_object_get(e, "id"));
        if (rc || !res_id)
            continue;
        if ((d = legacy_data(json_object_get(e, "_res"))) != NULL) {
            int bad = json_object_set_new(d, "id", json_string(res_id)) ||
                      json_object_set_new(d, "roomId", json_string(room_id)) ||
                      (host && !json_object_get(d, "hostId") && json_object_set(d, "hostId", (json_t *)host)) ||
                      (!json_object_get(d, "createdAt") && json_object_set_new(d, "createdAt", json_integer(0)));
            if (bad) {
                json_decref(d);
                rc = BNB_ENOMEM;
                continue;
            }
            rc = legacy_add(out, res_id, "res", legacy_res_type(json_string_value(json_object_get(d, "status"))),
                            res_id, res_id, d);
        }
        if (!rc && (d = legacy_data(json_object_get(e, "_pay"))) != NULL) {
            const char *pay_id = json_string_value(json_object_get(d, "id"));
            if (!pay_id || json_object_set_new(d, "reservationId", json_string(res_id)) ||
                json_object_set_new(d, "roomId", json_string(room_id))) {
                json_decref(d);
                continue; /* no payment id: not an event of its own */
            }
            rc = legacy_add(out, res_id, "pay", legacy_pay_type(json_string_value(json_object_get(d, "status"))),
                            pay_id, res_id, d);
        }
    }
    if (rc) {
        json_decref(out);
        return NULL;
    }
    return out;
}

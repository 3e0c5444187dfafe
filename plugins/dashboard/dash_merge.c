/*
 * Dashboard read model: the pure merge logic. See dash_merge.h.
 */
#include "dash_merge.h"

#include "bnb_plugin.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    {"id", T_ID, 1},      {"roomId", T_ID, 1},   {"version", T_VER, 1},   {"status", T_STR, 1},
    {"hostId", T_STR, 0}, {"guestId", T_STR, 0}, {"checkIn", T_DATE, 0},  {"checkOut", T_DATE, 0},
    {"guests", T_INT, 0}, {"amount", T_INT, 0},  {"paymentId", T_STR, 0}, {"reason", T_STR, 0},
    {NULL, 0, 0},
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

int dash_event_check(const json_t *ev, dash_ev_kind_t *kind, const char **room_id, char *why, size_t whylen)
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
    return 0;
}

/* ---- merging ------------------------------------------------------------- */

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

static const char *const room_src_names[] = {"hostId",        "name",       "description", "city",
                                             "pricePerNight", "capacity",   "status",      "reviewCnt",
                                             "rating",        "bookingCnt", NULL};
static const char *const reviews_src_names[] = {"reviewCnt", "rating", NULL};
static const char *const deleted_src_names[] = {"hostId", "status", NULL};
static const char *const res_src_names[] = {"guestId", "checkIn", "checkOut",  "guests",
                                            "amount",  "status",  "paymentId", NULL};
static const char *const pay_src_names[] = {"id", "status", "amount", NULL};

/* Visible fields of one reservation entry from its sources, keys in a fixed
 * order. New reference or NULL. */
static json_t *derive_reservation(const char *id, const json_t *res, const json_t *pay)
{
    json_t *e = json_object();
    int bad = !e;
    json_t *pid = json_is_object(res) ? json_object_get(res, "paymentId") : NULL;
    json_t *amount = json_is_object(res) ? json_object_get(res, "amount") : NULL;

    /* The reservation service is the authority for paymentId and amount (a
     * rejected reservation keeps paymentId null); the payment fills them in
     * only while no reservation event has arrived yet. */
    if (!json_is_object(res) && json_is_object(pay)) {
        pid = json_object_get(pay, "id");
        amount = json_object_get(pay, "amount");
    }

    bad = bad || json_object_set_new(e, "id", json_string(id));
    bad = bad || json_object_set_new(e, "guestId", pick(res, "guestId"));
    bad = bad || json_object_set_new(e, "checkIn", pick(res, "checkIn"));
    bad = bad || json_object_set_new(e, "checkOut", pick(res, "checkOut"));
    bad = bad || json_object_set_new(e, "guests", pick(res, "guests"));
    bad = bad || json_object_set_new(e, "amount", amount ? json_deep_copy(amount) : json_null());
    bad = bad || json_object_set_new(e, "status", pick(res, "status"));
    bad = bad || json_object_set_new(e, "paymentId", pid ? json_deep_copy(pid) : json_null());
    bad = bad || json_object_set_new(e, "paymentStatus", pick(pay, "status"));
    bad = bad || json_object_set_new(e, "_res", res ? json_deep_copy(res) : json_null());
    bad = bad || json_object_set_new(e, "_pay", pay ? json_deep_copy(pay) : json_null());
    if (bad) {
        json_decref(e);
        return NULL;
    }
    return e;
}

static int cmp_null_first(const json_t *a, const json_t *b)
{
    const char *sa = json_string_value(a), *sb = json_string_value(b);
    if (!sa || !sb)
        return (sa != NULL) - (sb != NULL);
    return strcmp(sa, sb);
}

/* Reservations sorted by checkIn (unknown first), then id. */
static int cmp_entries(const void *pa, const void *pb)
{
    const json_t *a = *(json_t *const *)pa, *b = *(json_t *const *)pb;
    int c = cmp_null_first(json_object_get(a, "checkIn"), json_object_get(b, "checkIn"));
    return c ? c : cmp_null_first(json_object_get(a, "id"), json_object_get(b, "id"));
}

/* Rebuild doc's visible fields from its sources, keys in a fixed order, so
 * the document (even its serialisation) depends only on the sources. */
static int derive_doc(json_t *doc)
{
    json_t *out = json_object(), *list = json_array();
    json_t *room = json_object_get(doc, "_room"), *rev = json_object_get(doc, "_reviews");
    json_t *del = json_object_get(doc, "_deleted"), *old = json_object_get(doc, "reservations");
    json_int_t vroom = src_version(room), vrev = src_version(rev), vdel = src_version(del);
    json_t **items = NULL;
    size_t n = json_array_size(old), i;
    int bad = !out || !list;

    if (bad)
        goto fail;
    json_t *counts = (rev && vrev > vroom) ? rev : room;
    json_t *host = (json_is_object(room) && json_is_string(json_object_get(room, "hostId"))) ? room : del;
    json_t *status = (del && vdel > vroom) ? del : room;
    json_int_t version = vroom > vrev ? vroom : vrev;
    version = version > vdel ? version : vdel;

    bad = bad || json_object_set(out, "id", json_object_get(doc, "id"));
    bad = bad || json_object_set_new(out, "hostId", pick(host, "hostId"));
    bad = bad || json_object_set_new(out, "name", pick(room, "name"));
    bad = bad || json_object_set_new(out, "description", pick(room, "description"));
    bad = bad || json_object_set_new(out, "city", pick(room, "city"));
    bad = bad || json_object_set_new(out, "pricePerNight", pick(room, "pricePerNight"));
    bad = bad || json_object_set_new(out, "capacity", pick(room, "capacity"));
    bad = bad || json_object_set_new(out, "status", pick(status, "status"));
    if (!bad && json_is_object(del) && status == del && json_is_null(json_object_get(out, "status")))
        bad = json_object_set_new(out, "status", json_string("DELETED"));
    bad = bad || json_object_set_new(out, "reviewCnt", pick(counts, "reviewCnt"));
    bad = bad || json_object_set_new(out, "rating", pick(counts, "rating"));
    bad = bad || json_object_set_new(out, "bookingCnt", pick(room, "bookingCnt"));
    bad = bad || json_object_set_new(out, "version", json_integer(version));
    if (bad)
        goto fail;

    if (n) {
        items = calloc(n, sizeof(*items));
        if (!items)
            goto fail;
        for (i = 0; i < n; i++) {
            json_t *e = json_array_get(old, i);
            items[i] = derive_reservation(json_string_value(json_object_get(e, "id")), json_object_get(e, "_res"),
                                          json_object_get(e, "_pay"));
            if (!items[i])
                goto fail;
        }
        qsort(items, n, sizeof(*items), cmp_entries);
        for (i = 0; i < n; i++) {
            int r = json_array_append_new(list, items[i]);
            items[i] = NULL;
            if (r)
                goto fail;
        }
    }
    bad = json_object_set_new(out, "reservations", list);
    list = NULL;
    bad = bad || json_object_set(out, "_room", room ? room : json_null());
    bad = bad || json_object_set(out, "_reviews", rev ? rev : json_null());
    bad = bad || json_object_set(out, "_deleted", del ? del : json_null());
    if (bad)
        goto fail;

    /* out holds references to doc's sources: clear doc only after that. */
    if (json_object_clear(doc) || json_object_update(doc, out))
        goto fail;
    json_decref(out);
    free(items);
    return 0;
fail:
    if (items) {
        for (i = 0; i < n; i++)
            json_decref(items[i]);
        free(items);
    }
    json_decref(list);
    json_decref(out);
    return BNB_ENOMEM;
}

json_t *dash_doc_new(const char *room_id)
{
    json_t *doc = json_object();
    if (!doc || json_object_set_new(doc, "id", json_string(room_id)) ||
        json_object_set_new(doc, "reservations", json_array()) || derive_doc(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* The reservation entry `id` in doc, created as a placeholder if absent. */
static json_t *entry_for(json_t *doc, const char *id)
{
    json_t *list = json_object_get(doc, "reservations"), *e;
    size_t i;

    if (!json_is_array(list)) {
        list = json_array();
        if (!list || json_object_set_new(doc, "reservations", list))
            return NULL;
    }
    json_array_foreach(list, i, e)
    {
        const char *eid = json_string_value(json_object_get(e, "id"));
        if (eid && strcmp(eid, id) == 0)
            return e;
    }
    e = json_object();
    if (!e || json_object_set_new(e, "id", json_string(id)) || json_array_append_new(list, e))
        return NULL;
    return e;
}

int dash_apply(json_t *doc, const json_t *ev)
{
    dash_ev_kind_t kind;
    const char *room_id;
    json_t *data = json_object_get(ev, "data"), *e;
    int rc;

    if (!json_is_object(doc) || dash_event_check(ev, &kind, &room_id, NULL, 0) != 0)
        return BNB_EINVAL;
    if (strcmp(room_id, json_string_value(json_object_get(doc, "id")) ?: "") != 0)
        return BNB_EINVAL;

    switch (kind) {
    case DASH_EV_ROOM:
        rc = put_source(doc, "_room", data, room_src_names, json_integer_value(json_object_get(data, "version")));
        break;
    case DASH_EV_ROOM_DELETED:
        rc = put_source(doc, "_deleted", data, deleted_src_names, json_integer_value(json_object_get(data, "version")));
        break;
    case DASH_EV_REVIEW: {
        json_t *room = json_object_get(data, "room");
        rc = put_source(doc, "_reviews", room, reviews_src_names, json_integer_value(json_object_get(room, "version")));
        break;
    }
    case DASH_EV_RESERVATION:
        e = entry_for(doc, json_string_value(json_object_get(data, "id")));
        if (!e)
            return BNB_ENOMEM;
        rc = put_source(e, "_res", data, res_src_names, json_integer_value(json_object_get(data, "version")));
        break;
    case DASH_EV_PAYMENT:
        e = entry_for(doc, json_string_value(json_object_get(data, "reservationId")));
        if (!e)
            return BNB_ENOMEM;
        rc = put_source(e, "_pay", data, pay_src_names, json_integer_value(json_object_get(data, "version")));
        break;
    default:
        return BNB_EINVAL;
    }
    if (rc < 0)
        return rc;
    int drc = derive_doc(doc);
    return drc ? drc : rc;
}

int dash_doc_has_room(const json_t *doc)
{
    return json_is_object(json_object_get(doc, "_room")) || json_is_object(json_object_get(doc, "_deleted"));
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

json_t *dash_doc_view(const json_t *doc)
{
    json_t *v = json_deep_copy(doc), *e;
    size_t i;
    if (!v)
        return NULL;
    strip_private(v);
    json_array_foreach(json_object_get(v, "reservations"), i, e) strip_private(e);
    return v;
}

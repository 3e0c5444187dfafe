/*
 * Room plugin: rooms, their reviews and the availability search (docs/api.md,
 * plugins/README.md).
 *
 * Store (storage v2, ABI 1.1):
 *   rooms    declared: hostId, city, status, pricePerNight, capacity, indexed
 *            for the pages of GET /rooms (status [, city] [, price | capacity];
 *            status, hostId for a host's own rooms).
 *            One bounded document per room (room_logic.h).
 *   reviews  declared: roomId, authorId, createdMs; unique (roomId, authorId)
 *            (one review per guest per room), (roomId, createdMs) for the
 *            newest-first pages. The room keeps counters only.
 *   nights   one document per (room, month): who holds each night, fed by
 *            bearbnb.reservation events (the availability read model).
 *   stays    one document per reservation: whether it is counted in the
 *            room's bookingCnt (so a second Confirmed / a stray Cancelled
 *            changes nothing).
 *   migrations/rooms-v2  progress of the one walk that moves the lists a
 *            room kept before storage v2 (embedded reviews, counted booking
 *            ids) into reviews and stays (migrate_rooms, at init).
 * Every change of a document is ONE commit carrying its events
 * (transactional outbox) and, for an event, its applied mark (a redelivery
 * answers BNB_EALREADY), with optimistic concurrency and a bounded retry.
 */
#include "bnb_idem.h"
#include "bnb_plugin.h"
#include "room_logic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROOM_TOPIC   "bearbnb.room"
#define ROOM_RETRIES 32
#define ROOMS        "rooms"
#define REVIEWS      "reviews"
#define NIGHTS       "nights"
#define STAYS        "stays"
/* Store queries one page of GET /rooms may make (each returns at most the
 * items still missing, so no examined room is skipped by the cursor). */
#define ROOM_PAGE_QUERIES 10
/* Documents per store_get_many (its limit). */
#define ROOM_GET_MANY 1000

static const bnb_host_api_t *host;
static int64_t max_nights = 90;  /* search_max_nights */
static size_t examine_max = 200; /* search_examine */

/* ---- declared collections --------------------------------------------------- */

static const bnb_field_def_t room_fields[] = {
    {"hostId", BNB_FIELD_STR},        {"city", BNB_FIELD_STR},     {"status", BNB_FIELD_STR},
    {"pricePerNight", BNB_FIELD_INT}, {"capacity", BNB_FIELD_INT},
};

static const bnb_index_def_t room_indexes[] = {
    {{"status", NULL}, 0},
    {{"status", "hostId", NULL}, 0}, /* GET /rooms?hostId= (a host's own rooms) */
    {{"status", "city", NULL}, 0},
    {{"status", "pricePerNight", NULL}, 0},
    {{"status", "city", "pricePerNight", NULL}, 0},
    {{"status", "capacity", NULL}, 0},
    {{"status", "city", "capacity", NULL}, 0},
};

static const bnb_field_def_t review_fields[] = {
    {"roomId", BNB_FIELD_STR},
    {"authorId", BNB_FIELD_STR},
    {"createdMs", BNB_FIELD_INT},
};

static const bnb_index_def_t review_indexes[] = {
    {{"roomId", "authorId", NULL}, 1},
    {{"roomId", "createdMs", NULL}, 0},
};

static const bnb_coll_def_t room_colls[] = {
    {ROOMS, room_fields, sizeof(room_fields) / sizeof(room_fields[0]), room_indexes,
     sizeof(room_indexes) / sizeof(room_indexes[0])},
    {REVIEWS, review_fields, sizeof(review_fields) / sizeof(review_fields[0]), review_indexes,
     sizeof(review_indexes) / sizeof(review_indexes[0])},
};

/* 1 when the JSON string v equals s. */
static int str_eq(const json_t *v, const char *s)
{
    const char *t = json_string_value(v);
    return t && s && strcmp(t, s) == 0;
}

/* ---- helpers ------------------------------------------------------------ */

/* Answer a store failure. */
static void respond_store_error(bnb_req_t *req, int rc)
{
    if (rc == BNB_EIO || rc == BNB_EAGAIN || rc == BNB_ETIMEDOUT) {
        host->respond_header(req, "Retry-After", "1");
        host->respond_problem(req, 503, "Service Unavailable", "room storage is unavailable (%d)", rc);
    } else if (rc == BNB_EEXIST) {
        host->respond_problem(req, 409, "Conflict", "the room is being changed concurrently, try again");
    } else if (rc == BNB_ENOMEM) {
        host->respond_problem(req, 500, "Internal Server Error", "out of memory");
    } else {
        host->respond_problem(req, 500, "Internal Server Error", "room storage failed (%d)", rc);
    }
}

/* Answer a failure to reach room `id`: absent (or deleted) is a 404 naming it. */
static void respond_room_error(bnb_req_t *req, const char *id, int rc)
{
    if (rc == BNB_ENOENT)
        host->respond_problem(req, 404, "Not Found", "room '%s' does not exist", id ? id : "");
    else
        respond_store_error(req, rc);
}

/* The live room `id`: 0 with *doc and *version set, BNB_ENOENT when absent or deleted. */
static int load_room(bnb_store_t *st, const char *id, json_t **doc, int64_t *version)
{
    int rc = host->store_get(st, ROOMS, id, doc, version);
    if (rc != 0)
        return rc;
    if (!room_is_active(*doc)) {
        json_decref(*doc);
        *doc = NULL;
        return BNB_ENOENT;
    }
    /* lists a room kept before storage v2: dropped at its next write */
    json_object_del(*doc, "reviews");
    json_object_del(*doc, "bookings");
    return 0;
}

/* One commit of one document (claims untouched). */
static int commit(bnb_store_t *st, bnb_write_op_t op, const char *coll, const char *id, int64_t expect,
                  const json_t *body, const bnb_event_out_t *ev, size_t nev, const char *applied)
{
    bnb_commit_t c = {
        .op = op,
        .coll = coll,
        .id = id,
        .expect_version = expect,
        .body = body,
        .events = ev,
        .nevents = nev,
        .applied_event_id = applied,
    };
    return host->store_commit2(st, &c, NULL);
}

static const json_t *require_body(bnb_req_t *req)
{
    const json_t *body = host->req_body(req);
    if (!json_is_object(body)) {
        host->respond_problem(req, 400, "Bad Request", "the request body must be a JSON object");
        return NULL;
    }
    return body;
}

static void respond_invalid(bnb_req_t *req, const room_err_t *err)
{
    host->respond_problem(req, err->status, err->status == 422 ? "Unprocessable Content" : "Bad Request", "%s",
                          err->detail);
}

/* Parse the query of a list route; answers 400 and returns -1 when invalid. */
static int parse_query(bnb_req_t *req, room_query_kind_t kind, room_list_query_t *q)
{
    room_err_t err;
    if (room_parse_list_query(host->req_query_string(req), kind, max_nights, q, &err) != 0) {
        respond_invalid(req, &err);
        return -1;
    }
    return 0;
}

/* Answer {items, next}; steals items, frees next. */
static void respond_page(bnb_req_t *req, json_t *items, char *next)
{
    json_t *page = json_pack("{s:o, s:s?}", "items", items, "next", next);
    free(next);
    if (!page) {
        host->respond_problem(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    host->respond_json(req, 200, page);
}

/* ---- rooms ---------------------------------------------------------------- */

static void room_create_run(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const json_t *body;
    const char *user = host->req_user(req);
    json_t *doc = NULL, *data = NULL;
    room_err_t err;
    char id[37];
    int rc;

    if (!(body = require_body(req)))
        return;
    if (room_check_create(body, &err) != 0) {
        respond_invalid(req, &err);
        return;
    }
    bnb_idem_rid(host, id); /* the key's room id when retried with one */
    doc = room_new_doc(body, id, user ? user : "");
    data = doc ? room_view(doc, 1) : NULL;
    if (!doc || !data) {
        host->respond_problem(req, 500, "Internal Server Error", "out of memory");
        goto done;
    }
    bnb_event_out_t ev = {.topic = ROOM_TOPIC, .type = "RoomRegistered", .subject = id, .data = data};
    rc = commit(st, BNB_WRITE_PUT, ROOMS, id, 0, doc, &ev, 1, NULL);
    if (rc != 0) {
        respond_store_error(req, rc);
        goto done;
    }
    host->count(ctx, "rooms_registered", 1);
    {
        char loc[64];
        snprintf(loc, sizeof(loc), "/rooms/%s", id);
        host->respond_header(req, "Location", loc);
    }
    host->respond_json(req, 201, data);
    data = NULL;
done:
    json_decref(data);
    json_decref(doc);
}

/* 1 when room `id` is free for every night of [in, out) in the read model;
 * 0 when not; a negative store error. At most one get per month. */
static int room_free(bnb_store_t *st, const char *id, int64_t in, int64_t out)
{
    for (int64_t first = in; first < out;) {
        int64_t lo, next, version;
        json_t *doc = NULL;
        char nid[256];
        int rc, free_;
        room_month_bounds(first, &lo, &next);
        if (room_nights_id(id, first, nid, sizeof(nid)) != 0)
            return BNB_EINVAL;
        rc = host->store_get(st, NIGHTS, nid, &doc, &version);
        if (rc == BNB_ENOENT) {
            first = next;
            continue;
        }
        if (rc != 0)
            return rc;
        free_ = room_nights_free(doc, in, out);
        json_decref(doc);
        if (!free_)
            return 0;
        first = next;
    }
    return 1;
}

/* free_[k] = 1 when room ids[k] is free for every night of [in, out) in the
 * read model, else 0: the month documents of all n rooms in one
 * store_get_many (per 1000 documents) instead of a round trip per room and
 * month; room_free per room with a host older than ABI 1.4. 0 or a
 * negative store error. */
static int rooms_free(bnb_store_t *st, const char *const *ids, size_t n, int64_t in, int64_t out, unsigned char *free_)
{
    size_t months = 0, nid, k, j;
    char(*nids)[256] = NULL;
    const char **nidp = NULL;
    int rc = 0;

    if (n == 0)
        return 0;
    if (!BNB_HAS(host, store_get_many)) {
        for (k = 0; k < n; k++) {
            int fr = room_free(st, ids[k], in, out);
            if (fr < 0)
                return fr;
            free_[k] = (unsigned char)fr;
        }
        return 0;
    }
    for (int64_t first = in, lo, next; first < out; first = next) {
        room_month_bounds(first, &lo, &next);
        months++;
    }
    nid = n * months;
    nids = calloc(nid, sizeof *nids);
    nidp = calloc(nid, sizeof *nidp);
    if (!nids || !nidp) {
        rc = BNB_ENOMEM;
        goto out;
    }
    for (k = 0; k < n; k++) {
        int64_t first = in, lo, next;
        free_[k] = 1;
        for (j = 0; j < months; j++, first = next) {
            room_month_bounds(first, &lo, &next);
            if (room_nights_id(ids[k], first, nids[k * months + j], sizeof nids[0]) != 0) {
                rc = BNB_EINVAL;
                goto out;
            }
            nidp[k * months + j] = nids[k * months + j];
        }
    }
    for (size_t at = 0; at < nid; at += ROOM_GET_MANY) {
        size_t m = nid - at < ROOM_GET_MANY ? nid - at : ROOM_GET_MANY;
        json_t *docs = NULL;
        if ((rc = host->store_get_many(st, NIGHTS, nidp + at, m, &docs)) != 0)
            goto out;
        for (size_t i = 0; i < m; i++) {
            const json_t *it = json_array_get(docs, i);
            if (json_is_object(it) && !room_nights_free(json_object_get(it, "body"), in, out))
                free_[(at + i) / months] = 0;
        }
        json_decref(docs);
    }
out:
    free(nids);
    free(nidp);
    return rc;
}

/* The rows of one store query of GET /rooms: those that pass the checks
 * beyond the indexes (active, capacity under a price range, free for the
 * stay: every candidate's nights in one rooms_free) are appended to items. */
static int list_round(bnb_store_t *st, const room_list_query_t *q, const json_t *rows, json_t *items, size_t *need,
                      size_t *examined)
{
    size_t nrows = json_array_size(rows), ncand = 0, i;
    const json_t **cand = calloc(nrows ? nrows : 1, sizeof *cand);
    const char **cid = calloc(nrows ? nrows : 1, sizeof *cid);
    unsigned char *free_ = calloc(nrows ? nrows : 1, 1);
    const json_t *row;
    int rc = 0;

    if (!cand || !cid || !free_) {
        rc = BNB_ENOMEM;
        goto out;
    }
    json_array_foreach(rows, i, row)
    {
        const json_t *doc = json_object_get(row, "body");
        const char *id = json_string_value(json_object_get(row, "id"));
        (*examined)++;
        if (!room_is_active(doc) || !id)
            continue;
        if (q->guests > 0 && json_integer_value(json_object_get(doc, "capacity")) < q->guests)
            continue;
        cand[ncand] = row;
        cid[ncand++] = id;
    }
    if (q->check_in >= 0)
        rc = rooms_free(st, cid, ncand, q->check_in, q->check_out, free_);
    else
        memset(free_, 1, ncand);
    for (size_t k = 0; rc == 0 && k < ncand; k++) {
        if (!free_[k])
            continue;
        json_t *v = room_view(json_object_get(cand[k], "body"),
                              (int64_t)json_integer_value(json_object_get(cand[k], "version")));
        if (!v || json_array_append_new(items, v) != 0)
            rc = BNB_ENOMEM;
        else
            (*need)--;
    }
out:
    free(cand);
    free(cid);
    free(free_);
    return rc;
}

/* GET /rooms: one page from the indexes. Equality on status (and city), the
 * price range or the capacity (guests) as the index's range and order; the
 * other filters (capacity under a price range, the stay's nights) are
 * checked here on at most examine_max candidates per page, so a page may
 * hold fewer than `limit` rooms and still have a `next`. */
static void room_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    room_list_query_t q;
    bnb_cond_t conds[4];
    size_t nconds = 0, need, examined = 0;
    const char *order_by = NULL;
    json_t *items = NULL;
    char *cursor = NULL;
    int rc = 0, filtered;

    if (parse_query(req, ROOM_QUERY_ROOMS, &q) != 0)
        return;
    conds[nconds++] = (bnb_cond_t){.field = "status", .op = BNB_Q_EQ, .str = "ACTIVE"};
    if (q.host_id)
        conds[nconds++] = (bnb_cond_t){.field = "hostId", .op = BNB_Q_EQ, .str = q.host_id};
    if (q.city)
        conds[nconds++] = (bnb_cond_t){.field = "city", .op = BNB_Q_EQ, .str = q.city};
    if (q.min_price >= 0 || q.max_price >= 0) {
        order_by = "pricePerNight";
        if (q.min_price >= 0)
            conds[nconds++] = (bnb_cond_t){.field = "pricePerNight", .op = BNB_Q_GE, .num = q.min_price};
        if (q.max_price >= 0)
            conds[nconds++] = (bnb_cond_t){.field = "pricePerNight", .op = BNB_Q_LE, .num = q.max_price};
    } else if (q.guests > 0) {
        order_by = "capacity";
        conds[nconds++] = (bnb_cond_t){.field = "capacity", .op = BNB_Q_GE, .num = q.guests};
    }
    filtered = q.check_in >= 0 || (q.guests > 0 && order_by && strcmp(order_by, "capacity") != 0);
    if (!(items = json_array())) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    cursor = q.cursor;
    q.cursor = NULL;
    need = q.limit;
    for (int round = 0; need > 0 && round < ROOM_PAGE_QUERIES; round++) {
        size_t ask = need;
        json_t *rows = NULL;
        char *next = NULL;
        if (filtered && ask > examine_max - examined)
            ask = examine_max - examined;
        if (ask == 0)
            break;
        bnb_query_t sq = {
            .coll = ROOMS, .conds = conds, .nconds = nconds, .order_by = order_by, .limit = ask, .cursor = cursor};
        rc = host->store_query(st, &sq, &rows, &next);
        if (rc == BNB_EINVAL && cursor && round == 0) {
            host->respond_problem(req, 400, "Bad Request", "query parameter 'cursor' is not a cursor of this list");
            goto out;
        }
        if (rc != 0)
            goto fail;
        rc = list_round(st, &q, rows, items, &need, &examined);
        if (rc != 0) {
            json_decref(rows);
            free(next);
            goto fail;
        }
        json_decref(rows);
        free(cursor);
        cursor = next;
        if (!cursor)
            break;
    }
    respond_page(req, items, cursor);
    room_list_query_free(&q);
    return;
fail:
    respond_store_error(req, rc);
out:
    json_decref(items);
    free(cursor);
    room_list_query_free(&q);
}

static void room_get(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *id = host->req_param(req, "id");
    json_t *doc = NULL;
    int64_t version = 0;
    int rc = load_room(host->store(ctx), id, &doc, &version);
    if (rc != 0) {
        respond_room_error(req, id, rc);
        return;
    }
    host->respond_json(req, 200, room_view(doc, version));
    json_decref(doc);
}

static void room_patch(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *id = host->req_param(req, "id"), *user = host->req_user(req);
    const json_t *body;
    room_err_t err;
    int rc = BNB_EEXIST;

    if (!(body = require_body(req)))
        return;
    if (room_check_patch(body, &err) != 0) {
        respond_invalid(req, &err);
        return;
    }
    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL, *data = NULL;
        int64_t version = 0;
        if ((rc = load_room(st, id, &doc, &version)) != 0)
            break;
        if (!str_eq(json_object_get(doc, "hostId"), user)) {
            json_decref(doc);
            host->respond_problem(req, 403, "Forbidden", "room '%s' belongs to another host", id);
            return;
        }
        if (!room_apply_patch(doc, body)) {
            host->respond_json(req, 200, room_view(doc, version));
            json_decref(doc);
            return;
        }
        if (!(data = room_view(doc, version + 1))) {
            json_decref(doc);
            rc = BNB_ENOMEM;
            break;
        }
        bnb_event_out_t ev = {.topic = ROOM_TOPIC, .type = "RoomModified", .subject = id, .data = data};
        rc = commit(st, BNB_WRITE_PUT, ROOMS, id, version, doc, &ev, 1, NULL);
        json_decref(doc);
        if (rc == 0) {
            host->respond_json(req, 200, data);
            return;
        }
        json_decref(data);
    }
    respond_room_error(req, id, rc);
}

static void room_delete(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *id = host->req_param(req, "id"), *user = host->req_user(req);
    int rc = BNB_EEXIST;

    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL, *data = NULL;
        int64_t version = 0;
        if ((rc = load_room(st, id, &doc, &version)) != 0)
            break;
        if (!str_eq(json_object_get(doc, "hostId"), user)) {
            json_decref(doc);
            host->respond_problem(req, 403, "Forbidden", "room '%s' belongs to another host", id);
            return;
        }
        /* Keep a tombstone: the id is never reused and late events are ignored. */
        json_object_set_new(doc, "status", json_string("DELETED"));
        if (!(data = room_deleted_data(doc, version + 1))) {
            json_decref(doc);
            rc = BNB_ENOMEM;
            break;
        }
        bnb_event_out_t ev = {.topic = ROOM_TOPIC, .type = "RoomDeleted", .subject = id, .data = data};
        rc = commit(st, BNB_WRITE_PUT, ROOMS, id, version, doc, &ev, 1, NULL);
        json_decref(doc);
        json_decref(data);
    }
    if (rc == 0) {
        host->count(ctx, "rooms_deleted", 1);
        host->respond_empty(req, 204);
    } else {
        respond_room_error(req, id, rc);
    }
}

/* ---- reviews -------------------------------------------------------------- */

/* Count review `review` (sign +1, mark "review+:<id>", ReviewCreated) or
 * uncount it (-1, "review-:<id>", ReviewDeleted) in its room, once: the mark
 * makes a repeat answer 0 without a change. BNB_ENOENT when the room is gone. */
static int count_review(bnb_store_t *st, const json_t *review, int sign)
{
    const char *room_id = json_string_value(json_object_get(review, "roomId"));
    const char *rid = json_string_value(json_object_get(review, "id"));
    int64_t rating = (int64_t)json_integer_value(json_object_get(review, "rating"));
    char mark[128];
    int rc = BNB_EEXIST;

    if (!room_id || !rid)
        return BNB_EINVAL;
    snprintf(mark, sizeof(mark), "review%c:%s", sign > 0 ? '+' : '-', rid);
    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL, *data = NULL, *view = NULL;
        int64_t version = 0;
        if ((rc = load_room(st, room_id, &doc, &version)) != 0)
            break;
        room_count_review(doc, sign, rating);
        view = room_review_view(review);
        if (!view || !(data = room_review_event_data(view, doc, version + 1))) {
            json_decref(view);
            json_decref(doc);
            rc = BNB_ENOMEM;
            break;
        }
        bnb_event_out_t ev = {.topic = ROOM_TOPIC,
                              .type = sign > 0 ? "ReviewCreated" : "ReviewDeleted",
                              .subject = room_id,
                              .data = data};
        rc = commit(st, BNB_WRITE_PUT, ROOMS, room_id, version, doc, &ev, 1, mark);
        json_decref(view);
        json_decref(doc);
        json_decref(data);
    }
    return rc == BNB_EALREADY ? 0 : rc;
}

static void review_create_run(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *room_id = host->req_param(req, "id"), *user = host->req_user(req);
    const json_t *body;
    json_t *review = NULL, *doc = NULL, *room = NULL;
    room_err_t err;
    char rid[37];
    int64_t version;
    int rc, stored = 0;

    if (!(body = require_body(req)))
        return;
    if (room_check_review(body, &err) != 0) {
        respond_invalid(req, &err);
        return;
    }
    if ((rc = load_room(st, room_id, &room, &version)) != 0) {
        respond_room_error(req, room_id, rc);
        return;
    }
    if (str_eq(json_object_get(room, "hostId"), user)) {
        json_decref(room);
        host->respond_problem(req, 403, "Forbidden", "the host of room '%s' cannot review it", room_id);
        return;
    }
    json_decref(room);
    bnb_idem_rid(host, rid); /* the key's review id when retried with one */
    if (!(review =
              room_new_review(rid, room_id, user ? user : "", (int)json_integer_value(json_object_get(body, "rating")),
                              json_string_value(json_object_get(body, "content")), host->now_ms())) ||
        !(doc = room_review_doc(review, host->now_ms()))) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    /* The review first (its unique index says whether this guest already
     * reviewed the room), then the room's counters. */
    rc = commit(st, BNB_WRITE_PUT, REVIEWS, rid, 0, doc, NULL, 0, NULL);
    if (rc == BNB_ETAKEN) {
        host->respond_problem(req, 409, "Conflict", "'%s' has already reviewed room '%s'", user ? user : "", room_id);
        goto out;
    }
    if (rc != 0)
        goto fail;
    stored = 1;
    if ((rc = count_review(st, doc, +1)) != 0)
        goto fail;
    host->count(ctx, "reviews_created", 1);
    {
        char loc[64];
        snprintf(loc, sizeof(loc), "/reviews/%s", rid);
        host->respond_header(req, "Location", loc);
    }
    host->respond_json(req, 201, review);
    review = NULL;
    goto out;
fail:
    if (stored) /* not counted: take it back (a leftover would only be uncounted) */
        commit(st, BNB_WRITE_DELETE, REVIEWS, rid, -1, NULL, NULL, 0, NULL);
    respond_room_error(req, room_id, rc);
out:
    json_decref(doc);
    json_decref(review);
}

static void review_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *id = host->req_param(req, "id");
    room_list_query_t q;
    json_t *doc = NULL, *rows = NULL, *items = NULL, *row;
    char *next = NULL;
    int64_t version = 0;
    size_t i;
    int rc;

    if (parse_query(req, ROOM_QUERY_REVIEWS, &q) != 0)
        return;
    if ((rc = load_room(st, id, &doc, &version)) != 0) {
        respond_room_error(req, id, rc);
        goto out;
    }
    json_decref(doc);
    bnb_cond_t cond = {.field = "roomId", .op = BNB_Q_EQ, .str = id};
    bnb_query_t sq = {.coll = REVIEWS,
                      .conds = &cond,
                      .nconds = 1,
                      .order_by = "createdMs",
                      .descending = 1,
                      .limit = q.limit,
                      .cursor = q.cursor};
    rc = host->store_query(st, &sq, &rows, &next);
    if (rc == BNB_EINVAL && q.cursor) {
        host->respond_problem(req, 400, "Bad Request", "query parameter 'cursor' is not a cursor of this list");
        goto out;
    }
    if (rc != 0 || !(items = json_array())) {
        respond_store_error(req, rc ? rc : BNB_ENOMEM);
        goto out;
    }
    json_array_foreach(rows, i, row) json_array_append_new(items, room_review_view(json_object_get(row, "body")));
    respond_page(req, items, next);
    next = NULL;
out:
    free(next);
    json_decref(rows);
    room_list_query_free(&q);
}

static void review_delete(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *rid = host->req_param(req, "id"), *user = host->req_user(req);
    json_t *doc = NULL;
    int64_t version = 0;
    int rc;

    if ((rc = host->store_get(st, REVIEWS, rid, &doc, &version)) != 0) {
        if (rc == BNB_ENOENT)
            host->respond_problem(req, 404, "Not Found", "review '%s' does not exist", rid);
        else
            respond_store_error(req, rc);
        return;
    }
    if (!str_eq(json_object_get(doc, "authorId"), user)) {
        json_decref(doc);
        host->respond_problem(req, 403, "Forbidden", "only the author may delete review '%s'", rid);
        return;
    }
    /* Counted once (a no-op unless its creation stopped half-way), then
     * uncounted once; both marked, so a retried DELETE changes nothing more. */
    rc = count_review(st, doc, +1);
    if (rc == 0)
        rc = count_review(st, doc, -1);
    if (rc == BNB_ENOENT) /* the room is gone: nothing to count */
        rc = 0;
    if (rc == 0) {
        rc = commit(st, BNB_WRITE_DELETE, REVIEWS, rid, -1, NULL, NULL, 0, NULL);
        if (rc == BNB_ENOENT) /* a concurrent DELETE won */
            rc = 0;
    }
    json_decref(doc);
    if (rc != 0) {
        respond_store_error(req, rc);
        return;
    }
    host->count(ctx, "reviews_deleted", 1);
    host->respond_empty(req, 204);
}

/* ---- events ----------------------------------------------------------------- */

/* Hold or free the nights of `ev` in the month document starting at `first`. */
static int apply_month(bnb_store_t *st, const room_resv_event_t *ev, int64_t first, int hold)
{
    char nid[256];
    int rc = BNB_EEXIST;
    if (room_nights_id(ev->room_id, first, nid, sizeof(nid)) != 0)
        return BNB_EINVAL;
    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL;
        int64_t version = 0;
        int changed;
        rc = host->store_get(st, NIGHTS, nid, &doc, &version);
        if (rc == BNB_ENOENT) {
            if (!hold)
                return 0; /* nothing held there */
            version = 0;
            if (!(doc = room_nights_new(ev->room_id, first)))
                return BNB_ENOMEM;
        } else if (rc != 0) {
            return rc;
        }
        changed = room_nights_apply(doc, ev->check_in, ev->check_out, ev->reservation_id, hold);
        if (changed <= 0) {
            json_decref(doc);
            return changed < 0 ? BNB_ENOMEM : 0;
        }
        rc = commit(st, BNB_WRITE_PUT, NIGHTS, nid, version, doc, NULL, 0, ev->event_id);
        json_decref(doc);
    }
    return rc == BNB_EALREADY ? 0 : rc;
}

/* Count (Confirmed) or uncount (Cancelled) the reservation in its room's
 * bookingCnt, once per reservation (its `stays` document remembers). */
static int count_booking(bnb_ctx_t *ctx, bnb_store_t *st, const room_resv_event_t *ev)
{
    int want = ev->kind == ROOM_RESV_CONFIRMED, rc;
    json_t *stay = NULL;
    int64_t sv = 0;

    rc = host->store_get(st, STAYS, ev->reservation_id, &stay, &sv);
    if (rc != 0 && rc != BNB_ENOENT)
        return rc;
    int counted = rc == 0 && json_is_true(json_object_get(stay, "counted"));
    json_decref(stay);
    if (counted == want) { /* already counted / never counted */
        host->log(ctx, "info", "%s: reservation %s %s counted in room %s, nothing to change", ev->event_id,
                  ev->reservation_id, want ? "already" : "not", ev->room_id);
        return 0;
    }
    rc = BNB_EEXIST;
    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL, *data = NULL;
        int64_t version = 0, cnt;
        rc = load_room(st, ev->room_id, &doc, &version);
        if (rc == BNB_ENOENT) {
            host->log(ctx, "info", "ignoring %s for unknown or deleted room %s", ev->event_id, ev->room_id);
            return 0;
        }
        if (rc != 0)
            return rc;
        cnt = (int64_t)json_integer_value(json_object_get(doc, "bookingCnt")) + (want ? 1 : -1);
        json_object_set_new(doc, "bookingCnt", json_integer(cnt < 0 ? 0 : cnt));
        if (!(data = room_view(doc, version + 1))) {
            json_decref(doc);
            return BNB_ENOMEM;
        }
        bnb_event_out_t out = {.topic = ROOM_TOPIC, .type = "RoomModified", .subject = ev->room_id, .data = data};
        rc = commit(st, BNB_WRITE_PUT, ROOMS, ev->room_id, version, doc, &out, 1, ev->event_id);
        json_decref(doc);
        json_decref(data);
    }
    if (rc != 0 && rc != BNB_EALREADY)
        return rc;
    if (!(stay = json_pack("{s:s, s:b}", "roomId", ev->room_id, "counted", want)))
        return BNB_ENOMEM;
    rc = commit(st, BNB_WRITE_PUT, STAYS, ev->reservation_id, -1, stay, NULL, 0, NULL);
    json_decref(stay);
    return rc;
}

static int on_reservation(bnb_ctx_t *ctx, const json_t *event)
{
    bnb_store_t *st = host->store(ctx);
    room_resv_event_t ev;
    char why[200];
    int rc, hold;

    if (room_parse_resv_event(event, &ev, why, sizeof(why)) != 0) {
        host->event_reject(ctx, "%s", why);
        return BNB_EINVAL;
    }
    if (ev.kind == ROOM_RESV_IGNORE)
        return 0;
    hold = ev.kind == ROOM_RESV_PLACED || ev.kind == ROOM_RESV_CONFIRMED;
    for (int64_t first = ev.check_in; first < ev.check_out;) {
        int64_t lo, next;
        room_month_bounds(first, &lo, &next);
        if ((rc = apply_month(st, &ev, first, hold)) != 0)
            return rc == BNB_EEXIST ? BNB_EAGAIN : rc; /* still contended: redeliver later */
        first = next;
    }
    if (ev.kind == ROOM_RESV_CONFIRMED || ev.kind == ROOM_RESV_CANCELLED) {
        rc = count_booking(ctx, st, &ev);
        return rc == BNB_EEXIST ? BNB_EAGAIN : rc;
    }
    return 0;
}

/* ---- Idempotency-Key (plugins/common/bnb_idem.h) ------------------------------ */

/* The room `rid` an earlier run of this key created before it could answer: 201. */
static int room_recover(bnb_ctx_t *ctx, bnb_req_t *req, const char *rid)
{
    json_t *doc = NULL;
    int64_t version = 0;
    int rc = load_room(host->store(ctx), rid, &doc, &version);
    if (rc == BNB_ENOENT)
        return 0;
    if (rc != 0) {
        respond_store_error(req, rc);
        return 1;
    }
    if (!str_eq(json_object_get(doc, "hostId"), host->req_user(req))) {
        json_decref(doc);
        return 0;
    }
    char loc[64];
    snprintf(loc, sizeof(loc), "/rooms/%s", rid);
    host->respond_header(req, "Location", loc);
    host->respond_json(req, 201, room_view(doc, version));
    json_decref(doc);
    return 1;
}

/* The review `rid` an earlier run of this key stored: counted now if it was
 * not (the applied mark makes that once), then 201. */
static int review_recover(bnb_ctx_t *ctx, bnb_req_t *req, const char *rid)
{
    bnb_store_t *st = host->store(ctx);
    json_t *doc = NULL;
    int64_t version = 0;
    int rc = host->store_get(st, REVIEWS, rid, &doc, &version);
    if (rc == BNB_ENOENT)
        return 0;
    if (rc == 0 && !str_eq(json_object_get(doc, "authorId"), host->req_user(req))) {
        json_decref(doc);
        return 0;
    }
    if (rc == 0)
        rc = count_review(st, doc, +1);
    if (rc != 0) {
        respond_room_error(req, json_string_value(json_object_get(doc, "roomId")), rc);
        json_decref(doc);
        return 1;
    }
    char loc[64];
    snprintf(loc, sizeof(loc), "/reviews/%s", rid);
    host->respond_header(req, "Location", loc);
    host->respond_json(req, 201, room_review_view(doc));
    json_decref(doc);
    return 1;
}

static void room_create(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_idem_run(ctx, req, "POST /rooms", room_create_run, room_recover);
}

static void review_create(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_idem_run(ctx, req, "POST /rooms/{id}/reviews", review_create_run, review_recover);
}

/* ---- plugin ----------------------------------------------------------------- */

/* A positive integer config value in [lo, hi], or `def`. */
static int64_t config_int(bnb_ctx_t *ctx, const char *key, int64_t def, int64_t lo, int64_t hi)
{
    const char *v = host->config(ctx, key);
    char *end = NULL;
    long long n;
    if (!v || !*v)
        return def;
    n = strtoll(v, &end, 10);
    if (*end || n < lo || n > hi) {
        host->log(ctx, "warn", "room.%s=%s is not an integer in [%lld, %lld]; using %lld", key, v, (long long)lo,
                  (long long)hi, (long long)def);
        return def;
    }
    return n;
}

/* ---- migration of the rooms from before storage v2 -------------------------- */

#define MIGRATIONS   "migrations"
#define MIGRATION_ID "rooms-v2"
#define MIGRATE_PAGE 20

/* One room of the first room service: its embedded reviews become documents
 * of `reviews` (the room's counters count them already), its `bookings` (the
 * reservations counted in bookingCnt) documents of `stays`, then the room is
 * written without the lists (and reviews_idx entries are deleted). Each step
 * is idempotent (creates answer BNB_EEXIST when done before). */
static int migrate_room(bnb_ctx_t *ctx, bnb_store_t *st, const char *id, size_t *reviews, size_t *stays)
{
    json_t *doc = NULL, *e;
    int64_t version = 0;
    size_t i;
    int rc = host->store_get(st, ROOMS, id, &doc, &version);
    if (rc)
        return rc == BNB_ENOENT ? 0 : rc;
    json_t *rl = json_object_get(doc, "reviews"), *bl = json_object_get(doc, "bookings");
    if (!rl && !bl) {
        json_decref(doc);
        return 0;
    }
    json_array_foreach(rl, i, e)
    {
        const char *rid = json_string_value(json_object_get(e, "id"));
        json_t *r = rid ? json_deep_copy(e) : NULL, *rd;
        if (!r)
            continue;
        json_object_set_new(r, "roomId", json_string(id));
        /* the first service kept no time to order by: listed after newer reviews */
        rd = room_review_doc(r, 0);
        json_decref(r);
        int r2 = rd ? commit(st, BNB_WRITE_PUT, REVIEWS, rid, 0, rd, NULL, 0, NULL) : BNB_ENOMEM;
        json_decref(rd);
        if (r2 == BNB_ETAKEN)
            host->log(ctx, "warn",
                      "room migration: review %s of room %s: its author reviewed the room again since; kept "
                      "only the newer one",
                      rid, id);
        else if (r2 == 0)
            (*reviews)++;
        else if (r2 != BNB_EEXIST) {
            rc = r2;
            goto out;
        }
        if (r2 != BNB_ETAKEN) {
            /* counted already: the room records it as review_create does
             * (a DELETE then uncounts it once, never counts it again) */
            char mark[128];
            snprintf(mark, sizeof(mark), "review+:%s", rid);
            r2 = commit(st, BNB_WRITE_TOUCH, ROOMS, id, -1, NULL, NULL, 0, mark);
            if (r2 != 0 && r2 != BNB_EALREADY) {
                rc = r2;
                goto out;
            }
        }
        commit(st, BNB_WRITE_DELETE, "reviews_idx", rid, -1, NULL, NULL, 0, NULL); /* ENOENT: none */
    }
    json_array_foreach(bl, i, e)
    {
        const char *rid = json_string_value(e);
        json_t *stay = rid ? json_pack("{s:s, s:b}", "roomId", id, "counted", 1) : NULL;
        int r2 = stay ? commit(st, BNB_WRITE_PUT, STAYS, rid, 0, stay, NULL, 0, NULL) : 0;
        json_decref(stay);
        if (r2 == 0 && rid)
            (*stays)++;
        else if (r2 != 0 && r2 != BNB_EEXIST) {
            rc = r2;
            goto out;
        }
    }
    /* the marks above moved its version on: write it without the lists */
    for (int attempt = 0; attempt < ROOM_RETRIES; attempt++) {
        json_decref(doc);
        doc = NULL;
        if ((rc = host->store_get(st, ROOMS, id, &doc, &version)) != 0)
            break;
        json_object_del(doc, "reviews");
        json_object_del(doc, "bookings");
        if ((rc = commit(st, BNB_WRITE_PUT, ROOMS, id, version, doc, NULL, 0, NULL)) != BNB_EEXIST)
            break;
    }
out:
    json_decref(doc);
    return rc;
}

/* Every room, MIGRATE_PAGE per page (keyset), once: the walk's cursor is kept
 * in migrations/rooms-v2 after each page, so an interrupted walk goes on where
 * it stopped and a finished one costs one read at each start. */
static void migrate_rooms(bnb_ctx_t *ctx, bnb_store_t *st)
{
    json_t *mig = NULL;
    int64_t mv = 0;
    size_t rooms = 0, reviews = 0, stays = 0;
    char *cursor = NULL;
    int rc = host->store_get(st, MIGRATIONS, MIGRATION_ID, &mig, &mv);
    if (rc == 0 && json_is_true(json_object_get(mig, "done"))) {
        json_decref(mig);
        return;
    }
    if (rc == 0 && json_string_value(json_object_get(mig, "cursor")))
        cursor = strdup(json_string_value(json_object_get(mig, "cursor")));
    json_decref(mig);
    if (rc != 0 && rc != BNB_ENOENT)
        goto fail;
    for (;;) {
        bnb_query_t q = {.coll = ROOMS, .limit = MIGRATE_PAGE, .cursor = cursor};
        json_t *rows = NULL, *row;
        char *next = NULL;
        size_t i;
        if ((rc = host->store_query(st, &q, &rows, &next)) != 0)
            goto fail;
        json_array_foreach(rows, i, row)
        {
            const json_t *b = json_object_get(row, "body");
            if (!json_object_get(b, "reviews") && !json_object_get(b, "bookings"))
                continue;
            if ((rc = migrate_room(ctx, st, json_string_value(json_object_get(row, "id")), &reviews, &stays)) != 0) {
                json_decref(rows);
                free(next);
                goto fail;
            }
            rooms++;
        }
        json_decref(rows);
        json_t *m = next ? json_pack("{s:s}", "cursor", next) : json_pack("{s:b}", "done", 1);
        rc = m ? commit(st, BNB_WRITE_PUT, MIGRATIONS, MIGRATION_ID, -1, m, NULL, 0, NULL) : BNB_ENOMEM;
        json_decref(m);
        free(cursor);
        cursor = next;
        if (rc)
            goto fail;
        if (!cursor)
            break;
    }
    if (rooms)
        host->log(ctx, "info",
                  "room migration: %zu rooms from before storage v2: %zu reviews and %zu counted bookings "
                  "moved into documents of their own",
                  rooms, reviews, stays);
    return;
fail:
    free(cursor);
    host->log(ctx, "warn", "room migration: stopped (%d); it goes on at the next start", rc);
}

static int room_init(bnb_ctx_t *ctx, const bnb_host_api_t *api)
{
    int rc = 0;
    if (BNB_ABI_MAJOR_OF(api->abi_version) != BNB_ABI_MAJOR || !BNB_HAS(api, store_define) ||
        !BNB_HAS(api, store_query) || !BNB_HAS(api, store_commit2) || !BNB_HAS(api, req_query_string))
        return BNB_EINVAL;
    host = bnb_idem_host(api);
    max_nights = config_int(ctx, "search_max_nights", 90, 1, 731);
    examine_max = (size_t)config_int(ctx, "search_examine", 200, ROOM_LIMIT_MAX, 10000);
    if ((rc = host->store_define(ctx, room_colls, sizeof(room_colls) / sizeof(room_colls[0]))) != 0) {
        host->log(ctx, "error", "declaring the room collections failed (%d)", rc);
        return rc;
    }
    if ((rc = bnb_idem_init(ctx)) != 0) {
        host->log(ctx, "error", "declaring the idem collection failed (%d)", rc);
        return rc;
    }
    migrate_rooms(ctx, host->store(ctx));
    rc |= host->route(ctx, "POST", "/rooms", BNB_ROLE_HOST, room_create);
    rc |= host->route(ctx, "GET", "/rooms", BNB_ROLE_ANYONE, room_list);
    rc |= host->route(ctx, "GET", "/rooms/{id}", BNB_ROLE_ANYONE, room_get);
    rc |= host->route(ctx, "PATCH", "/rooms/{id}", BNB_ROLE_HOST, room_patch);
    rc |= host->route(ctx, "DELETE", "/rooms/{id}", BNB_ROLE_HOST, room_delete);
    rc |= host->route(ctx, "POST", "/rooms/{id}/reviews", BNB_ROLE_GUEST, review_create);
    rc |= host->route(ctx, "GET", "/rooms/{id}/reviews", BNB_ROLE_ANYONE, review_list);
    rc |= host->route(ctx, "DELETE", "/reviews/{id}", BNB_ROLE_USER, review_delete);
    rc |= host->subscribe(ctx, "bearbnb.reservation", on_reservation);
    return rc ? BNB_EINVAL : 0;
}

static const bnb_cfg_item_t room_config[] = {
    {"search_max_nights", BNB_CFG_INT, "90", "longest stay (nights) the availability search accepts (1..731)"},
    {"search_examine", BNB_CFG_INT, "200",
     "rooms one page of GET /rooms may examine when filtering beyond the indexes (100..10000)"},
    BNB_IDEM_CONFIG,
    {NULL, 0, NULL, NULL},
};

BNB_EXPORT const bnb_plugin_t bnb_plugin = {
    .abi_version = BNB_ABI_VERSION,
    .name = "room",
    .version = "0.2.0",
    .config = room_config,
    .init = room_init,
};

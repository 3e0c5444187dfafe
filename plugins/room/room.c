/*
 * Room plugin: rooms and their reviews (docs/api.md, plugins/README.md).
 *
 * Store: `rooms` (one document per room, reviews embedded, key1 = hostId,
 * key2 = city) and `reviews_idx` (review id -> {roomId}). Every change of a
 * room is ONE store_commit carrying its events (transactional outbox), with
 * optimistic concurrency (expect_version) and a bounded retry on conflicts.
 * Consumes bearbnb.reservation: Confirmed/Cancelled move bookingCnt.
 */
#include "bnb_plugin.h"
#include "room_logic.h"

#include <stdio.h>
#include <string.h>

#define ROOM_TOPIC   "bearbnb.room"
#define ROOM_RETRIES 32
#define ROOMS        "rooms"
#define REVIEWS_IDX  "reviews_idx"

static const bnb_host_api_t *host;

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
    return 0;
}

static int commit_room(bnb_store_t *st, json_t *doc, const char *id, int64_t expect, const bnb_event_out_t *ev,
                       size_t nev, const char *applied)
{
    bnb_write_t w = {
        .op = BNB_WRITE_PUT,
        .coll = ROOMS,
        .id = id,
        .expect_version = expect,
        .body = doc,
        .key1 = json_string_value(json_object_get(doc, "hostId")),
        .key2 = json_string_value(json_object_get(doc, "city")),
    };
    return host->store_commit(st, &w, ev, nev, applied, NULL);
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

/* ---- rooms ---------------------------------------------------------------- */

static void room_create(bnb_ctx_t *ctx, bnb_req_t *req)
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
    host->uuid(id);
    doc = room_new_doc(body, id, user ? user : "");
    data = doc ? room_view(doc, 1) : NULL;
    if (!doc || !data) {
        host->respond_problem(req, 500, "Internal Server Error", "out of memory");
        goto done;
    }
    bnb_event_out_t ev = {.topic = ROOM_TOPIC, .type = "RoomRegistered", .subject = id, .data = data};
    rc = commit_room(st, doc, id, 0, &ev, 1, NULL);
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

static void room_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *city = host->req_query(req, "city");
    json_t *all = NULL, *out = json_array(), *item;
    size_t i;
    int rc;

    if (!out) {
        host->respond_problem(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    rc = city ? host->store_list(st, ROOMS, 2, city, &all) : host->store_list(st, ROOMS, 0, NULL, &all);
    if (rc != 0) {
        json_decref(out);
        respond_store_error(req, rc);
        return;
    }
    json_array_foreach(all, i, item)
    {
        json_t *doc = json_object_get(item, "body");
        if (!room_is_active(doc))
            continue;
        if (city && !str_eq(json_object_get(doc, "city"), city))
            continue;
        json_array_append_new(out, room_view(doc, (int64_t)json_integer_value(json_object_get(item, "version"))));
    }
    json_decref(all);
    host->respond_json(req, 200, out);
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
        rc = commit_room(st, doc, id, version, &ev, 1, NULL);
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
        rc = commit_room(st, doc, id, version, &ev, 1, NULL);
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

static void review_create(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *room_id = host->req_param(req, "id"), *user = host->req_user(req);
    const json_t *body;
    json_t *idx = NULL, *review = NULL;
    bnb_write_t iw = {.op = BNB_WRITE_PUT, .coll = REVIEWS_IDX, .expect_version = 0};
    room_err_t err;
    char rid[37];
    int rc = BNB_EEXIST, indexed = 0;

    if (!(body = require_body(req)))
        return;
    if (room_check_review(body, &err) != 0) {
        respond_invalid(req, &err);
        return;
    }
    {
        json_t *doc = NULL;
        int64_t version;
        if ((rc = load_room(st, room_id, &doc, &version)) != 0) {
            respond_room_error(req, room_id, rc);
            return;
        }
        json_decref(doc);
    }
    host->uuid(rid);
    /* The index first: if the room commit then fails, a dangling index entry
     * only makes DELETE /reviews/{id} answer 404, never loses a review. */
    if (!(idx = json_pack("{s:s}", "roomId", room_id)) ||
        !(review =
              room_new_review(rid, room_id, user ? user : "", (int)json_integer_value(json_object_get(body, "rating")),
                              json_string_value(json_object_get(body, "content")), host->now_ms()))) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    iw.id = rid;
    iw.body = idx;
    iw.key1 = room_id;
    if ((rc = host->store_commit(st, &iw, NULL, 0, NULL, NULL)) != 0)
        goto fail;
    indexed = 1;
    rc = BNB_EEXIST;
    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL, *data = NULL;
        int64_t version = 0;
        if ((rc = load_room(st, room_id, &doc, &version)) != 0)
            break;
        if (room_add_review(doc, json_incref(review)) != 0 ||
            !(data = room_review_event_data(review, doc, version + 1))) {
            json_decref(doc);
            rc = BNB_ENOMEM;
            break;
        }
        bnb_event_out_t ev = {.topic = ROOM_TOPIC, .type = "ReviewCreated", .subject = room_id, .data = data};
        rc = commit_room(st, doc, room_id, version, &ev, 1, NULL);
        json_decref(doc);
        json_decref(data);
    }
    if (rc != 0)
        goto fail;
    host->count(ctx, "reviews_created", 1);
    json_decref(idx);
    host->respond_json(req, 201, review);
    return;
fail:
    if (indexed) {
        bnb_write_t dw = {.op = BNB_WRITE_DELETE, .coll = REVIEWS_IDX, .id = rid, .expect_version = -1};
        host->store_commit(st, &dw, NULL, 0, NULL, NULL);
    }
    json_decref(idx);
    json_decref(review);
    respond_room_error(req, room_id, rc);
}

static void review_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *id = host->req_param(req, "id");
    json_t *doc = NULL, *reviews;
    int64_t version = 0;
    int rc = load_room(host->store(ctx), id, &doc, &version);
    if (rc != 0) {
        respond_room_error(req, id, rc);
        return;
    }
    reviews = json_object_get(doc, "reviews");
    host->respond_json(req, 200, json_is_array(reviews) ? json_incref(reviews) : json_array());
    json_decref(doc);
}

static void review_delete(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = host->store(ctx);
    const char *rid = host->req_param(req, "id"), *user = host->req_user(req);
    json_t *idx = NULL;
    char room_id[128];
    int64_t iv = 0;
    int rc;

    if ((rc = host->store_get(st, REVIEWS_IDX, rid, &idx, &iv)) != 0) {
        if (rc == BNB_ENOENT)
            host->respond_problem(req, 404, "Not Found", "review '%s' does not exist", rid);
        else
            respond_store_error(req, rc);
        return;
    }
    snprintf(room_id, sizeof(room_id), "%s", json_string_value(json_object_get(idx, "roomId")) ?: "");
    json_decref(idx);

    rc = BNB_EEXIST;
    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL, *data = NULL, *removed = NULL;
        const json_t *r;
        int64_t version = 0;
        if ((rc = load_room(st, room_id, &doc, &version)) != 0)
            break;
        if (!(r = room_find_review(doc, rid))) {
            json_decref(doc);
            rc = BNB_ENOENT;
            break;
        }
        if (!str_eq(json_object_get(r, "authorId"), user)) {
            json_decref(doc);
            host->respond_problem(req, 403, "Forbidden", "only the author may delete review '%s'", rid);
            return;
        }
        if (room_remove_review(doc, rid, &removed) != 0 ||
            !(data = room_review_event_data(removed, doc, version + 1))) {
            json_decref(removed);
            json_decref(doc);
            rc = BNB_ENOMEM;
            break;
        }
        bnb_event_out_t ev = {.topic = ROOM_TOPIC, .type = "ReviewDeleted", .subject = room_id, .data = data};
        rc = commit_room(st, doc, room_id, version, &ev, 1, NULL);
        json_decref(removed);
        json_decref(doc);
        json_decref(data);
    }
    if (rc == BNB_ENOENT) {
        host->respond_problem(req, 404, "Not Found", "review '%s' does not exist", rid);
        return;
    }
    if (rc != 0) {
        respond_store_error(req, rc);
        return;
    }
    {
        bnb_write_t dw = {.op = BNB_WRITE_DELETE, .coll = REVIEWS_IDX, .id = rid, .expect_version = -1};
        host->store_commit(st, &dw, NULL, 0, NULL, NULL); /* a leftover entry only gives 404 later */
    }
    host->count(ctx, "reviews_deleted", 1);
    host->respond_empty(req, 204);
}

/* ---- events ----------------------------------------------------------------- */

static int on_reservation(bnb_ctx_t *ctx, const json_t *event)
{
    bnb_store_t *st = host->store(ctx);
    room_resv_event_t ev;
    char why[160];
    int rc = BNB_EEXIST;

    if (room_parse_resv_event(event, &ev, why, sizeof(why)) != 0) {
        host->event_reject(ctx, "%s", why);
        return BNB_EINVAL;
    }
    if (ev.kind == ROOM_RESV_IGNORE)
        return 0;
    for (int attempt = 0; attempt < ROOM_RETRIES && rc == BNB_EEXIST; attempt++) {
        json_t *doc = NULL, *data = NULL;
        int64_t version = 0;
        int changed;
        rc = load_room(st, ev.room_id, &doc, &version);
        if (rc == BNB_ENOENT) {
            host->log(ctx, "info", "ignoring %s for unknown or deleted room %s", ev.event_id, ev.room_id);
            return 0;
        }
        if (rc != 0)
            return rc;
        changed = room_apply_booking(doc, ev.kind, ev.reservation_id);
        if (changed <= 0) {
            json_decref(doc);
            return changed < 0 ? BNB_ENOMEM : 0;
        }
        if (!(data = room_view(doc, version + 1))) {
            json_decref(doc);
            return BNB_ENOMEM;
        }
        bnb_event_out_t out = {.topic = ROOM_TOPIC, .type = "RoomModified", .subject = ev.room_id, .data = data};
        rc = commit_room(st, doc, ev.room_id, version, &out, 1, ev.event_id);
        json_decref(doc);
        json_decref(data);
    }
    if (rc == BNB_EALREADY)
        return 0;
    if (rc == BNB_EEXIST)
        return BNB_EAGAIN; /* still contended: redeliver later */
    return rc;
}

/* ---- plugin ----------------------------------------------------------------- */

static int room_init(bnb_ctx_t *ctx, const bnb_host_api_t *api)
{
    int rc = 0;
    if (api->abi_version != BNB_ABI_VERSION || api->size < sizeof(bnb_host_api_t))
        return BNB_EINVAL;
    host = api;
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
    {NULL, 0, NULL, NULL},
};

BNB_EXPORT const bnb_plugin_t bnb_plugin = {
    .abi_version = BNB_ABI_VERSION,
    .name = "room",
    .version = "0.1.0",
    .config = room_config,
    .init = room_init,
};

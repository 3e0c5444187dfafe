/*
 * Unit tests of the dashboard plugin (plugins/dashboard/dashboard.c) against a
 * fake host: an in-memory store with the storage contract's commit semantics
 * (expect_version, applied event ids, BNB_EALREADY / BNB_EEXIST), recorded
 * routes and subscriptions, and fake requests. The real host is exercised by
 * tests/e2e/dashboard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const bnb_plugin_t bnb_plugin;

#define ROOM "11111111-aaaa-4bbb-8ccc-000000000001"
#define RES1 "22222222-aaaa-4bbb-8ccc-000000000001"

/* ---- fake host ------------------------------------------------------------ */

struct bnb_ctx {
    int dummy;
};
struct bnb_store {
    int dummy;
};
struct bnb_req {
    const char *param_id;
    const char *query_city;
    int status;
    json_t *body;
};

#define MAX_DOCS    16
#define MAX_APPLIED 256

typedef struct {
    char id[80];
    json_t *body;
    int64_t version;
    char key1[80];
    char applied[MAX_APPLIED][64];
    int napplied;
} fake_doc_t;

static struct {
    fake_doc_t docs[MAX_DOCS];
    int ndocs;
    int commits;   /* store_commit calls */
    int conflicts; /* next commits meet a concurrent writer */
    int commits_without_event_id;
    char reject[256];
    int routes, subscriptions;
    bnb_route_fn list_fn, get_fn;
    bnb_event_fn event_fn[3];
    void *userdata;
} fk;

static struct bnb_ctx the_ctx;
static struct bnb_store the_store;

static fake_doc_t *fk_find(const char *id)
{
    for (int i = 0; i < fk.ndocs; i++) {
        if (strcmp(fk.docs[i].id, id) == 0)
            return &fk.docs[i];
    }
    return NULL;
}

static int h_route(bnb_ctx_t *ctx, const char *method, const char *pattern, bnb_role_t who, bnb_route_fn fn)
{
    (void)ctx;
    assert_string_equal(method, "GET");
    assert_int_equal(who, BNB_ROLE_ANYONE);
    if (strcmp(pattern, "/dashboard/rooms") == 0)
        fk.list_fn = fn;
    else if (strcmp(pattern, "/dashboard/rooms/{id}") == 0)
        fk.get_fn = fn;
    else
        fail_msg("unexpected route %s", pattern);
    fk.routes++;
    return 0;
}

static int h_subscribe(bnb_ctx_t *ctx, const char *topic, bnb_event_fn fn)
{
    (void)ctx;
    static const char *const want[] = {"bearbnb.room", "bearbnb.reservation", "bearbnb.payment"};
    for (int i = 0; i < 3; i++) {
        if (strcmp(topic, want[i]) == 0) {
            fk.event_fn[i] = fn;
            fk.subscriptions++;
            return 0;
        }
    }
    fail_msg("unexpected topic %s", topic);
    return BNB_EINVAL;
}

static void h_set_userdata(bnb_ctx_t *ctx, void *data)
{
    (void)ctx;
    fk.userdata = data;
}

static void *h_userdata(bnb_ctx_t *ctx)
{
    (void)ctx;
    return fk.userdata;
}

static const char *h_config(bnb_ctx_t *ctx, const char *key)
{
    (void)ctx;
    (void)key;
    return NULL;
}

static const char *h_name(bnb_ctx_t *ctx)
{
    (void)ctx;
    return "dashboard";
}

static const char *h_req_param(bnb_req_t *req, const char *name)
{
    return strcmp(name, "id") == 0 ? req->param_id : NULL;
}

static const char *h_req_query(bnb_req_t *req, const char *name)
{
    return strcmp(name, "city") == 0 ? req->query_city : NULL;
}

static void h_respond_json(bnb_req_t *req, int status, json_t *body)
{
    assert_int_equal(req->status, 0); /* exactly one answer */
    req->status = status;
    req->body = body;
}

static void h_respond_problem(bnb_req_t *req, int status, const char *title, const char *fmt, ...)
{
    (void)title;
    (void)fmt;
    assert_int_equal(req->status, 0);
    req->status = status;
    req->body = NULL;
}

static bnb_store_t *h_store(bnb_ctx_t *ctx)
{
    (void)ctx;
    return &the_store;
}

static int h_store_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    assert_ptr_equal(st, &the_store);
    assert_string_equal(coll, "rooms");
    fake_doc_t *d = fk_find(id);
    if (!d)
        return BNB_ENOENT;
    *body = json_deep_copy(d->body);
    *version = d->version;
    return 0;
}

static int h_store_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    assert_ptr_equal(st, &the_store);
    assert_string_equal(coll, "rooms");
    assert_true(which == 0 || which == 1);
    *out = json_array();
    for (int i = 0; i < fk.ndocs; i++) {
        if (which == 1 && strcmp(fk.docs[i].key1, value) != 0)
            continue;
        json_array_append_new(*out, json_pack("{s:s, s:I, s:O}", "id", fk.docs[i].id, "version",
                                              (json_int_t)fk.docs[i].version, "body", fk.docs[i].body));
    }
    return 0;
}

static int h_store_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_event_out_t *events, size_t nevents,
                          const char *applied_event_id, int64_t *new_version)
{
    assert_ptr_equal(st, &the_store);
    assert_string_equal(w->coll, "rooms");
    assert_int_equal(nevents, 0); /* the read model publishes nothing */
    assert_null(events);
    fk.commits++;
    if (!applied_event_id)
        fk.commits_without_event_id++;
    fake_doc_t *d = fk_find(w->id);
    if (d && fk.conflicts > 0) { /* another worker committed meanwhile */
        fk.conflicts--;
        d->version++;
    }
    if (d && applied_event_id) {
        for (int i = 0; i < d->napplied; i++) {
            if (strcmp(d->applied[i], applied_event_id) == 0)
                return BNB_EALREADY;
        }
    }
    if (w->expect_version == 0 && d)
        return BNB_EEXIST;
    if (w->expect_version > 0 && !d)
        return BNB_ENOENT;
    if (w->expect_version > 0 && d->version != w->expect_version)
        return BNB_EEXIST;
    if (!d) {
        assert_true(w->op == BNB_WRITE_PUT);
        assert_true(fk.ndocs < MAX_DOCS);
        d = &fk.docs[fk.ndocs++];
        memset(d, 0, sizeof(*d));
        snprintf(d->id, sizeof(d->id), "%s", w->id);
    }
    if (w->op == BNB_WRITE_PUT) {
        assert_true(json_is_object(w->body));
        json_decref(d->body);
        d->body = json_deep_copy(w->body);
        snprintf(d->key1, sizeof(d->key1), "%s", w->key1 ? w->key1 : "");
    } else {
        assert_int_equal(w->op, BNB_WRITE_TOUCH);
    }
    d->version++;
    if (applied_event_id) {
        assert_true(d->napplied < MAX_APPLIED);
        snprintf(d->applied[d->napplied++], 64, "%s", applied_event_id);
    }
    if (new_version)
        *new_version = d->version;
    return 0;
}

static void h_event_reject(bnb_ctx_t *ctx, const char *fmt, ...)
{
    (void)ctx;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fk.reject, sizeof(fk.reject), fmt, ap);
    va_end(ap);
}

static void h_log(bnb_ctx_t *ctx, const char *level, const char *fmt, ...)
{
    (void)ctx;
    (void)level;
    (void)fmt;
}

static void h_count(bnb_ctx_t *ctx, const char *name, double delta)
{
    (void)ctx;
    (void)name;
    (void)delta;
}

static const bnb_host_api_t fake_host = {
    .abi_version = BNB_ABI_VERSION,
    .size = sizeof(bnb_host_api_t),
    .route = h_route,
    .subscribe = h_subscribe,
    .set_userdata = h_set_userdata,
    .userdata = h_userdata,
    .config = h_config,
    .name = h_name,
    .req_param = h_req_param,
    .req_query = h_req_query,
    .respond_json = h_respond_json,
    .respond_problem = h_respond_problem,
    .store = h_store,
    .store_get = h_store_get,
    .store_list = h_store_list,
    .store_commit = h_store_commit,
    .event_reject = h_event_reject,
    .log = h_log,
    .count = h_count,
};

static int setup(void **state)
{
    (void)state;
    memset(&fk, 0, sizeof(fk));
    assert_int_equal(bnb_plugin.abi_version, BNB_ABI_VERSION);
    assert_string_equal(bnb_plugin.name, "dashboard");
    assert_int_equal(bnb_plugin.init(&the_ctx, &fake_host), 0);
    assert_int_equal(fk.routes, 2);
    assert_int_equal(fk.subscriptions, 3);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (bnb_plugin.fini)
        bnb_plugin.fini(&the_ctx);
    for (int i = 0; i < fk.ndocs; i++)
        json_decref(fk.docs[i].body);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

static int deliver(int topic, const char *text)
{
    json_error_t err;
    json_t *ev = json_loads(text, JSON_DECODE_ANY, &err);
    assert_non_null(ev);
    fk.reject[0] = '\0';
    int rc = fk.event_fn[topic](&the_ctx, ev);
    json_decref(ev);
    return rc;
}

static char *room_event(const char *evid, const char *type, int version, const char *name, const char *city)
{
    char *s = NULL;
    assert_true(asprintf(&s,
                         "{\"id\":\"%s\",\"type\":\"%s\",\"source\":\"room\",\"subject\":\"%s\",\"data\":{\"id\":"
                         "\"%s\",\"hostId\":\"hanna\",\"name\":\"%s\",\"description\":\"d\",\"city\":\"%s\","
                         "\"pricePerNight\":10000,\"capacity\":2,\"status\":\"ACTIVE\",\"reviewCnt\":0,"
                         "\"rating\":0,\"bookingCnt\":0,\"version\":%d}}",
                         evid, type, ROOM, ROOM, name, city, version) > 0);
    return s;
}

static const char *placed = "{\"id\":\"ev-res-1\",\"type\":\"ReservationPlaced\",\"subject\":\"" RES1
                            "\",\"correlationId\":\"" RES1 "\",\"data\":{\"id\":\"" RES1 "\",\"roomId\":\"" ROOM
                            "\",\"hostId\":\"hanna\",\"guestId\":\"gus\",\"checkIn\":\"2030-01-01\","
                            "\"checkOut\":\"2030-01-03\",\"guests\":1,\"amount\":20000,\"card\":\"4111\","
                            "\"status\":\"PENDING\",\"paymentId\":null,\"version\":1}}";
static const char *approved =
    "{\"id\":\"ev-pay-1\",\"type\":\"PaymentApproved\",\"subject\":\"pay-" RES1 "\",\"correlationId\":\"" RES1
    "\",\"data\":{\"id\":\"pay-" RES1 "\",\"reservationId\":\"" RES1 "\",\"roomId\":\"" ROOM
    "\",\"hostId\":\"hanna\",\"payerId\":\"gus\",\"amount\":20000,"
    "\"status\":\"APPROVED\",\"version\":1}}";

static json_t *get_room(const char *id, int *status)
{
    struct bnb_req req = {.param_id = id};
    fk.get_fn(&the_ctx, &req);
    *status = req.status;
    return req.body;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_events_build_the_document(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    int status;

    /* payment first, then the reservation, then the room */
    assert_int_equal(deliver(2, approved), 0);
    json_t *body = get_room(ROOM, &status);
    assert_int_equal(status, 404); /* no room event yet */
    assert_null(body);
    assert_int_equal(deliver(1, placed), 0);
    assert_int_equal(deliver(0, reg), 0);
    assert_int_equal(fk.commits, 3);
    assert_int_equal(fk.commits_without_event_id, 0);

    body = get_room(ROOM, &status);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(body, "name")), "Loft");
    assert_null(json_object_get(body, "_room"));
    json_t *r = json_array_get(json_object_get(body, "reservations"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "PENDING");
    assert_string_equal(json_string_value(json_object_get(r, "paymentStatus")), "APPROVED");
    assert_int_equal(json_integer_value(json_object_get(r, "amount")), 20000);
    json_decref(body);

    body = get_room("no-such-room", &status);
    assert_int_equal(status, 404);
    free(reg);
}

static void test_redelivery_changes_nothing(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, reg), 0);
    assert_int_equal(deliver(1, placed), 0);
    fake_doc_t *d = fk_find(ROOM);
    assert_non_null(d);
    int64_t v = d->version;
    json_t *before = json_deep_copy(d->body);

    assert_int_equal(deliver(1, placed), 0); /* BNB_EALREADY is success */
    assert_int_equal(deliver(0, reg), 0);
    assert_int_equal(d->version, v);
    assert_true(json_equal(before, d->body));

    /* the same data under a new event id (a producer retry): stale, a TOUCH */
    char *again = room_event("ev-room-1-bis", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, again), 0);
    assert_int_equal(d->version, v + 1);
    assert_true(json_equal(before, d->body));
    json_decref(before);
    free(reg);
    free(again);
}

static void test_stale_event_does_not_overwrite(void **state)
{
    (void)state;
    char *v2 = room_event("ev-2", "RoomModified", 2, "New name", "Bern");
    char *v1 = room_event("ev-1", "RoomRegistered", 1, "Old name", "Bern");
    int status;
    assert_int_equal(deliver(0, v2), 0);
    assert_int_equal(deliver(0, v1), 0);
    json_t *body = get_room(ROOM, &status);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(body, "name")), "New name");
    assert_int_equal(json_integer_value(json_object_get(body, "version")), 2);
    json_decref(body);
    free(v1);
    free(v2);
}

static void test_conflicts_are_retried_bounded(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, reg), 0);

    fk.conflicts = 3; /* three concurrent writers in a row */
    fk.commits = 0;
    assert_int_equal(deliver(1, placed), 0);
    assert_int_equal(fk.commits, 4);
    json_t *r = json_array_get(json_object_get(fk_find(ROOM)->body, "reservations"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "PENDING");

    fk.conflicts = 1000000; /* never wins: gives up, to be redelivered (not poison) */
    fk.commits = 0;
    int rc = deliver(2, approved);
    assert_true(rc < 0);
    assert_int_not_equal(rc, BNB_EINVAL);
    assert_true(fk.commits > 1 && fk.commits <= 64);
    fk.conflicts = 0;
    assert_int_equal(deliver(2, approved), 0);
    r = json_array_get(json_object_get(fk_find(ROOM)->body, "reservations"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "paymentStatus")), "APPROVED");
    free(reg);
}

static void test_malformed_is_rejected_with_reason(void **state)
{
    (void)state;
    assert_int_equal(deliver(0, "[\"not\",\"an\",\"object\"]"), BNB_EINVAL);
    assert_non_null(strstr(fk.reject, "not a JSON object"));
    assert_int_equal(deliver(1, "{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"subject\":\"x\",\"data\":{\"id\":\"x\","
                                "\"roomId\":\"r\",\"version\":1,\"status\":\"PENDING\",\"guests\":\"many\"}}"),
                     BNB_EINVAL);
    assert_non_null(strstr(fk.reject, "data.guests"));
    assert_int_equal(fk.commits, 0);
    assert_int_equal(fk.ndocs, 0);

    /* unknown types are not poison */
    assert_int_equal(deliver(0, "{\"id\":\"e\",\"type\":\"RoomRepainted\",\"subject\":\"r\",\"data\":{}}"), 0);
    assert_string_equal(fk.reject, "");
    assert_int_equal(fk.commits, 0);
}

static void test_list_and_city_filter(void **state)
{
    (void)state;
    char *a = room_event("ev-a", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, a), 0);
    /* a placeholder room (only a reservation of another room) is not listed */
    const char *other = "{\"id\":\"ev-o\",\"type\":\"ReservationPlaced\",\"subject\":\"res-o\",\"data\":{\"id\":"
                        "\"res-o\",\"roomId\":\"room-o\",\"version\":1,\"status\":\"PENDING\"}}";
    assert_int_equal(deliver(1, other), 0);
    assert_int_equal(fk.ndocs, 2);

    struct bnb_req all = {0}, bern = {.query_city = "Bern"}, zug = {.query_city = "Zug"};
    fk.list_fn(&the_ctx, &all);
    fk.list_fn(&the_ctx, &bern);
    fk.list_fn(&the_ctx, &zug);
    assert_int_equal(all.status, 200);
    assert_int_equal(json_array_size(all.body), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(all.body, 0), "id")), ROOM);
    assert_int_equal(json_array_size(bern.body), 1);
    assert_int_equal(zug.status, 200);
    assert_int_equal(json_array_size(zug.body), 0);

    /* deleted rooms stay listed with status DELETED */
    const char *del = "{\"id\":\"ev-d\",\"type\":\"RoomDeleted\",\"subject\":\"" ROOM "\",\"data\":{\"id\":\"" ROOM
                      "\",\"hostId\":\"hanna\",\"status\":\"DELETED\",\"version\":2}}";
    assert_int_equal(deliver(0, del), 0);
    struct bnb_req after = {0};
    fk.list_fn(&the_ctx, &after);
    assert_int_equal(json_array_size(after.body), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(after.body, 0), "status")), "DELETED");
    json_decref(all.body);
    json_decref(bern.body);
    json_decref(zug.body);
    json_decref(after.body);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_events_build_the_document, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_event_does_not_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflicts_are_retried_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_is_rejected_with_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_city_filter, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

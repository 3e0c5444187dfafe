/*
 * Unit tests of plugins/room/room.c against the fake host of
 * tests/plugins/fake_host.h (in-memory store with versions, applied-event
 * marks and an outbox; captured responses).
 * The real host is exercised by tests/e2e/rooms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fake_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const bnb_plugin_t bnb_plugin;

/* ---- driving the plugin ---------------------------------------------------------- */

static bnb_event_fn resv_handler;

static int setup(void **state)
{
    (void)state;
    fake_host_reset("room");
    FH.store.fail_coll = "rooms"; /* fail_eexist: lost races on the room document */
    assert_int_equal(bnb_plugin.abi_version, BNB_ABI_VERSION);
    assert_string_equal(bnb_plugin.name, "room");
    int rc = bnb_plugin.init(&FH.ctx, &fake_host_api);
    resv_handler = fake_handler("bearbnb.reservation");
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    fake_host_free();
    return 0;
}

/* Call the route registered for (method, pattern). The response body (if
 * any) is returned, caller decrefs; *status gets the status. */
static json_t *call(const char *method, const char *pattern, const char *id, const char *user, const char *role,
                    const char *body, int *status, char *detail)
{
    struct bnb_req r = {.method = method, .id = id, .user = user, .role = role};
    if (body) {
        r.body = json_loads(body, 0, NULL);
        assert_non_null(r.body);
    }
    bnb_route_fn fn = fake_route(method, pattern, NULL);
    if (fn)
        fn(&FH.ctx, &r);
    assert_true(r.answered);
    json_decref(r.body);
    *status = r.status;
    if (detail)
        strcpy(detail, r.detail);
    return r.json;
}

static const json_t *last_event(const char *type)
{
    size_t n = json_array_size(FH.store.events);
    assert_true(n > 0);
    const json_t *e = json_array_get(FH.store.events, n - 1);
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    assert_string_equal(json_string_value(json_object_get(e, "topic")), "bearbnb.room");
    return json_object_get(e, "data");
}

static char *create(const char *user)
{
    int st;
    json_t *room = call(
        "POST", "/rooms", NULL, user, "host",
        "{\"name\":\"Den\",\"description\":\"d\",\"city\":\"Bern\",\"pricePerNight\":100,\"capacity\":2}", &st, NULL);
    assert_int_equal(st, 201);
    char *id = strdup(json_string_value(json_object_get(room, "id")));
    json_decref(room);
    return id;
}

static void routes_registered(void **state)
{
    (void)state;
    assert_int_equal(FH.nroutes, 8);
    assert_int_equal(FH.nsubs, 1); /* bearbnb.reservation only */
    assert_non_null(resv_handler);
    for (int i = 0; i < FH.nroutes; i++) {
        if (strcmp(FH.routes[i].method, "POST") == 0 && strcmp(FH.routes[i].pattern, "/rooms") == 0)
            assert_int_equal(FH.routes[i].who, BNB_ROLE_HOST);
        if (strcmp(FH.routes[i].pattern, "/rooms/{id}/reviews") == 0 && strcmp(FH.routes[i].method, "POST") == 0)
            assert_int_equal(FH.routes[i].who, BNB_ROLE_GUEST);
        if (strcmp(FH.routes[i].method, "GET") == 0)
            assert_int_equal(FH.routes[i].who, BNB_ROLE_ANYONE);
    }
}

static void create_publishes_registered(void **state)
{
    (void)state;
    int st;
    char detail[512];
    char *id = create("alice");
    assert_int_equal(json_array_size(FH.store.events), 1);
    const json_t *d = last_event("RoomRegistered");
    assert_string_equal(json_string_value(json_object_get(d, "id")), id);
    assert_string_equal(json_string_value(json_object_get(d, "hostId")), "alice");
    assert_int_equal(json_integer_value(json_object_get(d, "version")), 1);
    assert_int_equal(json_object_size(d), 12);
    json_t *got = call("GET", "/rooms/{id}", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_true(json_equal(got, d));
    json_decref(got);
    /* invalid: nothing committed */
    int commits = FH.store.commits;
    json_decref(call("POST", "/rooms", NULL, "alice", "host", "{\"name\":\"x\"}", &st, detail));
    assert_int_equal(st, 400);
    assert_non_null(strstr(detail, "description"));
    assert_int_equal(FH.store.commits, commits);
    free(id);
}

static void patch_and_delete(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    json_decref(call("PATCH", "/rooms/{id}", id, "bob", "host", "{\"name\":\"B\"}", &st, NULL));
    assert_int_equal(st, 403);
    assert_int_equal(json_array_size(FH.store.events), 1);
    json_t *p = call("PATCH", "/rooms/{id}", id, "alice", "host", "{\"name\":\"B\",\"capacity\":5}", &st, NULL);
    assert_int_equal(st, 200);
    assert_int_equal(json_integer_value(json_object_get(p, "version")), 2);
    assert_true(json_equal(p, last_event("RoomModified")));
    json_decref(p);
    /* no-op patch: no event */
    json_decref(call("PATCH", "/rooms/{id}", id, "alice", "host", "{\"name\":\"B\"}", &st, NULL));
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(FH.store.events), 2);

    json_decref(call("DELETE", "/rooms/{id}", id, "bob", "host", NULL, &st, NULL));
    assert_int_equal(st, 403);
    json_decref(call("DELETE", "/rooms/{id}", id, "alice", "host", NULL, &st, NULL));
    assert_int_equal(st, 204);
    const json_t *d = last_event("RoomDeleted");
    assert_string_equal(json_string_value(json_object_get(d, "status")), "DELETED");
    assert_int_equal(json_integer_value(json_object_get(d, "version")), 3);
    json_decref(call("GET", "/rooms/{id}", id, NULL, NULL, NULL, &st, NULL));
    assert_int_equal(st, 404);
    json_t *list = call("GET", "/rooms", NULL, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    free(id);
}

static void reviews_follow(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    json_t *r1 =
        call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":5,\"content\":\"a\"}", &st, NULL);
    assert_int_equal(st, 201);
    json_t *r2 = call("POST", "/rooms/{id}/reviews", id, "gus", "guest", "{\"rating\":4,\"content\":\"b\"}", &st, NULL);
    assert_int_equal(st, 201);
    const json_t *d = last_event("ReviewCreated");
    json_t *room = json_object_get(d, "room");
    assert_int_equal(json_integer_value(json_object_get(room, "reviewCnt")), 2);
    assert_true(json_number_value(json_object_get(room, "rating")) == 4.5);
    assert_int_equal(json_integer_value(json_object_get(room, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(d, "authorId")), "gus");
    assert_non_null(fake_find_doc("reviews_idx", json_string_value(json_object_get(r2, "id"))));
    json_t *list = call("GET", "/rooms/{id}/reviews", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);

    /* delete: not the author 403, author 204, index gone */
    const char *rid = json_string_value(json_object_get(r1, "id"));
    json_decref(call("DELETE", "/reviews/{id}", rid, "gus", "guest", NULL, &st, NULL));
    assert_int_equal(st, 403);
    json_decref(call("DELETE", "/reviews/{id}", rid, "gina", "guest", NULL, &st, NULL));
    assert_int_equal(st, 204);
    d = last_event("ReviewDeleted");
    assert_string_equal(json_string_value(json_object_get(d, "id")), rid);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(d, "room"), "reviewCnt")), 1);
    assert_true(json_number_value(json_object_get(json_object_get(d, "room"), "rating")) == 4.0);
    assert_null(fake_find_doc("reviews_idx", rid));
    json_decref(call("DELETE", "/reviews/{id}", rid, "gina", "guest", NULL, &st, NULL));
    assert_int_equal(st, 404);
    json_decref(r1);
    json_decref(r2);
    free(id);
}

static void review_retries_on_conflict(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    size_t nev = json_array_size(FH.store.events);
    /* the room commit loses three races (another writer got there first):
     * the plugin re-reads and commits once, with one event */
    FH.store.fail_eexist = 3;
    json_t *r = call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":3,\"content\":\"c\"}", &st, NULL);
    assert_int_equal(st, 201);
    json_decref(r);
    assert_int_equal(FH.store.fail_eexist, 0);
    assert_int_equal(json_array_size(FH.store.events), nev + 1);
    json_t *room = call("GET", "/rooms/{id}", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(json_integer_value(json_object_get(room, "reviewCnt")), 1);
    json_decref(room);
    /* endless conflicts: bounded, answered 409, no review, no index left */
    FH.store.fail_eexist = 100000;
    r = call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":3,\"content\":\"d\"}", &st, NULL);
    json_decref(r);
    assert_int_equal(st, 409);
    assert_true(FH.store.fail_eexist > 0);
    FH.store.fail_eexist = 0;
    assert_int_equal(json_array_size(FH.store.events), nev + 1);
    int idx = 0;
    for (int i = 0; i < FH.store.ndocs; i++)
        idx += FH.store.docs[i].body && strcmp(FH.store.docs[i].coll, "reviews_idx") == 0;
    assert_int_equal(idx, 1);
    free(id);
}

static void reservation_events(void **state)
{
    (void)state;
    char *id = create("alice");
    char ev[512];
    json_t *e;
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e1\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res1\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    assert_int_equal(resv_handler(&FH.ctx, e), 0);
    const json_t *d = last_event("RoomModified");
    assert_int_equal(json_integer_value(json_object_get(d, "bookingCnt")), 1);
    size_t n = json_array_size(FH.store.events);
    assert_int_equal(resv_handler(&FH.ctx, e), 0); /* redelivery: EALREADY is success */
    assert_int_equal(json_array_size(FH.store.events), n);
    json_decref(e);
    /* same reservation, new event id: still counted once */
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e2\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res1\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    assert_int_equal(resv_handler(&FH.ctx, e), 0);
    assert_int_equal(json_array_size(FH.store.events), n);
    json_decref(e);
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e3\",\"type\":\"ReservationCancelled\",\"data\":{\"id\":\"res1\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    assert_int_equal(resv_handler(&FH.ctx, e), 0);
    json_decref(e);
    assert_int_equal(json_integer_value(json_object_get(last_event("RoomModified"), "bookingCnt")), 0);
    /* unknown room: ignored */
    e = json_loads("{\"id\":\"e4\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"r\",\"roomId\":\"nope\"}}", 0,
                   NULL);
    assert_int_equal(resv_handler(&FH.ctx, e), 0);
    json_decref(e);
    /* malformed: poison with a reason */
    FH.reject[0] = '\0';
    e = json_loads("{\"id\":\"e5\",\"type\":\"ReservationConfirmed\",\"data\":{\"roomId\":7}}", 0, NULL);
    assert_int_equal(resv_handler(&FH.ctx, e), BNB_EINVAL);
    assert_true(FH.reject[0] != '\0');
    json_decref(e);
    /* a room commit that keeps conflicting is redelivered later, not lost */
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e6\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res2\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    FH.store.fail_eexist = 1000;
    int rc = resv_handler(&FH.ctx, e);
    assert_true(rc < 0 && rc != BNB_EINVAL);
    FH.store.fail_eexist = 2; /* two lost races, then it goes through */
    assert_int_equal(resv_handler(&FH.ctx, e), 0);
    assert_int_equal(json_integer_value(json_object_get(last_event("RoomModified"), "bookingCnt")), 1);
    json_decref(e);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(routes_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(create_publishes_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(patch_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(reviews_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(review_retries_on_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(reservation_events, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

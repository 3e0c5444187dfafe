/*
 * Unit tests of the dashboard plugin (plugins/dashboard/dashboard.c) against
 * the fake host of tests/plugins/fake_host.h (in-memory store with the storage
 * contract's commit semantics, recorded routes and subscriptions, fake
 * requests). The real host is exercised by tests/e2e/dashboard.
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

#define ROOM "11111111-aaaa-4bbb-8ccc-000000000001"
#define RES1 "22222222-aaaa-4bbb-8ccc-000000000001"

static bnb_route_fn list_fn, get_fn;
static bnb_event_fn event_fn[3]; /* bearbnb.room, bearbnb.reservation, bearbnb.payment */

static int setup(void **state)
{
    static const char *const topics[] = {"bearbnb.room", "bearbnb.reservation", "bearbnb.payment"};
    bnb_role_t who;
    (void)state;
    fake_host_reset("dashboard");
    FH.store.only_coll = "rooms";                                   /* its one collection */
    FH.store.max_which = 1;                                         /* lists all or by key1 (city) */
    FH.store.ops = (1u << BNB_WRITE_PUT) | (1u << BNB_WRITE_TOUCH); /* never deletes */
    FH.store.no_events = 1;                                         /* the read model publishes nothing */
    assert_int_equal(bnb_plugin.abi_version, BNB_ABI_VERSION);
    assert_string_equal(bnb_plugin.name, "dashboard");
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);
    assert_int_equal(FH.nroutes, 2);
    assert_int_equal(FH.nsubs, 3);
    list_fn = fake_route("GET", "/dashboard/rooms", &who);
    assert_non_null(list_fn);
    assert_int_equal(who, BNB_ROLE_ANYONE);
    get_fn = fake_route("GET", "/dashboard/rooms/{id}", &who);
    assert_non_null(get_fn);
    assert_int_equal(who, BNB_ROLE_ANYONE);
    for (int i = 0; i < 3; i++) {
        event_fn[i] = fake_handler(topics[i]);
        assert_non_null(event_fn[i]);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (bnb_plugin.fini)
        bnb_plugin.fini(&FH.ctx);
    fake_host_free();
    return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

static int deliver(int topic, const char *text)
{
    json_error_t err;
    json_t *ev = json_loads(text, JSON_DECODE_ANY, &err);
    assert_non_null(ev);
    FH.reject[0] = '\0';
    int rc = event_fn[topic](&FH.ctx, ev);
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
    struct bnb_req req = {.id = id};
    get_fn(&FH.ctx, &req);
    *status = req.status;
    return req.json;
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
    assert_int_equal(FH.store.commits, 3);
    assert_int_equal(FH.store.commits_without_event_id, 0);

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
    fake_doc_t *d = fake_find_doc("rooms", ROOM);
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

    FH.store.conflicts = 3; /* three concurrent writers in a row */
    FH.store.commits = 0;
    assert_int_equal(deliver(1, placed), 0);
    assert_int_equal(FH.store.commits, 4);
    json_t *r = json_array_get(json_object_get(fake_find_doc("rooms", ROOM)->body, "reservations"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "PENDING");

    FH.store.conflicts = 1000000; /* never wins: gives up, to be redelivered (not poison) */
    FH.store.commits = 0;
    int rc = deliver(2, approved);
    assert_true(rc < 0);
    assert_int_not_equal(rc, BNB_EINVAL);
    assert_true(FH.store.commits > 1 && FH.store.commits <= 64);
    FH.store.conflicts = 0;
    assert_int_equal(deliver(2, approved), 0);
    r = json_array_get(json_object_get(fake_find_doc("rooms", ROOM)->body, "reservations"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "paymentStatus")), "APPROVED");
    free(reg);
}

static void test_malformed_is_rejected_with_reason(void **state)
{
    (void)state;
    assert_int_equal(deliver(0, "[\"not\",\"an\",\"object\"]"), BNB_EINVAL);
    assert_non_null(strstr(FH.reject, "not a JSON object"));
    assert_int_equal(deliver(1, "{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"subject\":\"x\",\"data\":{\"id\":\"x\","
                                "\"roomId\":\"r\",\"version\":1,\"status\":\"PENDING\",\"guests\":\"many\"}}"),
                     BNB_EINVAL);
    assert_non_null(strstr(FH.reject, "data.guests"));
    assert_int_equal(FH.store.commits, 0);
    assert_int_equal(FH.store.ndocs, 0);

    /* unknown types are not poison */
    assert_int_equal(deliver(0, "{\"id\":\"e\",\"type\":\"RoomRepainted\",\"subject\":\"r\",\"data\":{}}"), 0);
    assert_string_equal(FH.reject, "");
    assert_int_equal(FH.store.commits, 0);
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
    assert_int_equal(FH.store.ndocs, 2);

    struct bnb_req all = {0}, bern = {.city = "Bern"}, zug = {.city = "Zug"};
    list_fn(&FH.ctx, &all);
    list_fn(&FH.ctx, &bern);
    list_fn(&FH.ctx, &zug);
    assert_int_equal(all.status, 200);
    assert_int_equal(json_array_size(all.json), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(all.json, 0), "id")), ROOM);
    assert_int_equal(json_array_size(bern.json), 1);
    assert_int_equal(zug.status, 200);
    assert_int_equal(json_array_size(zug.json), 0);

    /* deleted rooms stay listed with status DELETED */
    const char *del = "{\"id\":\"ev-d\",\"type\":\"RoomDeleted\",\"subject\":\"" ROOM "\",\"data\":{\"id\":\"" ROOM
                      "\",\"hostId\":\"hanna\",\"status\":\"DELETED\",\"version\":2}}";
    assert_int_equal(deliver(0, del), 0);
    struct bnb_req after = {0};
    list_fn(&FH.ctx, &after);
    assert_int_equal(json_array_size(after.json), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(after.json, 0), "status")), "DELETED");
    json_decref(all.json);
    json_decref(bern.json);
    json_decref(zug.json);
    json_decref(after.json);
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

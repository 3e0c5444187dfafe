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
static json_t *call_q(const char *method, const char *pattern, const char *id, const char *query, const char *user,
                      const char *role, const char *body, int *status, char *detail)
{
    struct bnb_req r = {.method = method, .id = id, .query = query, .user = user, .role = role};
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

static json_t *call(const char *method, const char *pattern, const char *id, const char *user, const char *role,
                    const char *body, int *status, char *detail)
{
    return call_q(method, pattern, id, NULL, user, role, body, status, detail);
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

static char *create_in(const char *user, const char *city, int price, int capacity)
{
    int st;
    char body[256];
    snprintf(body, sizeof(body),
             "{\"name\":\"Den\",\"description\":\"d\",\"city\":\"%s\",\"pricePerNight\":%d,\"capacity\":%d}", city,
             price, capacity);
    json_t *room = call("POST", "/rooms", NULL, user, "host", body, &st, NULL);
    assert_int_equal(st, 201);
    char *id = strdup(json_string_value(json_object_get(room, "id")));
    json_decref(room);
    return id;
}

static char *create(const char *user)
{
    return create_in(user, "Bern", 100, 2);
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
    assert_int_equal(json_array_size(json_object_get(list, "items")), 0);
    assert_true(json_is_null(json_object_get(list, "next")));
    json_decref(list);
    free(id);
}

/* A room document kept before storage v2 (embedded reviews, booking ids)
 * loses those lists at its next write. */
static void old_lists_dropped(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    fake_doc_t *d = fake_find_doc("rooms", id);
    json_object_set_new(d->body, "reviews", json_pack("[{s:s}]", "id", "old"));
    json_object_set_new(d->body, "bookings", json_pack("[s, s]", "r1", "r2"));
    json_decref(call("PATCH", "/rooms/{id}", id, "alice", "host", "{\"name\":\"Renamed\"}", &st, NULL));
    assert_int_equal(st, 200);
    d = fake_find_doc("rooms", id);
    assert_null(json_object_get(d->body, "reviews"));
    assert_null(json_object_get(d->body, "bookings"));
    assert_string_equal(json_string_value(json_object_get(d->body, "name")), "Renamed");
    free(id);
}

/* At init the lists a room kept before storage v2 move into documents of
 * their own: embedded reviews into `reviews` (listed, one per author, deleted
 * and uncounted as usual), counted booking ids into `stays`; the walk goes
 * page by page and keeps its cursor, and runs once. */
static void old_lists_migrated(void **state)
{
    (void)state;
    int st;
    char detail[512], *ids[25];
    for (int i = 0; i < 25; i++) /* more than a page */
        ids[i] = create("alice");
    for (int i = 0; i < 25; i += 12) {
        fake_doc_t *d = fake_find_doc("rooms", ids[i]);
        char rid[64];
        snprintf(rid, sizeof(rid), "old-review-%d", i);
        json_object_set_new(d->body, "reviews",
                            json_pack("[{s:s, s:s, s:s, s:i, s:s, s:s}]", "id", rid, "roomId", ids[i], "authorId",
                                      "gina", "rating", 4, "content", "fine", "createdAt", "2025-01-01T00:00:00Z"));
        json_object_set_new(d->body, "bookings", json_pack("[s]", "old-res"));
        json_object_set_new(d->body, "reviewCnt", json_integer(1));
        json_object_set_new(d->body, "ratingSum", json_integer(4));
        json_object_set_new(d->body, "bookingCnt", json_integer(1));
    }
    /* as on a store written by the first room service: no migration yet */
    bnb_write_t w = {.op = BNB_WRITE_DELETE, .coll = "migrations", .id = "rooms-v2", .expect_version = -1};
    assert_int_equal(fake_host_api.store_commit(&FH.store, &w, NULL, 0, NULL, NULL), 0);
    FH.nroutes = FH.nsubs = 0;
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);

    fake_doc_t *rv = fake_find_doc("reviews", "old-review-12");
    assert_non_null(rv);
    assert_string_equal(json_string_value(json_object_get(rv->body, "authorId")), "gina");
    assert_string_equal(json_string_value(json_object_get(rv->body, "roomId")), ids[12]);
    assert_non_null(fake_find_doc("reviews", "old-review-24"));
    fake_doc_t *room = fake_find_doc("rooms", ids[12]);
    assert_null(json_object_get(room->body, "reviews"));
    assert_null(json_object_get(room->body, "bookings"));
    assert_int_equal(json_integer_value(json_object_get(room->body, "reviewCnt")), 1);
    assert_true(json_is_true(json_object_get(fake_find_doc("stays", "old-res")->body, "counted")));
    assert_true(json_is_true(json_object_get(fake_find_doc("migrations", "rooms-v2")->body, "done")));

    /* the moved review is listed, counts as gina's, and goes as any review */
    json_t *page = call("GET", "/rooms/{id}/reviews", ids[12], NULL, NULL, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 1);
    json_decref(page);
    json_decref(
        call("POST", "/rooms/{id}/reviews", ids[12], "gina", "guest", "{\"rating\":1,\"content\":\"x\"}", &st, detail));
    assert_int_equal(st, 409);
    json_decref(call("DELETE", "/reviews/{id}", "old-review-12", "gina", "guest", NULL, &st, detail));
    assert_int_equal(st, 204);
    assert_int_equal(json_integer_value(json_object_get(fake_find_doc("rooms", ids[12])->body, "reviewCnt")), 0);

    /* once done, a start reads one document and changes nothing */
    int commits = FH.store.commits;
    FH.nroutes = FH.nsubs = 0;
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);
    assert_int_equal(FH.store.commits, commits);
    for (int i = 0; i < 25; i++)
        free(ids[i]);
}

static void reviews_follow(void **state)
{
    (void)state;
    int st;
    char detail[512];
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
    assert_int_equal(json_object_size(d), 6);
    /* the review is its own document; the room keeps counters only */
    assert_non_null(fake_find_doc("reviews", json_string_value(json_object_get(r2, "id"))));
    assert_null(json_object_get(fake_find_doc("rooms", id)->body, "reviews"));
    assert_int_equal(json_object_size(r2), 6);

    /* one review per guest per room: 409, nothing changes */
    size_t nev = json_array_size(FH.store.events);
    json_decref(
        call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":1,\"content\":\"again\"}", &st, detail));
    assert_int_equal(st, 409);
    assert_int_equal(json_array_size(FH.store.events), nev);
    /* the room's host cannot review it, even with a guest token */
    json_decref(
        call("POST", "/rooms/{id}/reviews", id, "alice", "guest", "{\"rating\":5,\"content\":\"mine\"}", &st, detail));
    assert_int_equal(st, 403);
    assert_int_equal(json_array_size(FH.store.events), nev);

    json_t *list = call("GET", "/rooms/{id}/reviews", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(list, "items")), 2);
    assert_true(json_is_null(json_object_get(list, "next")));
    json_decref(list);

    /* delete: not the author 403, author 204, document gone, counters follow */
    const char *rid = json_string_value(json_object_get(r1, "id"));
    json_decref(call("DELETE", "/reviews/{id}", rid, "gus", "guest", NULL, &st, NULL));
    assert_int_equal(st, 403);
    json_decref(call("DELETE", "/reviews/{id}", rid, "gina", "guest", NULL, &st, NULL));
    assert_int_equal(st, 204);
    d = last_event("ReviewDeleted");
    assert_string_equal(json_string_value(json_object_get(d, "id")), rid);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(d, "room"), "reviewCnt")), 1);
    assert_true(json_number_value(json_object_get(json_object_get(d, "room"), "rating")) == 4.0);
    assert_null(fake_find_doc("reviews", rid));
    json_decref(call("DELETE", "/reviews/{id}", rid, "gina", "guest", NULL, &st, NULL));
    assert_int_equal(st, 404);
    /* after deleting, the guest may review again */
    json_decref(
        call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":3,\"content\":\"back\"}", &st, NULL));
    assert_int_equal(st, 201);
    json_t *got = call("GET", "/rooms/{id}", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(json_integer_value(json_object_get(got, "reviewCnt")), 2);
    json_decref(got);
    json_decref(r1);
    json_decref(r2);
    free(id);
}

static void review_pages(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    char user[16], q[1200];
    for (int i = 0; i < 7; i++) {
        snprintf(user, sizeof(user), "g%d", i);
        json_decref(
            call("POST", "/rooms/{id}/reviews", id, user, "guest", "{\"rating\":5,\"content\":\"c\"}", &st, NULL));
        assert_int_equal(st, 201);
    }
    /* pages of 3: 3 + 3 + 1, each review once */
    char *cursor = NULL;
    int seen = 0, pages = 0;
    do {
        if (cursor)
            snprintf(q, sizeof(q), "limit=3&cursor=%s", cursor);
        else
            snprintf(q, sizeof(q), "limit=3");
        free(cursor);
        cursor = NULL;
        json_t *page = call_q("GET", "/rooms/{id}/reviews", id, q, NULL, NULL, NULL, &st, NULL);
        assert_int_equal(st, 200);
        seen += (int)json_array_size(json_object_get(page, "items"));
        if (json_is_string(json_object_get(page, "next")))
            cursor = strdup(json_string_value(json_object_get(page, "next")));
        json_decref(page);
        pages++;
    } while (cursor && pages < 10);
    assert_int_equal(seen, 7);
    assert_int_equal(pages, 3);
    /* bad parameters */
    const char *bad[][2] = {{"limit=0", "limit"},       {"limit=101", "limit"}, {"limit=x", "limit"},
                            {"cursor=bogus", "cursor"}, {"city=Bern", "city"},  {"limit=%zz", "limit"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char detail[512];
        json_decref(call_q("GET", "/rooms/{id}/reviews", id, bad[i][0], NULL, NULL, NULL, &st, detail));
        assert_int_equal(st, 400);
        assert_non_null(strstr(detail, bad[i][1]));
    }
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
    /* endless conflicts: bounded, answered 409, no review left behind */
    FH.store.fail_eexist = 100000;
    r = call("POST", "/rooms/{id}/reviews", id, "gus", "guest", "{\"rating\":3,\"content\":\"d\"}", &st, NULL);
    json_decref(r);
    assert_int_equal(st, 409);
    assert_true(FH.store.fail_eexist > 0);
    FH.store.fail_eexist = 0;
    assert_int_equal(json_array_size(FH.store.events), nev + 1);
    int n = 0;
    for (int i = 0; i < FH.store.ndocs; i++)
        n += FH.store.docs[i].body && strcmp(FH.store.docs[i].coll, "reviews") == 0;
    assert_int_equal(n, 1);
    free(id);
}

static int resv_event(const char *event_id, const char *type, const char *resv, const char *room, const char *in,
                      const char *out)
{
    char ev[768];
    snprintf(ev, sizeof(ev),
             "{\"id\":\"%s\",\"type\":\"%s\",\"data\":{\"id\":\"%s\",\"roomId\":\"%s\",\"checkIn\":\"%s\","
             "\"checkOut\":\"%s\"}}",
             event_id, type, resv, room, in, out);
    json_t *e = json_loads(ev, 0, NULL);
    assert_non_null(e);
    int rc = resv_handler(&FH.ctx, e);
    json_decref(e);
    return rc;
}

static void reservation_events(void **state)
{
    (void)state;
    char *id = create("alice");
    assert_int_equal(resv_event("e1", "ReservationConfirmed", "res1", id, "2030-01-01", "2030-01-03"), 0);
    const json_t *d = last_event("RoomModified");
    assert_int_equal(json_integer_value(json_object_get(d, "bookingCnt")), 1);
    size_t n = json_array_size(FH.store.events);
    /* redelivery: EALREADY is success */
    assert_int_equal(resv_event("e1", "ReservationConfirmed", "res1", id, "2030-01-01", "2030-01-03"), 0);
    assert_int_equal(json_array_size(FH.store.events), n);
    /* same reservation, new event id: still counted once */
    assert_int_equal(resv_event("e2", "ReservationConfirmed", "res1", id, "2030-01-01", "2030-01-03"), 0);
    assert_int_equal(json_array_size(FH.store.events), n);
    /* a never-confirmed reservation cancelled: nothing */
    assert_int_equal(resv_event("e2b", "ReservationCancelled", "other", id, "2030-02-01", "2030-02-03"), 0);
    assert_int_equal(json_array_size(FH.store.events), n);
    assert_int_equal(resv_event("e3", "ReservationCancelled", "res1", id, "2030-01-01", "2030-01-03"), 0);
    assert_int_equal(json_integer_value(json_object_get(last_event("RoomModified"), "bookingCnt")), 0);
    /* the room document keeps no list of bookings */
    assert_null(json_object_get(fake_find_doc("rooms", id)->body, "bookings"));
    /* unknown room: ignored */
    assert_int_equal(resv_event("e4", "ReservationConfirmed", "r", "nope", "2030-01-01", "2030-01-03"), 0);
    /* malformed: poison with a reason */
    FH.reject[0] = '\0';
    json_t *e = json_loads("{\"id\":\"e5\",\"type\":\"ReservationConfirmed\",\"data\":{\"roomId\":7}}", 0, NULL);
    assert_int_equal(resv_handler(&FH.ctx, e), BNB_EINVAL);
    assert_true(FH.reject[0] != '\0');
    json_decref(e);
    FH.reject[0] = '\0';
    assert_int_equal(resv_event("e5b", "ReservationPlaced", "r", id, "2030-01-03", "2030-01-01"), BNB_EINVAL);
    assert_true(FH.reject[0] != '\0');
    /* a room commit that keeps conflicting is redelivered later, not lost */
    FH.store.fail_eexist = 1000;
    int rc = resv_event("e6", "ReservationConfirmed", "res2", id, "2030-03-01", "2030-03-02");
    assert_true(rc < 0 && rc != BNB_EINVAL);
    FH.store.fail_eexist = 2; /* two lost races, then it goes through */
    assert_int_equal(resv_event("e6", "ReservationConfirmed", "res2", id, "2030-03-01", "2030-03-02"), 0);
    assert_int_equal(json_integer_value(json_object_get(last_event("RoomModified"), "bookingCnt")), 1);
    free(id);
}

/* GET /rooms with a raw query; returns the page (caller decrefs). */
static json_t *list_rooms(const char *query, int want)
{
    int st;
    char detail[512];
    json_t *page = call_q("GET", "/rooms", NULL, query, NULL, NULL, NULL, &st, detail);
    if (st != want)
        fail_msg("GET /rooms?%s: %d (%s), want %d", query ? query : "", st, detail, want);
    return page;
}

/* Walk every page of `query` (without cursor); the number of rooms seen,
 * failing on a duplicate. */
static int walk(const char *query, int *pages)
{
    char q[1400], *cursor = NULL;
    json_t *seen = json_object();
    int n = 0;
    *pages = 0;
    do {
        snprintf(q, sizeof(q), "%s%s%s", query, cursor ? "&cursor=" : "", cursor ? cursor : "");
        free(cursor);
        cursor = NULL;
        json_t *page = list_rooms(q, 200), *it;
        size_t i;
        json_array_foreach(json_object_get(page, "items"), i, it)
        {
            const char *id = json_string_value(json_object_get(it, "id"));
            assert_null(json_object_get(seen, id));
            json_object_set_new(seen, id, json_true());
            n++;
        }
        if (json_is_string(json_object_get(page, "next")))
            cursor = strdup(json_string_value(json_object_get(page, "next")));
        json_decref(page);
        (*pages)++;
    } while (cursor && *pages < 100);
    free(cursor);
    json_decref(seen);
    return n;
}

static void list_pages(void **state)
{
    (void)state;
    int pages;
    for (int i = 0; i < 25; i++)
        free(create_in(i % 2 ? "alice" : "bob", i % 5 == 0 ? "Zug" : "Bern", 100 + i * 10, 1 + i % 6));
    json_t *page = list_rooms(NULL, 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 20); /* default limit */
    assert_true(json_is_string(json_object_get(page, "next")));
    json_decref(page);
    FH.store.max_limit = 0;
    assert_int_equal(walk("limit=7", &pages), 25);
    assert_int_equal(pages, 4);
    assert_true(FH.store.max_limit <= 7); /* pages come from the store, not a scan */
    assert_int_equal(walk("limit=100", &pages), 25);
    assert_int_equal(pages, 1);
    assert_int_equal(walk("limit=2&city=Zug", &pages), 5);
    /* price range: 100..340 step 10; [150, 200] = 6 rooms, in price order */
    page = list_rooms("minPrice=150&maxPrice=200&limit=100", 200);
    json_t *items = json_object_get(page, "items"), *it;
    size_t i;
    assert_int_equal(json_array_size(items), 6);
    json_int_t last = 0;
    json_array_foreach(items, i, it)
    {
        json_int_t p = json_integer_value(json_object_get(it, "pricePerNight"));
        assert_true(p >= 150 && p <= 200 && p >= last);
        last = p;
    }
    json_decref(page);
    /* guests: capacity 1..6 round robin; capacity >= 5: i%6 in {4,5} */
    assert_int_equal(walk("guests=5&limit=3", &pages), 8);
    /* guests under a price range (filtered here) */
    assert_int_equal(walk("guests=5&minPrice=100&maxPrice=340&limit=2", &pages), 8);
    assert_int_equal(walk("city=Atlantis", &pages), 0);
    /* percent-encoded values decode */
    free(create_in("alice", "La Chaux-de-Fonds", 100, 2));
    assert_int_equal(walk("city=La%20Chaux-de-Fonds", &pages), 1);
    assert_int_equal(walk("city=La+Chaux-de-Fonds", &pages), 1);
}

static void list_bad_parameters(void **state)
{
    (void)state;
    free(create("alice"));
    const char *bad[][2] = {
        {"limit=0", "limit"},
        {"limit=1000", "limit"},
        {"limit=101", "limit"},
        {"limit=abc", "limit"},
        {"limit=-5", "limit"},
        {"limit=", "limit"},
        {"limit=1&limit=2", "limit"},
        {"cursor=not-a-cursor", "cursor"},
        {"cursor=", "cursor"},
        {"guests=0", "guests"},
        {"guests=many", "guests"},
        {"minPrice=-1", "minPrice"},
        {"maxPrice=1e3", "maxPrice"},
        {"minPrice=500&maxPrice=100", "minPrice"},
        {"checkIn=2030-02-30&checkOut=2030-03-02", "checkIn"},
        {"checkIn=2030-01-05&checkOut=2030-01-05", "checkOut"},
        {"checkIn=2030-01-05&checkOut=2030-01-01", "checkOut"},
        {"checkIn=2030-1-5&checkOut=2030-01-09", "checkIn"},
        {"checkIn=2030-01-05", "checkOut"},
        {"checkOut=2030-01-05", "checkIn"},
        {"checkIn=2030-01-01&checkOut=2030-06-01", "checkOut"}, /* more than 90 nights */
        {"sort=price", "sort"},
        {"City=Bern", "City"},
        {"city=%zz", "city"},
        {"city=%4", "city"},
        {"city=a%00b", "city"},
        {"ci%7", "ci"},
        {"city=%0a", "city"},
        {"city=", "city"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st;
        char detail[512];
        json_decref(call_q("GET", "/rooms", NULL, bad[i][0], NULL, NULL, NULL, &st, detail));
        if (st != 400 || !strstr(detail, bad[i][1]))
            fail_msg("GET /rooms?%s: %d '%s', want 400 naming %s", bad[i][0], st, detail, bad[i][1]);
    }
}

static int search_count(const char *room, const char *in, const char *out)
{
    char q[256];
    int found = 0;
    snprintf(q, sizeof(q), "checkIn=%s&checkOut=%s&limit=100", in, out);
    json_t *page = list_rooms(q, 200), *it;
    size_t i;
    json_array_foreach(json_object_get(page, "items"), i, it) found +=
        strcmp(json_string_value(json_object_get(it, "id")), room) == 0;
    json_decref(page);
    return found;
}

static void search_follows_reservations(void **state)
{
    (void)state;
    char *a = create("alice"), *b = create("bob");
    /* a is held 2030-01-30 .. 2030-02-02 (three nights across two months) by r1 */
    assert_int_equal(resv_event("p1", "ReservationPlaced", "r1", a, "2030-01-30", "2030-02-02"), 0);
    assert_int_equal(search_count(a, "2030-01-31", "2030-02-01"), 0);
    assert_int_equal(search_count(a, "2030-02-01", "2030-02-05"), 0);
    assert_int_equal(search_count(a, "2030-01-25", "2030-02-10"), 0);
    assert_int_equal(search_count(b, "2030-01-31", "2030-02-01"), 1);
    /* adjacent stays are free */
    assert_int_equal(search_count(a, "2030-01-27", "2030-01-30"), 1);
    assert_int_equal(search_count(a, "2030-02-02", "2030-02-04"), 1);
    /* the month documents are bounded: one per (room, month) */
    char nid[128];
    snprintf(nid, sizeof(nid), "%s|2030-01", a);
    assert_non_null(fake_find_doc("nights", nid));
    /* another reservation's events crossing: r2 placed on the same nights
     * before r1's cancel arrives; r1's cancel frees only r1's hold */
    assert_int_equal(resv_event("p2", "ReservationPlaced", "r2", a, "2030-02-01", "2030-02-03"), 0);
    assert_int_equal(resv_event("c1", "ReservationRejected", "r1", a, "2030-01-30", "2030-02-02"), 0);
    assert_int_equal(search_count(a, "2030-01-30", "2030-02-01"), 1);
    assert_int_equal(search_count(a, "2030-02-01", "2030-02-02"), 0);
    /* redelivery of r1's placement after its rejection changes nothing */
    assert_int_equal(resv_event("p1", "ReservationPlaced", "r1", a, "2030-01-30", "2030-02-02"), 0);
    assert_int_equal(search_count(a, "2030-01-30", "2030-02-01"), 1);
    assert_int_equal(resv_event("x2", "ReservationCancelled", "r2", a, "2030-02-01", "2030-02-03"), 0);
    assert_int_equal(search_count(a, "2030-01-25", "2030-02-10"), 1);
    free(a);
    free(b);
}

static void search_examines_a_bounded_number(void **state)
{
    (void)state;
    char *ids[250];
    int pages;
    for (int i = 0; i < 250; i++) {
        ids[i] = create("alice");
        if (i != 249) /* every room booked but one */
            assert_int_equal(resv_event(ids[i], "ReservationPlaced", ids[i], ids[i], "2030-05-01", "2030-05-04"), 0);
    }
    FH.store.gets = 0;
    FH.store.queries = 0;
    json_t *page = list_rooms("checkIn=2030-05-02&checkOut=2030-05-03&limit=20", 200);
    /* at most 200 rooms examined (one get each), few queries; a page may be
     * short (here empty) with a next */
    assert_true(FH.store.gets <= 200);
    assert_true(FH.store.queries <= 10);
    assert_true(json_is_string(json_object_get(page, "next")));
    json_decref(page);
    /* walking finds the free room exactly once */
    assert_int_equal(walk("checkIn=2030-05-02&checkOut=2030-05-03&limit=20", &pages), 1);
    assert_true(pages >= 2);
    for (int i = 0; i < 250; i++)
        free(ids[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(routes_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(create_publishes_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(patch_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(old_lists_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(old_lists_migrated, setup, teardown),
        cmocka_unit_test_setup_teardown(reviews_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(review_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(review_retries_on_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(reservation_events, setup, teardown),
        cmocka_unit_test_setup_teardown(list_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(list_bad_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(search_follows_reservations, setup, teardown),
        cmocka_unit_test_setup_teardown(search_examines_a_bounded_number, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

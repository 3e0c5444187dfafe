/*
 * Unit tests of the dashboard merge (plugins/dashboard/dash_merge.c): the
 * final document depends only on the set of events, whatever their order and
 * however often each is delivered; stale events change nothing; malformed
 * events are refused with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin.h"
#include "dash_merge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROOM "11111111-aaaa-4bbb-8ccc-000000000001"
#define RES1 "22222222-aaaa-4bbb-8ccc-000000000001"
#define RES2 "22222222-aaaa-4bbb-8ccc-000000000002"
#define RES3 "22222222-aaaa-4bbb-8ccc-000000000003"
#define PAY1 "pay-" RES1
#define PAY2 "pay-" RES2
#define PAY3 "pay-" RES3

static int evseq;

static json_t *envelope(const char *type, const char *subject, json_t *data)
{
    char id[64];
    snprintf(id, sizeof(id), "ev-%04d", ++evseq);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "id", id, "type", type, "source", "test", "subject",
                           subject, "correlationId", subject, "time", "2025-01-01T00:00:00Z", "data", data);
    assert_non_null(ev);
    return ev;
}

static json_t *room_ev(const char *type, int version, const char *name, int price, int reviews, double rating,
                       int bookings)
{
    return envelope(type, ROOM,
                    json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:f, s:i, s:i}", "id", ROOM, "hostId",
                              "hanna", "name", name, "description", "cosy", "city", "Bern", "pricePerNight", price,
                              "capacity", 2, "status", "ACTIVE", "reviewCnt", reviews, "rating", rating, "bookingCnt",
                              bookings, "version", version));
}

static json_t *room_deleted_ev(int version)
{
    return envelope(
        "RoomDeleted", ROOM,
        json_pack("{s:s, s:s, s:s, s:i}", "id", ROOM, "hostId", "hanna", "status", "DELETED", "version", version));
}

static json_t *review_ev(const char *type, const char *review_id, int room_version, int count, double rating)
{
    return envelope(type, ROOM,
                    json_pack("{s:s, s:s, s:s, s:i, s:s, s:{s:i, s:f, s:i}}", "id", review_id, "roomId", ROOM,
                              "authorId", "gus", "rating", 4, "content", "nice", "room", "reviewCnt", count, "rating",
                              rating, "version", room_version));
}

static json_t *res_ev(const char *type, const char *res_id, int version, const char *status, const char *payment_id,
                      const char *check_in)
{
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:i}", "id", res_id, "roomId", ROOM,
                             "hostId", "hanna", "guestId", "gus", "checkIn", check_in, "checkOut", "2030-01-20",
                             "guests", 2, "amount", 30000, "status", status, "version", version);
    assert_non_null(data);
    json_object_set_new(data, "paymentId", payment_id ? json_string(payment_id) : json_null());
    if (strcmp(type, "ReservationPlaced") == 0)
        json_object_set_new(data, "card", json_string("4111111111111111"));
    return envelope(type, res_id, data);
}

static json_t *pay_ev(const char *type, const char *res_id, int version, const char *status)
{
    char pid[80];
    snprintf(pid, sizeof(pid), "pay-%s", res_id);
    return envelope(type, pid,
                    json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:i}", "id", pid, "reservationId", res_id, "roomId",
                              ROOM, "hostId", "hanna", "payerId", "gus", "amount", 30000, "status", status, "version",
                              version));
}

/* Apply events in `order` (indexes into evs), each `times` times in a row. */
static json_t *apply_all(json_t **evs, const size_t *order, size_t n, int times)
{
    json_t *doc = dash_doc_new(ROOM);
    assert_non_null(doc);
    for (size_t i = 0; i < n; i++) {
        for (int t = 0; t < times; t++) {
            int rc = dash_apply(doc, evs[order ? order[i] : i]);
            assert_true(rc == 0 || rc == 1);
            if (t > 0)
                assert_int_equal(rc, 0); /* a repeat never changes anything */
        }
    }
    return doc;
}

/* Fast check: equal as JSON values (dumped only when they differ). */
static void assert_equal_doc(const json_t *a, const json_t *b)
{
    if (!json_equal((json_t *)a, (json_t *)b)) {
        char *sa = json_dumps(a, JSON_SORT_KEYS | JSON_COMPACT), *sb = json_dumps(b, JSON_SORT_KEYS | JSON_COMPACT);
        fprintf(stderr, "documents differ:\n%s\n%s\n", sa, sb);
        free(sa);
        free(sb);
        fail();
    }
}

/* Full check: also the same serialisation, key order included. */
static void assert_same_doc(const json_t *a, const json_t *b)
{
    char *sa = json_dumps(a, JSON_SORT_KEYS | JSON_COMPACT), *sb = json_dumps(b, JSON_SORT_KEYS | JSON_COMPACT);
    char *ra = json_dumps(a, JSON_COMPACT), *rb = json_dumps(b, JSON_COMPACT);
    if (strcmp(sa, sb) != 0)
        fprintf(stderr, "documents differ:\n%s\n%s\n", sa, sb);
    assert_string_equal(sa, sb);
    assert_string_equal(ra, rb); /* even the key order is the same */
    assert_true(json_equal((json_t *)a, (json_t *)b));
    free(sa);
    free(sb);
    free(ra);
    free(rb);
}

static const json_t *find_res(const json_t *doc, const char *id)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "reservations"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "id")), id) == 0)
            return e;
    }
    return NULL;
}

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static long long iget(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void free_all(json_t **evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(evs[i]);
}

/* ---- permutations of a small set ----------------------------------------- */

static int next_perm(size_t *a, size_t n)
{
    size_t i = n - 1, j;
    while (i > 0 && a[i - 1] >= a[i])
        i--;
    if (i == 0)
        return 0;
    j = n - 1;
    while (a[j] <= a[i - 1])
        j--;
    size_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
    for (j = n - 1; i < j; i++, j--) {
        t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
    return 1;
}

static void test_all_orders_small_set(void **state)
{
    (void)state;
    json_t *evs[] = {
        room_ev("RoomRegistered", 1, "Loft", 10000, 0, 0, 0),
        res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-17"),
        pay_ev("PaymentApproved", RES1, 1, "APPROVED"),
        res_ev("ReservationConfirmed", RES1, 2, "CONFIRMED", PAY1, "2030-01-17"),
        review_ev("ReviewCreated", "rv1", 2, 1, 5.0),
        room_ev("RoomModified", 3, "Loft deluxe", 12000, 1, 5.0, 1),
        res_ev("ReservationCancelled", RES1, 3, "CANCELLED", PAY1, "2030-01-17"),
    };
    const size_t n = sizeof(evs) / sizeof(evs[0]);
    size_t order[sizeof(evs) / sizeof(evs[0])];
    json_t *ref = apply_all(evs, NULL, n, 1);
    size_t perms = 0;

    /* the reference itself is right */
    assert_string_equal(sget(ref, "name"), "Loft deluxe");
    assert_int_equal(iget(ref, "pricePerNight"), 12000);
    assert_string_equal(sget(ref, "status"), "ACTIVE");
    assert_int_equal(iget(ref, "reviewCnt"), 1);
    assert_int_equal(iget(ref, "version"), 3);
    const json_t *r1 = find_res(ref, RES1);
    assert_non_null(r1);
    assert_string_equal(sget(r1, "status"), "CANCELLED");
    assert_string_equal(sget(r1, "paymentStatus"), "APPROVED");
    assert_string_equal(sget(r1, "paymentId"), PAY1);
    assert_int_equal(iget(r1, "amount"), 30000);
    assert_int_equal(json_array_size(json_object_get(ref, "reservations")), 1);

    for (size_t i = 0; i < n; i++)
        order[i] = i;
    do {
        json_t *once = apply_all(evs, order, n, 1);
        json_t *twice = apply_all(evs, order, n, 2);
        if (perms % 97 == 0) {
            assert_same_doc(ref, once);
            assert_same_doc(ref, twice);
        } else {
            assert_equal_doc(ref, once);
            assert_equal_doc(ref, twice);
        }
        /* the whole sequence once more changes nothing */
        for (size_t i = 0; i < n; i++)
            assert_int_equal(dash_apply(once, evs[order[i]]), 0);
        assert_equal_doc(ref, once);
        json_decref(once);
        json_decref(twice);
        perms++;
    } while (next_perm(order, n));
    assert_int_equal(perms, 5040);

    json_decref(ref);
    free_all(evs, n);
}

/* ---- random shuffles of a larger set, with duplicates -------------------- */

static void test_random_shuffles_large_set(void **state)
{
    (void)state;
    json_t *evs[] = {
        room_ev("RoomRegistered", 1, "Loft", 10000, 0, 0, 0),
        review_ev("ReviewCreated", "rv1", 2, 1, 4.0),
        review_ev("ReviewCreated", "rv2", 3, 2, 4.5),
        room_ev("RoomModified", 4, "Loft 2", 11000, 2, 4.5, 0),
        review_ev("ReviewDeleted", "rv1", 5, 1, 5.0),
        room_ev("RoomModified", 6, "Loft 3", 11000, 1, 5.0, 1),
        room_deleted_ev(7),
        /* RES1: confirmed then cancelled, refunded */
        res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-02-01"),
        pay_ev("PaymentApproved", RES1, 1, "APPROVED"),
        res_ev("ReservationConfirmed", RES1, 2, "CONFIRMED", PAY1, "2030-02-01"),
        res_ev("ReservationCancelRequested", RES1, 3, "CANCEL_REQUESTED", PAY1, "2030-02-01"),
        pay_ev("PaymentCancelled", RES1, 2, "CANCELLED"),
        res_ev("ReservationCancelled", RES1, 4, "CANCELLED", PAY1, "2030-02-01"),
        /* RES2: declined */
        res_ev("ReservationPlaced", RES2, 1, "PENDING", NULL, "2030-01-10"),
        pay_ev("PaymentDeclined", RES2, 1, "DECLINED"),
        res_ev("ReservationRejected", RES2, 2, "REJECTED", NULL, "2030-01-10"),
        /* RES3: confirmed */
        res_ev("ReservationPlaced", RES3, 1, "PENDING", NULL, "2030-03-01"),
        res_ev("ReservationConfirmed", RES3, 2, "CONFIRMED", PAY3, "2030-03-01"),
        pay_ev("PaymentApproved", RES3, 1, "APPROVED"),
    };
    const size_t n = sizeof(evs) / sizeof(evs[0]);
    json_t *ref = apply_all(evs, NULL, n, 1);
    size_t order[2 * sizeof(evs) / sizeof(evs[0])];

    assert_string_equal(sget(ref, "name"), "Loft 3");
    assert_string_equal(sget(ref, "status"), "DELETED");
    assert_string_equal(sget(ref, "hostId"), "hanna");
    assert_int_equal(iget(ref, "reviewCnt"), 1);
    assert_int_equal(iget(ref, "bookingCnt"), 1);
    assert_int_equal(iget(ref, "version"), 7);
    json_t *list = json_object_get(ref, "reservations");
    assert_int_equal(json_array_size(list), 3);
    /* sorted by checkIn */
    assert_string_equal(sget(json_array_get(list, 0), "id"), RES2);
    assert_string_equal(sget(json_array_get(list, 1), "id"), RES1);
    assert_string_equal(sget(json_array_get(list, 2), "id"), RES3);
    assert_string_equal(sget(find_res(ref, RES1), "status"), "CANCELLED");
    assert_string_equal(sget(find_res(ref, RES1), "paymentStatus"), "CANCELLED");
    assert_string_equal(sget(find_res(ref, RES2), "status"), "REJECTED");
    assert_string_equal(sget(find_res(ref, RES2), "paymentStatus"), "DECLINED");
    /* like the reservation service: a rejected reservation has no paymentId */
    assert_true(json_is_null(json_object_get(find_res(ref, RES2), "paymentId")));
    assert_string_equal(sget(find_res(ref, RES3), "status"), "CONFIRMED");
    assert_string_equal(sget(find_res(ref, RES3), "paymentStatus"), "APPROVED");
    assert_string_equal(sget(find_res(ref, RES3), "guestId"), "gus");

    srand(12345);
    for (int round = 0; round < 500; round++) {
        /* every event twice, all shuffled (Fisher-Yates) */
        for (size_t i = 0; i < 2 * n; i++)
            order[i] = i % n;
        for (size_t i = 2 * n - 1; i > 0; i--) {
            size_t j = (size_t)rand() % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        json_t *doc = apply_all(evs, order, 2 * n, 1);
        assert_same_doc(ref, doc);
        json_decref(doc);
    }
    json_decref(ref);
    free_all(evs, n);
}

/* ---- stale events -------------------------------------------------------- */

static void test_stale_events_ignored(void **state)
{
    (void)state;
    json_t *v1 = room_ev("RoomRegistered", 1, "Old", 100, 0, 0, 0);
    json_t *v2 = room_ev("RoomModified", 2, "New", 200, 0, 0, 0);
    json_t *review3 = review_ev("ReviewCreated", "rv", 3, 1, 3.0);
    json_t *p1 = res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-01");
    json_t *p2 = res_ev("ReservationConfirmed", RES1, 2, "CONFIRMED", PAY1, "2030-01-01");
    json_t *pay1 = pay_ev("PaymentApproved", RES1, 1, "APPROVED");
    json_t *pay2 = pay_ev("PaymentCancelled", RES1, 2, "CANCELLED");
    json_t *doc = dash_doc_new(ROOM);

    assert_int_equal(dash_apply(doc, v2), 1);
    assert_int_equal(dash_apply(doc, review3), 1);
    json_t *snap = json_deep_copy(doc);
    assert_int_equal(dash_apply(doc, v1), 0);
    assert_same_doc(snap, doc);
    assert_string_equal(sget(doc, "name"), "New");
    /* a room snapshot older than the review keeps the newer counts */
    assert_int_equal(iget(doc, "reviewCnt"), 1);

    assert_int_equal(dash_apply(doc, p2), 1);
    assert_int_equal(dash_apply(doc, pay2), 1);
    json_decref(snap);
    snap = json_deep_copy(doc);
    assert_int_equal(dash_apply(doc, p1), 0);
    assert_int_equal(dash_apply(doc, pay1), 0);
    assert_same_doc(snap, doc);
    assert_string_equal(sget(find_res(doc, RES1), "status"), "CONFIRMED");
    assert_string_equal(sget(find_res(doc, RES1), "paymentStatus"), "CANCELLED");

    json_decref(snap);
    json_decref(doc);
    json_decref(v1);
    json_decref(v2);
    json_decref(review3);
    json_decref(p1);
    json_decref(p2);
    json_decref(pay1);
    json_decref(pay2);
}

/* ---- placeholders -------------------------------------------------------- */

static void test_placeholders(void **state)
{
    (void)state;
    json_t *pay = pay_ev("PaymentApproved", RES1, 1, "APPROVED");
    json_t *rev = review_ev("ReviewCreated", "rv", 2, 1, 5.0);
    json_t *reg = room_ev("RoomRegistered", 1, "Loft", 100, 0, 0, 0);
    json_t *doc = dash_doc_new(ROOM);

    assert_int_equal(dash_apply(doc, pay), 1);
    assert_int_equal(dash_apply(doc, rev), 1);
    assert_int_equal(dash_doc_has_room(doc), 0);
    const json_t *e = find_res(doc, RES1);
    assert_non_null(e);
    assert_string_equal(sget(e, "paymentStatus"), "APPROVED");
    assert_true(json_is_null(json_object_get(e, "status")));
    assert_string_equal(sget(e, "paymentId"), PAY1); /* from the payment until the reservation arrives */
    assert_int_equal(iget(e, "amount"), 30000);
    assert_true(json_is_null(json_object_get(doc, "name")));
    assert_true(json_is_null(json_object_get(doc, "status")));

    assert_int_equal(dash_apply(doc, reg), 1);
    assert_int_equal(dash_doc_has_room(doc), 1);
    assert_string_equal(sget(doc, "name"), "Loft");
    assert_int_equal(iget(doc, "reviewCnt"), 1); /* the review (v2) is newer than the registration (v1) */

    json_decref(doc);
    json_decref(pay);
    json_decref(rev);
    json_decref(reg);
}

/* ---- the client view ------------------------------------------------------ */

static void test_view_has_no_private_keys(void **state)
{
    (void)state;
    json_t *reg = room_ev("RoomRegistered", 1, "Loft", 100, 0, 0, 0);
    json_t *res = res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-01");
    json_t *doc = dash_doc_new(ROOM);
    const char *key;
    json_t *v, *e;
    size_t i;

    assert_int_equal(dash_apply(doc, reg), 1);
    assert_int_equal(dash_apply(doc, res), 1);
    json_t *view = dash_doc_view(doc);
    assert_non_null(view);
    json_object_foreach(view, key, v) assert_true(key[0] != '_');
    static const char *const want[] = {"id",       "hostId", "name",      "description", "city",       "pricePerNight",
                                       "capacity", "status", "reviewCnt", "rating",      "bookingCnt", "reservations"};
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_non_null(json_object_get(view, want[i]));
    json_array_foreach(json_object_get(view, "reservations"), i, e)
    {
        json_object_foreach(e, key, v) assert_true(key[0] != '_');
        static const char *const rwant[] = {"id",     "guestId", "checkIn",   "checkOut",     "guests",
                                            "amount", "status",  "paymentId", "paymentStatus"};
        for (size_t k = 0; k < sizeof(rwant) / sizeof(rwant[0]); k++)
            assert_non_null(json_object_get(e, rwant[k]));
    }
    assert_int_equal(json_array_size(json_object_get(view, "reservations")), 1);
    /* the stored document keeps its sources */
    assert_non_null(json_object_get(doc, "_room"));
    json_decref(view);
    json_decref(doc);
    json_decref(reg);
    json_decref(res);
}

/* ---- malformed and unknown events ---------------------------------------- */

static void expect_reject(const char *text, const char *reason_part)
{
    json_error_t err;
    json_t *ev = json_loads(text, JSON_DECODE_ANY, &err);
    char why[256] = "";
    dash_ev_kind_t kind;
    const char *room = NULL;

    assert_non_null(ev);
    int rc = dash_event_check(ev, &kind, &room, why, sizeof(why));
    if (rc != BNB_EINVAL || !strstr(why, reason_part))
        fprintf(stderr, "event %s: rc %d, reason '%s', want '%s'\n", text, rc, why, reason_part);
    assert_int_equal(rc, BNB_EINVAL);
    assert_non_null(strstr(why, reason_part));
    json_t *doc = dash_doc_new(ROOM);
    json_t *before = json_deep_copy(doc);
    assert_int_equal(dash_apply(doc, ev), BNB_EINVAL);
    assert_same_doc(before, doc);
    json_decref(before);
    json_decref(doc);
    json_decref(ev);
}

static void test_malformed_rejected(void **state)
{
    (void)state;
    expect_reject("[1,2]", "not a JSON object");
    expect_reject("\"x\"", "not a JSON object");
    expect_reject("{\"type\":\"RoomRegistered\",\"subject\":\"r\",\"data\":{}}", "id");
    expect_reject("{\"id\":\"e\",\"subject\":\"r\",\"data\":{}}", "type");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomRegistered\",\"data\":{}}", "subject");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomRegistered\",\"subject\":\"r\"}", "data");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomRegistered\",\"subject\":\"r\",\"data\":[]}", "data");
    expect_reject("{\"id\":7,\"type\":\"RoomRegistered\",\"subject\":\"r\",\"data\":{}}", "id");
    /* data fields */
    expect_reject("{\"id\":\"e\",\"type\":\"RoomRegistered\",\"subject\":\"r\",\"data\":{\"id\":\"r\"}}",
                  "data.version");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomRegistered\",\"subject\":\"r\",\"data\":{\"id\":\"r\",\"version\":0}}",
                  "data.version");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomModified\",\"subject\":\"r\",\"data\":{\"id\":\"r\",\"version\":2,"
                  "\"pricePerNight\":\"cheap\"}}",
                  "data.pricePerNight");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomModified\",\"subject\":\"r\",\"data\":{\"id\":\"r\",\"version\":2,"
                  "\"rating\":\"good\"}}",
                  "data.rating");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomModified\",\"subject\":\"r\",\"data\":{\"id\":\"r\",\"version\":2,"
                  "\"name\":5}}",
                  "data.name");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomRegistered\",\"subject\":\"r/../x\",\"data\":{\"id\":\"r/../x\","
                  "\"version\":1}}",
                  "data.id is not a valid id");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomRegistered\",\"subject\":\"a\",\"data\":{\"id\":\"b\",\"version\":1}}",
                  "subject");
    expect_reject("{\"id\":\"e\",\"type\":\"RoomDeleted\",\"subject\":\"r\",\"data\":{\"version\":3}}", "data.id");
    expect_reject(
        "{\"id\":\"e\",\"type\":\"ReviewCreated\",\"subject\":\"r\",\"data\":{\"id\":\"v\",\"roomId\":\"r\"}}",
        "data.room");
    expect_reject("{\"id\":\"e\",\"type\":\"ReviewCreated\",\"subject\":\"r\",\"data\":{\"id\":\"v\",\"roomId\":\"r\","
                  "\"room\":{\"reviewCnt\":1,\"rating\":4}}}",
                  "data.room.version");
    expect_reject("{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"subject\":\"x\",\"data\":{\"id\":\"x\","
                  "\"version\":1,\"status\":\"PENDING\"}}",
                  "data.roomId");
    expect_reject("{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"subject\":\"x\",\"data\":{\"id\":\"x\","
                  "\"roomId\":\"has space\",\"version\":1,\"status\":\"PENDING\"}}",
                  "data.roomId is not a valid id");
    expect_reject("{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"subject\":\"x\",\"data\":{\"id\":\"x\","
                  "\"roomId\":\"r\",\"version\":1,\"status\":\"PENDING\",\"checkIn\":\"01/02/2030\"}}",
                  "data.checkIn");
    expect_reject("{\"id\":\"e\",\"type\":\"ReservationConfirmed\",\"subject\":\"x\",\"data\":{\"id\":\"x\","
                  "\"roomId\":\"r\",\"version\":2,\"status\":\"CONFIRMED\",\"guests\":\"two\"}}",
                  "data.guests");
    expect_reject("{\"id\":\"e\",\"type\":\"PaymentApproved\",\"subject\":\"p\",\"data\":{\"id\":\"p\","
                  "\"reservationId\":\"x\",\"version\":1,\"status\":\"APPROVED\"}}",
                  "data.roomId");
    expect_reject("{\"id\":\"e\",\"type\":\"PaymentApproved\",\"subject\":\"p\",\"data\":{\"id\":\"p\","
                  "\"roomId\":\"r\",\"version\":1,\"status\":\"APPROVED\"}}",
                  "data.reservationId");
    expect_reject("{\"id\":\"e\",\"type\":\"PaymentApproved\",\"subject\":\"p\",\"data\":{\"id\":\"p\","
                  "\"roomId\":\"r\",\"reservationId\":\"x\",\"version\":1,\"status\":\"APPROVED\",\"amount\":1.5}}",
                  "data.amount");
}

static void test_unknown_type_ignored(void **state)
{
    (void)state;
    json_t *ev = json_pack("{s:s, s:s, s:s, s:{s:i}}", "id", "e", "type", "RoomRepainted", "subject", "r", "data",
                           "whatever", 1);
    dash_ev_kind_t kind;
    const char *room = NULL;
    char why[128] = "";
    assert_int_equal(dash_event_check(ev, &kind, &room, why, sizeof(why)), 1);
    json_t *doc = dash_doc_new("r");
    assert_int_equal(dash_apply(doc, ev), BNB_EINVAL); /* never applied */
    json_decref(doc);
    json_decref(ev);

    /* the right document is chosen for each kind */
    json_t *p = pay_ev("PaymentApproved", RES1, 1, "APPROVED");
    assert_int_equal(dash_event_check(p, &kind, &room, why, sizeof(why)), 0);
    assert_int_equal(kind, DASH_EV_PAYMENT);
    assert_string_equal(room, ROOM);
    /* an event for another room is not applied to this document */
    doc = dash_doc_new("another-room");
    assert_int_equal(dash_apply(doc, p), BNB_EINVAL);
    json_decref(doc);
    json_decref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_orders_small_set),     cmocka_unit_test(test_random_shuffles_large_set),
        cmocka_unit_test(test_stale_events_ignored),     cmocka_unit_test(test_placeholders),
        cmocka_unit_test(test_view_has_no_private_keys), cmocka_unit_test(test_malformed_rejected),
        cmocka_unit_test(test_unknown_type_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

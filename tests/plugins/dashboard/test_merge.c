/*
 * Unit tests of the dashboard merge (plugins/dashboard/dash_merge.c): the
 * room summary and the reservation views depend only on the set of events,
 * whatever their order, however often each is delivered and wherever the
 * counting of a view's transitions is interrupted; stale events change
 * nothing; malformed events are refused with a reason.
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
static const char *evtime = "2025-01-01T00:00:00Z";

static json_t *envelope(const char *type, const char *subject, json_t *data)
{
    char id[64];
    snprintf(id, sizeof(id), "ev-%04d", ++evseq);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "id", id, "type", type, "source", "test", "subject",
                           subject, "correlationId", subject, "time", evtime, "data", data);
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

/* ---- a simulated store: one summary, the views, applied marks -------------
 * What the plugin does with the real store, without it: an event goes to its
 * view (reservation/payment) or to the summary (room/review), each document
 * remembers the marks applied to it; after a view changed, its pending
 * transitions are counted on the summary (each mark once) and dropped.
 * `crash` leaves the counting for later (as a crash after the view's commit
 * would), to be done by the next event of that reservation or at the end. */

typedef struct {
    json_t *sum, *sum_marks; /* the summary and its applied marks */
    json_t *views;           /* {resId: view} */
    json_t *view_marks;      /* {resId: {eventId: true}} */
} sim_t;

static void sim_init(sim_t *s)
{
    s->sum = dash_sum_new(ROOM);
    s->sum_marks = json_object();
    s->views = json_object();
    s->view_marks = json_object();
    assert_non_null(s->sum);
}

static void sim_free(sim_t *s)
{
    json_decref(s->sum);
    json_decref(s->sum_marks);
    json_decref(s->views);
    json_decref(s->view_marks);
}

static void sim_flush(sim_t *s, const char *res)
{
    json_t *view = json_object_get(s->views, res), *e;
    json_t *pending = json_deep_copy(dash_view_pending(view));
    size_t i;
    json_array_foreach(pending, i, e)
    {
        const char *mark = json_string_value(json_object_get(e, "mark"));
        assert_string_equal(json_string_value(json_object_get(e, "room")), ROOM);
        if (!json_object_get(s->sum_marks, mark)) {
            assert_int_equal(dash_sum_count(s->sum, json_string_value(json_object_get(e, "from")),
                                            json_string_value(json_object_get(e, "to"))),
                             0);
            json_object_set_new(s->sum_marks, mark, json_true());
        }
        assert_int_equal(dash_view_drop_pending(view, mark), 1);
    }
    assert_int_equal(json_array_size(dash_view_pending(view)), 0);
    json_decref(pending);
}

/* 1 changed, 0 not (stale or repeated). */
static int sim_event(sim_t *s, const json_t *ev, int crash)
{
    dash_ev_kind_t kind;
    const char *room, *res, *id = json_string_value(json_object_get(ev, "id"));
    int rc;
    assert_int_equal(dash_event_check(ev, &kind, &room, &res, NULL, 0), 0);
    if (kind == DASH_EV_RESERVATION || kind == DASH_EV_PAYMENT) {
        json_t *view = json_object_get(s->views, res), *marks = json_object_get(s->view_marks, res);
        if (!view) {
            view = dash_view_new(res);
            marks = json_object();
            json_object_set_new(s->views, res, view);
            json_object_set_new(s->view_marks, res, marks);
        }
        if (json_object_get(marks, id)) {
            rc = 0;
        } else {
            rc = dash_view_apply(view, ev);
            assert_true(rc == 0 || rc == 1);
            json_object_set_new(marks, id, json_true());
        }
        if (!crash)
            sim_flush(s, res);
        return rc;
    }
    if (json_object_get(s->sum_marks, id))
        return 0;
    rc = dash_sum_apply(s->sum, ev);
    assert_true(rc == 0 || rc == 1);
    json_object_set_new(s->sum_marks, id, json_true());
    return rc;
}

/* What clients would see: {summary, views: {id: view}} after finishing every
 * interrupted counting. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *sim_result(sim_t *s)
{
    const char *key, *keys[16];
    size_t n = 0;
    json_t *v, *views = json_object();
    json_object_foreach(s->views, key, v)
    {
        assert_true(n < 16);
        keys[n++] = key;
    }
    qsort(keys, n, sizeof(keys[0]), cmp_str); /* the same key order whatever came first */
    for (size_t i = 0; i < n; i++) {
        sim_flush(s, keys[i]);
        json_object_set_new(views, keys[i], dash_view_public(json_object_get(s->views, keys[i])));
    }
    return json_pack("{s:o, s:o}", "summary", dash_sum_public(s->sum), "views", views);
}

/* Apply events in `order` (indexes into evs), each `times` times in a row;
 * crash_seed != 0 interrupts the counting at random. */
static json_t *apply_all(json_t **evs, const size_t *order, size_t n, int times, unsigned crash_seed)
{
    sim_t s;
    sim_init(&s);
    for (size_t i = 0; i < n; i++) {
        for (int t = 0; t < times; t++) {
            int crash = crash_seed ? (rand_r(&crash_seed) % 3) == 0 : 0;
            int rc = sim_event(&s, evs[order ? order[i] : i], crash);
            if (t > 0)
                assert_int_equal(rc, 0); /* a repeat never changes anything */
        }
    }
    json_t *r = sim_result(&s);
    sim_free(&s);
    return r;
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

static const json_t *find_view(const json_t *result, const char *id)
{
    return json_object_get(json_object_get(result, "views"), id);
}

static const json_t *summary(const json_t *result)
{
    return json_object_get(result, "summary");
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

static long long booked(const json_t *result, const char *status)
{
    return iget(json_object_get(summary(result), "bookings"), status);
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
    json_t *ref = apply_all(evs, NULL, n, 1, 0);
    size_t perms = 0;

    /* the reference itself is right */
    const json_t *sum = summary(ref);
    assert_string_equal(sget(sum, "name"), "Loft deluxe");
    assert_int_equal(iget(sum, "pricePerNight"), 12000);
    assert_string_equal(sget(sum, "status"), "ACTIVE");
    assert_int_equal(iget(sum, "reviewCnt"), 1);
    assert_int_equal(iget(sum, "version"), 3);
    assert_int_equal(booked(ref, "CANCELLED"), 1);
    assert_int_equal(booked(ref, "CONFIRMED"), 0);
    assert_int_equal(booked(ref, "PENDING"), 0);
    assert_int_equal(booked(ref, "total"), 1);
    const json_t *r1 = find_view(ref, RES1);
    assert_non_null(r1);
    assert_string_equal(sget(r1, "roomId"), ROOM);
    assert_string_equal(sget(r1, "status"), "CANCELLED");
    assert_string_equal(sget(r1, "paymentStatus"), "APPROVED");
    assert_string_equal(sget(r1, "paymentId"), PAY1);
    assert_int_equal(iget(r1, "amount"), 30000);
    assert_int_equal(json_object_size(json_object_get(ref, "views")), 1);

    for (size_t i = 0; i < n; i++)
        order[i] = i;
    do {
        json_t *once = apply_all(evs, order, n, 1, 0);
        json_t *twice = apply_all(evs, order, n, 2, (unsigned)perms + 1);
        if (perms % 97 == 0) {
            assert_same_doc(ref, once);
            assert_same_doc(ref, twice);
        } else {
            assert_equal_doc(ref, once);
            assert_equal_doc(ref, twice);
        }
        json_decref(once);
        json_decref(twice);
        perms++;
    } while (next_perm(order, n));
    assert_int_equal(perms, 5040);

    json_decref(ref);
    free_all(evs, n);
}

/* ---- random shuffles of a larger set, with duplicates and crashes ---------- */

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
    json_t *ref = apply_all(evs, NULL, n, 1, 0);
    size_t order[2 * sizeof(evs) / sizeof(evs[0])];
    const json_t *sum = summary(ref);

    assert_string_equal(sget(sum, "name"), "Loft 3");
    assert_string_equal(sget(sum, "status"), "DELETED");
    assert_string_equal(sget(sum, "hostId"), "hanna");
    assert_int_equal(iget(sum, "reviewCnt"), 1);
    assert_int_equal(iget(sum, "bookingCnt"), 1);
    assert_int_equal(iget(sum, "version"), 7);
    assert_int_equal(booked(ref, "CANCELLED"), 1);
    assert_int_equal(booked(ref, "REJECTED"), 1);
    assert_int_equal(booked(ref, "CONFIRMED"), 1);
    assert_int_equal(booked(ref, "PENDING"), 0);
    assert_int_equal(booked(ref, "CANCEL_REQUESTED"), 0);
    assert_int_equal(booked(ref, "total"), 3);
    assert_int_equal(json_object_size(json_object_get(ref, "views")), 3);
    assert_string_equal(sget(find_view(ref, RES1), "status"), "CANCELLED");
    assert_string_equal(sget(find_view(ref, RES1), "paymentStatus"), "CANCELLED");
    assert_string_equal(sget(find_view(ref, RES2), "status"), "REJECTED");
    assert_string_equal(sget(find_view(ref, RES2), "paymentStatus"), "DECLINED");
    /* like the reservation service: a rejected reservation has no paymentId */
    assert_true(json_is_null(json_object_get(find_view(ref, RES2), "paymentId")));
    assert_string_equal(sget(find_view(ref, RES3), "status"), "CONFIRMED");
    assert_string_equal(sget(find_view(ref, RES3), "paymentStatus"), "APPROVED");
    assert_string_equal(sget(find_view(ref, RES3), "guestId"), "gus");

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
        json_t *doc = apply_all(evs, order, 2 * n, 1, (unsigned)round + 7);
        assert_same_doc(ref, doc);
        json_decref(doc);
    }
    json_decref(ref);
    free_all(evs, n);
}

/* ---- counting ---------------------------------------------------------------- */

static void test_transitions_counted_once(void **state)
{
    (void)state;
    json_t *placed = res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-01");
    json_t *confirmed = res_ev("ReservationConfirmed", RES1, 2, "CONFIRMED", PAY1, "2030-01-01");
    json_t *view = dash_view_new(RES1), *sum = dash_sum_new(ROOM);

    /* newest first: one transition none -> CONFIRMED */
    assert_int_equal(dash_view_apply(view, confirmed), 1);
    const json_t *p = dash_view_pending(view);
    assert_int_equal(json_array_size(p), 1);
    assert_true(json_is_null(json_object_get(json_array_get(p, 0), "from")));
    assert_string_equal(sget(json_array_get(p, 0), "to"), "CONFIRMED");
    assert_string_equal(sget(json_array_get(p, 0), "room"), ROOM);
    assert_string_equal(sget(json_array_get(p, 0), "mark"), "n:" RES1 ":2");
    /* the older one is stale: no transition, but its time is the earliest */
    evtime = "2024-12-31T23:59:59.5Z";
    json_t *placed_earlier = res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-01");
    evtime = "2025-01-01T00:00:00Z";
    assert_int_equal(dash_view_apply(view, placed), 0);
    assert_int_equal(dash_view_apply(view, placed_earlier), 1);
    assert_int_equal(json_array_size(dash_view_pending(view)), 1);
    json_t *pub = dash_view_public(view);
    assert_int_equal(iget(pub, "createdAt"), dash_time_ms("2024-12-31T23:59:59.500Z"));
    assert_string_equal(sget(pub, "status"), "CONFIRMED");
    json_decref(pub);

    assert_int_equal(dash_sum_count(sum, NULL, "CONFIRMED"), 0);
    assert_int_equal(dash_view_drop_pending(view, "n:" RES1 ":2"), 1);
    assert_int_equal(dash_view_drop_pending(view, "n:" RES1 ":2"), 0);
    assert_int_equal(json_array_size(dash_view_pending(view)), 0);
    /* a cancellation moves the count */
    json_t *cancelled = res_ev("ReservationCancelled", RES1, 4, "CANCELLED", PAY1, "2030-01-01");
    assert_int_equal(dash_view_apply(view, cancelled), 1);
    p = dash_view_pending(view);
    assert_string_equal(sget(json_array_get(p, 0), "from"), "CONFIRMED");
    assert_string_equal(sget(json_array_get(p, 0), "to"), "CANCELLED");
    assert_int_equal(dash_sum_count(sum, "CONFIRMED", "CANCELLED"), 0);
    pub = dash_sum_public(sum);
    assert_int_equal(iget(json_object_get(pub, "bookings"), "CONFIRMED"), 0);
    assert_int_equal(iget(json_object_get(pub, "bookings"), "CANCELLED"), 1);
    assert_int_equal(iget(json_object_get(pub, "bookings"), "total"), 1);
    /* a summary with no room event yet is no room */
    assert_int_equal(dash_sum_has_room(sum), 0);
    json_decref(pub);

    json_decref(view);
    json_decref(sum);
    json_decref(placed);
    json_decref(placed_earlier);
    json_decref(confirmed);
    json_decref(cancelled);
}

static void test_time_ms(void **state)
{
    (void)state;
    assert_int_equal(dash_time_ms("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(dash_time_ms("1970-01-01T00:00:01.250Z"), 1250);
    assert_int_equal(dash_time_ms("2026-12-01T01:49:18.123Z"), 1796089758123LL);
    assert_int_equal(dash_time_ms("2026-12-01T01:49:18.1Z"), 1796089758100LL);
    assert_int_equal(dash_time_ms("2026-12-01T01:49:18"), -1);
    assert_int_equal(dash_time_ms("2026-12-01T01:49:18.Z"), -1);
    assert_int_equal(dash_time_ms("yesterday"), -1);
    assert_int_equal(dash_time_ms(NULL), -1);
}

/* ---- stale events -------------------------------------------------------- */

static void test_stale_events_ignored(void **state)
{
    (void)state;
    json_t *v1 = room_ev("RoomRegistered", 1, "Old", 100, 0, 0, 0);
    json_t *v2 = room_ev("RoomModified", 2, "New", 200, 0, 0, 0);
    json_t *review3 = review_ev("ReviewCreated", "rv", 3, 1, 3.0);
    json_t *p2 = res_ev("ReservationConfirmed", RES1, 2, "CONFIRMED", PAY1, "2030-01-01");
    json_t *p1 = res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-01");
    json_t *pay1 = pay_ev("PaymentApproved", RES1, 1, "APPROVED");
    json_t *pay2 = pay_ev("PaymentCancelled", RES1, 2, "CANCELLED");
    json_t *doc = dash_sum_new(ROOM), *view = dash_view_new(RES1);

    assert_int_equal(dash_sum_apply(doc, v2), 1);
    assert_int_equal(dash_sum_apply(doc, review3), 1);
    json_t *snap = json_deep_copy(doc);
    assert_int_equal(dash_sum_apply(doc, v1), 0);
    assert_same_doc(snap, doc);
    json_t *pub = dash_sum_public(doc);
    assert_string_equal(sget(pub, "name"), "New");
    /* a room snapshot older than the review keeps the newer counts */
    assert_int_equal(iget(pub, "reviewCnt"), 1);
    json_decref(pub);

    assert_int_equal(dash_view_apply(view, p2), 1);
    assert_int_equal(dash_view_apply(view, pay2), 1);
    json_decref(snap);
    snap = json_deep_copy(view);
    assert_int_equal(dash_view_apply(view, p1), 0); /* same time: nothing changes */
    assert_int_equal(dash_view_apply(view, pay1), 0);
    assert_same_doc(snap, view);
    assert_string_equal(sget(view, "status"), "CONFIRMED");
    assert_string_equal(sget(view, "paymentStatus"), "CANCELLED");

    json_decref(snap);
    json_decref(doc);
    json_decref(view);
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
    json_t *res = res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-01");
    json_t *sum = dash_sum_new(ROOM), *view = dash_view_new(RES1);

    /* a view known only from its payment is listed nowhere: no roomId */
    assert_int_equal(dash_view_apply(view, pay), 1);
    assert_null(json_object_get(view, "roomId"));
    assert_null(json_object_get(view, "createdAt"));
    assert_string_equal(sget(view, "paymentStatus"), "APPROVED");
    assert_true(json_is_null(json_object_get(view, "status")));
    assert_string_equal(sget(view, "paymentId"), PAY1); /* from the payment until the reservation arrives */
    assert_int_equal(iget(view, "amount"), 30000);
    assert_int_equal(json_array_size(dash_view_pending(view)), 0);
    assert_int_equal(dash_view_apply(view, res), 1);
    assert_string_equal(sget(view, "roomId"), ROOM);
    assert_string_equal(sget(view, "guestId"), "gus");
    assert_int_equal(iget(view, "createdAt"), dash_time_ms("2025-01-01T00:00:00Z"));

    assert_int_equal(dash_sum_apply(sum, rev), 1);
    assert_int_equal(dash_sum_has_room(sum), 0);
    assert_null(json_object_get(sum, "listed"));
    assert_int_equal(dash_sum_apply(sum, reg), 1);
    assert_int_equal(dash_sum_has_room(sum), 1);
    assert_int_equal(iget(sum, "listed"), 1);
    assert_string_equal(sget(sum, "city"), "Bern");
    json_t *pub = dash_sum_public(sum);
    assert_string_equal(sget(pub, "name"), "Loft");
    assert_int_equal(iget(pub, "reviewCnt"), 1); /* the review (v2) is newer than the registration (v1) */
    json_decref(pub);

    json_decref(sum);
    json_decref(view);
    json_decref(pay);
    json_decref(rev);
    json_decref(reg);
    json_decref(res);
}

/* ---- what clients see ------------------------------------------------------ */

static void test_public_has_no_private_keys(void **state)
{
    (void)state;
    json_t *reg = room_ev("RoomRegistered", 1, "Loft", 100, 0, 0, 0);
    json_t *res = res_ev("ReservationPlaced", RES1, 1, "PENDING", NULL, "2030-01-01");
    json_t *sum = dash_sum_new(ROOM), *view = dash_view_new(RES1);
    const char *key;
    json_t *v;
    size_t i;

    assert_int_equal(dash_sum_apply(sum, reg), 1);
    assert_int_equal(dash_view_apply(view, res), 1);
    json_t *ps = dash_sum_public(sum), *pv = dash_view_public(view);
    assert_non_null(ps);
    assert_non_null(pv);
    json_object_foreach(ps, key, v) assert_true(key[0] != '_');
    json_object_foreach(pv, key, v) assert_true(key[0] != '_');
    assert_null(json_object_get(ps, "listed"));
    assert_null(json_object_get(ps, "reservations")); /* bounded: no reservation inside */
    static const char *const want[] = {"id",       "hostId", "name",      "description", "city",       "pricePerNight",
                                       "capacity", "status", "reviewCnt", "rating",      "bookingCnt", "bookings",
                                       "version"};
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_non_null(json_object_get(ps, want[i]));
    static const char *const rwant[] = {"id",     "roomId", "guestId",   "checkIn",       "checkOut", "guests",
                                        "amount", "status", "paymentId", "paymentStatus", "createdAt"};
    for (i = 0; i < sizeof(rwant) / sizeof(rwant[0]); i++)
        assert_non_null(json_object_get(pv, rwant[i]));
    assert_null(json_object_get(pv, "card")); /* never copied from ReservationPlaced */
    /* the stored documents keep their sources */
    assert_non_null(json_object_get(sum, "_room"));
    assert_non_null(json_object_get(view, "_res"));
    json_decref(ps);
    json_decref(pv);
    json_decref(sum);
    json_decref(view);
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
    int rc = dash_event_check(ev, &kind, &room, NULL, why, sizeof(why));
    if (rc != BNB_EINVAL || !strstr(why, reason_part))
        fprintf(stderr, "event %s: rc %d, reason '%s', want '%s'\n", text, rc, why, reason_part);
    assert_int_equal(rc, BNB_EINVAL);
    assert_non_null(strstr(why, reason_part));
    json_t *doc = dash_sum_new(ROOM);
    json_t *before = json_deep_copy(doc);
    assert_int_equal(dash_sum_apply(doc, ev), BNB_EINVAL);
    assert_same_doc(before, doc);
    json_decref(before);
    json_decref(doc);
    doc = dash_view_new(RES1);
    before = json_deep_copy(doc);
    assert_int_equal(dash_view_apply(doc, ev), BNB_EINVAL);
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
    assert_int_equal(dash_event_check(ev, &kind, &room, NULL, why, sizeof(why)), 1);
    json_t *doc = dash_sum_new("r");
    assert_int_equal(dash_sum_apply(doc, ev), BNB_EINVAL); /* never applied */
    json_decref(doc);
    json_decref(ev);

    /* the right documents are chosen for each kind */
    const char *res = NULL;
    json_t *p = pay_ev("PaymentApproved", RES1, 1, "APPROVED");
    assert_int_equal(dash_event_check(p, &kind, &room, &res, why, sizeof(why)), 0);
    assert_int_equal(kind, DASH_EV_PAYMENT);
    assert_string_equal(room, ROOM);
    assert_string_equal(res, RES1);
    /* an event for another reservation is not applied to this view */
    doc = dash_view_new(RES2);
    assert_int_equal(dash_view_apply(doc, p), BNB_EINVAL);
    json_decref(doc);
    /* nor a payment event to a summary */
    doc = dash_sum_new(ROOM);
    assert_int_equal(dash_sum_apply(doc, p), BNB_EINVAL);
    json_decref(doc);
    json_decref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_orders_small_set),       cmocka_unit_test(test_random_shuffles_large_set),
        cmocka_unit_test(test_transitions_counted_once),   cmocka_unit_test(test_time_ms),
        cmocka_unit_test(test_stale_events_ignored),       cmocka_unit_test(test_placeholders),
        cmocka_unit_test(test_public_has_no_private_keys), cmocka_unit_test(test_malformed_rejected),
        cmocka_unit_test(test_unknown_type_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of the dashboard plugin (plugins/dashboard/dashboard.c) against
 * the fake host of tests/plugins/fake_host.h (in-memory store with the storage
 * contract's commit semantics and storage v2 queries, recorded routes and
 * subscriptions, fake requests): summaries and views built by events in any
 * order, redelivery and interrupted counting, pages, privacy. The real host is
 * exercised by tests/e2e/dashboard.
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
#define RES2 "22222222-aaaa-4bbb-8ccc-000000000002"

static bnb_route_fn list_fn, get_fn, res_fn;
static bnb_event_fn event_fn[3]; /* bearbnb.room, bearbnb.reservation, bearbnb.payment */

/* The fake host whose store cannot declare collections (a backend without
 * storage v2 yet): store_define fails. */
static bnb_host_api_t host_1_0;

static int define_fails(bnb_ctx_t *ctx, const bnb_coll_def_t *colls, size_t n)
{
    (void)ctx, (void)colls, (void)n;
    return BNB_EINVAL;
}
static int v1_mode;

static int setup(void **state)
{
    static const char *const topics[] = {"bearbnb.room", "bearbnb.reservation", "bearbnb.payment"};
    bnb_role_t who;
    (void)state;
    fake_host_reset("dashboard");
    FH.store.max_which = v1_mode ? 2 : 0;                           /* v2: never lists by the v1 keys */
    FH.store.ops = (1u << BNB_WRITE_PUT) | (1u << BNB_WRITE_TOUCH); /* never deletes */
    FH.store.no_events = 1;                                         /* the read model publishes nothing */
    assert_int_equal(bnb_plugin.abi_version, BNB_ABI_VERSION);
    assert_string_equal(bnb_plugin.name, "dashboard");
    host_1_0 = fake_host_api;
    host_1_0.store_define = define_fails;
    assert_int_equal(bnb_plugin.init(&FH.ctx, v1_mode ? &host_1_0 : &fake_host_api), 0);
    assert_int_equal(FH.store.ncolls, v1_mode ? 0 : 3); /* summaries, views, the first dashboard's rooms */
    assert_int_equal(FH.nroutes, 3);
    assert_int_equal(FH.nsubs, 3);
    list_fn = fake_route("GET", "/dashboard/rooms", &who);
    assert_non_null(list_fn);
    assert_int_equal(who, BNB_ROLE_ANYONE);
    get_fn = fake_route("GET", "/dashboard/rooms/{id}", &who);
    assert_non_null(get_fn);
    assert_int_equal(who, BNB_ROLE_ANYONE);
    res_fn = fake_route("GET", "/dashboard/rooms/{id}/reservations", &who);
    assert_non_null(res_fn);
    assert_int_equal(who, BNB_ROLE_ANYONE);
    for (int i = 0; i < 3; i++) {
        event_fn[i] = fake_handler(topics[i]);
        assert_non_null(event_fn[i]);
    }
    return 0;
}

/* The same plugin on a store without storage v2: pages cut from ABI 1.0 lists. */
static int setup_v1(void **state)
{
    v1_mode = 1;
    return setup(state);
}

static int teardown(void **state)
{
    v1_mode = 0;
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

/* A reservation event of room `room`; `second` makes its envelope time. */
static char *res_event(const char *evid, const char *room, const char *res, const char *guest, int version,
                       const char *status, int second)
{
    static const char *const types[] = {"PENDING",
                                        "ReservationPlaced",
                                        "CONFIRMED",
                                        "ReservationConfirmed",
                                        "REJECTED",
                                        "ReservationRejected",
                                        "CANCEL_REQUESTED",
                                        "ReservationCancelRequested",
                                        "CANCELLED",
                                        "ReservationCancelled",
                                        NULL};
    const char *type = "ReservationPlaced";
    char *s = NULL;
    for (int i = 0; types[i]; i += 2)
        if (strcmp(types[i], status) == 0)
            type = types[i + 1];
    assert_true(asprintf(&s,
                         "{\"id\":\"%s\",\"type\":\"%s\",\"source\":\"reservation\",\"subject\":\"%s\","
                         "\"time\":\"2026-01-01T00:%02d:%02d.000Z\",\"data\":{\"id\":\"%s\",\"roomId\":\"%s\","
                         "\"hostId\":\"hanna\",\"guestId\":\"%s\",\"checkIn\":\"2030-01-01\","
                         "\"checkOut\":\"2030-01-03\",\"guests\":1,\"amount\":20000,\"status\":\"%s\","
                         "\"paymentId\":null,\"version\":%d}}",
                         evid, type, res, second / 60, second % 60, res, room, guest, status, version) > 0);
    return s;
}

static const char *placed =
    "{\"id\":\"ev-res-1\",\"type\":\"ReservationPlaced\",\"subject\":\"" RES1 "\",\"correlationId\":\"" RES1
    "\",\"time\":\"2026-01-01T00:00:00Z\",\"data\":{\"id\":\"" RES1 "\",\"roomId\":\"" ROOM
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

/* GET /dashboard/rooms/{room}/reservations?q as `user` (q raw, or NULL). */
static json_t *get_res(const char *room, const char *user, const char *q, int *status, char *detail, size_t dlen)
{
    struct bnb_req req = {.id = room, .user = user, .role = user ? "guest" : NULL, .query = q};
    res_fn(&FH.ctx, &req);
    assert_true(req.answered);
    *status = req.status;
    if (detail)
        snprintf(detail, dlen, "%s", req.detail);
    return req.json;
}

static long long booked(const char *status)
{
    int st;
    json_t *b = get_room(ROOM, &st);
    assert_int_equal(st, 200);
    long long n = json_integer_value(json_object_get(json_object_get(b, "bookings"), status));
    json_decref(b);
    return n;
}

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* ---- tests ------------------------------------------------------------------ */

static void test_events_build_summary_and_views(void **state)
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
    body = get_room(ROOM, &status);
    assert_int_equal(status, 404); /* counted, but still no room */
    assert_int_equal(deliver(0, reg), 0);

    body = get_room(ROOM, &status);
    assert_int_equal(status, 200);
    assert_string_equal(sget(body, "name"), "Loft");
    assert_null(json_object_get(body, "_room"));
    assert_null(json_object_get(body, "reservations"));
    json_t *b = json_object_get(body, "bookings");
    assert_int_equal(json_integer_value(json_object_get(b, "PENDING")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "total")), 1);
    json_decref(body);

    /* one view per reservation, bounded; the summary holds no reservation */
    fake_doc_t *v = fake_find_doc("views", RES1);
    assert_non_null(v);
    assert_string_equal(sget(v->body, "status"), "PENDING");
    assert_string_equal(sget(v->body, "paymentStatus"), "APPROVED");
    assert_string_equal(sget(v->body, "roomId"), ROOM);
    assert_int_equal(json_array_size(json_object_get(v->body, "_pending")), 0);
    assert_null(json_object_get(v->body, "card"));
    assert_null(json_object_get(json_object_get(v->body, "_res"), "card"));

    body = get_room("no-such-room", &status);
    assert_int_equal(status, 404);
    free(reg);
}

static void test_redelivery_changes_nothing(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    char *conf = res_event("ev-res-2", ROOM, RES1, "gus", 2, "CONFIRMED", 5);
    assert_int_equal(deliver(0, reg), 0);
    assert_int_equal(deliver(1, placed), 0);
    assert_int_equal(deliver(2, approved), 0);
    assert_int_equal(deliver(1, conf), 0);
    fake_doc_t *s = fake_find_doc("summaries", ROOM), *v = fake_find_doc("views", RES1);
    assert_non_null(s);
    assert_non_null(v);
    int64_t sv = s->version, vv = v->version;
    json_t *sb = json_deep_copy(s->body), *vb = json_deep_copy(v->body);
    int commits = FH.store.commits;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(deliver(1, conf), 0); /* BNB_EALREADY is success */
        assert_int_equal(deliver(1, placed), 0);
        assert_int_equal(deliver(2, approved), 0);
        assert_int_equal(deliver(0, reg), 0);
    }
    assert_int_equal(s->version, sv);
    assert_int_equal(v->version, vv);
    assert_true(json_equal(sb, s->body));
    assert_true(json_equal(vb, v->body));
    assert_int_equal(FH.store.commits, commits + 12); /* one refused commit per delivery */
    assert_int_equal(booked("CONFIRMED"), 1);
    assert_int_equal(booked("PENDING"), 0);

    /* the same data under a new event id (a producer retry): stale, a TOUCH */
    char *again = room_event("ev-room-1-bis", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, again), 0);
    assert_int_equal(s->version, sv + 1);
    assert_true(json_equal(sb, s->body));
    json_decref(sb);
    json_decref(vb);
    free(reg);
    free(conf);
    free(again);
}

static void test_interrupted_counting_is_finished_once(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    char *conf = res_event("ev-res-2", ROOM, RES1, "gus", 2, "CONFIRMED", 5);
    assert_int_equal(deliver(0, reg), 0);

    /* the view commits, then the summary cannot be written: redelivered later */
    FH.store.fail_eexist = 1000;
    FH.store.fail_coll = "summaries";
    int rc = deliver(1, placed);
    assert_true(rc < 0 && rc != BNB_EINVAL);
    fake_doc_t *v = fake_find_doc("views", RES1);
    assert_non_null(v);
    assert_int_equal(json_array_size(json_object_get(v->body, "_pending")), 1);
    assert_int_equal(booked("PENDING"), 0);

    /* the next event of that reservation finishes the earlier counting too */
    FH.store.fail_eexist = 0;
    assert_int_equal(deliver(1, conf), 0);
    assert_int_equal(json_array_size(json_object_get(v->body, "_pending")), 0);
    assert_int_equal(booked("PENDING"), 0);
    assert_int_equal(booked("CONFIRMED"), 1);
    /* and the redelivery of the interrupted event counts nothing twice */
    assert_int_equal(deliver(1, placed), 0);
    assert_int_equal(booked("PENDING"), 0);
    assert_int_equal(booked("CONFIRMED"), 1);
    assert_int_equal(booked("total"), 1);
    free(reg);
    free(conf);
}

static void test_reservation_events_out_of_order(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    char *e[4] = {
        res_event("e1", ROOM, RES1, "gus", 1, "PENDING", 1),
        res_event("e2", ROOM, RES1, "gus", 2, "CONFIRMED", 2),
        res_event("e3", ROOM, RES1, "gus", 3, "CANCEL_REQUESTED", 3),
        res_event("e4", ROOM, RES1, "gus", 4, "CANCELLED", 4),
    };
    char *r2[2] = {res_event("f1", ROOM, RES2, "greta", 1, "PENDING", 7),
                   res_event("f2", ROOM, RES2, "greta", 2, "REJECTED", 8)};
    assert_int_equal(deliver(1, e[3]), 0);
    assert_int_equal(deliver(1, e[1]), 0);
    assert_int_equal(deliver(1, r2[1]), 0);
    assert_int_equal(deliver(0, reg), 0);
    assert_int_equal(deliver(1, e[0]), 0);
    assert_int_equal(deliver(1, e[2]), 0);
    assert_int_equal(deliver(1, r2[0]), 0);
    assert_int_equal(booked("CANCELLED"), 1);
    assert_int_equal(booked("REJECTED"), 1);
    assert_int_equal(booked("CONFIRMED"), 0);
    assert_int_equal(booked("PENDING"), 0);
    assert_int_equal(booked("CANCEL_REQUESTED"), 0);
    assert_int_equal(booked("total"), 2);
    /* createdAt is the earliest event time of the reservation (its Placed) */
    fake_doc_t *v = fake_find_doc("views", RES1);
    assert_int_equal(json_integer_value(json_object_get(v->body, "createdAt")), 1767225601000LL);
    for (int i = 0; i < 4; i++)
        free(e[i]);
    free(r2[0]);
    free(r2[1]);
    free(reg);
}

static void test_conflicts_are_retried_bounded(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, reg), 0);

    FH.store.conflicts = 3; /* three concurrent writers in a row */
    FH.store.commits = 0;
    assert_int_equal(deliver(1, placed), 0);
    assert_true(FH.store.commits >= 4);
    assert_string_equal(sget(fake_find_doc("views", RES1)->body, "status"), "PENDING");
    assert_int_equal(booked("PENDING"), 1);

    FH.store.conflicts = 1000000; /* never wins: gives up, to be redelivered (not poison) */
    FH.store.commits = 0;
    int rc = deliver(2, approved);
    assert_true(rc < 0);
    assert_int_not_equal(rc, BNB_EINVAL);
    assert_true(FH.store.commits > 1 && FH.store.commits <= 64);
    FH.store.conflicts = 0;
    assert_int_equal(deliver(2, approved), 0);
    assert_string_equal(sget(fake_find_doc("views", RES1)->body, "paymentStatus"), "APPROVED");
    assert_int_equal(booked("PENDING"), 1);
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

static void test_list_pages_and_city_filter(void **state)
{
    (void)state;
    char *a = room_event("ev-a", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, a), 0);
    /* a placeholder room (only a reservation of another room) is not listed */
    char *other = res_event("ev-o", "room-o", "res-o", "gus", 1, "PENDING", 1);
    assert_int_equal(deliver(1, other), 0);
    assert_non_null(fake_find_doc("summaries", "room-o"));

    struct bnb_req all = {0}, bern = {.city = "Bern"}, zug = {.city = "Zug"};
    list_fn(&FH.ctx, &all);
    list_fn(&FH.ctx, &bern);
    list_fn(&FH.ctx, &zug);
    assert_int_equal(all.status, 200);
    json_t *items = json_object_get(all.json, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_true(json_is_null(json_object_get(all.json, "next")));
    assert_string_equal(sget(json_array_get(items, 0), "id"), ROOM);
    assert_null(json_object_get(json_array_get(items, 0), "listed"));
    assert_int_equal(json_array_size(json_object_get(bern.json, "items")), 1);
    assert_int_equal(zug.status, 200);
    assert_int_equal(json_array_size(json_object_get(zug.json, "items")), 0);

    /* deleted rooms stay listed with status DELETED */
    const char *del = "{\"id\":\"ev-d\",\"type\":\"RoomDeleted\",\"subject\":\"" ROOM "\",\"data\":{\"id\":\"" ROOM
                      "\",\"hostId\":\"hanna\",\"status\":\"DELETED\",\"version\":2}}";
    assert_int_equal(deliver(0, del), 0);
    struct bnb_req after = {0};
    list_fn(&FH.ctx, &after);
    items = json_object_get(after.json, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(sget(json_array_get(items, 0), "status"), "DELETED");

    /* bad page parameters */
    static const char *const bad[][2] = {{"limit", "limit=0"},    {"limit", "limit=101"},  {"limit", "limit=abc"},
                                         {"limit", "limit="},     {"limit", "limit=-1"},   {"cursor", "cursor=nope"},
                                         {"cursor", "cursor="},   {"color", "color=blue"}, {"limit", "limit=1&limit=2"},
                                         {"cursor", "cursor=%zz"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct bnb_req r = {.query = bad[i][1]};
        list_fn(&FH.ctx, &r);
        if (r.status != 400 || !strstr(r.detail, bad[i][0]))
            fprintf(stderr, "?%s -> %d %s\n", bad[i][1], r.status, r.detail);
        assert_int_equal(r.status, 400);
        assert_non_null(strstr(r.detail, bad[i][0]));
        assert_null(r.json);
    }
    json_decref(all.json);
    json_decref(bern.json);
    json_decref(zug.json);
    json_decref(after.json);
    free(a);
    free(other);
}

/* %-encoding of everything but unreserved characters; caller frees. */
static char *url_encode(const char *s)
{
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    assert_non_null(out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c))
            *o++ = (char)c;
        else
            o += sprintf(o, "%%%02X", c);
    }
    *o = '\0';
    return out;
}

/* Walk every page of the room's reservations as `user`; returns the ids in
 * order (caller frees) and checks newest first. */
static json_t *walk(const char *user, const char *limit, int *pages)
{
    json_t *ids = json_array();
    char *cursor = NULL;
    long long last = -1;
    *pages = 0;
    do {
        char q[1024] = "", *enc = cursor ? url_encode(cursor) : NULL;
        if (limit)
            snprintf(q, sizeof(q), "limit=%s%s%s", limit, enc ? "&cursor=" : "", enc ? enc : "");
        else if (enc)
            snprintf(q, sizeof(q), "cursor=%s", enc);
        free(enc);
        int st;
        json_t *page = get_res(ROOM, user, q[0] ? q : NULL, &st, NULL, 0), *e;
        size_t i;
        assert_int_equal(st, 200);
        (*pages)++;
        json_array_foreach(json_object_get(page, "items"), i, e)
        {
            long long t = json_integer_value(json_object_get(e, "createdAt"));
            assert_true(last < 0 || t <= last);
            last = t;
            assert_null(json_object_get(e, "_res"));
            json_array_append(ids, json_object_get(e, "id"));
        }
        free(cursor);
        cursor = json_is_string(json_object_get(page, "next")) ? strdup(sget(page, "next")) : NULL;
        json_decref(page);
    } while (cursor);
    return ids;
}

static void test_reservations_paged_newest_first(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    char evid[32], rid[32];
    int pages;
    assert_int_equal(deliver(0, reg), 0);
    for (int i = 0; i < 45; i++) {
        snprintf(evid, sizeof(evid), "ev-%02d", i);
        snprintf(rid, sizeof(rid), "res-%02d", i);
        char *e = res_event(evid, ROOM, rid, i % 3 ? "gus" : "greta", 1, "PENDING", i);
        assert_int_equal(deliver(1, e), 0);
        free(e);
    }
    assert_int_equal(booked("PENDING"), 45);

    json_t *ids = walk("hanna", NULL, &pages); /* default limit 20 */
    assert_int_equal(json_array_size(ids), 45);
    assert_int_equal(pages, 3);
    assert_string_equal(json_string_value(json_array_get(ids, 0)), "res-44");
    assert_string_equal(json_string_value(json_array_get(ids, 44)), "res-00");
    json_decref(ids);
    ids = walk("hanna", "100", &pages);
    assert_int_equal(json_array_size(ids), 45);
    assert_int_equal(pages, 1);
    json_decref(ids);
    ids = walk("hanna", "7", &pages);
    assert_int_equal(json_array_size(ids), 45);
    assert_int_equal(pages, 7);
    json_decref(ids);

    /* bad page parameters name the parameter */
    static const char *const bad[][2] = {{"limit", "limit=0"},
                                         {"limit", "limit=1000"},
                                         {"limit", "limit=1x"},
                                         {"cursor", "cursor=fake:%5B%5D"},
                                         {"city", "city=Bern"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char detail[512];
        int st;
        json_t *j = get_res(ROOM, "hanna", bad[i][1], &st, detail, sizeof(detail));
        assert_int_equal(st, 400);
        assert_non_null(strstr(detail, bad[i][0]));
        assert_null(j);
    }
    free(reg);
}

static void test_reservations_privacy(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    char *a = res_event("ev-a", ROOM, "res-a", "gus", 1, "PENDING", 1);
    char *b = res_event("ev-b", ROOM, "res-b", "greta", 1, "PENDING", 2);
    char *c = res_event("ev-c", ROOM, "res-c", "gus", 1, "PENDING", 3);
    char detail[512];
    int st, pages;
    assert_int_equal(deliver(0, reg), 0);
    assert_int_equal(deliver(1, a), 0);
    assert_int_equal(deliver(1, b), 0);
    assert_int_equal(deliver(1, c), 0);

    /* anonymous: 401, the summary only */
    json_t *j = get_res(ROOM, NULL, NULL, &st, detail, sizeof(detail));
    assert_int_equal(st, 401);
    assert_null(j);
    j = get_room(ROOM, &st);
    assert_int_equal(st, 200);
    assert_null(json_object_get(j, "reservations"));
    assert_null(json_object_get(j, "guestId"));
    json_decref(j);

    /* the room's host: all of them */
    json_t *ids = walk("hanna", NULL, &pages);
    assert_int_equal(json_array_size(ids), 3);
    json_decref(ids);
    /* a guest: only their own */
    ids = walk("gus", NULL, &pages);
    assert_int_equal(json_array_size(ids), 2);
    assert_string_equal(json_string_value(json_array_get(ids, 0)), "res-c");
    assert_string_equal(json_string_value(json_array_get(ids, 1)), "res-a");
    json_decref(ids);
    ids = walk("greta", NULL, &pages);
    assert_int_equal(json_array_size(ids), 1);
    json_decref(ids);
    /* anyone else (another host too): an empty page */
    ids = walk("otto", NULL, &pages);
    assert_int_equal(json_array_size(ids), 0);
    json_decref(ids);
    /* an unknown room: 404 */
    j = get_res("no-such-room", "hanna", NULL, &st, NULL, 0);
    assert_int_equal(st, 404);
    assert_null(j);
    free(reg);
    free(a);
    free(b);
    free(c);
}

static void test_v1_store_uses_lists(void **state)
{
    (void)state;
    char *reg = room_event("ev-room-1", "RoomRegistered", 1, "Loft", "Bern");
    assert_int_equal(deliver(0, reg), 0);
    assert_int_equal(deliver(1, placed), 0);
    assert_int_equal(FH.store.queries, 0); /* nothing of storage v2 is called */
    fake_doc_t *v = fake_find_doc("views", RES1), *s = fake_find_doc("summaries", ROOM);
    assert_string_equal(v->key1, ROOM);
    assert_string_equal(v->key2, "gus");
    assert_string_equal(s->key1, "1");
    assert_string_equal(s->key2, "Bern");
    free(reg);
}

/* ---- the first dashboard's documents ------------------------------------------ */

#define RES3 "22222222-aaaa-4bbb-8ccc-000000000003"

/* A `rooms` document of the first dashboard (one per room, every reservation
 * inside), as it was stored: room v3, reviews v4, RES1 CONFIRMED and paid,
 * RES2 REJECTED (declined), RES3 CANCELLED. */
static void put_legacy_room(const char *room)
{
    fake_doc_t *d = &FH.store.docs[FH.store.ndocs++];
    memset(d, 0, sizeof(*d));
    snprintf(d->coll, sizeof(d->coll), "rooms");
    snprintf(d->id, sizeof(d->id), "%s", room);
    d->version = 7;
    d->applied = json_array();
    d->claims = json_array();
    d->body = json_pack("{s:s, s:s, s:{s:i, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:f, s:i}, s:{s:i, s:i, s:f}, s:n,"
                        " s:[{s:s, s:s, s:{s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:s}, s:{s:i, s:s, s:s, s:i}},"
                        "    {s:s, s:{s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:n}, s:{s:i, s:s, s:s, s:i}},"
                        "    {s:s, s:{s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:s}, s:n}]}",
                        "id", room, "name", "Loft", /* visible fields, recomputed from the sources */
                        "_room", "v", 3, "hostId", "hanna", "name", "Loft", "description", "d", "city", "Bern",
                        "pricePerNight", 10000, "capacity", 2, "status", "ACTIVE", "reviewCnt", 1, "rating", 4.0,
                        "bookingCnt", 1,                                               /* */
                        "_reviews", "v", 4, "reviewCnt", 2, "rating", 4.5, "_deleted", /* */
                        "reservations",                                                /* */
                        "id", RES1, "status", "CONFIRMED", "_res", "v", 2, "guestId", "gus", "checkIn", "2030-01-01",
                        "checkOut", "2030-01-03", "guests", 1, "amount", 20000, "status", "CONFIRMED", "paymentId",
                        "pay-" RES1, "_pay", "v", 1, "id", "pay-" RES1, "status", "APPROVED", "amount", 20000, /* */
                        "id", RES2, "_res", "v", 2, "guestId", "gina", "checkIn", "2030-02-01", "checkOut",
                        "2030-02-02", "guests", 1, "amount", 10000, "status", "REJECTED", "paymentId", "_pay", "v", 1,
                        "id", "pay-" RES2, "status", "DECLINED", "amount", 10000, /* */
                        "id", RES3, "_res", "v", 4, "guestId", "gus", "checkIn", "2030-03-01", "checkOut", "2030-03-02",
                        "guests", 1, "amount", 10000, "status", "CANCELLED", "paymentId", "pay-" RES3, "_pay");
    assert_non_null(d->body);
}

/* At init the plugin rebuilds the first dashboard's documents as summaries and
 * views, pages of them at a time, deletes each once rebuilt; a second start
 * (or a start interrupted anywhere) changes nothing more; events that come
 * later merge by version as usual. */
static void test_first_dashboard_documents_migrated(void **state)
{
    (void)state;
    char rooms[45][40];
    int st;
    fake_host_reset("dashboard");
    FH.store.no_events = 1;
    for (int i = 0; i < 45; i++) { /* more than a page */
        snprintf(rooms[i], sizeof(rooms[i]), "11111111-aaaa-4bbb-8ccc-%012d", 100 + i);
        put_legacy_room(rooms[i]);
    }
    put_legacy_room(ROOM);
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);
    assert_true(FH.store.max_limit <= 100); /* bounded pages */
    for (int i = 0; i < 45; i++)
        assert_null(fake_find_doc("rooms", rooms[i]));
    assert_null(fake_find_doc("rooms", ROOM));
    get_fn = fake_route("GET", "/dashboard/rooms/{id}", NULL);
    res_fn = fake_route("GET", "/dashboard/rooms/{id}/reservations", NULL);
    event_fn[1] = fake_handler("bearbnb.reservation");

    /* the summary: room fields, reviews (the newer source), counts by status */
    json_t *body = get_room(ROOM, &st);
    assert_int_equal(st, 200);
    assert_string_equal(sget(body, "name"), "Loft");
    assert_string_equal(sget(body, "hostId"), "hanna");
    assert_int_equal(json_integer_value(json_object_get(body, "reviewCnt")), 2);
    assert_int_equal(json_integer_value(json_object_get(body, "version")), 4);
    json_t *b = json_object_get(body, "bookings");
    assert_int_equal(json_integer_value(json_object_get(b, "CONFIRMED")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "REJECTED")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "CANCELLED")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "total")), 3);
    json_decref(body);

    /* the views: listed for the host, the guest's own for the guest */
    json_t *page = get_res(ROOM, "hanna", NULL, &st, NULL, 0);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 3);
    json_decref(page);
    page = get_res(ROOM, "gus", NULL, &st, NULL, 0);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 2);
    json_decref(page);
    fake_doc_t *v = fake_find_doc("views", RES1);
    assert_non_null(v);
    assert_string_equal(sget(v->body, "status"), "CONFIRMED");
    assert_string_equal(sget(v->body, "paymentStatus"), "APPROVED");
    assert_string_equal(sget(v->body, "paymentId"), "pay-" RES1);
    assert_string_equal(sget(v->body, "roomId"), ROOM);
    assert_int_equal(json_integer_value(json_object_get(v->body, "createdAt")), 0);
    v = fake_find_doc("views", RES2);
    assert_string_equal(sget(v->body, "status"), "REJECTED");
    assert_string_equal(sget(v->body, "paymentStatus"), "DECLINED");
    assert_true(json_is_null(json_object_get(v->body, "paymentId")));
    v = fake_find_doc("views", RES3);
    assert_string_equal(sget(v->body, "status"), "CANCELLED");

    /* a second start: nothing left to do, nothing changes */
    int commits = FH.store.commits;
    if (bnb_plugin.fini)
        bnb_plugin.fini(&FH.ctx);
    FH.nroutes = FH.nsubs = 0;
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);
    assert_int_equal(FH.store.commits, commits);

    /* an interrupted migration (the document still there, its parts applied)
     * finishes without counting anything twice */
    put_legacy_room(ROOM);
    FH.nroutes = FH.nsubs = 0;
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);
    assert_null(fake_find_doc("rooms", ROOM));
    get_fn = fake_route("GET", "/dashboard/rooms/{id}", NULL);
    assert_int_equal(booked("CONFIRMED"), 1);
    assert_int_equal(booked("CANCELLED"), 1);

    /* an older event of a migrated reservation is stale, a newer one applies */
    event_fn[1] = fake_handler("bearbnb.reservation");
    char *old = res_event("ev-old", ROOM, RES1, "gus", 1, "PENDING", 1);
    char *cancel = res_event("ev-new", ROOM, RES1, "gus", 3, "CANCEL_REQUESTED", 9);
    assert_int_equal(deliver(1, old), 0);
    assert_int_equal(booked("CONFIRMED"), 1);
    assert_int_equal(deliver(1, cancel), 0);
    assert_int_equal(booked("CONFIRMED"), 0);
    assert_int_equal(booked("CANCEL_REQUESTED"), 1);
    free(old);
    free(cancel);
    if (bnb_plugin.fini)
        bnb_plugin.fini(&FH.ctx);
    fake_host_free();
}

/* A host before ABI 1.1 loads it too (no storage v2 call is made). */
static void test_v1_host_uses_lists(void **state)
{
    (void)state;
    bnb_host_api_t old = fake_host_api;
    old.size = offsetof(bnb_host_api_t, store_define);
    old.store_define = define_fails;
    fake_host_reset("dashboard");
    FH.store.max_which = 2;
    assert_int_equal(bnb_plugin.init(&FH.ctx, &old), 0);
    assert_int_equal(FH.store.ncolls, 0);
    assert_int_equal(deliver(1, placed), 0);
    assert_int_equal(FH.store.queries, 0);
    assert_non_null(fake_find_doc("views", RES1));
    fake_host_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_events_build_summary_and_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_counting_is_finished_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reservation_events_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflicts_are_retried_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_is_rejected_with_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_pages_and_city_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reservations_paged_newest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reservations_privacy, setup, teardown),
        /* the same on a store without storage v2 */
        cmocka_unit_test_setup_teardown(test_v1_store_uses_lists, setup_v1, teardown),
        cmocka_unit_test(test_v1_host_uses_lists),
        cmocka_unit_test(test_first_dashboard_documents_migrated),
        cmocka_unit_test_setup_teardown(test_redelivery_changes_nothing, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_counting_is_finished_once, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_reservation_events_out_of_order, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_list_pages_and_city_filter, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_reservations_paged_newest_first, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_reservations_privacy, setup_v1, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of plugins/reservation/reservation.c against the fake host of
 * tests/plugins/fake_host.h (storage v2: declared collections, queries, claims):
 * one document per reservation holding one claim per night and one guest
 * slot, the overlap 409, the exact guest cap with slots taken back from ended
 * stays, the horizon and stay length, the sealed card in ReservationPlaced,
 * payment events, room deletion and the paged list. The fake host's payment
 * call always fails, so bookings answer 202 PENDING here; tests/e2e/saga runs
 * the real saga.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_seal.h"
#include "fake_host.h"
#include "resv_logic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const bnb_plugin_t bnb_plugin;

#define CARD "4111111111111111"

static char *priv, *pub; /* payment's card key pair for this test */
static int32_t today;

static void put(const char *coll, const char *id, json_t *body)
{
    bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = coll, .id = id, .expect_version = -1, .body = body};
    assert_int_equal(fake_host_api.store_commit(&FH.store, &w, NULL, 0, NULL, NULL), 0);
    json_decref(body);
}

static void room(const char *id, const char *host)
{
    put("rooms", id,
        json_pack("{s:s, s:s, s:i, s:i, s:s, s:i}", "id", id, "hostId", host, "pricePerNight", 100, "capacity", 2,
                  "status", "ACTIVE", "version", 1));
}

static int setup(void **state)
{
    (void)state;
    fake_host_reset("reservation");
    today = resv_day_of_ms(fake_host_api.now_ms());
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);
    assert_int_equal(bnb_seal_keygen(&priv, &pub), 0);
    put("keys", "payment-card", json_pack("{s:s, s:s}", "alg", BNB_SEAL_ALG, "publicKey", pub));
    room("r1", "hal");
    room("r2", "hal");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (bnb_plugin.fini)
        bnb_plugin.fini(&FH.ctx);
    fake_host_free();
    bnb_seal_free_secret(priv);
    free(pub);
    return 0;
}

static json_t *call(const char *method, const char *pattern, const char *id, const char *query, const char *user,
                    const char *role, const char *body, int *status, char *detail)
{
    struct bnb_req r = {.method = method, .id = id, .query = query, .user = user, .role = role};
    if (body) {
        r.body = json_loads(body, 0, NULL);
        assert_non_null(r.body);
    }
    bnb_route_fn fn = fake_route(method, pattern, NULL);
    assert_non_null(fn);
    fn(&FH.ctx, &r);
    assert_true(r.answered);
    json_decref(r.body);
    *status = r.status;
    if (detail)
        strcpy(detail, r.detail);
    return r.json;
}

/* Book [today+from, today+from+nights) of `room` as `guest`: the status, and
 * the reservation id in id (37 bytes) when one was made. */
static int book(const char *room_id, const char *guest, int from, int nights, char *id, char *detail)
{
    char in[11], out[11], body[256];
    resv_format_date(today + from, in);
    resv_format_date(today + from + nights, out);
    snprintf(body, sizeof body,
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":\"" CARD "\"}", room_id,
             in, out);
    int st;
    json_t *r = call("POST", "/reservations", NULL, NULL, guest, "guest", body, &st, detail);
    if (id && json_is_string(json_object_get(r, "id")))
        snprintf(id, 37, "%s", json_string_value(json_object_get(r, "id")));
    if (r) {
        assert_null(json_object_get(r, "slot")); /* internal */
        assert_null(json_object_get(r, "card"));
    }
    json_decref(r);
    return st;
}

static const json_t *last_event(void)
{
    size_t n = json_array_size(FH.store.events);
    assert_true(n > 0);
    return json_array_get(FH.store.events, n - 1);
}

static json_t *claims_of(const char *id)
{
    fake_doc_t *d = fake_find_doc("reservations", id);
    assert_non_null(d);
    return d->claims;
}

static void test_booking_claims_nights_and_a_slot(void **state)
{
    (void)state;
    char id[37] = "", detail[512];
    assert_int_equal(book("r1", "gus", 10, 3, id, detail), 202); /* payment unreachable: PENDING */
    fake_doc_t *d = fake_find_doc("reservations", id);
    assert_non_null(d);
    assert_string_equal(json_string_value(json_object_get(d->body, "status")), "PENDING");
    assert_int_equal(json_integer_value(json_object_get(d->body, "amount")), 300);
    json_t *c = d->claims;
    assert_int_equal(json_array_size(c), 4);
    char key[64], day[11];
    resv_format_date(today + 10, day);
    snprintf(key, sizeof key, "night|r1|%s", day);
    assert_string_equal(json_string_value(json_array_get(c, 0)), key);
    assert_string_equal(json_string_value(json_array_get(c, 3)), "slot|gus|0");
    /* the event carries the sealed card, which only payment's key opens, for this reservation only */
    const json_t *ev = last_event();
    assert_string_equal(json_string_value(json_object_get(ev, "type")), "ReservationPlaced");
    const json_t *data = json_object_get(ev, "data");
    assert_null(json_object_get(data, "card"));
    assert_null(json_object_get(data, "slot"));
    const char *sealed = json_string_value(json_object_get(data, "sealedCard"));
    assert_non_null(sealed);
    char *dump = json_dumps(FH.store.events, 0);
    assert_null(strstr(dump, CARD));
    free(dump);
    char *plain = NULL;
    assert_int_equal(bnb_unseal(priv, sealed, id, &plain), 0);
    assert_string_equal(plain, CARD);
    bnb_seal_free_secret(plain);
    assert_int_equal(bnb_unseal(priv, sealed, "another-reservation", &plain), BNB_EINVAL);
    /* no calendar document, no index document: one document per reservation */
    assert_null(fake_find_doc("calendars", "r1"));
}

static void test_overlap_is_409_adjacent_is_fine(void **state)
{
    (void)state;
    char detail[512];
    assert_int_equal(book("r1", "gus", 10, 3, NULL, detail), 202);
    assert_int_equal(book("r1", "eve", 12, 2, NULL, detail), 409);
    assert_non_null(strstr(detail, "already booked"));
    char from[11];
    resv_format_date(today + 10, from);
    assert_non_null(strstr(detail, from));                         /* names the stay in the way */
    assert_int_equal(book("r1", "eve", 9, 5, NULL, detail), 409);  /* around it */
    assert_int_equal(book("r1", "eve", 13, 1, NULL, detail), 202); /* adjacent */
    assert_int_equal(book("r1", "eve", 7, 3, NULL, detail), 202);  /* adjacent before */
    assert_int_equal(book("r2", "eve", 10, 3, NULL, detail), 202); /* another room */
}

static void test_horizon_and_stay_length(void **state)
{
    (void)state;
    char detail[512];
    int st;
    json_t *r = call("POST", "/reservations", NULL, NULL, "gus", "guest",
                     "{\"roomId\":\"r1\",\"checkIn\":\"9999-01-01\",\"checkOut\":\"9999-01-03\",\"guests\":1,"
                     "\"card\":\"" CARD "\"}",
                     &st, detail);
    json_decref(r);
    assert_int_equal(st, 422);
    assert_non_null(strstr(detail, "horizon"));
    assert_int_equal(book("r1", "gus", 731, 1, NULL, detail), 422);
    assert_int_equal(book("r1", "gus", 730, 1, NULL, detail), 202);
    assert_int_equal(book("r2", "gus", 1, 366, NULL, detail), 422);
    assert_int_equal(book("r1", "gus", 0, 1, NULL, detail), 202);
    assert_int_equal(book("r1", "gus", -1, 1, NULL, detail), 422);
}

static void test_guest_cap_is_exact_and_ended_stays_give_slots_back(void **state)
{
    (void)state;
    char detail[512], id[37];
    /* an old stay that ended yesterday still holds slot 0 */
    char in[11], out[11];
    resv_format_date(today - 3, in);
    resv_format_date(today - 1, out);
    json_t *old = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:I, s:i}", "id", "old", "roomId", "r2",
                            "hostId", "hal", "guestId", "gus", "checkIn", in, "checkOut", out, "guests", 1, "amount",
                            200, "status", "CONFIRMED", "version", 2, "createdAt", (json_int_t)1, "slot", 0);
    const char *oldclaims[] = {"slot|gus|0"};
    bnb_commit_t c = {.op = BNB_WRITE_PUT,
                      .coll = "reservations",
                      .id = "old",
                      .expect_version = 0,
                      .body = old,
                      .set_claims = 1,
                      .claims = oldclaims,
                      .nclaims = 1};
    assert_int_equal(fake_host_api.store_commit2(&FH.store, &c, NULL), 0);
    json_decref(old);
    for (int i = 0; i < 10; i++)
        assert_int_equal(book(i % 2 ? "r1" : "r2", "gus", 10 + 2 * i, 1, id, detail), 202);
    /* slot 0 went from the ended stay to a new one */
    size_t k;
    json_t *v;
    json_array_foreach(claims_of("old"), k, v) assert_null(strstr(json_string_value(v), "slot|"));
    assert_null(json_object_get(fake_find_doc("reservations", "old")->body, "slot"));
    assert_int_equal(book("r1", "gus", 60, 1, NULL, detail), 409);
    assert_non_null(strstr(detail, "too many active reservations"));
    assert_non_null(strstr(detail, "limit is 10"));
    /* another guest is not limited by gus */
    assert_int_equal(book("r1", "eve", 60, 1, NULL, detail), 202);
    /* a cancelled one gives its slot back at once (its nights stay held until CANCELLED) */
    int st;
    json_t *r = call("DELETE", "/reservations/{id}", id, NULL, "gus", "guest", NULL, &st, detail);
    assert_int_equal(st, 202);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "CANCEL_REQUESTED");
    json_decref(r);
    json_t *cl = claims_of(id);
    assert_int_equal(json_array_size(cl), 1);
    assert_non_null(strstr(json_string_value(json_array_get(cl, 0)), "night|"));
    assert_int_equal(book("r1", "gus", 70, 1, NULL, detail), 202);
    assert_int_equal(book("r1", "gus", 72, 1, NULL, detail), 409);
}

static int payment_event(const char *type, const char *res_id, int amount)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:i, s:s}}", "id", type, "type", type, "subject", "p", "data",
                           "id", "pay-x", "reservationId", res_id, "amount", amount, "status", "X");
    int rc = fake_handler("bearbnb.payment")(&FH.ctx, ev);
    json_decref(ev);
    return rc;
}

static void test_payment_events_move_claims(void **state)
{
    (void)state;
    char a[37], b[37], detail[512];
    assert_int_equal(book("r1", "gus", 5, 2, a, detail), 202);
    assert_int_equal(book("r2", "gus", 5, 2, b, detail), 202);
    assert_int_equal(payment_event("PaymentApproved", a, 200), 0);
    assert_string_equal(json_string_value(json_object_get(fake_find_doc("reservations", a)->body, "status")),
                        "CONFIRMED");
    assert_int_equal(json_array_size(claims_of(a)), 3);
    assert_string_equal(json_string_value(json_object_get(json_object_get(last_event(), "data"), "status")),
                        "CONFIRMED");
    assert_int_equal(payment_event("PaymentApproved", a, 200), 0); /* redelivered: nothing */
    /* declined: REJECTED, every claim released, the nights bookable again */
    assert_int_equal(payment_event("PaymentDeclined", b, 0), 0);
    assert_string_equal(json_string_value(json_object_get(fake_find_doc("reservations", b)->body, "status")),
                        "REJECTED");
    assert_int_equal(json_array_size(claims_of(b)), 0);
    assert_int_equal(book("r2", "eve", 5, 2, NULL, detail), 202);
    assert_int_equal(book("r1", "eve", 5, 2, NULL, detail), 409);
    /* unknown reservation: parked */
    assert_int_equal(payment_event("PaymentApproved", "nope", 1), BNB_EINVAL);
}

static void test_room_deleted_cancels_future_stays(void **state)
{
    (void)state;
    char a[37], b[37], detail[512];
    assert_int_equal(book("r1", "gus", 5, 2, a, detail), 202);
    assert_int_equal(book("r2", "gus", 5, 2, b, detail), 202);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:i}}", "id", "del-1", "type", "RoomDeleted", "subject",
                           "r1", "data", "id", "r1", "hostId", "hal", "status", "DELETED", "version", 2);
    assert_int_equal(fake_handler("bearbnb.room")(&FH.ctx, ev), 0);
    assert_int_equal(fake_handler("bearbnb.room")(&FH.ctx, ev), 0); /* redelivered */
    json_decref(ev);
    const json_t *ra = fake_find_doc("reservations", a)->body;
    assert_string_equal(json_string_value(json_object_get(ra, "status")), "CANCEL_REQUESTED");
    assert_string_equal(json_string_value(json_object_get(ra, "reason")), "room deleted");
    assert_string_equal(json_string_value(json_object_get(fake_find_doc("reservations", b)->body, "status")),
                        "PENDING");
    assert_string_equal(json_string_value(json_object_get(last_event(), "type")), "ReservationCancelRequested");
    assert_int_equal(book("r1", "eve", 20, 1, NULL, detail), 404);
}

static void test_list_pages(void **state)
{
    (void)state;
    char detail[512];
    int n = 0;
    for (int g = 0; g < 3; g++) {
        char guest[8];
        snprintf(guest, sizeof guest, "g%d", g);
        for (int i = 0; i < 8; i++, n++)
            assert_int_equal(book(g % 2 ? "r1" : "r2", guest, 2 + 3 * n, 1, NULL, detail), 202);
    }
    /* the host sees all 24, newest first, 10 + 10 + 4, each once */
    json_t *seen = json_object();
    char query[600] = "limit=10";
    int pages = 0, st;
    for (;;) {
        json_t *p = call("GET", "/reservations", NULL, query, "hal", "host", NULL, &st, detail);
        if (st != 200)
            fprintf(stderr, "%s: %d %s\n", query, st, detail);
        assert_int_equal(st, 200);
        json_t *items = json_object_get(p, "items");
        pages++;
        size_t i;
        json_t *r;
        json_array_foreach(items, i, r)
        {
            const char *id = json_string_value(json_object_get(r, "id"));
            assert_null(json_object_get(seen, id));
            json_object_set_new(seen, id, json_true());
            assert_null(json_object_get(r, "slot"));
        }
        const char *next = json_string_value(json_object_get(p, "next"));
        if (!next) {
            assert_true(json_is_null(json_object_get(p, "next")));
            json_decref(p);
            break;
        }
        assert_int_equal(json_array_size(items), 10);
        /* percent-encode the cursor */
        char *q = query + sprintf(query, "limit=10&cursor=");
        for (const char *c = next; *c; c++)
            q += (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ? sprintf(q, "%c", *c)
                                                                                   : sprintf(q, "%%%02X", *c);
        json_decref(p);
    }
    assert_int_equal(pages, 3);
    assert_int_equal(json_object_size(seen), 24);
    json_decref(seen);
    /* a guest sees theirs; default limit 20 */
    json_t *p = call("GET", "/reservations", NULL, NULL, "g1", "guest", NULL, &st, detail);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 8);
    json_decref(p);
    p = call("GET", "/reservations", NULL, "status=CONFIRMED", "g1", "guest", NULL, &st, detail);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 0);
    json_decref(p);
    /* bad input: 400 naming the parameter */
    const char *bad[][2] = {{"limit=0", "limit"},       {"limit=101", "limit"},    {"limit=abc", "limit"},
                            {"limit=", "limit"},        {"status=LOST", "status"}, {"cursor=garbage", "cursor"},
                            {"sort=createdAt", "sort"}, {"limit=1000", "limit"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_decref(call("GET", "/reservations", NULL, bad[i][0], "g1", "guest", NULL, &st, detail));
        if (st != 400 || !strstr(detail, bad[i][1]))
            fprintf(stderr, "%s: %d %s\n", bad[i][0], st, detail);
        assert_int_equal(st, 400);
        assert_non_null(strstr(detail, bad[i][1]));
    }
}

static void test_get_visibility(void **state)
{
    (void)state;
    char id[37], detail[512];
    int st;
    assert_int_equal(book("r1", "gus", 5, 2, id, detail), 202);
    json_decref(call("GET", "/reservations/{id}", id, NULL, "gus", "guest", NULL, &st, detail));
    assert_int_equal(st, 200);
    json_decref(call("GET", "/reservations/{id}", id, NULL, "hal", "host", NULL, &st, detail));
    assert_int_equal(st, 200);
    json_decref(call("GET", "/reservations/{id}", id, NULL, "eve", "guest", NULL, &st, detail));
    assert_int_equal(st, 404);
    json_decref(call("DELETE", "/reservations/{id}", id, NULL, "eve", "guest", NULL, &st, detail));
    assert_int_equal(st, 404);
}

/* ---- the per-room calendars before storage v2 --------------------------------- */

static json_t *old_res(const char *id, const char *room_id, const char *guest, int from, int nights, const char *status)
{
    char in[11], out[11];
    resv_format_date(today + from, in);
    resv_format_date(today + from + nights, out);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:i, s:i}", "id", id, "roomId", room_id,
                     "hostId", "hal", "guestId", guest, "checkIn", in, "checkOut", out, "guests", 1, "amount",
                     100 * nights, "status", status, "paymentId", "pay-old", "version", 2, "createdAt", 1000);
}

static void restart(void)
{
    if (bnb_plugin.fini)
        bnb_plugin.fini(&FH.ctx);
    FH.nroutes = FH.nsubs = 0;
    assert_int_equal(bnb_plugin.init(&FH.ctx, &fake_host_api), 0);
}

/* At init the calendars of the first reservation service (one document per
 * room, every reservation inside, no claims) become one document per
 * reservation holding the claims of its nights, so stays booked before the
 * upgrade keep them; one whose nights were booked since stays in its calendar
 * (logged) and the next start tries again; a second start changes nothing. */
static void test_calendars_migrated(void **state)
{
    (void)state;
    char id[37], detail[512];
    int st;
    /* booked after the upgrade, before the migration ran: nights 30..31 of r1 */
    assert_int_equal(book("r1", "gus", 30, 2, id, detail), 202);
    put("calendars", "r1",
        json_pack("{s:s, s:b, s:[o, o, o]}", "roomId", "r1", "roomDeleted", 0, "reservations",
                  old_res("old-a", "r1", "gina", 10, 2, "CONFIRMED"),
                  old_res("old-b", "r1", "gina", 20, 1, "CANCELLED"),
                  old_res("old-c", "r1", "gus", 31, 1, "CONFIRMED")));
    put("calendars", "r2",
        json_pack("{s:s, s:b, s:[o]}", "roomId", "r2", "roomDeleted", 0, "reservations",
                  old_res("old-d", "r2", "gus", 10, 3, "PENDING")));
    put("reservations_idx", "old-a", json_pack("{s:s, s:s, s:s}", "id", "old-a", "guestId", "gina", "hostId", "hal"));
    put("reservations_idx", "old-c", json_pack("{s:s, s:s, s:s}", "id", "old-c", "guestId", "gus", "hostId", "hal"));
    restart();

    fake_doc_t *a = fake_find_doc("reservations", "old-a");
    assert_non_null(a);
    assert_string_equal(json_string_value(json_object_get(a->body, "status")), "CONFIRMED");
    assert_int_equal(json_array_size(a->claims), 2); /* its nights, no guest slot */
    assert_int_equal(json_array_size(claims_of("old-b")), 0);
    assert_int_equal(json_array_size(claims_of("old-d")), 3);
    assert_null(fake_find_doc("calendars", "r2"));
    assert_null(fake_find_doc("reservations_idx", "old-a"));
    /* old-c's night is taken by the booking made since: kept for later */
    assert_null(fake_find_doc("reservations", "old-c"));
    assert_non_null(fake_find_doc("calendars", "r1"));
    assert_non_null(fake_find_doc("reservations_idx", "old-c"));

    /* the migrated stays hold their nights; a cancelled one does not */
    assert_int_equal(book("r1", "eve", 10, 1, NULL, detail), 409);
    assert_int_equal(book("r2", "eve", 12, 1, NULL, detail), 409);
    assert_int_equal(book("r1", "eve", 20, 1, NULL, detail), 202);
    json_decref(call("GET", "/reservations/{id}", "old-a", NULL, "gina", "guest", NULL, &st, detail));
    assert_int_equal(st, 200);

    /* once the conflicting booking is gone, the next start finishes it */
    json_decref(call("DELETE", "/reservations/{id}", id, NULL, "gus", "guest", NULL, &st, detail));
    assert_int_equal(st, 202);
    fake_doc_t *mine = fake_find_doc("reservations", id);
    json_array_clear(mine->claims); /* as its CANCELLED end would: not part of this test */
    restart();
    assert_non_null(fake_find_doc("reservations", "old-c"));
    assert_null(fake_find_doc("calendars", "r1"));
    assert_null(fake_find_doc("reservations_idx", "old-c"));
    restart(); /* nothing left */
    assert_int_equal(json_array_size(claims_of("old-a")), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_booking_claims_nights_and_a_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlap_is_409_adjacent_is_fine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_horizon_and_stay_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_cap_is_exact_and_ended_stays_give_slots_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payment_events_move_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_deleted_cancels_future_stays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_visibility, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calendars_migrated, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of plugins/payment/payment.c against the fake host (storage v2):
 * the card key pair generated once in the store, sealed cards opened only for
 * their reservation, one payment per reservation (synchronous call and event
 * path), refunds and voids, pages. Only the last four digits are stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_seal.h"
#include "fake_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const bnb_plugin_t bnb_plugin;

#define CARD "4111111111114242"

static bnb_host_api_t v1_host; /* the fake host without storage v2 */

static int setup(void **state)
{
    fake_host_reset("payment");
    if (state && *state) { /* a store without v2: the ABI 1.0 calls */
        v1_host = fake_host_api;
        v1_host.store_define = NULL;
        return bnb_plugin.init(&FH.ctx, &v1_host);
    }
    return bnb_plugin.init(&FH.ctx, &fake_host_api);
}

static int teardown(void **state)
{
    (void)state;
    bnb_plugin.fini(&FH.ctx);
    fake_host_free();
    return 0;
}

static json_t *call(const char *method, const char *pattern, const char *id, const char *query, const char *user,
                    const char *role, json_t *body, int *status, char *detail)
{
    struct bnb_req r = {.method = method, .id = id, .query = query, .user = user, .role = role, .body = body};
    bnb_route_fn fn = fake_route(method, pattern, NULL);
    assert_non_null(fn);
    fn(&FH.ctx, &r);
    assert_true(r.answered);
    json_decref(body);
    *status = r.status;
    if (detail)
        strcpy(detail, r.detail);
    return r.json;
}

/* The card sealed with payment's public key (GET /payments/keys/card) for res_id; caller frees. */
static char *sealed_for(const char *res_id, const char *number)
{
    int st;
    json_t *k = call("GET", "/payments/keys/card", NULL, NULL, "svc", NULL, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(json_string_value(json_object_get(k, "alg")), BNB_SEAL_ALG);
    char *out = NULL;
    assert_int_equal(bnb_seal(json_string_value(json_object_get(k, "publicKey")), number, res_id, &out), 0);
    json_decref(k);
    return out;
}

static json_t *pay(const char *res_id, const char *sealed, const char *user, int *st, char *detail)
{
    return call("POST", "/payments", NULL, NULL, user, "guest",
                json_pack("{s:s, s:s, s:s, s:i, s:s}", "reservationId", res_id, "roomId", "r1", "hostId", "hal",
                          "amount", 300, "sealedCard", sealed),
                st, detail);
}

static void test_key_generated_once_in_the_store(void **state)
{
    (void)state;
    char *a = sealed_for("res1", CARD);
    fake_doc_t *d = fake_find_doc("card_keys", "current");
    assert_non_null(d);
    int64_t v = d->version;
    char *b = sealed_for("res2", CARD);
    assert_int_equal(fake_find_doc("card_keys", "current")->version, v); /* not generated again */
    free(a);
    free(b);
}

static void test_pay_once_last4_only(void **state)
{
    (void)state;
    char detail[512];
    int st;
    char *s = sealed_for("res1", CARD);
    json_t *p = pay("res1", s, "gus", &st, detail);
    assert_int_equal(st, 201);
    assert_string_equal(json_string_value(json_object_get(p, "status")), "APPROVED");
    assert_string_equal(json_string_value(json_object_get(p, "cardLast4")), "4242");
    assert_string_equal(json_string_value(json_object_get(p, "id")), "pay-res1");
    json_decref(p);
    /* again: the same payment, not a second one */
    p = pay("res1", s, "gus", &st, detail);
    assert_int_equal(st, 200);
    json_decref(p);
    /* nothing stored or published holds the number */
    char *ev = json_dumps(FH.store.events, 0), *doc = json_dumps(fake_find_doc("payments", "res1")->body, 0);
    assert_null(strstr(ev, CARD));
    assert_null(strstr(doc, CARD));
    assert_null(strstr(doc, s));
    free(ev);
    free(doc);
    /* a sealed card only opens for its reservation */
    p = pay("res9", s, "gus", &st, detail);
    assert_int_equal(st, 422);
    assert_non_null(strstr(detail, "sealedCard"));
    json_decref(p);
    assert_null(fake_find_doc("payments", "res9"));
    free(s);
    /* a clear card is not accepted any more */
    p = call("POST", "/payments", NULL, NULL, "gus", "guest",
             json_pack("{s:s, s:s, s:s, s:i, s:s}", "reservationId", "res3", "roomId", "r1", "hostId", "hal", "amount",
                       1, "card", CARD),
             &st, detail);
    assert_int_equal(st, 400);
    json_decref(p);
}

static int placed(const char *ev_id, const char *res_id, const char *sealed)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:i, s:s?}}", "id", ev_id, "type",
                           "ReservationPlaced", "subject", res_id, "data", "id", res_id, "roomId", "r1", "hostId",
                           "hal", "guestId", "gus", "amount", 300, "sealedCard", sealed);
    int rc = fake_handler("bearbnb.reservation")(&FH.ctx, ev);
    json_decref(ev);
    return rc;
}

static void test_event_path_and_refund(void **state)
{
    (void)state;
    char *s = sealed_for("res5", CARD), *d = sealed_for("res6", "4000000000000002");
    assert_int_equal(placed("e1", "res5", s), 0);
    assert_int_equal(placed("e1", "res5", s), 0); /* redelivered */
    assert_int_equal(placed("e2", "res6", d), 0);
    assert_string_equal(json_string_value(json_object_get(fake_find_doc("payments", "res5")->body, "status")),
                        "APPROVED");
    assert_string_equal(json_string_value(json_object_get(fake_find_doc("payments", "res6")->body, "status")),
                        "DECLINED");
    /* poison: no sealed card, or one that does not open */
    assert_int_equal(placed("e3", "res7", NULL), BNB_EINVAL);
    assert_int_equal(placed("e4", "res7", s), BNB_EINVAL);
    /* refund, and a void for a reservation never paid */
    json_t *ev = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:i}}", "id", "e5", "type",
                           "ReservationCancelRequested", "subject", "res5", "data", "id", "res5", "roomId", "r1",
                           "hostId", "hal", "guestId", "gus", "amount", 300);
    assert_int_equal(fake_handler("bearbnb.reservation")(&FH.ctx, ev), 0);
    json_decref(ev);
    assert_string_equal(json_string_value(json_object_get(fake_find_doc("payments", "res5")->body, "status")),
                        "CANCELLED");
    ev = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:i}}", "id", "e6", "type", "ReservationCancelRequested",
                   "subject", "res8", "data", "id", "res8", "roomId", "r1", "hostId", "hal", "guestId", "gus", "amount",
                   300);
    assert_int_equal(fake_handler("bearbnb.reservation")(&FH.ctx, ev), 0);
    json_decref(ev);
    assert_true(json_is_true(json_object_get(fake_find_doc("payments", "res8")->body, "voided")));
    free(s);
    free(d);
}

static void test_pages(void **state)
{
    (void)state;
    int st;
    char detail[512];
    for (int i = 0; i < 7; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "r%d", i);
        char *s = sealed_for(rid, CARD);
        json_decref(pay(rid, s, i % 2 ? "gus" : "eve", &st, detail));
        assert_int_equal(st, 201);
        free(s);
    }
    json_t *p = call("GET", "/payments", NULL, "limit=3", "hal", "host", NULL, &st, detail);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 3);
    assert_true(json_is_string(json_object_get(p, "next")));
    json_decref(p);
    p = call("GET", "/payments", NULL, NULL, "gus", "guest", NULL, &st, detail);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 3);
    assert_true(json_is_null(json_object_get(p, "next")));
    json_decref(p);
    p = call("GET", "/payments", NULL, NULL, "nobody", "guest", NULL, &st, detail); /* none */
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 0);
    json_decref(p);
    p = call("GET", "/payments", NULL, "reservationId=r1", "gus", "guest", NULL, &st, detail);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 1);
    json_decref(p);
    p = call("GET", "/payments", NULL, "reservationId=r1", "eve", "guest", NULL, &st, detail);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 0); /* not hers */
    json_decref(p);
    const char *bad[][2] = {{"limit=0", "limit"}, {"cursor=x", "cursor"}, {"payer=gus", "payer"}};
    for (int i = 0; i < 3; i++) {
        json_decref(call("GET", "/payments", NULL, bad[i][0], "gus", "guest", NULL, &st, detail));
        assert_int_equal(st, 400);
        assert_non_null(strstr(detail, bad[i][1]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_generated_once_in_the_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pay_once_last4_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_path_and_refund, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pages, setup, teardown),
        /* the same on a store without storage v2 */
        cmocka_unit_test_prestate_setup_teardown(test_pay_once_last4_only, setup, teardown, (void *)1),
        cmocka_unit_test_prestate_setup_teardown(test_event_path_and_refund, setup, teardown, (void *)1),
        cmocka_unit_test_prestate_setup_teardown(test_pages, setup, teardown, (void *)1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

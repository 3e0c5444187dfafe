/*
 * Unit tests of plugins/common's small helpers (bnb_plugin_util.h): ids, card
 * numbers, the strict request body, event envelopes and rejection, and route
 * registration, against the fake host (tests/plugins/fake_host.h). The
 * load - change - commit helper and the error mapping: test_update.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin_util.h"
#include "fake_host.h"

#include <string.h>

static const bnb_host_api_t *H = &fake_host_api;

static int reset(void **state)
{
    (void)state;
    fake_host_reset("util");
    return 0;
}

static int cleanup(void **state)
{
    (void)state;
    fake_host_free();
    return 0;
}

static void test_id_ok(void **state)
{
    (void)state;
    assert_true(bnb_util_id_ok("a"));
    assert_true(bnb_util_id_ok("Room_1-x"));
    char s[66];
    memset(s, 'a', 64);
    s[64] = '\0';
    assert_true(bnb_util_id_ok(s));
    s[64] = 'a';
    s[65] = '\0';
    assert_false(bnb_util_id_ok(s)); /* 65 */
    assert_false(bnb_util_id_ok(""));
    assert_false(bnb_util_id_ok(NULL));
    assert_false(bnb_util_id_ok("a b"));
    assert_false(bnb_util_id_ok("a/b"));
    assert_false(bnb_util_id_ok("ä"));
    assert_false(bnb_util_id_ok("a.b"));
}

static void test_card_number_and_validity(void **state)
{
    (void)state;
    json_t *s = json_string("4111111111111111"), *o = json_pack("{s:s}", "number", "4111111111111111"),
           *bad = json_pack("{s:i}", "number", 4111), *n = json_integer(4111111111111111LL);
    assert_string_equal(bnb_util_card_number(s), "4111111111111111");
    assert_string_equal(bnb_util_card_number(o), "4111111111111111");
    assert_null(bnb_util_card_number(bad));
    assert_null(bnb_util_card_number(n));
    assert_null(bnb_util_card_number(NULL));
    json_decref(s);
    json_decref(o);
    json_decref(bad);
    json_decref(n);
    assert_true(bnb_util_card_valid("411111111111"));        /* 12 */
    assert_true(bnb_util_card_valid("4111111111111111111")); /* 19 */
    assert_false(bnb_util_card_valid("41111111111"));        /* 11 */
    assert_false(bnb_util_card_valid("41111111111111111111"));
    assert_false(bnb_util_card_valid("4111 1111 1111 1111"));
    assert_false(bnb_util_card_valid("41111111111111a1"));
    assert_false(bnb_util_card_valid(""));
    assert_false(bnb_util_card_valid(NULL));
}

static const char *const known[] = {"name", "city", NULL};
static const char *const owned[] = {"id", "version", NULL};

static void test_body_strict(void **state)
{
    (void)state;
    bnb_req_t r = {.method = "POST", .user = "hank", .role = "host"};
    r.body = json_pack("{s:s, s:s}", "name", "n", "city", "c");
    assert_ptr_equal(bnb_util_body(H, &r, known, owned), r.body);
    assert_false(r.answered);
    json_decref(r.body);

    memset(&r, 0, sizeof(r));
    r.user = "hank";
    r.body = json_pack("{s:s, s:s}", "name", "n", "colour", "red");
    assert_null(bnb_util_body(H, &r, known, owned));
    assert_int_equal(r.status, 400);
    assert_string_equal(r.detail, "unknown field 'colour'");
    json_decref(r.body);

    memset(&r, 0, sizeof(r));
    r.user = "hank";
    r.body = json_pack("{s:s, s:i}", "name", "n", "version", 3);
    assert_null(bnb_util_body(H, &r, known, owned));
    assert_int_equal(r.status, 400);
    assert_string_equal(r.detail, "field 'version' is set by the server and cannot be given");
    json_decref(r.body);

    memset(&r, 0, sizeof(r)); /* no body, or not an object, or no user */
    r.user = "hank";
    assert_null(bnb_util_body(H, &r, known, NULL));
    assert_int_equal(r.status, 400);
    assert_string_equal(r.detail, "body must be a JSON object");
    memset(&r, 0, sizeof(r));
    r.body = json_pack("{s:s}", "name", "n");
    assert_null(bnb_util_body(H, &r, known, NULL));
    assert_int_equal(r.status, 400);
    json_decref(r.body);
}

static void test_envelope_and_reject(void **state)
{
    (void)state;
    json_t *ev = json_pack("{s:s, s:s, s:{s:i}}", "id", "e1", "type", "RoomRegistered", "data", "capacity", 2);
    const char *id = NULL, *type = NULL;
    const json_t *data = NULL;
    assert_int_equal(bnb_util_envelope(H, &FH.ctx, ev, &id, &type, &data), 0);
    assert_string_equal(id, "e1");
    assert_string_equal(type, "RoomRegistered");
    assert_int_equal(json_integer_value(json_object_get(data, "capacity")), 2);
    assert_string_equal(FH.reject, "");
    json_decref(ev);
    /* no data is fine; no string id or type is not */
    ev = json_pack("{s:s, s:s}", "id", "e2", "type", "X");
    assert_int_equal(bnb_util_envelope(H, &FH.ctx, ev, &id, &type, &data), 0);
    assert_null(data);
    json_decref(ev);
    ev = json_pack("{s:i, s:s}", "id", 3, "type", "X");
    assert_int_equal(bnb_util_envelope(H, &FH.ctx, ev, &id, &type, &data), BNB_EINVAL);
    assert_string_equal(FH.reject, "envelope without string id/type");
    json_decref(ev);
    ev = json_string("not an object");
    FH.reject[0] = '\0';
    assert_int_equal(bnb_util_envelope(H, &FH.ctx, ev, &id, &type, &data), BNB_EINVAL);
    assert_string_equal(FH.reject, "envelope without string id/type");
    json_decref(ev);
    assert_int_equal(bnb_util_reject(H, &FH.ctx, "room r1 is gone"), BNB_EINVAL);
    assert_string_equal(FH.reject, "room r1 is gone");
}

static void h1(bnb_ctx_t *ctx, bnb_req_t *req)
{
    (void)ctx;
    (void)req;
}

static void h2(bnb_ctx_t *ctx, bnb_req_t *req)
{
    (void)ctx;
    (void)req;
}

static int e1(bnb_ctx_t *ctx, const json_t *ev)
{
    (void)ctx;
    (void)ev;
    return 0;
}

/* The fake's route, except that it refuses "/refused" (as the host refuses a
 * method + pattern taken already). */
static int refusing_route(bnb_ctx_t *ctx, const char *method, const char *pattern, bnb_role_t who, bnb_route_fn fn)
{
    if (strcmp(pattern, "/refused") == 0)
        return BNB_EEXIST;
    return fake_host_api.route(ctx, method, pattern, who, fn);
}

static void test_register_in_order(void **state)
{
    (void)state;
    const bnb_util_route_t routes[] = {
        {"GET", "/things/{id}", BNB_ROLE_ANYONE, h1},
        {"POST", "/things", BNB_ROLE_HOST, h2},
        {0},
    };
    const bnb_util_sub_t subs[] = {{"bearbnb.room", e1}, {0}};
    assert_int_equal(bnb_util_register(&FH.ctx, H, routes, subs), 0);
    assert_int_equal(FH.nroutes, 2);
    assert_int_equal(FH.nsubs, 1);
    bnb_role_t who;
    assert_ptr_equal(fake_route("GET", "/things/{id}", &who), h1);
    assert_int_equal(who, BNB_ROLE_ANYONE);
    assert_ptr_equal(fake_route("POST", "/things", &who), h2);
    assert_int_equal(who, BNB_ROLE_HOST);
    assert_ptr_equal(fake_handler("bearbnb.room"), e1);
    /* either table may be NULL */
    fake_host_free();
    fake_host_reset("util");
    assert_int_equal(bnb_util_register(&FH.ctx, H, NULL, subs), 0);
    assert_int_equal(FH.nroutes, 0);
    assert_int_equal(FH.nsubs, 1);
    /* the first failure stops it and is returned */
    fake_host_free();
    fake_host_reset("util");
    bnb_host_api_t api = fake_host_api;
    api.route = refusing_route;
    const bnb_util_route_t three[] = {
        {"GET", "/a", BNB_ROLE_ANYONE, h1},
        {"GET", "/refused", BNB_ROLE_ANYONE, h2},
        {"GET", "/b", BNB_ROLE_ANYONE, h1},
        {0},
    };
    assert_int_equal(bnb_util_register(&FH.ctx, &api, three, subs), BNB_EEXIST);
    assert_int_equal(FH.nroutes, 1);
    assert_int_equal(FH.nsubs, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_ok),
        cmocka_unit_test(test_card_number_and_validity),
        cmocka_unit_test_setup_teardown(test_body_strict, reset, cleanup),
        cmocka_unit_test_setup_teardown(test_envelope_and_reject, reset, cleanup),
        cmocka_unit_test_setup_teardown(test_register_in_order, reset, cleanup),
    };
    return cmocka_run_group_tests_name("plugins/common/util", tests, NULL, NULL);
}

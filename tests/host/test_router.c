/* host/router.c: METHOD + pattern matching with {param} segments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int A, B, C, D, E; /* route data / owners: only their addresses matter */

static int match(bnb_router_t *r, const char *method, const char *path, bnb_route_match_t *m, char *allow,
                 size_t allowlen)
{
    return bnb__router_match(r, method, path, strlen(path), m, allow, allowlen);
}

static const char *param(const bnb_route_match_t *m, const char *name)
{
    char braced[64];
    snprintf(braced, sizeof(braced), "{%s}", name);
    for (size_t i = 0; i < m->nparams; i++)
        if (strcmp(m->names[i], braced) == 0)
            return m->values[i];
    return NULL;
}

static void test_literal_beats_param(void **state)
{
    (void)state;
    bnb_router_t *r = bnb__router_new();
    assert_non_null(r);
    /* the parameter route is added first: precedence must not depend on order */
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}", &A, &A), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/search", &A, &B), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}/reviews", &A, &C), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/{any}/{id}/reviews", &A, &D), 0);

    bnb_route_match_t m;
    assert_int_equal(match(r, "GET", "/rooms/search", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &B);
    assert_string_equal(m.pattern, "/rooms/search");
    assert_int_equal(m.nparams, 0);
    bnb__route_match_clear(&m);

    assert_int_equal(match(r, "GET", "/rooms/r-42", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &A);
    assert_string_equal(m.pattern, "/rooms/{id}");
    assert_int_equal(m.nparams, 1);
    assert_string_equal(param(&m, "id"), "r-42");
    bnb__route_match_clear(&m);

    /* two candidates: the one with more literal segments wins */
    assert_int_equal(match(r, "GET", "/rooms/7/reviews", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &C);
    assert_string_equal(param(&m, "id"), "7");
    bnb__route_match_clear(&m);

    assert_int_equal(match(r, "GET", "/hotels/7/reviews", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &D);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(param(&m, "any"), "hotels");
    assert_string_equal(param(&m, "id"), "7");
    bnb__route_match_clear(&m);

    /* a literal route and "/" */
    assert_int_equal(bnb__router_add(r, "GET", "/", &A, &E), 0);
    assert_int_equal(match(r, "GET", "/", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &E);
    bnb__route_match_clear(&m);
    bnb__router_free(r);
}

static void test_404_vs_405(void **state)
{
    (void)state;
    bnb_router_t *r = bnb__router_new();
    assert_int_equal(bnb__router_add(r, "GET", "/rooms", &A, &A), 0);
    assert_int_equal(bnb__router_add(r, "POST", "/rooms", &A, &B), 0);
    assert_int_equal(bnb__router_add(r, "PATCH", "/rooms/{id}", &A, &C), 0);
    assert_int_equal(bnb__router_add(r, "DELETE", "/rooms/{id}", &A, &D), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}", &A, &E), 0);

    bnb_route_match_t m;
    char allow[128];
    assert_int_equal(match(r, "GET", "/nothing", &m, allow, sizeof(allow)), 404);
    assert_string_equal(allow, "");
    assert_null(m.route);
    assert_int_equal(match(r, "GET", "/rooms/1/2", &m, allow, sizeof(allow)), 404);

    assert_int_equal(match(r, "DELETE", "/rooms", &m, allow, sizeof(allow)), 405);
    assert_null(m.route);
    assert_string_equal(allow, "GET, POST");

    assert_int_equal(match(r, "POST", "/rooms/9", &m, allow, sizeof(allow)), 405);
    assert_non_null(strstr(allow, "PATCH"));
    assert_non_null(strstr(allow, "DELETE"));
    assert_non_null(strstr(allow, "GET"));
    assert_null(strstr(allow, "POST"));
    assert_int_equal(strlen(allow), strlen("PATCH, DELETE, GET"));

    /* the right method on the same path is a 200 with the right data */
    assert_int_equal(match(r, "DELETE", "/rooms/9", &m, allow, sizeof(allow)), 200);
    assert_ptr_equal(m.route, &D);
    bnb__route_match_clear(&m);
    /* methods are case-sensitive tokens */
    assert_int_equal(match(r, "get", "/rooms", &m, allow, sizeof(allow)), 405);
    bnb__router_free(r);
}

static void test_percent_decoding(void **state)
{
    (void)state;
    bnb_router_t *r = bnb__router_new();
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}/reviews/{rid}", &A, &A), 0);
    bnb_route_match_t m;
    assert_int_equal(match(r, "GET", "/rooms/a%20b/reviews/%C3%A9t%c3%a9", &m, NULL, 0), 200);
    assert_string_equal(param(&m, "id"), "a b");
    assert_string_equal(param(&m, "rid"), "\xc3\xa9t\xc3\xa9");
    bnb__route_match_clear(&m);
    assert_int_equal(m.nparams, 0);

    /* an encoded slash stays inside the segment */
    assert_int_equal(match(r, "GET", "/rooms/x%2Fy/reviews/1", &m, NULL, 0), 200);
    assert_string_equal(param(&m, "id"), "x/y");
    bnb__route_match_clear(&m);

    /* bad escapes and an encoded NUL are 404, never a half-decoded value */
    static const char *const bad[] = {"/rooms/%/reviews/1",     "/rooms/%4/reviews/1",  "/rooms/1/reviews/%zz",
                                      "/rooms/a%00b/reviews/1", "/rooms/1/reviews/%G1", "/rooms/1/reviews/ab%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = match(r, "GET", bad[i], &m, NULL, 0);
        if (st != 404)
            fail_msg("%s: expected 404, got %d", bad[i], st);
        assert_int_equal(m.nparams, 0);
    }

    char *d = bnb__url_decode("caf%C3%A9+au%20lait", strlen("caf%C3%A9+au%20lait"), 1);
    assert_non_null(d);
    assert_string_equal(d, "caf\xc3\xa9 au lait");
    free(d);
    /* in a path, '+' is a literal plus */
    d = bnb__url_decode("a+b%20c", 7, 0);
    assert_non_null(d);
    assert_string_equal(d, "a+b c");
    free(d);
    /* decoding is bounded by len, not by the NUL */
    d = bnb__url_decode("ab%41zz", 5, 0);
    assert_non_null(d);
    assert_string_equal(d, "abA");
    free(d);
    assert_null(bnb__url_decode("%4", 2, 0));
    assert_null(bnb__url_decode("%00", 3, 0));
    /* a raw NUL is refused too, not a silently shorter string (fuzz/router) */
    assert_null(bnb__url_decode("/roH\0fT%4D", 11, 0));
    assert_null(bnb__url_decode("abc\0", 4, 1));
    bnb__router_free(r);
}

static void test_empty_segments_rejected(void **state)
{
    (void)state;
    bnb_router_t *r = bnb__router_new();
    assert_int_equal(bnb__router_add(r, "GET", "/rooms", &A, &A), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}", &A, &B), 0);
    bnb_route_match_t m;
    static const char *const bad[] = {"/rooms/", "//rooms", "/rooms//", "rooms", "", "/rooms/1/", "/rooms//1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = match(r, "GET", bad[i], &m, NULL, 0);
        if (st != 404)
            fail_msg("'%s': expected 404, got %d", bad[i], st);
    }
    /* bad patterns */
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/", &A, &C), -EINVAL);
    assert_int_equal(bnb__router_add(r, "GET", "//x", &A, &C), -EINVAL);
    assert_int_equal(bnb__router_add(r, "GET", "x", &A, &C), -EINVAL);
    assert_int_equal(bnb__router_add(r, "GET", "", &A, &C), -EINVAL);
    assert_int_equal(bnb__router_add(r, "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", &A, &C), -EINVAL);
    assert_int_equal(bnb__router_add(r, "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", &A, &C), 0);
    bnb__router_free(r);
}

static void count_fn(const char *method, const char *pattern, void *data, void *ud)
{
    (void)method;
    (void)pattern;
    (void)data;
    (*(int *)ud)++;
}

static void test_remove_owner(void **state)
{
    (void)state;
    bnb_router_t *r = bnb__router_new();
    int owner1, owner2;
    assert_int_equal(bnb__router_add(r, "GET", "/rooms", &owner1, &A), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}", &owner1, &B), 0);
    assert_int_equal(bnb__router_add(r, "POST", "/reservations", &owner2, &C), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/reservations/{id}", &owner2, &D), 0);
    int n = 0;
    bnb__router_each(r, NULL, count_fn, &n);
    assert_int_equal(n, 4);
    n = 0;
    bnb__router_each(r, &owner1, count_fn, &n);
    assert_int_equal(n, 2);

    bnb__router_remove_owner(r, &owner1);
    bnb_route_match_t m;
    assert_int_equal(match(r, "GET", "/rooms", &m, NULL, 0), 404);
    assert_int_equal(match(r, "GET", "/rooms/1", &m, NULL, 0), 404);
    assert_int_equal(match(r, "GET", "/reservations/1", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &D);
    bnb__route_match_clear(&m);
    assert_int_equal(match(r, "POST", "/reservations", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &C);
    bnb__route_match_clear(&m);
    n = 0;
    bnb__router_each(r, NULL, count_fn, &n);
    assert_int_equal(n, 2);
    /* the removed patterns can be registered again, by someone else */
    assert_int_equal(bnb__router_add(r, "GET", "/rooms", &owner2, &E), 0);
    assert_int_equal(match(r, "GET", "/rooms", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &E);
    bnb__route_match_clear(&m);
    bnb__router_remove_owner(r, &owner1); /* nothing left of it: no-op */
    n = 0;
    bnb__router_each(r, NULL, count_fn, &n);
    assert_int_equal(n, 3);
    bnb__router_free(r);
}

static void test_duplicate(void **state)
{
    (void)state;
    bnb_router_t *r = bnb__router_new();
    int owner1, owner2;
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}", &owner1, &A), 0);
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}", &owner2, &B), -EEXIST);
    assert_int_equal(bnb__router_add(r, "GET", "/rooms/{id}", &owner1, &B), -EEXIST);
    /* another method on the same pattern is not a duplicate */
    assert_int_equal(bnb__router_add(r, "PATCH", "/rooms/{id}", &owner2, &C), 0);
    bnb_route_match_t m;
    assert_int_equal(match(r, "GET", "/rooms/1", &m, NULL, 0), 200);
    assert_ptr_equal(m.route, &A); /* the first registration stays */
    bnb__route_match_clear(&m);
    bnb__router_free(r);
    bnb__router_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_beats_param), cmocka_unit_test(test_404_vs_405),
        cmocka_unit_test(test_percent_decoding),    cmocka_unit_test(test_empty_segments_rejected),
        cmocka_unit_test(test_remove_owner),        cmocka_unit_test(test_duplicate),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}

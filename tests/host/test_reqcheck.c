/* Unit: host/http/reqcheck.c, what a client sends checked before dispatch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "reqcheck.h"

#include <stdlib.h>

#include <string.h>

static int json(const char *v)
{
    return bnb__media_type_is_json(v, strlen(v));
}

static void test_media_type(void **state)
{
    (void)state;
    assert_true(json("application/json"));
    assert_true(json("Application/JSON"));
    assert_true(json("application/json; charset=utf-8"));
    assert_true(json("  application/json ;charset=utf-8"));
    assert_true(json("application/problem+json"));
    assert_true(json("application/merge-patch+json; x=1"));
    assert_false(json("text/plain; x=application/json"));
    assert_false(json("text/plain+json"));
    assert_false(json("application/jsonx"));
    assert_false(json("application/+json"));
    assert_false(json("application/json x"));
    assert_false(json("application/json,text/plain"));
    assert_false(json("xapplication/json"));
    assert_false(json("application /json"));
    assert_false(json(""));
    assert_false(json("/json"));
    /* not NUL-terminated: only n bytes count */
    assert_true(bnb__media_type_is_json("application/jsonGARBAGE", 16));
}

static void test_correlation_id(void **state)
{
    (void)state;
    assert_true(bnb__correlation_id_ok("order-42.retry_1:a", 18));
    char id[64];
    memset(id, 'a', 63);
    assert_true(bnb__correlation_id_ok(id, 63));
    assert_false(bnb__correlation_id_ok(id, 64));
    assert_false(bnb__correlation_id_ok("", 0));
    assert_false(bnb__correlation_id_ok("a\"b", 3));
    assert_false(bnb__correlation_id_ok("a b", 3));
    assert_false(bnb__correlation_id_ok("a\nb", 3));
    assert_false(bnb__correlation_id_ok("\xc3\xa9", 2));
}

static int qbad(const char *q, char *name)
{
    return bnb__query_check(q, strlen(q), name, 64);
}

static void test_query_check(void **state)
{
    (void)state;
    char name[64];
    assert_int_equal(qbad("", name), 0);
    assert_int_equal(qbad("city=Bern&limit=5", name), 0);
    assert_int_equal(qbad("city=B%65rn&x=%2F%2f&flag", name), 0);
    assert_int_equal(qbad("a=1&&b=2&=3", name), 0);
    assert_int_equal(qbad("city=%zz", name), -1);
    assert_string_equal(name, "city");
    assert_int_equal(qbad("limit=5&city=Be%2", name), -1);
    assert_string_equal(name, "city");
    assert_int_equal(qbad("limit=5&city=%", name), -1);
    assert_string_equal(name, "city");
    assert_int_equal(qbad("x=%00", name), -1);
    assert_string_equal(name, "x");
    assert_int_equal(qbad("c%zzity=1", name), -1);
    assert_string_equal(name, "c%zzity");
    assert_int_equal(qbad("a\"b=%", name), -1);
    assert_string_equal(name, "a?b");
    /* the name is cut to fit */
    char small[4];
    assert_int_equal(bnb__query_check("abcdef=%", 8, small, sizeof(small)), -1);
    assert_string_equal(small, "abc");
}

static void fwd_is(const char *in, size_t n, const char *want)
{
    char *got = bnb__uri_forwardable(in, n);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_uri_forwardable(void **state)
{
    (void)state;
    /* encoded stays encoded, untouched: %20 %2F %25 %C3%A9 and a broken %zz */
    fwd_is("/notifications/bad%20id/read", 28, "/notifications/bad%20id/read");
    fwd_is("/a%2Fb/%25/caf%C3%A9/%zz", 24, "/a%2Fb/%25/caf%C3%A9/%zz");
    fwd_is("/x/../y", 7, "/x/../y");
    /* what a URL may not carry raw is encoded */
    fwd_is("/bad id", 7, "/bad%20id");
    fwd_is("/caf\xc3\xa9", 6, "/caf%C3%A9");
    fwd_is("/a\"#<>\\^`{|}b", 13, "/a%22%23%3C%3E%5C%5E%60%7B%7C%7Db");
    fwd_is("/\x01\x7f", 3, "/%01%7F");
    fwd_is("/nul\0x", 6, "/nul%00x");
    fwd_is("", 0, "");
    fwd_is("city=Z%C3%BCrich&limit=5", 24, "city=Z%C3%BCrich&limit=5");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_media_type),
        cmocka_unit_test(test_correlation_id),
        cmocka_unit_test(test_query_check),
        cmocka_unit_test(test_uri_forwardable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

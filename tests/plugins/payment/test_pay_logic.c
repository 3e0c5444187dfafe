/* Unit tests of plugins/payment/pay_logic.c: the card rule, masking, ids, refunds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pay_logic.h"

#include <string.h>

static void test_decide(void **state)
{
    (void)state;
    assert_string_equal(pay_decide("4111111111111111"), "APPROVED");
    assert_string_equal(pay_decide("4000000000000002"), "DECLINED");
    assert_string_equal(pay_decide("400000000002"), "DECLINED");
    assert_string_equal(pay_decide("4000000000000020"), "APPROVED"); /* 0020, not 0002 */
    assert_string_equal(pay_decide("4000000000000102"), "APPROVED");
    assert_string_equal(pay_decide("40000000002"), "DECLINED"); /* too short */
    assert_string_equal(pay_decide("4111-1111-1111-1111"), "DECLINED");
    assert_string_equal(pay_decide(NULL), "DECLINED");
    assert_true(pay_card_valid("4000000000000000002"));
    assert_false(pay_card_valid("40000000000000000002"));
}

static void test_card_number(void **state)
{
    (void)state;
    json_t *s = json_string("4111111111111111"), *o = json_pack("{s:s,s:s}", "number", "5555", "cvc", "123"),
           *bad = json_pack("{s:i}", "number", 5);
    assert_string_equal(pay_card_number(s), "4111111111111111");
    assert_string_equal(pay_card_number(o), "5555");
    assert_null(pay_card_number(bad));
    assert_null(pay_card_number(NULL));
    json_decref(s);
    json_decref(o);
    json_decref(bad);
}

static void test_last4(void **state)
{
    (void)state;
    char l[5] = "xxxx";
    pay_last4("4111111111114242", l);
    assert_string_equal(l, "4242");
    pay_last4("12", l);
    assert_string_equal(l, "");
    pay_last4(NULL, l);
    assert_string_equal(l, "");
}

static void test_ids(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(pay_id_for("abc-123", buf, sizeof buf), 0);
    assert_string_equal(buf, "pay-abc-123");
    assert_string_equal(pay_reservation_of(buf), "abc-123");
    assert_string_equal(pay_reservation_of("abc-123"), "abc-123");
    assert_null(pay_reservation_of(NULL));
    assert_int_equal(pay_id_for("abcdefgh", buf, 8), -1);
    assert_int_equal(pay_id_for("", buf, sizeof buf), -1);
    assert_int_equal(pay_id_for(NULL, buf, sizeof buf), -1);
}

static void test_refund(void **state)
{
    (void)state;
    assert_string_equal(pay_refund_next("APPROVED"), "CANCELLED");
    assert_null(pay_refund_next("DECLINED"));
    assert_null(pay_refund_next("CANCELLED"));
    assert_null(pay_refund_next(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide), cmocka_unit_test(test_card_number), cmocka_unit_test(test_last4),
        cmocka_unit_test(test_ids),    cmocka_unit_test(test_refund),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

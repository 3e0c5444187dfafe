/* Unit tests of plugins/reservation/resv_logic.c: dates, stays, overlap,
 * amounts, card numbers, the state machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin.h"
#include "resv_logic.h"

#include <string.h>

static int32_t day(const char *s)
{
    int32_t d = -1;
    assert_int_equal(resv_parse_date(s, &d), 0);
    return d;
}

static void test_parse_date(void **state)
{
    (void)state;
    assert_int_equal(day("1970-01-01"), 0);
    assert_int_equal(day("1970-01-02"), 1);
    assert_int_equal(day("2000-03-01") - day("2000-02-28"), 2); /* 2000 is leap */
    assert_int_equal(day("2100-03-01") - day("2100-02-28"), 1); /* 2100 is not */
    assert_int_equal(day("2024-12-31") - day("2024-01-01"), 365);
    assert_int_equal(day("2025-01-01"), 20089);
    int32_t d;
    const char *bad[] = {"2025-02-29", "2024-02-30", "2025-13-01",  "2025-00-10", "2025-01-00",
                         "2025-04-31", "2025-1-01",  "2025/01/01",  "20250101",   "2025-01-011",
                         "",           "abcd-ef-gh", " 2025-01-01", "1969-12-31", "2025-01-0a"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(resv_parse_date(bad[i], &d), BNB_EINVAL);
    assert_int_equal(resv_parse_date(NULL, &d), BNB_EINVAL);
    assert_int_equal(resv_parse_date("2024-02-29", &d), 0);
}

static void test_format_roundtrip(void **state)
{
    (void)state;
    char buf[11];
    for (int32_t d = 0; d < 40000; d += 7) {
        int32_t back;
        resv_format_date(d, buf);
        assert_int_equal(resv_parse_date(buf, &back), 0);
        assert_int_equal(back, d);
    }
    resv_format_date(day("2024-02-29"), buf);
    assert_string_equal(buf, "2024-02-29");
    assert_int_equal(resv_day_of_ms(0), 0);
    assert_int_equal(resv_day_of_ms(86399999), 0);
    assert_int_equal(resv_day_of_ms(86400000), 1);
    assert_int_equal(resv_day_of_ms(-1), -1);
}

static void test_check_stay(void **state)
{
    (void)state;
    int32_t today = day("2030-06-10"), in, out, nights;
    const char *why = NULL;
    assert_int_equal(resv_check_stay("2030-06-10", "2030-06-13", today, &in, &out, &nights, &why), 0);
    assert_int_equal(nights, 3);
    assert_int_equal(in, today);
    assert_int_equal(out, today + 3);
    /* checkOut == checkIn, before, in the past, too long, malformed */
    assert_int_equal(resv_check_stay("2030-06-12", "2030-06-12", today, &in, &out, &nights, &why), BNB_EINVAL);
    assert_non_null(strstr(why, "after"));
    assert_int_equal(resv_check_stay("2030-06-12", "2030-06-11", today, &in, &out, &nights, &why), BNB_EINVAL);
    assert_int_equal(resv_check_stay("2030-06-09", "2030-06-11", today, &in, &out, &nights, &why), BNB_EINVAL);
    assert_non_null(strstr(why, "past"));
    assert_int_equal(resv_check_stay("2030-06-10", "2031-06-10", today, &in, &out, &nights, &why), 0);
    assert_int_equal(nights, 365);
    assert_int_equal(resv_check_stay("2030-06-10", "2031-06-11", today, &in, &out, &nights, &why), BNB_EINVAL);
    assert_non_null(strstr(why, "365"));
    assert_int_equal(resv_check_stay("2030-6-10", "2030-06-12", today, &in, &out, &nights, &why), BNB_EINVAL);
    assert_non_null(strstr(why, "checkIn"));
    assert_int_equal(resv_check_stay("2030-06-10", "2030-02-30", today, &in, &out, &nights, &why), BNB_EINVAL);
    assert_non_null(strstr(why, "checkOut"));
}

static void test_overlaps(void **state)
{
    (void)state;
    assert_true(resv_overlaps(10, 13, 12, 14));
    assert_true(resv_overlaps(10, 13, 9, 11));
    assert_true(resv_overlaps(10, 13, 11, 12));
    assert_true(resv_overlaps(10, 13, 5, 20));
    assert_true(resv_overlaps(10, 11, 10, 11));
    assert_false(resv_overlaps(10, 13, 13, 15)); /* checkout day = next checkin day */
    assert_false(resv_overlaps(13, 15, 10, 13));
    assert_false(resv_overlaps(10, 13, 1, 2));
}

static void test_find_conflict(void **state)
{
    (void)state;
    json_t *list = json_pack("[{s:s,s:s,s:s,s:s}, {s:s,s:s,s:s,s:s}, {s:s,s:s,s:s,s:s}, {s:s,s:s,s:s,s:s}]", "id", "a",
                             "checkIn", "2030-01-10", "checkOut", "2030-01-12", "status", "REJECTED", "id", "b",
                             "checkIn", "2030-01-12", "checkOut", "2030-01-15", "status", "CONFIRMED", "id", "c",
                             "checkIn", "2030-01-20", "checkOut", "2030-01-22", "status", "CANCELLED", "id", "d",
                             "checkIn", "2030-01-25", "checkOut", "2030-01-27", "status", "CANCEL_REQUESTED");
    assert_non_null(list);
    /* REJECTED and CANCELLED free their nights */
    assert_null(resv_find_conflict(list, day("2030-01-10"), day("2030-01-12")));
    assert_null(resv_find_conflict(list, day("2030-01-19"), day("2030-01-23")));
    const json_t *c = resv_find_conflict(list, day("2030-01-11"), day("2030-01-13"));
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "b");
    c = resv_find_conflict(list, day("2030-01-26"), day("2030-01-28"));
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "d");
    assert_null(resv_find_conflict(list, day("2030-01-15"), day("2030-01-20")));
    json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s}", "id", "e", "checkIn", "junk", "checkOut", "2030-02-01",
                                          "status", "PENDING"));
    c = resv_find_conflict(list, day("2030-03-01"), day("2030-03-02"));
    assert_non_null(c); /* unparsable held entry: refuse rather than double book */
    assert_null(resv_find_conflict(NULL, 0, 1));
    json_decref(list);
}

static void test_amount(void **state)
{
    (void)state;
    int64_t a = -1;
    assert_int_equal(resv_amount(12000, 3, &a), 0);
    assert_int_equal(a, 36000);
    assert_int_equal(resv_amount(0, 3, &a), 0);
    assert_int_equal(a, 0);
    assert_int_equal(resv_amount(-1, 3, &a), BNB_EINVAL);
    assert_int_equal(resv_amount(INT64_MAX / 2, 3, &a), BNB_EINVAL);
    assert_int_equal(resv_amount(INT64_C(1) << 50, 365, &a), BNB_EINVAL);
}

static void test_card(void **state)
{
    (void)state;
    assert_true(resv_card_number_valid("4111111111111111"));
    assert_true(resv_card_number_valid("400000000002"));        /* 12 */
    assert_true(resv_card_number_valid("4000000000000000002")); /* 19 */
    assert_false(resv_card_number_valid("40000000002"));        /* 11 */
    assert_false(resv_card_number_valid("40000000000000000002"));
    assert_false(resv_card_number_valid("4111 1111 1111 1111"));
    assert_false(resv_card_number_valid(NULL));
    json_t *s = json_string("4111111111111111"), *o = json_pack("{s:s}", "number", "42"), *n = json_integer(4);
    assert_string_equal(resv_card_number(s), "4111111111111111");
    assert_string_equal(resv_card_number(o), "42");
    assert_null(resv_card_number(n));
    assert_null(resv_card_number(NULL));
    json_decref(s);
    json_decref(o);
    json_decref(n);
}

static void test_state_machine(void **state)
{
    (void)state;
    assert_string_equal(resv_next_status("PENDING", RESV_IN_APPROVED), "CONFIRMED");
    assert_string_equal(resv_next_status("PENDING", RESV_IN_DECLINED), "REJECTED");
    assert_string_equal(resv_next_status("PENDING", RESV_IN_CANCEL), "CANCEL_REQUESTED");
    assert_null(resv_next_status("PENDING", RESV_IN_REFUNDED));
    assert_string_equal(resv_next_status("CONFIRMED", RESV_IN_CANCEL), "CANCEL_REQUESTED");
    assert_null(resv_next_status("CONFIRMED", RESV_IN_APPROVED)); /* redelivery */
    assert_null(resv_next_status("CONFIRMED", RESV_IN_DECLINED));
    assert_null(resv_next_status("CONFIRMED", RESV_IN_REFUNDED));
    assert_string_equal(resv_next_status("CANCEL_REQUESTED", RESV_IN_REFUNDED), "CANCELLED");
    assert_string_equal(resv_next_status("CANCEL_REQUESTED", RESV_IN_DECLINED), "CANCELLED");
    assert_null(resv_next_status("CANCEL_REQUESTED", RESV_IN_APPROVED));
    assert_null(resv_next_status("CANCEL_REQUESTED", RESV_IN_CANCEL));
    const char *final[] = {"REJECTED", "CANCELLED"};
    for (int i = 0; i < 2; i++)
        for (int in = RESV_IN_APPROVED; in <= RESV_IN_CANCEL; in++)
            assert_null(resv_next_status(final[i], (resv_input_t)in));
    assert_null(resv_next_status(NULL, RESV_IN_CANCEL));
    assert_null(resv_next_status("WHATEVER", RESV_IN_CANCEL));
    assert_true(resv_status_holds("PENDING"));
    assert_true(resv_status_holds("CONFIRMED"));
    assert_true(resv_status_holds("CANCEL_REQUESTED"));
    assert_false(resv_status_holds("REJECTED"));
    assert_false(resv_status_holds("CANCELLED"));
    assert_false(resv_status_holds(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_date), cmocka_unit_test(test_format_roundtrip), cmocka_unit_test(test_check_stay),
        cmocka_unit_test(test_overlaps),   cmocka_unit_test(test_find_conflict),    cmocka_unit_test(test_amount),
        cmocka_unit_test(test_card),       cmocka_unit_test(test_state_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

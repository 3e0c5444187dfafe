#include "resv_logic.h"
#include "bnb_plugin.h"
#include "bnb_plugin_util.h"

#include <string.h>

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Howard Hinnant's days_from_civil. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int resv_parse_date(const char *s, int32_t *days)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return BNB_EINVAL;
    for (int i = 0; i < 10; i++) {
        if (i == 4 || i == 7)
            continue;
        if (s[i] < '0' || s[i] > '9')
            return BNB_EINVAL;
    }
    int64_t y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    unsigned m = (unsigned)((s[5] - '0') * 10 + (s[6] - '0'));
    unsigned d = (unsigned)((s[8] - '0') * 10 + (s[9] - '0'));
    if (y < 1970 || m < 1 || m > 12 || d < 1)
        return BNB_EINVAL;
    unsigned max = mdays[m - 1] + (m == 2 && is_leap(y) ? 1 : 0);
    if (d > max)
        return BNB_EINVAL;
    *days = (int32_t)days_from_civil(y, m, d);
    return 0;
}

void resv_format_date(int32_t days, char out[11])
{
    int64_t z = (int64_t)days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    if (y < 0 || y > 9999) {
        strcpy(out, "0000-00-00");
        return;
    }
    out[0] = (char)('0' + y / 1000);
    out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10);
    out[3] = (char)('0' + y % 10);
    out[4] = '-';
    out[5] = (char)('0' + m / 10);
    out[6] = (char)('0' + m % 10);
    out[7] = '-';
    out[8] = (char)('0' + d / 10);
    out[9] = (char)('0' + d % 10);
    out[10] = '\0';
}

int32_t resv_day_of_ms(int64_t ms)
{
    int64_t d = ms / 86400000;
    if (ms < 0 && ms % 86400000)
        d--;
    return (int32_t)d;
}

int resv_check_stay(const char *check_in, const char *check_out, int32_t today, int32_t *in, int32_t *out,
                    int32_t *nights, const char **why)
{
    int32_t a, b;
    if (resv_parse_date(check_in, &a) != 0) {
        *why = "checkIn must be a date YYYY-MM-DD";
        return BNB_EINVAL;
    }
    if (resv_parse_date(check_out, &b) != 0) {
        *why = "checkOut must be a date YYYY-MM-DD";
        return BNB_EINVAL;
    }
    if (b <= a) {
        *why = "checkOut must be after checkIn";
        return BNB_EINVAL;
    }
    if (a < today) {
        *why = "checkIn is in the past";
        return BNB_EINVAL;
    }
    if (b - a > RESV_MAX_NIGHTS) {
        *why = "a stay is at most 365 nights";
        return BNB_EINVAL;
    }
    *in = a;
    *out = b;
    *nights = b - a;
    return 0;
}

int resv_overlaps(int32_t a_in, int32_t a_out, int32_t b_in, int32_t b_out)
{
    return a_in < b_out && b_in < a_out;
}

int resv_status_holds(const char *status)
{
    return status &&
           (!strcmp(status, "PENDING") || !strcmp(status, "CONFIRMED") || !strcmp(status, "CANCEL_REQUESTED"));
}

const json_t *resv_find_conflict(const json_t *list, int32_t in, int32_t out)
{
    size_t i;
    const json_t *r;
    json_array_foreach(list, i, r)
    {
        if (!resv_status_holds(json_string_value(json_object_get(r, "status"))))
            continue;
        int32_t a, b;
        if (resv_parse_date(json_string_value(json_object_get(r, "checkIn")), &a) != 0 ||
            resv_parse_date(json_string_value(json_object_get(r, "checkOut")), &b) != 0)
            return r; /* cannot prove it free: refuse */
        if (resv_overlaps(a, b, in, out))
            return r;
    }
    return NULL;
}

int resv_amount(int64_t price, int32_t nights, int64_t *amount)
{
    if (price < 0 || nights < 0)
        return BNB_EINVAL;
    if (nights > 0 && price > INT64_MAX / nights)
        return BNB_EINVAL;
    /* JSON integers beyond 2^53 lose precision in many clients. */
    if (price * nights > (INT64_C(1) << 53))
        return BNB_EINVAL;
    *amount = price * nights;
    return 0;
}

int resv_card_number_valid(const char *number)
{
    return bnb_util_card_valid(number);
}

const char *resv_card_number(const json_t *card)
{
    return bnb_util_card_number(card);
}

const char *resv_next_status(const char *status, resv_input_t in)
{
    if (!status)
        return NULL;
    if (!strcmp(status, "PENDING")) {
        switch (in) {
        case RESV_IN_APPROVED:
            return "CONFIRMED";
        case RESV_IN_DECLINED:
            return "REJECTED";
        case RESV_IN_CANCEL:
            return "CANCEL_REQUESTED";
        default:
            return NULL;
        }
    }
    if (!strcmp(status, "CONFIRMED"))
        return in == RESV_IN_CANCEL ? "CANCEL_REQUESTED" : NULL;
    if (!strcmp(status, "CANCEL_REQUESTED"))
        return in == RESV_IN_REFUNDED || in == RESV_IN_DECLINED ? "CANCELLED" : NULL;
    return NULL;
}

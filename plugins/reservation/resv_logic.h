/*
 * Pure logic of the reservation plugin (no host calls): dates, stays,
 * overlap, amounts, the reservation state machine, card numbers.
 * Unit-tested in tests/plugins/reservation.
 */
#ifndef RESV_LOGIC_H
#define RESV_LOGIC_H

#include <jansson.h>
#include <stdint.h>

/* Longest stay accepted, in nights. */
#define RESV_MAX_NIGHTS 365

/* Strict "YYYY-MM-DD" (a real calendar date, years 1970..9999) to days since
 * 1970-01-01. 0 or BNB_EINVAL. */
int resv_parse_date(const char *s, int32_t *days);
/* Days since 1970-01-01 to "YYYY-MM-DD" (out: 11 bytes). */
void resv_format_date(int32_t days, char out[11]);
/* The UTC day (days since the epoch) of a time in ms since the epoch. */
int32_t resv_day_of_ms(int64_t ms);

/* Validate a stay [check_in, check_out) as of `today`: dates well formed,
 * check_out > check_in, check_in >= today, nights <= RESV_MAX_NIGHTS.
 * 0 with *in, *out and *nights set, or BNB_EINVAL with *why (static text). */
int resv_check_stay(const char *check_in, const char *check_out, int32_t today, int32_t *in, int32_t *out,
                    int32_t *nights, const char **why);

/* 1 when the half-open stays [a_in, a_out) and [b_in, b_out) share a night. */
int resv_overlaps(int32_t a_in, int32_t a_out, int32_t b_in, int32_t b_out);

/* 1 when a reservation in `status` holds its nights (PENDING, CONFIRMED,
 * CANCEL_REQUESTED). */
int resv_status_holds(const char *status);

/* The first reservation of `list` (array of reservation objects with
 * checkIn, checkOut, status) that holds nights overlapping [in, out), or NULL
 * (borrowed). Entries with unparsable dates are treated as conflicting. */
const json_t *resv_find_conflict(const json_t *list, int32_t in, int32_t out);

/* amount = nights * price, 0 or BNB_EINVAL on a negative price or overflow. */
int resv_amount(int64_t price, int32_t nights, int64_t *amount);

/* Card number rule shared with payment: 12..19 ASCII digits. 1 valid. */
int resv_card_number_valid(const char *number);
/* The card number of a request's `card`: a string, or an object whose
 * `number` is a string. Borrowed, NULL when neither. */
const char *resv_card_number(const json_t *card);

/* Inputs of the reservation state machine. */
typedef enum {
    RESV_IN_APPROVED = 1, /* payment approved */
    RESV_IN_DECLINED,     /* payment declined */
    RESV_IN_REFUNDED,     /* payment cancelled (refunded or voided) */
    RESV_IN_CANCEL        /* guest cancels / room deleted */
} resv_input_t;

/* The status after `in` in `status`, or NULL when `in` changes nothing there
 * (already applied, or not applicable: the caller ignores it).
 *   PENDING          + APPROVED -> CONFIRMED
 *   PENDING          + DECLINED -> REJECTED
 *   PENDING          + CANCEL   -> CANCEL_REQUESTED (payment still unknown)
 *   CONFIRMED        + CANCEL   -> CANCEL_REQUESTED
 *   CANCEL_REQUESTED + REFUNDED -> CANCELLED
 *   CANCEL_REQUESTED + DECLINED -> CANCELLED (nothing was charged) */
const char *resv_next_status(const char *status, resv_input_t in);

#endif

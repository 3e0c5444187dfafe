/*
 * Pure logic of the payment plugin: the simulated card processor's rule,
 * card masking, payment ids, refund transitions. Unit-tested in
 * tests/plugins/payment.
 */
#ifndef PAY_LOGIC_H
#define PAY_LOGIC_H

#include <jansson.h>
#include <stddef.h>

#define PAY_ID_PREFIX "pay-"

/* The card number of `card`: a string, or an object whose `number` is a
 * string (borrowed), or NULL. */
const char *pay_card_number(const json_t *card);
/* 1 when `number` is 12..19 ASCII digits. */
int pay_card_valid(const char *number);
/* "DECLINED" for an invalid number or one ending in 0002, else "APPROVED". */
const char *pay_decide(const char *number);
/* The last four digits of a valid number (out: 5 bytes), "" otherwise. */
void pay_last4(const char *number, char out[5]);
/* Payment id of a reservation: "pay-<reservationId>". 0 or -1 when it does not fit. */
int pay_id_for(const char *reservation_id, char *out, size_t len);
/* The reservation id a payment id or reservation id names (borrowed, points into `id`). */
const char *pay_reservation_of(const char *id);
/* Status after a refund request: APPROVED -> CANCELLED; NULL = nothing to do
 * (DECLINED never charged, CANCELLED already refunded). */
const char *pay_refund_next(const char *status);

#endif

/* Circuit breaker (host-internal, pure): Resilience4j's count-based sliding
 * window semantics. Thread-safe. Time is passed in so tests control it. */
#ifndef BNB_BREAKER_H
#define BNB_BREAKER_H

#include <stdint.h>

typedef enum { BNB_BREAKER_CLOSED = 0, BNB_BREAKER_OPEN = 1, BNB_BREAKER_HALF_OPEN = 2 } bnb_breaker_state_t;

typedef struct bnb_breaker_config {
    int failure_rate;     /* percent (1..100) of failed calls that opens the breaker; default 50 */
    int window;           /* sliding window size in calls; default 100 */
    int minimum_calls;    /* calls needed before the rate is computed; default 100 */
    int64_t wait_open_ms; /* time spent open before half-open; default 60000 */
    int half_open_calls;  /* calls permitted in half-open; default 10 */
} bnb_breaker_config_t;

typedef struct bnb_breaker bnb_breaker_t;

void bnb__breaker_config_default(bnb_breaker_config_t *c);
bnb_breaker_t *bnb__breaker_new(const bnb_breaker_config_t *c);
void bnb__breaker_free(bnb_breaker_t *b);
/* 1 when a call may go ahead now (in half-open: takes one of the permits). */
int bnb__breaker_allow(bnb_breaker_t *b, int64_t now_ms);
/* Report the outcome of a call that allow() let through. */
void bnb__breaker_record(bnb_breaker_t *b, int success, int64_t now_ms);
bnb_breaker_state_t bnb__breaker_state(bnb_breaker_t *b, int64_t now_ms);
/* Milliseconds until an open breaker goes half-open (0 when not open). */
int64_t bnb__breaker_retry_after_ms(bnb_breaker_t *b, int64_t now_ms);

#endif

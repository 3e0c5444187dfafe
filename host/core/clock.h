/* The host's clock (host-internal). Every timing decision of the host reads
 * it: rate limits, circuit breakers, the JWKS refresh period and its
 * unknown-kid rate limit, token exp/nbf, gateway signature times. Tests move
 * it forward with bnb__clock_advance instead of sleeping (in process; an e2e
 * test through POST /admin/clock?advance_ms=N, on when test.clock is set). */
#ifndef BNB_CLOCK_H
#define BNB_CLOCK_H

#include <pthread.h>
#include <stdint.h>

/* Milliseconds since the epoch (UTC), plus what tests advanced. */
int64_t bnb__now_ms(void);
/* Monotonic milliseconds, plus what tests advanced. */
int64_t bnb__mono_ms(void);

/* Move both clocks forward by ms (>= 0) and run every watcher. */
void bnb__clock_advance(int64_t ms);
/* fn(ud) runs on the advancing thread after every advance, so that a thread
 * waiting for a moment of this clock (bnb__clock_wait) re-checks. 0, or -1
 * when the table (8) is full. */
int bnb__clock_watch(void (*fn)(void *ud), void *ud);
void bnb__clock_unwatch(void (*fn)(void *ud), void *ud);
/* pthread_cond_timedwait on cv (a CLOCK_MONOTONIC condition; mu held) until
 * bnb__mono_ms() would reach until_ms if no one advanced it; returns its
 * result (ETIMEDOUT, or 0 when signalled). Callers loop on their condition
 * and on bnb__mono_ms() < until_ms, so an advance plus a broadcast (from a
 * watcher) ends the wait early. */
int bnb__clock_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_ms);

#endif

/* Token-bucket rate limiting keyed by a string (user id or client IP), host-internal.
 *
 * Each key has a bucket of `burst` tokens refilled at `rate_per_s`; a request
 * takes one token. Memory is bounded: past `max_keys` keys the least recently
 * used bucket is dropped (a dropped key starts again with a full bucket, which
 * is what an idle key would have anyway). The clock is the caller's: pass a
 * monotonic time in milliseconds. Thread-safe. */
#ifndef BNB_RATELIMIT_H
#define BNB_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct bnb_ratelimit bnb_ratelimit_t;

/* rate_per_s > 0, burst >= 1; max_keys 0 means 100000. NULL on bad
 * arguments or out of memory. Free with bnb__ratelimit_free. */
bnb_ratelimit_t *bnb__ratelimit_new(double rate_per_s, double burst, size_t max_keys);
void bnb__ratelimit_free(bnb_ratelimit_t *rl);

/* 1: allowed (a token was taken, *retry_after_ms = 0); 0: limited, with
 * *retry_after_ms the wait until one token is available (>= 1). Keys longer
 * than 255 bytes are cut there. retry_after_ms may be NULL. */
int bnb__ratelimit_take(bnb_ratelimit_t *rl, const char *key, int64_t now_ms, int64_t *retry_after_ms);

/* Number of keys currently tracked (<= max_keys). */
size_t bnb__ratelimit_size(bnb_ratelimit_t *rl);

#endif

/* Unit tests of host/ratelimit.c: token buckets with an injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void test_burst_then_limit(void **state)
{
    (void)state;
    bnb_ratelimit_t *rl = bnb__ratelimit_new(1.0, 5, 100);
    assert_non_null(rl);
    int64_t retry = -1;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(bnb__ratelimit_take(rl, "alice", 1000, &retry), 1);
        assert_int_equal(retry, 0);
    }
    assert_int_equal(bnb__ratelimit_take(rl, "alice", 1000, &retry), 0);
    assert_int_equal(retry, 1000); /* one token per second, bucket empty */
    assert_int_equal(bnb__ratelimit_take(rl, "alice", 1000, NULL), 0);
    bnb__ratelimit_free(rl);
}

static void test_refill_and_retry_after(void **state)
{
    (void)state;
    bnb_ratelimit_t *rl = bnb__ratelimit_new(10.0, 2, 100); /* a token per 100 ms */
    int64_t retry;
    assert_int_equal(bnb__ratelimit_take(rl, "k", 0, &retry), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "k", 0, &retry), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "k", 0, &retry), 0);
    assert_int_equal(retry, 100);
    assert_int_equal(bnb__ratelimit_take(rl, "k", 30, &retry), 0);
    assert_int_equal(retry, 70); /* 0.3 token there, 0.7 missing */
    assert_int_equal(bnb__ratelimit_take(rl, "k", 99, &retry), 0);
    assert_int_equal(retry, 1);
    assert_int_equal(bnb__ratelimit_take(rl, "k", 100, &retry), 1);
    assert_int_equal(retry, 0);
    assert_int_equal(bnb__ratelimit_take(rl, "k", 100, &retry), 0);
    /* a long pause refills up to the burst, never beyond */
    for (int i = 0; i < 2; i++)
        assert_int_equal(bnb__ratelimit_take(rl, "k", 1000000, &retry), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "k", 1000000, &retry), 0);
    /* a clock going backwards does not mint tokens */
    assert_int_equal(bnb__ratelimit_take(rl, "k", 5, &retry), 0);
    /* sustained rate: over 10 s at 10/s, 100 more requests pass */
    int ok = 0;
    for (int64_t t = 1000000; t < 1010000; t += 10)
        ok += bnb__ratelimit_take(rl, "k", t, NULL);
    assert_in_range(ok, 99, 101);
    bnb__ratelimit_free(rl);
}

static void test_independent_keys(void **state)
{
    (void)state;
    bnb_ratelimit_t *rl = bnb__ratelimit_new(1.0, 3, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bnb__ratelimit_take(rl, "10.0.0.1", 0, NULL), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "10.0.0.1", 0, NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bnb__ratelimit_take(rl, "10.0.0.2", 0, NULL), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "10.0.0.2", 0, NULL), 0);
    /* a key that is a prefix of another is another key */
    assert_int_equal(bnb__ratelimit_take(rl, "10.0.0.", 0, NULL), 1);
    assert_int_equal(bnb__ratelimit_size(rl), 3);
    bnb__ratelimit_free(rl);
}

static void test_eviction_bounds_memory(void **state)
{
    (void)state;
    bnb_ratelimit_t *rl = bnb__ratelimit_new(1.0, 2, 64);
    char key[32];
    /* "hot" is used all along, so it is never the least recently used */
    assert_int_equal(bnb__ratelimit_take(rl, "hot", 0, NULL), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "hot", 0, NULL), 1);
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "ip-%d", i);
        assert_int_equal(bnb__ratelimit_take(rl, key, 0, NULL), 1);
        assert_true(bnb__ratelimit_size(rl) <= 64);
        if (i % 10 == 0)
            assert_int_equal(bnb__ratelimit_take(rl, "hot", 0, NULL), 0); /* still limited: not evicted */
    }
    assert_int_equal(bnb__ratelimit_size(rl), 64);
    /* an old key was evicted: it starts again with a full bucket */
    assert_int_equal(bnb__ratelimit_take(rl, "ip-0", 0, NULL), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "ip-0", 0, NULL), 1);
    assert_int_equal(bnb__ratelimit_take(rl, "ip-0", 0, NULL), 0);
    bnb__ratelimit_free(rl);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_null(bnb__ratelimit_new(0, 5, 10));
    assert_null(bnb__ratelimit_new(-1, 5, 10));
    assert_null(bnb__ratelimit_new(1, 0.5, 10));
    bnb_ratelimit_t *rl = bnb__ratelimit_new(1, 1, 0); /* default max keys */
    assert_non_null(rl);
    char longkey[1000];
    memset(longkey, 'x', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(bnb__ratelimit_take(rl, longkey, 0, NULL), 1);
    longkey[600] = 'y'; /* differs only past the 255-byte cut: same bucket */
    assert_int_equal(bnb__ratelimit_take(rl, longkey, 0, NULL), 0);
    bnb__ratelimit_free(rl);
}

/* ---- concurrency ------------------------------------------------------- */

typedef struct worker {
    bnb_ratelimit_t *rl;
    int allowed;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    char key[16];
    /* all threads hammer the same 4 keys at the same instants */
    for (int64_t t = 0; t < 1000; t += 10) {
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof key, "user-%d", i % 4);
            w->allowed += bnb__ratelimit_take(w->rl, key, t, NULL);
        }
    }
    return NULL;
}

static void test_concurrent_takes_stay_in_budget(void **state)
{
    (void)state;
    /* 100 tokens/s, burst 20, 4 keys, clock 0..990 ms: each key may pass at
     * most 20 + 0.99 * 100 = 119 requests, 476 in all; 4 x 5000 are tried */
    bnb_ratelimit_t *rl = bnb__ratelimit_new(100.0, 20, 1000);
    pthread_t th[4];
    worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){.rl = rl};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += w[i].allowed;
    }
    print_message("allowed %d of 20000 (budget 476)\n", total);
    assert_true(total <= 4 * (20 + 99));
    /* and the limiter was not simply closed: most of the budget was used */
    assert_true(total >= 4 * 20);
    bnb__ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_limit), cmocka_unit_test(test_refill_and_retry_after),
        cmocka_unit_test(test_independent_keys), cmocka_unit_test(test_eviction_bounds_memory),
        cmocka_unit_test(test_bad_arguments),    cmocka_unit_test(test_concurrent_takes_stay_in_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

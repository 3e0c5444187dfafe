/* host/breaker.c: Resilience4j count-based circuit breaker semantics. Time is
 * passed in, so every transition is checked at exact instants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static bnb_breaker_t *make(int rate, int window, int min_calls, int64_t wait, int half)
{
    bnb_breaker_config_t c = {rate, window, min_calls, wait, half};
    bnb_breaker_t *b = bnb__breaker_new(&c);
    assert_non_null(b);
    return b;
}

/* one call through the breaker: it must be allowed */
static void call(bnb_breaker_t *b, int success, int64_t now)
{
    assert_int_equal(bnb__breaker_allow(b, now), 1);
    bnb__breaker_record(b, success, now);
}

static void test_defaults(void **state)
{
    (void)state;
    bnb_breaker_config_t c;
    bnb__breaker_config_default(&c);
    assert_int_equal(c.failure_rate, 50);
    assert_int_equal(c.window, 100);
    assert_int_equal(c.minimum_calls, 100);
    assert_int_equal(c.wait_open_ms, 60000);
    assert_int_equal(c.half_open_calls, 10);
}

static void test_closed_below_minimum_calls(void **state)
{
    (void)state;
    bnb_breaker_t *b = make(50, 10, 5, 1000, 2);
    /* four failures out of four: 100 % but fewer than minimum_calls */
    for (int i = 0; i < 4; i++)
        call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 0), 0);
    /* the fifth call reaches minimum_calls: 5/5 failed -> open */
    call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_OPEN);
    bnb__breaker_free(b);
}

static void test_opens_at_threshold(void **state)
{
    (void)state;
    /* below the threshold: 4 failures in 10 = 40 % < 50 % */
    bnb_breaker_t *b = make(50, 10, 10, 1000, 2);
    for (int i = 0; i < 10; i++)
        call(b, i >= 4, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    bnb__breaker_free(b);

    /* exactly at the threshold: 5 in 10 = 50 % >= 50 % -> open */
    b = make(50, 10, 10, 1000, 2);
    for (int i = 0; i < 9; i++)
        call(b, i >= 4, 0); /* 4 failures, 5 successes */
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_OPEN);
    bnb__breaker_free(b);

    /* a 100 % threshold needs every call to fail */
    b = make(100, 4, 4, 1000, 1);
    call(b, 0, 0);
    call(b, 0, 0);
    call(b, 0, 0);
    call(b, 1, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    bnb__breaker_free(b);
}

static void test_open_rejects_then_half_open(void **state)
{
    (void)state;
    bnb_breaker_t *b = make(50, 4, 4, 1000, 3);
    for (int i = 0; i < 4; i++)
        call(b, 0, 100);
    assert_int_equal(bnb__breaker_state(b, 100), BNB_BREAKER_OPEN);
    /* open: every call is refused until wait_open_ms has passed */
    for (int64_t t = 100; t < 1100; t += 111)
        assert_int_equal(bnb__breaker_allow(b, t), 0);
    assert_int_equal(bnb__breaker_allow(b, 1099), 0);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 100), 1000);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 600), 500);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 1099), 1);
    assert_int_equal(bnb__breaker_state(b, 1099), BNB_BREAKER_OPEN);
    /* at wait_open_ms: half-open, exactly half_open_calls permits */
    assert_int_equal(bnb__breaker_state(b, 1100), BNB_BREAKER_HALF_OPEN);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 1100), 0);
    assert_int_equal(bnb__breaker_allow(b, 1100), 1);
    assert_int_equal(bnb__breaker_allow(b, 1101), 1);
    assert_int_equal(bnb__breaker_allow(b, 1102), 1);
    assert_int_equal(bnb__breaker_allow(b, 1103), 0);
    assert_int_equal(bnb__breaker_allow(b, 5000), 0); /* no new permits with time */
    assert_int_equal(bnb__breaker_state(b, 5000), BNB_BREAKER_HALF_OPEN);
    bnb__breaker_free(b);
}

static void test_half_open_success_closes(void **state)
{
    (void)state;
    bnb_breaker_t *b = make(50, 4, 4, 1000, 3);
    for (int i = 0; i < 4; i++)
        call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 1000), BNB_BREAKER_HALF_OPEN);
    call(b, 1, 1000);
    call(b, 1, 1001);
    assert_int_equal(bnb__breaker_state(b, 1001), BNB_BREAKER_HALF_OPEN); /* not decided before all 3 */
    call(b, 0, 1002);                                                     /* 1 failure in 3 = 33 % < 50 % */
    assert_int_equal(bnb__breaker_state(b, 1002), BNB_BREAKER_CLOSED);
    /* closed again with a fresh window: 3 failures are below minimum_calls */
    for (int i = 0; i < 3; i++)
        call(b, 0, 1003);
    assert_int_equal(bnb__breaker_state(b, 1003), BNB_BREAKER_CLOSED);
    call(b, 0, 1004);
    assert_int_equal(bnb__breaker_state(b, 1004), BNB_BREAKER_OPEN);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 1004), 1000);
    bnb__breaker_free(b);
}

static void test_half_open_failure_reopens(void **state)
{
    (void)state;
    bnb_breaker_t *b = make(50, 4, 4, 1000, 2);
    for (int i = 0; i < 4; i++)
        call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 1000), BNB_BREAKER_HALF_OPEN);
    call(b, 1, 1000);
    call(b, 0, 1500); /* 1 in 2 = 50 % >= 50 % */
    assert_int_equal(bnb__breaker_state(b, 1500), BNB_BREAKER_OPEN);
    /* the wait starts again from the moment it re-opened */
    assert_int_equal(bnb__breaker_allow(b, 2400), 0);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 2000), 500);
    assert_int_equal(bnb__breaker_state(b, 2500), BNB_BREAKER_HALF_OPEN);
    bnb__breaker_free(b);
}

static void test_sliding_window_forgets(void **state)
{
    (void)state;
    bnb_breaker_t *b = make(50, 4, 4, 1000, 1);
    call(b, 1, 0);
    call(b, 1, 0);
    call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    call(b, 1, 0); /* S S F S: 25 % */
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    /* a long run of successes pushes the failure out of the window */
    for (int i = 0; i < 4; i++)
        call(b, 1, 0);
    /* window now S S S S: F -> S S S F (25 %), F -> S S F F (50 %) opens;
     * counted over the whole history it would be 3/10 = 30 % and stay closed */
    call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    call(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_OPEN);
    bnb__breaker_free(b);

    /* and old failures do not count: F F F S S S S S with window 4 */
    b = make(75, 4, 4, 1000, 1);
    call(b, 0, 0);
    call(b, 0, 0);
    call(b, 1, 0);
    call(b, 1, 0); /* 50 % < 75 % */
    call(b, 0, 0); /* window F S S F: 50 % (total history 3/5 = 60 %) */
    call(b, 0, 0); /* window S S F F: 50 % */
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_CLOSED);
    call(b, 0, 0); /* window S F F F: 75 % */
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_OPEN);
    bnb__breaker_free(b);
}

static void test_outcomes_while_open_ignored(void **state)
{
    (void)state;
    bnb_breaker_t *b = make(50, 2, 2, 1000, 1);
    /* two calls let through while closed; both fail; the second report lands after it opened */
    assert_int_equal(bnb__breaker_allow(b, 0), 1);
    assert_int_equal(bnb__breaker_allow(b, 0), 1);
    assert_int_equal(bnb__breaker_allow(b, 0), 1);
    bnb__breaker_record(b, 0, 0);
    bnb__breaker_record(b, 0, 0);
    assert_int_equal(bnb__breaker_state(b, 0), BNB_BREAKER_OPEN);
    bnb__breaker_record(b, 1, 10); /* a late success does not close it */
    assert_int_equal(bnb__breaker_state(b, 10), BNB_BREAKER_OPEN);
    assert_int_equal(bnb__breaker_retry_after_ms(b, 10), 990);
    bnb__breaker_free(b);
}

/* ---- thread-safety smoke ---------------------------------------------------- */

typedef struct worker {
    bnb_breaker_t *b;
    int id;
    atomic_long *allowed;
} worker_t;

static void *hammer(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 20000; i++) {
        int64_t now = i / 10; /* time moves on together in every thread */
        if (bnb__breaker_allow(w->b, now)) {
            atomic_fetch_add(w->allowed, 1);
            bnb__breaker_record(w->b, (i + w->id) % 3 != 0, now);
        }
        (void)bnb__breaker_state(w->b, now);
        (void)bnb__breaker_retry_after_ms(w->b, now);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    bnb_breaker_t *b = make(30, 20, 10, 50, 5);
    atomic_long allowed = 0;
    pthread_t t[4];
    worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){b, i, &allowed};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    /* one third failures against a 30 % threshold: it opened and refused some
     * calls, and it let calls through between the open periods */
    long a = atomic_load(&allowed);
    assert_true(a > 0);
    assert_true(a < 80000);
    /* still coherent: after the wait it is half-open or closed, permits bounded */
    int64_t later = 1000000;
    bnb_breaker_state_t s = bnb__breaker_state(b, later);
    assert_true(s == BNB_BREAKER_HALF_OPEN || s == BNB_BREAKER_CLOSED);
    if (s == BNB_BREAKER_HALF_OPEN) {
        int permits = 0;
        for (int i = 0; i < 20; i++)
            permits += bnb__breaker_allow(b, later);
        assert_in_range(permits, 0, 5);
    }
    bnb__breaker_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_closed_below_minimum_calls),
        cmocka_unit_test(test_opens_at_threshold),
        cmocka_unit_test(test_open_rejects_then_half_open),
        cmocka_unit_test(test_half_open_success_closes),
        cmocka_unit_test(test_half_open_failure_reopens),
        cmocka_unit_test(test_sliding_window_forgets),
        cmocka_unit_test(test_outcomes_while_open_ignored),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}

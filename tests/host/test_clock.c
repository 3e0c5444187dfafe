/* host/core/clock.c: the host clock tests move instead of sleeping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"

#include <errno.h>
#include <time.h>

static int calls;
static void *last_ud;

static void watcher(void *ud)
{
    calls++;
    last_ud = ud;
}

static void test_advance_moves_both_clocks(void **state)
{
    (void)state;
    int64_t m0 = bnb__mono_ms(), w0 = bnb__now_ms();
    bnb__clock_advance(3600 * 1000);
    int64_t m1 = bnb__mono_ms(), w1 = bnb__now_ms();
    assert_true(m1 - m0 >= 3600 * 1000 && m1 - m0 < 3600 * 1000 + 1000);
    assert_true(w1 - w0 >= 3600 * 1000 && w1 - w0 < 3600 * 1000 + 1000);
    bnb__clock_advance(-5); /* never backwards */
    assert_true(bnb__mono_ms() >= m1);
}

static void test_watchers_run_on_advance_until_unwatched(void **state)
{
    (void)state;
    int a, b;
    calls = 0;
    assert_int_equal(bnb__clock_watch(watcher, &a), 0);
    bnb__clock_advance(10);
    assert_int_equal(calls, 1);
    assert_ptr_equal(last_ud, &a);
    assert_int_equal(bnb__clock_watch(watcher, &b), 0);
    bnb__clock_advance(10);
    assert_int_equal(calls, 3);
    bnb__clock_unwatch(watcher, &a);
    bnb__clock_unwatch(watcher, &b);
    bnb__clock_advance(10);
    assert_int_equal(calls, 3);
    /* the table holds 8 */
    int u[9];
    for (int i = 0; i < 8; i++)
        assert_int_equal(bnb__clock_watch(watcher, &u[i]), 0);
    assert_int_equal(bnb__clock_watch(watcher, &u[8]), -1);
    for (int i = 0; i < 8; i++)
        bnb__clock_unwatch(watcher, &u[i]);
}

/* A wait for a moment of the host clock that an advance already passed ends
 * at once; one in the future waits in real time (here: 30 ms). */
static void test_wait_until_a_moment(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_condattr_t ca;
    pthread_cond_t cv;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&mu);
    int64_t until = bnb__mono_ms() + 60000;
    bnb__clock_advance(60000);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(bnb__clock_wait(&cv, &mu, until), ETIMEDOUT);
    assert_int_equal(bnb__clock_wait(&cv, &mu, bnb__mono_ms() + 30), ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 29 && ms < 2000);
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_advance_moves_both_clocks),
        cmocka_unit_test(test_watchers_run_on_advance_until_unwatched),
        cmocka_unit_test(test_wait_until_a_moment),
    };
    return cmocka_run_group_tests_name("host/clock", tests, NULL, NULL);
}

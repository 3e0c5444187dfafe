#include "clock.h"

#include <stdatomic.h>
#include <time.h>

static _Atomic int64_t g_advanced_ms;

static pthread_mutex_t g_watch_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void (*fn)(void *ud);
    void *ud;
} g_watch[8];

static int64_t real_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t bnb__now_ms(void)
{
    return real_ms(CLOCK_REALTIME) + atomic_load(&g_advanced_ms);
}

int64_t bnb__mono_ms(void)
{
    return real_ms(CLOCK_MONOTONIC) + atomic_load(&g_advanced_ms);
}

void bnb__clock_advance(int64_t ms)
{
    if (ms <= 0)
        return;
    atomic_fetch_add(&g_advanced_ms, ms);
    pthread_mutex_lock(&g_watch_mu);
    for (size_t i = 0; i < sizeof(g_watch) / sizeof(g_watch[0]); i++)
        if (g_watch[i].fn != NULL)
            g_watch[i].fn(g_watch[i].ud);
    pthread_mutex_unlock(&g_watch_mu);
}

int bnb__clock_watch(void (*fn)(void *ud), void *ud)
{
    int rc = -1;
    pthread_mutex_lock(&g_watch_mu);
    for (size_t i = 0; i < sizeof(g_watch) / sizeof(g_watch[0]) && rc != 0; i++)
        if (g_watch[i].fn == NULL) {
            g_watch[i].fn = fn;
            g_watch[i].ud = ud;
            rc = 0;
        }
    pthread_mutex_unlock(&g_watch_mu);
    return rc;
}

void bnb__clock_unwatch(void (*fn)(void *ud), void *ud)
{
    pthread_mutex_lock(&g_watch_mu);
    for (size_t i = 0; i < sizeof(g_watch) / sizeof(g_watch[0]); i++)
        if (g_watch[i].fn == fn && g_watch[i].ud == ud)
            g_watch[i].fn = NULL, g_watch[i].ud = NULL;
    pthread_mutex_unlock(&g_watch_mu);
}

int bnb__clock_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_ms)
{
    int64_t left = until_ms - bnb__mono_ms();
    if (left < 0)
        left = 0;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(left / 1000);
    until.tv_nsec += (long)(left % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(cv, mu, &until);
}

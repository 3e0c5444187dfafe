#include "breaker.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct bnb_breaker {
    pthread_mutex_t mu;
    bnb_breaker_config_t cfg;
    bnb_breaker_state_t state;
    unsigned char *ring; /* 1 = failure */
    int head, count, failures;
    int64_t opened_at;
    int half_permits, half_done, half_failures;
};

void bnb__breaker_config_default(bnb_breaker_config_t *c)
{
    c->failure_rate = 50;
    c->window = 100;
    c->minimum_calls = 100;
    c->wait_open_ms = 60000;
    c->half_open_calls = 10;
}

bnb_breaker_t *bnb__breaker_new(const bnb_breaker_config_t *c)
{
    bnb_breaker_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->cfg = *c;
    if (b->cfg.window < 1)
        b->cfg.window = 1;
    if (b->cfg.minimum_calls < 1)
        b->cfg.minimum_calls = 1;
    if (b->cfg.half_open_calls < 1)
        b->cfg.half_open_calls = 1;
    b->ring = calloc((size_t)b->cfg.window, 1);
    if (b->ring == NULL) {
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

void bnb__breaker_free(bnb_breaker_t *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->ring);
    free(b);
}

static void reset_window(bnb_breaker_t *b)
{
    memset(b->ring, 0, (size_t)b->cfg.window);
    b->head = b->count = b->failures = 0;
}

static void to_open(bnb_breaker_t *b, int64_t now)
{
    b->state = BNB_BREAKER_OPEN;
    b->opened_at = now;
    reset_window(b);
}

/* open -> half-open once the wait is over */
static void tick(bnb_breaker_t *b, int64_t now)
{
    if (b->state == BNB_BREAKER_OPEN && now - b->opened_at >= b->cfg.wait_open_ms) {
        b->state = BNB_BREAKER_HALF_OPEN;
        b->half_permits = b->cfg.half_open_calls;
        b->half_done = b->half_failures = 0;
    }
}

int bnb__breaker_allow(bnb_breaker_t *b, int64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    tick(b, now_ms);
    int ok = 0;
    if (b->state == BNB_BREAKER_CLOSED) {
        ok = 1;
    } else if (b->state == BNB_BREAKER_HALF_OPEN && b->half_permits > 0) {
        b->half_permits--;
        ok = 1;
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

void bnb__breaker_record(bnb_breaker_t *b, int success, int64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    if (b->state == BNB_BREAKER_CLOSED) {
        if (b->count == b->cfg.window) {
            b->failures -= b->ring[b->head];
            b->count--;
        }
        b->ring[b->head] = success ? 0 : 1;
        b->failures += !success;
        b->head = (b->head + 1) % b->cfg.window;
        b->count++;
        if (b->count >= b->cfg.minimum_calls && b->failures * 100 >= b->cfg.failure_rate * b->count)
            to_open(b, now_ms);
    } else if (b->state == BNB_BREAKER_HALF_OPEN) {
        b->half_done++;
        b->half_failures += !success;
        if (b->half_done >= b->cfg.half_open_calls) {
            if (b->half_failures * 100 >= b->cfg.failure_rate * b->half_done) {
                to_open(b, now_ms);
            } else {
                b->state = BNB_BREAKER_CLOSED;
                reset_window(b);
            }
        }
    }
    /* outcomes reported while OPEN (calls let through before it opened) are dropped */
    pthread_mutex_unlock(&b->mu);
}

bnb_breaker_state_t bnb__breaker_state(bnb_breaker_t *b, int64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    tick(b, now_ms);
    bnb_breaker_state_t s = b->state;
    pthread_mutex_unlock(&b->mu);
    return s;
}

int64_t bnb__breaker_retry_after_ms(bnb_breaker_t *b, int64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    tick(b, now_ms);
    int64_t r = 0;
    if (b->state == BNB_BREAKER_OPEN)
        r = b->cfg.wait_open_ms - (now_ms - b->opened_at);
    pthread_mutex_unlock(&b->mu);
    return r > 0 ? r : 0;
}

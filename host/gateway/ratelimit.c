/* Token buckets in a chained hash table with an LRU list for eviction. One
 * mutex: the critical section is a hash lookup and a few arithmetic ops. */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 255

typedef struct bucket {
    struct bucket *hnext;       /* hash chain */
    struct bucket *prev, *next; /* LRU list, head = most recent */
    uint64_t hash;
    double tokens;
    int64_t last_ms;
    size_t klen;
    char key[];
} bucket_t;

struct bnb_ratelimit {
    pthread_mutex_t mu;
    double rate_per_ms, burst;
    size_t max_keys, n, nslots;
    bucket_t **slots;
    bucket_t *head, *tail;
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

bnb_ratelimit_t *bnb__ratelimit_new(double rate_per_s, double burst, size_t max_keys)
{
    if (!(rate_per_s > 0) || !(burst >= 1) || !isfinite(rate_per_s) || !isfinite(burst))
        return NULL;
    bnb_ratelimit_t *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->rate_per_ms = rate_per_s / 1000.0;
    rl->burst = burst;
    rl->max_keys = max_keys ? max_keys : 100000;
    rl->nslots = 16;
    while (rl->nslots < rl->max_keys && rl->nslots < ((size_t)1 << 24))
        rl->nslots <<= 1;
    rl->slots = calloc(rl->nslots, sizeof *rl->slots);
    if (!rl->slots) {
        free(rl);
        return NULL;
    }
    pthread_mutex_init(&rl->mu, NULL);
    return rl;
}

void bnb__ratelimit_free(bnb_ratelimit_t *rl)
{
    if (!rl)
        return;
    for (bucket_t *b = rl->head, *nx; b; b = nx) {
        nx = b->next;
        free(b);
    }
    free(rl->slots);
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static void lru_unlink(bnb_ratelimit_t *rl, bucket_t *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        rl->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        rl->tail = b->prev;
    b->prev = b->next = NULL;
}

static void lru_push_front(bnb_ratelimit_t *rl, bucket_t *b)
{
    b->prev = NULL;
    b->next = rl->head;
    if (rl->head)
        rl->head->prev = b;
    rl->head = b;
    if (!rl->tail)
        rl->tail = b;
}

static void evict_tail(bnb_ratelimit_t *rl)
{
    bucket_t *b = rl->tail;
    if (!b)
        return;
    lru_unlink(rl, b);
    bucket_t **pp = &rl->slots[b->hash & (rl->nslots - 1)];
    while (*pp && *pp != b)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = b->hnext;
    rl->n--;
    free(b);
}

int bnb__ratelimit_take(bnb_ratelimit_t *rl, const char *key, int64_t now_ms, int64_t *retry_after_ms)
{
    if (retry_after_ms)
        *retry_after_ms = 0;
    if (!rl)
        return 1;
    if (!key)
        key = "";
    size_t klen = strnlen(key, KEY_MAX);
    uint64_t h = fnv1a(key, klen);
    int allowed;

    pthread_mutex_lock(&rl->mu);
    bucket_t *b = rl->slots[h & (rl->nslots - 1)];
    while (b && !(b->hash == h && b->klen == klen && memcmp(b->key, key, klen) == 0))
        b = b->hnext;
    if (b) {
        if (now_ms > b->last_ms) {
            b->tokens += (double)(now_ms - b->last_ms) * rl->rate_per_ms;
            if (b->tokens > rl->burst)
                b->tokens = rl->burst;
            b->last_ms = now_ms;
        }
        lru_unlink(rl, b);
    } else {
        b = malloc(sizeof *b + klen + 1);
        if (!b) { /* fail open: limiting is a protection, not a correctness rule */
            pthread_mutex_unlock(&rl->mu);
            return 1;
        }
        b->hash = h;
        b->klen = klen;
        memcpy(b->key, key, klen);
        b->key[klen] = '\0';
        b->tokens = rl->burst;
        b->last_ms = now_ms;
        b->prev = b->next = NULL;
        size_t slot = h & (rl->nslots - 1);
        b->hnext = rl->slots[slot];
        rl->slots[slot] = b;
        rl->n++;
        while (rl->n > rl->max_keys)
            evict_tail(rl);
    }
    lru_push_front(rl, b);
    if (b->tokens >= 1.0 - 1e-9) {
        b->tokens -= 1.0;
        if (b->tokens < 0)
            b->tokens = 0;
        allowed = 1;
    } else {
        allowed = 0;
        if (retry_after_ms) {
            double wait = ceil((1.0 - b->tokens) / rl->rate_per_ms - 1e-9);
            *retry_after_ms = wait < 1 ? 1 : (int64_t)wait;
        }
    }
    pthread_mutex_unlock(&rl->mu);
    return allowed;
}

size_t bnb__ratelimit_size(bnb_ratelimit_t *rl)
{
    if (!rl)
        return 0;
    pthread_mutex_lock(&rl->mu);
    size_t n = rl->n;
    pthread_mutex_unlock(&rl->mu);
    return n;
}

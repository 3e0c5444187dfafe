/*
 * plugins/common: the load - change - commit loop with bounded backoff, and
 * the one mapping of store errors to HTTP answers (see bnb_plugin_util.h).
 */
#include "bnb_plugin_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const bnb_util_retry_t bnb_util_retry_default = {
    .attempts = 50, .first_backoff_us = 100, .max_backoff_us = 10000, .sleep_us = NULL};

static void sleep_real(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* A per-thread xorshift generator: jitter only, not security. */
static uint64_t jitter_next(void)
{
    static __thread uint64_t s;
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&s;
        if (s == 0)
            s = 0x9e3779b97f4a7c15ull;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static long backoff_us(const bnb_util_retry_t *r, int lost)
{
    long d = r->first_backoff_us > 0 ? r->first_backoff_us : 1;
    for (int i = 1; i < lost && d < r->max_backoff_us; i++)
        d *= 2;
    if (d > r->max_backoff_us)
        d = r->max_backoff_us;
    if (d <= 1)
        return d;
    return d / 2 + (long)(jitter_next() % (uint64_t)(d - d / 2 + 1));
}

int bnb_util_retry(const bnb_util_retry_t *r, int (*attempt)(void *arg, int n), void *arg)
{
    if (!r)
        r = &bnb_util_retry_default;
    int tries = r->attempts > 0 ? r->attempts : 1;
    int rc = BNB_EEXIST;
    for (int n = 0; n < tries; n++) {
        if (n > 0) {
            long us = backoff_us(r, n);
            if (us > 0)
                (r->sleep_us ? r->sleep_us : sleep_real)(us);
        }
        rc = attempt(arg, n);
        if (rc != BNB_EEXIST)
            break;
    }
    return rc;
}

/* ---- the transaction of one attempt ---------------------------------------- */

void bnb_util_txn_set_doc(bnb_util_txn_t *t, json_t *doc)
{
    json_decref(t->doc);
    t->doc = doc;
}

int bnb_util_txn_event(bnb_util_txn_t *t, const char *topic, const char *type, const char *subject,
                       const char *correlation_id, json_t *data)
{
    if (!data)
        return BNB_ENOMEM;
    if (t->nevents >= BNB_UTIL_TXN_EVENTS) {
        json_decref(data);
        return BNB_EINVAL;
    }
    if (json_array_append_new(t->hold, data) != 0)
        return BNB_ENOMEM;
    t->events[t->nevents++] = (bnb_event_out_t){
        .topic = topic, .type = type, .subject = subject, .correlation_id = correlation_id, .data = data};
    return 0;
}

int bnb_util_txn_claim(bnb_util_txn_t *t, const char *key)
{
    json_t *k = key ? json_string(key) : NULL;
    if (!k)
        return key ? BNB_ENOMEM : BNB_EINVAL;
    if (json_array_append_new(t->hold, k) != 0)
        return BNB_ENOMEM;
    if (t->nclaims == t->capclaims) {
        size_t cap = t->capclaims ? t->capclaims * 2 : 16;
        const char **nc = realloc(t->claims, cap * sizeof *nc);
        if (!nc)
            return BNB_ENOMEM;
        t->claims = nc;
        t->capclaims = cap;
    }
    t->claims[t->nclaims++] = json_string_value(k);
    t->set_claims = 1;
    return 0;
}

void bnb_util_txn_claims_clear(bnb_util_txn_t *t)
{
    t->nclaims = 0;
    t->set_claims = 1;
}

typedef struct update {
    const bnb_host_api_t *h;
    bnb_store_t *st;
    const char *coll, *id;
    bnb_util_change_fn change;
    void *arg;
    json_t *out;
    int64_t new_version;
} update_t;

static int commit_txn(const bnb_host_api_t *h, bnb_store_t *st, bnb_util_txn_t *t, int64_t *nv)
{
    if (t->set_claims || t->commit2) {
        if (!BNB_HAS(h, store_commit2))
            return BNB_EINVAL;
        bnb_commit_t c = {.op = t->op,
                          .coll = t->coll,
                          .id = t->id,
                          .expect_version = t->version,
                          .body = t->doc,
                          .events = t->events,
                          .nevents = t->nevents,
                          .applied_event_id = t->applied_event_id,
                          .set_claims = t->set_claims,
                          .claims = (const char *const *)t->claims,
                          .nclaims = t->nclaims};
        return h->store_commit2(st, &c, nv);
    }
    bnb_write_t w = {.op = t->op,
                     .coll = t->coll,
                     .id = t->id,
                     .expect_version = t->version,
                     .body = t->doc,
                     .key1 = t->key1,
                     .key2 = t->key2};
    return h->store_commit(st, &w, t->events, t->nevents, t->applied_event_id, nv);
}

static int update_attempt(void *arg, int n)
{
    update_t *u = arg;
    bnb_util_txn_t t = {.coll = u->coll, .id = u->id, .attempt = n, .op = BNB_WRITE_PUT, .hold = json_array()};
    if (!t.hold)
        return BNB_ENOMEM;
    int rc = u->h->store_get(u->st, u->coll, u->id, &t.doc, &t.version);
    if (rc == BNB_ENOENT) {
        t.doc = NULL;
        t.version = 0;
        rc = 0;
    }
    if (rc == 0)
        rc = u->change(&t, u->arg);
    int64_t nv = t.version;
    if (rc == 0) {
        if ((t.op == BNB_WRITE_PUT && !json_is_object(t.doc)) || (t.op != BNB_WRITE_PUT && t.version == 0))
            rc = BNB_EINVAL;
        else
            rc = commit_txn(u->h, u->st, &t, &nv);
        if (t.op == BNB_WRITE_DELETE && rc == 0)
            bnb_util_txn_set_doc(&t, NULL);
    } else if (rc == BNB_UTIL_SKIP) {
        rc = 0;
    }
    if (rc == 0) {
        json_decref(u->out);
        u->out = t.doc;
        u->new_version = nv;
        t.doc = NULL;
    }
    json_decref(t.doc);
    json_decref(t.hold);
    free(t.claims);
    return rc;
}

int bnb_util_update(const bnb_host_api_t *h, bnb_store_t *st, const char *coll, const char *id,
                    bnb_util_change_fn change, void *arg, const bnb_util_retry_t *r, json_t **out, int64_t *new_version)
{
    update_t u = {.h = h, .st = st, .coll = coll, .id = id, .change = change, .arg = arg};
    if (out)
        *out = NULL;
    int rc = bnb_util_retry(r, update_attempt, &u);
    if (rc == 0) {
        if (out)
            *out = u.out;
        else
            json_decref(u.out);
        if (new_version)
            *new_version = u.new_version;
    } else {
        json_decref(u.out);
    }
    return rc;
}

/* ---- store errors as HTTP answers ------------------------------------------ */

int bnb_util_http_status(int rc)
{
    switch (rc) {
    case BNB_EINVAL:
        return 400;
    case BNB_EPERM:
        return 403;
    case BNB_ENOENT:
        return 404;
    case BNB_ETAKEN:
        return 409;
    case BNB_EEXIST:
    case BNB_EIO:
    case BNB_EAGAIN:
        return 503;
    case BNB_ETIMEDOUT:
        return 504;
    default:
        return 500;
    }
}

void bnb_util_respond_error(const bnb_host_api_t *h, bnb_req_t *req, int rc, const char *what)
{
    int status = bnb_util_http_status(rc);
    const char *why;
    const char *title;
    switch (status) {
    case 400:
        title = "Bad Request";
        why = "invalid input";
        break;
    case 403:
        title = "Forbidden";
        why = "not allowed";
        break;
    case 404:
        title = "Not Found";
        why = "not found";
        break;
    case 409:
        title = "Conflict";
        why = "already held by another document";
        break;
    case 503:
        title = "Service Unavailable";
        why = rc == BNB_EEXIST ? "busy with concurrent updates, retry" : "unavailable, retry later";
        break;
    case 504:
        title = "Gateway Timeout";
        why = "did not answer in time";
        break;
    default:
        title = "Internal Server Error";
        why = "failed";
        break;
    }
    if (status == 503)
        h->respond_header(req, "Retry-After", "1");
    h->respond_problem(req, status, title, "%s: %s (%d)", what ? what : "store", why, rc);
}

int bnb_util_each(const bnb_host_api_t *host, bnb_store_t *st, const char *coll, size_t page,
                  int (*fn)(void *arg, const json_t *row), void *arg, size_t *ok, size_t *failed)
{
    char *cursor = NULL;
    int rc;
    for (;;) {
        bnb_query_t q = {.coll = coll, .limit = page, .cursor = cursor};
        json_t *rows = NULL, *row;
        char *next = NULL;
        size_t i;
        rc = host->store_query(st, &q, &rows, &next);
        free(cursor);
        cursor = NULL;
        if (rc)
            break;
        json_array_foreach(rows, i, row)
        {
            if (fn(arg, row) == 0)
                (*ok)++;
            else
                (*failed)++;
        }
        json_decref(rows);
        if (!next)
            break;
        cursor = next;
    }
    free(cursor);
    return rc;
}

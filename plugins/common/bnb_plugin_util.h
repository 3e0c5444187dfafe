/*
 * Helpers shared by the plugins (plugins/common): a static library linked
 * into every plugin's shared module, hidden there (nothing here is exported).
 * It depends only on the plugin API and jansson; the host is passed in.
 */
#ifndef BNB_PLUGIN_UTIL_H
#define BNB_PLUGIN_UTIL_H

#include "bnb_plugin.h"

#include <jansson.h>

/* 1 when `s` is 1..64 characters of [A-Za-z0-9_-]. */
int bnb_util_id_ok(const char *s);

/* The card number of a request's or event's `card`: a string, or an object
 * whose `number` is a string. Borrowed, NULL when neither. */
const char *bnb_util_card_number(const json_t *card);
/* 1 when `number` is 12..19 ASCII digits. */
int bnb_util_card_valid(const char *number);

/* The JSON object body of `req` when the request has a user and every member
 * of the body is named in `known` (NULL-terminated). Otherwise answers 400 and
 * returns NULL: "body must be a JSON object", or "unknown field '<key>'", or,
 * for a member named in `server_owned` (NULL-terminated, may be NULL),
 * "field '<key>' is set by the server and cannot be given". */
const json_t *bnb_util_body(const bnb_host_api_t *h, bnb_req_t *req, const char *const *known,
                            const char *const *server_owned);

/* Pages (docs/api.md): 1 when every parameter name of the request's raw query
 * string is listed in `known` (NULL-terminated), else answers 400 "unknown
 * query parameter '<name>'" and returns 0 (needs ABI 1.2 req_query_string;
 * with an older host every name passes). */
int bnb_util_query_names_ok(const bnb_host_api_t *h, bnb_req_t *req, const char *const *known);
/* The `limit` query parameter: `def` when absent, else an integer 1..max; 0
 * after answering 400 naming 'limit'. */
size_t bnb_util_page_limit(const bnb_host_api_t *h, bnb_req_t *req, size_t def, size_t max);

/* Reject the event being handled with `why`; returns BNB_EINVAL. */
int bnb_util_reject(const bnb_host_api_t *h, bnb_ctx_t *ctx, const char *why);

/* The id, type (strings) and data (may be NULL) of the envelope `ev`, all
 * borrowed. 0, or BNB_EINVAL after rejecting the event ("envelope without
 * string id/type") when it is not an object with string id and type. */
int bnb_util_envelope(const bnb_host_api_t *h, bnb_ctx_t *ctx, const json_t *ev, const char **id, const char **type,
                      const json_t **data);

/* One route or subscription of a plugin (tables end with a zeroed entry). */
typedef struct bnb_util_route {
    const char *method;
    const char *pattern;
    bnb_role_t who;
    bnb_route_fn fn;
} bnb_util_route_t;

typedef struct bnb_util_sub {
    const char *topic;
    bnb_event_fn fn;
} bnb_util_sub_t;

/* Register `routes` then `subs` (either may be NULL), in order, stopping at
 * the first failure: 0 or the host's error code. */
int bnb_util_register(bnb_ctx_t *ctx, const bnb_host_api_t *h, const bnb_util_route_t *routes,
                      const bnb_util_sub_t *subs);

/* ---- load - change - commit, with retries ------------------------------- */

/* How bnb_util_update / bnb_util_retry retry an attempt that lost a race
 * (BNB_EEXIST: another writer committed the document in between). The sleep
 * before try k+1 is a random time in [d/2, d] with d = first_backoff_us * 2^k
 * capped at max_backoff_us ("equal jitter"), so racing writers spread out and
 * the whole loop is bounded: at most attempts * max_backoff_us. */
typedef struct bnb_util_retry {
    int attempts;              /* tries in all, >= 1 */
    long first_backoff_us;     /* sleep bound after the first lost race */
    long max_backoff_us;       /* cap of one sleep */
    void (*sleep_us)(long us); /* NULL: nanosleep (tests inject a fake clock) */
} bnb_util_retry_t;

/* 50 tries, 100 us doubling to at most 10 ms (<= 0.5 s of sleep in all). */
extern const bnb_util_retry_t bnb_util_retry_default;

/* Run attempt(arg) until it returns anything but BNB_EEXIST, sleeping with
 * `r`'s backoff (NULL: the default) in between; returns its last result
 * (BNB_EEXIST when every try lost). */
int bnb_util_retry(const bnb_util_retry_t *r, int (*attempt)(void *arg, int n), void *arg);

#define BNB_UTIL_TXN_EVENTS 8
/* What a change returns to commit nothing (bnb_util_update then returns 0). */
#define BNB_UTIL_SKIP 1

/* One attempt of bnb_util_update: the helper loads the document and calls the
 * change with it; the change edits `doc` in place (or replaces it with
 * bnb_util_txn_set_doc), sets `op` and adds events and claims. */
typedef struct bnb_util_txn {
    /* set by the helper */
    const char *coll, *id;
    json_t *doc;     /* the stored body (the txn owns it), NULL when absent */
    int64_t version; /* the stored version, 0 when absent */
    int attempt;     /* 0 for the first try */
    /* set by the change */
    bnb_write_op_t op; /* BNB_WRITE_PUT unless changed */
    const char *applied_event_id;
    const char *key1, *key2; /* ABI 1.0 lookup keys (store_commit only) */
    bnb_event_out_t events[BNB_UTIL_TXN_EVENTS];
    size_t nevents;
    int set_claims; /* set by bnb_util_txn_claim / _claims_clear: commit through store_commit2 */
    int commit2;    /* commit through store_commit2 even without claims (declared collections) */
    const char **claims;
    size_t nclaims, capclaims;
    json_t *hold; /* array: references kept until the attempt ends */
} bnb_util_txn_t;

/* Change callback: 0 commit, BNB_UTIL_SKIP commit nothing, < 0 give up with
 * that code. Called again, with the document loaded afresh, after a lost race:
 * it must not keep state between calls other than through `arg`. */
typedef int (*bnb_util_change_fn)(bnb_util_txn_t *t, void *arg);

/* Load coll/id, change it, commit it with expect_version = the loaded version
 * (0: create), and start again after a lost race (BNB_EEXIST), as `r` (NULL:
 * the default) says. A commit with claims, or with t->commit2 set, goes
 * through store_commit2 (ABI 1.1), any other through store_commit. Returns 0, BNB_EALREADY (the
 * applied_event_id was applied already: nothing changed), the change's own
 * negative code, or the store's (BNB_EEXIST when every try lost,
 * BNB_ETAKEN, BNB_EIO, ...). *out (may be NULL; caller json_decrefs) gets the
 * document as committed, or as loaded after a SKIP (NULL when absent);
 * *new_version (may be NULL) its version. */
int bnb_util_update(const bnb_host_api_t *h, bnb_store_t *st, const char *coll, const char *id,
                    bnb_util_change_fn change, void *arg, const bnb_util_retry_t *r, json_t **out,
                    int64_t *new_version);

/* Replace the document of `t` (stolen; NULL for none). */
void bnb_util_txn_set_doc(bnb_util_txn_t *t, json_t *doc);
/* Queue an event (data stolen, kept until the attempt ends). 0, BNB_ENOMEM,
 * or BNB_EINVAL beyond BNB_UTIL_TXN_EVENTS. */
int bnb_util_txn_event(bnb_util_txn_t *t, const char *topic, const char *type, const char *subject,
                       const char *correlation_id, json_t *data);
/* Add claim `key` (copied) to the set the document holds after the commit. */
int bnb_util_txn_claim(bnb_util_txn_t *t, const char *key);
/* The document holds no claim after the commit (releases all it held). */
void bnb_util_txn_claims_clear(bnb_util_txn_t *t);

/* ---- store errors as HTTP answers ---------------------------------------- */

/* The one HTTP status every plugin answers for a store (or call) error:
 *   BNB_EINVAL    400  invalid input (e.g. a malformed cursor)
 *   BNB_EPERM     403
 *   BNB_ENOENT    404
 *   BNB_ETAKEN    409  held by another document (a unique value or a claim:
 *                      the night is booked, the reservation is paid)
 *   BNB_EEXIST    503  a version conflict that outlived its retries: the
 *                      document is busy, not the client's fault (Retry-After: 1)
 *   BNB_EIO       503  the database failed or is unreachable (Retry-After: 1)
 *   BNB_EAGAIN    503  unavailable right now (breaker open, draining)
 *   BNB_ETIMEDOUT 504  the database or service did not answer in time
 *   anything else 500 (BNB_ENOMEM, unknown codes) */
int bnb_util_http_status(int rc);
/* Answer `req` with bnb_util_http_status(rc) as problem+json; the detail names
 * `what` (e.g. "reservation store") and the code. 503 adds Retry-After: 1. */
void bnb_util_respond_error(const bnb_host_api_t *h, bnb_req_t *req, int rc, const char *what);

/* Walk every document of `coll`, `page` per keyset-paged query, calling
 * fn(arg, row) on each row ({"id","version","body"}, borrowed): *ok counts the
 * rows fn answered 0, *failed the others. Returns 0, or the error of the
 * query that stopped the walk. */
int bnb_util_each(const bnb_host_api_t *host, bnb_store_t *st, const char *coll, size_t page,
                  int (*fn)(void *arg, const json_t *row), void *arg, size_t *ok, size_t *failed);

#endif

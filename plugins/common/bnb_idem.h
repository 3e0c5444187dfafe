/*
 * Safe retries with the Idempotency-Key request header (issue 16; IETF draft
 * "The Idempotency-Key HTTP Header Field", Stripe's semantics), one helper for
 * every route that changes state (plugins/common, hidden in each module).
 *
 * A plugin wraps its host table once in init and runs each such route through
 * bnb_idem_run:
 *
 *     static const bnb_host_api_t *H;
 *     static void on_book_run(bnb_ctx_t *ctx, bnb_req_t *req) { ... H->... ; bnb_idem_rid(H, id); ... }
 *     static void on_book(bnb_ctx_t *ctx, bnb_req_t *req)
 *     { bnb_idem_run(ctx, req, "POST /reservations", on_book_run, book_recover); }
 *     init: H = bnb_idem_host(host); rc = bnb_idem_init(ctx);
 *     config: { ..., BNB_IDEM_CONFIG, {NULL} }
 *
 * Store: one document per (user, key) in the plugin's own store, collection
 * `idem` (declared: `exp`, indexed), id = hex SHA-256 of user and key:
 *   {rid, h, st, lease, exp, status?, headers?: [{n, v}], body?: "<JSON text>"}
 *   rid   the id of the resource the request creates (bnb_idem_rid), chosen
 *         before the first run and kept by every retry: the effect's document
 *         IS the record of the effect (a create commits with expect_version 0
 *         under rid, so two runs of one key can never create two resources)
 *   h     SHA-256 of rid (salt), the route, its {id} and the canonical JSON
 *         body: another request under the same key is a 422
 *   st    "run" while a run holds the lease (until `lease`, ms), "done" with
 *         the stored answer (status, headers, body) once answered below 500,
 *         "free" after a 5xx answer (the next retry runs again)
 *   exp   when the key is forgotten (idempotency_ttl_s after its first use)
 * A retry: "done" replays the answer with `Idempotent-Replayed: true`; "run"
 * with a live lease is a 409 (problem, Retry-After: 1); "run" with a lease
 * that ran out (the first run crashed, e.g. between its commit and its
 * answer) or "free" takes the lease over (a versioned commit: one winner) and
 * first asks the route's `recover` whether the resource `rid` exists; if so,
 * recover answers from it (the effect committed: nothing is done again),
 * else the route runs again. The answer is stored (commit of the idem
 * document) before the host sends it. Expired documents are overwritten when
 * their key comes back and deleted by new keys (one new key in 8 deletes up
 * to 16 through the index on `exp`), so the collection holds about rate x ttl
 * documents whatever the history. Every decision is a versioned commit in the store: two processes of
 * a service behave as one.
 */
#ifndef BNB_IDEM_H
#define BNB_IDEM_H

#include "bnb_plugin.h"

/* Config items of a plugin using the helper (append to its config map). */
#define BNB_IDEM_CONFIG                                                                                                \
    {"idempotency_ttl_s", BNB_CFG_INT, "86400",                                                                        \
     "how long an Idempotency-Key and its stored answer are kept (seconds, 60..2592000)"},                             \
        {"idempotency_lease_s", BNB_CFG_INT, "30",                                                                     \
         "how long a request with an Idempotency-Key counts as in progress (409) before a retry may take it "          \
         "over, e.g. after a crash (seconds, 1..3600)"},                                                               \
        {"test.idempotency_abort_key", BNB_CFG_STRING, "",                                                             \
         "tests only: a request whose Idempotency-Key starts with this aborts the process right after its first "      \
         "commit"},                                                                                                    \
    {                                                                                                                  \
        "test.idempotency_hold_key", BNB_CFG_STRING, "",                                                               \
            "tests only: a request whose Idempotency-Key starts with this waits 3 s after its first commit"            \
    }

#define BNB_IDEM_HEADER   "Idempotency-Key"
#define BNB_IDEM_REPLAYED "Idempotent-Replayed"
#define BNB_IDEM_KEY_MAX  255
#define BNB_IDEM_COLL     "idem"

/* The host table the plugin uses from now on (a copy of `host` whose
 * respond_* record the answer of a request run by bnb_idem_run, and whose
 * store_commit/store_commit2 run the test hooks). Static storage of the
 * module; call once, in init. */
const bnb_host_api_t *bnb_idem_host(const bnb_host_api_t *host);

/* Declare the `idem` collection in the plugin's store and read the config
 * (init, after bnb_idem_host). 0 or the store's error. */
int bnb_idem_init(bnb_ctx_t *ctx);

/* After a crash: answer `req` from the resource `rid` that an earlier run of
 * this key created, and return 1; 0 when there is none (the route runs). */
typedef int (*bnb_idem_recover_fn)(bnb_ctx_t *ctx, bnb_req_t *req, const char *rid);

/* Run route `fn` for `req` under its Idempotency-Key (none: just run it).
 * `scope` names the route ("POST /reservations"); recover may be NULL (the
 * route is safe to run again). A malformed key is a 400 naming the header. */
void bnb_idem_run(bnb_ctx_t *ctx, bnb_req_t *req, const char *scope, bnb_route_fn fn, bnb_idem_recover_fn recover);

/* The id of the resource the running request creates: its key's rid inside
 * bnb_idem_run with a key, else a fresh UUID from the host. */
void bnb_idem_rid(const bnb_host_api_t *h, char out[37]);

/* 1 when `key` (borrowed) is a valid header value: 1..255 characters of
 * A-Z a-z 0-9 and - _ . : ~ + = and slash, or that inside double quotes (a structured
 * field string). *start and *len give the key without its quotes. */
int bnb_idem_key_ok(const char *key, const char **start, size_t *len);

#endif

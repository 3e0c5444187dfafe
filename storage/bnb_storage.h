/*
 * BearBnB storage: one interface, three backends (sqlite, mysql, mongo).
 *
 * The host opens one store per plugin and hands plugins the opaque
 * bnb_store_t; plugins reach it only through bnb_host_api_t (store_get,
 * store_list, store_commit). The host itself uses the outbox and dead-letter
 * calls below for the relay and the consumers.
 *
 * Every call here is BLOCKING and thread-safe: the host calls it only from
 * worker threads (uv_queue_work), never on the event loop. A backend keeps a
 * pool of connections (one per concurrently calling thread).
 *
 * Guarantees every backend gives (checked by tests/storage/test_contract.c):
 *  - commit() changes one document, records the applied-event mark and queues
 *    the outbox entries atomically: all or nothing.
 *  - expect_version: 0 = create only (BNB_EEXIST if present), >0 = compare and
 *    swap (BNB_EEXIST on mismatch, BNB_ENOENT if absent), -1 = unconditional.
 *    Versions start at 1 and go up by one per commit of that document
 *    (TOUCH commits bump the version too).
 *  - applied_event_id: BNB_EALREADY, and nothing changes, when that id was
 *    already recorded for that (coll, id).
 *  - outbox_fetch returns pending entries of one document in commit order,
 *    and entries of a store in commit order where the backend can (SQL).
 *  - DELETE keeps queued outbox entries of the deleted document until acked.
 */
#ifndef BNB_STORAGE_H
#define BNB_STORAGE_H

#include "bnb_plugin.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Options for opening a store. Strings are borrowed for the call. */
typedef struct bnb_storage_config {
    const char *backend; /* "sqlite" (default), "mysql", "mongo" */
    const char *name;    /* plugin name: table/collection prefix or db name */
    const char *path;    /* sqlite: database file path */
    const char *url;     /* mysql: mysql://user:pass@host:port/db
                          * mongo: mongodb://host:port/db */
    int pool_size;       /* max connections, 0 = backend default */
} bnb_storage_config_t;

/* One outbox entry ready to publish. */
typedef struct bnb_outbox_entry {
    char *event_id; /* envelope id */
    char *topic;
    char *key;     /* partition key (subject) */
    char *payload; /* the JSON envelope */
} bnb_outbox_entry_t;

/* One event to queue in a commit (envelope already built by the host). */
typedef struct bnb_outbox_new {
    const char *event_id;
    const char *topic;
    const char *key;
    const char *payload;
} bnb_outbox_new_t;

typedef struct bnb_storage_ops bnb_storage_ops_t;

/* Every backend's store begins with this header. */
struct bnb_store {
    const bnb_storage_ops_t *ops;
};

struct bnb_storage_ops {
    const char *name;
    /* errbuf gets a one-line reason on failure. */
    int (*open)(const bnb_storage_config_t *cfg, bnb_store_t **out, char *errbuf, size_t errlen);
    void (*close)(bnb_store_t *st);
    /* Reachable and usable (readiness). */
    int (*ping)(bnb_store_t *st);

    int (*get)(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version);
    int (*list)(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out);
    int (*commit)(bnb_store_t *st, const bnb_write_t *w, const bnb_outbox_new_t *events, size_t nevents,
                  const char *applied_event_id, int64_t *new_version);

    /* Up to `max` pending entries (caller frees with bnb_outbox_entries_free). */
    int (*outbox_fetch)(bnb_store_t *st, size_t max, bnb_outbox_entry_t **out, size_t *n);
    /* Mark these entries published (they are not returned again). */
    int (*outbox_ack)(bnb_store_t *st, const char *const *event_ids, size_t n);

    /* Dead letters: park a poison event with its reason; count them. */
    int (*park)(bnb_store_t *st, const char *consumer, const char *event_json, const char *reason);
    int (*dead_count)(bnb_store_t *st, int64_t *count);

    /* -- storage v2 (plugin ABI 1.1): see bnb_coll_def_t, bnb_query_t and
     * bnb_commit_t in bnb_plugin.h for the semantics every backend gives. -- */
    int (*define)(bnb_store_t *st, const bnb_coll_def_t *colls, size_t ncolls);
    int (*query)(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next);
    /* c->events is ignored: the host passes the built envelopes in `events`. */
    int (*commit2)(bnb_store_t *st, const bnb_commit_t *c, const bnb_outbox_new_t *events, size_t nevents,
                   int64_t *new_version);

    /* -- plugin ABI 1.4: store_get_many (semantics in bnb_plugin.h). May be
     * NULL: the host then calls get once per id. -- */
    int (*get_many)(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, json_t **items);
};

/* Backends compiled into this build. */
extern const bnb_storage_ops_t bnb_storage_sqlite;
#ifdef BNB_HAVE_MYSQL
extern const bnb_storage_ops_t bnb_storage_mysql;
#endif
#ifdef BNB_HAVE_MONGO
extern const bnb_storage_ops_t bnb_storage_mongo;
#endif

/* The backend called `name`, or NULL. */
const bnb_storage_ops_t *bnb_storage_find(const char *name);
/* Open with cfg->backend (NULL = sqlite). */
int bnb_storage_open(const bnb_storage_config_t *cfg, bnb_store_t **out, char *errbuf, size_t errlen);
void bnb_storage_close(bnb_store_t *st);
void bnb_outbox_entries_free(bnb_outbox_entry_t *entries, size_t n);

/* Deferred durability for the calling thread (group commit over a batch):
 * between begin and end, a commit of a backend that supports it (sqlite)
 * returns once written but before its fsync; end makes every such commit
 * durable (one fsync per store touched) and returns 0, or the first error
 * (then some of them may not be on disk: redo the batch). The outbox relay
 * brackets each batch of in-process deliveries with them, so the consumers
 * pay one fsync per batch instead of one per event, and acknowledge the
 * batch only once its effects are on disk. Not nested. A backend may also
 * group the deferred commits of one store into one transaction (sqlite does,
 * see its "batches"), committed at the latest by end. */
void bnb_storage_defer_begin(void);
int bnb_storage_defer_end(void);
/* For backends: inside begin/end, remember that `st` must be flushed up to
 * `upto` (backend-defined) and return 1; otherwise (or when too many stores
 * are pending) return 0 and the caller makes its commit durable itself. */
int bnb__storage_defer(bnb_store_t *st, int (*flush)(bnb_store_t *st, uint64_t upto), uint64_t upto);

#ifdef __cplusplus
}
#endif
#endif

/*
 * BearBnB plugin API — the ONE header a plugin includes.
 *
 * A plugin is a shared object that exports exactly one data symbol:
 *
 *     const bnb_plugin_t bnb_plugin = { BNB_ABI_VERSION, "room", ... };
 *
 * The host checks `abi_version`, calls `init` with an append-only table of
 * host functions (bnb_host_api_t), then `start`; on shutdown `stop`, `fini`.
 *
 * Threads (what may run at the same time):
 *   - `init`, `start`, `stop`, `fini` run on the main thread, one plugin after
 *     another, never two at once. No handler of the plugin runs during `init`
 *     or after `stop` has been called (the host drains requests and events
 *     first); `fini` runs last.
 *   - Event handlers may run before `start` returns (a Kafka consumer can
 *     deliver as soon as its channel connects): set up in `init` everything a
 *     handler needs.
 *   - Route handlers and event handlers of ONE plugin run concurrently on
 *     several threads (the worker pool, a Kafka consumer thread, and during
 *     shutdown's last outbox flush the main thread): the same handler may
 *     run on several requests or events at once, and the same event may be
 *     delivered twice (at least once). They never run on the event loop, so
 *     they may block in the store and call functions below.
 *   - host->call to a plugin loaded in the same process runs that plugin's
 *     route handler on the caller's thread, inside the call: never hold a
 *     lock across host->call.
 *   - `userdata` is shared by all of these: after `init` treat it as
 *     read-only, or guard what changes with your own locks or atomics. Keep
 *     per-request state on the stack, not in userdata.
 *
 * Contexts: the bnb_ctx_t given to init/start/stop/fini is the plugin
 * instance's and lives as long as the plugin. Each route or event handler
 * invocation gets a bnb_ctx_t of its own, for that one request or event:
 * event_reject and set_correlation act on the call whose context they are
 * given, and every other function sees the same plugin through it. A
 * handler's context is valid only until the handler returns; do not keep it
 * (in userdata, another thread, a later call).
 *
 * Ownership words used on every declaration:
 *   borrowed        valid only for the duration of the call, do not free
 *   owned by req    freed by the host when the request is answered
 *   caller frees    with the function named next to it (json_decref, free)
 *
 * No h2o, libuv, librdkafka, mongoc or mariadb type crosses this boundary.
 * JSON values are jansson `json_t` (a plain data library).
 *
 * Error codes: functions return 0 (BNB_OK) or a negative BNB_E* code.
 */
#ifndef BNB_PLUGIN_H
#define BNB_PLUGIN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version = major << 16 | minor. The major changes on any incompatible
 * change (the host refuses another major). The minor grows when members are
 * appended to bnb_host_api_t (never reordered or removed): the host accepts a
 * plugin built against an older or equal minor of its major. A plugin built
 * against a newer minor than the host's must check with BNB_HAS() before
 * calling a function appended after the host's minor. */
#define BNB_ABI_MAJOR       1u
#define BNB_ABI_MINOR       4u
#define BNB_ABI_MAKE(M, m)  (((uint32_t)(M) << 16) | (uint32_t)(m))
#define BNB_ABI_VERSION     BNB_ABI_MAKE(BNB_ABI_MAJOR, BNB_ABI_MINOR)
#define BNB_ABI_MAJOR_OF(v) ((uint32_t)(v) >> 16)
#define BNB_ABI_MINOR_OF(v) ((uint32_t)(v)&0xffffu)

enum {
    BNB_OK = 0,
    BNB_EPERM = -1,       /* not allowed */
    BNB_ENOENT = -2,      /* no such document / route / service */
    BNB_EIO = -5,         /* backend failure (transient, retried) */
    BNB_EAGAIN = -11,     /* unavailable right now (breaker open, draining) */
    BNB_ENOMEM = -12,     /* out of memory */
    BNB_EEXIST = -17,     /* version conflict / already exists */
    BNB_EINVAL = -22,     /* invalid input; for an event handler: poison, park it */
    BNB_EALREADY = -114,  /* this event was already applied to that document */
    BNB_ETIMEDOUT = -110, /* a call ran past its timeout */
    BNB_ETAKEN = -73      /* since 1.1: a unique value or a claim is held by another document */
};

typedef struct bnb_ctx bnb_ctx_t;       /* one loaded plugin instance (opaque) */
typedef struct bnb_req bnb_req_t;       /* one HTTP request being handled (opaque) */
typedef struct bnb_store bnb_store_t;   /* the plugin's own store (opaque) */
typedef struct bnb_stream bnb_stream_t; /* since 1.3: a streamed answer (opaque) */

/* ---- configuration declared by the plugin ------------------------------ */

typedef enum { BNB_CFG_STRING = 1, BNB_CFG_INT, BNB_CFG_BOOL } bnb_cfg_type_t;

/* A plugin's config map, terminated by an item whose name is NULL. Keys are
 * read from the YAML section named after the plugin (`room: {key: value}`)
 * and from the environment variable BEARBNB_<PLUGIN>_<NAME> (upper case,
 * '.' -> '_'). Keys not declared here are configuration errors. */
typedef struct bnb_cfg_item {
    const char *name;
    bnb_cfg_type_t type;
    const char *default_value; /* textual default, may be NULL */
    const char *help;
} bnb_cfg_item_t;

/* ---- handlers ------------------------------------------------------------ */

/* An HTTP route handler. Runs on a worker thread (concurrently with other
 * handlers of the plugin, see "Threads" above). It must answer with exactly
 * one of host->respond_json / host->respond_problem / host->respond_empty
 * before returning; returning without an answer gives a 500. `ctx` is this
 * request's context, valid until the handler returns. */
typedef void (*bnb_route_fn)(bnb_ctx_t *ctx, bnb_req_t *req);

/* An event handler. Runs on a worker thread with the event envelope
 * (borrowed): {id, type, source, subject, correlationId, time, data}.
 * Return 0 (or BNB_EALREADY) when the effect is stored; BNB_EINVAL when the
 * event can never be applied (it is parked in the dead-letter store with the
 * reason given by host->event_reject, or a generic one); any other negative
 * code to have it redelivered later. Runs concurrently with other handlers of
 * the plugin (see "Threads" above); `ctx` is this delivery's context, valid
 * until the handler returns. */
typedef int (*bnb_event_fn)(bnb_ctx_t *ctx, const json_t *event);

/* Who may call a route. */
typedef enum {
    BNB_ROLE_ANYONE = 0, /* no token needed */
    BNB_ROLE_USER,       /* any valid token */
    BNB_ROLE_HOST,       /* token with role "host" */
    BNB_ROLE_GUEST,      /* token with role "guest" */
    BNB_ROLE_SERVICE     /* since ABI 1 (appended): only another service, through
                          * host->call (in-process, or over HTTP signed as a
                          * service call); never a client, not even through the
                          * gateway. The caller's identity is still forwarded. */
} bnb_role_t;

/* ---- storage ------------------------------------------------------------ */

typedef enum {
    BNB_WRITE_PUT = 1, /* create or replace the document body */
    BNB_WRITE_DELETE,  /* remove the document */
    BNB_WRITE_TOUCH    /* body unchanged: only check the version, record the
                        * applied event id and queue the events */
} bnb_write_op_t;

/* One document write. A commit changes exactly one document atomically
 * together with its outgoing events and its applied-event mark (that is what
 * every backend, MongoDB included, can do without transactions). */
typedef struct bnb_write {
    bnb_write_op_t op;
    const char *coll;        /* collection name, [a-z_]+ */
    const char *id;          /* document id */
    int64_t expect_version;  /* 0: must not exist; >0: must be this version;
                              * -1: any (last writer wins) */
    const json_t *body;      /* borrowed; object; ignored for DELETE/TOUCH */
    const char *key1, *key2; /* secondary lookup keys (list by them), or NULL */
} bnb_write_t;

/* One event to publish after the commit (transactional outbox). The host
 * builds the envelope: id (UUIDv4), source (plugin name), time, and the
 * correlationId / traceparent of the current request or event when not given. */
typedef struct bnb_event_out {
    const char *topic;          /* "bearbnb.room", ... */
    const char *type;           /* "RoomRegistered", ... */
    const char *subject;        /* aggregate id; also the partition key */
    const char *correlation_id; /* reservation id where there is one, or NULL */
    const json_t *data;         /* borrowed */
} bnb_event_out_t;

/* ---- storage, since ABI 1.1: declared collections, queries, claims ------ */

/* A plugin declares (in init, before start) the collections it queries by
 * anything but id. Each declared field is a top-level member of the document
 * body that the backend keeps as a real column (SQL) or a real BSON field
 * (MongoDB) and can index. A document whose body lacks a declared field, or
 * holds another JSON type, stores NULL there (such a document never matches a
 * condition on that field). Collections not declared still work through
 * store_get / store_commit / store_list (ABI 1.0). */
typedef enum { BNB_FIELD_STR = 1, BNB_FIELD_INT } bnb_field_type_t;

typedef struct bnb_field_def {
    const char *name; /* [a-zA-Z][a-zA-Z0-9_]*, a top-level member of the body */
    bnb_field_type_t type;
} bnb_field_def_t;

#define BNB_INDEX_MAX_FIELDS 4

/* An index on 1..4 declared fields, in that order (equality fields first,
 * then the range / order field). `unique`: no two documents of the collection
 * may have equal values in all these fields; a commit that would break it
 * fails with BNB_ETAKEN and changes nothing. Every field of a unique index
 * must be present in every document of the collection. */
typedef struct bnb_index_def {
    const char *fields[BNB_INDEX_MAX_FIELDS + 1]; /* NULL-terminated */
    int unique;
} bnb_index_def_t;

typedef struct bnb_coll_def {
    const char *name; /* [a-z_]+ */
    const bnb_field_def_t *fields;
    size_t nfields;
    const bnb_index_def_t *indexes;
    size_t nindexes;
} bnb_coll_def_t;

typedef enum { BNB_Q_EQ = 1, BNB_Q_LT, BNB_Q_LE, BNB_Q_GT, BNB_Q_GE } bnb_q_op_t;

/* One condition on a declared field: `str` for a string field, else `num`. */
typedef struct bnb_cond {
    const char *field;
    bnb_q_op_t op;
    const char *str;
    int64_t num;
} bnb_cond_t;

/* One page of a collection: the documents matching every condition, ordered
 * by `order_by` (a declared field; NULL orders by id) then id, ascending or
 * descending, at most `limit` (1..1000) of them, starting after `cursor`
 * (NULL for the first page; else the `next` of the previous page of the same
 * query). Keyset pagination: a page costs the same however many documents
 * precede it, and walking the cursors returns each document once even while
 * documents are added. Declare an index whose fields are the equality fields
 * then the order field, so that the page is served from it. */
typedef struct bnb_query {
    const char *coll;
    const bnb_cond_t *conds;
    size_t nconds;
    const char *order_by;
    int descending;
    size_t limit;
    const char *cursor;
} bnb_query_t;

/* One commit (since 1.1): the ABI 1.0 write with its events and applied mark,
 * plus claims. A claim is a string key, unique in the whole store, held by the
 * document that commits it (e.g. "night|<roomId>|2027-07-01"): `claims` is the
 * complete set the document holds after the commit (claims it held before and
 * that are not listed are released; a DELETE releases all). A key held by
 * another document fails the commit with BNB_ETAKEN and changes nothing. With
 * `set_claims` 0 the document's claims are left as they are. Claims are what
 * keeps two processes from booking the same night, on every backend. */
typedef struct bnb_commit {
    bnb_write_op_t op;
    const char *coll;
    const char *id;
    int64_t expect_version; /* as bnb_write_t */
    const json_t *body;     /* borrowed; ignored for DELETE/TOUCH */
    const bnb_event_out_t *events;
    size_t nevents;
    const char *applied_event_id; /* or NULL */
    int set_claims;
    const char *const *claims;
    size_t nclaims;
} bnb_commit_t;

/* ---- the host function table (append-only, grouped by version) ---------- */

typedef struct bnb_host_api {
    uint32_t abi_version; /* BNB_ABI_VERSION of the host */
    size_t size;          /* sizeof(bnb_host_api_t) of the host */

    /* -- since ABI 1: registration (init only) -- */

    /* Register `method` (GET, POST, PATCH, PUT, DELETE) on `pattern`, whose
     * segments may be `{name}` parameters, e.g. "/rooms/{id}/reviews". */
    int (*route)(bnb_ctx_t *ctx, const char *method, const char *pattern, bnb_role_t who, bnb_route_fn fn);
    /* Consume every event of `topic` with `fn`. */
    int (*subscribe)(bnb_ctx_t *ctx, const char *topic, bnb_event_fn fn);
    /* Plugin-private state pointer. */
    void (*set_userdata)(bnb_ctx_t *ctx, void *data);
    void *(*userdata)(bnb_ctx_t *ctx);
    /* Value of a declared config key (borrowed, lives as long as ctx). */
    const char *(*config)(bnb_ctx_t *ctx, const char *key);
    const char *(*name)(bnb_ctx_t *ctx);

    /* -- since ABI 1: requests (inside a route handler) -- */

    const char *(*req_method)(bnb_req_t *req);                   /* borrowed */
    const char *(*req_param)(bnb_req_t *req, const char *name);  /* path param, borrowed */
    const char *(*req_query)(bnb_req_t *req, const char *name);  /* decoded query value or NULL */
    const json_t *(*req_body)(bnb_req_t *req);                   /* parsed JSON or NULL, borrowed */
    const char *(*req_user)(bnb_req_t *req);                     /* verified `sub` or NULL */
    const char *(*req_role)(bnb_req_t *req);                     /* "host"/"guest" or NULL */
    const char *(*req_header)(bnb_req_t *req, const char *name); /* borrowed or NULL */
    /* Answer. `body` is stolen (the host decrefs it). respond_json with a
     * status >= 400 and a body that is a problem object (string `type` and
     * `title`, integer `status` equal to the answer's) is sent as
     * application/problem+json: a problem with extra members (e.g. the
     * `reservationId` of a 402). */
    void (*respond_json)(bnb_req_t *req, int status, json_t *body);
    void (*respond_problem)(bnb_req_t *req, int status, const char *title, const char *detail_fmt, ...)
        __attribute__((format(printf, 4, 5)));
    void (*respond_empty)(bnb_req_t *req, int status);
    void (*respond_header)(bnb_req_t *req, const char *name, const char *value); /* before respond_* */

    /* -- since ABI 1: storage (worker threads only) -- */

    bnb_store_t *(*store)(bnb_ctx_t *ctx);
    /* *body: caller frees with json_decref. BNB_ENOENT when absent. */
    int (*store_get)(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version);
    /* Documents of `coll` whose key1 (which=1) or key2 (which=2) equals
     * `value`; which=0 lists the whole collection. *out: array of
     * {"id","version","body"}, caller frees with json_decref. */
    int (*store_list)(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out);
    /* Apply `w` and queue `events` atomically. `applied_event_id` (or NULL)
     * marks the event this commit applies: BNB_EALREADY when that event was
     * already applied to this document, BNB_EEXIST on a version mismatch.
     * On success *new_version (if not NULL) is the document's new version. */
    int (*store_commit)(bnb_store_t *st, const bnb_write_t *w, const bnb_event_out_t *events, size_t nevents,
                        const char *applied_event_id, int64_t *new_version);

    /* -- since ABI 1: events -- */

    /* Inside an event handler, with the handler's own ctx: the reason recorded
     * for this delivery when the handler returns BNB_EINVAL. Does nothing with
     * another context (the instance's, another call's). */
    void (*event_reject)(bnb_ctx_t *ctx, const char *reason_fmt, ...) __attribute__((format(printf, 2, 3)));

    /* -- since ABI 1: synchronous calls to another service -- */

    /* Call `service` (a plugin name) with a timeout, through its circuit
     * breaker. In-process when that plugin is loaded here, over HTTP
     * otherwise. The caller's identity and correlation id are forwarded.
     * Returns 0 with *status and *resp (caller frees with json_decref, may be
     * NULL) when the service answered; BNB_EAGAIN when the breaker is open or
     * the service is unreachable/failing (take the fallback);
     * BNB_ETIMEDOUT on timeout. */
    int (*call)(bnb_ctx_t *ctx, const char *service, const char *method, const char *path, const json_t *body,
                int *status, json_t **resp);

    /* -- since ABI 1: observability -- */

    /* level: "debug","info","warn","error". One JSON line with plugin name,
     * request id and correlation id of the current request/event. */
    void (*log)(bnb_ctx_t *ctx, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    /* Add `delta` to counter bearbnb_<plugin>_<name>_total. */
    void (*count)(bnb_ctx_t *ctx, const char *name, double delta);
    /* Set the correlation id of the request or event whose handler got `ctx`
     * (e.g. once the reservation id is known): later log lines, calls and the
     * events committed in that handler carry it. Copied. Does nothing with the
     * instance's context. */
    void (*set_correlation)(bnb_ctx_t *ctx, const char *correlation_id);
    /* Fill `out` (37 bytes) with a new random UUID. */
    void (*uuid)(char out[37]);
    /* Current time, milliseconds since the epoch (UTC). */
    int64_t (*now_ms)(void);

    /* -- since ABI 1.1: storage v2 (see bnb_coll_def_t, bnb_query_t, bnb_commit_t) -- */

    /* Declare collections (init only; `colls` borrowed for the call): creates
     * their tables/columns/indexes in the plugin's store. Declaring again the
     * same definition is a no-op; a field or index added later is added. */
    int (*store_define)(bnb_ctx_t *ctx, const bnb_coll_def_t *colls, size_t ncolls);
    /* One page. *items: array of {"id","version","body"}, caller frees with
     * json_decref; *next: the cursor of the next page or NULL when this was the
     * last, caller frees with free(). BNB_EINVAL for a malformed or foreign
     * cursor, an undeclared field, or a condition of the wrong type. */
    int (*store_query)(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next);
    /* Apply `c` atomically (document, events, applied mark, claims). Returns as
     * store_commit, plus BNB_ETAKEN (a unique index or a claim). */
    int (*store_commit2)(bnb_store_t *st, const bnb_commit_t *c, int64_t *new_version);

    /* -- since ABI 1.2: requests -- */

    /* The raw query string of the request (after '?', not decoded), or NULL
     * when there is none; borrowed. For a plugin that validates every
     * parameter (unknown names, broken percent-encoding, repeats). */
    const char *(*req_query_string)(bnb_req_t *req);

    /* -- since ABI 1.3: streamed answers (Server-Sent Events and the like) -- */

    /* Inside a route handler, instead of respond_*: answer `status` with
     * Content-Type `content_type` (copied) and a body written later with
     * stream_write, from any thread, for as long as the client stays (headers
     * given with respond_header before go out too). Returns the stream, which
     * the caller releases with stream_close (exactly once, even after the
     * client went away); NULL when this request cannot stream (an in-process
     * host->call, already answered, the host is draining, out of memory): then
     * answer as usual. */
    bnb_stream_t *(*stream_open)(bnb_req_t *req, int status, const char *content_type);
    /* Queue `len` bytes (copied) to go out after those queued before. Any
     * thread; never blocks: the event loop sends them as the client reads.
     * 0 when queued; BNB_ENOENT when the stream has ended (client gone, host
     * draining, dropped); BNB_EAGAIN when the bytes would overflow the
     * stream's buffer (http.stream_buffer): the client is too slow, the stream
     * is dropped (its connection closed) and every later write is BNB_ENOENT.
     * len 0 only checks: the number of bytes still queued (>= 0), or
     * BNB_ENOENT (a writer catching up on old data paces itself with it). */
    int (*stream_write)(bnb_stream_t *s, const void *data, size_t len);
    /* End the answer once the queued bytes are out, and release `s` (it must
     * not be used after). Any thread. */
    void (*stream_close)(bnb_stream_t *s);

    /* -- since ABI 1.4: storage -- */

    /* The documents ids[0..n) of `coll` in one read (one statement, or one
     * per batch of ids, where the backend has them; a page that needs one
     * document per listed row reads them all at once instead of one round
     * trip each). *items: a new array of n elements in the order of `ids`,
     * each {"id","version","body"} or JSON null when that document is
     * absent (or deleted); caller frees with json_decref. n 1..1000, else
     * BNB_EINVAL. Worker threads only. */
    int (*store_get_many)(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, json_t **items);
} bnb_host_api_t;

/* 1 when the host's table has member `fn` (appended in some minor version) and
 * it is set: BNB_HAS(host, store_query). */
#define BNB_HAS(host, fn) ((host)->size >= offsetof(bnb_host_api_t, fn) + sizeof((host)->fn) && (host)->fn != NULL)

/* ---- what a plugin exports ---------------------------------------------- */

typedef struct bnb_plugin {
    uint32_t abi_version; /* BNB_ABI_VERSION the plugin was built against */
    const char *name;     /* [a-z]+, e.g. "room" */
    const char *version;  /* plugin's own version string */
    const bnb_cfg_item_t *config;
    /* Register routes and subscriptions, read config, set userdata. A
     * non-zero return refuses the plugin; everything it registered is undone. */
    int (*init)(bnb_ctx_t *ctx, const bnb_host_api_t *host);
    int (*start)(bnb_ctx_t *ctx); /* may be NULL */
    void (*stop)(bnb_ctx_t *ctx); /* may be NULL */
    void (*fini)(bnb_ctx_t *ctx); /* may be NULL; frees userdata */
} bnb_plugin_t;

#define BNB_PLUGIN_SYMBOL "bnb_plugin"

/* Put on the exported `bnb_plugin` definition (plugins build with hidden
 * visibility). */
#define BNB_EXPORT __attribute__((visibility("default")))

#ifdef __cplusplus
}
#endif
#endif

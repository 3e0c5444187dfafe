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
 * Threads: HTTP route handlers and event handlers run on worker threads, never
 * on the event loop, so they may call the synchronous store and call
 * functions below. `init`, `start`, `stop`, `fini` run on the main thread.
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

/* Bump on any incompatible change; the host refuses other versions. */
#define BNB_ABI_VERSION 1u

enum {
    BNB_OK = 0,
    BNB_EPERM = -1,      /* not allowed */
    BNB_ENOENT = -2,     /* no such document / route / service */
    BNB_EIO = -5,        /* backend failure (transient, retried) */
    BNB_EAGAIN = -11,    /* unavailable right now (breaker open, draining) */
    BNB_ENOMEM = -12,    /* out of memory */
    BNB_EEXIST = -17,    /* version conflict / already exists */
    BNB_EINVAL = -22,    /* invalid input; for an event handler: poison, park it */
    BNB_EALREADY = -114, /* this event was already applied to that document */
    BNB_ETIMEDOUT = -110 /* a call ran past its timeout */
};

typedef struct bnb_ctx bnb_ctx_t;     /* one loaded plugin instance (opaque) */
typedef struct bnb_req bnb_req_t;     /* one HTTP request being handled (opaque) */
typedef struct bnb_store bnb_store_t; /* the plugin's own store (opaque) */

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

/* An HTTP route handler. Runs on a worker thread. It must answer with exactly
 * one of host->respond_json / host->respond_problem / host->respond_empty
 * before returning; returning without an answer gives a 500. */
typedef void (*bnb_route_fn)(bnb_ctx_t *ctx, bnb_req_t *req);

/* An event handler. Runs on a worker thread with the event envelope
 * (borrowed): {id, type, source, subject, correlationId, time, data}.
 * Return 0 (or BNB_EALREADY) when the effect is stored; BNB_EINVAL when the
 * event can never be applied (it is parked in the dead-letter store with the
 * reason given by host->event_reject, or a generic one); any other negative
 * code to have it redelivered later. */
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
    /* Answer. `body` is stolen (the host decrefs it). */
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

    /* Inside an event handler: the reason recorded when it returns BNB_EINVAL. */
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
    /* Set the correlation id of the current request/event (e.g. once the
     * reservation id is known). Copied. */
    void (*set_correlation)(bnb_ctx_t *ctx, const char *correlation_id);
    /* Fill `out` (37 bytes) with a new random UUID. */
    void (*uuid)(char out[37]);
    /* Current time, milliseconds since the epoch (UTC). */
    int64_t (*now_ms)(void);
} bnb_host_api_t;

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

/* The host's shared state (host-internal). One bnb_host_t per process. */
#ifndef BNB_HOST_H
#define BNB_HOST_H

#include "bnb_build_config.h"

#include "auth.h"
#include "bnb_plugin.h"
#include "bnb_storage.h"
#include "breaker.h"
#include "channel.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "v2.h"

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

typedef struct bnb_inst bnb_inst_t;

typedef struct bnb_sub {
    char *topic;
    bnb_event_fn fn;
} bnb_sub_t;

/* One route a plugin registered (the router's `data`). */
typedef struct bnb_route_entry {
    bnb_inst_t *ctx;
    bnb_role_t who;
    bnb_route_fn fn;
    char *pattern;
    char *method;
} bnb_route_entry_t;

/* What a plugin's bnb_ctx_t * points at: the plugin instance and the call it
 * is for. The instance's own context (bnb_inst_t.self, exec NULL) goes to
 * init/start/stop/fini; every route or event handler invocation gets a
 * context of its own (on the worker's stack, see bnb__req_run and events.c's
 * dispatch) whose exec is that request's or event's, so event_reject and
 * set_correlation act on the call they are given. Host functions taking a
 * plugin's context use ctx->inst for the instance. */
struct bnb_ctx {
    bnb_inst_t *inst;
    bnb_exec_t *exec; /* the request or event being handled; NULL for the instance's own */
};

/* One loaded plugin. */
struct bnb_inst {
    bnb_ctx_t self; /* .inst = this instance, .exec = NULL */
    struct bnb_host *host;
    const bnb_plugin_t *plugin;
    const char *name; /* plugin->name */
    void *dl;
    char *path;
    void *userdata;
    bnb_store_t *store;
    bnb_sub_t *subs;
    size_t nsubs;
    bnb_route_entry_t **routes;
    size_t nroutes;
    atomic_int paused;
    atomic_int relaying;
    int64_t dead_exported;   /* dead letters in the store, as bearbnb_dead_letters_total says (host->dl_mu) */
    atomic_int dead_synced;  /* dead_exported was read from the store once */
    atomic_ullong store_gen; /* bumped after every commit to `store` (http read cache) */
    int inited, started;
    uint32_t abi;       /* the plugin's ABI version (major << 16 | minor) */
    bnb__colls_t colls; /* collections the plugin declared (store_define) */
};

typedef struct bnb_breaker_slot {
    char service[32];
    bnb_breaker_t *b;
} bnb_breaker_slot_t;

typedef struct bnb_host {
    bnb_config_t *cfg;
    uv_loop_t *loop;
    bnb_inst_t **plugins;
    size_t nplugins;
    bnb_router_t *router;
    bnb_auth_t *auth;
    unsigned long jwks_failures_exported; /* JWKS failures already added to /metrics (loop thread) */
    bnb_metrics_t *metrics;
    bnb_channel_t *_Atomic channel; /* NULL: in-process events (or Kafka not connected yet) */
    int kafka_wanted;               /* kafka.brokers is set: never deliver in-process */
    pthread_t kafka_thread;
    int kafka_thread_started;
    atomic_int kafka_stop;
    atomic_int channel_ready; /* last answer of the channel's (blocking) ready check */
    atomic_int stores_ready;  /* every plugin's store answered its last ping */
    int ready_logged;         /* readiness last announced in the log: -1 none, 0, 1 */
    int channel_up_seen;      /* channel_ready as the loop last saw it (wakes the relay when it comes back) */
    int channel_fails;        /* failed channel checks in a row (ready_work; one at a time) */
    uv_timer_t ready_timer;
    int ready_job;
    char kafka_prefix[96]; /* "<kafka.namespace>." or "" */

    pthread_mutex_t breakers_mu;
    bnb_breaker_slot_t breakers[16];
    size_t nbreakers;
    bnb_breaker_config_t breaker_cfg;
    long call_timeout_ms;

    struct bnb_ratelimit *rl_user, *rl_ip; /* NULL: off */
    int gw_enforce;
    long gw_timeout_ms;
    int deliver_twice;
    int admin;
    int test_clock; /* admin and test.clock: POST /admin/clock */
    /* sign-in for the web app (GET /auth/config): 1 while the generated
     * development key is the only key (no auth.key_file, no JWKS): then
     * POST /dev/token exists; oidc: a JWKS is configured (Keycloak) */
    int dev_signin;
    int oidc;
    size_t max_body;
    size_t stream_buffer; /* http.stream_buffer: bytes a streamed answer may queue */
    long relay_interval_ms;
    size_t relay_batch;

    atomic_int ready;
    atomic_int draining;
    atomic_int inflight;   /* worker jobs running for requests */
    atomic_uint jobs_done; /* request jobs finished so far (main.c: heap trim after a burst) */

    pthread_mutex_t dl_mu;
    json_t *dead_letters; /* recent parked events, newest last */

    uv_async_t relay_wake;
    uv_timer_t relay_timer;
    uv_timer_t relay_retry; /* a failed relay round tries again after relay_backoff_ms */
    long relay_backoff_ms;  /* 0 after a round that worked (loop thread) */
    atomic_int relay_jobs;
    atomic_uint wakes; /* commits with events so far: a relay job that saw fewer runs again */
    int relay_stopped;
} bnb_host_t;

/* A request being handled by a plugin (HTTP or an in-process call). */
struct bnb_req {
    bnb_inst_t *ctx;
    bnb_route_entry_t *route;
    char *method;
    char *path;
    char *query; /* raw, without '?', or NULL */
    bnb_route_match_t match;
    json_t *body;
    bnb_identity_t id;
    int has_id;
    char *bearer;
    size_t nheaders;
    char **hnames; /* lower case */
    char **hvalues;
    /* the answer */
    int status;
    json_t *resp;
    int answered;
    int problem;
    size_t nrh;
    char *rh_names[8];
    char *rh_values[8];
    /* a proxied request: the raw body in and the raw answer out */
    char *raw_in;
    size_t raw_in_len;
    char *raw_out;
    size_t raw_out_len;
    char *raw_ctype;
    char *upstream;
    int upstream_index, upstream_h2c;
    int edge_own; /* the edge's own answer (not the upstream's outcome: no breaker record) */
    /* a streamed answer (stream_open, ABI 1.3): the loop's reference, handed
     * to the HTTP side when the handler returns */
    int can_stream; /* an HTTP request (not an in-process call) */
    bnb_stream_t *stream;
    /* context of the handler call */
    bnb_exec_t exec;
    char *qcache_key[8];
    char *qcache_val[8];
    size_t nq;
};

extern const bnb_host_api_t bnb__host_api;
extern bnb_host_t *bnb__host; /* the host of this process */

/* api.c */
void bnb__req_free_parts(bnb_req_t *r);
/* Run a route handler on the current (worker) thread; answers 500 if it did not. */
void bnb__req_run(bnb_req_t *r);
void bnb__problem_json(bnb_req_t *r, int status, const char *title, const char *detail);
char *bnb__problem_text(int status, const char *title, const char *detail, size_t *len);
const char *bnb__status_title(int status);
void bnb__uuid(char out[37]);

/* The instance whose store is st, or NULL (api.c). */
bnb_inst_t *bnb__inst_of_store(bnb_host_t *h, const bnb_store_t *st);

/* loader.c */
/* Open and check one plugin file; NULL with a message naming the file. */
bnb_inst_t *bnb__plugin_open(bnb_host_t *h, const char *path, char *err, size_t errlen);
/* init; on failure undoes every registration and returns <0 with err set. */
int bnb__plugin_init(bnb_inst_t *ctx, char *err, size_t errlen);
void bnb__plugin_unregister(bnb_inst_t *ctx);
void bnb__plugin_close(bnb_inst_t *ctx);
/* Every *.so in dir and dir/<x>/ (sorted); caller frees each and the array. */
int bnb__plugin_scan(const char *dir, char ***paths, size_t *n);

/* events.c */
int bnb__events_start(bnb_host_t *h, char *err, size_t errlen);
/* Stop relaying; one last synchronous flush of every outbox; close channels. */
void bnb__events_stop(bnb_host_t *h);
void bnb__events_wake(bnb_host_t *h);
/* Hand one raw event to the consumers of `topic` (admin injection). */
int bnb__events_inject(bnb_host_t *h, const char *topic, const char *payload, size_t len);
int bnb__events_ready(bnb_host_t *h);
void bnb__events_free(bnb_host_t *h);

/* call.c */
int bnb__call(bnb_ctx_t *ctx, const char *service, const char *method, const char *path, const json_t *body,
              int *status, json_t **resp);
bnb_breaker_t *bnb__breaker_for(bnb_host_t *h, const char *service);
/* A response body growing up to `max` bytes, NUL-terminated; p freed by the caller. */
typedef struct bnb_buf {
    char *p;
    size_t len, max;
} bnb_buf_t;
/* libcurl CURLOPT_WRITEFUNCTION collecting into a bnb_buf_t. */
size_t bnb__curl_collect(char *ptr, size_t size, size_t nmemb, void *ud);
void bnb__breakers_export(bnb_host_t *h);

/* http.c */
int bnb__http_start(bnb_host_t *h, char *err, size_t errlen);
/* Stop accepting, let in-flight requests finish, then call done. */
void bnb__http_drain(bnb_host_t *h, void (*done)(bnb_host_t *h));
void bnb__http_free(bnb_host_t *h);
int bnb__http_open_connections(void);
/* Streamed answers (plugin API 1.3). A stream has a reference for its writer
 * and one for the HTTP side; every function but attach may be called from any
 * thread. new: refs 2, `cap` bytes may wait at most. */
bnb_stream_t *bnb__stream_new(int status, const char *content_type, size_t cap);
/* 0; BNB_ENOENT when ended (client gone, drain, dropped); BNB_EAGAIN when the
 * bytes do not fit in the cap: the stream is dropped. len 0: the bytes queued. */
int bnb__stream_write(bnb_stream_t *s, const void *data, size_t len);
/* The writer is done: end the answer after the queued bytes; drop its reference. */
void bnb__stream_close(bnb_stream_t *s);
/* Drop the HTTP side's reference without ever sending (the request is gone). */
void bnb__stream_abandon(bnb_stream_t *s);

#endif

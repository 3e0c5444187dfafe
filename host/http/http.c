/* HTTP/1.1, h2c (Upgrade and prior knowledge) and HTTP/2 over TLS with h2o on
 * libuv. Requests are routed on the loop; plugin handlers run on worker
 * threads; answers go back on the loop. */
#include "gateway.h"
#include "host.h"
#include "jwks.h"
#include "ratelimit.h"
#include "reqcheck.h"
#include "webapp.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <h2o.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* docs/openapi.json, embedded by host/http/embed.py (meson: openapi-doc) */
extern const char bnb__openapi_json[];
extern const size_t bnb__openapi_json_len;

static h2o_globalconf_t g_config;
static h2o_context_t g_ctx;
static h2o_accept_ctx_t g_accept;
static uv_tcp_t g_listener;
static int g_listening;
static SSL_CTX *g_ssl;
static int g_nconns;
static uv_timer_t g_drain_timer;
static int64_t g_drain_deadline;
static void (*g_drain_done)(bnb_host_t *);

/* ---- answering --------------------------------------------------------- */

static void add_header(h2o_req_t *req, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    char *n = h2o_mem_alloc_pool(&req->pool, nl);
    char *v = h2o_mem_alloc_pool(&req->pool, vl);
    for (size_t i = 0; i < nl; i++) /* HTTP/2 wants lower-case names */
        n[i] = (char)tolower((unsigned char)name[i]);
    memcpy(v, value, vl);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n, nl, 1, NULL, v, vl);
}

/* A JSON string's contents from client bytes: quote and backslash escaped,
 * control bytes and non-ASCII as '?'. */
static void json_safe(char *out, size_t outlen, const char *v, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 3 < outlen; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\')
            out[o++] = '\\', out[o++] = (char)c;
        else
            out[o++] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
    }
    out[o] = '\0';
}

static void access_log(h2o_req_t *req, const char *reqid, const char *traceparent, int status, double secs)
{
    char fields[900], meth[40], path[420];
    json_safe(meth, sizeof(meth), req->method.base, req->method.len);
    json_safe(path, sizeof(path), req->path.base, req->path.len > 200 ? 200 : req->path.len);
    /* never a token in the log (GET /dashboard/stream?access_token=) */
    char *at = strstr(path, "access_token=");
    if (at != NULL)
        snprintf(at + 13, sizeof(path) - (size_t)(at + 13 - path), "(left out)");
    snprintf(fields, sizeof(fields),
             "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"ms\":%.3f,\"protocol\":\"%s\",\"requestId\":\"%s\","
             "\"traceparent\":\"%s\"",
             meth, path, status, secs * 1000.0, req->version >= 0x200 ? "h2" : "http/1.1", reqid,
             traceparent ? traceparent : "");
    for (char *p = fields; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    bnb__logf(BNB_LOG_INFO, fields, "access");
}

static void send_body(h2o_req_t *req, int status, const char *ctype, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = bnb__status_title(status);
    if (ctype != NULL && status != 204)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    if (status != 204)
        req->res.content_length = len;
    h2o_send_inline(req, status == 204 ? "" : body, status == 204 ? 0 : len);
}

/* ---- read cache ------------------------------------------------------------
 *
 * Anonymous GET/HEAD requests of a plugin route open to anyone, on a plugin
 * whose store is embedded SQLite (only this process writes it), are answered
 * from here on the loop thread when the same path and query got a 200 JSON
 * answer before and nothing was committed to that plugin's store since
 * (bnb_inst_t.store_gen, bumped by every commit): no worker hop, no query, no
 * JSON. The answer is taken only when the generation did not move while the
 * handler ran, and not when the handler read a request header or called
 * another service (bnb_exec_t.no_cache). Entries live at most RC_TTL_MS (for
 * what the store does not see, e.g. the clock), one per slot (a colliding
 * path replaces it), bodies up to RC_MAX_BODY, RC_MAX_BYTES in all: the cost
 * does not grow with the data. */

#define RC_SLOTS     512 /* power of 2 */
#define RC_MAX_BODY  (32 * 1024)
#define RC_MAX_BYTES (2 * 1024 * 1024)
#define RC_TTL_MS    1000

typedef struct rc_ent {
    char *key; /* the request's path with its query, as sent */
    size_t klen;
    bnb_inst_t *inst;
    unsigned long long gen;
    int64_t at_ms;
    char *body;
    size_t len;
} rc_ent_t;

static rc_ent_t g_rc[RC_SLOTS];
static size_t g_rc_bytes;
static unsigned long g_rc_hits, g_rc_misses;

static size_t rc_slot(const char *k, size_t n)
{
    uint64_t x = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        x = (x ^ (unsigned char)k[i]) * 1099511628211ULL;
    return (size_t)(x & (RC_SLOTS - 1));
}

static void rc_drop(rc_ent_t *e)
{
    g_rc_bytes -= e->klen + e->len;
    free(e->key);
    free(e->body);
    memset(e, 0, sizeof(*e));
}

static const rc_ent_t *rc_get(const char *k, size_t n, bnb_inst_t *inst)
{
    rc_ent_t *e = &g_rc[rc_slot(k, n)];
    if (e->key == NULL || e->inst != inst || e->klen != n || memcmp(e->key, k, n) != 0)
        return NULL;
    if (e->gen != atomic_load(&inst->store_gen) || bnb__mono_ms() - e->at_ms >= RC_TTL_MS) {
        rc_drop(e);
        return NULL;
    }
    return e;
}

/* Keep `body` (copied) for k, read at generation gen. */
static void rc_put(const char *k, size_t n, bnb_inst_t *inst, unsigned long long gen, const char *body, size_t len)
{
    if (len > RC_MAX_BODY || gen != atomic_load(&inst->store_gen))
        return;
    rc_ent_t *e = &g_rc[rc_slot(k, n)];
    if (e->key != NULL)
        rc_drop(e);
    if (g_rc_bytes + n + len > RC_MAX_BYTES)
        return;
    e->key = malloc(n + 1);
    e->body = malloc(len + 1);
    if (e->key == NULL || e->body == NULL) {
        free(e->key);
        free(e->body);
        e->key = e->body = NULL;
        return;
    }
    memcpy(e->key, k, n);
    e->key[n] = '\0';
    memcpy(e->body, body, len);
    e->klen = n;
    e->len = len;
    e->inst = inst;
    e->gen = gen;
    e->at_ms = bnb__mono_ms();
    g_rc_bytes += n + len;
}

static void rc_free_all(void)
{
    for (size_t i = 0; i < RC_SLOTS; i++)
        if (g_rc[i].key != NULL)
            rc_drop(&g_rc[i]);
}

/* ---- connections: the work each one may have in flight ---------------------
 *
 * HTTP/2 rapid reset (CVE-2023-44487): a client opens a stream and resets it
 * at once, thousands of times. h2o 2.2.5 has no defence (it disposes the
 * reset stream's request, but whatever the handler started keeps running).
 * Here every connection may have at most CONN_MAX_RUNNING jobs on the worker
 * pool; further requests of that connection wait in its own queue (so one
 * connection cannot fill the pool and starve the others). A request reset
 * before its job started is dropped from that queue (or cancelled in the
 * pool) and never runs; one reset while its job runs still counts against
 * the connection until the job ends. Streams reset before their answer are
 * counted in a token bucket (CONN_RESET_BURST, refilled CONN_RESET_RATE per
 * second); a connection that empties it is shut down, as nghttp2 does. */

#define CONN_MAX_RUNNING 4
#define CONN_RESET_BURST 200.0
#define CONN_RESET_RATE  50.0

typedef struct http_job http_job_t;

typedef struct http_conn http_conn_t;
struct http_conn {
    uv_tcp_t tcp; /* first: the handle h2o closes is this struct */
    h2o_socket_t *sock;
    http_conn_t *hnext; /* in g_conns */
    int closed;         /* the handle is closed; freed when no job is left */
    int running;        /* jobs in the pool (reset ones included) */
    int queued;
    http_job_t *qhead, *qtail; /* jobs not started yet, first come first */
    double reset_tokens;
    int64_t reset_ms;
    int shut;             /* shut down for resetting too much */
    h2o_http2_conn_t *h2; /* h2o's HTTP/2 connection on it, once adopted (h2_adopt) */
    int h2_early;         /* streams answered early whose answer has not left yet (reading stops) */
};

#define CONN_BUCKETS 512
static http_conn_t *g_conns[CONN_BUCKETS];
static unsigned long g_resets_dropped, g_conns_shut;
static unsigned long g_h2_bodies_refused; /* HTTP/2 bodies answered 413 while still arriving */

static size_t conn_bucket(const h2o_socket_t *sock)
{
    return ((uintptr_t)sock >> 4) % CONN_BUCKETS;
}

static http_conn_t *conn_of(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock == NULL)
        return NULL;
    for (http_conn_t *c = g_conns[conn_bucket(sock)]; c != NULL; c = c->hnext)
        if (c->sock == sock && !c->closed)
            return c;
    return NULL;
}

static void conn_unlink(http_conn_t *c)
{
    for (http_conn_t **pp = &g_conns[conn_bucket(c->sock)]; *pp != NULL; pp = &(*pp)->hnext)
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
}

static void conn_maybe_free(http_conn_t *c)
{
    if (c->closed && c->running == 0 && c->queued == 0)
        free(c);
}

/* A stream went away before its answer: take a token; none left -> the
 * connection is shut down (h2o sees the socket end and closes it itself). */
static void conn_count_reset(http_conn_t *c)
{
    int64_t now = bnb__mono_ms();
    c->reset_tokens += (double)(now - c->reset_ms) * CONN_RESET_RATE / 1000.0;
    if (c->reset_tokens > CONN_RESET_BURST)
        c->reset_tokens = CONN_RESET_BURST;
    c->reset_ms = now;
    c->reset_tokens -= 1.0;
    if (c->reset_tokens >= 0 || c->shut || c->closed)
        return;
    c->shut = 1;
    g_conns_shut++;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        shutdown(fd, SHUT_RDWR);
    bnb__log(BNB_LOG_WARN, "http: connection shut down: it reset more than %.0f streams before their answer",
             CONN_RESET_BURST);
}

/* ---- streamed answers (plugin API 1.3: stream_open/write/close) ------------
 *
 * A writer (a plugin thread, a worker) queues bytes under the stream's lock
 * and wakes the loop (one uv_async for every stream); the loop hands what is
 * queued to h2o one buffer at a time (h2o_send, then its proceed callback when
 * the client took it). Nothing here blocks: a client that does not read lets
 * the queue grow up to the stream's cap, then the stream is dropped and its
 * connection shut down. References: the writer's (stream_close), the HTTP
 * side's (the request's dispose, or abandon when it never started), and one
 * while the stream waits in the wake list. On drain every stream is ended. */

struct bnb_stream {
    pthread_mutex_t mu;
    atomic_int refs;
    /* under mu */
    char *pend;
    size_t plen, pcap;
    size_t inflight_len;
    size_t cap;
    int writer_closed; /* stream_close: end once the queue is out */
    int ended;         /* no more writes: client gone, drained, dropped */
    int overflow;      /* dropped for a slow client */
    /* under g_wmu */
    int queued;
    bnb_stream_t *wnext;
    /* loop only */
    h2o_generator_t gen; /* gen.proceed/stop: container of it is the stream */
    int status;
    char *ctype;
    h2o_req_t *req;
    bnb_stream_t **slot; /* in req's pool: cleared when the stream is freed first */
    int started, sending, finished;
    char *inflight;
    bnb_stream_t *lnext, *lprev; /* g_live */
};

#define STREAM_SNDBUF (64 * 1024)

static uv_async_t g_wake_async;
static int g_wake_inited;
static pthread_mutex_t g_wmu = PTHREAD_MUTEX_INITIALIZER;
static bnb_stream_t *g_wake;
static bnb_stream_t *g_live;
static long g_streams_open;
static unsigned long g_streams_dropped;

static void stream_unref(bnb_stream_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->pend);
    free(s->inflight);
    free(s->ctype);
    free(s);
}

static void stream_wake(bnb_stream_t *s)
{
    pthread_mutex_lock(&g_wmu);
    if (!s->queued) {
        s->queued = 1;
        atomic_fetch_add(&s->refs, 1);
        s->wnext = g_wake;
        g_wake = s;
    }
    int inited = g_wake_inited;
    pthread_mutex_unlock(&g_wmu);
    if (inited)
        uv_async_send(&g_wake_async);
}

bnb_stream_t *bnb__stream_new(int status, const char *content_type, size_t cap)
{
    bnb_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->ctype = strdup(content_type);
    if (s->ctype == NULL || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->ctype);
        free(s);
        return NULL;
    }
    atomic_init(&s->refs, 2);
    s->status = status;
    s->cap = cap;
    return s;
}

int bnb__stream_write(bnb_stream_t *s, const void *data, size_t len)
{
    pthread_mutex_lock(&s->mu);
    if (s->ended || s->writer_closed) {
        pthread_mutex_unlock(&s->mu);
        return BNB_ENOENT;
    }
    if (len == 0) {
        size_t q = s->plen + s->inflight_len;
        pthread_mutex_unlock(&s->mu);
        return q > INT_MAX ? INT_MAX : (int)q;
    }
    if (s->plen + s->inflight_len + len > s->cap) {
        s->ended = 1;
        s->overflow = 1;
        pthread_mutex_unlock(&s->mu);
        stream_wake(s);
        return BNB_EAGAIN;
    }
    if (s->plen + len > s->pcap) {
        size_t nc = s->pcap ? s->pcap : 1024;
        while (nc < s->plen + len)
            nc *= 2;
        char *np = realloc(s->pend, nc);
        if (np == NULL) {
            pthread_mutex_unlock(&s->mu);
            return BNB_ENOMEM;
        }
        s->pend = np;
        s->pcap = nc;
    }
    memcpy(s->pend + s->plen, data, len);
    s->plen += len;
    pthread_mutex_unlock(&s->mu);
    stream_wake(s);
    return 0;
}

void bnb__stream_close(bnb_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->writer_closed = 1;
    pthread_mutex_unlock(&s->mu);
    stream_wake(s);
    stream_unref(s);
}

void bnb__stream_abandon(bnb_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

static void stream_service(bnb_stream_t *s);

static void stream_unlink_live(bnb_stream_t *s)
{
    if (s->lprev)
        s->lprev->lnext = s->lnext;
    else if (g_live == s)
        g_live = s->lnext;
    if (s->lnext)
        s->lnext->lprev = s->lprev;
    s->lnext = s->lprev = NULL;
}

/* The request is gone (answer done, client away): the HTTP side's reference. */
static void on_stream_req_dispose(void *p)
{
    bnb_stream_t *s = *(bnb_stream_t **)p;
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    pthread_mutex_unlock(&s->mu);
    s->req = NULL;
    s->slot = NULL;
    stream_unlink_live(s);
    g_streams_open--;
    stream_unref(s);
}

static void on_stream_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    bnb_stream_t *s = (bnb_stream_t *)((char *)g - offsetof(bnb_stream_t, gen));
    s->sending = 0;
    pthread_mutex_lock(&s->mu);
    free(s->inflight);
    s->inflight = NULL;
    s->inflight_len = 0;
    pthread_mutex_unlock(&s->mu);
    stream_service(s);
}

static void on_stream_stop(h2o_generator_t *g, h2o_req_t *req)
{
    (void)req;
    bnb_stream_t *s = (bnb_stream_t *)((char *)g - offsetof(bnb_stream_t, gen));
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    pthread_mutex_unlock(&s->mu);
    s->finished = 1; /* h2o is done with the generator */
}

/* The handler returned with a stream: start the answer (loop). */
static void stream_attach(bnb_stream_t *s, h2o_req_t *req)
{
    s->req = req;
    s->slot = h2o_mem_alloc_shared(&req->pool, sizeof(*s->slot), on_stream_req_dispose);
    *s->slot = s;
    s->lnext = g_live;
    if (g_live)
        g_live->lprev = s;
    g_live = s;
    g_streams_open++;
    s->gen.proceed = on_stream_proceed;
    s->gen.stop = on_stream_stop;
    req->res.status = s->status;
    req->res.reason = bnb__status_title(s->status);
    req->res.content_length = SIZE_MAX;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   h2o_strdup(&req->pool, s->ctype, SIZE_MAX).base, strlen(s->ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    /* nginx and the like in front: do not buffer this answer */
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    /* what the kernel holds for this client is bounded too (no send buffer
     * autotuning up to megabytes): an HTTP/1.1 stream owns its connection */
    http_conn_t *c = req->version < 0x200 ? conn_of(req) : NULL;
    uv_os_fd_t fd;
    if (c != NULL && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        int sz = STREAM_SNDBUF;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    }
    h2o_start_response(req, &s->gen);
    s->started = 1;
    stream_service(s);
}

/* Shut the connection of a dropped stream down (h2o then disposes it). */
static void stream_drop_conn(bnb_stream_t *s)
{
    g_streams_dropped++;
    bnb__log(BNB_LOG_WARN, "http: stream dropped: the client did not read %zu queued bytes", s->cap);
    http_conn_t *c = s->req ? conn_of(s->req) : NULL;
    uv_os_fd_t fd;
    if (c != NULL && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        shutdown(fd, SHUT_RDWR);
}

/* Hand what is queued to h2o, or end the answer (loop). */
static void stream_service(bnb_stream_t *s)
{
    if (!s->started || s->req == NULL || s->finished)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->overflow) {
        /* usually while a write is stuck: the connection goes, h2o disposes
         * the request when it sees that */
        pthread_mutex_unlock(&s->mu);
        s->finished = 1;
        stream_drop_conn(s);
        return;
    }
    if (s->sending) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (s->plen > 0) {
        s->inflight = s->pend;
        s->inflight_len = s->plen;
        s->pend = NULL;
        s->plen = s->pcap = 0;
        pthread_mutex_unlock(&s->mu);
        s->sending = 1;
        h2o_iovec_t v = h2o_iovec_init(s->inflight, s->inflight_len);
        h2o_send(s->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
        return;
    }
    int end = s->writer_closed || s->ended;
    pthread_mutex_unlock(&s->mu);
    if (end) {
        s->finished = 1;
        h2o_send(s->req, NULL, 0, H2O_SEND_STATE_FINAL);
    }
}

static void on_stream_wake(uv_async_t *a)
{
    (void)a;
    pthread_mutex_lock(&g_wmu);
    bnb_stream_t *list = g_wake;
    g_wake = NULL;
    for (bnb_stream_t *s = list; s != NULL; s = s->wnext)
        s->queued = 0;
    pthread_mutex_unlock(&g_wmu);
    while (list != NULL) {
        bnb_stream_t *s = list;
        list = s->wnext;
        stream_service(s);
        stream_unref(s);
    }
}

/* HTTP/1.1 does not read the socket while an answer goes out, so a client
 * that closed its stream would be noticed only at the next write: every
 * second, a peek at each HTTP/1.1 stream's socket ends those whose client
 * has gone (EOF or an error), so the caps count only live clients. */
static uv_timer_t g_stream_timer;

static void on_stream_tick(uv_timer_t *t)
{
    (void)t;
    for (bnb_stream_t *s = g_live, *next; s != NULL; s = next) {
        next = s->lnext;
        if (s->req == NULL || s->finished || s->req->version >= 0x200)
            continue;
        http_conn_t *c = conn_of(s->req);
        uv_os_fd_t fd;
        if (c == NULL || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
            continue;
        char b;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
            continue;
        pthread_mutex_lock(&s->mu);
        s->ended = 1;
        pthread_mutex_unlock(&s->mu);
        if (!s->sending) {
            s->finished = 1;
            h2o_send(s->req, NULL, 0, H2O_SEND_STATE_ERROR);
        } else {
            shutdown(fd, SHUT_RDWR);
        }
    }
}

/* Drain: every stream ends (its queue still goes out first). */
static void streams_end_all(void)
{
    for (bnb_stream_t *s = g_live; s != NULL; s = s->lnext) {
        pthread_mutex_lock(&s->mu);
        s->ended = 1;
        pthread_mutex_unlock(&s->mu);
        stream_service(s);
    }
}

/* Exit: streams whose requests h2o never disposed (connections left open). */
static void streams_free_all(void)
{
    on_stream_wake(NULL);
    while (g_live != NULL) {
        bnb_stream_t *s = g_live;
        stream_unlink_live(s);
        if (s->slot)
            *s->slot = NULL;
        s->req = NULL;
        stream_unref(s);
    }
}

/* ---- worker jobs --------------------------------------------------------- */

struct http_job {
    uv_work_t w;
    bnb_host_t *h;
    h2o_req_t *req; /* NULL once the client went away */
    http_job_t **slot;
    http_conn_t *conn; /* NULL when not known */
    int state;         /* JOB_WAITING in conn's queue, JOB_POOL on the worker pool */
    http_job_t *qnext; /* in conn's queue */
    bnb_req_t r;
    int64_t t0;
    char route[160];
    /* read cache: where the answer may go (rc_inst NULL: nowhere) */
    bnb_inst_t *rc_inst;
    unsigned long long rc_gen;
    /* admin event injection instead of a plugin route */
    char *inject_topic;
    char *inject_payload;
    size_t inject_len;
};

enum { JOB_NEW = 0, JOB_WAITING, JOB_POOL };

static void job_work(uv_work_t *w);
static void job_after(uv_work_t *w, int status);

static void job_discard(http_job_t *j)
{
    bnb__req_free_parts(&j->r);
    free(j->inject_topic);
    free(j->inject_payload);
    free(j);
}

/* Start waiting jobs of c while it has room on the pool. */
static void conn_pump(http_conn_t *c)
{
    while (c->qhead != NULL && c->running < CONN_MAX_RUNNING) {
        http_job_t *j = c->qhead;
        c->qhead = j->qnext;
        if (c->qhead == NULL)
            c->qtail = NULL;
        c->queued--;
        j->qnext = NULL;
        j->state = JOB_POOL;
        c->running++;
        if (uv_queue_work(j->h->loop, &j->w, job_work, job_after) != 0) {
            /* cannot happen with a valid loop; answer rather than hang */
            c->running--;
            j->state = JOB_NEW;
            bnb__problem_json(&j->r, 503, NULL, "cannot schedule the work");
            job_after(&j->w, 0);
        }
    }
}

static void on_req_dispose(void *p)
{
    http_job_t *j = *(http_job_t **)p;
    if (j == NULL)
        return;
    j->req = NULL;
    http_conn_t *c = j->conn;
    if (c != NULL)
        conn_count_reset(c);
    if (j->state == JOB_WAITING && c != NULL) {
        /* never started: drop it (no work for a stream nobody waits for) */
        http_job_t **pp = &c->qhead, *prev = NULL;
        while (*pp != NULL && *pp != j)
            prev = *pp, pp = &(*pp)->qnext;
        if (*pp == j) {
            *pp = j->qnext;
            if (c->qtail == j)
                c->qtail = prev;
            c->queued--;
        }
        g_resets_dropped++;
        bnb__metrics_http(j->h->metrics, j->route, j->r.method ? j->r.method : "?", 499,
                          (double)((int64_t)uv_hrtime() - j->t0) / 1e9);
        bnb_host_t *h = j->h;
        job_discard(j);
        atomic_fetch_sub(&h->inflight, 1);
        conn_maybe_free(c);
        return;
    }
    if (j->state == JOB_POOL && uv_cancel((uv_req_t *)&j->w) == 0)
        g_resets_dropped++; /* job_after runs with UV_ECANCELED */
}

static void job_work(uv_work_t *w)
{
    http_job_t *j = w->data;
    if (j->inject_topic != NULL) {
        int rc = bnb__events_inject(j->h, j->inject_topic, j->inject_payload, j->inject_len);
        if (rc == 0)
            j->r.resp = json_pack("{s:s}", "status", "delivered"), j->r.status = 202, j->r.answered = 1;
        else
            bnb__problem_json(&j->r, 503, NULL, "the event could not be delivered now; try again");
        return;
    }
    if (j->r.upstream != NULL) {
        bnb__proxy_run(&j->r, j->r.upstream, j->r.upstream_h2c, j->h->gw_timeout_ms);
        return;
    }
    bnb__req_run(&j->r);
}

static void job_after(uv_work_t *w, int status)
{
    http_job_t *j = w->data;
    bnb_host_t *h = j->h;
    if (status == UV_ECANCELED) {
        j->r.status = 499; /* the client went away before the work began */
        if (!j->r.method)
            j->r.method = strdup("?");
    }
    double secs = (double)((int64_t)uv_hrtime() - j->t0) / 1e9;
    if (j->req != NULL) {
        h2o_req_t *req = j->req;
        *j->slot = NULL;
        bnb_req_t *r = &j->r;
        add_header(req, "x-request-id", r->exec.request_id);
        for (size_t i = 0; i < r->nrh; i++)
            add_header(req, r->rh_names[i], r->rh_values[i]);
        /* logged before the answer leaves, so a client that saw the answer
         * finds the line */
        access_log(req, r->exec.request_id, r->exec.traceparent, r->status, secs);
        char *text = NULL;
        if (r->stream != NULL) {
            bnb_stream_t *s = r->stream;
            r->stream = NULL; /* the request's reference now */
            stream_attach(s, req);
        } else if (r->raw_out != NULL || (r->upstream != NULL && !r->problem)) {
            send_body(req, r->status, r->raw_ctype ? r->raw_ctype : "application/octet-stream",
                      r->raw_out ? r->raw_out : "", r->raw_out_len);
        } else {
            if (r->resp != NULL && r->status != 204)
                text = json_dumps(r->resp, JSON_COMPACT | JSON_ENCODE_ANY);
            size_t len = text ? strlen(text) : 0;
            if (j->rc_inst != NULL && text != NULL && r->status == 200 && !r->problem && r->nrh == 0 &&
                !r->exec.no_cache)
                rc_put(req->path.base, req->path.len, j->rc_inst, j->rc_gen, text, len);
            send_body(req, r->status, r->problem ? "application/problem+json" : "application/json", text ? text : "",
                      len);
        }
        free(text);
    }
    if (j->r.upstream != NULL && !j->r.edge_own) {
        bnb_breaker_t *b = bnb__breaker_for(h, j->route);
        if (b != NULL)
            bnb__breaker_record(b, j->r.status < 500, bnb__mono_ms());
    }
    bnb__metrics_http(h->metrics, j->route, j->r.method ? j->r.method : "?", j->r.status, secs);
    atomic_fetch_add(&h->jobs_done, 1);
    http_conn_t *c = j->state == JOB_POOL ? j->conn : NULL;
    job_discard(j);
    atomic_fetch_sub(&h->inflight, 1);
    if (c != NULL) {
        c->running--;
        conn_pump(c);
        conn_maybe_free(c);
    }
}

/* ---- request handling on the loop ------------------------------------------ */

static int is_loopback(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t l = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (l == 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

static int iov_eq(h2o_iovec_t v, const char *s)
{
    size_t l = strlen(s);
    return v.len == l && memcmp(v.base, s, l) == 0;
}

static void fill_ids(h2o_req_t *req, bnb_exec_t *ex)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    int ok = 0;
    if (i != -1) {
        h2o_iovec_t v = req->headers.entries[i].value;
        ok = v.len > 0 && v.len < sizeof(ex->request_id);
        for (size_t k = 0; ok && k < v.len; k++)
            ok = (v.base[k] >= '0' && v.base[k] <= '9') || (v.base[k] >= 'a' && v.base[k] <= 'z') ||
                 (v.base[k] >= 'A' && v.base[k] <= 'Z') || v.base[k] == '-' || v.base[k] == '_' || v.base[k] == '.';
        if (ok)
            snprintf(ex->request_id, sizeof(ex->request_id), "%.*s", (int)v.len, v.base);
    }
    if (!ok)
        bnb__uuid(ex->request_id);
    i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("traceparent"), -1);
    ok = 0;
    if (i != -1) {
        h2o_iovec_t v = req->headers.entries[i].value;
        /* version-traceid-parentid-flags: 2-32-16-2 hex */
        ok = v.len == 55 && v.base[2] == '-' && v.base[35] == '-' && v.base[52] == '-';
        for (size_t k = 0; ok && k < v.len; k++)
            ok = v.base[k] == '-' || (v.base[k] >= '0' && v.base[k] <= '9') || (v.base[k] >= 'a' && v.base[k] <= 'f');
        if (ok) {
            /* keep the trace id, we are a new span */
            char span[37];
            bnb__uuid(span);
            snprintf(ex->traceparent, sizeof(ex->traceparent), "00-%.32s-%.8s%.8s-%.2s", v.base + 3, span, span + 9,
                     v.base + 53);
        }
    }
    if (!ok) {
        char a[37], b[37];
        bnb__uuid(a);
        bnb__uuid(b);
        snprintf(ex->traceparent, sizeof(ex->traceparent), "00-%.8s%.4s%.4s%.4s%.12s-%.8s%.8s-01", a, a + 9, a + 14,
                 a + 19, a + 24, b, b + 24);
    }
}

static http_job_t *new_job(bnb_host_t *h, h2o_req_t *req, const char *route, int64_t t0)
{
    http_job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->h = h;
    j->req = req;
    j->t0 = t0;
    j->w.data = j;
    snprintf(j->route, sizeof(j->route), "%s", route);
    j->r.method = strndup(req->method.base, req->method.len);
    fill_ids(req, &j->r.exec);
    return j;
}

static int start_job(bnb_host_t *h, h2o_req_t *req, http_job_t *j)
{
    j->slot = h2o_mem_alloc_shared(&req->pool, sizeof(*j->slot), on_req_dispose);
    *j->slot = j;
    atomic_fetch_add(&h->inflight, 1);
    http_conn_t *c = conn_of(req);
    if (c != NULL) {
        /* in the connection's queue; started as soon as it has room */
        j->conn = c;
        j->state = JOB_WAITING;
        if (c->qtail != NULL)
            c->qtail->qnext = j;
        else
            c->qhead = j;
        c->qtail = j;
        c->queued++;
        conn_pump(c);
        return 0;
    }
    j->state = JOB_POOL;
    if (uv_queue_work(h->loop, &j->w, job_work, job_after) != 0) {
        atomic_fetch_sub(&h->inflight, 1);
        *j->slot = NULL;
        bnb__req_free_parts(&j->r);
        free(j);
        return -1;
    }
    return 0;
}

static void answer_now(bnb_host_t *h, h2o_req_t *req, const char *route, int64_t t0, int status, const char *ctype,
                       const char *body, size_t len)
{
    bnb_exec_t ids;
    memset(&ids, 0, sizeof(ids));
    fill_ids(req, &ids); /* the client's X-Request-Id when it sent a sane one */
    const char *rid = ids.request_id;
    add_header(req, "x-request-id", rid);
    double secs = (double)((int64_t)uv_hrtime() - t0) / 1e9;
    if (status >= 400)
        access_log(req, rid, ids.traceparent, status, secs);
    send_body(req, status, ctype, body, len);
    char m[16];
    snprintf(m, sizeof(m), "%.*s", (int)(req->method.len < 15 ? req->method.len : 15), req->method.base);
    bnb__metrics_http(h->metrics, route, m, status, secs);
}

static void problem_now(bnb_host_t *h, h2o_req_t *req, const char *route, int64_t t0, int status, const char *detail)
{
    size_t len = 0;
    char *s = bnb__problem_text(status, NULL, detail, &len);
    answer_now(h, req, route, t0, status, "application/problem+json", s ? s : "{}", s ? len : 2);
    free(s);
}

/* The host's own routes (answered before the route table), for /admin/routes. */
static const char *const host_routes[][2] = {{"GET", "/healthz"},      {"GET", "/readyz"},      {"GET", "/metrics"},
                                             {"GET", "/openapi.json"}, {"GET", "/auth/config"}, {"POST", "/dev/token"}};

static void on_route_json(const char *method, const char *pattern, void *data, void *ud)
{
    static const char *const who[] = {"anyone", "user", "host", "guest", "service"};
    const bnb_route_entry_t *e = data;
    json_array_append_new(ud, json_pack("{s:s, s:s, s:s, s:s}", "method", method, "path", pattern, "who",
                                        (unsigned)e->who < 5 ? who[e->who] : "?", "plugin", e->ctx->name));
}

/* GET /admin/routes: every route this process serves, for tests that hold the
 * OpenAPI document against the real route table (admin mode, loopback only). */
static void admin_routes(bnb_host_t *h, h2o_req_t *req, int64_t t0)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < sizeof(host_routes) / sizeof(host_routes[0]); i++)
        if (strcmp(host_routes[i][1], "/dev/token") != 0 || h->dev_signin)
            json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s}", "method", host_routes[i][0], "path",
                                               host_routes[i][1], "who", "anyone", "plugin", ""));
    if (a)
        bnb__router_each(h->router, NULL, on_route_json, a);
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    answer_now(h, req, "/admin/routes", t0, s ? 200 : 500, "application/json", s ? s : "[]", s ? strlen(s) : 2);
    free(s);
}

static int handle_admin(bnb_host_t *h, h2o_req_t *req, const char *path, size_t plen, int64_t t0)
{
    if (!h->admin || !is_loopback(req)) {
        problem_now(h, req, "unmatched", t0, 404, "no such route");
        return 0;
    }
    char p[256];
    snprintf(p, sizeof(p), "%.*s", (int)(plen < 255 ? plen : 255), path);
    int post = iov_eq(req->method, "POST");
    char name[64], verb[16];
    if (sscanf(p, "/admin/plugins/%63[a-z]/%15[a-z]", name, verb) == 2 && post) {
        for (size_t i = 0; i < h->nplugins; i++) {
            if (strcmp(h->plugins[i]->name, name) != 0)
                continue;
            if (strcmp(verb, "pause") != 0 && strcmp(verb, "resume") != 0)
                break;
            atomic_store(&h->plugins[i]->paused, strcmp(verb, "pause") == 0);
            bnb__log(BNB_LOG_WARN, "admin: plugin %s %s", name, strcmp(verb, "pause") == 0 ? "paused" : "resumed");
            const char *ok = strcmp(verb, "pause") == 0 ? "{\"status\":\"paused\"}" : "{\"status\":\"running\"}";
            answer_now(h, req, "/admin/plugins/{name}/{verb}", t0, 200, "application/json", ok, strlen(ok));
            if (strcmp(verb, "resume") == 0)
                bnb__events_wake(h);
            return 0;
        }
        problem_now(h, req, "/admin/plugins/{name}/{verb}", t0, 404, "no such plugin or action");
        return 0;
    }
    if (strcmp(p, "/admin/routes") == 0 && iov_eq(req->method, "GET")) {
        admin_routes(h, req, t0);
        return 0;
    }
    if (strcmp(p, "/admin/clock") == 0 && post && h->test_clock) {
        long long ms = -1;
        char q[64] = "", extra;
        if (req->query_at != SIZE_MAX)
            snprintf(q, sizeof(q), "%.*s", (int)(req->path.len - req->query_at - 1),
                     req->path.base + req->query_at + 1);
        if (sscanf(q, "advance_ms=%lld%c", &ms, &extra) != 1 || ms < 0 || ms > 1000000000LL) {
            problem_now(h, req, "/admin/clock", t0, 400, "query parameter advance_ms must be 0 to 1000000000");
            return 0;
        }
        bnb__clock_advance(ms);
        bnb__log(BNB_LOG_WARN, "admin: clock advanced by %lld ms", ms);
        char body[64];
        snprintf(body, sizeof(body), "{\"advancedMs\":%lld}", ms);
        answer_now(h, req, "/admin/clock", t0, 200, "application/json", body, strlen(body));
        return 0;
    }
    if (strcmp(p, "/admin/dead-letters") == 0 && iov_eq(req->method, "GET")) {
        pthread_mutex_lock(&h->dl_mu);
        char *s = json_dumps(h->dead_letters, JSON_COMPACT);
        pthread_mutex_unlock(&h->dl_mu);
        answer_now(h, req, "/admin/dead-letters", t0, 200, "application/json", s ? s : "[]", s ? strlen(s) : 2);
        free(s);
        return 0;
    }
    if (strcmp(p, "/admin/events") == 0 && post) {
        const char *topic = NULL;
        char tbuf[128] = "";
        if (req->query_at != SIZE_MAX) {
            char q[256];
            snprintf(q, sizeof(q), "%.*s", (int)(req->path.len - req->query_at - 1),
                     req->path.base + req->query_at + 1);
            if (sscanf(q, "topic=%127[a-z.]", tbuf) == 1)
                topic = tbuf;
        }
        if (topic == NULL) {
            problem_now(h, req, "/admin/events", t0, 400, "query parameter topic is required");
            return 0;
        }
        http_job_t *j = new_job(h, req, "/admin/events", t0);
        if (j == NULL || (j->inject_topic = strdup(topic)) == NULL ||
            (j->inject_payload = malloc(req->entity.len + 1)) == NULL) {
            if (j) {
                bnb__req_free_parts(&j->r);
                free(j->inject_topic);
                free(j);
            }
            problem_now(h, req, "/admin/events", t0, 503, "out of memory");
            return 0;
        }
        if (req->entity.len)
            memcpy(j->inject_payload, req->entity.base, req->entity.len);
        j->inject_payload[req->entity.len] = '\0';
        j->inject_len = req->entity.len;
        if (start_job(h, req, j) != 0)
            problem_now(h, req, "/admin/events", t0, 503, "cannot schedule the work");
        return 0;
    }
    problem_now(h, req, "unmatched", t0, 404, "no such admin route");
    return 0;
}

static int copy_headers(h2o_req_t *req, bnb_req_t *r)
{
    size_t n = req->headers.size;
    r->hnames = calloc(n ? n : 1, sizeof(char *));
    r->hvalues = calloc(n ? n : 1, sizeof(char *));
    if (r->hnames == NULL || r->hvalues == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        h2o_header_t *hd = &req->headers.entries[i];
        r->hnames[i] = strndup(hd->name->base, hd->name->len);
        r->hvalues[i] = strndup(hd->value.base, hd->value.len);
        r->nheaders++;
        if (r->hnames[i] == NULL || r->hvalues[i] == NULL)
            return -1;
    }
    return 0;
}

/* ---- a request whose token names a kid being fetched -------------------------
 * The loop never waits for a JWKS refresh: the request is parked, a timer
 * looks every 5 ms whether the refresh round is done (at most the kid wait),
 * and then the request starts over once (a second unknown kid is a 401). */

typedef struct park {
    uv_timer_t t;
    h2o_handler_t *self;
    h2o_req_t *req; /* NULL once the client went away */
    struct park **slot;
    bnb_jwks_t *k;
    unsigned long round;
    int64_t deadline;
} park_t;

static h2o_req_t *g_retrying; /* the request on_req runs again now */

static int on_req(h2o_handler_t *self, h2o_req_t *req);

static void on_park_dispose(void *p)
{
    park_t *pk = *(park_t **)p;
    if (pk != NULL)
        pk->req = NULL;
}

static void on_park_closed(uv_handle_t *hd)
{
    free(hd->data);
}

static void on_park_tick(uv_timer_t *t)
{
    park_t *pk = t->data;
    if (pk->req != NULL && !bnb__jwks_round_done(pk->k, pk->round) && bnb__mono_ms() < pk->deadline)
        return;
    uv_timer_stop(t);
    atomic_fetch_sub(&bnb__host->inflight, 1);
    if (pk->req != NULL) {
        *pk->slot = NULL;
        g_retrying = pk->req;
        on_req(pk->self, pk->req);
        g_retrying = NULL;
    }
    uv_close((uv_handle_t *)t, on_park_closed);
}

/* 0 when parked (the request is answered later), -1 when it cannot be */
static int park_for_jwks(bnb_host_t *h, h2o_handler_t *self, h2o_req_t *req, bnb_jwks_t *k, unsigned long round)
{
    park_t *pk = calloc(1, sizeof(*pk));
    if (pk == NULL)
        return -1;
    pk->self = self;
    pk->req = req;
    pk->k = k;
    pk->round = round;
    int wait = bnb__jwks_kid_wait_ms(k);
    pk->deadline = bnb__mono_ms() + (wait > 0 ? wait : 0);
    uv_timer_init(h->loop, &pk->t);
    pk->t.data = pk;
    pk->slot = h2o_mem_alloc_shared(&req->pool, sizeof(*pk->slot), on_park_dispose);
    *pk->slot = pk;
    atomic_fetch_add(&h->inflight, 1);
    uv_timer_start(&pk->t, on_park_tick, 5, 5);
    return 0;
}

/* ---- what h2o 2.2.5 lets through ------------------------------------------------
 *
 * HTTP/1.1 framing (RFC 9112 §6.1, §6.3): h2o takes Transfer-Encoding over
 * Content-Length and the first of several Content-Lengths, and drops those
 * headers from req->headers, so a handler cannot see the conflict. The
 * request head is still at the start of the socket's input buffer while the
 * request is handled (h2o consumes it after the answer): read it there. */
static const char *h1_framing_error(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return NULL;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL || sock->input == NULL)
        return NULL;
    const char *p = sock->input->bytes, *end = p + sock->input->size;
    int ncl = 0, nte = 0, cl_differ = 0;
    unsigned long long cl = 0;
    /* skip the request line */
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL)
        return NULL;
    for (p = nl + 1; p < end; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        size_t ll = (size_t)(nl - p);
        if (ll > 0 && p[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break; /* end of the head */
        const char *colon = memchr(p, ':', ll);
        if (colon == NULL)
            continue;
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1, *ve = p + ll;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
            char num[32];
            snprintf(num, sizeof(num), "%.*s", (int)(ve - v < 31 ? ve - v : 31), v);
            unsigned long long x = strtoull(num, NULL, 10);
            if (ncl > 0 && x != cl)
                cl_differ = 1;
            cl = x;
            ncl++;
        } else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
            nte++;
        }
    }
    if (nte > 0 && ncl > 0)
        return "a request with both Transfer-Encoding and Content-Length is ambiguous";
    if (cl_differ)
        return "a request with different Content-Length values is ambiguous";
    return NULL;
}

/* Header budget: what h2o decoded (HPACK can expand a few bytes into
 * megabytes by referring to one table entry again and again) is measured
 * before anything of it is copied. RFC 7541 counts 32 bytes per entry. */
#define HDR_MAX_COUNT 100
#define HDR_MAX_BYTES (64 * 1024)

static int headers_over_budget(h2o_req_t *req)
{
    if (req->headers.size > HDR_MAX_COUNT)
        return 1;
    size_t total = req->path.len + req->authority.len + req->method.len;
    for (size_t i = 0; i < req->headers.size; i++) {
        total += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 32;
        if (total > HDR_MAX_BYTES)
            return 1;
    }
    return 0;
}

/* ---- one request, in stages ---------------------------------------------------
 * on_req runs these in order on the loop: probes, route, identify, limit,
 * authorize, parse, dispatch. Each stage fills its part of the rq_t and
 * returns 0, or answers the request (rq_refuse) and returns -1; dispatch
 * hands what is left to a worker thread. */

typedef struct rq {
    bnb_host_t *h;
    h2o_handler_t *self;
    h2o_req_t *req;
    int64_t t0; /* ns, for durations */
    const char *path;
    size_t plen;
    char method[16];
    /* route */
    bnb_route_match_t m;
    bnb_route_entry_t *e; /* a plugin's route, or NULL */
    const char *upstream; /* or a gateway upstream, or NULL */
    int upi, h2c;
    char label[160]; /* metrics and breaker label */
    /* identify */
    bnb_identity_t id;
    int has_id;
    char *bearer;
    char rid_hdr[64]; /* X-Request-Id as signed by the gateway */
    int signer;       /* bnb_signer_t, or -1 */
    /* parse */
    json_t *body;
} rq_t;

/* Answer the request with a problem and free what the stages gathered. */
static int rq_refuse(rq_t *q, int status, const char *detail)
{
    json_decref(q->body);
    q->body = NULL;
    free(q->bearer);
    q->bearer = NULL;
    bnb__route_match_clear(&q->m);
    problem_now(q->h, q->req, q->label, q->t0, status, detail);
    return -1;
}

/* Copy a request header into out ("" when absent). */
static void header_copy(h2o_req_t *req, const char *name, size_t nlen, char *out, size_t outlen)
{
    ssize_t k = h2o_find_header_by_str(&req->headers, name, nlen, -1);
    out[0] = '\0';
    if (k != -1)
        snprintf(out, outlen, "%.*s", (int)req->headers.entries[k].value.len, req->headers.entries[k].value.base);
}

/* /healthz, /readyz, /metrics: 1 when the request was one of them (answered). */
static int serve_probe(rq_t *q)
{
    bnb_host_t *h = q->h;
    h2o_req_t *req = q->req;
    if (!iov_eq(req->method, "GET") && !iov_eq(req->method, "HEAD"))
        return 0;
    if (q->plen == 8 && memcmp(q->path, "/healthz", 8) == 0) {
        static const char ok[] = "{\"status\":\"ok\"}";
        answer_now(h, req, "/healthz", q->t0, 200, "application/json", ok, sizeof(ok) - 1);
        return 1;
    }
    if (q->plen == 7 && memcmp(q->path, "/readyz", 7) == 0) {
        /* an edge: while at least one upstream is ready (asked off the loop) */
        int ready =
            atomic_load(&h->ready) && !atomic_load(&h->draining) && bnb__events_ready(h) && bnb__gateway_ready(NULL);
        const char *why = ready                       ? "{\"status\":\"ready\"}"
                          : atomic_load(&h->draining) ? "{\"status\":\"draining\"}"
                                                      : "{\"status\":\"not ready\"}";
        answer_now(h, req, "/readyz", q->t0, ready ? 200 : 503, "application/json", why, strlen(why));
        return 1;
    }
    if (q->plen == 13 && memcmp(q->path, "/openapi.json", 13) == 0) {
        answer_now(h, req, "/openapi.json", q->t0, 200, "application/json", bnb__openapi_json, bnb__openapi_json_len);
        return 1;
    }
    if (q->plen == 8 && memcmp(q->path, "/metrics", 8) == 0) {
        bnb__breakers_export(h);
        size_t jwks_keys = 0;
        unsigned long jwks_failures = 0;
        if (bnb__auth_jwks_stats(h->auth, &jwks_keys, &jwks_failures) == 0) {
            bnb__metrics_set(h->metrics, "bearbnb_jwks_keys", NULL, (double)jwks_keys);
            /* a counter: add what failed since the last scrape (this runs on the loop only) */
            bnb__metrics_add(h->metrics, "bearbnb_jwks_refresh_failures_total", NULL,
                             (double)(jwks_failures - h->jwks_failures_exported));
            h->jwks_failures_exported = jwks_failures;
        }
        bnb__metrics_set(h->metrics, "bearbnb_inflight_requests", NULL, atomic_load(&h->inflight));
        bnb__metrics_set(h->metrics, "bearbnb_http_reset_streams_dropped", NULL, (double)g_resets_dropped);
        bnb__metrics_set(h->metrics, "bearbnb_http_connections_shut", NULL, (double)g_conns_shut);
        bnb__metrics_set(h->metrics, "bearbnb_http_streams_open", NULL, (double)g_streams_open);
        bnb__metrics_set(h->metrics, "bearbnb_http_streams_dropped", NULL, (double)g_streams_dropped);
        bnb__metrics_set(h->metrics, "bearbnb_gateway_streams_open", NULL, (double)bnb__proxy_streams_open());
        bnb__metrics_set(h->metrics, "bearbnb_http_read_cache_hits", NULL, (double)g_rc_hits);
        bnb__metrics_set(h->metrics, "bearbnb_http_read_cache_misses", NULL, (double)g_rc_misses);
        bnb__metrics_set(h->metrics, "bearbnb_http2_bodies_refused", NULL, (double)g_h2_bodies_refused);
        int up_ready = 0;
        int gw_ready = bnb__gateway_ready(&up_ready);
        bnb__metrics_set(h->metrics, "bearbnb_gateway_upstreams_ready", NULL, (double)up_ready);
        bnb__metrics_set(h->metrics, "bearbnb_ready", NULL,
                         atomic_load(&h->ready) && !atomic_load(&h->draining) && gw_ready ? 1 : 0);
        size_t len = 0;
        char *s = bnb__metrics_render(h->metrics, &len);
        answer_now(h, req, "/metrics", q->t0, 200, "text/plain; version=0.0.4", s ? s : "", s ? len : 0);
        free(s);
        return 1;
    }
    return 0;
}

/* ---- sign-in for the web app (issue 14) ----------------------------------------
 * GET /auth/config tells the app how to sign in: {"mode":"dev"} while the
 * generated development key is the only key (no auth.key_file, no JWKS),
 * {"mode":"oidc","issuer","clientId"} when a JWKS is configured (Keycloak:
 * authorization code + PKCE with the public client auth.web_client_id),
 * {"mode":"none"} otherwise. POST /dev/token {"sub","role"} exists only in
 * the first case and answers {"token"} signed with that development key.
 * Both are answered here, on the loop (a JSON body of at most http.max_body
 * and one HS256 signature). */

#define DEV_TOKEN_TTL_S (12 * 3600)

static int dev_sub_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && strchr("._@-", s[i]) == NULL)
            return 0;
    return 1;
}

static void dev_token(rq_t *q)
{
    bnb_host_t *h = q->h;
    h2o_req_t *req = q->req;
    const char *route = "/dev/token";
    if (!iov_eq(req->method, "POST")) {
        add_header(req, "allow", "POST");
        problem_now(h, req, route, q->t0, 405, "method not allowed here; allowed: POST");
        return;
    }
    if (req->entity.len > h->max_body) {
        problem_now(h, req, route, q->t0, 413, "the body is too large");
        return;
    }
    ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ci == -1 || !bnb__media_type_is_json(req->headers.entries[ci].value.base, req->headers.entries[ci].value.len)) {
        problem_now(h, req, route, q->t0, 415, "the body must be JSON (Content-Type: application/json)");
        return;
    }
    json_t *b = req->entity.base ? json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    const char *sub = json_string_value(json_object_get(b, "sub"));
    const char *role = json_string_value(json_object_get(b, "role"));
    const char *bad = !json_is_object(b)                ? "the body must be a JSON object"
                      : sub == NULL || !dev_sub_ok(sub) ? "sub must be 1 to 64 characters of A-Z a-z 0-9 . _ @ -"
                      : role == NULL || (strcmp(role, "host") && strcmp(role, "guest"))
                          ? "role must be \"host\" or \"guest\""
                          : NULL;
    char *tok = NULL;
    if (bad == NULL && bnb__auth_mint(h->auth, sub, role, DEV_TOKEN_TTL_S, &tok) != 0)
        bad = "";
    if (bad != NULL) {
        if (bad[0])
            problem_now(h, req, route, q->t0, 400, bad);
        else
            problem_now(h, req, route, q->t0, 500, "cannot sign a token");
        json_decref(b);
        return;
    }
    json_t *out = json_pack("{s:s, s:s, s:s, s:i, s:s}", "token", tok, "sub", sub, "role", role, "expiresIn",
                            DEV_TOKEN_TTL_S, "note", "development sign-in: anyone may take any name here");
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    add_header(req, "cache-control", "no-store");
    answer_now(h, req, route, q->t0, text ? 200 : 500, "application/json", text ? text : "{}", text ? strlen(text) : 2);
    bnb__log(BNB_LOG_INFO, "dev sign-in: a development token for '%s' (%s)", sub, role);
    free(text);
    json_decref(out);
    free(tok);
    json_decref(b);
}

/* 1 when the request was one of these (answered). */
static int serve_signin(rq_t *q)
{
    bnb_host_t *h = q->h;
    h2o_req_t *req = q->req;
    if (q->plen == 10 && memcmp(q->path, "/dev/token", 10) == 0 && h->dev_signin) {
        dev_token(q);
        return 1;
    }
    if (!(q->plen == 12 && memcmp(q->path, "/auth/config", 12) == 0))
        return 0;
    if (!iov_eq(req->method, "GET") && !iov_eq(req->method, "HEAD")) {
        add_header(req, "allow", "GET, HEAD");
        problem_now(h, req, "/auth/config", q->t0, 405, "method not allowed here; allowed: GET, HEAD");
        return 1;
    }
    json_t *c;
    if (h->dev_signin)
        c = json_pack("{s:s, s:s}", "mode", "dev", "devTokenUrl", "/dev/token");
    else if (h->oidc)
        c = json_pack("{s:s, s:s, s:s}", "mode", "oidc", "issuer", bnb__config_str(h->cfg, "auth.issuer") ?: "",
                      "clientId", bnb__config_str(h->cfg, "auth.web_client_id") ?: "bearbnb-web");
    else
        c = json_pack("{s:s}", "mode", "none");
    char *text = c ? json_dumps(c, JSON_COMPACT) : NULL;
    add_header(req, "cache-control", "no-cache");
    answer_now(h, req, "/auth/config", q->t0, text ? 200 : 500, "application/json", text ? text : "{}",
               text ? strlen(text) : 2);
    free(text);
    json_decref(c);
    return 1;
}

/* A plugin's route, else a gateway upstream; 405 or 404 otherwise. */
static int stage_route(rq_t *q)
{
    char allow[128];
    /* HEAD is answered wherever GET is (RFC 9110 §9.3.2); h2o leaves the body out */
    int st = bnb__router_match(q->h->router, strcmp(q->method, "HEAD") == 0 ? "GET" : q->method, q->path, q->plen,
                               &q->m, allow, sizeof(allow));
    if (st == 405 && strstr(allow, "GET") != NULL && strlen(allow) + 7 < sizeof(allow))
        strcat(allow, ", HEAD");
    if (st == 200) {
        q->e = q->m.route;
        snprintf(q->label, sizeof(q->label), "%s", q->e->pattern);
        return 0;
    }
    if ((q->upstream = bnb__gateway_route(q->path, q->plen, &q->upi, &q->h2c)) != NULL) {
        snprintf(q->label, sizeof(q->label), "edge %.*s", (int)(q->plen < 40 ? q->plen : 40), q->path);
        char *s = strchr(q->label + 6, '/');
        if (s != NULL && (s = strchr(s + 1, '/')) != NULL)
            *s = '\0'; /* label by the first segment: "edge /rooms" */
        return 0;
    }
    /* no API route: the web app's files (GET/HEAD), when this is one */
    if (st == 404 && bnb__web_serve(q->h, q->req, q->path, q->plen)) {
        bnb__route_match_clear(&q->m);
        return -1;
    }
    snprintf(q->label, sizeof(q->label), "unmatched");
    if (st == 405) {
        add_header(q->req, "allow", allow);
        char d[200];
        snprintf(d, sizeof(d), "method %s is not allowed here; allowed: %s", q->method, allow);
        return rq_refuse(q, 405, d);
    }
    return rq_refuse(q, 404, "no such route");
}

/* Behind an enforcing gateway: the identity in the signed headers it forwards. */
static int identify_signed(rq_t *q)
{
    h2o_req_t *req = q->req;
    char sig[200], user[128], role[16], pq[3072];
    header_copy(req, H2O_STRLIT("x-bnb-gateway"), sig, sizeof(sig));
    header_copy(req, H2O_STRLIT("x-bnb-user"), user, sizeof(user));
    header_copy(req, H2O_STRLIT("x-bnb-role"), role, sizeof(role));
    header_copy(req, H2O_STRLIT("x-request-id"), q->rid_hdr, sizeof(q->rid_hdr));
    /* the path and query as they came, still encoded: what the signer sent */
    if (req->path.len >= sizeof(pq))
        return rq_refuse(q, 403, "requests must come through the gateway");
    snprintf(pq, sizeof(pq), "%.*s", (int)req->path.len, req->path.base);
    q->signer = bnb__gateway_verify(sig, q->method, pq, q->rid_hdr, user, role, req->entity.base,
                                    req->entity.base ? req->entity.len : 0, bnb__now_ms() / 1000);
    if (q->signer < 0)
        return rq_refuse(q, 403, "requests must come through the gateway");
    if (user[0]) {
        snprintf(q->id.sub, sizeof(q->id.sub), "%s", user);
        snprintf(q->id.role, sizeof(q->id.role), "%s", role);
        q->has_id = 1;
    }
    ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (ai != -1 && req->headers.entries[ai].value.len > 7)
        q->bearer = strndup(req->headers.entries[ai].value.base + 7, req->headers.entries[ai].value.len - 7);
    return 0;
}

/* GET /dashboard/stream?access_token=T: T (not decoded: a JWT needs no
 * escaping) and its length, or NULL. */
static const char *stream_query_token(rq_t *q, size_t *len)
{
    h2o_req_t *req = q->req;
    if (!(q->plen == 17 && memcmp(q->path, "/dashboard/stream", 17) == 0) || req->query_at == SIZE_MAX)
        return NULL;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *seg_end = amp ? amp : end;
        if (seg_end - p >= 13 && memcmp(p, "access_token=", 13) == 0) {
            *len = (size_t)(seg_end - p - 13);
            return p + 13;
        }
        p = seg_end + 1;
    }
    return NULL;
}

/* Otherwise: the bearer token, when there is one. A token whose kid is being
 * fetched parks the request (answered later, on_park_tick). */
static int identify_bearer(rq_t *q)
{
    h2o_req_t *req = q->req;
    ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (ai == -1) {
        /* a browser's EventSource cannot send headers: the stream takes
         * ?access_token= (RFC 6750 §2.3; the access log leaves it out) */
        size_t tl = 0;
        const char *t = stream_query_token(q, &tl);
        if (t == NULL)
            return 0;
        if (tl == 0 || tl > 8192)
            return rq_refuse(q, 401, "access_token must be a bearer token");
        q->bearer = strndup(t, tl);
    } else {
        h2o_iovec_t v = req->headers.entries[ai].value;
        if (v.len < 8 || strncasecmp(v.base, "Bearer ", 7) != 0 || v.len > 8192) {
            add_header(req, "www-authenticate", "Bearer");
            return rq_refuse(q, 401, "Authorization must be 'Bearer <token>'");
        }
        q->bearer = strndup(v.base + 7, v.len - 7);
    }
    char why[160] = "out of memory";
    bnb__jwks_take_pending(NULL, NULL);
    if (q->bearer != NULL && bnb__auth_verify(q->h->auth, q->bearer, &q->id, why, sizeof(why)) == 0) {
        q->has_id = 1;
        return 0;
    }
    bnb_jwks_t *jk = NULL;
    unsigned long round = 0;
    if (bnb__jwks_take_pending(&jk, &round) && g_retrying != req && park_for_jwks(q->h, q->self, req, jk, round) == 0) {
        free(q->bearer);
        q->bearer = NULL;
        bnb__route_match_clear(&q->m);
        return -1;
    }
    add_header(req, "www-authenticate", "Bearer error=\"invalid_token\"");
    char d[200];
    snprintf(d, sizeof(d), "invalid token: %s", why);
    return rq_refuse(q, 401, d);
}

static int stage_identify(rq_t *q)
{
    return q->h->gw_enforce ? identify_signed(q) : identify_bearer(q);
}

/* Limits (OWASP API4): a bucket per user, and one per client address. */
static int stage_limit(rq_t *q)
{
    bnb_host_t *h = q->h;
    /* a request signed by the edge or a service was counted where it came in;
     * counting it again here would make the edge one client */
    if (q->signer >= 0)
        return 0;
    int64_t wait = 0;
    int limited = q->has_id && h->rl_user != NULL && !bnb__ratelimit_take(h->rl_user, q->id.sub, bnb__mono_ms(), &wait);
    if (!limited && h->rl_ip != NULL) {
        char ip[64] = "?";
        struct sockaddr_storage ss;
        socklen_t sl = q->req->conn->callbacks->get_peername(q->req->conn, (struct sockaddr *)&ss);
        if (sl > 0 && ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
        else if (sl > 0 && ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
        limited = !bnb__ratelimit_take(h->rl_ip, ip, bnb__mono_ms(), &wait);
    }
    if (!limited)
        return 0;
    char ra[32];
    snprintf(ra, sizeof(ra), "%lld", (long long)((wait + 999) / 1000));
    add_header(q->req, "retry-after", ra);
    return rq_refuse(q, 429, "rate limit exceeded; retry later");
}

/* The route's role, a paused plugin, an open breaker in front of the upstream. */
static int stage_authorize(rq_t *q)
{
    bnb_route_entry_t *e = q->e;
    if (e != NULL && e->who == BNB_ROLE_SERVICE && q->signer != BNB_SIGNED_SERVICE)
        return rq_refuse(q, 403, "this route is internal: only other services may call it");
    if (e != NULL && e->who != BNB_ROLE_ANYONE && e->who != BNB_ROLE_SERVICE) {
        const char *need = e->who == BNB_ROLE_HOST ? "host" : e->who == BNB_ROLE_GUEST ? "guest" : NULL;
        if (!q->has_id) {
            add_header(q->req, "www-authenticate", "Bearer");
            return rq_refuse(q, 401, "this route needs a bearer token");
        }
        if (need != NULL && strcmp(q->id.role, need) != 0) {
            char d[128];
            snprintf(d, sizeof(d), "this route is for users with role '%s'", need);
            return rq_refuse(q, 403, d);
        }
    }
    if (e != NULL && atomic_load(&e->ctx->paused)) {
        add_header(q->req, "retry-after", "1");
        return rq_refuse(q, 503, "the service is paused");
    }
    if (q->upstream != NULL) {
        bnb_breaker_t *b = bnb__breaker_for(q->h, q->label);
        if (b != NULL && !bnb__breaker_allow(b, bnb__mono_ms())) {
            char ra[32];
            snprintf(ra, sizeof(ra), "%lld",
                     (long long)((bnb__breaker_retry_after_ms(b, bnb__mono_ms()) + 999) / 1000));
            add_header(q->req, "retry-after", ra);
            return rq_refuse(q, 503, "the service is unavailable (circuit open); retry later");
        }
    }
    return 0;
}

/* The query's percent-encoding and the correlation id, before any work. */
static int parse_query_and_ids(rq_t *q)
{
    h2o_req_t *req = q->req;
    char d[200] = "";
    if (req->query_at != SIZE_MAX) {
        char qn[64];
        if (bnb__query_check(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1, qn, sizeof(qn)) !=
            0)
            snprintf(d, sizeof(d), "query parameter '%s': malformed percent-encoding", qn);
    }
    ssize_t xi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-correlation-id"), -1);
    if (!d[0] && xi != -1 &&
        !bnb__correlation_id_ok(req->headers.entries[xi].value.base, req->headers.entries[xi].value.len))
        snprintf(d, sizeof(d), "header X-Correlation-Id must be 1 to 63 characters of A-Z a-z 0-9 . _ : -");
    return d[0] ? rq_refuse(q, 400, d) : 0;
}

/* The body: size limit; for a plugin's route a JSON object (an upstream's
 * body passes through as it is: the service checks it). */
static int parse_body(rq_t *q)
{
    h2o_req_t *req = q->req;
    if (req->entity.base == NULL || req->entity.len == 0)
        return 0;
    char d[256];
    if (req->entity.len > q->h->max_body) {
        snprintf(d, sizeof(d), "the body has %zu bytes; the limit is %zu", req->entity.len, q->h->max_body);
        return rq_refuse(q, 413, d);
    }
    if (q->upstream != NULL)
        return 0;
    ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ci == -1 || !bnb__media_type_is_json(req->headers.entries[ci].value.base, req->headers.entries[ci].value.len))
        return rq_refuse(q, 415, "the body must be JSON (Content-Type: application/json)");
    json_error_t je;
    q->body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &je);
    if (q->body == NULL) {
        snprintf(d, sizeof(d), "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
        return rq_refuse(q, 400, d);
    }
    if (!json_is_object(q->body))
        return rq_refuse(q, 400, "the body must be a JSON object");
    return 0;
}

static int stage_parse(rq_t *q)
{
    return parse_query_and_ids(q) != 0 ? -1 : parse_body(q);
}

/* For an upstream: where to, and the raw body. 0 or -1 (out of memory). */
static int fill_upstream(rq_t *q, bnb_req_t *r)
{
    h2o_req_t *req = q->req;
    r->upstream = strdup(q->upstream);
    r->upstream_index = q->upi;
    r->upstream_h2c = q->h2c;
    if (r->upstream == NULL)
        return -1;
    /* the path and query as received, still encoded (the service decodes
     * them as this host would), and signed as forwarded */
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    free(r->path);
    free(r->query);
    r->query = NULL;
    r->path = bnb__uri_forwardable(req->path.base, plen);
    if (r->path == NULL)
        return -1;
    if (req->query_at != SIZE_MAX &&
        (r->query = bnb__uri_forwardable(req->path.base + plen + 1, req->path.len - plen - 1)) == NULL)
        return -1;
    if (req->entity.base == NULL || req->entity.len == 0)
        return 0;
    r->raw_in = malloc(req->entity.len + 1);
    if (r->raw_in == NULL)
        return -1;
    memcpy(r->raw_in, req->entity.base, req->entity.len);
    r->raw_in[req->entity.len] = '\0';
    r->raw_in_len = req->entity.len;
    return 0;
}

/* The plugin whose store backs the answer when the read cache may serve it. */
static bnb_inst_t *rc_candidate(const rq_t *q)
{
    const h2o_req_t *req = q->req;
    bnb_inst_t *in = q->e != NULL ? q->e->ctx : NULL;
    if (in == NULL || q->upstream != NULL || q->has_id || q->bearer != NULL || q->e->who != BNB_ROLE_ANYONE ||
        (strcmp(q->method, "GET") != 0 && strcmp(q->method, "HEAD") != 0) || req->entity.len != 0 ||
        in->store == NULL || in->store->ops != &bnb_storage_sqlite)
        return NULL;
    return in;
}

/* Answer from the read cache: 1 when answered. */
static int stage_cached(rq_t *q, bnb_inst_t *in)
{
    h2o_req_t *req = q->req;
    const rc_ent_t *e = in != NULL ? rc_get(req->path.base, req->path.len, in) : NULL;
    if (e == NULL) {
        g_rc_misses += in != NULL;
        return 0;
    }
    g_rc_hits++;
    bnb_exec_t ids;
    memset(&ids, 0, sizeof(ids));
    fill_ids(req, &ids);
    add_header(req, "x-request-id", ids.request_id);
    double secs = (double)((int64_t)uv_hrtime() - q->t0) / 1e9;
    access_log(req, ids.request_id, ids.traceparent, 200, secs);
    send_body(req, 200, "application/json", e->body, e->len);
    bnb__metrics_http(q->h->metrics, q->label, q->method, 200, secs);
    bnb__route_match_clear(&q->m);
    return 1;
}

/* Hand the request to a worker thread (the plugin's handler or the proxy). */
static int stage_dispatch(rq_t *q)
{
    h2o_req_t *req = q->req;
    bnb_inst_t *rc = rc_candidate(q);
    if (stage_cached(q, rc))
        return 0;
    http_job_t *j = new_job(q->h, req, q->label, q->t0);
    if (j == NULL)
        return rq_refuse(q, 503, "out of memory");
    if ((j->rc_inst = rc) != NULL)
        j->rc_gen = atomic_load(&rc->store_gen); /* before the handler reads anything */
    bnb_req_t *r = &j->r;
    if (q->h->gw_enforce && q->rid_hdr[0])
        snprintf(r->exec.request_id, sizeof(r->exec.request_id), "%s", q->rid_hdr);
    /* from here on r owns the match, the body and the bearer */
    r->ctx = q->e ? q->e->ctx : NULL;
    r->route = q->e;
    r->match = q->m;
    r->body = q->body;
    r->bearer = q->bearer;
    r->has_id = q->has_id;
    if (q->has_id)
        r->id = q->id;
    r->path = strndup(q->path, q->plen);
    r->can_stream = 1;
    if (req->query_at != SIZE_MAX)
        r->query = strndup(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    int oom = r->method == NULL || r->path == NULL || copy_headers(req, r) != 0;
    if (!oom && q->upstream != NULL)
        oom = fill_upstream(q, r) != 0;
    if (oom) {
        bnb__req_free_parts(r);
        free(j);
        problem_now(q->h, req, q->label, q->t0, 503, "out of memory");
        return -1;
    }
    ssize_t ci = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-correlation-id"), -1);
    if (ci != -1 && req->headers.entries[ci].value.len < sizeof(r->exec.correlation_id))
        snprintf(r->exec.correlation_id, sizeof(r->exec.correlation_id), "%.*s",
                 (int)req->headers.entries[ci].value.len, req->headers.entries[ci].value.base);
    if (start_job(q->h, req, j) != 0)
        problem_now(q->h, req, q->label, q->t0, 503, "cannot schedule the work");
    return 0;
}

/* Before anything is read or copied: the header budget and HTTP/1.1 framing.
 * 1 when the request was refused (answered, the connection closes). */
static int refuse_framing(rq_t *q)
{
    h2o_req_t *req = q->req;
    char d[160];
    int status = 0;
    const char *framing;
    if (headers_over_budget(req)) {
        snprintf(d, sizeof(d), "the request headers exceed %d fields or %d bytes", HDR_MAX_COUNT, HDR_MAX_BYTES);
        status = 431;
    } else if ((framing = h1_framing_error(req)) != NULL) {
        snprintf(d, sizeof(d), "%s", framing);
        status = 400;
    }
    if (status == 0)
        return 0;
    /* what follows on this connection cannot be trusted */
    req->http1_is_persistent = 0;
    problem_now(q->h, req, "unmatched", q->t0, status, d);
    return 1;
}

static void h2_adopt(http_conn_t *c, h2o_http2_conn_t *hc);

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    /* a connection shut down for resetting streams: h2o still hands over what
     * it had read; none of it gets any work (h2o disposes it as it closes) */
    http_conn_t *c = conn_of(req);
    if (c != NULL && c->shut)
        return 0;
    /* an h2c Upgrade: h2o made its HTTP/2 connection after the first request */
    if (c != NULL && c->h2 == NULL && req->version >= 0x200)
        h2_adopt(c, (h2o_http2_conn_t *)req->conn);
    rq_t q = {.h = bnb__host, .self = self, .req = req, .t0 = (int64_t)uv_hrtime(), .signer = -1, .upi = -1};
    q.path = req->path_normalized.base;
    q.plen = req->path_normalized.len;
    if (refuse_framing(&q) || serve_probe(&q) || serve_signin(&q))
        return 0;
    if (q.plen >= 6 && memcmp(q.path, "/admin", 6) == 0 && (q.plen == 6 || q.path[6] == '/'))
        return handle_admin(q.h, req, q.path, q.plen, q.t0);
    snprintf(q.method, sizeof(q.method), "%.*s", (int)(req->method.len < 15 ? req->method.len : 15), req->method.base);
    if (stage_route(&q) == 0 && stage_identify(&q) == 0 && stage_limit(&q) == 0 && stage_authorize(&q) == 0 &&
        stage_parse(&q) == 0)
        stage_dispatch(&q);
    return 0;
}

/* ---- HTTP/2 request bodies over the limit ------------------------------------------
 *
 * h2o 2.2.5 hands an HTTP/2 request to a handler only once its whole body is
 * in memory, and a body past max_request_entity_size gets
 * RST_STREAM(REFUSED_STREAM) from handle_data_frame (lib/http2/connection.c):
 * no answer, and an invitation to send it again. It has no hook for a body
 * still arriving, so the host looks at each HTTP/2 connection's receiving
 * streams right after h2o parsed what came in (a wrapper around h2o's read
 * callback of the connection):
 *
 * - a body over http.max_body but within g_h2_drain (4 x max_body + 1 MiB)
 *   is read whole and answered 413 problem+json by parse_body, as on
 *   HTTP/1.1; every client copes with that (curl 7.88, Debian's, fails an
 *   upload whose answer comes early: curl/curl#22984);
 * - a stream whose Content-Length or whose body so far is over g_h2_drain
 *   is answered 413 problem+json at once (as h2o answers a stream with
 *   invalid headers: REQ_PENDING -> SEND_HEADERS), its buffered body freed,
 *   the connection not read until the answer has left (h2o would reset
 *   the stream on its next DATA frame and drop the answer, and libuv reads
 *   again before the loop writes), then RST_STREAM(NO_ERROR) asks the
 *   client to stop sending (RFC 9113 §8.1, as httpd and nginx do). DATA
 *   still in flight gets RST_STREAM(STREAM_CLOSED) from h2o and is dropped.
 *
 * Memory per stream stays within g_h2_drain plus one stream window (64 KiB);
 * h2o's own max_request_entity_size is g_h2_drain + 1 MiB, a backstop.
 *
 * h2o creates its HTTP/2 connection inside a read (h2c prior knowledge), a
 * write callback (TLS, after the handshake) or after an h2c Upgrade; new ones
 * are appended to g_ctx.http2._conns, so a check handle (after each poll)
 * adopts those at the tail it does not know yet, and on_req adopts the
 * upgraded ones (their first stream is a request). */

static size_t g_h2_drain;
static uv_check_t g_h2_check;
static int g_h2_check_on;
static h2o_socket_cb g_h2_on_read; /* h2o's read callback of an HTTP/2 connection */

static http_conn_t *conn_by_sock(h2o_socket_t *sock)
{
    for (http_conn_t *c = g_conns[conn_bucket(sock)]; c != NULL; c = c->hnext)
        if (c->sock == sock && !c->closed)
            return c;
    return NULL;
}

typedef struct early413 {
    http_conn_t *c;
    h2o_http2_conn_t *hc;
    h2o_req_t *req;
    uint32_t stream_id;
} early413_t;

/* The stream is closed (its answer sent, or reset): when the answer left
 * whole, ask the client to stop sending the body. */
static void on_h2_read(h2o_socket_t *sock, const char *err);

static void on_early413_dispose(void *p)
{
    early413_t *e = p;
    e->c->h2_early--;
    if (e->hc->state >= H2O_HTTP2_CONN_STATE_IS_CLOSING)
        return;
    if (e->req->bytes_sent != 0) {
        h2o_http2__encode_rst_stream_frame(&e->hc->_write.buf, e->stream_id, 0 /* NO_ERROR */);
        h2o_http2_conn_request_write(e->hc);
    }
    if (e->c->h2_early == 0)
        h2o_socket_read_start(e->hc->sock, on_h2_read);
}

/* What h2o does before it hands a request to a handler (request.c,
 * setup_before_processing), for a stream answered before that. */
static void h2_bind_request(h2o_req_t *req)
{
    h2o_hostconf_t *hostconf = *req->conn->hosts;
    h2o_get_timestamp(req->conn->ctx, &req->pool, &req->processed_at);
    if (req->input.authority.base == NULL)
        req->input.authority = hostconf->authority.hostport;
    req->scheme = req->input.scheme;
    req->method = req->input.method;
    req->authority = req->input.authority;
    req->path = req->input.path;
    req->path_normalized = h2o_url_normalize_path(&req->pool, req->input.path.base, req->input.path.len, &req->query_at,
                                                  &req->norm_indexes);
    req->input.query_at = req->query_at;
    h2o_req_bind_conf(req, hostconf, &hostconf->fallback_path);
}

static void h2_refuse_body(http_conn_t *c, h2o_http2_conn_t *hc, h2o_http2_stream_t *st)
{
    bnb_host_t *h = bnb__host;
    char d[160];
    if (st->_expected_content_length != SIZE_MAX && st->_expected_content_length > g_h2_drain)
        snprintf(d, sizeof(d), "the body has %zu bytes; the limit is %zu", st->_expected_content_length, h->max_body);
    else
        snprintf(d, sizeof(d), "the body has more than %zu bytes; the limit is %zu", g_h2_drain, h->max_body);
    h2o_buffer_dispose(&st->_req_body);
    /* as h2o answers a stream whose headers it refuses (handle_incoming_request) */
    h2o_http2_stream_set_state(hc, st, H2O_HTTP2_STREAM_STATE_REQ_PENDING);
    h2o_http2_stream_set_state(hc, st, H2O_HTTP2_STREAM_STATE_SEND_HEADERS);
    if (hc->pull_stream_ids.max_processed < st->stream_id)
        hc->pull_stream_ids.max_processed = st->stream_id;
    h2o_req_t *req = &st->req;
    h2_bind_request(req);
    early413_t *e = h2o_mem_alloc_shared(&req->pool, sizeof(*e), on_early413_dispose);
    *e = (early413_t){.c = c, .hc = hc, .req = req, .stream_id = st->stream_id};
    /* h2o resets a stream that gets DATA while its answer waits to be
     * written, and libuv reads again before the loop writes it: read no more
     * until the answer has left (the stream closes: on_early413_dispose) */
    if (c->h2_early++ == 0)
        h2o_socket_read_stop(hc->sock);
    g_h2_bodies_refused++;
    problem_now(h, req, "unmatched", (int64_t)uv_hrtime(), 413, d);
}

/* After h2o parsed what came in on c: its streams still receiving a body
 * too large to read whole get their answer now. */
static void h2_check_bodies(http_conn_t *c)
{
    h2o_http2_conn_t *hc = c->h2;
    if (hc->state >= H2O_HTTP2_CONN_STATE_IS_CLOSING || hc->num_streams.pull.open <= hc->num_streams.pull.half_closed)
        return; /* no stream receiving */
    size_t max = g_h2_drain, n = 0;
    uint32_t over[16];
    h2o_http2_stream_t *st;
    kh_foreach_value(hc->streams, st, {
        if (n < sizeof(over) / sizeof(over[0]) && st->state == H2O_HTTP2_STREAM_STATE_RECV_BODY &&
            st->_req_body != NULL &&
            (st->_req_body->size > max ||
             (st->_expected_content_length != SIZE_MAX && st->_expected_content_length > max)))
            over[n++] = st->stream_id;
    });
    for (size_t i = 0; i < n; i++) {
        st = h2o_http2_conn_get_stream(hc, over[i]);
        if (st != NULL && st->state == H2O_HTTP2_STREAM_STATE_RECV_BODY)
            h2_refuse_body(c, hc, st);
    }
}

static void on_h2_read(h2o_socket_t *sock, const char *err)
{
    g_h2_on_read(sock, err);
    if (err != NULL || sock->_cb.read != on_h2_read)
        return; /* closed, or closing (TLS shutdown reads with its own callback) */
    http_conn_t *c = conn_by_sock(sock);
    if (c == NULL || c->h2 == NULL || uv_is_closing((uv_handle_t *)&c->tcp))
        return; /* h2o closed it (and freed its connection) */
    h2_check_bodies(c);
}

static void h2_adopt(http_conn_t *c, h2o_http2_conn_t *hc)
{
    c->h2 = hc;
    h2o_socket_t *sock = hc->sock;
    if (g_h2_on_read == NULL)
        g_h2_on_read = sock->_cb.read;
    if (sock->_cb.read == g_h2_on_read)
        sock->_cb.read = on_h2_read;
    h2_check_bodies(c);
}

/* After each poll: HTTP/2 connections h2o made since (at the list's tail). */
static void on_h2_check(uv_check_t *t)
{
    (void)t;
    for (h2o_linklist_t *n = g_ctx.http2._conns.prev; n != &g_ctx.http2._conns; n = n->prev) {
        h2o_http2_conn_t *hc = H2O_STRUCT_FROM_MEMBER(h2o_http2_conn_t, _conns, n);
        if (hc->sock == NULL || hc->state >= H2O_HTTP2_CONN_STATE_IS_CLOSING)
            continue; /* an h2c Upgrade under way: on_req adopts it */
        http_conn_t *c = conn_by_sock(hc->sock);
        if (c == NULL || uv_is_closing((uv_handle_t *)&c->tcp))
            continue;
        if (c->h2 == hc)
            break; /* known, and so is everything before it */
        h2_adopt(c, hc);
    }
}

/* ---- listening ------------------------------------------------------------ */

static void on_conn_close(uv_handle_t *hd)
{
    g_nconns--;
    http_conn_t *c = (http_conn_t *)hd;
    conn_unlink(c);
    c->closed = 1;
    conn_maybe_free(c);
}

/* Hand an accepted connection to h2o, known to the work budget. */
static void serve_conn(http_conn_t *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    g_nconns++;
    c->reset_tokens = CONN_RESET_BURST;
    c->reset_ms = bnb__mono_ms();
    c->sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_close);
    size_t b = conn_bucket(c->sock);
    c->hnext = g_conns[b];
    g_conns[b] = c;
    h2o_accept(&g_accept, c->sock);
}

static void on_accept(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    http_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    uv_tcp_init(listener->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    serve_conn(c);
}

static int open_listener(bnb_host_t *h, const char *listen, char *err, size_t errlen)
{
    uv_tcp_init(h->loop, &g_listener);
    int rc;
    const char *lfds = getenv("LISTEN_FDS"), *lpid = getenv("LISTEN_PID");
    if (strncmp(listen, "fd:", 3) == 0 || (lfds && lpid && atoi(lpid) == (int)getpid() && atoi(lfds) >= 1)) {
        int fd = strncmp(listen, "fd:", 3) == 0 ? atoi(listen + 3) : 3;
        rc = uv_tcp_open(&g_listener, fd);
        if (rc != 0) {
            snprintf(err, errlen, "listen %s: inherited fd %d is not a usable socket: %s", listen, fd, uv_strerror(rc));
            return -1;
        }
    } else {
        char hostpart[128];
        const char *colon = strrchr(listen, ':');
        if (colon == NULL || colon == listen || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
            snprintf(err, errlen, "listen '%s': expected HOST:PORT or fd:N", listen);
            return -1;
        }
        snprintf(hostpart, sizeof(hostpart), "%.*s", (int)(colon - listen), listen);
        int port = atoi(colon + 1);
        struct sockaddr_storage ss;
        if (hostpart[0] == '[') {
            hostpart[strlen(hostpart) - 1] = '\0';
            rc = uv_ip6_addr(hostpart + 1, port, (struct sockaddr_in6 *)&ss);
        } else {
            rc = uv_ip4_addr(hostpart, port, (struct sockaddr_in *)&ss);
        }
        if (rc != 0) {
            snprintf(err, errlen, "listen '%s': not an IP address: %s", listen, uv_strerror(rc));
            return -1;
        }
        rc = uv_tcp_bind(&g_listener, (struct sockaddr *)&ss, 0);
        if (rc != 0) {
            snprintf(err, errlen, "listen %s: %s", listen, uv_strerror(rc));
            return -1;
        }
    }
    rc = uv_listen((uv_stream_t *)&g_listener, 1024, on_accept);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s: %s", listen, uv_strerror(rc));
        return -1;
    }
    g_listening = 1;
    return 0;
}

static int setup_tls(bnb_host_t *h, char *err, size_t errlen)
{
    const char *cert = bnb__config_str(h->cfg, "http.tls_cert"), *key = bnb__config_str(h->cfg, "http.tls_key");
    if ((cert == NULL || !cert[0]) && (key == NULL || !key[0]))
        return 0;
    if (cert == NULL || key == NULL || !cert[0] || !key[0]) {
        snprintf(err, errlen, "http.tls_cert and http.tls_key go together (%s)",
                 bnb__config_origin(h->cfg, cert && cert[0] ? "http.tls_cert" : "http.tls_key"));
        return -1;
    }
    g_ssl = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(g_ssl, TLS1_2_VERSION);
    SSL_CTX_set_options(g_ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(g_ssl, cert) != 1) {
        snprintf(err, errlen, "http.tls_cert %s: %s", cert, ERR_reason_error_string(ERR_get_error()));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(g_ssl, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "http.tls_key %s: %s", key, ERR_reason_error_string(ERR_get_error()));
        return -1;
    }
    h2o_ssl_register_alpn_protocols(g_ssl, h2o_http2_alpn_protocols);
    g_accept.ssl_ctx = g_ssl;
    return 0;
}

/* ---- h2o's own error answers ------------------------------------------------------
 * h2o answers some requests before any handler runs (a body over its limit:
 * 413, broken chunked encoding: 400, ...) as text/plain. A filter turns every
 * answer >= 400 that did not come from us (ours carry x-request-id) into
 * problem+json. */

typedef struct problem_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
    int sent;
} problem_ostream_t;

static void problem_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                            h2o_send_state_t state)
{
    problem_ostream_t *o = (problem_ostream_t *)self;
    (void)bufs;
    size_t n = bufcnt > 0 && !o->sent ? 1 : 0;
    if (n)
        o->sent = 1;
    h2o_ostream_send_next(&o->super, req, n ? &o->body : NULL, n, state);
}

static void on_setup_problem_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    (void)self;
    int status = req->res.status;
    if (status >= 400 && h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) == -1) {
        char d[200];
        if (status == 413)
            snprintf(d, sizeof(d), "the body is larger than the limit of %zu bytes", bnb__host->max_body);
        else
            snprintf(d, sizeof(d), "%s", req->res.reason ? req->res.reason : "the request cannot be handled");
        size_t len = 0;
        char *txt = bnb__problem_text(status, NULL, d, &len);
        if (txt != NULL) {
            problem_ostream_t *o = (problem_ostream_t *)h2o_add_ostream(req, sizeof(*o), slot);
            o->super.do_send = problem_do_send;
            o->body = h2o_strdup(&req->pool, txt, len);
            o->sent = 0;
            free(txt);
            memset(&req->res.headers, 0, sizeof(req->res.headers));
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                           H2O_STRLIT("application/problem+json"));
            req->res.content_length = len;
            slot = &o->super.next;
        }
    }
    h2o_setup_next_ostream(req, slot);
}

int bnb__http_start(bnb_host_t *h, char *err, size_t errlen)
{
    h2o_config_init(&g_config);
    /* Bodies over h->max_body get 413 problem+json: read whole up to
     * g_h2_drain, past that answered at once on HTTP/2 (h2_check_bodies);
     * h2o refuses past max_request_entity_size on its own (HTTP/1.1: 413,
     * rewritten to problem+json by the filter below) */
    g_h2_drain = h->max_body * 4 + 1024 * 1024;
    g_config.max_request_entity_size = g_h2_drain + 1024 * 1024;
    g_config.http1.upgrade_to_http2 = 1;
    h2o_hostconf_t *hc = h2o_config_register_host(&g_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
    h2o_handler_t *hd = h2o_create_handler(pc, sizeof(*hd));
    hd->on_req = on_req;
    /* h2o's own errors come through the host's fallback path */
    h2o_create_filter(pc, sizeof(h2o_filter_t))->on_setup_ostream = on_setup_problem_ostream;
    h2o_create_filter(&hc->fallback_path, sizeof(h2o_filter_t))->on_setup_ostream = on_setup_problem_ostream;
    h2o_context_init(&g_ctx, h->loop, &g_config);
    uv_check_init(h->loop, &g_h2_check);
    uv_check_start(&g_h2_check, on_h2_check);
    uv_unref((uv_handle_t *)&g_h2_check);
    g_h2_check_on = 1;
    bnb__web_init(h);
    uv_async_init(h->loop, &g_wake_async, on_stream_wake);
    uv_timer_init(h->loop, &g_stream_timer);
    uv_timer_start(&g_stream_timer, on_stream_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&g_stream_timer);
    pthread_mutex_lock(&g_wmu);
    g_wake_inited = 1;
    pthread_mutex_unlock(&g_wmu);
    bnb__jwks_never_wait_here(); /* this is the loop's thread */
    g_accept.ctx = &g_ctx;
    g_accept.hosts = g_config.hosts;
    if (setup_tls(h, err, errlen) != 0)
        return -1;
    return open_listener(h, bnb__config_str(h->cfg, "listen"), err, errlen);
}

static int64_t g_idle_since;

static void on_drain_tick(uv_timer_t *t)
{
    bnb_host_t *h = t->data;
    int64_t now = bnb__mono_ms();
    int busy = atomic_load(&h->inflight) > 0;
    if (busy)
        g_idle_since = 0;
    else if (g_idle_since == 0)
        g_idle_since = now;
    /* done when nothing runs and every connection is gone; idle keep-alive
     * connections get a short grace to close on their own */
    int quiet = !busy && (g_nconns == 0 || now - g_idle_since > 500);
    if (quiet || now > g_drain_deadline) {
        if (busy)
            bnb__log(BNB_LOG_WARN, "drain timeout: %d requests still running", atomic_load(&h->inflight));
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        g_drain_done(h);
    }
}

/* Take every connection already waiting in the kernel's queue, so that
 * closing the listener resets none of them. */
static void accept_pending(void)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&g_listener, &fd) != 0)
        return;
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            return;
        http_conn_t *conn = calloc(1, sizeof(*conn));
        if (conn == NULL) {
            close(c);
            continue;
        }
        uv_tcp_init(g_ctx.loop, &conn->tcp);
        if (uv_tcp_open(&conn->tcp, c) != 0) {
            close(c);
            uv_close((uv_handle_t *)&conn->tcp, (uv_close_cb)free);
            continue;
        }
        serve_conn(conn);
    }
}

static void stop_accepting(uv_timer_t *t)
{
    bnb_host_t *h = t->data;
    if (g_listening) {
        accept_pending();
        uv_close((uv_handle_t *)&g_listener, NULL);
        g_listening = 0;
    }
    /* streamed answers end; idle keep-alive connections close, HTTP/2 ones get GOAWAY */
    streams_end_all();
    h2o_context_request_shutdown(&g_ctx);
    g_drain_deadline = bnb__mono_ms() + bnb__config_int(h->cfg, "http.drain_timeout_ms");
    uv_timer_start(&g_drain_timer, on_drain_tick, 10, 20);
}

void bnb__http_drain(bnb_host_t *h, void (*done)(bnb_host_t *h))
{
    g_drain_done = done;
    uv_timer_init(h->loop, &g_drain_timer);
    g_drain_timer.data = h;
    /* readiness is already false; keep accepting a little longer for clients
     * that picked this instance just before (http.drain_accept_ms) */
    uv_timer_start(&g_drain_timer, stop_accepting, (uint64_t)bnb__config_int(h->cfg, "http.drain_accept_ms"), 0);
}

int bnb__http_open_connections(void)
{
    return g_nconns;
}

void bnb__http_free(bnb_host_t *h)
{
    (void)h;
    rc_free_all();
    bnb__web_fini();
    if (g_h2_check_on) {
        uv_close((uv_handle_t *)&g_h2_check, NULL);
        g_h2_check_on = 0;
    }
    if (g_listening) {
        uv_close((uv_handle_t *)&g_listener, NULL);
        g_listening = 0;
    }
    pthread_mutex_lock(&g_wmu);
    int inited = g_wake_inited;
    g_wake_inited = 0;
    pthread_mutex_unlock(&g_wmu);
    if (inited) {
        streams_free_all();
        uv_close((uv_handle_t *)&g_wake_async, NULL);
        uv_timer_stop(&g_stream_timer);
        uv_close((uv_handle_t *)&g_stream_timer, NULL);
    }
    /* h2o's context and config are not disposed: after a graceful shutdown
     * request h2o keeps timeout entries linked (h2o_timeout_dispose asserts on
     * them), and they are process-lifetime statics, freed by exit */
    if (g_ssl) {
        SSL_CTX_free(g_ssl);
        g_ssl = NULL;
    }
}

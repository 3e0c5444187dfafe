/* HTTP/1.1, h2c (Upgrade and prior knowledge) and HTTP/2 over TLS with h2o on
 * libuv. Requests are routed on the loop; plugin handlers run on worker
 * threads; answers go back on the loop. */
#include "gateway.h"
#include "host.h"
#include "jwks.h"
#include "ratelimit.h"
#include "reqcheck.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <h2o.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

/* ---- worker jobs --------------------------------------------------------- */

typedef struct http_job http_job_t;
struct http_job {
    uv_work_t w;
    bnb_host_t *h;
    h2o_req_t *req; /* NULL once the client went away */
    http_job_t **slot;
    bnb_req_t r;
    int64_t t0;
    char route[160];
    /* admin event injection instead of a plugin route */
    char *inject_topic;
    char *inject_payload;
    size_t inject_len;
};

static void on_req_dispose(void *p)
{
    http_job_t *j = *(http_job_t **)p;
    if (j != NULL)
        j->req = NULL;
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
    (void)status;
    http_job_t *j = w->data;
    bnb_host_t *h = j->h;
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
        if (r->raw_out != NULL || (r->upstream != NULL && !r->problem)) {
            send_body(req, r->status, r->raw_ctype ? r->raw_ctype : "application/octet-stream",
                      r->raw_out ? r->raw_out : "", r->raw_out_len);
        } else {
            if (r->resp != NULL && r->status != 204)
                text = json_dumps(r->resp, JSON_COMPACT | JSON_ENCODE_ANY);
            send_body(req, r->status, r->problem ? "application/problem+json" : "application/json", text ? text : "",
                      text ? strlen(text) : 0);
        }
        free(text);
    }
    if (j->r.upstream != NULL) {
        bnb_breaker_t *b = bnb__breaker_for(h, j->route);
        if (b != NULL)
            bnb__breaker_record(b, j->r.status < 500, bnb__mono_ms());
    }
    bnb__metrics_http(h->metrics, j->route, j->r.method ? j->r.method : "?", j->r.status, secs);
    bnb__req_free_parts(&j->r);
    free(j->inject_topic);
    free(j->inject_payload);
    free(j);
    atomic_fetch_sub(&h->inflight, 1);
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

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    bnb_host_t *h = bnb__host;
    int64_t t0 = (int64_t)uv_hrtime(); /* ns, for durations */
    const char *path = req->path_normalized.base;
    size_t plen = req->path_normalized.len;
    int get = iov_eq(req->method, "GET") || iov_eq(req->method, "HEAD");

    if (plen == 8 && memcmp(path, "/healthz", 8) == 0 && get) {
        static const char ok[] = "{\"status\":\"ok\"}";
        answer_now(h, req, "/healthz", t0, 200, "application/json", ok, sizeof(ok) - 1);
        return 0;
    }
    if (plen == 7 && memcmp(path, "/readyz", 7) == 0 && get) {
        int ready = atomic_load(&h->ready) && !atomic_load(&h->draining) && bnb__events_ready(h);
        const char *why = ready                       ? "{\"status\":\"ready\"}"
                          : atomic_load(&h->draining) ? "{\"status\":\"draining\"}"
                                                      : "{\"status\":\"not ready\"}";
        answer_now(h, req, "/readyz", t0, ready ? 200 : 503, "application/json", why, strlen(why));
        return 0;
    }
    if (plen == 8 && memcmp(path, "/metrics", 8) == 0 && get) {
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
        bnb__metrics_set(h->metrics, "bearbnb_ready", NULL,
                         atomic_load(&h->ready) && !atomic_load(&h->draining) ? 1 : 0);
        size_t len = 0;
        char *s = bnb__metrics_render(h->metrics, &len);
        answer_now(h, req, "/metrics", t0, 200, "text/plain; version=0.0.4", s ? s : "", s ? len : 0);
        free(s);
        return 0;
    }
    if (plen >= 6 && memcmp(path, "/admin", 6) == 0 && (plen == 6 || path[6] == '/'))
        return handle_admin(h, req, path, plen, t0);

    bnb_route_match_t m;
    char allow[128];
    char method[16];
    snprintf(method, sizeof(method), "%.*s", (int)(req->method.len < 15 ? req->method.len : 15), req->method.base);
    int st = bnb__router_match(h->router, method, path, plen, &m, allow, sizeof(allow));
    bnb_route_entry_t *e = NULL;
    const char *upstream = NULL;
    int upi = -1, h2c = 0;
    char routelabel[160];
    if (st == 200) {
        e = m.route;
        snprintf(routelabel, sizeof(routelabel), "%s", e->pattern);
    } else if ((upstream = bnb__gateway_route(path, plen, &upi, &h2c)) != NULL) {
        snprintf(routelabel, sizeof(routelabel), "edge %.*s", (int)(plen < 40 ? plen : 40), path);
        char *q = strchr(routelabel + 6, '/');
        if (q != NULL && (q = strchr(q + 1, '/')) != NULL)
            *q = '\0'; /* label by the first segment: "edge /rooms" */
    } else if (st == 405) {
        add_header(req, "allow", allow);
        char d[200];
        snprintf(d, sizeof(d), "method %s is not allowed here; allowed: %s", method, allow);
        problem_now(h, req, "unmatched", t0, 405, d);
        return 0;
    } else {
        problem_now(h, req, "unmatched", t0, 404, "no such route");
        return 0;
    }

    /* identity: behind an enforcing gateway, the signed headers it forwards;
     * otherwise the bearer token */
    bnb_identity_t id;
    memset(&id, 0, sizeof(id));
    int has_id = 0;
    char *bearer = NULL;
    char rid_hdr[64] = "";
    int signer = -1;
    if (h->gw_enforce) {
        char sig[200] = "", user[128] = "", role[16] = "", pq[3072];
        ssize_t k;
        if ((k = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-bnb-gateway"), -1)) != -1)
            snprintf(sig, sizeof(sig), "%.*s", (int)req->headers.entries[k].value.len,
                     req->headers.entries[k].value.base);
        if ((k = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-bnb-user"), -1)) != -1)
            snprintf(user, sizeof(user), "%.*s", (int)req->headers.entries[k].value.len,
                     req->headers.entries[k].value.base);
        if ((k = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-bnb-role"), -1)) != -1)
            snprintf(role, sizeof(role), "%.*s", (int)req->headers.entries[k].value.len,
                     req->headers.entries[k].value.base);
        if ((k = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1)) != -1)
            snprintf(rid_hdr, sizeof(rid_hdr), "%.*s", (int)req->headers.entries[k].value.len,
                     req->headers.entries[k].value.base);
        snprintf(pq, sizeof(pq), "%.*s%s%.*s", (int)plen, path, req->query_at != SIZE_MAX ? "?" : "",
                 req->query_at != SIZE_MAX ? (int)(req->path.len - req->query_at - 1) : 0,
                 req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "");
        signer = bnb__gateway_verify(sig, method, pq, rid_hdr, user, role, req->entity.base,
                                     req->entity.base ? req->entity.len : 0, bnb__now_ms() / 1000);
        if (signer < 0) {
            bnb__route_match_clear(&m);
            problem_now(h, req, routelabel, t0, 403, "requests must come through the gateway");
            return 0;
        }
        if (user[0]) {
            snprintf(id.sub, sizeof(id.sub), "%s", user);
            snprintf(id.role, sizeof(id.role), "%s", role);
            has_id = 1;
        }
        ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
        if (ai != -1 && req->headers.entries[ai].value.len > 7)
            bearer = strndup(req->headers.entries[ai].value.base + 7, req->headers.entries[ai].value.len - 7);
    } else {
        ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
        if (ai != -1) {
            h2o_iovec_t v = req->headers.entries[ai].value;
            if (v.len < 8 || strncasecmp(v.base, "Bearer ", 7) != 0 || v.len > 8192) {
                bnb__route_match_clear(&m);
                add_header(req, "www-authenticate", "Bearer");
                problem_now(h, req, routelabel, t0, 401, "Authorization must be 'Bearer <token>'");
                return 0;
            }
            bearer = strndup(v.base + 7, v.len - 7);
            char why[160];
            bnb__jwks_take_pending(NULL, NULL);
            if (bearer == NULL || bnb__auth_verify(h->auth, bearer, &id, why, sizeof(why)) != 0) {
                bnb_jwks_t *jk = NULL;
                unsigned long round = 0;
                if (bnb__jwks_take_pending(&jk, &round) && g_retrying != req &&
                    park_for_jwks(h, self, req, jk, round) == 0) {
                    free(bearer);
                    bnb__route_match_clear(&m);
                    return 0;
                }
                free(bearer);
                bnb__route_match_clear(&m);
                add_header(req, "www-authenticate", "Bearer error=\"invalid_token\"");
                char d[200];
                snprintf(d, sizeof(d), "invalid token: %s", why);
                problem_now(h, req, routelabel, t0, 401, d);
                return 0;
            }
            has_id = 1;
        }
    }

    /* limits (OWASP API4): a bucket per user, and one per client address */
    {
        int64_t wait = 0;
        int limited = 0;
        /* a request signed by the edge or a service was counted where it came in;
         * counting it again here would make the edge one client */
        int counted = signer >= 0;
        if (!counted && has_id && h->rl_user != NULL && !bnb__ratelimit_take(h->rl_user, id.sub, bnb__mono_ms(), &wait))
            limited = 1;
        if (!counted && !limited && h->rl_ip != NULL) {
            char ip[64] = "?";
            struct sockaddr_storage ss;
            socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
            if (sl > 0 && ss.ss_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
            else if (sl > 0 && ss.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
            if (!bnb__ratelimit_take(h->rl_ip, ip, bnb__mono_ms(), &wait))
                limited = 1;
        }
        if (limited) {
            free(bearer);
            bnb__route_match_clear(&m);
            char ra[32];
            snprintf(ra, sizeof(ra), "%lld", (long long)((wait + 999) / 1000));
            add_header(req, "retry-after", ra);
            problem_now(h, req, routelabel, t0, 429, "rate limit exceeded; retry later");
            return 0;
        }
    }

    if (e != NULL && e->who == BNB_ROLE_SERVICE && signer != BNB_SIGNED_SERVICE) {
        free(bearer);
        bnb__route_match_clear(&m);
        problem_now(h, req, routelabel, t0, 403, "this route is internal: only other services may call it");
        return 0;
    }
    if (e != NULL && e->who != BNB_ROLE_ANYONE && e->who != BNB_ROLE_SERVICE) {
        const char *need = e->who == BNB_ROLE_HOST ? "host" : e->who == BNB_ROLE_GUEST ? "guest" : NULL;
        if (!has_id) {
            free(bearer);
            bnb__route_match_clear(&m);
            add_header(req, "www-authenticate", "Bearer");
            problem_now(h, req, routelabel, t0, 401, "this route needs a bearer token");
            return 0;
        }
        if (need != NULL && strcmp(id.role, need) != 0) {
            free(bearer);
            bnb__route_match_clear(&m);
            char d[128];
            snprintf(d, sizeof(d), "this route is for users with role '%s'", need);
            problem_now(h, req, routelabel, t0, 403, d);
            return 0;
        }
    }
    if (e != NULL && atomic_load(&e->ctx->paused)) {
        free(bearer);
        bnb__route_match_clear(&m);
        add_header(req, "retry-after", "1");
        problem_now(h, req, routelabel, t0, 503, "the service is paused");
        return 0;
    }
    if (upstream != NULL) {
        bnb_breaker_t *b = bnb__breaker_for(h, routelabel);
        if (b != NULL && !bnb__breaker_allow(b, bnb__mono_ms())) {
            free(bearer);
            char ra[32];
            snprintf(ra, sizeof(ra), "%lld",
                     (long long)((bnb__breaker_retry_after_ms(b, bnb__mono_ms()) + 999) / 1000));
            add_header(req, "retry-after", ra);
            problem_now(h, req, routelabel, t0, 503, "the service is unavailable (circuit open); retry later");
            return 0;
        }
    }

    /* the query's percent-encoding and the correlation id, before any work */
    {
        char d[200] = "";
        if (req->query_at != SIZE_MAX) {
            char qn[64];
            if (bnb__query_check(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1, qn,
                                 sizeof(qn)) != 0)
                snprintf(d, sizeof(d), "query parameter '%s': malformed percent-encoding", qn);
        }
        ssize_t xi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-correlation-id"), -1);
        if (!d[0] && xi != -1 &&
            !bnb__correlation_id_ok(req->headers.entries[xi].value.base, req->headers.entries[xi].value.len))
            snprintf(d, sizeof(d), "header X-Correlation-Id must be 1 to 63 characters of A-Z a-z 0-9 . _ : -");
        if (d[0]) {
            free(bearer);
            bnb__route_match_clear(&m);
            problem_now(h, req, routelabel, t0, 400, d);
            return 0;
        }
    }

    /* body */
    json_t *body = NULL;
    if (req->entity.base != NULL && req->entity.len > 0) {
        const char *err = NULL;
        int code = 0;
        char d[256];
        ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
        if (req->entity.len > h->max_body) {
            code = 413;
            snprintf(d, sizeof(d), "the body has %zu bytes; the limit is %zu", req->entity.len, h->max_body);
            err = d;
        } else if (upstream != NULL) {
            /* passed through as it is: the service checks it */
        } else if (ci == -1 ||
                   !bnb__media_type_is_json(req->headers.entries[ci].value.base, req->headers.entries[ci].value.len)) {
            code = 415;
            err = "the body must be JSON (Content-Type: application/json)";
        } else {
            json_error_t je;
            body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &je);
            if (body == NULL) {
                code = 400;
                snprintf(d, sizeof(d), "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
                err = d;
            } else if (!json_is_object(body)) {
                code = 400;
                err = "the body must be a JSON object";
            }
        }
        if (code != 0) {
            json_decref(body);
            free(bearer);
            bnb__route_match_clear(&m);
            problem_now(h, req, routelabel, t0, code, err);
            return 0;
        }
    }

    http_job_t *j = new_job(h, req, routelabel, t0);
    if (j == NULL) {
        json_decref(body);
        free(bearer);
        bnb__route_match_clear(&m);
        problem_now(h, req, routelabel, t0, 503, "out of memory");
        return 0;
    }
    bnb_req_t *r = &j->r;
    if (h->gw_enforce && rid_hdr[0])
        snprintf(r->exec.request_id, sizeof(r->exec.request_id), "%s", rid_hdr);
    r->ctx = e ? e->ctx : NULL;
    r->route = e;
    r->match = m;
    r->body = body;
    r->bearer = bearer;
    r->has_id = has_id;
    if (has_id)
        r->id = id;
    r->path = strndup(path, plen);
    if (req->query_at != SIZE_MAX)
        r->query = strndup(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    int oom = r->method == NULL || r->path == NULL || copy_headers(req, r) != 0;
    if (!oom && upstream != NULL) {
        r->upstream = strdup(upstream);
        r->upstream_index = upi;
        r->upstream_h2c = h2c;
        oom = r->upstream == NULL;
        if (!oom && req->entity.base != NULL && req->entity.len > 0) {
            r->raw_in = malloc(req->entity.len + 1);
            oom = r->raw_in == NULL;
            if (!oom) {
                memcpy(r->raw_in, req->entity.base, req->entity.len);
                r->raw_in[req->entity.len] = '\0';
                r->raw_in_len = req->entity.len;
            }
        }
    }
    if (oom) {
        bnb__req_free_parts(r);
        free(j);
        problem_now(h, req, routelabel, t0, 503, "out of memory");
        return 0;
    }
    ssize_t ci = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-correlation-id"), -1);
    if (ci != -1 && req->headers.entries[ci].value.len < sizeof(r->exec.correlation_id))
        snprintf(r->exec.correlation_id, sizeof(r->exec.correlation_id), "%.*s",
                 (int)req->headers.entries[ci].value.len, req->headers.entries[ci].value.base);
    if (start_job(h, req, j) != 0)
        problem_now(h, req, routelabel, t0, 503, "cannot schedule the work");
    return 0;
}

/* ---- listening ------------------------------------------------------------ */

static void on_conn_close(uv_handle_t *hd)
{
    g_nconns--;
    free(hd);
}

static void on_accept(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    uv_tcp_t *conn = calloc(1, sizeof(*conn));
    if (conn == NULL)
        return;
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(conn, 1);
    g_nconns++;
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, on_conn_close);
    h2o_accept(&g_accept, sock);
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

int bnb__http_start(bnb_host_t *h, char *err, size_t errlen)
{
    h2o_config_init(&g_config);
    /* h2o refuses bodies past this on its own (plain text); ours, with a
     * problem+json answer, is h->max_body, well below */
    g_config.max_request_entity_size = h->max_body * 4 + 1024 * 1024;
    g_config.http1.upgrade_to_http2 = 1;
    h2o_hostconf_t *hc = h2o_config_register_host(&g_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
    h2o_handler_t *hd = h2o_create_handler(pc, sizeof(*hd));
    hd->on_req = on_req;
    h2o_context_init(&g_ctx, h->loop, &g_config);
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
        uv_tcp_t *conn = calloc(1, sizeof(*conn));
        if (conn == NULL) {
            close(c);
            continue;
        }
        uv_tcp_init(g_ctx.loop, conn);
        if (uv_tcp_open(conn, c) != 0) {
            close(c);
            uv_close((uv_handle_t *)conn, (uv_close_cb)free);
            continue;
        }
        uv_tcp_nodelay(conn, 1);
        g_nconns++;
        h2o_accept(&g_accept, h2o_uv_socket_create((uv_stream_t *)conn, on_conn_close));
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
    /* idle keep-alive connections close, HTTP/2 ones get GOAWAY */
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
    if (g_listening) {
        uv_close((uv_handle_t *)&g_listener, NULL);
        g_listening = 0;
    }
    /* h2o's context and config are not disposed: after a graceful shutdown
     * request h2o keeps timeout entries linked (h2o_timeout_dispose asserts on
     * them), and they are process-lifetime statics, freed by exit */
    if (g_ssl) {
        SSL_CTX_free(g_ssl);
        g_ssl = NULL;
    }
}

/* The edge: prefix routes to upstream services (libcurl on worker threads,
 * one keep-alive connection cache per thread), and the signed identity
 * header that lets a service refuse requests that bypass the gateway. */
#include "gateway.h"
#include "host.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* every worker thread's handles, so that they are cleaned up at exit */
typedef struct curl_pair {
    CURLM *m;
    CURL *c;
} curl_pair_t;
static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static curl_pair_t *handles;
static size_t nhandles;
static _Atomic unsigned handles_gen; /* bumped when bnb__gateway_free frees them */

typedef struct gw_route {
    char *prefix;
    char *base; /* http://host:port */
    int h2c;
} gw_route_t;

static gw_route_t *routes;
static size_t nroutes;
static unsigned char secret[128];
static size_t secret_len;
/* gateway.secret_previous_file: still accepted, never used to sign (rotation
 * with overlap) */
static unsigned char prev_secret[128];
static size_t prev_secret_len;
static int max_streams;          /* gateway.max_streams */
static _Atomic int streams_stop; /* bnb__gateway_free: every streamed transfer ends */
static void streams_stop_all(void);
static void ready_thread_stop(void);

static void free_routes(void)
{
    for (size_t i = 0; i < nroutes; i++) {
        free(routes[i].prefix);
        free(routes[i].base);
    }
    free(routes);
    routes = NULL;
    nroutes = 0;
}

void bnb__gateway_free(void)
{
    /* streamed transfers end; the worker threads are idle now (drained):
     * their handles can go */
    ready_thread_stop();
    streams_stop_all();
    pthread_mutex_lock(&handles_mu);
    for (size_t i = 0; i < nhandles; i++) {
        curl_easy_cleanup(handles[i].c);
        curl_multi_cleanup(handles[i].m);
    }
    free(handles);
    handles = NULL;
    nhandles = 0;
    handles_gen++; /* every thread's tl_curl is gone: thread_handle makes a new one */
    pthread_mutex_unlock(&handles_mu);
    free_routes();
    OPENSSL_cleanse(secret, sizeof(secret));
    secret_len = 0;
    OPENSSL_cleanse(prev_secret, sizeof(prev_secret));
    prev_secret_len = 0;
}

/* at least 16 bytes, trailing newlines ignored; 0 or -1 with err */
static int read_secret(bnb_host_t *h, const char *key, unsigned char *buf, size_t cap, size_t *len, char *err,
                       size_t errlen)
{
    const char *sf = bnb__config_str(h->cfg, key);
    *len = 0;
    if (sf == NULL || !sf[0])
        return 0;
    FILE *f = fopen(sf, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s %s cannot be read", bnb__config_origin(h->cfg, key), key, sf);
        return -1;
    }
    *len = fread(buf, 1, cap, f);
    fclose(f);
    while (*len > 0 && (buf[*len - 1] == '\n' || buf[*len - 1] == '\r'))
        (*len)--;
    if (*len < 16) {
        snprintf(err, errlen, "%s %s: the secret must have at least 16 bytes", key, sf);
        *len = 0;
        return -1;
    }
    return 0;
}

int bnb__gateway_has_secret(void)
{
    return secret_len > 0;
}

int bnb__gateway_init(bnb_host_t *h, char *err, size_t errlen)
{
    const char *spec = bnb__config_str(h->cfg, "gateway.routes");
    atomic_store(&streams_stop, 0);
    long ms = bnb__config_int(h->cfg, "gateway.max_streams");
    if (ms < 0 || ms > 100000) {
        snprintf(err, errlen, "%s: gateway.max_streams must be 0 to 100000",
                 bnb__config_origin(h->cfg, "gateway.max_streams"));
        return -1;
    }
    max_streams = (int)ms;
    const char *origin = bnb__config_origin(h->cfg, "gateway.routes");
    for (const char *p = spec; p && *p;) {
        while (*p == ',' || *p == ' ' || *p == '\n')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\n')
            e++;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (eq == NULL || p[0] != '/' || eq == p) {
            snprintf(err, errlen, "%s: gateway.routes entry '%.*s': expected /prefix=http://host:port", origin,
                     (int)(e - p), p);
            return -1;
        }
        const char *u = eq + 1;
        size_t ul = (size_t)(e - u);
        int h2c = 0;
        char base[512];
        if (ul > 7 && strncmp(u, "http://", 7) == 0) {
            snprintf(base, sizeof(base), "%.*s", (int)ul, u);
        } else if (ul > 6 && strncmp(u, "h2c://", 6) == 0) {
            snprintf(base, sizeof(base), "http://%.*s", (int)(ul - 6), u + 6);
            h2c = 1;
        } else {
            snprintf(err, errlen, "%s: gateway.routes upstream '%.*s' must start with http:// or h2c://", origin,
                     (int)ul, u);
            return -1;
        }
        size_t bl = strlen(base);
        while (bl > 0 && base[bl - 1] == '/')
            base[--bl] = '\0';
        gw_route_t *nr = realloc(routes, (nroutes + 1) * sizeof(*nr));
        if (nr == NULL)
            return -1;
        routes = nr;
        routes[nroutes].prefix = strndup(p, (size_t)(eq - p));
        routes[nroutes].base = strdup(base);
        routes[nroutes].h2c = h2c;
        nroutes++;
        p = e;
    }
    if (read_secret(h, "gateway.secret_file", secret, sizeof(secret), &secret_len, err, errlen) != 0 ||
        read_secret(h, "gateway.secret_previous_file", prev_secret, sizeof(prev_secret), &prev_secret_len, err,
                    errlen) != 0)
        return -1;
    if (prev_secret_len > 0 && secret_len == 0) {
        snprintf(err, errlen, "%s: gateway.secret_previous_file needs gateway.secret_file",
                 bnb__config_origin(h->cfg, "gateway.secret_previous_file"));
        return -1;
    }
    if (bnb__config_bool(h->cfg, "gateway.enforce") && secret_len == 0) {
        snprintf(err, errlen, "%s: gateway.enforce needs gateway.secret_file",
                 bnb__config_origin(h->cfg, "gateway.enforce"));
        return -1;
    }
    return 0;
}

const char *bnb__gateway_route(const char *path, size_t len, int *index, int *h2c)
{
    size_t best = 0;
    int hit = -1;
    for (size_t i = 0; i < nroutes; i++) {
        size_t pl = strlen(routes[i].prefix);
        if (pl <= len && memcmp(path, routes[i].prefix, pl) == 0 && (pl == len || path[pl] == '/' || path[pl] == '?') &&
            pl > best) {
            best = pl;
            hit = (int)i;
        }
    }
    if (hit < 0)
        return NULL;
    *index = hit;
    *h2c = routes[hit].h2c;
    return routes[hit].base;
}

static void b64url(const unsigned char *in, size_t n, char *out, size_t outlen)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < outlen; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
}

/* v2: the MAC covers the signer, method, path with query, request id,
 * identity, time and the SHA-256 of the body, so a captured header is good
 * for that one request only (not for another body, method or path). */
static void mac(const unsigned char *key, size_t keylen, const char *by, const char *method, const char *path,
                const char *rid, const char *user, const char *role, const void *body, size_t body_len, int64_t ts,
                char *out, size_t outlen)
{
    unsigned char dg[32];
    char dgs[64];
    SHA256(body_len ? body : (const void *)"", body_len, dg);
    b64url(dg, sizeof(dg), dgs, sizeof(dgs));
    char msg[4096];
    int n = snprintf(msg, sizeof(msg), "v2\n%s\n%s\n%s\n%s\n%s\n%s\n%lld\n%s", by, method, path, rid ? rid : "",
                     user ? user : "", role ? role : "", (long long)ts, dgs);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, (size_t)(n < 4096 ? n : 4095), md, &mdlen);
    b64url(md, mdlen, out, outlen);
}

void bnb__gateway_sign(bnb_signer_t by, const char *method, const char *path, const char *request_id, const char *user,
                       const char *role, const void *body, size_t body_len, int64_t now_s, char *out, size_t outlen)
{
    const char *who = by == BNB_SIGNED_SERVICE ? "svc" : "edge";
    char sig[96];
    mac(secret, secret_len, who, method, path, request_id, user, role, body, body_len, now_s, sig, sizeof(sig));
    snprintf(out, outlen, "v2;by=%s;ts=%lld;sig=%s", who, (long long)now_s, sig);
}

int bnb__gateway_verify(const char *header, const char *method, const char *path, const char *request_id,
                        const char *user, const char *role, const void *body, size_t body_len, int64_t now_s)
{
    if (header == NULL || secret_len == 0)
        return -1;
    long long ts;
    char who[8], got[96];
    if (sscanf(header, "v2;by=%7[a-z];ts=%lld;sig=%95s", who, &ts, got) != 3)
        return -1;
    int by = strcmp(who, "svc") == 0 ? BNB_SIGNED_SERVICE : strcmp(who, "edge") == 0 ? BNB_SIGNED_EDGE : -1;
    if (by < 0 || ts < now_s - 60 || ts > now_s + 60)
        return -1;
    char want[96];
    mac(secret, secret_len, who, method, path, request_id, user, role, body, body_len, ts, want, sizeof(want));
    size_t l = strlen(want);
    if (strlen(got) == l && CRYPTO_memcmp(got, want, l) == 0)
        return by;
    if (prev_secret_len == 0)
        return -1;
    mac(prev_secret, prev_secret_len, who, method, path, request_id, user, role, body, body_len, ts, want,
        sizeof(want));
    l = strlen(want);
    return strlen(got) == l && CRYPTO_memcmp(got, want, l) == 0 ? by : -1;
}

/* ---- proxying ----------------------------------------------------------------
 *
 * A worker thread runs the transfer on its own curl multi handle (kept per
 * thread, with its connection cache) until the answer is complete, or until
 * its head says it is a stream: text/event-stream, or a 2xx body of unknown
 * length. A stream is handed to the HTTP side (r->stream, plugin API 1.3's
 * machinery: the loop sends what is queued, a slow client is dropped at
 * http.stream_buffer) and the transfer goes on in a thread of its own that
 * queues each piece as it arrives; the worker returns at once. That thread
 * ends the transfer when the upstream ends it, when the client has gone or
 * the stream was dropped (the next write fails; an idle stream is looked at
 * every STREAM_POLL_MS), and on shutdown. gateway.max_streams such transfers
 * at once; beyond that 503. */

#define STREAM_POLL_MS 200
#define STREAM_STACK   (256 * 1024)
#define MAX_BUFFERED   (16 * 1024 * 1024)

typedef struct px {
    CURLM *m;
    CURL *c;
    struct curl_slist *hdr;
    char *body;   /* the request body, owned here once the transfer outlives the request */
    bnb_req_t *r; /* NULL once the transfer runs on its own */
    int is_head;
    /* the answer's head */
    long status;
    int has_len, sse, refused;
    int detach; /* the head says: stream it */
    bnb_buf_t b;
    bnb_stream_t *s; /* the writer's reference */
} px_t;

static pthread_mutex_t streams_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t streams_cv = PTHREAD_COND_INITIALIZER;
static int streams_running;       /* transfer threads alive (under streams_mu) */
static _Atomic int streams_slots; /* taken slots of gateway.max_streams */

static void streams_stop_all(void)
{
    atomic_store(&streams_stop, 1);
    pthread_mutex_lock(&streams_mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (streams_running > 0 && pthread_cond_timedwait(&streams_cv, &streams_mu, &until) == 0)
        ;
    if (streams_running > 0)
        bnb__log(BNB_LOG_WARN, "gateway: %d streamed transfers still running at exit", streams_running);
    pthread_mutex_unlock(&streams_mu);
}

int bnb__proxy_streams_open(void)
{
    return atomic_load(&streams_slots);
}

static const char *const pass_back[] = {"content-type",     "retry-after", "location",           "allow",
                                        "www-authenticate", "etag",        "idempotent-replayed"};

static void drop_passed_back(bnb_req_t *r)
{
    for (size_t i = 0; i < r->nrh; i++) {
        free(r->rh_names[i]);
        free(r->rh_values[i]);
    }
    r->nrh = 0;
    free(r->raw_ctype);
    r->raw_ctype = NULL;
}

/* The head is complete (a final status): a stream, a refused one (over the
 * cap), or an answer to collect. 0, or -1 to fail the transfer. */
static int on_head_done(px_t *px)
{
    bnb_req_t *r = px->r;
    if (px->is_head || px->status < 200 || px->status == 204 || px->status == 304 || px->status >= 300 ||
        (!px->sse && px->has_len))
        return 0;
    if (atomic_fetch_add(&streams_slots, 1) >= max_streams) {
        atomic_fetch_sub(&streams_slots, 1);
        px->refused = 1;
        return -1;
    }
    px->s = bnb__stream_new((int)px->status, r->raw_ctype ? r->raw_ctype : "application/octet-stream",
                            bnb__host->stream_buffer);
    if (px->s == NULL) {
        atomic_fetch_sub(&streams_slots, 1);
        return -1;
    }
    r->stream = px->s; /* the HTTP side's reference; px keeps the writer's */
    r->status = (int)px->status;
    r->answered = 1;
    px->detach = 1;
    return 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    px_t *px = ud;
    bnb_req_t *r = px->r;
    size_t n = size * nitems;
    if (r == NULL)
        return n; /* trailers of a stream */
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* a new head (after a 1xx, the final one) */
        const char *sp = memchr(buf, ' ', n);
        px->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        px->has_len = px->sse = 0;
        drop_passed_back(r);
        return n;
    }
    if (n <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        if (px->status >= 200 && on_head_done(px) != 0)
            return 0;
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (colon == NULL)
        return n;
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if (nl == 14 && strncasecmp(buf, "content-length", 14) == 0) {
        px->has_len = 1;
        return n;
    }
    for (size_t i = 0; i < sizeof(pass_back) / sizeof(pass_back[0]); i++) {
        if (strlen(pass_back[i]) != nl || strncasecmp(buf, pass_back[i], nl) != 0)
            continue;
        if (i == 0) {
            free(r->raw_ctype);
            r->raw_ctype = strndup(v, vl);
            px->sse = vl >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
        } else if (r->nrh < 8) {
            r->rh_names[r->nrh] = strndup(buf, nl);
            r->rh_values[r->nrh] = strndup(v, vl);
            if (r->rh_names[r->nrh] && r->rh_values[r->nrh])
                r->nrh++;
            else {
                free(r->rh_names[r->nrh]);
                free(r->rh_values[r->nrh]);
            }
        }
    }
    return n;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    px_t *px = ud;
    size_t n = size * nmemb;
    if (px->s != NULL) /* fails once the client is gone or the stream was dropped: the transfer ends */
        return bnb__stream_write(px->s, ptr, n) == 0 ? n : 0;
    return bnb__curl_collect(ptr, size, nmemb, &px->b);
}

static int hop_by_hop(const char *name)
{
    static const char *const skip[] = {"connection",
                                       "keep-alive",
                                       "proxy-authorization",
                                       "proxy-connection",
                                       "te",
                                       "trailer",
                                       "transfer-encoding",
                                       "upgrade",
                                       "host",
                                       "content-length",
                                       "x-bnb-gateway",
                                       "x-bnb-user",
                                       "x-bnb-role",
                                       "http2-settings",
                                       "expect"};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strcasecmp(name, skip[i]) == 0)
            return 1;
    return name[0] == ':';
}

/* One multi handle with one easy handle per worker thread: keeps its connections alive. */
static __thread CURLM *tl_multi;
static __thread CURL *tl_curl;
static __thread unsigned tl_gen;

static void registry_drop(CURLM *m, CURL *c)
{
    pthread_mutex_lock(&handles_mu);
    for (size_t i = 0; i < nhandles; i++)
        if (handles[i].m == m && handles[i].c == c) {
            handles[i] = handles[--nhandles];
            break;
        }
    pthread_mutex_unlock(&handles_mu);
}

static int thread_handles(CURLM **m, CURL **c)
{
    if (tl_curl != NULL && tl_gen == handles_gen) {
        *m = tl_multi;
        *c = tl_curl;
        return 0;
    }
    tl_curl = NULL;
    tl_multi = NULL;
    CURLM *nm = curl_multi_init();
    CURL *nc = curl_easy_init();
    if (nm == NULL || nc == NULL)
        goto fail;
    pthread_mutex_lock(&handles_mu);
    curl_pair_t *nh = realloc(handles, (nhandles + 1) * sizeof(*nh));
    if (nh != NULL) {
        handles = nh;
        handles[nhandles++] = (curl_pair_t){nm, nc};
    }
    pthread_mutex_unlock(&handles_mu);
    if (nh == NULL)
        goto fail;
    *m = tl_multi = nm;
    *c = tl_curl = nc;
    tl_gen = handles_gen;
    return 0;
fail:
    if (nc)
        curl_easy_cleanup(nc);
    if (nm)
        curl_multi_cleanup(nm);
    return -1;
}

static void px_free(px_t *px)
{
    curl_slist_free_all(px->hdr);
    free(px->body);
    free(px->b.p);
    free(px);
}

/* A streamed answer's transfer, on its own thread until it ends. */
static void *stream_main(void *arg)
{
    px_t *px = arg;
    int running = 1;
    for (;;) {
        curl_multi_perform(px->m, &running);
        if (!running || atomic_load(&streams_stop) || bnb__stream_write(px->s, NULL, 0) < 0)
            break;
        curl_multi_poll(px->m, NULL, 0, STREAM_POLL_MS, NULL);
    }
    curl_multi_remove_handle(px->m, px->c);
    curl_easy_cleanup(px->c);
    curl_multi_cleanup(px->m);
    bnb__stream_close(px->s); /* the answer ends after what is queued */
    px_free(px);
    atomic_fetch_sub(&streams_slots, 1);
    pthread_mutex_lock(&streams_mu);
    if (--streams_running == 0)
        pthread_cond_broadcast(&streams_cv);
    pthread_mutex_unlock(&streams_mu);
    return NULL;
}

/* The head said stream: the rest of the transfer goes to a thread of its own
 * (with this thread's handles: they are made anew at the next request). */
static int hand_off(px_t *px, bnb_req_t *r)
{
    px->body = r->raw_in; /* curl may still be sending it */
    r->raw_in = NULL;
    r->raw_in_len = 0;
    px->r = NULL;
    registry_drop(px->m, px->c);
    tl_multi = NULL;
    tl_curl = NULL;
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, STREAM_STACK);
    pthread_mutex_lock(&streams_mu);
    streams_running++;
    int rc = pthread_create(&t, &a, stream_main, px);
    if (rc != 0)
        streams_running--;
    pthread_mutex_unlock(&streams_mu);
    pthread_attr_destroy(&a);
    if (rc == 0)
        return 0;
    curl_multi_remove_handle(px->m, px->c);
    curl_easy_cleanup(px->c);
    curl_multi_cleanup(px->m);
    return -1;
}

void bnb__proxy_run(bnb_req_t *r, const char *base, int h2c, long timeout_ms)
{
    CURLM *m;
    CURL *c;
    if (thread_handles(&m, &c) != 0) {
        bnb__problem_json(r, 503, NULL, "out of memory");
        return;
    }
    char url[4096];
    if ((size_t)snprintf(url, sizeof(url), "%s%s%s%s", base, r->path, r->query ? "?" : "", r->query ? r->query : "") >=
        3072) {
        bnb__problem_json(r, 414, NULL, "the path and query are too long to forward");
        return;
    }
    px_t *px = calloc(1, sizeof(*px));
    if (px == NULL) {
        bnb__problem_json(r, 503, NULL, "out of memory");
        return;
    }
    px->m = m;
    px->c = c;
    px->r = r;
    px->b.max = MAX_BUFFERED;
    curl_easy_reset(c);
    struct curl_slist *hdr = NULL;
    char line[2048];
    for (size_t i = 0; i < r->nheaders; i++) {
        if (hop_by_hop(r->hnames[i]) || strcasecmp(r->hnames[i], "x-request-id") == 0 ||
            strcasecmp(r->hnames[i], "traceparent") == 0 || strcasecmp(r->hnames[i], "x-forwarded-for") == 0)
            continue;
        /* "Name;" is how libcurl sends a header with an empty value ("Name:"
         * would drop it): the service must see e.g. an empty Idempotency-Key */
        if (r->hvalues[i][0] == '\0')
            snprintf(line, sizeof(line), "%s;", r->hnames[i]);
        else
            snprintf(line, sizeof(line), "%s: %s", r->hnames[i], r->hvalues[i]);
        hdr = curl_slist_append(hdr, line);
    }
    snprintf(line, sizeof(line), "X-Request-Id: %s", r->exec.request_id);
    hdr = curl_slist_append(hdr, line);
    snprintf(line, sizeof(line), "traceparent: %s", r->exec.traceparent);
    hdr = curl_slist_append(hdr, line);
    const char *user = r->has_id ? r->id.sub : "", *role = r->has_id ? r->id.role : "";
    if (r->has_id) {
        snprintf(line, sizeof(line), "X-Bnb-User: %s", user);
        hdr = curl_slist_append(hdr, line);
        snprintf(line, sizeof(line), "X-Bnb-Role: %s", role);
        hdr = curl_slist_append(hdr, line);
    }
    if (secret_len > 0) {
        char pq[3072], sig[160];
        snprintf(pq, sizeof(pq), "%s%s%s", r->path, r->query ? "?" : "", r->query ? r->query : "");
        bnb__gateway_sign(BNB_SIGNED_EDGE, r->method, pq, r->exec.request_id, user, role, r->raw_in, r->raw_in_len,
                          bnb__now_ms() / 1000, sig, sizeof(sig));
        snprintf(line, sizeof(line), "X-Bnb-Gateway: %s", sig);
        hdr = curl_slist_append(hdr, line);
    }
    hdr = curl_slist_append(hdr, "Expect:");
    px->hdr = hdr;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* forwarded (and signed) as received: no dot-segment removal */
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    if (r->raw_in != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->raw_in);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)r->raw_in_len);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L); /* a HEAD answer has no body to wait for */
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
        px->is_head = 1;
    } else if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, h2c ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE : CURL_HTTP_VERSION_1_1);
    if (h2c && curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
        /* libcurl < 8 breaks on a reused prior-knowledge connection ("Error in
         * the HTTP2 framing layer", fixed in 8.0): one connection per request */
        curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    }
    /* the deadline is kept below (a stream's lasts until its head) */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, px);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, px);
    CURLcode cc = CURLE_OK;
    int running = 1, timed_out = 0;
    int64_t deadline = bnb__mono_ms() + timeout_ms;
    if (curl_multi_add_handle(m, c) != CURLM_OK) {
        px_free(px);
        bnb__problem_json(r, 503, NULL, "out of memory");
        return;
    }
    for (;;) {
        curl_multi_perform(m, &running);
        if (!running || px->detach)
            break;
        int64_t left = deadline - bnb__mono_ms();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        curl_multi_poll(m, NULL, 0, (int)(left < 1000 ? left : 1000), NULL);
    }
    if (px->detach && running) {
        if (hand_off(px, r) == 0)
            return;
        /* no thread: no stream */
        bnb__stream_abandon(r->stream);
        r->stream = NULL;
        bnb__stream_close(px->s);
        atomic_fetch_sub(&streams_slots, 1);
        px_free(px);
        bnb__problem_json(r, 503, NULL, "cannot relay the stream now; retry later");
        return;
    }
    int msgs;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m, &msgs)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == c)
            cc = msg->data.result;
    curl_multi_remove_handle(m, c);
    if (px->detach) {
        /* the whole stream came at once: it ends here */
        bnb__stream_close(px->s);
        atomic_fetch_sub(&streams_slots, 1);
        px_free(px);
        return;
    }
    if (timed_out || cc != CURLE_OK) {
        int to = timed_out || cc == CURLE_OPERATION_TIMEDOUT;
        int refused = px->refused;
        px_free(px);
        drop_passed_back(r);
        if (refused) {
            r->rh_names[0] = strdup("retry-after");
            r->rh_values[0] = strdup("1");
            if (r->rh_names[0] && r->rh_values[0]) {
                r->nrh = 1;
            } else {
                free(r->rh_names[0]);
                free(r->rh_values[0]);
            }
            r->edge_own = 1; /* not the upstream's failure: the breaker does not count it */
            bnb__problem_json(r, 503, NULL, "the gateway relays as many streams as it may; retry later");
            return;
        }
        bnb__log(BNB_LOG_WARN, "upstream %s: %s", url, to ? "timed out" : curl_easy_strerror(cc));
        bnb__problem_json(r, to ? 504 : 502, NULL,
                          to ? "the service did not answer in time" : "the service could not be reached");
        return;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    r->status = (int)code;
    r->raw_out = px->b.p;
    r->raw_out_len = px->b.len;
    px->b.p = NULL;
    r->answered = 1;
    px_free(px);
}

/* ---- readiness of an edge -------------------------------------------------------
 *
 * An edge is ready while at least one of its upstreams answers GET /readyz
 * with 200. A thread of its own asks every upstream once per READY_PERIOD_MS
 * (each within READY_TIMEOUT_MS); /readyz reads the last answer and never
 * waits. Until the first round is done the edge is not ready. */

#define READY_PERIOD_MS  1000
#define READY_TIMEOUT_MS 1000

static pthread_t ready_thread;
static int ready_thread_on;
static pthread_mutex_t ready_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cv = PTHREAD_COND_INITIALIZER;
static int ready_stop;               /* under ready_mu */
static _Atomic int upstreams_ready;  /* answered 200 in the last round */
static _Atomic int ready_round_done; /* a round has finished since start */

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

static int upstream_ready(CURL *c, const char *base, int h2c)
{
    char url[600];
    snprintf(url, sizeof(url), "%s/readyz", base);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, h2c ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE : CURL_HTTP_VERSION_1_1);
    if (h2c) {
        curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L); /* see bnb__proxy_run */
        curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    }
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)READY_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    long code = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    return code == 200;
}

static void *ready_main(void *arg)
{
    (void)arg;
    CURL *c = curl_easy_init();
    int logged = -1;
    pthread_mutex_lock(&ready_mu);
    while (!ready_stop) {
        pthread_mutex_unlock(&ready_mu);
        int n = 0;
        for (size_t i = 0; c != NULL && i < nroutes; i++) {
            int seen = 0; /* one question per upstream, however many prefixes route to it */
            for (size_t k = 0; k < i && !seen; k++)
                seen = strcmp(routes[k].base, routes[i].base) == 0;
            if (!seen)
                n += upstream_ready(c, routes[i].base, routes[i].h2c);
        }
        atomic_store(&upstreams_ready, n);
        atomic_store(&ready_round_done, 1);
        if ((n > 0) != logged) {
            if (n > 0)
                bnb__log(BNB_LOG_INFO, "gateway: %d upstream(s) ready", n);
            else
                bnb__log(BNB_LOG_WARN, "gateway: no upstream answers /readyz: not ready");
            logged = n > 0;
        }
        pthread_mutex_lock(&ready_mu);
        if (ready_stop)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)READY_PERIOD_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&ready_cv, &ready_mu, &until);
    }
    pthread_mutex_unlock(&ready_mu);
    if (c != NULL)
        curl_easy_cleanup(c);
    return NULL;
}

int bnb__gateway_ready_start(void)
{
    if (nroutes == 0 || ready_thread_on)
        return 0;
    ready_stop = 0;
    atomic_store(&ready_round_done, 0);
    atomic_store(&upstreams_ready, 0);
    if (pthread_create(&ready_thread, NULL, ready_main, NULL) != 0)
        return -1;
    ready_thread_on = 1;
    return 0;
}

static void ready_thread_stop(void)
{
    if (!ready_thread_on)
        return;
    pthread_mutex_lock(&ready_mu);
    ready_stop = 1;
    pthread_cond_broadcast(&ready_cv);
    pthread_mutex_unlock(&ready_mu);
    pthread_join(ready_thread, NULL);
    ready_thread_on = 0;
}

int bnb__gateway_ready(int *nready)
{
    int n = atomic_load(&upstreams_ready);
    if (nready != NULL)
        *nready = n;
    if (nroutes == 0)
        return 1;
    return atomic_load(&ready_round_done) && n > 0;
}

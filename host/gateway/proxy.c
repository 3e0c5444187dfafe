/* The edge: prefix routes to upstream services (libcurl on worker threads,
 * one keep-alive connection cache per thread), and the signed identity
 * header that lets a service refuse requests that bypass the gateway. */
#include "gateway.h"
#include "host.h"

#include <curl/curl.h>
#include <pthread.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* every thread's handle, so that they are cleaned up at exit */
static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static CURL **handles;
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
    /* the worker threads are idle now (drained): their handles can go */
    pthread_mutex_lock(&handles_mu);
    for (size_t i = 0; i < nhandles; i++)
        curl_easy_cleanup(handles[i]);
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

/* ---- proxying ---------------------------------------------------------------- */

static const char *const pass_back[] = {"content-type",     "retry-after", "location",           "allow",
                                        "www-authenticate", "etag",        "idempotent-replayed"};

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    bnb_req_t *r = ud;
    size_t n = size * nitems;
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
    for (size_t i = 0; i < sizeof(pass_back) / sizeof(pass_back[0]); i++) {
        if (strlen(pass_back[i]) != nl || strncasecmp(buf, pass_back[i], nl) != 0)
            continue;
        if (i == 0) {
            free(r->raw_ctype);
            r->raw_ctype = strndup(v, vl);
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

static __thread CURL *tl_curl; /* one per worker thread: keeps its connections alive */
static __thread unsigned tl_gen;

static CURL *thread_handle(void)
{
    if (tl_curl != NULL && tl_gen == handles_gen)
        return tl_curl;
    tl_curl = NULL;
    CURL *c = curl_easy_init();
    if (c == NULL)
        return NULL;
    pthread_mutex_lock(&handles_mu);
    CURL **nh = realloc(handles, (nhandles + 1) * sizeof(*nh));
    if (nh != NULL) {
        handles = nh;
        handles[nhandles++] = c;
    }
    pthread_mutex_unlock(&handles_mu);
    if (nh == NULL) {
        curl_easy_cleanup(c);
        return NULL;
    }
    tl_curl = c;
    tl_gen = handles_gen;
    return c;
}

void bnb__proxy_run(bnb_req_t *r, const char *base, int h2c, long timeout_ms)
{
    CURL *c = thread_handle();
    if (c == NULL) {
        bnb__problem_json(r, 503, NULL, "out of memory");
        return;
    }
    curl_easy_reset(c);
    char url[4096];
    if ((size_t)snprintf(url, sizeof(url), "%s%s%s%s", base, r->path, r->query ? "?" : "", r->query ? r->query : "") >=
        3072) {
        bnb__problem_json(r, 414, NULL, "the path and query are too long to forward");
        return;
    }
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
    bnb_buf_t b = {NULL, 0, 16 * 1024 * 1024};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* forwarded (and signed) as received: no dot-segment removal */
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    if (r->raw_in != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->raw_in);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)r->raw_in_len);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L); /* a HEAD answer has no body to wait for */
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
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
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, bnb__curl_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(hdr);
    if (cc != CURLE_OK) {
        free(b.p);
        int to = cc == CURLE_OPERATION_TIMEDOUT;
        bnb__log(BNB_LOG_WARN, "upstream %s: %s", url, curl_easy_strerror(cc));
        bnb__problem_json(r, to ? 504 : 502, NULL,
                          to ? "the service did not answer in time" : "the service could not be reached");
        return;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    r->status = (int)code;
    r->raw_out = b.p;
    r->raw_out_len = b.len;
    r->answered = 1;
}

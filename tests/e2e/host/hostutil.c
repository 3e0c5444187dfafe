#include "hostutil.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- growing buffers ------------------------------------------------------ */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

static int buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static char *buf_take(buf_t *b)
{
    if (b->p == NULL)
        return strdup("");
    return b->p;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    return buf_add(ud, p, sz * n) == 0 ? sz * n : 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    buf_t *b = ud;
    if (sz * n >= 5 && strncmp(p, "HTTP/", 5) == 0)
        b->len = 0; /* a new response (after 101 Switching Protocols): keep the last */
    return buf_add(b, p, sz * n) == 0 ? sz * n : 0;
}

/* ---- HTTP ----------------------------------------------------------------- */

int hu_request(int port, hu_proto_t proto, const char *cafile, const char *method, const char *path,
               const char *const *headers, const char *body, hu_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    buf_t hb = {0}, bb = {0};
    struct curl_slist *hl = NULL;
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(out->error, sizeof(out->error), "curl_easy_init failed");
        out->curl_code = -1;
        return -1;
    }
    int tls = proto == HU_H2_TLS || proto == HU_H1_TLS;
    char url[512];
    snprintf(url, sizeof(url), "%s://127.0.0.1:%d%s", tls ? "https" : "http", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    switch (proto) {
    case HU_H1:
    case HU_H1_TLS:
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        break;
    case HU_H2_PRIOR:
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
        break;
    case HU_H2_UPGRADE:
    case HU_H2_TLS:
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
        break;
    }
    if (tls) {
        curl_easy_setopt(c, CURLOPT_CAINFO, cafile);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    for (const char *const *h = headers; h && *h; h++)
        hl = curl_slist_append(hl, *h);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
    char eb[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, eb);
    CURLcode rc = curl_easy_perform(c);
    out->curl_code = (int)rc;
    if (rc != CURLE_OK)
        snprintf(out->error, sizeof(out->error), "%s: %s", curl_easy_strerror(rc), eb);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, &out->http_version);
    out->headers = buf_take(&hb);
    out->body = buf_take(&bb);
    out->body_len = bb.len;
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        fprintf(stderr, "hu_request %s %s: %s\n", method, url, out->error);
    return rc == CURLE_OK ? 0 : -1;
}

void hu_resp_free(hu_resp_t *r)
{
    free(r->headers);
    free(r->body);
    r->headers = r->body = NULL;
}

int hu_header(const hu_resp_t *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *end = strstr(line, "\r\n");
        if (end == NULL)
            end = line + strlen(line);
        if ((size_t)(end - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(end - v), v);
            return 0;
        }
        line = *end ? end + 2 : end;
    }
    return -1;
}

/* ---- processes -------------------------------------------------------------- */

static char **make_env(const char *const *extra)
{
    size_t ne = 0, nx = 0;
    while (environ[ne])
        ne++;
    while (extra && extra[nx])
        nx++;
    char **env = calloc(ne + nx + 1, sizeof(char *));
    if (env == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < ne; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t kl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int drop = 0;
        for (size_t k = 0; k < nx && !drop; k++)
            drop = strncmp(extra[k], environ[i], kl) == 0 && (extra[k][kl] == '=' || extra[k][kl] == '\0');
        if (!drop)
            env[n++] = environ[i];
    }
    for (size_t k = 0; k < nx; k++)
        if (strchr(extra[k], '=') != NULL)
            env[n++] = (char *)extra[k];
    env[n] = NULL;
    return env;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int hu_run(const char *const *argv, const char *const *env, int timeout_ms, hu_run_t *out)
{
    memset(out, 0, sizeof(*out));
    out->status = -1;
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(pe, O_CLOEXEC) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    char **envp = make_env(env);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = envp ? posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, envp) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(po[1]);
    close(pe[1]);
    buf_t ob = {0}, eb = {0};
    if (rc != 0) {
        fprintf(stderr, "hu_run: cannot start %s: %s\n", argv[0], strerror(rc));
        close(po[0]);
        close(pe[0]);
        return -1;
    }
    long long deadline = now_ms() + timeout_ms;
    int open_o = 1, open_e = 1, killed = 0;
    while (open_o || open_e) {
        struct pollfd pf[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
        long long left = deadline - now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = 1;
            break;
        }
        int n = poll(pf, 2, (int)left);
        if (n < 0 && errno != EINTR)
            break;
        char chunk[4096];
        for (int i = 0; i < 2; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(pf[i].fd, chunk, sizeof(chunk));
            if (r > 0)
                buf_add(i == 0 ? &ob : &eb, chunk, (size_t)r);
            else if (i == 0)
                open_o = 0;
            else
                open_e = 0;
        }
    }
    close(po[0]);
    close(pe[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    out->out = buf_take(&ob);
    out->err = buf_take(&eb);
    if (killed)
        out->status = -1;
    else if (WIFEXITED(st))
        out->status = WEXITSTATUS(st);
    else if (WIFSIGNALED(st))
        out->status = 128 + WTERMSIG(st);
    return 0;
}

void hu_run_free(hu_run_t *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* ---- files and certificates ------------------------------------------------ */

int hu_make_cert(const char *cert_path, const char *key_path)
{
    int rc = -1;
    FILE *fc = NULL, *fk = NULL;
    X509_EXTENSION *ext = NULL;
    X509 *x = NULL;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL || (x = X509_new()) == NULL)
        goto fail;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    static const struct {
        int nid;
        const char *value;
    } exts[] = {{NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1"}, {NID_basic_constraints, "critical,CA:TRUE"}};
    for (size_t i = 0; i < 2; i++) {
        ext = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid, exts[i].value);
        if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
            goto fail;
        X509_EXTENSION_free(ext);
        ext = NULL;
    }
    if (X509_sign(x, k, EVP_sha256()) == 0)
        goto fail;
    fc = fopen(cert_path, "w");
    fk = fopen(key_path, "w");
    if (fc == NULL || fk == NULL || PEM_write_X509(fc, x) != 1 ||
        PEM_write_PrivateKey(fk, k, NULL, NULL, 0, NULL, NULL) != 1)
        goto fail;
    rc = 0;
fail:
    if (fc != NULL && fclose(fc) != 0)
        rc = -1;
    if (fk != NULL && fclose(fk) != 0)
        rc = -1;
    X509_EXTENSION_free(ext);
    X509_free(x);
    EVP_PKEY_free(k);
    if (rc != 0)
        fprintf(stderr, "hu_make_cert: cannot make a certificate\n");
    return rc;
}

int hu_copy(const char *from, const char *to)
{
    int rc = -1;
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || out < 0)
        goto fail;
    char b[65536];
    ssize_t n;
    while ((n = read(in, b, sizeof(b))) > 0)
        if (write(out, b, (size_t)n) != n)
            goto fail;
    rc = n == 0 ? 0 : -1;
fail:
    if (rc != 0)
        fprintf(stderr, "hu_copy %s -> %s: %s\n", from, to, strerror(errno));
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0)
        rc = -1;
    return rc;
}

char *hu_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    buf_t b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_add(&b, chunk, n);
    fclose(f);
    return buf_take(&b);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

void hu_rmtree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- the usual fixture ------------------------------------------------------------ */

hu_fx_t *hu_fx_start(const char *const *env)
{
    hu_fx_t *f = calloc(1, sizeof(*f));
    e2e_host_opts_t o = {.env = env};
    if (f == NULL)
        return NULL;
    if (e2e_host_start(&f->h, env ? &o : NULL) != 0 || (f->host_tok = e2e_token(f->h, "alice", "host", 0)) == NULL) {
        hu_fx_stop(f);
        return NULL;
    }
    return f;
}

int hu_fx_stop(hu_fx_t *f)
{
    if (f == NULL)
        return -1;
    int st = f->h ? e2e_host_stop(f->h) : -1;
    e2e_host_free(f->h);
    free(f->host_tok);
    free(f);
    if (st != 0)
        fprintf(stderr, "host exit status %d (23 = ASan/LSan report)\n", st);
    return st;
}

/* ---- raw sockets -------------------------------------------------------------------- */

int hu_count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

int hu_contains(const char *hay, size_t n_hay, const char *needle, size_t n)
{
    return memmem(hay, n_hay, needle, n) != NULL;
}

long hu_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* ---- HTTP/2 by hand ------------------------------------------------------------------ */

void hu_h2_put(hu_h2buf_t *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 1024;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

void hu_h2_byte(hu_h2buf_t *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    hu_h2_put(b, &c, 1);
}

/* HPACK integer with an n-bit prefix; `first` holds the pattern bits */
static void hp_int(hu_h2buf_t *b, unsigned first, int nbits, size_t v)
{
    size_t max = (1u << nbits) - 1;
    if (v < max) {
        hu_h2_byte(b, first | (unsigned)v);
        return;
    }
    hu_h2_byte(b, first | (unsigned)max);
    v -= max;
    while (v >= 128) {
        hu_h2_byte(b, (unsigned)(v % 128) | 128);
        v /= 128;
    }
    hu_h2_byte(b, (unsigned)v);
}

void hu_h2_str(hu_h2buf_t *b, const char *s, size_t n)
{
    hp_int(b, 0, 7, n);
    hu_h2_put(b, s, n);
}

void hu_h2_lit(hu_h2buf_t *b, const char *name, const char *value)
{
    hu_h2_byte(b, 0x00);
    hu_h2_str(b, name, strlen(name));
    hu_h2_str(b, value, strlen(value));
}

void hu_h2_frame(hu_h2buf_t *out, unsigned type, unsigned flags, uint32_t sid, const void *payload, size_t n)
{
    unsigned char hd[9] = {(unsigned char)(n >> 16),   (unsigned char)(n >> 8),   (unsigned char)n,
                           (unsigned char)type,        (unsigned char)flags,      (unsigned char)(sid >> 24 & 0x7f),
                           (unsigned char)(sid >> 16), (unsigned char)(sid >> 8), (unsigned char)sid};
    hu_h2_put(out, hd, 9);
    if (n)
        hu_h2_put(out, payload, n);
}

void hu_h2_headers(hu_h2buf_t *out, uint32_t sid, const hu_h2buf_t *block, int end_stream)
{
    size_t off = 0;
    int first = 1;
    do {
        size_t n = block->len - off > 16384 ? 16384 : block->len - off;
        int last = off + n == block->len;
        unsigned flags = (last ? 0x4 : 0) | (first && end_stream ? 0x1 : 0);
        hu_h2_frame(out, first ? 0x1 : 0x9, flags, sid, block->p + off, n);
        off += n;
        first = 0;
    } while (off < block->len);
}

void hu_h2_rst(hu_h2buf_t *out, uint32_t sid)
{
    unsigned char code[4] = {0, 0, 0, 8}; /* CANCEL */
    hu_h2_frame(out, 0x3, 0, sid, code, 4);
}

void hu_h2_preface(hu_h2buf_t *out)
{
    hu_h2_put(out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    hu_h2_frame(out, 0x4, 0, 0, NULL, 0);
}

void hu_h2_req_block(hu_h2buf_t *b, const char *method, const char *path, const char *token, int json)
{
    hu_h2_lit(b, ":method", method);
    hu_h2_lit(b, ":scheme", "http");
    hu_h2_lit(b, ":path", path);
    hu_h2_lit(b, ":authority", "localhost");
    if (token != NULL) {
        char auth[2048];
        snprintf(auth, sizeof(auth), "Bearer %s", token);
        hu_h2_lit(b, "authorization", auth);
    }
    if (json)
        hu_h2_lit(b, "content-type", "application/json");
}

/* ---- nghttp ------------------------------------------------------------------------ */

char *hu_nghttp_post(const char *url, const char *token, const char *file, const char *flag)
{
    static const char nghttp[] = "/usr/bin/nghttp";
    if (access(nghttp, X_OK) != 0) {
        fprintf(stderr, "%s is missing\n", nghttp);
        return NULL;
    }
    char auth[2200];
    snprintf(auth, sizeof(auth), "authorization: Bearer %s", token);
    const char *argv[12] = {nghttp, "-v", "-H", auth, "-H", "content-type: application/json", "-d", file};
    size_t n = 8;
    if (flag != NULL)
        argv[n++] = flag;
    argv[n++] = url;
    argv[n] = NULL;
    hu_run_t r;
    if (hu_run(argv, NULL, 60000, &r) != 0)
        return NULL;
    if (r.status != 0) {
        fprintf(stderr, "nghttp exited %d: %.1000s\n", r.status, r.err);
        hu_run_free(&r);
        return NULL;
    }
    free(r.err);
    return r.out;
}

int hu_nghttp_got_413(const char *out)
{
    const char *st = strstr(out, ":status: 413"), *rst = st ? strstr(st, "error_code=NO_ERROR") : NULL;
    return st != NULL && rst != NULL && strstr(out, "content-type: application/problem+json") != NULL &&
           strstr(out, "\"status\":413") != NULL && strstr(out, "REFUSED_STREAM") == NULL;
}

void hu_nghttp_summary(const char *out, char *sum, size_t cap)
{
    size_t o = 0;
    sum[0] = '\0';
    for (const char *line = out; *line && o + 200 < cap;) {
        const char *end = strchr(line, '\n');
        size_t l = end ? (size_t)(end - line) : strlen(line);
        if (memmem(line, l, "recv", 4) || memmem(line, l, "error_code", 10) || memmem(line, l, "status", 6))
            o += (size_t)snprintf(sum + o, cap - o, "%.*s\n", (int)(l < 190 ? l : 190), line);
        line += l + (end ? 1 : 0);
    }
}

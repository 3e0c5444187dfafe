/* End-to-end test harness (see harness.h). */
#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <ctype.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <jwt.h>
#include <unistd.h>

extern char **environ;

struct e2e_host {
    char *bin;
    char dir[512];
    char log_path[600];
    int port;
    pid_t pid;
    int ready_timeout_ms;
    char **env;  /* full environment for the child, NULL-terminated */
    char **args; /* extra args, NULL-terminated */
};

struct e2e_client {
    CURL *curl;
    int port;
};

static void e2e_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void e2e_msg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("[e2e] ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- time ---------------------------------------------------------------- */

long long e2e_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int e2e_wait_until(int timeout_ms, int interval_ms, int (*cond)(void *arg), void *arg)
{
    long long deadline = e2e_now_ms() + timeout_ms;
    if (interval_ms <= 0)
        interval_ms = 50;
    for (;;) {
        if (cond(arg))
            return 0;
        if (e2e_now_ms() >= deadline)
            return -1;
        sleep_ms(interval_ms);
    }
}

/* ---- curl global state --------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    atexit(curl_global_cleanup);
}

/* ---- helpers --------------------------------------------------------------- */

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static size_t strv_len(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* environ with `extra` ("K=V") overriding. */
static char **build_env(const char *const *extra)
{
    size_t ne = strv_len((const char *const *)environ), nx = strv_len(extra), n = 0;
    char **out = calloc(ne + nx + 1, sizeof(*out));
    if (!out)
        return NULL;
    for (size_t i = 0; i < ne; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int overridden = 0;
        for (size_t j = 0; j < nx; j++)
            if (strncmp(extra[j], environ[i], klen) == 0 && extra[j][klen] == '=')
                overridden = 1;
        if (!overridden && !(out[n++] = strdup(environ[i])))
            goto fail;
    }
    for (size_t j = 0; j < nx; j++)
        if (!(out[n++] = strdup(extra[j])))
            goto fail;
    return out;
fail:
    free_strv(out);
    return NULL;
}

static char **copy_strv(const char *const *v)
{
    size_t n = strv_len(v);
    char **out = calloc(n + 1, sizeof(*out));
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(out[i] = strdup(v[i]))) {
            free_strv(out);
            return NULL;
        }
    return out;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* ---- leftovers --------------------------------------------------------------
 * A test that fails between start and free (cmocka longjmps out of it) must
 * not leave a running host or a temp dir behind: live children and their
 * dirs are recorded here and killed/removed at exit. Only copies live here,
 * so LeakSanitizer still reports an e2e_host_t a test forgot to free. */

#define E2E_MAX_LIVE 64

static struct {
    pid_t pid;
    char dir[512];
} live[E2E_MAX_LIVE];
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t live_once = PTHREAD_ONCE_INIT;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw);

static void live_cleanup(void)
{
    const char *keep = getenv("BNB_E2E_KEEP");
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < E2E_MAX_LIVE; i++) {
        if (live[i].pid > 0) {
            kill(live[i].pid, SIGKILL);
            waitpid(live[i].pid, NULL, 0);
        }
        if (live[i].dir[0] && !(keep && *keep == '1'))
            nftw(live[i].dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        live[i].pid = 0;
        live[i].dir[0] = '\0';
    }
    pthread_mutex_unlock(&live_lock);
}

static void live_init(void)
{
    atexit(live_cleanup);
}

/* Record `dir` and its running child `pid` (0: none running), or forget the entry. */
static void live_set(const char *dir, pid_t pid, int forget_dir)
{
    int slot = -1;
    pthread_once(&live_once, live_init);
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < E2E_MAX_LIVE; i++)
        if (live[i].dir[0] && strcmp(live[i].dir, dir) == 0)
            slot = i;
    if (slot < 0 && !forget_dir)
        for (int i = 0; i < E2E_MAX_LIVE && slot < 0; i++)
            if (!live[i].dir[0])
                slot = i;
    if (slot >= 0) {
        if (forget_dir) {
            live[slot].pid = 0;
            live[slot].dir[0] = '\0';
        } else {
            live[slot].pid = pid;
            snprintf(live[slot].dir, sizeof(live[slot].dir), "%s", dir);
        }
    }
    pthread_mutex_unlock(&live_lock);
}

/* ---- host process ---------------------------------------------------------- */

int e2e_host_port(const e2e_host_t *h)
{
    return h->port;
}

pid_t e2e_host_pid(const e2e_host_t *h)
{
    return h->pid;
}

const char *e2e_host_dir(const e2e_host_t *h)
{
    return h->dir;
}

const char *e2e_host_log_path(const e2e_host_t *h)
{
    return h->log_path;
}

char *e2e_host_log_tail(const e2e_host_t *h, size_t max)
{
    FILE *f = fopen(h->log_path, "rb");
    char *buf = calloc(1, max + 1);
    size_t n = 0;
    if (!buf)
        goto out;
    if (f) {
        if (fseek(f, 0, SEEK_END) == 0) {
            long sz = ftell(f);
            fseek(f, sz > (long)max ? sz - (long)max : 0, SEEK_SET);
        }
        n = fread(buf, 1, max, f);
        buf[n] = '\0';
    }
out:
    if (f)
        fclose(f);
    return buf;
}

static void print_log_tail(const e2e_host_t *h)
{
    char *tail = e2e_host_log_tail(h, 4000);
    e2e_msg("host log tail (%s):\n%s", h->log_path, tail ? tail : "");
    free(tail);
}

static int spawn_host(e2e_host_t *h)
{
    char listen[64], *argv[64];
    size_t n = 0, na = strv_len((const char *const *)h->args);
    posix_spawn_file_actions_t fa;
    int rc;

    if (na > 50) {
        e2e_msg("too many extra args");
        return -1;
    }
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", h->port);
    argv[n++] = h->bin;
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--data";
    argv[n++] = h->dir;
    for (size_t i = 0; i < na; i++)
        argv[n++] = h->args[i];
    argv[n] = NULL;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, h->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    rc = posix_spawn(&h->pid, h->bin, &fa, NULL, argv, h->env);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        e2e_msg("cannot start %s: %s", h->bin, strerror(rc));
        h->pid = 0;
        return -1;
    }
    live_set(h->dir, h->pid, 0);
    return 0;
}

static void child_gone(e2e_host_t *h)
{
    h->pid = 0;
    live_set(h->dir, 0, 0);
}

static int reap(e2e_host_t *h, int timeout_ms)
{
    long long deadline = e2e_now_ms() + timeout_ms;
    int st;
    if (h->pid <= 0)
        return -1;
    for (;;) {
        pid_t r = waitpid(h->pid, &st, WNOHANG);
        if (r == h->pid) {
            child_gone(h);
            if (WIFEXITED(st))
                return WEXITSTATUS(st);
            if (WIFSIGNALED(st))
                return 128 + WTERMSIG(st);
            return -1;
        }
        if (r < 0 && errno != EINTR) {
            child_gone(h);
            return -1;
        }
        if (e2e_now_ms() >= deadline)
            return -2;
        sleep_ms(20);
    }
}

int e2e_host_wait_ready(e2e_host_t *h, int timeout_ms)
{
    long long deadline = e2e_now_ms() + (timeout_ms > 0 ? timeout_ms : 15000);
    e2e_client_t *c = e2e_client_new(h->port);
    long last = 0;
    if (!c)
        return -1;
    for (;;) {
        e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = "/readyz", .timeout_ms = 2000};
        e2e_resp_t r;
        e2e_client_do(c, &rq, &r);
        last = r.status;
        e2e_resp_free(&r);
        if (last == 200)
            break;
        if (h->pid > 0 && waitpid(h->pid, NULL, WNOHANG) == h->pid) {
            /* Already exited: reaped here, so record it. */
            e2e_msg("host exited before becoming ready");
            child_gone(h);
            goto fail;
        }
        if (e2e_now_ms() >= deadline) {
            e2e_msg("host not ready in time (last /readyz status %ld)", last);
            goto fail;
        }
        sleep_ms(50);
    }
    e2e_client_free(c);
    return 0;
fail:
    e2e_client_free(c);
    print_log_tail(h);
    return -1;
}

int e2e_host_start(e2e_host_t **out, const e2e_host_opts_t *opts)
{
    const char *bin = getenv("BEARBNB_BIN"), *tmp = getenv("TMPDIR");
    e2e_host_t *h = NULL;

    *out = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (!bin || !*bin) {
        e2e_msg("BEARBNB_BIN is not set");
        return -1;
    }
    if (!(h = calloc(1, sizeof(*h))))
        return -1;
    h->ready_timeout_ms = opts && opts->ready_timeout_ms > 0 ? opts->ready_timeout_ms : 15000;
    snprintf(h->dir, sizeof(h->dir), "%s/bnb-e2e-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(h->dir)) {
        e2e_msg("mkdtemp %s: %s", h->dir, strerror(errno));
        h->dir[0] = '\0';
        goto fail;
    }
    live_set(h->dir, 0, 0);
    snprintf(h->log_path, sizeof(h->log_path), "%s/host.log", h->dir);
    if (!(h->bin = strdup(bin)) || !(h->env = build_env(opts ? opts->env : NULL)) ||
        !(h->args = copy_strv(opts ? opts->args : NULL)))
        goto fail;
    if ((h->port = free_port()) <= 0) {
        e2e_msg("no free port");
        goto fail;
    }
    if (spawn_host(h) != 0)
        goto fail;
    if (!(opts && opts->no_wait) && e2e_host_wait_ready(h, h->ready_timeout_ms) != 0)
        goto fail;
    *out = h;
    return 0;
fail:
    e2e_host_free(h);
    return -1;
}

int e2e_host_signal(e2e_host_t *h, int sig)
{
    if (h->pid <= 0)
        return -1;
    return kill(h->pid, sig) == 0 ? 0 : -1;
}

int e2e_host_wait_exit(e2e_host_t *h, int timeout_ms)
{
    int rc = reap(h, timeout_ms);
    if (rc == -2) {
        e2e_msg("host pid %d did not exit within %d ms; killing it", (int)h->pid, timeout_ms);
        kill(h->pid, SIGKILL);
        reap(h, 10000);
        rc = -1;
    }
    if (rc != 0) {
        e2e_msg("host exit status %d%s", rc, rc == 23 ? " (sanitizer report)" : "");
        print_log_tail(h);
    }
    return rc;
}

int e2e_host_stop(e2e_host_t *h)
{
    if (e2e_host_signal(h, SIGTERM) != 0) {
        e2e_msg("host not running");
        return -1;
    }
    return e2e_host_wait_exit(h, 30000);
}

void e2e_host_kill(e2e_host_t *h)
{
    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        reap(h, 10000);
    }
}

int e2e_host_restart(e2e_host_t *h)
{
    if (h->pid > 0) {
        e2e_msg("restart: host still running");
        return -1;
    }
    if (spawn_host(h) != 0)
        return -1;
    return e2e_host_wait_ready(h, h->ready_timeout_ms);
}

void e2e_host_free(e2e_host_t *h)
{
    const char *keep = getenv("BNB_E2E_KEEP");
    if (!h)
        return;
    e2e_host_kill(h);
    if (h->dir[0]) {
        if (keep && *keep == '1')
            e2e_msg("keeping %s", h->dir);
        else
            nftw(h->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        live_set(h->dir, 0, 1);
    }
    free(h->bin);
    free_strv(h->env);
    free_strv(h->args);
    free(h);
}

char *e2e_token(const e2e_host_t *h, const char *sub, const char *role, long ttl_s)
{
    char ttl[32], *argv[16], buf[8192], *out = NULL;
    size_t n = 0, len = 0;
    int pfd[2] = {-1, -1}, st = 0;
    pid_t pid = 0;
    posix_spawn_file_actions_t fa;
    int rc;

    argv[n++] = h->bin;
    argv[n++] = "token";
    argv[n++] = "--data";
    argv[n++] = (char *)h->dir;
    argv[n++] = "--sub";
    argv[n++] = (char *)sub;
    argv[n++] = "--role";
    argv[n++] = (char *)role;
    if (ttl_s != 0) {
        snprintf(ttl, sizeof(ttl), "%ld", ttl_s);
        argv[n++] = "--ttl";
        argv[n++] = ttl;
    }
    argv[n] = NULL;
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return NULL;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, h->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    rc = posix_spawn(&pid, h->bin, &fa, NULL, argv, h->env);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        e2e_msg("cannot run %s token: %s", h->bin, strerror(rc));
        close(pfd[0]);
        return NULL;
    }
    for (;;) {
        ssize_t r = read(pfd[0], buf + len, sizeof(buf) - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof(buf) - 1)
            break;
    }
    close(pfd[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    buf[len] = '\0';
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || len == 0) {
        e2e_msg("`bearbnb token --sub %s --role %s` failed (status %d)", sub, role, st);
        print_log_tail(h);
        return NULL;
    }
    out = strdup(buf);
    return out;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

char *e2e_token_claims(const e2e_host_t *h, const char *claims_json)
{
    char path[700], buf[1024];
    unsigned char key[512];
    size_t n = 0, klen = 0;
    FILE *f;
    jwt_t *jwt = NULL;
    char *tok = NULL, *out = NULL;
    const char *p = buf;

    snprintf(path, sizeof(path), "%s/jwt.key", h->dir);
    if (!(f = fopen(path, "rb"))) {
        e2e_msg("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n && isspace((unsigned char)buf[n - 1]))
        n--;
    while (n && isspace((unsigned char)*p))
        p++, n--;
    int is_hex = n % 2 == 0 && n > 0;
    for (size_t i = 0; is_hex && i < n; i++)
        is_hex = hexval((unsigned char)p[i]) >= 0;
    if (is_hex && n / 2 <= sizeof(key)) {
        for (size_t i = 0; i < n / 2; i++)
            key[i] = (unsigned char)(hexval((unsigned char)p[2 * i]) << 4 | hexval((unsigned char)p[2 * i + 1]));
        klen = n / 2;
    } else {
        klen = n < sizeof(key) ? n : sizeof(key);
        memcpy(key, p, klen);
    }
    if (jwt_new(&jwt) != 0 || jwt_add_grants_json(jwt, claims_json) != 0 ||
        jwt_set_alg(jwt, JWT_ALG_HS256, key, (int)klen) != 0 || !(tok = jwt_encode_str(jwt))) {
        e2e_msg("cannot sign claims %s", claims_json);
        goto done;
    }
    out = strdup(tok);
done:
    free(tok); /* jwt_encode_str: caller frees with free() */
    jwt_free(jwt);
    return out;
}

/* ---- HTTP ------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} membuf_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    membuf_t *m = ud;
    size_t n = size * nmemb;
    if (m->len + n + 1 > m->cap) {
        size_t cap = m->cap ? m->cap : 1024;
        while (cap < m->len + n + 1)
            cap *= 2;
        char *nb = realloc(m->buf, cap);
        if (!nb) {
            m->oom = 1;
            return 0;
        }
        m->buf = nb;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, ptr, n);
    m->len += n;
    m->buf[m->len] = '\0';
    return n;
}

static void copy_header_value(char *dst, size_t dstlen, const char *v, size_t vlen)
{
    while (vlen && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    if (vlen >= dstlen)
        vlen = dstlen - 1;
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    e2e_resp_t *r = ud;
    size_t n = size * nmemb;
    static const struct {
        const char *name;
        size_t off, len;
    } want[] = {
        {"content-type", offsetof(e2e_resp_t, content_type), sizeof(((e2e_resp_t *)0)->content_type)},
        {"retry-after", offsetof(e2e_resp_t, retry_after), sizeof(((e2e_resp_t *)0)->retry_after)},
        {"allow", offsetof(e2e_resp_t, allow), sizeof(((e2e_resp_t *)0)->allow)},
        {"location", offsetof(e2e_resp_t, location), sizeof(((e2e_resp_t *)0)->location)},
    };
    /* A new status line (e.g. after 100-continue) starts a fresh header set. */
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        r->content_type[0] = r->retry_after[0] = r->allow[0] = r->location[0] = '\0';
        return n;
    }
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        size_t kl = strlen(want[i].name);
        if (n > kl && ptr[kl] == ':' && strncasecmp(ptr, want[i].name, kl) == 0)
            copy_header_value((char *)r + want[i].off, want[i].len, ptr + kl + 1, n - kl - 1);
    }
    return n;
}

e2e_client_t *e2e_client_new(int port)
{
    e2e_client_t *c;
    pthread_once(&curl_once, curl_init_once);
    if (!(c = calloc(1, sizeof(*c))))
        return NULL;
    if (!(c->curl = curl_easy_init())) {
        free(c);
        return NULL;
    }
    c->port = port;
    return c;
}

void e2e_client_free(e2e_client_t *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    free(c);
}

int e2e_client_do(e2e_client_t *c, const e2e_req_t *rq, e2e_resp_t *out)
{
    char url[2048], auth[4096];
    struct curl_slist *hdrs = NULL, *tmp;
    membuf_t body = {0};
    int has_ct = 0, has_auth = 0, rc = -1;
    long ver = 0;
    CURLcode cc;
    CURL *cu = c->curl;

    memset(out, 0, sizeof(*out));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", c->port, rq->path);
    for (size_t i = 0; rq->headers && rq->headers[i]; i++) {
        if (strncasecmp(rq->headers[i], "content-type:", 13) == 0)
            has_ct = 1;
        if (strncasecmp(rq->headers[i], "authorization:", 14) == 0)
            has_auth = 1;
        if (!(tmp = curl_slist_append(hdrs, rq->headers[i])))
            goto done;
        hdrs = tmp;
    }
    if (rq->token && !has_auth) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", rq->token);
        if (!(tmp = curl_slist_append(hdrs, auth)))
            goto done;
        hdrs = tmp;
    }
    if (rq->body && !has_ct) {
        if (!(tmp = curl_slist_append(hdrs, "Content-Type: application/json")))
            goto done;
        hdrs = tmp;
    }
    /* No "Expect: 100-continue" round trip. */
    if (!(tmp = curl_slist_append(hdrs, "Expect:")))
        goto done;
    hdrs = tmp;

    curl_easy_reset(cu);
    curl_easy_setopt(cu, CURLOPT_URL, url);
    curl_easy_setopt(cu, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(cu, CURLOPT_HTTP_VERSION,
                     rq->proto == E2E_HTTP2           ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                     : rq->proto == E2E_HTTP2_UPGRADE ? (long)CURL_HTTP_VERSION_2_0
                                                      : (long)CURL_HTTP_VERSION_1_1);
    if (rq->proto == E2E_HTTP2 && curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
        /* curl issue #10634: prior-knowledge connections break on reuse */
        curl_easy_setopt(cu, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(cu, CURLOPT_FORBID_REUSE, 1L);
    }
    curl_easy_setopt(cu, CURLOPT_CUSTOMREQUEST, rq->method ? rq->method : "GET");
    if (rq->method && strcmp(rq->method, "HEAD") == 0)
        curl_easy_setopt(cu, CURLOPT_NOBODY, 1L);
    if (rq->body) {
        curl_easy_setopt(cu, CURLOPT_POSTFIELDS, rq->body);
        curl_easy_setopt(cu, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(rq->body_len ? rq->body_len : strlen(rq->body)));
    }
    curl_easy_setopt(cu, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(cu, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(cu, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(cu, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(cu, CURLOPT_TIMEOUT_MS, rq->timeout_ms > 0 ? rq->timeout_ms : 10000L);
    curl_easy_setopt(cu, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(cu, CURLOPT_ERRORBUFFER, out->error);

    cc = curl_easy_perform(cu);
    out->curl_code = (int)cc;
    curl_easy_getinfo(cu, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(cu, CURLINFO_NUM_CONNECTS, &out->new_connections);
    curl_easy_getinfo(cu, CURLINFO_HTTP_VERSION, &ver);
    out->http_version = ver == CURL_HTTP_VERSION_1_0   ? 10
                        : ver == CURL_HTTP_VERSION_1_1 ? 11
                        : ver == CURL_HTTP_VERSION_2_0 ? 20
                        : ver == CURL_HTTP_VERSION_3   ? 30
                                                       : 0;
    if (cc != CURLE_OK && !out->error[0])
        snprintf(out->error, sizeof(out->error), "%s", curl_easy_strerror(cc));
    curl_easy_setopt(cu, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(cu, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(cu, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(cu, CURLOPT_WRITEDATA, NULL);
    rc = cc == CURLE_OK && !body.oom ? 0 : -1;
done:
    curl_slist_free_all(hdrs);
    out->body = body.buf ? body.buf : strdup("");
    out->body_len = body.len;
    if (out->body && out->body_len > 0)
        out->json = json_loadb(out->body, out->body_len, JSON_DECODE_ANY, NULL);
    return rc;
}

int e2e_http(const e2e_host_t *h, const e2e_req_t *rq, e2e_resp_t *out)
{
    e2e_client_t *c = e2e_client_new(h->port);
    int rc;
    if (!c) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    rc = e2e_client_do(c, rq, out);
    e2e_client_free(c);
    return rc;
}

int e2e_call(const e2e_host_t *h, e2e_proto_t proto, const char *method, const char *path, const char *token,
             const char *body, e2e_resp_t *out)
{
    e2e_req_t rq = {.proto = proto, .method = method, .path = path, .token = token, .body = body};
    return e2e_http(h, &rq, out);
}

void e2e_resp_free(e2e_resp_t *r)
{
    if (!r)
        return;
    free(r->body);
    json_decref(r->json);
    r->body = NULL;
    r->json = NULL;
}

int e2e_is_problem(const e2e_resp_t *r, long status)
{
    const char *why = NULL;
    json_t *st;
    if (r->status != status)
        why = "status differs";
    else if (strncasecmp(r->content_type, "application/problem+json", 24) != 0)
        why = "content-type is not application/problem+json";
    else if (!json_is_object(r->json))
        why = "body is not a JSON object";
    else if (!json_is_string(json_object_get(r->json, "type")))
        why = "no string `type`";
    else if (!json_is_string(json_object_get(r->json, "title")))
        why = "no string `title`";
    else if (!json_is_string(json_object_get(r->json, "detail")))
        why = "no string `detail`";
    else if (!json_is_integer(st = json_object_get(r->json, "status")) || json_integer_value(st) != status)
        why = "`status` member missing or differs";
    if (why) {
        e2e_msg("not a %ld problem (%s): got status %ld, content-type '%s', body: %.500s", status, why, r->status,
                r->content_type, r->body ? r->body : "");
        return 0;
    }
    return 1;
}

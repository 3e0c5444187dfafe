/* End-to-end test harness (see harness.h). */
#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <ctype.h>
#include <fcntl.h>
#include <ftw.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <jwt.h>
#include <unistd.h>

extern char **environ;

/* room, reservation, payment, dashboard, notification, edge */
#define E2E_NPARTS 6
static const char *const part_names[E2E_NPARTS] = {"room",      "reservation",  "payment",
                                                   "dashboard", "notification", "edge"};
/* with opts->replicas 2, a second stack of the same six ("room2", ... "edge2") */
#define E2E_MAXPARTS (2 * E2E_NPARTS)

struct e2e_host {
    char *bin;
    char dir[512];
    char log_path[600];
    int port;
    pid_t pid;
    int ready_timeout_ms;
    char **env;  /* full environment for the child, NULL-terminated */
    char **args; /* extra args, NULL-terminated */
    /* Distributed topology (BNB_E2E_TOPOLOGY=distributed): this object owns
     * no process itself; parts[] are the services and the edge (last). */
    char name[16]; /* part name: "room", ..., "edge"; "" for a single host */
    size_t nparts;
    e2e_host_t *parts[E2E_MAXPARTS];
    char mysql_base[256]; /* "mysql://user@host:port/" used for the databases */
    char mongo_base[256];
    char dbs[E2E_NPARTS][96]; /* database name per part ("" = none) */
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

/* Databases of distributed topologies still running (copies), dropped at
 * exit like the temp dirs. */
#define E2E_MAX_DBS 16
static struct {
    char dir[512];
    char mysql_base[256], mongo_base[256];
    char dbs[E2E_NPARTS][96];
} live_db[E2E_MAX_DBS];
static void drop_dbs(const char *mysql_base, const char *mongo_base, char (*dbs)[96], size_t n);

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
    for (int i = 0; i < E2E_MAX_DBS; i++) {
        if (live_db[i].dir[0] && !(keep && *keep == '1'))
            drop_dbs(live_db[i].mysql_base, live_db[i].mongo_base, live_db[i].dbs, E2E_NPARTS);
        live_db[i].dir[0] = '\0';
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
    if (h->nparts)
        return h->parts[h->nparts - 1]->pid;
    return h->pid;
}

const char *e2e_host_dir(const e2e_host_t *h)
{
    return h->dir;
}

const char *e2e_host_log_path(const e2e_host_t *h)
{
    if (h->nparts)
        return h->parts[h->nparts - 1]->log_path;
    return h->log_path;
}

char *e2e_host_log_tail(const e2e_host_t *h, size_t max)
{
    FILE *f = fopen(e2e_host_log_path(h), "rb");
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
    if (h->nparts) {
        for (size_t i = 0; i < h->nparts; i++) {
            char *tail = e2e_host_log_tail(h->parts[i], 2500);
            e2e_msg("%s log tail (%s):\n%s", h->parts[i]->name, h->parts[i]->log_path, tail ? tail : "");
            free(tail);
        }
        return;
    }
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

static int proc_wait_ready(e2e_host_t *h, int timeout_ms)
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

/* A new host record with its own temp dir (removed at exit if the test
 * dies); NULL with a message on failure. */
static e2e_host_t *host_new(const char *prefix, int default_ready_ms, const e2e_host_opts_t *opts)
{
    const char *tmp = getenv("TMPDIR");
    e2e_host_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->ready_timeout_ms = opts && opts->ready_timeout_ms > 0 ? opts->ready_timeout_ms : default_ready_ms;
    snprintf(h->dir, sizeof(h->dir), "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    if (!mkdtemp(h->dir)) {
        e2e_msg("mkdtemp %s: %s", h->dir, strerror(errno));
        h->dir[0] = '\0';
        e2e_host_free(h);
        return NULL;
    }
    live_set(h->dir, 0, 0);
    return h;
}

static int single_start(e2e_host_t **out, const e2e_host_opts_t *opts)
{
    const char *bin = getenv("BEARBNB_BIN");
    e2e_host_t *h = NULL;

    *out = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (!bin || !*bin) {
        e2e_msg("BEARBNB_BIN is not set");
        return -1;
    }
    if (!(h = host_new("bnb-e2e", 15000, opts)))
        return -1;
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
    if (!(opts && opts->no_wait) && proc_wait_ready(h, h->ready_timeout_ms) != 0)
        goto fail;
    *out = h;
    return 0;
fail:
    e2e_host_free(h);
    return -1;
}

static int proc_signal(e2e_host_t *h, int sig)
{
    if (h->pid <= 0)
        return -1;
    return kill(h->pid, sig) == 0 ? 0 : -1;
}

static int proc_wait_exit(e2e_host_t *h, int timeout_ms)
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

static void proc_kill(e2e_host_t *h)
{
    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        reap(h, 10000);
    }
}

static int proc_restart(e2e_host_t *h)
{
    if (h->pid > 0) {
        e2e_msg("restart: host still running");
        return -1;
    }
    if (spawn_host(h) != 0)
        return -1;
    return proc_wait_ready(h, h->ready_timeout_ms);
}

/* ---- distributed topology ---------------------------------------------------
 * BNB_E2E_TOPOLOGY=distributed: one process per plugin (room, reservation and notification
 * on MySQL, payment and dashboard on MongoDB, events on Kafka under a fresh
 * namespace) plus the edge (no plugin, gateway routes to the services). The
 * e2e_host_t then owns no process; parts[] are the six processes. */

static int write_file(const char *path, const char *content)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(content), off = 0;
    if (fd < 0)
        return -1;
    while (off < len) {
        ssize_t w = write(fd, content + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd) == 0 ? 0 : -1;
}

/* 2*nbytes hex characters of randomness into out (2*nbytes+1 bytes). */
static int random_hex(char *out, size_t nbytes)
{
    unsigned char b[64];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    if (fd < 0 || nbytes > sizeof(b)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    while (got < nbytes) {
        ssize_t r = read(fd, b + got, nbytes - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

/* "scheme://auth@host:port/db?x" -> "scheme://auth@host:port/" */
static int url_base(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://"), *slash;
    if (!p)
        return -1;
    slash = strchr(p + 3, '/');
    if (slash)
        snprintf(out, outlen, "%.*s", (int)(slash - url + 1), url);
    else
        snprintf(out, outlen, "%s/", url);
    return 0;
}

/* Split "scheme://[user[:pass]@]host[:port]/" into its parts. */
static void url_parts(const char *base, char *user, char *pass, char *host, int *port, int defport)
{
    const char *p = strstr(base, "://"), *at, *end, *colon;
    user[0] = pass[0] = host[0] = '\0';
    *port = defport;
    if (!p)
        return;
    p += 3;
    end = strchr(p, '/');
    if (!end)
        end = p + strlen(p);
    at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            snprintf(user, 128, "%.*s", (int)(colon - p), p);
            snprintf(pass, 128, "%.*s", (int)(at - colon - 1), colon + 1);
        } else {
            snprintf(user, 128, "%.*s", (int)(at - p), p);
        }
        p = at + 1;
    }
    colon = memchr(p, ':', (size_t)(end - p));
    if (colon) {
        snprintf(host, 128, "%.*s", (int)(colon - p), p);
        *port = atoi(colon + 1);
    } else {
        snprintf(host, 128, "%.*s", (int)(end - p), p);
    }
}

/* Best effort: DROP DATABASE with the mariadb (or mysql) command-line client. */
static void drop_mysql(const char *base, const char *const *dbs, size_t n)
{
    char user[128], pass[128], host[128], ports[16], passarg[140], sql[1024];
    int port, st;
    size_t o = 0;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    static const char *const clients[] = {"mariadb", "mysql"};

    url_parts(base, user, pass, host, &port, 3306);
    snprintf(ports, sizeof(ports), "%d", port);
    snprintf(passarg, sizeof(passarg), "-p%s", pass);
    sql[0] = '\0';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(sql + o, o < sizeof(sql) ? sizeof(sql) - o : 0, "DROP DATABASE IF EXISTS `%s`;", dbs[i]);
    if (o == 0 || o >= sizeof(sql))
        return;
    for (size_t c = 0; c < 2; c++) {
        char *argv[] = {(char *)clients[c],
                        "--no-defaults",
                        "--protocol=TCP",
                        "-h",
                        host,
                        "-P",
                        ports,
                        "-u",
                        user[0] ? user : "root",
                        "-e",
                        sql,
                        pass[0] ? passarg : NULL,
                        NULL};
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        int rc = posix_spawnp(&pid, clients[c], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0)
            continue;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        return;
    }
}

static size_t bson_put(unsigned char *b, size_t o, const void *src, size_t n)
{
    memcpy(b + o, src, n);
    return o + n;
}

static size_t bson_i32(unsigned char *b, size_t o, int32_t v)
{
    unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24)};
    return bson_put(b, o, le, 4);
}

/* Best effort: {dropDatabase: 1, $db: name} as one OP_MSG over a plain socket
 * (the harness does not link the MongoDB driver). */
static void drop_mongo(const char *base, const char *db)
{
    char user[128], pass[128], host[128];
    unsigned char msg[512], reply[1024];
    int port, fd;
    size_t o = 0, doc, dlen = strlen(db);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval tv = {2, 0};

    url_parts(base, user, pass, host, &port, 27017);
    if (dlen > 200 || inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &sa.sin_addr) != 1)
        return;
    sa.sin_port = htons((uint16_t)port);
    o = bson_i32(msg, o, 0);    /* messageLength, below */
    o = bson_i32(msg, o, 1);    /* requestID */
    o = bson_i32(msg, o, 0);    /* responseTo */
    o = bson_i32(msg, o, 2013); /* OP_MSG */
    o = bson_i32(msg, o, 0);    /* flagBits */
    msg[o++] = 0;               /* section kind 0: body */
    doc = o;
    o = bson_i32(msg, o, 0); /* document length, below */
    msg[o++] = 0x10;         /* int32 */
    o = bson_put(msg, o, "dropDatabase", 13);
    o = bson_i32(msg, o, 1);
    msg[o++] = 0x02; /* string */
    o = bson_put(msg, o, "$db", 4);
    o = bson_i32(msg, o, (int32_t)dlen + 1);
    o = bson_put(msg, o, db, dlen + 1);
    msg[o++] = 0; /* end of document */
    bson_i32(msg, doc, (int32_t)(o - doc));
    bson_i32(msg, 0, (int32_t)o);
    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && send(fd, msg, o, MSG_NOSIGNAL) == (ssize_t)o)
        (void)!recv(fd, reply, sizeof(reply), 0);
    close(fd);
}

/* dbs[0], [1], [4] on MySQL (room, reservation, notification) unless
 * BNB_E2E_ALL_MONGO=1 put them on MongoDB too, the others on MongoDB; "" =
 * none. Every one is dropped from MongoDB, those three from MySQL as well. */
static void drop_dbs(const char *mysql_base, const char *mongo_base, char (*dbs)[96], size_t n)
{
    const char *my[E2E_NPARTS];
    size_t nmy = 0;
    for (size_t i = 0; i < n && i < E2E_NPARTS; i++) {
        if (!dbs[i][0])
            continue;
        if (i <= 1 || i == 4)
            my[nmy++] = dbs[i];
        drop_mongo(mongo_base, dbs[i]);
    }
    if (nmy)
        drop_mysql(mysql_base, my, nmy);
}

/* Remember (add) or forget the databases of topology h for the exit cleanup. */
static void live_dbs(const e2e_host_t *h, int add)
{
    pthread_once(&live_once, live_init);
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < E2E_MAX_DBS; i++) {
        if (add && !live_db[i].dir[0]) {
            snprintf(live_db[i].dir, sizeof(live_db[i].dir), "%s", h->dir);
            snprintf(live_db[i].mysql_base, sizeof(live_db[i].mysql_base), "%s", h->mysql_base);
            snprintf(live_db[i].mongo_base, sizeof(live_db[i].mongo_base), "%s", h->mongo_base);
            memcpy(live_db[i].dbs, h->dbs, sizeof(live_db[i].dbs));
            break;
        }
        if (!add && strcmp(live_db[i].dir, h->dir) == 0)
            live_db[i].dir[0] = '\0';
    }
    pthread_mutex_unlock(&live_lock);
}

static void drop_databases(e2e_host_t *h)
{
    drop_dbs(h->mysql_base, h->mongo_base, h->dbs, h->nparts);
}

/* environ, then the test's env, then the topology's (which wins). */
static char **part_env(const char *const *test_env, const char *const *topo)
{
    size_t nt = strv_len(test_env), nk = strv_len(topo), n = 0;
    const char **m = calloc(nt + nk + 1, sizeof(*m));
    char **env;
    if (!m)
        return NULL;
    for (size_t i = 0; i < nt; i++) {
        const char *eq = strchr(test_env[i], '=');
        size_t klen = eq ? (size_t)(eq - test_env[i]) : strlen(test_env[i]);
        int overridden = 0;
        for (size_t j = 0; j < nk; j++)
            if (strncmp(topo[j], test_env[i], klen) == 0 && topo[j][klen] == '=')
                overridden = 1;
        if (!overridden)
            m[n++] = test_env[i];
    }
    for (size_t j = 0; j < nk; j++)
        m[n++] = topo[j];
    env = build_env(m);
    free(m);
    return env;
}

static e2e_host_t *part_new(const e2e_host_t *top, const char *name, int port, const char *const *test_env,
                            const char *const *topo, const char *const *args)
{
    e2e_host_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->dir, sizeof(p->dir), "%s/%s", top->dir, name);
    if (mkdir(p->dir, 0700) != 0) {
        e2e_msg("mkdir %s: %s", p->dir, strerror(errno));
        p->dir[0] = '\0';
        goto fail;
    }
    live_set(p->dir, 0, 0);
    snprintf(p->log_path, sizeof(p->log_path), "%s/host.log", p->dir);
    p->port = port;
    p->ready_timeout_ms = top->ready_timeout_ms;
    if (!(p->bin = strdup(top->bin)) || !(p->env = part_env(test_env, topo)) || !(p->args = copy_strv(args)))
        goto fail;
    return p;
fail:
    e2e_host_free(p);
    return NULL;
}

#define TOPO_MAX 16

static int dist_start(e2e_host_t **out, const e2e_host_opts_t *opts)
{
    static int seq;
    const char *bin = getenv("BEARBNB_BIN"), *kafka = getenv("BNB_TEST_KAFKA"), *my = getenv("BNB_TEST_MYSQL_URL"),
               *mo = getenv("BNB_TEST_MONGO_URL");
    const char *const *test_env = opts ? opts->env : NULL, *const *args = opts ? opts->args : NULL;
    char ns[64], hex[65], path[700], kv[TOPO_MAX][700];
    const char *topo[TOPO_MAX + 1];
    int ports[E2E_MAXPARTS];
    size_t nstack = opts && opts->replicas == 2 ? 2 : 1, nall = nstack * E2E_NPARTS;
    e2e_host_t *h = NULL;

    *out = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (!bin || !*bin) {
        e2e_msg("BEARBNB_BIN is not set");
        return -1;
    }
    if (!kafka || !*kafka || !my || !*my || !mo || !*mo) {
        e2e_msg("BNB_E2E_TOPOLOGY=distributed needs BNB_TEST_KAFKA, BNB_TEST_MYSQL_URL and BNB_TEST_MONGO_URL "
                "(scripts/infra up; eval \"$(scripts/infra env)\")");
        return -1;
    }
    if (!(h = host_new("bnb-e2e-dist", 60000, opts)))
        return -1;
    if (!(h->bin = strdup(bin)) || url_base(my, h->mysql_base, sizeof(h->mysql_base)) != 0 ||
        url_base(mo, h->mongo_base, sizeof(h->mongo_base)) != 0) {
        e2e_msg("cannot use BNB_TEST_MYSQL_URL=%s / BNB_TEST_MONGO_URL=%s", my, mo);
        goto fail;
    }
    /* unique per start, also across runs that reuse a pid: topics, groups, databases */
    snprintf(ns, sizeof(ns), "t%dx%dr%lx", (int)getpid(), __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST),
             (unsigned long)time(NULL) & 0xffffffUL);
    snprintf(path, sizeof(path), "%s/jwt.key", h->dir);
    if (random_hex(hex, 32) != 0 || write_file(path, hex) != 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/gateway.secret", h->dir);
    if (random_hex(hex, 32) != 0 || write_file(path, hex) != 0)
        goto fail;
    if (opts && opts->replicas != 0 && opts->replicas != 1 && opts->replicas != 2) {
        e2e_msg("replicas must be 1 or 2");
        goto fail;
    }
    for (size_t i = 0; i < nall; i++) {
        int dup;
        do {
            ports[i] = free_port();
            dup = 0;
            for (size_t j = 0; j < i; j++)
                dup |= ports[j] == ports[i];
        } while (dup && ports[i] > 0);
        if (ports[i] <= 0) {
            e2e_msg("no free port");
            goto fail;
        }
    }
    for (size_t i = 0; i < nall; i++) {
        size_t n = 0, b = i % E2E_NPARTS, st0 = i - b; /* b: which service; st0: its stack's first part */
        char name[16];
        snprintf(name, sizeof(name), "%s%s", part_names[b], i >= E2E_NPARTS ? "2" : "");
        snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_AUTH_KEY_FILE=%s/jwt.key", h->dir);
        snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_GATEWAY_SECRET_FILE=%s/gateway.secret", h->dir);
        if (b == E2E_NPARTS - 1) {
            /* the edge reaches payment over HTTP/1.1 keep-alive, or over h2c
             * with BNB_E2E_H2C=1 (Debian 12's libcurl 7.88 has known h2
             * prior-knowledge bugs; e2e/gateway covers h2c upstreams) */
            const char *h2cv = getenv("BNB_E2E_H2C");
            int h2c = h2cv && strcmp(h2cv, "1") == 0;
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_PLUGINS=");
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_KAFKA_BROKERS=");
            snprintf(kv[n++], sizeof(kv[0]),
                     "BEARBNB_GATEWAY_ROUTES=/rooms=http://127.0.0.1:%d,/reviews=http://127.0.0.1:%d,"
                     "/reservations=http://127.0.0.1:%d,/payments=%s://127.0.0.1:%d,/dashboard=http://127.0.0.1:%d,"
                     "/notifications=http://127.0.0.1:%d",
                     ports[st0], ports[st0], ports[st0 + 1], h2c ? "h2c" : "http", ports[st0 + 2], ports[st0 + 3],
                     ports[st0 + 4]);
        } else {
            /* a second process of a service shares the first one's database */
            /* room, reservation, notification; BNB_E2E_ALL_MONGO=1: every service on MongoDB */
            const char *all_mongo = getenv("BNB_E2E_ALL_MONGO");
            int mysql = (b <= 1 || b == 4) && !(all_mongo && strcmp(all_mongo, "1") == 0);
            if (i < E2E_NPARTS)
                snprintf(h->dbs[i], sizeof(h->dbs[i]), "bnb_%s_%s", ns, name);
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_PLUGINS=%s", part_names[b]);
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_KAFKA_BROKERS=%s", kafka);
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_KAFKA_NAMESPACE=%s", ns);
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_STORAGE_BACKEND=%s", mysql ? "mysql" : "mongo");
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_STORAGE_URL=%s%s", mysql ? h->mysql_base : h->mongo_base,
                     h->dbs[b]);
            snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_GATEWAY_ENFORCE=1");
            if (b == 1) { /* reservation calls the payment and room of its stack */
                snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_SERVICES_PAYMENT_URL=http://127.0.0.1:%d", ports[st0 + 2]);
                snprintf(kv[n++], sizeof(kv[0]), "BEARBNB_SERVICES_ROOM_URL=http://127.0.0.1:%d", ports[st0]);
            }
        }
        for (size_t k = 0; k < n; k++)
            topo[k] = kv[k];
        topo[n] = NULL;
        if (!(h->parts[i] = part_new(h, name, ports[i], test_env, topo, args)))
            goto fail;
        h->nparts = i + 1;
        if (strcmp(name, "edge") == 0 && !(h->env = part_env(test_env, topo)))
            goto fail;
    }
    /* e2e_token runs `bearbnb token` with the edge's environment (shared key) */
    h->port = ports[E2E_NPARTS - 1];
    snprintf(h->log_path, sizeof(h->log_path), "%s", h->parts[E2E_NPARTS - 1]->log_path);
    if (!(h->args = copy_strv(NULL)))
        goto fail;
    live_dbs(h, 1);
    for (size_t i = 0; i < h->nparts; i++)
        if (spawn_host(h->parts[i]) != 0)
            goto fail;
    if (!(opts && opts->no_wait) && e2e_host_wait_ready(h, h->ready_timeout_ms) != 0)
        goto fail;
    *out = h;
    return 0;
fail:
    e2e_host_free(h);
    return -1;
}

int e2e_host_start(e2e_host_t **out, const e2e_host_opts_t *opts)
{
    const char *topo = getenv("BNB_E2E_TOPOLOGY");
    if (topo && strcmp(topo, "distributed") == 0)
        return dist_start(out, opts);
    if (topo && *topo && strcmp(topo, "all-in-one") != 0) {
        *out = NULL;
        e2e_msg("unknown BNB_E2E_TOPOLOGY=%s (all-in-one or distributed)", topo);
        return -1;
    }
    return single_start(out, opts);
}

int e2e_host_distributed(const e2e_host_t *h)
{
    return h->nparts > 0;
}

e2e_host_t *e2e_host_part(e2e_host_t *h, const char *name)
{
    for (size_t i = 0; i < h->nparts; i++)
        if (strcmp(h->parts[i]->name, name) == 0)
            return h->parts[i];
    return NULL;
}

int e2e_host_wait_ready(e2e_host_t *h, int timeout_ms)
{
    long long deadline;
    if (!h->nparts)
        return proc_wait_ready(h, timeout_ms);
    deadline = e2e_now_ms() + (timeout_ms > 0 ? timeout_ms : 60000);
    for (size_t i = 0; i < h->nparts; i++) {
        long long left = deadline - e2e_now_ms();
        if (proc_wait_ready(h->parts[i], left > 0 ? (int)left : 1) != 0) {
            e2e_msg("%s (port %d) not ready", h->parts[i]->name, h->parts[i]->port);
            return -1;
        }
    }
    return 0;
}

int e2e_host_signal(e2e_host_t *h, int sig)
{
    int any = 0, rc = 0;
    if (!h->nparts)
        return proc_signal(h, sig);
    for (size_t i = 0; i < h->nparts; i++)
        if (h->parts[i]->pid > 0) {
            any = 1;
            if (proc_signal(h->parts[i], sig) != 0)
                rc = -1;
        }
    return any ? rc : -1;
}

int e2e_host_wait_exit(e2e_host_t *h, int timeout_ms)
{
    int any = 0, rc = 0;
    if (!h->nparts)
        return proc_wait_exit(h, timeout_ms);
    for (size_t i = 0; i < h->nparts; i++)
        if (h->parts[i]->pid > 0) {
            int r = proc_wait_exit(h->parts[i], timeout_ms);
            any = 1;
            if (r != 0) {
                e2e_msg("%s exited with status %d", h->parts[i]->name, r);
                if (rc == 0)
                    rc = r;
            }
        }
    return any ? rc : -1;
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
    for (size_t i = 0; i < h->nparts; i++)
        proc_kill(h->parts[i]);
    proc_kill(h);
}

int e2e_host_restart(e2e_host_t *h)
{
    size_t started = 0;
    if (!h->nparts)
        return proc_restart(h);
    for (size_t i = 0; i < h->nparts; i++)
        if (h->parts[i]->pid <= 0) {
            if (spawn_host(h->parts[i]) != 0)
                return -1;
            started++;
        }
    if (started == 0) {
        e2e_msg("restart: every process still running");
        return -1;
    }
    return e2e_host_wait_ready(h, h->ready_timeout_ms);
}

void e2e_host_free(e2e_host_t *h)
{
    const char *keep = getenv("BNB_E2E_KEEP");
    if (!h)
        return;
    for (size_t i = 0; i < h->nparts; i++)
        e2e_host_free(h->parts[i]);
    if (h->nparts && !(keep && *keep == '1'))
        drop_databases(h);
    if (h->nparts)
        live_dbs(h, 0);
    proc_kill(h);
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
        {"idempotent-replayed", offsetof(e2e_resp_t, replayed), sizeof(((e2e_resp_t *)0)->replayed)},
    };
    /* A new status line (e.g. after 100-continue) starts a fresh header set. */
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        r->content_type[0] = r->retry_after[0] = r->allow[0] = r->location[0] = r->replayed[0] = '\0';
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

static int port_http(int port, const e2e_req_t *rq, e2e_resp_t *out)
{
    e2e_client_t *c = e2e_client_new(port);
    int rc;
    if (!c) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    rc = e2e_client_do(c, rq, out);
    e2e_client_free(c);
    return rc;
}

/* path is `p` exactly, maybe followed by a query */
static int path_is(const char *path, const char *p)
{
    size_t l = strlen(p);
    return strncmp(path, p, l) == 0 && (path[l] == '\0' || path[l] == '?');
}

/* Distributed: GET rq on every running process; /metrics texts are
 * concatenated (services first, the edge last), /admin/dead-letters arrays
 * joined. A non-200 answer or a transport error of one process is returned
 * as it is. */
static int gather(const e2e_host_t *h, const e2e_req_t *rq, int metrics, e2e_resp_t *out)
{
    json_t *all = json_array();
    char *text = NULL;
    size_t len = 0;
    e2e_resp_t r;
    memset(out, 0, sizeof(*out));
    if (!all)
        return -1;
    for (size_t i = 0; i < h->nparts; i++) {
        const e2e_host_t *p = h->parts[i];
        if (p->pid <= 0)
            continue; /* killed by the test */
        if (port_http(p->port, rq, &r) != 0 || r.status != 200 || (!metrics && !json_is_array(r.json))) {
            int rc = r.curl_code ? -1 : 0;
            e2e_msg("%s %s on %s: status %ld %s", rq->method ? rq->method : "GET", rq->path, p->name, r.status,
                    r.error);
            json_decref(all);
            free(text);
            *out = r;
            return rc;
        }
        if (metrics) {
            char head[64];
            int hl = snprintf(head, sizeof(head), "# e2e process %s\n", p->name);
            char *nt = realloc(text, len + (size_t)hl + r.body_len + 2);
            if (!nt) {
                e2e_resp_free(&r);
                json_decref(all);
                free(text);
                return -1;
            }
            text = nt;
            memcpy(text + len, head, (size_t)hl);
            len += (size_t)hl;
            memcpy(text + len, r.body, r.body_len);
            len += r.body_len;
            if (len && text[len - 1] != '\n')
                text[len++] = '\n';
            text[len] = '\0';
        } else {
            json_array_extend(all, r.json);
        }
        if (!out->content_type[0])
            snprintf(out->content_type, sizeof(out->content_type), "%s", r.content_type);
        out->http_version = r.http_version;
        out->new_connections += r.new_connections;
        e2e_resp_free(&r);
    }
    out->status = 200;
    if (metrics) {
        out->body = text ? text : strdup("");
        out->body_len = len;
        json_decref(all);
    } else {
        free(text);
        out->body = json_dumps(all, JSON_COMPACT);
        out->body_len = out->body ? strlen(out->body) : 0;
        out->json = all;
    }
    return out->body ? 0 : -1;
}

static int dist_http(const e2e_host_t *h, const e2e_req_t *rq, e2e_resp_t *out)
{
    const char *path = rq->path, *m = rq->method ? rq->method : "GET";
    if (strncmp(path, "/admin/plugins/", 15) == 0) {
        const char *n = path + 15, *e = strchr(n, '/');
        size_t l = e ? (size_t)(e - n) : strlen(n);
        for (size_t i = 0; i < h->nparts; i++)
            if (strlen(h->parts[i]->name) == l && strncmp(h->parts[i]->name, n, l) == 0)
                return port_http(h->parts[i]->port, rq, out);
    }
    if (strcmp(m, "GET") == 0 && (path_is(path, "/metrics") || path_is(path, "/admin/dead-letters")))
        return gather(h, rq, path_is(path, "/metrics"), out);
    if (path_is(path, "/admin/events")) /* published on Kafka by a process that has it */
        return port_http(h->parts[1]->port, rq, out);
    return port_http(h->port, rq, out);
}

int e2e_http(const e2e_host_t *h, const e2e_req_t *rq, e2e_resp_t *out)
{
    if (h->nparts)
        return dist_http(h, rq, out);
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

/* ---- raw sockets ---------------------------------------------------------------- */

int e2e_raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int e2e_raw_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

size_t e2e_raw_read(int fd, char *buf, size_t cap, int idle_ms, int *closed)
{
    size_t got = 0;
    *closed = 0;
    while (got + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, idle_ms);
        if (pr <= 0)
            break;
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *closed = 1;
            break;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

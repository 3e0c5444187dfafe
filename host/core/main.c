/* bearbnb: the host program. */
#include "bnb_build_config.h"
#include "gateway.h"
#include "host.h"
#include "ratelimit.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- heap after a burst ------------------------------------------------------
 * glibc gives every thread that allocates under contention its own arena (up
 * to 8 per core), and keeps what a burst freed inside them: RSS stays at its
 * peak. The host caps the arenas (M_ARENA_MAX 2, unless MALLOC_ARENA_MAX is
 * set) and, once no request job nor relay runs after some did, gives the
 * free pages back (malloc_trim on a worker, at most once a second). */

static uv_timer_t g_trim_timer;
static uv_work_t g_trim_work;
static int g_trim_running;
static unsigned g_trim_seen;

static void trim_work(uv_work_t *w)
{
    (void)w;
    malloc_trim(0);
}

static void trim_after(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    g_trim_running = 0;
}

static void on_trim_tick(uv_timer_t *t)
{
    bnb_host_t *h = t->data;
    unsigned done = atomic_load(&h->jobs_done);
    if (g_trim_running || done == g_trim_seen || atomic_load(&h->inflight) > 0 || atomic_load(&h->relay_jobs) > 0)
        return;
    g_trim_seen = done;
    g_trim_running = 1;
    if (uv_queue_work(h->loop, &g_trim_work, trim_work, trim_after) != 0)
        g_trim_running = 0;
}

static void trim_start(bnb_host_t *h)
{
    uv_timer_init(h->loop, &g_trim_timer);
    g_trim_timer.data = h;
    uv_timer_start(&g_trim_timer, on_trim_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&g_trim_timer); /* never keeps the loop alive */
}

extern char **environ;

static const char usage[] =
    "usage: bearbnb [--config FILE] [--plugins room,reservation,...] [--listen HOST:PORT|fd:N]\n"
    "               [--data DIR] [--check-config] [--help-config]\n"
    "       bearbnb token --sub ID --role host|guest [--ttl SECONDS] [--config FILE] [--data DIR]\n"
    "       bearbnb --help | --version\n"
    "\n"
    "With no arguments: every installed plugin in one process on 0.0.0.0:8088,\n"
    "SQLite stores and a dev signing key under ./data, events in-process.\n"
    "Settings: YAML file (--config) and BEARBNB_* environment variables\n"
    "(BEARBNB_LISTEN, BEARBNB_PLUGINS, BEARBNB_STORAGE_BACKEND, BEARBNB_KAFKA_BROKERS, ...).\n";

typedef struct opts {
    const char *config, *plugins, *listen, *data;
    int check, token, help_config;
    const char *sub, *role;
    long ttl;
} opts_t;

static int parse_args(int argc, char **argv, opts_t *o)
{
    enum { O_CHECK = 256, O_SUB, O_ROLE, O_TTL, O_HELP, O_VERSION, O_HELP_CONFIG };
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"plugins", required_argument, NULL, 'p'},
                                             {"listen", required_argument, NULL, 'l'},
                                             {"data", required_argument, NULL, 'd'},
                                             {"check-config", no_argument, NULL, O_CHECK},
                                             {"sub", required_argument, NULL, O_SUB},
                                             {"role", required_argument, NULL, O_ROLE},
                                             {"ttl", required_argument, NULL, O_TTL},
                                             {"help", no_argument, NULL, O_HELP},
                                             {"version", no_argument, NULL, O_VERSION},
                                             {"help-config", no_argument, NULL, O_HELP_CONFIG},
                                             {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->ttl = 3600;
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "token") == 0) {
        o->token = 1;
        first = 2;
    }
    optind = first;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "c:p:l:d:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'p':
            o->plugins = optarg;
            break;
        case 'l':
            o->listen = optarg;
            break;
        case 'd':
            o->data = optarg;
            break;
        case O_CHECK:
            o->check = 1;
            break;
        case O_SUB:
            o->sub = optarg;
            break;
        case O_ROLE:
            o->role = optarg;
            break;
        case O_TTL: {
            char *end;
            errno = 0;
            o->ttl = strtol(optarg, &end, 10);
            if (errno || *end || o->ttl <= 0 || o->ttl > 366L * 86400) {
                fprintf(stderr, "bearbnb: --ttl must be a number of seconds between 1 and 31622400\n");
                return 2;
            }
            break;
        }
        case 'h':
        case O_HELP:
            fputs(usage, stdout);
            return 1;
        case O_HELP_CONFIG:
            o->help_config = 1;
            break;
        case O_VERSION:
            printf("bearbnb %s (plugin ABI %u.%u)\n", BNB_VERSION, BNB_ABI_MAJOR, BNB_ABI_MINOR);
            return 1;
        default:
            fprintf(stderr, "bearbnb: unknown or incomplete option '%s'\n%s", argv[optind - 1], usage);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bearbnb: unexpected argument '%s'\n%s", argv[optind], usage);
        return 2;
    }
    if (!o->token && (o->sub || o->role)) {
        fprintf(stderr, "bearbnb: --sub and --role belong to 'bearbnb token'\n");
        return 2;
    }
    if (o->token) {
        if (o->sub == NULL || o->sub[0] == '\0' || strlen(o->sub) > 100) {
            fprintf(stderr, "bearbnb token: --sub ID is required (1-100 characters)\n");
            return 2;
        }
        if (o->role == NULL || (strcmp(o->role, "host") != 0 && strcmp(o->role, "guest") != 0)) {
            fprintf(stderr, "bearbnb token: --role must be host or guest\n");
            return 2;
        }
    }
    return 0;
}

static int mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0750) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0750) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Where plugins live: config/env, else next to the program. */
static void plugin_dir(bnb_config_t *cfg, char *out, size_t outlen)
{
    const char *d = getenv("BEARBNB_PLUGIN_DIR");
    if (d == NULL || !d[0])
        d = bnb__config_str(cfg, "plugin_dir");
    if (d != NULL && d[0]) {
        snprintf(out, outlen, "%s", d);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        snprintf(out, outlen, "plugins");
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    char cand[PATH_MAX + 32];
    snprintf(cand, sizeof(cand), "%s/plugins", exe);
    struct stat st;
    if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(out, outlen, "%s", cand);
        return;
    }
    snprintf(out, outlen, "%s/../lib/bearbnb/plugins", exe);
}

static int in_list(const char *list, const char *name)
{
    size_t l = strlen(name);
    for (const char *p = list; p && *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == l && strncmp(p, name, l) == 0)
            return 1;
        p = e;
    }
    return 0;
}

static bnb_host_t host;
static uv_signal_t sig_term, sig_int;
static int exit_code;

static void free_all(void)
{
    bnb_host_t *h = &host;
    for (size_t i = h->nplugins; i-- > 0;)
        bnb__plugin_close(h->plugins[i]);
    free(h->plugins);
    h->plugins = NULL;
    h->nplugins = 0;
    bnb__router_free(h->router);
    bnb__auth_free(h->auth);
    bnb__metrics_free(h->metrics);
    for (size_t i = 0; i < h->nbreakers; i++)
        bnb__breaker_free(h->breakers[i].b);
    bnb__events_free(h);
    bnb__ratelimit_free(h->rl_user);
    bnb__ratelimit_free(h->rl_ip);
    bnb__gateway_free();
    bnb__config_free(h->cfg);
}

static void on_closed_walk(uv_handle_t *hd, void *arg)
{
    (void)arg;
    if (!uv_is_closing(hd))
        uv_close(hd, NULL);
}

static void after_drain(bnb_host_t *h)
{
    bnb__log(BNB_LOG_INFO, "requests drained; flushing events");
    bnb__events_stop(h);
    for (size_t i = h->nplugins; i-- > 0;) {
        bnb_inst_t *c = h->plugins[i];
        if (c->started && c->plugin->stop)
            c->plugin->stop(&c->self);
        c->started = 0;
    }
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    bnb__log(BNB_LOG_INFO, "stopped");
    uv_stop(h->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    bnb_host_t *h = s->data;
    if (atomic_exchange(&h->draining, 1)) {
        bnb__log(BNB_LOG_WARN, "second signal %d: exiting now", signum);
        exit(1);
    }
    bnb__log(BNB_LOG_INFO, "signal %d: not ready; draining in-flight requests", signum);
    bnb__http_drain(h, after_drain);
}

static int open_store(bnb_host_t *h, bnb_inst_t *c, const char *data, char *err, size_t errlen)
{
    char k1[96], k2[96], k3[96];
    snprintf(k1, sizeof(k1), "%s.storage.backend", c->name);
    snprintf(k2, sizeof(k2), "%s.storage.url", c->name);
    snprintf(k3, sizeof(k3), "%s.storage.pool_size", c->name);
    const char *backend = bnb__config_str(h->cfg, k1);
    if (backend == NULL || !backend[0])
        backend = bnb__config_str(h->cfg, "storage.backend");
    const char *url = bnb__config_str(h->cfg, k2);
    if (url == NULL || !url[0])
        url = bnb__config_str(h->cfg, "storage.url");
    long pool = bnb__config_int(h->cfg, k3);
    if (pool <= 0)
        pool = bnb__config_int(h->cfg, "storage.pool_size");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.db", data, c->name);
    bnb_storage_config_t sc = {backend, c->name, path, url, (int)pool};
    char e2[512] = "";
    if (bnb_storage_open(&sc, &c->store, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "plugin %s: storage (%s): %s", c->name, backend, e2);
        return -1;
    }
    return 0;
}

/* --help-config: every configuration key as Markdown (docs/configuration.md
 * is this output; tests/docs checks that it has not drifted). */
static const char *type_name(bnb_cfg_type_t t)
{
    return t == BNB_CFG_INT ? "integer" : t == BNB_CFG_BOOL ? "boolean" : "string";
}

static void print_key_row(const char *key, bnb_cfg_type_t type, const char *def, const char *help)
{
    printf("| `%s` | `%s` | %s | %s%s%s | %s |\n", key, bnb__config_env_name(key), type_name(type),
           def && *def ? "`" : "", def && *def ? def : "", def && *def ? "`" : "", help ? help : "");
}

static void print_config_keys(bnb_host_t *h)
{
    const char *key, *def, *help;
    bnb_cfg_type_t type;
    printf("# Configuration keys\n\n"
           "Generated by `bearbnb --help-config` from the host's key table and each\n"
           "plugin's config map (`scripts/gen-docs` writes this page; the `docs` test\n"
           "fails when it differs): do not edit by hand.\n\n"
           "Every key can be set in the YAML file given with `--config` (a dot is a\n"
           "nested section: `auth.issuer` is `auth: {issuer: ...}`) or by its\n"
           "environment variable, which wins. Unknown keys and unknown `BEARBNB_*`\n"
           "variables are errors naming the file and line or the variable;\n"
           "`bearbnb --check-config` validates a setup without starting it.\n\n"
           "## Host\n\n"
           "| key | environment | type | default | what |\n| --- | --- | --- | --- | --- |\n");
    for (size_t i = 0; bnb__config_host_key(i, &key, &type, &def, &help) == 0; i++)
        print_key_row(key, type, def, help);
    for (size_t i = 0; i < h->nplugins; i++) {
        bnb_inst_t *c = h->plugins[i];
        char k[128];
        printf("\n## Plugin `%s`\n\n| key | environment | type | default | what |\n| --- | --- | --- | --- | --- |\n",
               c->name);
        static const char *const sk[] = {"backend", "url", "pool_size"};
        for (int s = 0; s < 3; s++) {
            char hb[96];
            snprintf(k, sizeof(k), "%s.storage.%s", c->name, sk[s]);
            snprintf(hb, sizeof(hb), "this plugin's `storage.%s` (unset: the host's)", sk[s]);
            print_key_row(k, s == 2 ? BNB_CFG_INT : BNB_CFG_STRING, NULL, hb);
        }
        for (const bnb_cfg_item_t *ci = c->plugin->config; ci && ci->name; ci++) {
            snprintf(k, sizeof(k), "%s.%s", c->name, ci->name);
            print_key_row(k, ci->type, ci->default_value, ci->help);
        }
    }
}

int main(int argc, char **argv)
{
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        mallopt(M_ARENA_MAX, 2); /* before any thread allocates (see "heap after a burst") */
    opts_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;

    bnb_host_t *h = &host;
    bnb__host = h;
    char err[1024] = "";
    char **paths = NULL;
    size_t npaths = 0;
    const char **skip = NULL;
    h->cfg = bnb__config_new();
    if (h->cfg == NULL || bnb__config_declare_host(h->cfg) != 0) {
        fprintf(stderr, "bearbnb: out of memory\n");
        return 1;
    }
    exit_code = 2;
    if (o.config && bnb__config_load_file(h->cfg, o.config, err, sizeof(err)) != 0)
        goto fail;
    if (o.listen)
        bnb__config_set(h->cfg, "listen", o.listen, "--listen");
    if (o.data)
        bnb__config_set(h->cfg, "data", o.data, "--data");
    if (o.plugins)
        bnb__config_set(h->cfg, "plugins", o.plugins, "--plugins");

    /* which plugins: --plugins > BEARBNB_PLUGINS > file > every installed one */
    const char *want = o.plugins ? o.plugins : getenv("BEARBNB_PLUGINS");
    if (want == NULL)
        want = bnb__config_str(h->cfg, "plugins");
    char pdir[PATH_MAX];
    plugin_dir(h->cfg, pdir, sizeof(pdir));
    if (bnb__plugin_scan(pdir, &paths, &npaths) != 0 || npaths == 0) {
        snprintf(err, sizeof(err), "no plugins found in %s (set BEARBNB_PLUGIN_DIR or plugin_dir)", pdir);
        goto fail;
    }
    h->router = bnb__router_new();
    h->metrics = bnb__metrics_new();
    h->plugins = calloc(npaths, sizeof(bnb_inst_t *));
    skip = calloc(npaths + 1, sizeof(char *));
    size_t nskip = 0;
    if (h->router == NULL || h->metrics == NULL || h->plugins == NULL || skip == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < npaths; i++) {
        char perr[768];
        bnb_inst_t *c = bnb__plugin_open(h, paths[i], perr, sizeof(perr));
        if (c == NULL) {
            /* a broken file is refused; it only stops us when it was asked for */
            const char *base = strrchr(paths[i], '/');
            char nm[64];
            snprintf(nm, sizeof(nm), "%s", base ? base + 1 : paths[i]);
            char *dot = strstr(nm, ".so");
            if (dot)
                *dot = '\0';
            if (want && in_list(want, nm)) {
                snprintf(err, sizeof(err), "%s", perr);
                goto fail;
            }
            bnb__log(BNB_LOG_ERROR, "%s", perr);
            continue;
        }
        int dup = 0;
        for (size_t k = 0; k < h->nplugins; k++)
            dup |= strcmp(h->plugins[k]->name, c->name) == 0;
        if (dup) {
            bnb__log(BNB_LOG_WARN, "plugin %s: another file already provides '%s'; ignored", paths[i], c->name);
            bnb__plugin_close(c);
        } else if (want && !in_list(want, c->name)) {
            /* installed but not run here: its settings are not ours to check */
            skip[nskip++] = strdup(c->name);
            bnb__plugin_close(c);
        } else {
            h->plugins[h->nplugins++] = c;
        }
    }
    for (const char *p = want; p && *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        int found = e == p;
        for (size_t i = 0; i < h->nplugins && !found; i++)
            found = strlen(h->plugins[i]->name) == (size_t)(e - p) && !strncmp(h->plugins[i]->name, p, (size_t)(e - p));
        if (!found) {
            snprintf(err, sizeof(err), "plugin '%.*s' (from %s) is not installed in %s", (int)(e - p), p,
                     o.plugins                   ? "--plugins"
                     : getenv("BEARBNB_PLUGINS") ? "BEARBNB_PLUGINS"
                                                 : bnb__config_origin(h->cfg, "plugins"),
                     pdir);
            goto fail;
        }
        p = e;
    }
    if (o.help_config) {
        print_config_keys(h);
        exit_code = 0;
        goto out;
    }
    /* every loaded plugin's keys */
    for (size_t i = 0; i < h->nplugins; i++) {
        bnb_inst_t *c = h->plugins[i];
        char k[128];
        static const char *const sk[] = {"backend", "url", "pool_size"};
        for (int s = 0; s < 3; s++) {
            snprintf(k, sizeof(k), "%s.storage.%s", c->name, sk[s]);
            bnb__config_declare(h->cfg, k, s == 2 ? BNB_CFG_INT : BNB_CFG_STRING, NULL);
        }
        for (const bnb_cfg_item_t *ci = c->plugin->config; ci && ci->name; ci++) {
            snprintf(k, sizeof(k), "%s.%s", c->name, ci->name);
            bnb__config_declare(h->cfg, k, ci->type, ci->default_value);
        }
    }
    if (bnb__config_finish(h->cfg, environ, skip, err, sizeof(err)) != 0)
        goto fail;
    if (h->nplugins == 0 &&
        !(bnb__config_str(h->cfg, "gateway.routes") && bnb__config_str(h->cfg, "gateway.routes")[0])) {
        snprintf(err, sizeof(err), "no plugin to run and no gateway.routes to serve");
        goto fail;
    }
    {
        bnb_log_level_t lvl;
        const char *ls = bnb__config_str(h->cfg, "log_level");
        if (bnb__log_parse_level(ls, &lvl) != 0) {
            snprintf(err, sizeof(err), "%s: log_level must be debug, info, warn or error",
                     bnb__config_origin(h->cfg, "log_level"));
            goto fail;
        }
        bnb__log_set_level(lvl);
    }
    const char *backend = bnb__config_str(h->cfg, "storage.backend");
    if (bnb_storage_find(backend) == NULL) {
        snprintf(err, sizeof(err), "%s: storage.backend '%s' is not one of sqlite, mysql, mongo (in this build)",
                 bnb__config_origin(h->cfg, "storage.backend"), backend);
        goto fail;
    }
    if (o.check) {
        printf("config OK: plugins");
        for (size_t i = 0; i < h->nplugins; i++)
            printf("%s%s", i ? "," : " ", h->plugins[i]->name);
        printf("; listen %s; data %s\n", bnb__config_str(h->cfg, "listen"), bnb__config_str(h->cfg, "data"));
        exit_code = 0;
        goto out;
    }

    exit_code = 1;
    const char *data = bnb__config_str(h->cfg, "data");
    if (mkdir_p(data) != 0) {
        snprintf(err, sizeof(err), "data directory %s (%s): %s", data, bnb__config_origin(h->cfg, "data"),
                 strerror(errno));
        goto fail;
    }
    char keyfile[PATH_MAX];
    const char *kf = bnb__config_str(h->cfg, "auth.key_file");
    snprintf(keyfile, sizeof(keyfile), "%s", kf && kf[0] ? kf : "");
    if (!keyfile[0])
        snprintf(keyfile, sizeof(keyfile), "%s/jwt.key", data);
    bnb_auth_config_t ac = {
        .hs256_key_file = keyfile,
        .create_dev_key = !(kf && kf[0]),
        .jwks_file = bnb__config_str(h->cfg, "auth.jwks_file"),
        .jwks_url = bnb__config_str(h->cfg, "auth.jwks_url"),
        .jwks_refresh_s = (int)bnb__config_int(h->cfg, "auth.jwks_refresh_s"),
        .issuer = bnb__config_str(h->cfg, "auth.issuer"),
        .audience = bnb__config_str(h->cfg, "auth.audience"),
        .leeway_s = (int)bnb__config_int(h->cfg, "auth.leeway_s"),
    };
    if (bnb__auth_new(&ac, &h->auth, err, sizeof(err)) != 0)
        goto fail;
    h->oidc = (ac.jwks_file && ac.jwks_file[0]) || (ac.jwks_url && ac.jwks_url[0]);
    h->dev_signin = ac.create_dev_key && !h->oidc;
    if (o.token) {
        char *tok = NULL;
        if (bnb__auth_mint(h->auth, o.sub, o.role, o.ttl, &tok) != 0) {
            snprintf(err, sizeof(err), "cannot sign a token with %s", keyfile);
            goto fail;
        }
        printf("%s\n", tok);
        free(tok);
        exit_code = 0;
        goto out;
    }

    /* serving */
    char threads[16];
    snprintf(threads, sizeof(threads), "%ld", bnb__config_int(h->cfg, "http.threads"));
    setenv("UV_THREADPOOL_SIZE", threads, 0);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h->loop = uv_default_loop();
    pthread_mutex_init(&h->breakers_mu, NULL);
    bnb__breaker_config_default(&h->breaker_cfg);
    h->breaker_cfg.failure_rate = (int)bnb__config_int(h->cfg, "breaker.failure_rate");
    h->breaker_cfg.window = (int)bnb__config_int(h->cfg, "breaker.window");
    h->breaker_cfg.minimum_calls = (int)bnb__config_int(h->cfg, "breaker.minimum_calls");
    h->breaker_cfg.wait_open_ms = bnb__config_int(h->cfg, "breaker.wait_open_ms");
    h->breaker_cfg.half_open_calls = (int)bnb__config_int(h->cfg, "breaker.half_open_calls");
    h->call_timeout_ms = bnb__config_int(h->cfg, "call.timeout_ms");
    h->deliver_twice = bnb__config_bool(h->cfg, "events.deliver_twice");
    h->admin = bnb__config_bool(h->cfg, "admin");
    h->test_clock = h->admin && bnb__config_bool(h->cfg, "test.clock");
    if (h->test_clock)
        bnb__log(BNB_LOG_WARN, "test.clock is on: POST /admin/clock?advance_ms=N moves this host's clock (tests only)");
    h->max_body = (size_t)bnb__config_int(h->cfg, "http.max_body");
    h->stream_buffer = (size_t)bnb__config_int(h->cfg, "http.stream_buffer");
    h->relay_interval_ms = bnb__config_int(h->cfg, "events.relay_interval_ms");
    h->relay_batch = (size_t)bnb__config_int(h->cfg, "events.batch");
    long kst = bnb__config_int(h->cfg, "kafka.session_timeout_ms");
    if (h->relay_interval_ms < 10 || h->relay_batch < 1 || h->max_body < 1024 || h->call_timeout_ms < 1 ||
        h->stream_buffer < 1024 || kst < 1000 || kst > 3600000) {
        snprintf(err, sizeof(err),
                 "out of range: events.relay_interval_ms >= 10, events.batch >= 1, "
                 "http.max_body >= 1024, call.timeout_ms >= 1, http.stream_buffer >= 1024, "
                 "kafka.session_timeout_ms 1000..3600000");
        goto fail;
    }

    if (bnb__gateway_init(h, err, sizeof(err)) != 0)
        goto fail;
    h->gw_enforce = bnb__config_bool(h->cfg, "gateway.enforce");
    h->gw_timeout_ms = bnb__config_int(h->cfg, "gateway.timeout_ms");
    {
        long ur = bnb__config_int(h->cfg, "limits.user_rate"), ub = bnb__config_int(h->cfg, "limits.user_burst");
        long ir = bnb__config_int(h->cfg, "limits.ip_rate"), ib = bnb__config_int(h->cfg, "limits.ip_burst");
        /* a rate of 0 turns that limit off */
        if (ur > 0)
            h->rl_user = bnb__ratelimit_new((double)ur, (double)(ub > 0 ? ub : ur), 0);
        if (ir > 0)
            h->rl_ip = bnb__ratelimit_new((double)ir, (double)(ib > 0 ? ib : ir), 0);
    }
    for (size_t i = 0; i < h->nplugins; i++)
        if (open_store(h, h->plugins[i], data, err, sizeof(err)) != 0)
            goto fail;
    for (size_t i = 0; i < h->nplugins;) {
        if (bnb__plugin_init(h->plugins[i], err, sizeof(err)) == 0) {
            i++;
            continue;
        }
        /* refused; it stops us only when it was asked for by name */
        if (want && in_list(want, h->plugins[i]->name))
            goto fail;
        bnb__log(BNB_LOG_ERROR, "%s", err);
        err[0] = '\0';
        bnb__plugin_close(h->plugins[i]);
        memmove(&h->plugins[i], &h->plugins[i + 1], (h->nplugins - i - 1) * sizeof(h->plugins[0]));
        h->nplugins--;
    }
    if (h->nplugins == 0 &&
        !(bnb__config_str(h->cfg, "gateway.routes") && bnb__config_str(h->cfg, "gateway.routes")[0])) {
        snprintf(err, sizeof(err), "no plugin left to run");
        goto fail;
    }
    if (bnb__events_start(h, err, sizeof(err)) != 0)
        goto fail;
    for (size_t i = 0; i < h->nplugins; i++) {
        bnb_inst_t *c = h->plugins[i];
        if (c->plugin->start && c->plugin->start(&c->self) != 0) {
            snprintf(err, sizeof(err), "plugin %s (%s): start failed", c->name, c->path);
            goto fail_running;
        }
        c->started = 1;
    }
    if (bnb__http_start(h, err, sizeof(err)) != 0)
        goto fail_running;
    if (bnb__gateway_ready_start() != 0) /* an edge: is any upstream ready? */
        bnb__log(BNB_LOG_WARN, "gateway: cannot start the readiness thread; the edge stays not ready");
    uv_signal_init(h->loop, &sig_term);
    uv_signal_init(h->loop, &sig_int);
    sig_term.data = sig_int.data = h;
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    {
        char names[256] = "";
        for (size_t i = 0; i < h->nplugins; i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof(names) - l, "%s%s", i ? "," : "", h->plugins[i]->name);
        }
        bnb__log(BNB_LOG_INFO, "bearbnb %s listening on %s; plugins %s; events %s; data %s", BNB_VERSION,
                 bnb__config_str(h->cfg, "listen"), names, h->kafka_wanted ? "kafka" : "in-process", data);
    }
    trim_start(h);
    atomic_store(&h->ready, 1);
    uv_run(h->loop, UV_RUN_DEFAULT);
    exit_code = 0;
    goto out;

fail_running:
    bnb__events_stop(h);
    for (size_t i = 0; i < h->nplugins; i++)
        if (h->plugins[i]->started && h->plugins[i]->plugin->stop)
            h->plugins[i]->plugin->stop(&h->plugins[i]->self);
fail:
    fprintf(stderr, "bearbnb: %s\n", err);
    bnb__log(BNB_LOG_ERROR, "%s", err);
out:
    if (h->loop) {
        bnb__http_free(h);
        if (bnb__http_open_connections() == 0) {
            /* idle keep-alive connections left after the grace end with the process */
            uv_walk(h->loop, on_closed_walk, NULL);
            uv_run(h->loop, UV_RUN_DEFAULT);
            uv_loop_close(h->loop);
        }
        curl_global_cleanup();
    }
    free_all();
    if (skip) {
        for (size_t i = 0; skip[i]; i++)
            free((char *)skip[i]);
        free(skip);
    }
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    return exit_code;
}

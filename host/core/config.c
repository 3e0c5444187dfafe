#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct entry {
    char *key;
    char *value;
    char *origin;
    int from_file;
} entry_t;

struct bnb_config {
    entry_t *e;
    size_t n, cap;
    bnb_config_key_t *k;
    size_t nk, capk;
};

bnb_config_t *bnb__config_new(void)
{
    return calloc(1, sizeof(bnb_config_t));
}

void bnb__config_free(bnb_config_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].key);
        free(c->e[i].value);
        free(c->e[i].origin);
    }
    for (size_t i = 0; i < c->nk; i++) {
        free(c->k[i].key);
        free(c->k[i].def);
    }
    free(c->e);
    free(c->k);
    free(c);
}

static entry_t *find(bnb_config_t *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].key, key) == 0)
            return &c->e[i];
    return NULL;
}

static bnb_config_key_t *find_key(bnb_config_t *c, const char *key)
{
    for (size_t i = 0; i < c->nk; i++)
        if (strcmp(c->k[i].key, key) == 0)
            return &c->k[i];
    return NULL;
}

static int set(bnb_config_t *c, const char *key, const char *value, const char *origin, int from_file)
{
    entry_t *e = find(c, key);
    if (e == NULL) {
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 32;
            entry_t *ne = realloc(c->e, cap * sizeof(*ne));
            if (ne == NULL)
                return -ENOMEM;
            c->e = ne;
            c->cap = cap;
        }
        e = &c->e[c->n];
        memset(e, 0, sizeof(*e));
        e->key = strdup(key);
        if (e->key == NULL)
            return -ENOMEM;
        c->n++;
    }
    char *v = strdup(value), *o = strdup(origin);
    if (v == NULL || o == NULL) {
        free(v);
        free(o);
        return -ENOMEM;
    }
    free(e->value);
    free(e->origin);
    e->value = v;
    e->origin = o;
    e->from_file = from_file;
    return 0;
}

int bnb__config_set(bnb_config_t *c, const char *key, const char *value, const char *origin)
{
    return set(c, key, value, origin, 0);
}

int bnb__config_declare(bnb_config_t *c, const char *key, bnb_cfg_type_t type, const char *def)
{
    if (find_key(c, key) != NULL)
        return 0;
    if (c->nk == c->capk) {
        size_t cap = c->capk ? c->capk * 2 : 64;
        bnb_config_key_t *nk = realloc(c->k, cap * sizeof(*nk));
        if (nk == NULL)
            return -ENOMEM;
        c->k = nk;
        c->capk = cap;
    }
    bnb_config_key_t *k = &c->k[c->nk];
    k->key = strdup(key);
    k->def = def ? strdup(def) : NULL;
    k->type = type;
    if (k->key == NULL || (def && k->def == NULL)) {
        free(k->key);
        free(k->def);
        return -ENOMEM;
    }
    c->nk++;
    return 0;
}

static const struct {
    const char *key;
    bnb_cfg_type_t type;
    const char *def;
    const char *help; /* one line for --help-config (docs/configuration.md) */
} host_keys[] = {
    {"listen", BNB_CFG_STRING, "0.0.0.0:8088",
     "address to serve on: HOST:PORT, or fd:N for a socket handed over by a supervisor"},
    {"data", BNB_CFG_STRING, "./data", "directory of the SQLite stores and the generated development key"},
    {"plugins", BNB_CFG_STRING, NULL,
     "plugins to run, comma-separated (empty: none, the process is an edge); unset: every installed one"},
    {"plugin_dir", BNB_CFG_STRING, NULL,
     "where the plugin .so files are (default: the build's or install's plugins folder)"},
    {"log_level", BNB_CFG_STRING, "info", "debug, info, warn or error"},
    {"http.max_body", BNB_CFG_INT, "65536", "largest request body in bytes (more: 413)"},
    {"http.tls_cert", BNB_CFG_STRING, NULL, "PEM certificate: serve HTTPS (HTTP/2 by ALPN)"},
    {"http.tls_key", BNB_CFG_STRING, NULL, "PEM private key of http.tls_cert"},
    {"http.threads", BNB_CFG_INT, "16", "worker threads for handlers and storage calls"},
    {"http.stream_buffer", BNB_CFG_INT, "262144",
     "bytes a streamed answer (Server-Sent Events) may have queued for a slow client before it is dropped"},
    {"http.web_root", BNB_CFG_STRING, NULL,
     "directory of the web app served at / (default: the source tree's web/ from a build tree, else "
     "<prefix>/share/bearbnb/web; none: off; missing: not served, logged)"},
    {"http.drain_timeout_ms", BNB_CFG_INT, "15000", "on SIGTERM: how long in-flight requests may take"},
    {"http.drain_accept_ms", BNB_CFG_INT, "300", "on SIGTERM: keep accepting this long (clients of a rolling update)"},
    {"auth.key_file", BNB_CFG_STRING, NULL,
     "HS256 key file (hex); unset: <data>/jwt.key, created on first run (development key)"},
    {"auth.jwks_file", BNB_CFG_STRING, NULL, "JWKS file of RS256/ES256 public keys"},
    {"auth.jwks_url", BNB_CFG_STRING, NULL,
     "JWKS URL (Keycloak: <issuer>/protocol/openid-connect/certs); down at start: not ready until it loads"},
    {"auth.jwks_refresh_s", BNB_CFG_INT, "300",
     "JWKS refresh period; an unknown kid also refreshes (at most every 10 s)"},
    {"auth.issuer", BNB_CFG_STRING, "bearbnb", "required `iss` of tokens (Keycloak: http(s)://<host>/realms/<realm>)"},
    {"auth.audience", BNB_CFG_STRING, "bearbnb", "required member of `aud`"},
    {"auth.web_client_id", BNB_CFG_STRING, "bearbnb-web",
     "OpenID Connect client of the web app (public, authorization code + PKCE), told by GET /auth/config"},
    {"auth.leeway_s", BNB_CFG_INT, "30", "clock skew allowed for exp/nbf (negative: none)"},
    {"storage.backend", BNB_CFG_STRING, "sqlite", "sqlite, mysql or mongo"},
    {"storage.url", BNB_CFG_STRING, NULL,
     "mysql://user:pass@host:port/db or mongodb://host:port/db (sqlite: a file under data)"},
    {"storage.pool_size", BNB_CFG_INT, "8", "database connections per plugin store"},
    {"kafka.brokers", BNB_CFG_STRING, NULL, "Kafka bootstrap servers; unset: events stay in process"},
    {"kafka.partitions", BNB_CFG_INT, "3", "partitions of topics this host creates"},
    {"kafka.namespace", BNB_CFG_STRING, NULL, "prefix of topic and consumer-group names (tests, tenants)"},
    {"kafka.instance_id", BNB_CFG_STRING, NULL,
     "static consumer-group membership (deploy/ sets the pod name): group.instance.id is <this>-<group>, stable per "
     "process; a restarted consumer gets its partitions back at once (0.3 s, 4.4 s without). A consumer fenced by a "
     "fatal error (librdkafka 2.0.2, also after a broker SIGKILL) replaces itself with the same id. Never the same in "
     "two live processes (they fence each other in turn)"},
    {"kafka.debug", BNB_CFG_STRING, NULL,
     "librdkafka debug contexts (e.g. cgrp,broker,msg), logged at log_level debug; unset: none"},
    {"kafka.session_timeout_ms", BNB_CFG_INT, "6000",
     "consumer session: a consumer that died and does not come back gives its partitions up after it"},
    {"kafka.assignment", BNB_CFG_STRING, "cooperative-sticky",
     "partition.assignment.strategy of the consumers (cooperative-sticky: incremental rebalancing; range, "
     "roundrobin: eager)"},
    {"call.timeout_ms", BNB_CFG_INT, "2000", "timeout of a service-to-service call"},
    {"breaker.failure_rate", BNB_CFG_INT, "50", "percent of failed calls in the window that opens a circuit breaker"},
    {"breaker.window", BNB_CFG_INT, "100", "calls in a breaker's count window"},
    {"breaker.minimum_calls", BNB_CFG_INT, "100", "calls before a breaker may open"},
    {"breaker.wait_open_ms", BNB_CFG_INT, "60000", "how long an open breaker refuses calls before trying again"},
    {"breaker.half_open_calls", BNB_CFG_INT, "10", "trial calls in the half-open state"},
    {"services.room.url", BNB_CFG_STRING, NULL, "where the room service is when it does not run in this process"},
    {"services.reservation.url", BNB_CFG_STRING, NULL, "where the reservation service is"},
    {"services.payment.url", BNB_CFG_STRING, NULL, "where the payment service is"},
    {"services.dashboard.url", BNB_CFG_STRING, NULL, "where the dashboard service is"},
    {"events.deliver_twice", BNB_CFG_BOOL, "false", "deliver every event twice (tests of idempotent consumers)"},
    {"events.relay_interval_ms", BNB_CFG_INT, "10000",
     "outbox relay poll interval: only a safety net (commits, a plugin's resume and the broker's return wake the "
     "relay; a failed round retries after 100 ms doubling up to 2 s)"},
    {"events.batch", BNB_CFG_INT, "100", "events per relay round"},
    {"admin", BNB_CFG_BOOL, "false",
     "loopback-only /admin endpoints (tests: pause a plugin, inject events, dead letters, routes)"},
    {"test.clock", BNB_CFG_BOOL, "false", "tests only: POST /admin/clock sets the clock (with admin)"},
    {"gateway.routes", BNB_CFG_STRING, NULL,
     "edge routing: /prefix=http://service:port,... (longest prefix wins; h2c:// for HTTP/2)"},
    {"gateway.secret_file", BNB_CFG_STRING, NULL, "shared secret that signs the identity the edge forwards"},
    {"gateway.secret_previous_file", BNB_CFG_STRING, NULL,
     "the previous secret, still accepted while a new one rolls out"},
    {"gateway.enforce", BNB_CFG_BOOL, "false", "services refuse requests without a valid edge signature"},
    {"gateway.timeout_ms", BNB_CFG_INT, "5000",
     "edge timeout of a proxied request (for a streamed answer: until its head)"},
    {"gateway.max_streams", BNB_CFG_INT, "64",
     "streamed answers (text/event-stream, unknown length) the edge relays at once; more: 503"},
    {"limits.user_rate", BNB_CFG_INT, "100", "requests per second per user (0: off)"},
    {"limits.user_burst", BNB_CFG_INT, "200", "burst per user"},
    {"limits.ip_rate", BNB_CFG_INT, "500", "requests per second per client address (0: off)"},
    {"limits.ip_burst", BNB_CFG_INT, "1000", "burst per client address"},
};

int bnb__config_host_key(size_t i, const char **key, bnb_cfg_type_t *type, const char **def, const char **help)
{
    if (i >= sizeof(host_keys) / sizeof(host_keys[0]))
        return -1;
    *key = host_keys[i].key;
    *type = host_keys[i].type;
    *def = host_keys[i].def;
    *help = host_keys[i].help ? host_keys[i].help : "";
    return 0;
}

int bnb__config_declare_host(bnb_config_t *c)
{
    for (size_t i = 0; i < sizeof(host_keys) / sizeof(host_keys[0]); i++)
        if (bnb__config_declare(c, host_keys[i].key, host_keys[i].type, host_keys[i].def) != 0)
            return -ENOMEM;
    return 0;
}

const char *bnb__config_env_name(const char *key)
{
    static __thread char buf[256];
    size_t o = snprintf(buf, sizeof(buf), "BEARBNB_");
    for (const char *p = key; *p && o + 1 < sizeof(buf); p++)
        buf[o++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    buf[o] = '\0';
    return buf;
}

/* ---- YAML ---------------------------------------------------------------- */

typedef struct ystate {
    bnb_config_t *c;
    const char *path;
    char *err;
    size_t errlen;
} ystate_t;

static int yerr(ystate_t *s, size_t line, const char *fmt, const char *arg)
{
    char msg[1024];
    snprintf(msg, sizeof(msg), fmt, arg);
    snprintf(s->err, s->errlen, "%s:%zu: %s", s->path, line + 1, msg);
    return -EINVAL;
}

static int next(yaml_parser_t *p, yaml_event_t *ev, ystate_t *s)
{
    if (!yaml_parser_parse(p, ev)) {
        snprintf(s->err, s->errlen, "%s:%zu: YAML syntax error: %s", s->path, p->problem_mark.line + 1,
                 p->problem ? p->problem : "unknown");
        return -EINVAL;
    }
    return 0;
}

static int parse_node(yaml_parser_t *p, yaml_event_t *ev, ystate_t *s, const char *prefix);

static int parse_mapping(yaml_parser_t *p, ystate_t *s, const char *prefix)
{
    for (;;) {
        yaml_event_t k;
        if (next(p, &k, s) != 0)
            return -EINVAL;
        if (k.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&k);
            return 0;
        }
        if (k.type != YAML_SCALAR_EVENT) {
            size_t line = k.start_mark.line;
            yaml_event_delete(&k);
            return yerr(s, line, "%s", "a key must be a plain name");
        }
        char key[512];
        const char *name = (const char *)k.data.scalar.value;
        size_t line = k.start_mark.line;
        if (prefix[0])
            snprintf(key, sizeof(key), "%s.%s", prefix, name);
        else
            snprintf(key, sizeof(key), "%s", name);
        int bad = name[0] == '\0' || strchr(name, '.') != NULL;
        yaml_event_delete(&k);
        if (bad)
            return yerr(s, line, "key '%s': names may not be empty or contain '.'", key);
        if (find(s->c, key) != NULL)
            return yerr(s, line, "key '%s' appears twice", key);
        yaml_event_t v;
        if (next(p, &v, s) != 0)
            return -EINVAL;
        int rc = parse_node(p, &v, s, key);
        yaml_event_delete(&v);
        if (rc != 0)
            return rc;
    }
}

static int parse_node(yaml_parser_t *p, yaml_event_t *ev, ystate_t *s, const char *key)
{
    char origin[512];
    snprintf(origin, sizeof(origin), "%s:%zu", s->path, ev->start_mark.line + 1);
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        if (key[0] == '\0')
            return yerr(s, ev->start_mark.line, "%s", "the file must be a mapping of keys");
        return set(s->c, key, (const char *)ev->data.scalar.value, origin, 1);
    case YAML_MAPPING_START_EVENT:
        return parse_mapping(p, s, key);
    case YAML_SEQUENCE_START_EVENT: {
        /* a list of scalars becomes "a,b,c" */
        char joined[4096] = "";
        size_t o = 0;
        for (;;) {
            yaml_event_t it;
            if (next(p, &it, s) != 0)
                return -EINVAL;
            if (it.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&it);
                break;
            }
            if (it.type != YAML_SCALAR_EVENT) {
                size_t line = it.start_mark.line;
                yaml_event_delete(&it);
                return yerr(s, line, "key '%s': only lists of plain values are supported", key);
            }
            o += snprintf(joined + o, o < sizeof(joined) ? sizeof(joined) - o : 0, "%s%s", o ? "," : "",
                          (const char *)it.data.scalar.value);
            yaml_event_delete(&it);
        }
        if (o >= sizeof(joined))
            return yerr(s, ev->start_mark.line, "key '%s': list too long", key);
        return set(s->c, key, joined, origin, 1);
    }
    case YAML_ALIAS_EVENT:
        return yerr(s, ev->start_mark.line, "key '%s': YAML aliases are not supported", key);
    default:
        return yerr(s, ev->start_mark.line, "key '%s': unexpected YAML node", key);
    }
}

int bnb__config_load_file(bnb_config_t *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open config file: %s", path, strerror(errno));
        return -ENOENT;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    ystate_t s = {c, path, err, errlen};
    int rc = 0, done = 0;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (next(&p, &ev, &s) != 0) {
            rc = -EINVAL;
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_MAPPING_START_EVENT:
            rc = parse_mapping(&p, &s, "");
            break;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            rc = yerr(&s, ev.start_mark.line, "%s", "the file must be a mapping of keys");
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

/* ---- finishing ---------------------------------------------------------- */

static int parse_bool(const char *v, int *out)
{
    static const char *t[] = {"true", "yes", "on", "1"}, *fl[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, t[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(v, fl[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int parse_int(const char *v, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
        return -1;
    *out = n;
    return 0;
}

int bnb__config_finish(bnb_config_t *c, char *const *envp, const char *const *skip_plugins, char *err, size_t errlen)
{
    /* environment */
    for (char *const *e = envp; e && *e; e++) {
        if (strncmp(*e, "BEARBNB_", 8) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        size_t nl = (size_t)(eq - *e);
        bnb_config_key_t *hit = NULL;
        for (size_t i = 0; i < c->nk && hit == NULL; i++) {
            const char *en = bnb__config_env_name(c->k[i].key);
            if (strlen(en) == nl && strncmp(en, *e, nl) == 0)
                hit = &c->k[i];
        }
        if (hit != NULL) {
            entry_t *ex = find(c, hit->key);
            if (ex != NULL && strncmp(ex->origin, "--", 2) == 0)
                continue; /* the command line wins */
            char origin[256];
            snprintf(origin, sizeof(origin), "%.*s", (int)nl, *e);
            if (set(c, hit->key, eq + 1, origin, 0) != 0)
                return -ENOMEM;
            continue;
        }
        int skip = strncmp(*e, "BEARBNB_BIN=", 12) == 0; /* the tests' pointer to the program */
        for (const char *const *sp = skip_plugins; sp && *sp && !skip; sp++) {
            char pre[128];
            snprintf(pre, sizeof(pre), "%s", bnb__config_env_name(*sp));
            size_t pl = strlen(pre);
            skip = strncmp(*e, pre, pl) == 0 && (*e)[pl] == '_';
        }
        if (!skip) {
            snprintf(err, errlen, "environment variable %.*s: unknown setting", (int)nl, *e);
            return -EINVAL;
        }
    }
    /* every set key declared and typed */
    for (size_t i = 0; i < c->n; i++) {
        entry_t *e = &c->e[i];
        bnb_config_key_t *k = find_key(c, e->key);
        int skip = 0;
        for (const char *const *sp = skip_plugins; sp && *sp && !skip; sp++)
            skip = strncmp(e->key, *sp, strlen(*sp)) == 0 && e->key[strlen(*sp)] == '.';
        if (skip)
            continue;
        if (k == NULL) {
            snprintf(err, errlen, "%s: unknown key '%s'", e->origin, e->key);
            return -EINVAL;
        }
        long n;
        int b;
        if (k->type == BNB_CFG_INT && parse_int(e->value, &n) != 0) {
            snprintf(err, errlen, "%s: key '%s' must be an integer, got '%s'", e->origin, e->key, e->value);
            return -EINVAL;
        }
        if (k->type == BNB_CFG_BOOL && parse_bool(e->value, &b) != 0) {
            snprintf(err, errlen, "%s: key '%s' must be true or false, got '%s'", e->origin, e->key, e->value);
            return -EINVAL;
        }
    }
    return 0;
}

const char *bnb__config_str(bnb_config_t *c, const char *key)
{
    entry_t *e = find(c, key);
    if (e != NULL)
        return e->value;
    bnb_config_key_t *k = find_key(c, key);
    return k ? k->def : NULL;
}

long bnb__config_int(bnb_config_t *c, const char *key)
{
    const char *v = bnb__config_str(c, key);
    long n = 0;
    if (v != NULL)
        parse_int(v, &n);
    return n;
}

int bnb__config_bool(bnb_config_t *c, const char *key)
{
    const char *v = bnb__config_str(c, key);
    int b = 0;
    if (v != NULL)
        parse_bool(v, &b);
    return b;
}

const char *bnb__config_origin(bnb_config_t *c, const char *key)
{
    entry_t *e = find(c, key);
    return e ? e->origin : "default";
}

void bnb__config_each(bnb_config_t *c, void (*fn)(const char *, const char *, void *), void *ud)
{
    for (size_t i = 0; i < c->n; i++)
        fn(c->e[i].key, c->e[i].value, ud);
}

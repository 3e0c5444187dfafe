/*
 * BearBnB storage backend: MySQL / MariaDB (MariaDB Connector/C, mysqlclient API).
 *
 * URL: mysql://user[:password]@host[:port]/database   (port 3306 by default;
 * user and password may be %-encoded). The database is created when missing.
 *
 * Tables (InnoDB, utf8mb4, binary collation so ids and keys compare exactly),
 * one set per store, prefixed with the store name cfg->name:
 *   <name>_docs     (coll, id) -> version, deleted, body (JSON text), key1, key2
 *   <name>_applied  (coll, id, event_id): applied-event marks
 *   <name>_outbox   seq AUTO_INCREMENT, event_id UNIQUE, topic, key, payload
 *   <name>_dead     seq, consumer, reason, event, created
 *
 * A DELETE leaves a tombstone row (deleted=1, body NULL) instead of removing the
 * row, so a document's version keeps going up across delete/re-create (no ABA
 * for a caller that still holds an old version); get/list skip tombstones.
 *
 * commit() is one InnoDB transaction (READ COMMITTED):
 *   START TRANSACTION; SELECT version, deleted ... FOR UPDATE (locks the row);
 *   INSERT applied mark (duplicate key => BNB_EALREADY, ROLLBACK);
 *   version check; INSERT/UPDATE the document; INSERT outbox rows; COMMIT.
 * Deadlocks (1213), lock wait timeouts (1205) and a lost insert race (1062 on
 * the document) roll back and retry the whole transaction a few times, then
 * BNB_EIO.
 *
 * Every value reaching SQL goes through mysql_real_escape_string on the
 * connection that runs it (table names come from the validated store name);
 * multi-statements are off.
 *
 * Connections: a pool of at most cfg->pool_size (default 8) connections,
 * mutex + condition + free list. A connection whose call failed with a client
 * (connection) error is closed and a new one is opened on next use; one idle for
 * a while is pinged before reuse.
 */
#include "bnb_build_config.h"
#include "bnb_storage.h"
#include "v2.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MY_DEFAULT_POOL  8
#define MY_RETRIES       6
#define MY_IDLE_PING_SEC 30
#define MY_PREFIX_MAX    48
#define MY_STMT_MAX      256 /* cached prepared statements per connection */

/* Internal results besides BNB_E*. */
enum { MY_RETRY = -1000, MY_DUP = -1001 };

/* One server-side prepared statement, cached by its SQL text. */
typedef struct my_stc {
    char *sql;
    MYSQL_STMT *st;
} my_stc_t;

typedef struct my_conn {
    MYSQL *m;
    struct my_conn *next;
    time_t last_used;
    my_stc_t *stc; /* open addressing, capacity nstccap (power of 2) */
    size_t nstc, nstccap;
} my_conn_t;

typedef struct my_url {
    char *user, *pass, *host, *db;
    unsigned port;
} my_url_t;

typedef struct my_store {
    bnb_store_t base;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    my_conn_t *free_list;
    int open_count, max;
    my_url_t url;
    char prefix[MY_PREFIX_MAX + 1];
    bnb__colls_t colls; /* declared collections */
    pthread_mutex_t define_mu;
} my_store_t;

/* ---- small string builder ------------------------------------------------ */

typedef struct sb {
    char *p;
    size_t len, cap;
    bool oom;
} sb_t;

static bool sb_reserve(sb_t *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void sb_add(sb_t *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Quoted, escaped SQL string literal (or NULL). */
static void sb_lit(sb_t *b, MYSQL *m, const char *s)
{
    if (!s) {
        sb_add(b, "NULL", 4);
        return;
    }
    size_t n = strlen(s);
    if (!sb_reserve(b, 2 * n + 3))
        return;
    b->p[b->len++] = '\'';
    b->len += mysql_real_escape_string(m, b->p + b->len, s, (unsigned long)n);
    b->p[b->len++] = '\'';
    b->p[b->len] = '\0';
}

/*
 * Build SQL: %T = `<prefix>_` (then the table suffix follows in the format),
 * %s = escaped string literal or NULL, %l = int64_t, %d = int, %% = '%'.
 * Nothing else is interpolated.
 */
static void sb_sql(sb_t *b, MYSQL *m, const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            const char *e = strchr(f, '%');
            size_t n = e ? (size_t)(e - f) : strlen(f);
            sb_add(b, f, n);
            f += n - 1;
            continue;
        }
        char num[32];
        switch (*++f) {
        case 'T':
            sb_add(b, "`", 1);
            sb_add(b, prefix, strlen(prefix));
            sb_add(b, "_", 1);
            break;
        case 's':
            sb_lit(b, m, va_arg(ap, const char *));
            break;
        case 'l':
            snprintf(num, sizeof num, "%" PRId64, va_arg(ap, int64_t));
            sb_add(b, num, strlen(num));
            break;
        case 'd':
            snprintf(num, sizeof num, "%d", va_arg(ap, int));
            sb_add(b, num, strlen(num));
            break;
        case '%':
            sb_add(b, "%", 1);
            break;
        default: /* programming error: make the query fail loudly */
            b->oom = true;
            f--;
            break;
        }
    }
    va_end(ap);
}

/* ---- URL ----------------------------------------------------------------- */

static void url_free(my_url_t *u)
{
    free(u->user);
    free(u->pass);
    free(u->host);
    free(u->db);
    memset(u, 0, sizeof *u);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static char *pct_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

static bool ident_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!(isalnum((unsigned char)s[n]) || s[n] == '_'))
            return false;
    return n > 0 && n <= max;
}

static int url_parse(const char *url, my_url_t *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    const char *p;
    if (!url) {
        snprintf(err, errlen, "mysql: no url configured");
        return BNB_EINVAL;
    }
    if (!strncmp(url, "mysql://", 8))
        p = url + 8;
    else if (!strncmp(url, "mariadb://", 10))
        p = url + 10;
    else {
        snprintf(err, errlen, "mysql: url must start with mysql://");
        return BNB_EINVAL;
    }
    const char *slash = strchr(p, '/');
    const char *auth_end = slash ? slash : p + strlen(p);
    const char *at = NULL;
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@')
            at = q;
    const char *hp = p;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            u->user = pct_decode(p, (size_t)(colon - p));
            u->pass = pct_decode(colon + 1, (size_t)(at - colon - 1));
        } else {
            u->user = pct_decode(p, (size_t)(at - p));
        }
        hp = at + 1;
    } else {
        u->user = strdup("root");
    }
    /* host[:port], host may be [v6] */
    const char *host_end = auth_end, *port = NULL;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(auth_end - hp));
        if (!rb)
            goto bad;
        u->host = strndup(hp + 1, (size_t)(rb - hp - 1));
        if (rb + 1 < auth_end && rb[1] == ':')
            port = rb + 2;
    } else {
        const char *colon = memchr(hp, ':', (size_t)(auth_end - hp));
        if (colon) {
            host_end = colon;
            port = colon + 1;
        }
        u->host = strndup(hp, (size_t)(host_end - hp));
    }
    u->port = 3306;
    if (port) {
        char *e;
        errno = 0;
        unsigned long v = strtoul(port, &e, 10);
        if (e != auth_end || e == port || v == 0 || v > 65535 || errno)
            goto bad;
        u->port = (unsigned)v;
    }
    if (slash && slash[1]) {
        size_t n = strcspn(slash + 1, "?#");
        u->db = pct_decode(slash + 1, n);
    } else {
        u->db = strdup("bearbnb");
    }
    if (!u->user || !u->host || !u->db || (at && memchr(p, ':', (size_t)(at - p)) && !u->pass)) {
        url_free(u);
        snprintf(err, errlen, "mysql: out of memory");
        return BNB_ENOMEM;
    }
    if (!*u->host)
        goto bad;
    if (!ident_ok(u->db, 64)) {
        snprintf(err, errlen, "mysql: database name '%s' must be [A-Za-z0-9_]+", u->db);
        url_free(u);
        return BNB_EINVAL;
    }
    return 0;
bad:
    url_free(u);
    snprintf(err, errlen, "mysql: cannot parse url (expected mysql://user[:pass]@host[:port]/db)");
    return BNB_EINVAL;
}

/* The URL without its password, for messages. */
static void url_show(const my_url_t *u, char *out, size_t n)
{
    snprintf(out, n, "mysql://%s@%s%s%s:%u/%s", u->user, strchr(u->host, ':') ? "[" : "", u->host,
             strchr(u->host, ':') ? "]" : "", u->port, u->db);
}

/* ---- connections --------------------------------------------------------- */

static pthread_once_t my_once = PTHREAD_ONCE_INIT;
static int my_lib_rc;

static void my_lib_init(void)
{
    my_lib_rc = mysql_library_init(0, NULL, NULL);
}

/* One JSON line on stderr: {"level":"error","msg":...,"component":"storage.mysql"}. */
static void my_log(const char *what, const char *detail, unsigned code)
{
    char msg[700];
    snprintf(msg, sizeof msg, "mysql %s: %s (%u)", what, detail ? detail : "failed", code);
    json_t *line = json_pack("{s:s, s:s, s:s}", "level", "error", "msg", msg, "component", "storage.mysql");
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(line);
}

static int my_err_code(MYSQL *m, bool *broken);

/* Map the last error of `m` to an internal/BNB code; log real failures. */
static int my_err(MYSQL *m, bool *broken)
{
    int rc = my_err_code(m, broken);
    if (rc != MY_RETRY && rc != MY_DUP)
        my_log("query", mysql_error(m), mysql_errno(m));
    return rc;
}

static int my_err_code(MYSQL *m, bool *broken)
{
    unsigned e = mysql_errno(m);
    switch (e) {
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
        return MY_RETRY;
    case ER_DUP_ENTRY:
        return MY_DUP;
    case ER_DATA_TOO_LONG:
    case ER_TRUNCATED_WRONG_VALUE_FOR_FIELD:
        return BNB_EINVAL;
    default:
        break;
    }
    if (e >= CR_MIN_ERROR && e <= CR_MAX_ERROR) {
        if (broken)
            *broken = true;
        if (e == CR_OUT_OF_MEMORY)
            return BNB_ENOMEM;
    }
    /* 1927: connection killed; 1053: server shutdown in progress */
    if (e == 1927 || e == 1053 || e == 4031 /* disconnected by server (timeout) */) {
        if (broken)
            *broken = true;
    }
    return BNB_EIO;
}

static int run(MYSQL *m, const char *sql, size_t len, bool *broken)
{
    if (mysql_real_query(m, sql, (unsigned long)len) != 0)
        return my_err(m, broken);
    return 0;
}

static int run_sb(MYSQL *m, sb_t *q, bool *broken)
{
    if (q->oom)
        return BNB_ENOMEM;
    return run(m, q->p, q->len, broken);
}

static int run_str(MYSQL *m, const char *sql, bool *broken)
{
    return run(m, sql, strlen(sql), broken);
}

/* Run a query that returns rows. */
static int query_rows(MYSQL *m, sb_t *q, MYSQL_RES **res, bool *broken)
{
    *res = NULL;
    int rc = run_sb(m, q, broken);
    if (rc)
        return rc;
    *res = mysql_store_result(m);
    if (!*res)
        return mysql_field_count(m) ? my_err(m, broken) : BNB_EIO;
    return 0;
}

static MYSQL *my_connect(const my_url_t *u, const char *db, char *err, size_t errlen)
{
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    unsigned timeout = 10, rw_timeout = 60;
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rw_timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &rw_timeout);
    if (!mysql_real_connect(m, u->host, u->user, u->pass, db, u->port, NULL, 0)) {
        snprintf(err, errlen, "%s (%u)", mysql_error(m), mysql_errno(m));
        mysql_close(m);
        return NULL;
    }
    static const char *const init_sql[] = {
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        "SET SESSION innodb_lock_wait_timeout=10",
        "SET SESSION autocommit=1",
    };
    for (size_t i = 0; i < sizeof init_sql / sizeof *init_sql; i++) {
        if (mysql_query(m, init_sql[i]) != 0) {
            snprintf(err, errlen, "%s (%u)", mysql_error(m), mysql_errno(m));
            mysql_close(m);
            return NULL;
        }
    }
    return m;
}

static void stc_clear(my_conn_t *c)
{
    for (size_t i = 0; i < c->nstccap; i++) {
        if (c->stc[i].sql) {
            mysql_stmt_close(c->stc[i].st);
            free(c->stc[i].sql);
        }
    }
    free(c->stc);
    c->stc = NULL;
    c->nstc = c->nstccap = 0;
}

/* Close the connection and its statements (the struct stays). */
static void conn_close(my_conn_t *c)
{
    stc_clear(c);
    if (c->m)
        mysql_close(c->m);
    c->m = NULL;
}

static int acquire(my_store_t *s, my_conn_t **out)
{
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    while (!s->free_list && s->open_count >= s->max)
        pthread_cond_wait(&s->cv, &s->mu);
    my_conn_t *c = s->free_list;
    if (c)
        s->free_list = c->next;
    else
        s->open_count++;
    pthread_mutex_unlock(&s->mu);

    if (c) {
        c->next = NULL;
        /* A connection idle for long may have been dropped by the server. */
        if (time(NULL) - c->last_used < MY_IDLE_PING_SEC || mysql_ping(c->m) == 0) {
            *out = c;
            return 0;
        }
        conn_close(c);
    } else {
        c = calloc(1, sizeof *c);
        if (!c)
            goto fail;
    }
    char err[256];
    c->m = my_connect(&s->url, s->url.db, err, sizeof err);
    if (!c->m) {
        my_log("connect", err, 0);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    free(c);
    pthread_mutex_lock(&s->mu);
    s->open_count--;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return BNB_EIO;
}

static void release(my_store_t *s, my_conn_t *c, bool broken)
{
    if (!c)
        return;
    if (broken) {
        conn_close(c);
        free(c);
        pthread_mutex_lock(&s->mu);
        s->open_count--;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    c->last_used = time(NULL);
    pthread_mutex_lock(&s->mu);
    c->next = s->free_list;
    s->free_list = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Internal codes never leave this file. */
static int public_rc(int rc)
{
    if (rc == MY_RETRY || rc == MY_DUP)
        return BNB_EIO;
    return rc;
}

/* ---- prepared statements ------------------------------------------------- */

/* A statement parameter. */
typedef struct my_val {
    enum { V_NULL, V_STR, V_I64 } kind;
    const char *s;
    long long n;
} my_val_t;

static my_val_t v_str(const char *s)
{
    return s ? (my_val_t){.kind = V_STR, .s = s} : (my_val_t){.kind = V_NULL};
}

static my_val_t v_i64(int64_t n)
{
    return (my_val_t){.kind = V_I64, .n = (long long)n};
}

static my_val_t v_fval(const bnb__fval_t *f)
{
    if (f->null)
        return (my_val_t){.kind = V_NULL};
    return f->s ? v_str(f->s) : v_i64(f->n);
}

/* Map the last error of a statement like my_err_code; a duplicate key on the
 * PRIMARY key is MY_DUP, on another (unique) key BNB_ETAKEN. */
static int st_err(MYSQL_STMT *st, bool *broken, bool log)
{
    unsigned e = mysql_stmt_errno(st);
    if (e == ER_DUP_ENTRY) {
        const char *msg = mysql_stmt_error(st);
        return msg && strstr(msg, "for key 'PRIMARY'") ? MY_DUP : BNB_ETAKEN;
    }
    if (e == ER_LOCK_DEADLOCK || e == ER_LOCK_WAIT_TIMEOUT)
        return MY_RETRY;
    if (log)
        my_log("statement", mysql_stmt_error(st), e);
    if (e == ER_DATA_TOO_LONG || e == ER_TRUNCATED_WRONG_VALUE_FOR_FIELD)
        return BNB_EINVAL;
    if ((e >= CR_MIN_ERROR && e <= CR_MAX_ERROR) || e == 1927 || e == 1053 || e == 4031) {
        if (broken)
            *broken = true;
        if (e == CR_OUT_OF_MEMORY)
            return BNB_ENOMEM;
    }
    return BNB_EIO;
}

/* The connection's statement for `sql`: prepared on the server once, then
 * taken from the cache by its text. */
static int st_get(my_conn_t *c, const char *sql, MYSQL_STMT **out, bool *broken)
{
    uint32_t h = bnb__fnv1a(2166136261u, sql, strlen(sql));
    if (c->nstccap) {
        for (size_t i = h & (c->nstccap - 1); c->stc[i].sql; i = (i + 1) & (c->nstccap - 1)) {
            if (strcmp(c->stc[i].sql, sql) == 0) {
                *out = c->stc[i].st;
                return 0;
            }
        }
    }
    if (c->nstc >= MY_STMT_MAX)
        stc_clear(c); /* more shapes than any plugin has: start over */
    if ((c->nstc + 1) * 2 > c->nstccap) {
        size_t ncap = c->nstccap ? c->nstccap * 2 : 32;
        my_stc_t *nt = calloc(ncap, sizeof *nt);
        if (!nt)
            return BNB_ENOMEM;
        for (size_t i = 0; i < c->nstccap; i++) {
            if (!c->stc[i].sql)
                continue;
            size_t k = bnb__fnv1a(2166136261u, c->stc[i].sql, strlen(c->stc[i].sql)) & (ncap - 1);
            while (nt[k].sql)
                k = (k + 1) & (ncap - 1);
            nt[k] = c->stc[i];
        }
        free(c->stc);
        c->stc = nt;
        c->nstccap = ncap;
    }
    MYSQL_STMT *st = mysql_stmt_init(c->m);
    if (!st)
        return BNB_ENOMEM;
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql)) != 0) {
        int rc = st_err(st, broken, true);
        mysql_stmt_close(st);
        return rc == MY_DUP || rc == BNB_ETAKEN ? BNB_EIO : rc;
    }
    char *copy = strdup(sql);
    if (!copy) {
        mysql_stmt_close(st);
        return BNB_ENOMEM;
    }
    size_t k = h & (c->nstccap - 1);
    while (c->stc[k].sql)
        k = (k + 1) & (c->nstccap - 1);
    c->stc[k].sql = copy;
    c->stc[k].st = st;
    c->nstc++;
    *out = st;
    return 0;
}

#define MY_MAX_PARAMS 48

/* Bind the parameters and execute. 0, MY_DUP, MY_RETRY, BNB_ETAKEN or a BNB
 * error (logged). `log_dup`: a duplicate is an expected outcome, not logged. */
static int st_exec(MYSQL_STMT *st, const my_val_t *v, unsigned n, bool *broken)
{
    MYSQL_BIND b[MY_MAX_PARAMS];
    if (n > MY_MAX_PARAMS || n != mysql_stmt_param_count(st)) {
        my_log("statement", "wrong number of parameters", n);
        return BNB_EIO;
    }
    memset(b, 0, sizeof(b[0]) * (n ? n : 1));
    for (unsigned i = 0; i < n; i++) {
        switch (v[i].kind) {
        case V_NULL:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        case V_STR:
            b[i].buffer_type = MYSQL_TYPE_STRING;
            b[i].buffer = (void *)v[i].s;
            b[i].buffer_length = (unsigned long)strlen(v[i].s);
            break;
        case V_I64:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&v[i].n;
            break;
        }
    }
    if ((n && mysql_stmt_bind_param(st, b) != 0) || mysql_stmt_execute(st) != 0) {
        unsigned e = mysql_stmt_errno(st);
        return st_err(st, broken, e != ER_DUP_ENTRY && e != ER_LOCK_DEADLOCK && e != ER_LOCK_WAIT_TIMEOUT);
    }
    return 0;
}

/* One row of a result: every column as text (NULL when SQL NULL). */
typedef int (*row_fn)(void *ud, char **col, unsigned long *len, unsigned ncol);

/* Fetch the rows of an executed statement, every column as text. */
static int st_rows(MYSQL_STMT *st, row_fn fn, void *ud, bool *broken)
{
    MYSQL_RES *meta = NULL;
    MYSQL_BIND *b = NULL;
    char **col = NULL;
    unsigned long *len = NULL;
    my_bool *isnull = NULL;
    unsigned ncol = 0;
    int rc = 0;

    my_bool upd = 1; /* so that the metadata has each column's longest value */
    mysql_stmt_attr_set(st, STMT_ATTR_UPDATE_MAX_LENGTH, &upd);
    if (mysql_stmt_store_result(st) != 0)
        return st_err(st, broken, true);
    if (!(meta = mysql_stmt_result_metadata(st))) {
        rc = st_err(st, broken, true);
        goto out;
    }
    ncol = mysql_num_fields(meta);
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    b = calloc(ncol, sizeof *b);
    col = calloc(ncol, sizeof *col);
    len = calloc(ncol, sizeof *len);
    isnull = calloc(ncol, sizeof *isnull);
    if (!b || !col || !len || !isnull) {
        rc = BNB_ENOMEM;
        goto out;
    }
    for (unsigned i = 0; i < ncol; i++) {
        unsigned long cap = fields[i].max_length + 1;
        if (cap < 32)
            cap = 32;
        if (!(col[i] = malloc(cap))) {
            rc = BNB_ENOMEM;
            goto out;
        }
        b[i].buffer_type = MYSQL_TYPE_STRING;
        b[i].buffer = col[i];
        b[i].buffer_length = cap - 1;
        b[i].length = &len[i];
        b[i].is_null = &isnull[i];
    }
    if (mysql_stmt_bind_result(st, b) != 0) {
        rc = st_err(st, broken, true);
        goto out;
    }
    for (;;) {
        int f = mysql_stmt_fetch(st);
        if (f == MYSQL_NO_DATA)
            break;
        if (f == 1) {
            rc = st_err(st, broken, true);
            break;
        }
        if (f == MYSQL_DATA_TRUNCATED) { /* cannot happen: buffers are max_length */
            my_log("fetch", "a column was truncated", 0);
            rc = BNB_EIO;
            break;
        }
        char *vals[64];
        for (unsigned i = 0; i < ncol && i < 64; i++) {
            vals[i] = isnull[i] ? NULL : col[i];
            if (!isnull[i])
                col[i][len[i] < b[i].buffer_length ? len[i] : b[i].buffer_length] = '\0';
        }
        if ((rc = fn(ud, vals, len, ncol)) != 0)
            break;
    }
out:
    mysql_stmt_free_result(st);
    if (meta)
        mysql_free_result(meta);
    for (unsigned i = 0; col && i < ncol; i++)
        free(col[i]);
    free(col);
    free(len);
    free(isnull);
    free(b);
    return rc;
}

/* Prepare (cached), execute, and fetch rows if fn is not NULL. */
static int st_run(my_conn_t *c, const char *sql, const my_val_t *v, unsigned n, row_fn fn, void *ud, bool *broken)
{
    MYSQL_STMT *st;
    int rc = st_get(c, sql, &st, broken);
    if (rc == 0)
        rc = st_exec(st, v, n, broken);
    if (rc == 0 && fn)
        rc = st_rows(st, fn, ud, broken);
    else if (rc == 0)
        mysql_stmt_free_result(st);
    return rc;
}

/* ---- declared collections: names ------------------------------------------ */

/* `<prefix>_c_<coll>` (quoted); MySQL names are at most 64 characters. */
static int tname(const my_store_t *s, const char *coll, char *buf, size_t n)
{
    if (strlen(s->prefix) + 3 + strlen(coll) > 64)
        return BNB_EINVAL;
    snprintf(buf, n, "`%s_c_%s`", s->prefix, coll);
    return 0;
}

static int load_colls(my_store_t *s, MYSQL *m)
{
    sb_t q = {0};
    MYSQL_RES *res = NULL;
    bool broken = false;
    sb_sql(&q, m, s->prefix, "SELECT name, def FROM %Tcolls`");
    int rc = query_rows(m, &q, &res, &broken);
    free(q.p);
    if (rc)
        return public_rc(rc);
    MYSQL_ROW row;
    while (!rc && (row = mysql_fetch_row(res))) {
        bnb__coll_t *dc = row[0] && row[1] ? bnb__coll_load(row[0], row[1]) : NULL;
        if (!dc) {
            my_log("open", "a recorded collection definition is unreadable", 0);
            rc = BNB_EIO;
        } else {
            rc = bnb__colls_put(&s->colls, dc);
        }
    }
    mysql_free_result(res);
    return rc;
}

/* ---- open / close -------------------------------------------------------- */

static int create_schema(MYSQL *m, const char *prefix, char *err, size_t errlen)
{
    static const char *const ddl[] = {
        "CREATE TABLE IF NOT EXISTS %Tdocs` ("
        " coll VARCHAR(64) NOT NULL, id VARCHAR(255) NOT NULL,"
        " version BIGINT NOT NULL, deleted TINYINT(1) NOT NULL DEFAULT 0,"
        " body LONGTEXT NULL, key1 VARCHAR(255) NULL, key2 VARCHAR(255) NULL,"
        " PRIMARY KEY (coll, id), KEY by_key1 (coll, key1), KEY by_key2 (coll, key2)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS %Tapplied` ("
        " coll VARCHAR(64) NOT NULL, id VARCHAR(255) NOT NULL, event_id VARCHAR(255) NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " PRIMARY KEY (coll, id, event_id)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS %Toutbox` ("
        " seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " event_id VARCHAR(255) NOT NULL, topic VARCHAR(255) NOT NULL, `key` TEXT NULL,"
        " payload LONGTEXT NOT NULL, coll VARCHAR(64) NOT NULL, doc_id VARCHAR(255) NOT NULL,"
        " created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " UNIQUE KEY by_event (event_id)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS %Tdead` ("
        " seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " consumer VARCHAR(255) NOT NULL, reason TEXT NOT NULL, event LONGTEXT NOT NULL,"
        " created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS %Tclaims` ("
        " k VARBINARY(255) NOT NULL PRIMARY KEY, coll VARCHAR(64) NOT NULL, id VARBINARY(255) NOT NULL,"
        " KEY by_owner (coll, id)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS %Tcolls` ("
        " name VARCHAR(64) NOT NULL PRIMARY KEY, def TEXT NOT NULL"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    };
    for (size_t i = 0; i < sizeof ddl / sizeof *ddl; i++) {
        sb_t q = {0};
        sb_sql(&q, m, prefix, ddl[i]);
        int rc = run_sb(m, &q, NULL);
        free(q.p);
        if (rc) {
            snprintf(err, errlen, "%s (%u)", rc == BNB_ENOMEM ? "out of memory" : mysql_error(m), mysql_errno(m));
            return BNB_EIO;
        }
    }
    return 0;
}

static int my_open(const bnb_storage_config_t *cfg, bnb_store_t **out, char *errbuf, size_t errlen)
{
    char dummy[1];
    if (!errbuf || !errlen) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    *out = NULL;
    my_store_t *s = NULL;
    MYSQL *m = NULL;
    char shown[512], err[384];
    int rc;

    pthread_once(&my_once, my_lib_init);
    if (my_lib_rc) {
        snprintf(errbuf, errlen, "mysql: library init failed");
        return BNB_EIO;
    }
    const char *name = cfg->name ? cfg->name : "bnb";
    if (!ident_ok(name, MY_PREFIX_MAX)) {
        snprintf(errbuf, errlen, "mysql: store name '%s' must be [A-Za-z0-9_]{1,%d}", name, MY_PREFIX_MAX);
        return BNB_EINVAL;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errbuf, errlen, "mysql: out of memory");
        return BNB_ENOMEM;
    }
    if ((rc = url_parse(cfg->url, &s->url, errbuf, errlen)) != 0) {
        free(s);
        return rc;
    }
    url_show(&s->url, shown, sizeof shown);
    snprintf(s->prefix, sizeof s->prefix, "%s", name);
    s->max = cfg->pool_size > 0 ? cfg->pool_size : MY_DEFAULT_POOL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->define_mu, NULL);
    bnb__colls_init(&s->colls);
    s->base.ops = &bnb_storage_mysql;

    /* Bootstrap: create the database, then the tables. */
    m = my_connect(&s->url, NULL, err, sizeof err);
    if (!m) {
        snprintf(errbuf, errlen, "%s: cannot connect: %s", shown, err);
        rc = BNB_EIO;
        goto fail;
    }
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
             s->url.db);
    if (mysql_query(m, sql) != 0 || mysql_select_db(m, s->url.db) != 0) {
        snprintf(errbuf, errlen, "%s: cannot create/use database: %s (%u)", shown, mysql_error(m), mysql_errno(m));
        rc = BNB_EIO;
        goto fail;
    }
    if (create_schema(m, s->prefix, err, sizeof err) != 0) {
        snprintf(errbuf, errlen, "%s: cannot create tables: %s", shown, err);
        rc = BNB_EIO;
        goto fail;
    }
    if ((rc = load_colls(s, m)) != 0) {
        snprintf(errbuf, errlen, "%s: cannot read the collection definitions of %s", shown, s->prefix);
        goto fail;
    }
    /* Keep the bootstrap connection as the pool's first one. */
    my_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(errbuf, errlen, "mysql: out of memory");
        rc = BNB_ENOMEM;
        goto fail;
    }
    c->m = m;
    c->last_used = time(NULL);
    s->free_list = c;
    s->open_count = 1;
    *out = &s->base;
    return 0;
fail:
    if (m)
        mysql_close(m);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->define_mu);
    bnb__colls_destroy(&s->colls);
    url_free(&s->url);
    free(s);
    return rc;
}

static void my_close(bnb_store_t *st)
{
    my_store_t *s = (my_store_t *)st;
    if (!s)
        return;
    my_conn_t *c = s->free_list;
    while (c) {
        my_conn_t *n = c->next;
        conn_close(c);
        free(c);
        c = n;
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->define_mu);
    bnb__colls_destroy(&s->colls);
    url_free(&s->url);
    free(s);
}

static int my_ping(bnb_store_t *st)
{
    my_store_t *s = (my_store_t *)st;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    rc = run_str(c->m, "SELECT 1", &broken);
    if (!rc) {
        MYSQL_RES *r = mysql_store_result(c->m);
        if (r)
            mysql_free_result(r);
        else
            rc = my_err(c->m, &broken);
    }
    release(s, c, broken);
    return public_rc(rc);
}

/* ---- reads --------------------------------------------------------------- */

static int64_t to_i64(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

/* Rows as [{"id","version","body"}] (columns id, version, body). */
static int collect_item(void *ud, char **col, unsigned long *len, unsigned ncol)
{
    (void)len;
    json_t *arr = ud;
    json_error_t jerr;
    if (ncol < 3 || !col[0] || !col[2])
        return BNB_EIO;
    json_t *b = json_loads(col[2], 0, &jerr);
    if (!b) {
        my_log("read", "stored body is not JSON", 0);
        return BNB_EIO;
    }
    json_t *item = json_pack("{s:s, s:I, s:o}", "id", col[0], "version", (json_int_t)to_i64(col[1]), "body", b);
    if (!item || json_array_append_new(arr, item))
        return BNB_ENOMEM;
    return 0;
}

static int my_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    my_store_t *s = (my_store_t *)st;
    if (body)
        *body = NULL;
    if (!coll || !id)
        return BNB_EINVAL;
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    char t[80];
    if (dc && tname(s, dc->name, t, sizeof t) != 0)
        return BNB_EINVAL;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    json_t *arr = json_array();
    char sql[200];
    if (!arr) {
        rc = BNB_ENOMEM;
    } else if (dc) {
        snprintf(sql, sizeof sql, "SELECT id, version, body FROM %s WHERE id = ?", t);
        my_val_t v[] = {v_str(id)};
        rc = st_run(c, sql, v, 1, collect_item, arr, &broken);
    } else {
        snprintf(sql, sizeof sql, "SELECT id, version, body FROM `%s_docs` WHERE coll = ? AND id = ? AND deleted = 0",
                 s->prefix);
        my_val_t v[] = {v_str(coll), v_str(id)};
        rc = st_run(c, sql, v, 2, collect_item, arr, &broken);
    }
    if (rc == 0 && json_array_size(arr) == 0)
        rc = BNB_ENOENT;
    if (rc == 0) {
        json_t *it = json_array_get(arr, 0);
        if (body)
            *body = json_incref(json_object_get(it, "body"));
        if (version)
            *version = (int64_t)json_integer_value(json_object_get(it, "version"));
    }
    json_decref(arr);
    release(s, c, broken);
    return public_rc(rc);
}

/* get_many: one statement per MY_MANY ids, `id IN (?, ...)` on the primary
 * key (EXPLAIN: type=range key=PRIMARY, one index range per id; FORCE INDEX,
 * as a small table would otherwise be scanned), the list
 * padded (by repeating its first id) to a power of two so that a connection
 * caches at most log2(MY_MANY) + 1 shapes per table. */
#define MY_MANY 32

static void sb_addf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Rows into the object `ud` by id. */
static int collect_by_id(void *ud, char **col, unsigned long *len, unsigned ncol)
{
    json_t *arr = json_array();
    if (!arr)
        return BNB_ENOMEM;
    int rc = collect_item(arr, col, len, ncol);
    if (rc == 0 && json_object_set(ud, col[0], json_array_get(arr, 0)) != 0)
        rc = BNB_ENOMEM;
    json_decref(arr);
    return rc;
}

/* The statement of the first min(n, MY_MANY) ids (v: its parameters). */
static int many_sql(const my_store_t *s, const bnb__coll_t *dc, const char *coll, const char *const *ids, size_t n,
                    sb_t *sql, my_val_t *v, unsigned *nv)
{
    char t[80];
    size_t k = n < MY_MANY ? n : MY_MANY, pad = 1;
    while (pad < k)
        pad *= 2;
    *nv = 0;
    if (dc) {
        if (tname(s, dc->name, t, sizeof t) != 0)
            return BNB_EINVAL;
        sb_addf(sql, "SELECT id, version, body FROM %s FORCE INDEX (PRIMARY) WHERE id IN (", t);
    } else {
        sb_addf(
            sql,
            "SELECT id, version, body FROM `%s_docs` FORCE INDEX (PRIMARY) WHERE coll = ? AND deleted = 0 AND id IN (",
            s->prefix);
        v[(*nv)++] = v_str(coll);
    }
    for (size_t i = 0; i < pad; i++) {
        sb_addf(sql, i ? ", ?" : "?");
        v[(*nv)++] = v_str(ids[i < k ? i : 0]);
    }
    sb_addf(sql, ")");
    return sql->oom ? BNB_ENOMEM : 0;
}

/* For tests: MariaDB's EXPLAIN of get_many's first statement for ids, as
 * bnb__mysql_explain. */
int bnb__mysql_explain_many(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, char **plan);
static int explain_row(void *ud, char **col, unsigned long *len, unsigned ncol);
static int explain_run(my_store_t *s, sb_t *sql, my_val_t *v, unsigned nv, char **plan);

int bnb__mysql_explain_many(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, char **plan)
{
    my_store_t *s = (my_store_t *)st;
    sb_t sql = {0};
    my_val_t v[MY_MANY + 1];
    unsigned nv = 0;
    *plan = NULL;
    if (n == 0)
        return BNB_EINVAL;
    sb_add(&sql, "EXPLAIN ", 8);
    int rc = many_sql(s, bnb__colls_get(&s->colls, coll), coll, ids, n, &sql, v, &nv);
    if (rc == 0)
        return public_rc(explain_run(s, &sql, v, nv, plan));
    free(sql.p);
    return public_rc(rc);
}

static int my_get_many(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, json_t **items)
{
    my_store_t *s = (my_store_t *)st;
    int rc = bnb__get_many_check(coll, ids, n, items);
    if (rc != 0 || !s)
        return rc ? rc : BNB_EINVAL;
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    json_t *found = json_object(), *arr = json_array();
    my_conn_t *c = NULL;
    bool broken = false;
    if (!found || !arr) {
        rc = BNB_ENOMEM;
        goto out;
    }
    if ((rc = acquire(s, &c)) != 0)
        goto out;
    for (size_t at = 0; at < n && rc == 0; at += MY_MANY) {
        my_val_t v[MY_MANY + 1];
        unsigned nv = 0;
        sb_t sql = {0};
        rc = many_sql(s, dc, coll, ids + at, n - at, &sql, v, &nv);
        if (rc == 0)
            rc = st_run(c, sql.p, v, nv, collect_by_id, found, &broken);
        free(sql.p);
    }
    release(s, c, broken);
    if (rc == 0)
        rc = bnb__get_many_order(found, ids, n, arr);
out:
    json_decref(found);
    if (rc) {
        json_decref(arr);
        return public_rc(rc);
    }
    *items = arr;
    return 0;
}

static int my_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    my_store_t *s = (my_store_t *)st;
    *out = NULL;
    if (!coll || which < 0 || which > 2 || (which && !value))
        return BNB_EINVAL;
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    char t[80], sql[256];
    if (dc && tname(s, dc->name, t, sizeof t) != 0)
        return BNB_EINVAL;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    json_t *arr = json_array();
    my_val_t v[2];
    unsigned n = 0;
    const char *key = which == 1 ? " AND key1 = ?" : which == 2 ? " AND key2 = ?" : "";
    if (dc) {
        snprintf(sql, sizeof sql, "SELECT id, version, body FROM %s WHERE 1 = 1%s ORDER BY id", t, key);
    } else {
        snprintf(sql, sizeof sql,
                 "SELECT id, version, body FROM `%s_docs` WHERE coll = ? AND deleted = 0%s ORDER BY id", s->prefix,
                 key);
        v[n++] = v_str(coll);
    }
    if (which)
        v[n++] = v_str(value);
    rc = arr ? st_run(c, sql, v, n, collect_item, arr, &broken) : BNB_ENOMEM;
    release(s, c, broken);
    if (rc) {
        json_decref(arr);
        return public_rc(rc);
    }
    *out = arr;
    return 0;
}

/* ---- define ---------------------------------------------------------------- */

/* The SQL expression of declared field i read from the JSON body. */
static void sb_extract(sb_t *b, const bnb__coll_t *dc, size_t i)
{
    char e[256];
    const char *f = dc->fields[i].name;
    if (dc->fields[i].type == BNB_FIELD_STR)
        snprintf(e, sizeof e,
                 "IF(JSON_TYPE(JSON_EXTRACT(body, '$.%s')) = 'STRING' AND LENGTH(JSON_VALUE(body, '$.%s')) <= %d,"
                 " JSON_VALUE(body, '$.%s'), NULL)",
                 f, f, BNB__STR_MAX, f);
    else
        snprintf(e, sizeof e,
                 "IF(JSON_TYPE(JSON_EXTRACT(body, '$.%s')) = 'INTEGER', CAST(JSON_EXTRACT(body, '$.%s') AS SIGNED),"
                 " NULL)",
                 f, f);
    sb_add(b, e, strlen(e));
}

static void sb_addf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_addf(sb_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->oom = true;
        return;
    }
    sb_add(b, tmp, (size_t)n);
}

static int ddl(MYSQL *m, sb_t *q, bool *broken)
{
    int rc = run_sb(m, q, broken);
    q->len = 0;
    if (q->p)
        q->p[0] = '\0';
    return rc;
}

/* Column name -> SQL type of the existing table, for ADD COLUMN decisions. */
typedef struct colinfo {
    char names[BNB__FIELDS_MAX + 8][BNB__FIELD_NAME_MAX + 4];
    char types[BNB__FIELDS_MAX + 8][32];
    int n;
} colinfo_t;

static int apply_coll(my_store_t *s, MYSQL *m, const bnb__coll_t *dc, bool *broken)
{
    char t[80];
    sb_t q = {0};
    MYSQL_RES *res = NULL;
    int rc;
    if ((rc = tname(s, dc->name, t, sizeof t)) != 0) {
        my_log("define", "collection name too long for a table name (store name + collection > 61)", 0);
        return rc;
    }
    /* does the table exist? */
    sb_sql(&q, m, s->prefix,
           "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
           " AND TABLE_NAME = ");
    {
        char raw[80];
        snprintf(raw, sizeof raw, "%s_c_%s", s->prefix, dc->name);
        sb_sql(&q, m, s->prefix, "%s", raw);
    }
    if ((rc = query_rows(m, &q, &res, broken)) != 0)
        goto out;
    MYSQL_ROW row = mysql_fetch_row(res);
    bool exists = row && to_i64(row[0]) > 0;
    mysql_free_result(res);
    res = NULL;
    q.len = 0;

    if (!exists) {
        sb_addf(&q,
                "CREATE TABLE IF NOT EXISTS %s (id VARBINARY(255) NOT NULL PRIMARY KEY, version BIGINT NOT NULL,"
                " body LONGTEXT NOT NULL, key1 VARCHAR(255) NULL, key2 VARCHAR(255) NULL",
                t);
        for (size_t i = 0; i < dc->nfields; i++)
            sb_addf(&q, ", `f_%s` %s NULL", dc->fields[i].name,
                    dc->fields[i].type == BNB_FIELD_STR ? "VARBINARY(255)" : "BIGINT");
        sb_addf(&q, ", KEY by_key1 (key1), KEY by_key2 (key2)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 "
                    "COLLATE=utf8mb4_bin");
        if ((rc = ddl(m, &q, broken)) != 0)
            goto out;
        /* its live documents so far were in docs: move them (IGNORE: another
         * process may be doing the same) */
        sb_addf(&q, "INSERT IGNORE INTO %s (id, version, body, key1, key2", t);
        for (size_t i = 0; i < dc->nfields; i++)
            sb_addf(&q, ", `f_%s`", dc->fields[i].name);
        sb_addf(&q, ") SELECT id, version, body, key1, key2");
        for (size_t i = 0; i < dc->nfields; i++) {
            sb_add(&q, ", ", 2);
            sb_extract(&q, dc, i);
        }
        sb_sql(&q, m, s->prefix, " FROM %Tdocs` WHERE coll = %s AND deleted = 0", dc->name);
        if ((rc = ddl(m, &q, broken)) != 0)
            goto out;
        sb_sql(&q, m, s->prefix, "DELETE FROM %Tdocs` WHERE coll = %s", dc->name);
        if ((rc = ddl(m, &q, broken)) != 0)
            goto out;
    } else {
        colinfo_t ci = {0};
        sb_addf(&q, "SHOW COLUMNS FROM %s", t);
        if ((rc = query_rows(m, &q, &res, broken)) != 0)
            goto out;
        q.len = 0;
        while ((row = mysql_fetch_row(res)) && ci.n < (int)(sizeof ci.names / sizeof ci.names[0])) {
            if (!row[0] || strncmp(row[0], "f_", 2) != 0)
                continue;
            snprintf(ci.names[ci.n], sizeof ci.names[0], "%s", row[0] + 2);
            snprintf(ci.types[ci.n], sizeof ci.types[0], "%s", row[1] ? row[1] : "");
            ci.n++;
        }
        mysql_free_result(res);
        res = NULL;
        for (size_t i = 0; i < dc->nfields; i++) {
            const char *want = dc->fields[i].type == BNB_FIELD_STR ? "varbinary" : "bigint";
            int at = -1;
            for (int k = 0; k < ci.n && at < 0; k++)
                if (strcmp(ci.names[k], dc->fields[i].name) == 0)
                    at = k;
            if (at >= 0) {
                if (strncasecmp(ci.types[at], want, strlen(want)) != 0) {
                    char msg[200];
                    snprintf(msg, sizeof msg, "collection %s: field %s is %s in the database, not %s", dc->name,
                             dc->fields[i].name, ci.types[at], want);
                    my_log("define", msg, 0);
                    rc = BNB_EINVAL;
                    goto out;
                }
                continue;
            }
            sb_addf(&q, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS `f_%s` %s NULL", t, dc->fields[i].name,
                    dc->fields[i].type == BNB_FIELD_STR ? "VARBINARY(255)" : "BIGINT");
            if ((rc = ddl(m, &q, broken)) != 0)
                goto out;
            sb_addf(&q, "UPDATE %s SET `f_%s` = ", t, dc->fields[i].name);
            sb_extract(&q, dc, i);
            if ((rc = ddl(m, &q, broken)) != 0)
                goto out;
        }
    }
    for (size_t i = 0; i < dc->nindexes; i++) {
        const bnb__index_t *x = &dc->indexes[i];
        sb_addf(&q, "CREATE %sINDEX IF NOT EXISTS `%s` ON %s (", x->unique ? "UNIQUE " : "", x->name, t);
        for (int k = 0; k < x->nf; k++)
            sb_addf(&q, "%s`f_%s`", k ? ", " : "", dc->fields[x->f[k]].name);
        sb_addf(&q, "%s)", x->unique ? "" : ", id");
        if ((rc = ddl(m, &q, broken)) != 0) {
            if (rc == MY_DUP)
                my_log("define", "the stored documents break a unique index", 0);
            rc = rc == MY_DUP ? BNB_EINVAL : rc;
            goto out;
        }
    }
    {
        char *def = bnb__coll_dump(dc);
        if (!def) {
            rc = BNB_ENOMEM;
            goto out;
        }
        sb_sql(&q, m, s->prefix, "REPLACE INTO %Tcolls` (name, def) VALUES (%s, %s)", dc->name, def);
        free(def);
        rc = ddl(m, &q, broken);
    }
out:
    if (res)
        mysql_free_result(res);
    free(q.p);
    return rc;
}

static int my_define(bnb_store_t *st, const bnb_coll_def_t *defs, size_t n)
{
    my_store_t *s = (my_store_t *)st;
    bnb__coll_t **merged = NULL;
    char err[256];
    int rc;
    if (!s)
        return BNB_EINVAL;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&s->define_mu);
    if ((rc = bnb__define_merge(&s->colls, defs, n, &merged, NULL, err, sizeof err)) == BNB_EINVAL)
        my_log("define", err, 0);
    my_conn_t *c = NULL;
    bool broken = false;
    if (!rc && (rc = acquire(s, &c)) == 0) {
        /* DDL commits by itself: each collection is applied on its own */
        for (size_t i = 0; i < n && !rc; i++)
            rc = apply_coll(s, c->m, merged[i], &broken);
        stc_clear(c); /* statements on changed tables are prepared again */
        release(s, c, broken);
    }
    if (!rc)
        rc = bnb__define_register(&s->colls, merged, n);
    pthread_mutex_unlock(&s->define_mu);
    bnb__define_free(merged, NULL, n);
    return public_rc(rc);
}

/* ---- queries --------------------------------------------------------------- */

/* The SQL of a checked query and its parameters (in v, at most MY_MAX_PARAMS).
 * The keyset condition is written as (o > ? OR (o = ? AND id > ?)), which
 * MariaDB's range optimizer turns into index ranges (a row comparison it
 * would only filter). */
static int query_sql(const my_store_t *s, const bnb__plan_t *p, sb_t *b, my_val_t *v, unsigned *nv)
{
    const bnb__coll_t *dc = p->coll;
    const bnb_query_t *q = p->q;
    static const char *const ops[] = {"", "=", "<", "<=", ">", ">="};
    const char *dir = q->descending ? "DESC" : "ASC", *cmp = q->descending ? "<" : ">";
    char t[80];
    unsigned n = 0;
    if (tname(s, dc->name, t, sizeof t) != 0)
        return BNB_EINVAL;
    sb_addf(b, "SELECT id, version, body FROM %s", t);
    /* MariaDB may prefer a scan and a sort when the table is small or the
     * condition matches much of it; the index that serves the page is known */
    int ix = bnb__plan_index(p);
    if (ix >= 0)
        sb_addf(b, " FORCE INDEX (`%s`)", dc->indexes[ix].name);
    const char *glue = " WHERE ";
    for (size_t i = 0; i < q->nconds; i++) {
        if (bnb__plan_implied(p, i))
            continue;
        sb_addf(b, "%s`f_%s` %s ?", glue, dc->fields[p->cf[i]].name, ops[q->conds[i].op]);
        v[n++] = q->conds[i].str ? v_str(q->conds[i].str) : v_i64(q->conds[i].num);
        glue = " AND ";
    }
    if (p->order >= 0) {
        const char *o = dc->fields[p->order].name;
        sb_addf(b, "%s`f_%s` IS NOT NULL", glue, o);
        if (p->has_cursor) {
            sb_addf(b, " AND (`f_%s` %s ? OR (`f_%s` = ? AND id %s ?))", o, cmp, o, cmp);
            v[n++] = v_fval(&p->cur_ord);
            v[n++] = v_fval(&p->cur_ord);
            v[n++] = v_str(p->cur_id);
        }
        sb_addf(b, " ORDER BY `f_%s` %s, id %s", o, dir, dir);
    } else {
        if (p->has_cursor) {
            sb_addf(b, "%sid %s ?", glue, cmp);
            v[n++] = v_str(p->cur_id);
        }
        sb_addf(b, " ORDER BY id %s", dir);
    }
    sb_addf(b, " LIMIT ?");
    v[n++] = v_i64((int64_t)q->limit + 1);
    *nv = n;
    return b->oom ? BNB_ENOMEM : 0;
}

static int my_query(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next)
{
    my_store_t *s = (my_store_t *)st;
    bnb__plan_t p;
    sb_t sql = {0};
    my_val_t v[MY_MAX_PARAMS];
    unsigned nv = 0;
    json_t *arr = NULL;
    int rc;
    if (items)
        *items = NULL;
    if (next)
        *next = NULL;
    if (!s || !q || !items || !next)
        return BNB_EINVAL;
    if ((rc = bnb__plan_make(bnb__colls_get(&s->colls, q->coll), q, &p)) != 0)
        return rc;
    if ((rc = query_sql(s, &p, &sql, v, &nv)) != 0 || !(arr = json_array())) {
        rc = rc ? rc : BNB_ENOMEM;
        goto out;
    }
    my_conn_t *c;
    if ((rc = acquire(s, &c)) != 0)
        goto out;
    bool broken = false;
    rc = st_run(c, sql.p, v, nv, collect_item, arr, &broken);
    release(s, c, broken);
    if (rc == 0 && json_array_size(arr) > q->limit) {
        json_array_remove(arr, q->limit);
        if (!(*next = bnb__cursor_after(&p, json_array_get(arr, q->limit - 1))))
            rc = BNB_ENOMEM;
    }
out:
    free(sql.p);
    bnb__plan_free(&p);
    if (rc) {
        json_decref(arr);
        return public_rc(rc);
    }
    *items = arr;
    return 0;
}

/* For tests: MariaDB's EXPLAIN of query q, one line per table:
 * "type=<access> key=<index> extra=<Extra>". *plan is malloc'ed. */
int bnb__mysql_explain(bnb_store_t *st, const bnb_query_t *q, char **plan);

static int explain_row(void *ud, char **col, unsigned long *len, unsigned ncol)
{
    (void)len;
    sb_t *out = ud;
    /* id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra */
    if (ncol >= 10)
        sb_addf(out, "type=%s key=%s extra=%s\n", col[3] ? col[3] : "NULL", col[5] ? col[5] : "NULL",
                col[9] ? col[9] : "");
    return 0;
}

/* Run the EXPLAIN in sql (built with its parameters v) and give its rows as
 * text in *plan; frees sql. */
static int explain_run(my_store_t *s, sb_t *sql, my_val_t *v, unsigned nv, char **plan)
{
    sb_t out = {0};
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc == 0) {
        bool broken = false;
        MYSQL_STMT *stm = mysql_stmt_init(c->m);
        if (!stm)
            rc = BNB_ENOMEM;
        else if (mysql_stmt_prepare(stm, sql->p, (unsigned long)sql->len) != 0)
            rc = st_err(stm, &broken, true);
        else if ((rc = st_exec(stm, v, nv, &broken)) == 0)
            rc = st_rows(stm, explain_row, &out, &broken);
        if (stm)
            mysql_stmt_close(stm);
        release(s, c, broken);
    }
    if (rc == 0 && !out.oom && out.p) {
        *plan = out.p;
        out.p = NULL;
    } else if (rc == 0) {
        rc = BNB_ENOMEM;
    }
    free(out.p);
    free(sql->p);
    sql->p = NULL;
    return rc;
}

int bnb__mysql_explain(bnb_store_t *st, const bnb_query_t *q, char **plan)
{
    my_store_t *s = (my_store_t *)st;
    bnb__plan_t p;
    sb_t sql = {0};
    my_val_t v[MY_MAX_PARAMS];
    unsigned nv = 0;
    *plan = NULL;
    int rc = bnb__plan_make(bnb__colls_get(&s->colls, q->coll), q, &p);
    if (rc)
        return rc;
    sb_add(&sql, "EXPLAIN ", 8);
    if ((rc = query_sql(s, &p, &sql, v, &nv)) == 0)
        rc = explain_run(s, &sql, v, nv, plan);
    free(sql.p);
    bnb__plan_free(&p);
    return public_rc(rc);
}

/* ---- commit -------------------------------------------------------------- */

/* One commit, from commit (keys given) or commit2 (claims). */
typedef struct my_w {
    const bnb_commit_t *c;
    const char *key1, *key2;
    bool set_keys;
    const char *body_txt;
    const bnb__coll_t *dc;
    const char **claims; /* normalised */
    size_t nclaims;
} my_w_t;

static int first_row(void *ud, char **col, unsigned long *len, unsigned ncol)
{
    (void)len;
    char **out = ud; /* [0] version, [1] deleted */
    if (out[0])
        return 0;
    for (unsigned i = 0; i < ncol && i < 2; i++)
        if (!(out[i] = strdup(col[i] ? col[i] : "0")))
            return BNB_ENOMEM;
    return 0;
}

typedef struct strv {
    char **v;
    size_t n, cap;
} strv_t;

static int collect_str(void *ud, char **col, unsigned long *len, unsigned ncol)
{
    (void)len;
    strv_t *sv = ud;
    if (ncol < 1 || !col[0])
        return 0;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        char **nv = realloc(sv->v, cap * sizeof *nv);
        if (!nv)
            return BNB_ENOMEM;
        sv->v = nv;
        sv->cap = cap;
    }
    if (!(sv->v[sv->n] = strdup(col[0])))
        return BNB_ENOMEM;
    sv->n++;
    return 0;
}

static void strv_free(strv_t *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Claims of the committing document inside its transaction. */
static int claims_apply(my_store_t *s, my_conn_t *c, const my_w_t *w, bool *broken)
{
    const bnb_commit_t *cm = w->c;
    char sql[200];
    int rc;
    if (cm->op == BNB_WRITE_DELETE) {
        snprintf(sql, sizeof sql, "DELETE FROM `%s_claims` WHERE coll = ? AND id = ?", s->prefix);
        my_val_t v[] = {v_str(cm->coll), v_str(cm->id)};
        return st_run(c, sql, v, 2, NULL, NULL, broken);
    }
    if (!cm->set_claims)
        return 0;
    strv_t cur = {0};
    snprintf(sql, sizeof sql, "SELECT k FROM `%s_claims` WHERE coll = ? AND id = ? FOR UPDATE", s->prefix);
    {
        my_val_t v[] = {v_str(cm->coll), v_str(cm->id)};
        if ((rc = st_run(c, sql, v, 2, collect_str, &cur, broken)) != 0)
            goto out;
    }
    if (cur.n > 1)
        qsort(cur.v, cur.n, sizeof *cur.v, cmp_cstr);
    /* take the new ones (in key order, so two commits lock them alike) */
    snprintf(sql, sizeof sql, "INSERT INTO `%s_claims` (k, coll, id) VALUES (?, ?, ?)", s->prefix);
    for (size_t i = 0; i < w->nclaims && !rc; i++) {
        if (bnb__claims_has((const char *const *)cur.v, cur.n, w->claims[i]))
            continue;
        my_val_t v[] = {v_str(w->claims[i]), v_str(cm->coll), v_str(cm->id)};
        rc = st_run(c, sql, v, 3, NULL, NULL, broken);
        if (rc == MY_DUP)
            rc = BNB_ETAKEN; /* held by another document */
    }
    snprintf(sql, sizeof sql, "DELETE FROM `%s_claims` WHERE k = ?", s->prefix);
    for (size_t i = 0; i < cur.n && !rc; i++) {
        if (bnb__claims_has(w->claims, w->nclaims, cur.v[i]))
            continue;
        my_val_t v[] = {v_str(cur.v[i])};
        rc = st_run(c, sql, v, 1, NULL, NULL, broken);
    }
out:
    strv_free(&cur);
    return rc;
}

/* One attempt of the commit transaction. Returns 0, BNB_E*, or MY_RETRY. */
static int commit_once(my_store_t *s, my_conn_t *c, const my_w_t *w, const bnb_outbox_new_t *events, size_t nevents,
                       int64_t *newv, bool *broken)
{
    const bnb_commit_t *cm = w->c;
    const bnb__coll_t *dc = w->dc;
    char t[80], sql[256];
    char *row[2] = {NULL, NULL};
    sb_t q = {0};
    int rc = run_str(c->m, "START TRANSACTION", broken);
    if (rc)
        return rc;
    if (dc)
        tname(s, dc->name, t, sizeof t);

    /* Lock the document row (if any). */
    if (dc) {
        snprintf(sql, sizeof sql, "SELECT version, 0 FROM %s WHERE id = ? FOR UPDATE", t);
        my_val_t v[] = {v_str(cm->id)};
        rc = st_run(c, sql, v, 1, first_row, row, broken);
    } else {
        snprintf(sql, sizeof sql, "SELECT version, deleted FROM `%s_docs` WHERE coll = ? AND id = ? FOR UPDATE",
                 s->prefix);
        my_val_t v[] = {v_str(cm->coll), v_str(cm->id)};
        rc = st_run(c, sql, v, 2, first_row, row, broken);
    }
    if (rc)
        goto fail;
    bool present = row[0] != NULL;
    int64_t cur = present ? to_i64(row[0]) : 0;
    bool live = present && to_i64(row[1]) == 0;

    /* Applied mark first: a redelivered event is EALREADY whatever the version. */
    if (cm->applied_event_id) {
        snprintf(sql, sizeof sql, "INSERT INTO `%s_applied` (coll, id, event_id) VALUES (?, ?, ?)", s->prefix);
        my_val_t v[] = {v_str(cm->coll), v_str(cm->id), v_str(cm->applied_event_id)};
        if ((rc = st_run(c, sql, v, 3, NULL, NULL, broken)) != 0) {
            if (rc == MY_DUP)
                rc = BNB_EALREADY;
            goto fail;
        }
    }

    if (cm->expect_version == 0) {
        if (live) {
            rc = BNB_EEXIST;
            goto fail;
        }
        if (cm->op != BNB_WRITE_PUT) {
            rc = BNB_ENOENT;
            goto fail;
        }
    } else {
        if (!live && (cm->expect_version > 0 || cm->op != BNB_WRITE_PUT)) {
            rc = BNB_ENOENT;
            goto fail;
        }
        if (cm->expect_version > 0 && cur != cm->expect_version) {
            rc = BNB_EEXIST;
            goto fail;
        }
    }
    /* docs keeps tombstones (versions go on across a delete); a declared
     * table removes the row (a re-created document starts at 1 again) */
    int64_t v = cur + 1;

    my_val_t val[MY_MAX_PARAMS];
    unsigned n = 0;
    if (dc) {
        switch (cm->op) {
        case BNB_WRITE_PUT:
            if (present) {
                sb_addf(&q, "UPDATE %s SET version = ?, body = ?", t);
                val[n++] = v_i64(v);
                val[n++] = v_str(w->body_txt);
                if (w->set_keys) {
                    sb_addf(&q, ", key1 = ?, key2 = ?");
                    val[n++] = v_str(w->key1);
                    val[n++] = v_str(w->key2);
                }
                for (size_t i = 0; i < dc->nfields; i++) {
                    bnb__fval_t f;
                    bnb__coll_value(dc, i, cm->body, &f);
                    sb_addf(&q, ", `f_%s` = ?", dc->fields[i].name);
                    val[n++] = v_fval(&f);
                }
                sb_addf(&q, " WHERE id = ?");
                val[n++] = v_str(cm->id);
            } else {
                sb_addf(&q, "INSERT INTO %s (id, version, body, key1, key2", t);
                val[n++] = v_str(cm->id);
                val[n++] = v_i64(v);
                val[n++] = v_str(w->body_txt);
                val[n++] = v_str(w->set_keys ? w->key1 : NULL);
                val[n++] = v_str(w->set_keys ? w->key2 : NULL);
                for (size_t i = 0; i < dc->nfields; i++) {
                    bnb__fval_t f;
                    bnb__coll_value(dc, i, cm->body, &f);
                    sb_addf(&q, ", `f_%s`", dc->fields[i].name);
                    val[n++] = v_fval(&f);
                }
                sb_addf(&q, ") VALUES (?, ?, ?, ?, ?");
                for (size_t i = 0; i < dc->nfields; i++)
                    sb_addf(&q, ", ?");
                sb_addf(&q, ")");
            }
            break;
        case BNB_WRITE_DELETE:
            sb_addf(&q, "DELETE FROM %s WHERE id = ?", t);
            val[n++] = v_str(cm->id);
            break;
        default:
            sb_addf(&q, "UPDATE %s SET version = ? WHERE id = ?", t);
            val[n++] = v_i64(v);
            val[n++] = v_str(cm->id);
            break;
        }
    } else {
        switch (cm->op) {
        case BNB_WRITE_PUT:
            if (present) {
                sb_addf(&q, "UPDATE `%s_docs` SET version = ?, deleted = 0, body = ?%s WHERE coll = ? AND id = ?",
                        s->prefix, w->set_keys ? ", key1 = ?, key2 = ?" : "");
                val[n++] = v_i64(v);
                val[n++] = v_str(w->body_txt);
                if (w->set_keys) {
                    val[n++] = v_str(w->key1);
                    val[n++] = v_str(w->key2);
                }
            } else {
                sb_addf(
                    &q,
                    "INSERT INTO `%s_docs` (version, body, key1, key2, deleted, coll, id) VALUES (?, ?, ?, ?, 0, ?, "
                    "?)",
                    s->prefix);
                val[n++] = v_i64(v);
                val[n++] = v_str(w->body_txt);
                val[n++] = v_str(w->set_keys ? w->key1 : NULL);
                val[n++] = v_str(w->set_keys ? w->key2 : NULL);
            }
            break;
        case BNB_WRITE_DELETE:
            sb_addf(&q,
                    "UPDATE `%s_docs` SET version = ?, deleted = 1, body = NULL, key1 = NULL, key2 = NULL"
                    " WHERE coll = ? AND id = ?",
                    s->prefix);
            val[n++] = v_i64(v);
            break;
        default:
            sb_addf(&q, "UPDATE `%s_docs` SET version = ? WHERE coll = ? AND id = ?", s->prefix);
            val[n++] = v_i64(v);
            break;
        }
        val[n++] = v_str(cm->coll);
        val[n++] = v_str(cm->id);
    }
    if (q.oom) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    if ((rc = st_run(c, q.p, val, n, NULL, NULL, broken)) != 0) {
        if (rc == MY_DUP) /* lost a create race: start over, we will see the row */
            rc = MY_RETRY;
        goto fail;
    }

    if ((rc = claims_apply(s, c, w, broken)) != 0)
        goto fail;

    snprintf(sql, sizeof sql,
             "INSERT INTO `%s_outbox` (event_id, topic, `key`, payload, coll, doc_id) VALUES (?, ?, ?, ?, ?, ?)",
             s->prefix);
    for (size_t i = 0; i < nevents; i++) {
        my_val_t ev[] = {v_str(events[i].event_id), v_str(events[i].topic), v_str(events[i].key),
                         v_str(events[i].payload),  v_str(cm->coll),        v_str(cm->id)};
        if ((rc = st_run(c, sql, ev, 6, NULL, NULL, broken)) != 0) {
            if (rc == MY_DUP || rc == BNB_ETAKEN) /* same event id queued twice */
                rc = BNB_EINVAL;
            goto fail;
        }
    }
    free(q.p);
    q.p = NULL;
    if ((rc = run_str(c->m, "COMMIT", broken)) != 0)
        goto fail;
    *newv = dc && cm->op == BNB_WRITE_DELETE ? 0 : v;
    free(row[0]);
    free(row[1]);
    return 0;
fail:
    free(q.p);
    free(row[0]);
    free(row[1]);
    if (!*broken && mysql_query(c->m, "ROLLBACK") != 0)
        *broken = true;
    return rc;
}

static int commit_any(my_store_t *s, my_w_t *w, const bnb_outbox_new_t *events, size_t nevents, int64_t *new_version)
{
    const bnb_commit_t *cm = w->c;
    int rc = bnb__commit_check(cm, events, nevents);
    if (rc)
        return rc;
    w->dc = bnb__colls_get(&s->colls, cm->coll);
    char t[80];
    if (w->dc && tname(s, w->dc->name, t, sizeof t) != 0)
        return BNB_EINVAL;
    if ((rc = bnb__commit_prepare(w->dc, cm, &w->claims, &w->nclaims)) != 0) {
        free(w->claims);
        return rc;
    }
    char *body_txt = NULL;
    if (cm->op == BNB_WRITE_PUT && !(body_txt = json_dumps(cm->body, JSON_COMPACT))) {
        free(w->claims);
        return BNB_ENOMEM;
    }
    w->body_txt = body_txt;
    my_conn_t *c;
    if ((rc = acquire(s, &c)) != 0) {
        free(body_txt);
        free(w->claims);
        return rc;
    }
    bool broken = false;
    int64_t v = 0;
    for (int attempt = 0; attempt < MY_RETRIES; attempt++) {
        rc = commit_once(s, c, w, events, nevents, &v, &broken);
        if (rc != MY_RETRY || broken)
            break;
        /* back off a little, with jitter, before the next attempt */
        usleep((useconds_t)(1000 * (1 << attempt) + (unsigned)rand() % 1000));
    }
    if (rc == MY_RETRY || rc == MY_DUP)
        my_log("commit", "deadlock / lock wait timeout / insert race persisted after retries", (unsigned)MY_RETRIES);
    release(s, c, broken);
    free(body_txt);
    free(w->claims);
    if (rc == 0 && new_version)
        *new_version = v;
    return public_rc(rc);
}

/* ABI 1.0 commit: commit2 without claims that also sets key1/key2. */
static int my_commit(bnb_store_t *st, const bnb_write_t *wr, const bnb_outbox_new_t *events, size_t nevents,
                     const char *applied_event_id, int64_t *new_version)
{
    if (!wr)
        return BNB_EINVAL;
    bnb_commit_t cm;
    bnb__commit_from_write(&cm, wr, applied_event_id);
    my_w_t w = {.c = &cm, .key1 = wr->key1, .key2 = wr->key2, .set_keys = true};
    return commit_any((my_store_t *)st, &w, events, nevents, new_version);
}

static int my_commit2(bnb_store_t *st, const bnb_commit_t *cm, const bnb_outbox_new_t *events, size_t nevents,
                      int64_t *new_version)
{
    my_w_t w = {.c = cm};
    return commit_any((my_store_t *)st, &w, events, nevents, new_version);
}

/* ---- outbox -------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int my_outbox_fetch(bnb_store_t *st, size_t max, bnb_outbox_entry_t **out, size_t *n)
{
    my_store_t *s = (my_store_t *)st;
    *out = NULL;
    *n = 0;
    if (max == 0)
        return 0;
    if (max > 100000)
        max = 100000;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    MYSQL_RES *res = NULL;
    bnb_outbox_entry_t *e = NULL;
    size_t k = 0;
    sb_t q = {0};
    sb_sql(&q, c->m, s->prefix, "SELECT event_id, topic, `key`, payload FROM %Toutbox` ORDER BY seq LIMIT %l",
           (int64_t)max);
    if ((rc = query_rows(c->m, &q, &res, &broken)) != 0)
        goto out;
    size_t rows = (size_t)mysql_num_rows(res);
    if (rows) {
        e = calloc(rows, sizeof *e);
        if (!e) {
            rc = BNB_ENOMEM;
            goto out;
        }
    }
    MYSQL_ROW row;
    while (k < rows && (row = mysql_fetch_row(res))) {
        e[k].event_id = dup_or_null(row[0]);
        e[k].topic = dup_or_null(row[1]);
        e[k].key = dup_or_null(row[2]);
        e[k].payload = dup_or_null(row[3]);
        k++;
        if (!e[k - 1].event_id || !e[k - 1].topic || (row[2] && !e[k - 1].key) || !e[k - 1].payload) {
            rc = BNB_ENOMEM;
            goto out;
        }
    }
    *out = e;
    *n = k;
    e = NULL;
out:
    if (e)
        bnb_outbox_entries_free(e, k);
    if (res)
        mysql_free_result(res);
    free(q.p);
    release(s, c, broken);
    return public_rc(rc);
}

static int my_outbox_ack(bnb_store_t *st, const char *const *event_ids, size_t n)
{
    my_store_t *s = (my_store_t *)st;
    if (n == 0)
        return 0;
    if (!event_ids)
        return BNB_EINVAL;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    sb_t q = {0};
    /* In chunks, so one statement stays well below max_allowed_packet. */
    for (size_t i = 0; i < n && !rc;) {
        q.len = 0;
        sb_sql(&q, c->m, s->prefix, "DELETE FROM %Toutbox` WHERE event_id IN (");
        size_t j = 0;
        for (; i < n && j < 500; i++) {
            if (!event_ids[i])
                continue;
            sb_sql(&q, c->m, s->prefix, j ? ",%s" : "%s", event_ids[i]);
            j++;
        }
        sb_add(&q, ")", 1);
        if (j)
            rc = run_sb(c->m, &q, &broken);
    }
    free(q.p);
    release(s, c, broken);
    return public_rc(rc);
}

/* ---- dead letters -------------------------------------------------------- */

static int my_park(bnb_store_t *st, const char *consumer, const char *event_json, const char *reason)
{
    my_store_t *s = (my_store_t *)st;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    sb_t q = {0};
    sb_sql(&q, c->m, s->prefix, "INSERT INTO %Tdead` (consumer, reason, event) VALUES (%s, %s, %s)",
           consumer ? consumer : "", reason ? reason : "", event_json ? event_json : "");
    rc = run_sb(c->m, &q, &broken);
    free(q.p);
    release(s, c, broken);
    return public_rc(rc);
}

static int my_dead_count(bnb_store_t *st, int64_t *count)
{
    my_store_t *s = (my_store_t *)st;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    MYSQL_RES *res = NULL;
    sb_t q = {0};
    sb_sql(&q, c->m, s->prefix, "SELECT COUNT(*) FROM %Tdead`");
    if ((rc = query_rows(c->m, &q, &res, &broken)) == 0) {
        MYSQL_ROW row = mysql_fetch_row(res);
        if (row)
            *count = to_i64(row[0]);
        else
            rc = BNB_EIO;
    }
    if (res)
        mysql_free_result(res);
    free(q.p);
    release(s, c, broken);
    return public_rc(rc);
}

const bnb_storage_ops_t bnb_storage_mysql = {
    .name = "mysql",
    .open = my_open,
    .close = my_close,
    .ping = my_ping,
    .get = my_get,
    .list = my_list,
    .commit = my_commit,
    .outbox_fetch = my_outbox_fetch,
    .outbox_ack = my_outbox_ack,
    .park = my_park,
    .dead_count = my_dead_count,
    .define = my_define,
    .query = my_query,
    .commit2 = my_commit2,
    .get_many = my_get_many,
};

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

/* Internal results besides BNB_E*. */
enum { MY_RETRY = -1000, MY_DUP = -1001 };

typedef struct my_conn {
    MYSQL *m;
    struct my_conn *next;
    time_t last_used;
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
        mysql_close(c->m);
        c->m = NULL;
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
        mysql_close(c->m);
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
        mysql_close(c->m);
        free(c);
        c = n;
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
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

static int my_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    my_store_t *s = (my_store_t *)st;
    if (body)
        *body = NULL;
    if (!coll || !id)
        return BNB_EINVAL;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    MYSQL_RES *res = NULL;
    sb_t q = {0};
    sb_sql(&q, c->m, s->prefix, "SELECT body, version FROM %Tdocs` WHERE coll=%s AND id=%s AND deleted=0", coll, id);
    rc = query_rows(c->m, &q, &res, &broken);
    if (rc)
        goto out;
    MYSQL_ROW row = mysql_fetch_row(res);
    if (!row) {
        rc = BNB_ENOENT;
        goto out;
    }
    if (body) {
        json_error_t jerr;
        *body = row[0] ? json_loads(row[0], 0, &jerr) : NULL;
        if (!*body) {
            rc = BNB_EIO;
            goto out;
        }
    }
    if (version)
        *version = to_i64(row[1]);
out:
    if (res)
        mysql_free_result(res);
    free(q.p);
    release(s, c, broken);
    return public_rc(rc);
}

static int my_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    my_store_t *s = (my_store_t *)st;
    *out = NULL;
    if (!coll || which < 0 || which > 2 || (which && !value))
        return BNB_EINVAL;
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc)
        return rc;
    bool broken = false;
    MYSQL_RES *res = NULL;
    json_t *arr = NULL;
    sb_t q = {0};
    sb_sql(&q, c->m, s->prefix, "SELECT id, version, body FROM %Tdocs` WHERE coll=%s AND deleted=0", coll);
    if (which == 1)
        sb_sql(&q, c->m, s->prefix, " AND key1=%s", value);
    else if (which == 2)
        sb_sql(&q, c->m, s->prefix, " AND key2=%s", value);
    sb_sql(&q, c->m, s->prefix, " ORDER BY id");
    rc = query_rows(c->m, &q, &res, &broken);
    if (rc)
        goto out;
    arr = json_array();
    if (!arr) {
        rc = BNB_ENOMEM;
        goto out;
    }
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res))) {
        json_error_t jerr;
        json_t *b = row[2] ? json_loads(row[2], 0, &jerr) : NULL;
        if (!b) {
            rc = BNB_EIO;
            goto out;
        }
        json_t *item = json_pack("{s:s, s:I, s:o}", "id", row[0], "version", (json_int_t)to_i64(row[1]), "body", b);
        if (!item || json_array_append_new(arr, item)) {
            rc = BNB_ENOMEM;
            goto out;
        }
    }
    *out = arr;
    arr = NULL;
out:
    json_decref(arr);
    if (res)
        mysql_free_result(res);
    free(q.p);
    release(s, c, broken);
    return public_rc(rc);
}

/* ---- commit -------------------------------------------------------------- */

/* One attempt of the commit transaction. Returns 0, BNB_E*, or MY_RETRY. */
static int commit_once(my_store_t *s, MYSQL *m, const bnb_write_t *w, const char *body_txt,
                       const bnb_outbox_new_t *events, size_t nevents, const char *applied, int64_t *newv, bool *broken)
{
    sb_t q = {0};
    MYSQL_RES *res = NULL;
    int rc = run_str(m, "START TRANSACTION", broken);
    if (rc)
        return rc;

    /* Lock the document row (if any). */
    sb_sql(&q, m, s->prefix, "SELECT version, deleted FROM %Tdocs` WHERE coll=%s AND id=%s FOR UPDATE", w->coll, w->id);
    if ((rc = query_rows(m, &q, &res, broken)) != 0)
        goto fail;
    MYSQL_ROW row = mysql_fetch_row(res);
    bool present = row != NULL;
    int64_t cur = row ? to_i64(row[0]) : 0;
    bool live = row && to_i64(row[1]) == 0;
    mysql_free_result(res);
    res = NULL;

    /* Applied mark first: a redelivered event is EALREADY whatever the version. */
    if (applied) {
        q.len = 0;
        sb_sql(&q, m, s->prefix, "INSERT INTO %Tapplied` (coll, id, event_id) VALUES (%s, %s, %s)", w->coll, w->id,
               applied);
        if ((rc = run_sb(m, &q, broken)) != 0) {
            if (rc == MY_DUP)
                rc = BNB_EALREADY;
            goto fail;
        }
    }

    if (w->expect_version == 0) {
        if (live) {
            rc = BNB_EEXIST;
            goto fail;
        }
        if (w->op != BNB_WRITE_PUT) {
            rc = BNB_ENOENT;
            goto fail;
        }
    } else {
        if (!live && (w->expect_version > 0 || w->op != BNB_WRITE_PUT)) {
            rc = BNB_ENOENT;
            goto fail;
        }
        if (w->expect_version > 0 && cur != w->expect_version) {
            rc = BNB_EEXIST;
            goto fail;
        }
    }
    int64_t v = cur + 1;

    q.len = 0;
    switch (w->op) {
    case BNB_WRITE_PUT:
        if (present)
            sb_sql(&q, m, s->prefix,
                   "UPDATE %Tdocs` SET version=%l, deleted=0, body=%s, key1=%s, key2=%s WHERE coll=%s AND id=%s", v,
                   body_txt, w->key1, w->key2, w->coll, w->id);
        else
            sb_sql(&q, m, s->prefix,
                   "INSERT INTO %Tdocs` (coll, id, version, deleted, body, key1, key2) VALUES (%s, %s, %l, 0, %s, %s, "
                   "%s)",
                   w->coll, w->id, v, body_txt, w->key1, w->key2);
        break;
    case BNB_WRITE_DELETE:
        sb_sql(&q, m, s->prefix,
               "UPDATE %Tdocs` SET version=%l, deleted=1, body=NULL, key1=NULL, key2=NULL WHERE coll=%s AND id=%s", v,
               w->coll, w->id);
        break;
    case BNB_WRITE_TOUCH:
        sb_sql(&q, m, s->prefix, "UPDATE %Tdocs` SET version=%l WHERE coll=%s AND id=%s", v, w->coll, w->id);
        break;
    }
    if ((rc = run_sb(m, &q, broken)) != 0) {
        if (rc == MY_DUP) /* lost a create race: start over, we will see the row */
            rc = MY_RETRY;
        goto fail;
    }

    for (size_t i = 0; i < nevents; i++) {
        q.len = 0;
        sb_sql(&q, m, s->prefix,
               "INSERT INTO %Toutbox` (event_id, topic, `key`, payload, coll, doc_id) VALUES (%s, %s, %s, %s, %s, %s)",
               events[i].event_id, events[i].topic, events[i].key, events[i].payload, w->coll, w->id);
        if ((rc = run_sb(m, &q, broken)) != 0) {
            if (rc == MY_DUP) /* same event id queued twice */
                rc = BNB_EINVAL;
            goto fail;
        }
    }
    free(q.p);
    q.p = NULL;
    if ((rc = run_str(m, "COMMIT", broken)) != 0)
        goto fail;
    *newv = v;
    return 0;
fail:
    free(q.p);
    if (res)
        mysql_free_result(res);
    if (!*broken && mysql_query(m, "ROLLBACK") != 0)
        *broken = true;
    return rc;
}

static int my_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_outbox_new_t *events, size_t nevents,
                     const char *applied_event_id, int64_t *new_version)
{
    my_store_t *s = (my_store_t *)st;
    if (!w || !w->coll || !w->id || (nevents && !events) || w->expect_version < -1)
        return BNB_EINVAL;
    if (w->op != BNB_WRITE_PUT && w->op != BNB_WRITE_DELETE && w->op != BNB_WRITE_TOUCH)
        return BNB_EINVAL;
    for (size_t i = 0; i < nevents; i++)
        if (!events[i].event_id || !events[i].topic || !events[i].payload)
            return BNB_EINVAL;
    char *body_txt = NULL;
    if (w->op == BNB_WRITE_PUT) {
        if (!json_is_object(w->body))
            return BNB_EINVAL;
        body_txt = json_dumps(w->body, JSON_COMPACT);
        if (!body_txt)
            return BNB_ENOMEM;
    }
    my_conn_t *c;
    int rc = acquire(s, &c);
    if (rc) {
        free(body_txt);
        return rc;
    }
    bool broken = false;
    int64_t v = 0;
    for (int attempt = 0; attempt < MY_RETRIES; attempt++) {
        rc = commit_once(s, c->m, w, body_txt, events, nevents, applied_event_id, &v, &broken);
        if (rc != MY_RETRY || broken)
            break;
        /* back off a little, with jitter, before the next attempt */
        usleep((useconds_t)(1000 * (1 << attempt) + (unsigned)rand() % 1000));
    }
    if (rc == MY_RETRY || rc == MY_DUP)
        my_log("commit", "deadlock / lock wait timeout / insert race persisted after retries", (unsigned)MY_RETRIES);
    release(s, c, broken);
    free(body_txt);
    if (rc == 0 && new_version)
        *new_version = v;
    return public_rc(rc);
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
};

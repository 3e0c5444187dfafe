/*
 * Embedded storage backend: one SQLite file per store.
 *
 * Threads: a small pool of connections (mutex + free list); a caller takes
 * one connection for the whole call, so each connection is used by one thread
 * at a time (SQLITE_OPEN_NOMUTEX). WAL journal lets readers run while one
 * writer commits; writers serialise on BEGIN IMMEDIATE with a busy timeout.
 *
 * Schema (created if missing, PRAGMA user_version = 1):
 *   docs(coll, id, version, body JSON text, key1, key2)  one row per document
 *   applied(coll, id, event_id)                          applied-event marks
 *   outbox(seq, event_id, topic, key, payload)           pending events
 *   dead_letters(seq, consumer, reason, event, at)       parked poison events
 * Deleting a document keeps its applied marks and its queued outbox rows.
 */
#include "bnb_storage.h"

#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SQ_DEFAULT_POOL 8
#define SQ_BUSY_MS      5000
#define SQ_SCHEMA_VER   1

enum {
    Q_GET,
    Q_LIST_ALL,
    Q_LIST_K1,
    Q_LIST_K2,
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_APPLIED_GET,
    Q_APPLIED_PUT,
    Q_VERSION,
    Q_DOC_INSERT,
    Q_DOC_UPDATE,
    Q_DOC_TOUCH,
    Q_DOC_DELETE,
    Q_OUTBOX_PUT,
    Q_OUTBOX_FETCH,
    Q_OUTBOX_ACK,
    Q_PARK,
    Q_DEAD_COUNT,
    Q_PING,
    Q__COUNT
};

static const char *const sq_sql[Q__COUNT] = {
    [Q_GET] = "SELECT version, body FROM docs WHERE coll = ?1 AND id = ?2",
    [Q_LIST_ALL] = "SELECT id, version, body FROM docs WHERE coll = ?1 ORDER BY id",
    [Q_LIST_K1] = "SELECT id, version, body FROM docs WHERE coll = ?1 AND key1 = ?2 ORDER BY id",
    [Q_LIST_K2] = "SELECT id, version, body FROM docs WHERE coll = ?1 AND key2 = ?2 ORDER BY id",
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_APPLIED_GET] = "SELECT 1 FROM applied WHERE coll = ?1 AND id = ?2 AND event_id = ?3",
    [Q_APPLIED_PUT] = "INSERT INTO applied(coll, id, event_id) VALUES (?1, ?2, ?3)",
    [Q_VERSION] = "SELECT version FROM docs WHERE coll = ?1 AND id = ?2",
    [Q_DOC_INSERT] = "INSERT INTO docs(coll, id, version, body, key1, key2) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_DOC_UPDATE] = "UPDATE docs SET version = ?3, body = ?4, key1 = ?5, key2 = ?6 WHERE coll = ?1 AND id = ?2",
    [Q_DOC_TOUCH] = "UPDATE docs SET version = ?3 WHERE coll = ?1 AND id = ?2",
    [Q_DOC_DELETE] = "DELETE FROM docs WHERE coll = ?1 AND id = ?2",
    [Q_OUTBOX_PUT] = "INSERT INTO outbox(event_id, topic, key, payload) VALUES (?1, ?2, ?3, ?4)",
    [Q_OUTBOX_FETCH] = "SELECT event_id, topic, key, payload FROM outbox ORDER BY seq LIMIT ?1",
    [Q_OUTBOX_ACK] = "DELETE FROM outbox WHERE event_id = ?1",
    [Q_PARK] = "INSERT INTO dead_letters(consumer, reason, event, at) VALUES (?1, ?2, ?3, ?4)",
    [Q_DEAD_COUNT] = "SELECT count(*) FROM dead_letters",
    [Q_PING] = "SELECT count(*) FROM sqlite_master",
};

static const char sq_schema[] = "CREATE TABLE IF NOT EXISTS docs ("
                                " coll TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,"
                                " body TEXT NOT NULL, key1 TEXT, key2 TEXT, PRIMARY KEY (coll, id));"
                                "CREATE INDEX IF NOT EXISTS docs_key1 ON docs(coll, key1);"
                                "CREATE INDEX IF NOT EXISTS docs_key2 ON docs(coll, key2);"
                                "CREATE TABLE IF NOT EXISTS applied ("
                                " coll TEXT NOT NULL, id TEXT NOT NULL, event_id TEXT NOT NULL,"
                                " PRIMARY KEY (coll, id, event_id));"
                                "CREATE TABLE IF NOT EXISTS outbox ("
                                " seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
                                " topic TEXT NOT NULL, key TEXT, payload TEXT NOT NULL);"
                                "CREATE TABLE IF NOT EXISTS dead_letters ("
                                " seq INTEGER PRIMARY KEY AUTOINCREMENT, consumer TEXT NOT NULL,"
                                " reason TEXT NOT NULL, event TEXT NOT NULL, at INTEGER NOT NULL);"
                                "PRAGMA user_version = 1;";

typedef struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *q[Q__COUNT];
    struct sq_conn *next;
} sq_conn_t;

typedef struct sq_store {
    bnb_store_t base; /* must stay first */
    char *path;
    char *name;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sq_conn_t *idle; /* free list */
    int nconn;       /* connections open (idle + in use) */
    int max;
} sq_store_t;

/* ---- logging ------------------------------------------------------------- */

/* One JSON line on stderr: {"level":"error","msg":...}. */
static void sq_log_error(const sq_store_t *s, const char *what, sqlite3 *db, int rc)
{
    char msg[512];
    json_t *line;
    char *text;

    snprintf(msg, sizeof(msg), "sqlite %s: %s (code %d)", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
    line = json_pack("{s:s, s:s, s:s, s:s?}", "level", "error", "msg", msg, "component", "storage.sqlite", "store",
                     s ? s->name : NULL);
    text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    else
        fprintf(stderr, "{\"level\":\"error\",\"msg\":\"sqlite %s failed (code %d)\"}\n", what, rc);
    free(text);
    json_decref(line);
}

/* Map a failed SQLite call to a BNB code, logging it. */
static int sq_fail(const sq_store_t *s, const char *what, sqlite3 *db, int rc)
{
    sq_log_error(s, what, db, rc);
    if ((rc & 0xff) == SQLITE_NOMEM)
        return BNB_ENOMEM;
    return BNB_EIO;
}

/* ---- connections ---------------------------------------------------------- */

static void sq_conn_free(sq_conn_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < Q__COUNT; i++)
        sqlite3_finalize(c->q[i]);
    sqlite3_close(c->db);
    free(c);
}

static int sq_conn_open(sq_store_t *s, bool first, sq_conn_t **out, char *errbuf, size_t errlen)
{
    sq_conn_t *c = calloc(1, sizeof(*c));
    char *err = NULL;
    int rc;

    if (!c)
        return BNB_ENOMEM;
    rc = sqlite3_open_v2(s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "sqlite: cannot open '%s': %s", s->path,
                     c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        rc = sq_fail(s, "open", c->db, rc);
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, SQ_BUSY_MS);
    /* WAL is persistent in the file; asking again on every connection is cheap. */
    rc = sqlite3_exec(c->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;", NULL,
                      NULL, &err);
    if (rc == SQLITE_OK && first)
        rc = sqlite3_exec(c->db, sq_schema, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "sqlite: cannot prepare '%s': %s", s->path, err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        rc = sq_fail(s, "setup", c->db, rc);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    sq_conn_free(c);
    return rc;
}

/* Take a connection: an idle one, a new one while under the limit, or wait. */
static int sq_acquire(sq_store_t *s, sq_conn_t **out)
{
    sq_conn_t *c = NULL;
    int rc;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->idle) {
            c = s->idle;
            s->idle = c->next;
            c->next = NULL;
            pthread_mutex_unlock(&s->mu);
            *out = c;
            return 0;
        }
        if (s->nconn < s->max) {
            s->nconn++;
            break;
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);

    rc = sq_conn_open(s, false, &c, NULL, 0);
    if (rc != 0) {
        pthread_mutex_lock(&s->mu);
        s->nconn--;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    *out = c;
    return 0;
}

static void sq_release(sq_store_t *s, sq_conn_t *c)
{
    pthread_mutex_lock(&s->mu);
    c->next = s->idle;
    s->idle = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The connection's prepared statement `which`, reset and unbound. */
static int sq_stmt(sq_store_t *s, sq_conn_t *c, int which, sqlite3_stmt **out)
{
    int rc;

    if (!c->q[which]) {
        rc = sqlite3_prepare_v3(c->db, sq_sql[which], -1, SQLITE_PREPARE_PERSISTENT, &c->q[which], NULL);
        if (rc != SQLITE_OK)
            return sq_fail(s, "prepare", c->db, rc);
    } else {
        sqlite3_reset(c->q[which]);
        sqlite3_clear_bindings(c->q[which]);
    }
    *out = c->q[which];
    return 0;
}

static int sq_bind_text(sq_store_t *s, sq_conn_t *c, sqlite3_stmt *q, int idx, const char *v)
{
    int rc = v ? sqlite3_bind_text(q, idx, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(q, idx);
    if (rc != SQLITE_OK)
        return sq_fail(s, "bind", c->db, rc);
    return 0;
}

/* Run a statement that returns no row (or whose rows are ignored). */
static int sq_run(sq_store_t *s, sq_conn_t *c, sqlite3_stmt *q, const char *what)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT) {
            sq_log_error(s, what, c->db, rc);
            return BNB_EINVAL;
        }
        return sq_fail(s, what, c->db, rc);
    }
    return 0;
}

static int sq_simple(sq_store_t *s, sq_conn_t *c, int which, const char *what)
{
    sqlite3_stmt *q;
    int rc = sq_stmt(s, c, which, &q);
    if (rc != 0)
        return rc;
    return sq_run(s, c, q, what);
}

/* ---- open / close / ping --------------------------------------------------- */

static void sq_close(bnb_store_t *st)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c;

    if (!s)
        return;
    while ((c = s->idle)) {
        s->idle = c->next;
        sq_conn_free(c);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s->name);
    free(s);
}

/* The directory that must hold `path` exists (SQLite creates the file only). */
static int sq_check_dir(const char *path, char *errbuf, size_t errlen)
{
    char *copy = strdup(path);
    struct stat sb;
    const char *dir;
    int rc = 0;

    if (!copy)
        return BNB_ENOMEM;
    dir = dirname(copy);
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "sqlite: cannot open '%s': directory '%s' does not exist", path, dir);
        rc = BNB_ENOENT;
    }
    free(copy);
    return rc;
}

extern const bnb_storage_ops_t bnb_storage_sqlite;

static int sq_open(const bnb_storage_config_t *cfg, bnb_store_t **out, char *errbuf, size_t errlen)
{
    sq_store_t *s = NULL;
    sq_conn_t *c = NULL;
    int rc;

    if (!cfg || !out || !cfg->path || !cfg->path[0]) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "sqlite: no database file path configured");
        return BNB_EINVAL;
    }
    if (strcmp(cfg->path, ":memory:") == 0 || strncmp(cfg->path, "file:", 5) == 0) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "sqlite: '%s' is not a file path", cfg->path);
        return BNB_EINVAL;
    }
    rc = sq_check_dir(cfg->path, errbuf, errlen);
    if (rc != 0)
        return rc;

    s = calloc(1, sizeof(*s));
    if (!s)
        return BNB_ENOMEM;
    s->base.ops = &bnb_storage_sqlite;
    s->max = cfg->pool_size > 0 ? cfg->pool_size : SQ_DEFAULT_POOL;
    s->path = strdup(cfg->path);
    s->name = strdup(cfg->name ? cfg->name : "");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (!s->path || !s->name) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    rc = sq_conn_open(s, true, &c, errbuf, errlen);
    if (rc != 0)
        goto fail;
    s->idle = c;
    s->nconn = 1;
    *out = &s->base;
    return 0;
fail:
    sq_close(&s->base);
    return rc;
}

static int sq_ping(bnb_store_t *st)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c;
    sqlite3_stmt *q;
    int rc;

    if (!s)
        return BNB_EINVAL;
    rc = sq_acquire(s, &c);
    if (rc != 0)
        return rc;
    rc = sq_stmt(s, c, Q_PING, &q);
    if (rc == 0)
        rc = sq_run(s, c, q, "ping");
    sq_release(s, c);
    return rc;
}

/* ---- documents ------------------------------------------------------------- */

static int sq_parse_body(sq_store_t *s, sqlite3_stmt *q, int col, json_t **out)
{
    const char *text = (const char *)sqlite3_column_text(q, col);
    json_error_t jerr;

    *out = text ? json_loads(text, JSON_DECODE_ANY, &jerr) : NULL;
    if (!*out) {
        char msg[300];
        json_t *line;
        char *dump;
        snprintf(msg, sizeof(msg), "sqlite: stored body is not JSON: %s", text ? jerr.text : "NULL");
        line = json_pack("{s:s, s:s, s:s, s:s}", "level", "error", "msg", msg, "component", "storage.sqlite", "store",
                         s->name);
        dump = line ? json_dumps(line, JSON_COMPACT) : NULL;
        if (dump)
            fprintf(stderr, "%s\n", dump);
        free(dump);
        json_decref(line);
        return BNB_EIO;
    }
    return 0;
}

static int sq_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    sqlite3_stmt *q = NULL;
    json_t *doc = NULL;
    int64_t ver = 0;
    int rc;

    if (body)
        *body = NULL;
    if (!s || !coll || !id)
        return BNB_EINVAL;
    rc = sq_acquire(s, &c);
    if (rc != 0)
        return rc;
    if ((rc = sq_stmt(s, c, Q_GET, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, coll)) != 0 ||
        (rc = sq_bind_text(s, c, q, 2, id)) != 0)
        goto fail;
    rc = sqlite3_step(q);
    if (rc == SQLITE_DONE) {
        rc = BNB_ENOENT;
        goto fail;
    }
    if (rc != SQLITE_ROW) {
        rc = sq_fail(s, "get", c->db, rc);
        goto fail;
    }
    ver = sqlite3_column_int64(q, 0);
    if (body && (rc = sq_parse_body(s, q, 1, &doc)) != 0)
        goto fail;
    sqlite3_reset(q);
    sq_release(s, c);
    if (body)
        *body = doc;
    if (version)
        *version = ver;
    return 0;
fail:
    if (q)
        sqlite3_reset(q);
    sq_release(s, c);
    return rc;
}

static int sq_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    sqlite3_stmt *q = NULL;
    json_t *arr = NULL;
    int rc;

    if (out)
        *out = NULL;
    if (!s || !coll || !out || which < 0 || which > 2 || (which > 0 && !value))
        return BNB_EINVAL;
    arr = json_array();
    if (!arr)
        return BNB_ENOMEM;
    rc = sq_acquire(s, &c);
    if (rc != 0)
        goto fail_noconn;
    if ((rc = sq_stmt(s, c,
                      which == 0   ? Q_LIST_ALL
                      : which == 1 ? Q_LIST_K1
                                   : Q_LIST_K2,
                      &q)) != 0 ||
        (rc = sq_bind_text(s, c, q, 1, coll)) != 0 || (which > 0 && (rc = sq_bind_text(s, c, q, 2, value)) != 0))
        goto fail;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        json_t *body = NULL, *item;
        const char *id = (const char *)sqlite3_column_text(q, 0);
        if ((rc = sq_parse_body(s, q, 2, &body)) != 0)
            goto fail;
        item = json_pack("{s:s, s:I, s:o}", "id", id ? id : "", "version", (json_int_t)sqlite3_column_int64(q, 1),
                         "body", body);
        if (!item || json_array_append_new(arr, item) != 0) {
            rc = BNB_ENOMEM;
            goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        rc = sq_fail(s, "list", c->db, rc);
        goto fail;
    }
    sqlite3_reset(q);
    sq_release(s, c);
    *out = arr;
    return 0;
fail:
    if (q)
        sqlite3_reset(q);
    sq_release(s, c);
fail_noconn:
    json_decref(arr);
    return rc;
}

/* Inside BEGIN IMMEDIATE: apply the write; 0 or a BNB code (caller rolls back). */
static int sq_commit_tx(sq_store_t *s, sq_conn_t *c, const bnb_write_t *w, const char *body_text,
                        const bnb_outbox_new_t *events, size_t nevents, const char *applied, int64_t *new_version)
{
    sqlite3_stmt *q;
    int64_t cur = 0, next;
    bool exists;
    int rc;

    if (applied) {
        if ((rc = sq_stmt(s, c, Q_APPLIED_GET, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, w->coll)) != 0 ||
            (rc = sq_bind_text(s, c, q, 2, w->id)) != 0 || (rc = sq_bind_text(s, c, q, 3, applied)) != 0)
            return rc;
        rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc == SQLITE_ROW)
            return BNB_EALREADY;
        if (rc != SQLITE_DONE)
            return sq_fail(s, "applied check", c->db, rc);
    }

    if ((rc = sq_stmt(s, c, Q_VERSION, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, w->coll)) != 0 ||
        (rc = sq_bind_text(s, c, q, 2, w->id)) != 0)
        return rc;
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        cur = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_fail(s, "version check", c->db, rc);
    exists = rc == SQLITE_ROW;

    if (w->expect_version == 0 && exists)
        return BNB_EEXIST;
    if (w->expect_version > 0 && !exists)
        return BNB_ENOENT;
    if (w->expect_version > 0 && cur != w->expect_version)
        return BNB_EEXIST;
    if (w->op != BNB_WRITE_PUT && !exists)
        return BNB_ENOENT;
    next = exists ? cur + 1 : 1;

    switch (w->op) {
    case BNB_WRITE_PUT:
        if ((rc = sq_stmt(s, c, exists ? Q_DOC_UPDATE : Q_DOC_INSERT, &q)) != 0)
            return rc;
        if ((rc = sqlite3_bind_int64(q, 3, next)) != SQLITE_OK)
            return sq_fail(s, "bind", c->db, rc);
        if ((rc = sq_bind_text(s, c, q, 4, body_text)) != 0 || (rc = sq_bind_text(s, c, q, 5, w->key1)) != 0 ||
            (rc = sq_bind_text(s, c, q, 6, w->key2)) != 0)
            return rc;
        break;
    case BNB_WRITE_TOUCH:
        if ((rc = sq_stmt(s, c, Q_DOC_TOUCH, &q)) != 0)
            return rc;
        if ((rc = sqlite3_bind_int64(q, 3, next)) != SQLITE_OK)
            return sq_fail(s, "bind", c->db, rc);
        break;
    case BNB_WRITE_DELETE:
        if ((rc = sq_stmt(s, c, Q_DOC_DELETE, &q)) != 0)
            return rc;
        next = 0; /* the document is gone */
        break;
    default:
        return BNB_EINVAL;
    }
    if ((rc = sq_bind_text(s, c, q, 1, w->coll)) != 0 || (rc = sq_bind_text(s, c, q, 2, w->id)) != 0 ||
        (rc = sq_run(s, c, q, "write")) != 0)
        return rc;

    if (applied) {
        if ((rc = sq_stmt(s, c, Q_APPLIED_PUT, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, w->coll)) != 0 ||
            (rc = sq_bind_text(s, c, q, 2, w->id)) != 0 || (rc = sq_bind_text(s, c, q, 3, applied)) != 0 ||
            (rc = sq_run(s, c, q, "applied mark")) != 0)
            return rc;
    }
    for (size_t i = 0; i < nevents; i++) {
        const bnb_outbox_new_t *e = &events[i];
        if (!e->event_id || !e->topic || !e->payload)
            return BNB_EINVAL;
        if ((rc = sq_stmt(s, c, Q_OUTBOX_PUT, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, e->event_id)) != 0 ||
            (rc = sq_bind_text(s, c, q, 2, e->topic)) != 0 || (rc = sq_bind_text(s, c, q, 3, e->key)) != 0 ||
            (rc = sq_bind_text(s, c, q, 4, e->payload)) != 0 || (rc = sq_run(s, c, q, "outbox insert")) != 0)
            return rc;
    }
    if (new_version)
        *new_version = next;
    return 0;
}

static int sq_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_outbox_new_t *events, size_t nevents,
                     const char *applied_event_id, int64_t *new_version)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    char *body_text = NULL;
    int64_t ver = 0;
    int rc;

    if (!s || !w || !w->coll || !w->id || (nevents && !events) || w->expect_version < -1)
        return BNB_EINVAL;
    if (w->op != BNB_WRITE_PUT && w->op != BNB_WRITE_DELETE && w->op != BNB_WRITE_TOUCH)
        return BNB_EINVAL;
    if (w->op == BNB_WRITE_PUT) {
        if (!w->body || !json_is_object(w->body))
            return BNB_EINVAL;
        body_text = json_dumps(w->body, JSON_COMPACT);
        if (!body_text)
            return BNB_ENOMEM;
    }
    rc = sq_acquire(s, &c);
    if (rc != 0)
        goto out;
    rc = sq_simple(s, c, Q_BEGIN, "begin");
    if (rc != 0)
        goto release;
    rc = sq_commit_tx(s, c, w, body_text, events, nevents, applied_event_id, &ver);
    if (rc == 0)
        rc = sq_simple(s, c, Q_COMMIT, "commit");
    if (rc != 0 && !sqlite3_get_autocommit(c->db))
        sq_simple(s, c, Q_ROLLBACK, "rollback");
    if (rc == 0 && new_version)
        *new_version = ver;
release:
    sq_release(s, c);
out:
    free(body_text);
    return rc;
}

/* ---- outbox and dead letters ------------------------------------------------ */

static char *sq_col_dup(sqlite3_stmt *q, int col)
{
    const char *v = (const char *)sqlite3_column_text(q, col);
    return v ? strdup(v) : NULL;
}

static int sq_outbox_fetch(bnb_store_t *st, size_t max, bnb_outbox_entry_t **out, size_t *n)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    sqlite3_stmt *q = NULL;
    bnb_outbox_entry_t *ents = NULL;
    size_t got = 0;
    int rc;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n)
        return BNB_EINVAL;
    if (max == 0)
        return 0;
    if (max > 100000)
        max = 100000;
    rc = sq_acquire(s, &c);
    if (rc != 0)
        return rc;
    if ((rc = sq_stmt(s, c, Q_OUTBOX_FETCH, &q)) != 0)
        goto fail;
    if ((rc = sqlite3_bind_int64(q, 1, (sqlite3_int64)max)) != SQLITE_OK) {
        rc = sq_fail(s, "bind", c->db, rc);
        goto fail;
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        bnb_outbox_entry_t *e;
        if (!ents) {
            ents = calloc(max, sizeof(*ents));
            if (!ents) {
                rc = BNB_ENOMEM;
                goto fail;
            }
        }
        e = &ents[got++];
        e->event_id = sq_col_dup(q, 0);
        e->topic = sq_col_dup(q, 1);
        e->key = sq_col_dup(q, 2);
        e->payload = sq_col_dup(q, 3);
        if (!e->event_id || !e->topic || !e->payload || (!e->key && sqlite3_column_type(q, 2) != SQLITE_NULL)) {
            rc = BNB_ENOMEM;
            goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        rc = sq_fail(s, "outbox fetch", c->db, rc);
        goto fail;
    }
    sqlite3_reset(q);
    sq_release(s, c);
    *out = ents;
    *n = got;
    return 0;
fail:
    if (q)
        sqlite3_reset(q);
    sq_release(s, c);
    bnb_outbox_entries_free(ents, got);
    return rc;
}

static int sq_outbox_ack(bnb_store_t *st, const char *const *event_ids, size_t n)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    sqlite3_stmt *q;
    int rc;

    if (!s || (n && !event_ids))
        return BNB_EINVAL;
    if (n == 0)
        return 0;
    rc = sq_acquire(s, &c);
    if (rc != 0)
        return rc;
    rc = sq_simple(s, c, Q_BEGIN, "begin");
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!event_ids[i])
            continue;
        if ((rc = sq_stmt(s, c, Q_OUTBOX_ACK, &q)) == 0 && (rc = sq_bind_text(s, c, q, 1, event_ids[i])) == 0)
            rc = sq_run(s, c, q, "outbox ack");
    }
    if (rc == 0)
        rc = sq_simple(s, c, Q_COMMIT, "commit");
    if (rc != 0 && !sqlite3_get_autocommit(c->db))
        sq_simple(s, c, Q_ROLLBACK, "rollback");
out:
    sq_release(s, c);
    return rc;
}

static int sq_park(bnb_store_t *st, const char *consumer, const char *event_json, const char *reason)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    sqlite3_stmt *q;
    struct timespec ts;
    int rc;

    if (!s || !consumer || !event_json)
        return BNB_EINVAL;
    clock_gettime(CLOCK_REALTIME, &ts);
    rc = sq_acquire(s, &c);
    if (rc != 0)
        return rc;
    if ((rc = sq_stmt(s, c, Q_PARK, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, consumer)) != 0 ||
        (rc = sq_bind_text(s, c, q, 2, reason ? reason : "rejected")) != 0 ||
        (rc = sq_bind_text(s, c, q, 3, event_json)) != 0)
        goto out;
    rc = sqlite3_bind_int64(q, 4, (sqlite3_int64)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (rc != SQLITE_OK) {
        rc = sq_fail(s, "bind", c->db, rc);
        goto out;
    }
    rc = sq_run(s, c, q, "park");
out:
    sq_release(s, c);
    return rc;
}

static int sq_dead_count(bnb_store_t *st, int64_t *count)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    sqlite3_stmt *q;
    int rc;

    if (!s || !count)
        return BNB_EINVAL;
    rc = sq_acquire(s, &c);
    if (rc != 0)
        return rc;
    if ((rc = sq_stmt(s, c, Q_DEAD_COUNT, &q)) != 0)
        goto out;
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *count = sqlite3_column_int64(q, 0);
        rc = 0;
    } else {
        rc = sq_fail(s, "dead count", c->db, rc);
    }
    sqlite3_reset(q);
out:
    sq_release(s, c);
    return rc;
}

const bnb_storage_ops_t bnb_storage_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .get = sq_get,
    .list = sq_list,
    .commit = sq_commit,
    .outbox_fetch = sq_outbox_fetch,
    .outbox_ack = sq_outbox_ack,
    .park = sq_park,
    .dead_count = sq_dead_count,
};

/*
 * Embedded storage backend: one SQLite file per store.
 *
 * Threads: a small pool of connections for reads (mutex + free list); a
 * caller takes one connection for the whole call, so each connection is used
 * by one thread at a time (SQLITE_OPEN_NOMUTEX). Every write goes through one
 * writer connection per store, under write_mu (its page cache stays valid:
 * SQLite drops a connection's whole cache when another connection changed
 * the WAL). WAL journal lets readers run while one writer commits; the writers
 * of a process queue on write_mu, then on BEGIN IMMEDIATE with a busy timeout
 * (which other processes' writers wait in). The group-commit fsync runs on a
 * sync connection of its own, the checkpoints on a thread and connection of
 * their own (sq_ckpt_main), never inside a COMMIT. A thread that defers
 * durability (the relay's consumers) puts its commits to one store into one
 * transaction, a savepoint each ("batches", below).
 *
 * Durability, group commit: WAL with synchronous = NORMAL, so COMMIT itself
 * only write()s the WAL (a kill -9 loses nothing written: the page cache
 * survives it), and then every commit waits in sq_durable() until an fsync of
 * the WAL that started after its COMMIT has returned. One committer at a time
 * runs that fsync (the leader) for everything committed so far; the commits
 * that arrive meanwhile (they no longer hold write_mu while a sync runs) share
 * the next one. A commit therefore returns only once it is on disk: a 201
 * means it is on disk, and a power cut loses nothing that was acknowledged;
 * the price is one fsync per group instead of one per commit. Checkpoints sync
 * the WAL before copying it into the database and the database after (NORMAL
 * keeps that), so a WAL restart never drops a synced commit. The outbox is
 * read only up to what is on disk (sq_outbox_fetch), so no event is published
 * for a commit a power cut could still take back.
 *
 * Schema (created if missing, PRAGMA user_version = 2):
 *   docs(coll, id, version, body JSON text, key1, key2)  undeclared collections
 *   c_<coll>(id, version, body, key1, key2, f_<field>...) one table per DECLARED
 *       collection (store_define), WITHOUT ROWID, every declared field a real
 *       column (TEXT or INTEGER, NULL when the body lacks it or has another
 *       type), every declared index a real index named c_<coll>_<ix|ux>_<hash>
 *       on its columns then id (unique indexes on their columns alone)
 *   colls(name, def)                                     the declared definitions
 *   claims(key PRIMARY KEY, coll, id)                    who holds each claim
 *   applied(coll, id, event_id)                          applied-event marks
 *   outbox(seq, event_id, topic, key, payload)           pending events
 *   dead_letters(seq, consumer, reason, event, at)       parked poison events
 * Declaring a collection moves its documents from docs into its table (in the
 * same transaction); a field declared later is added and filled from the
 * bodies. Deleting a document keeps its applied marks and its queued outbox
 * rows and releases its claims.
 *
 * Queries: one SQL statement per query shape, prepared once per connection
 * (cached by SQL text):
 *   SELECT id, version, body, f_<order> FROM c_<coll>
 *   WHERE f_a = ?1 AND f_b >= ?2 ... AND f_<order> IS NOT NULL
 *     AND (f_<order>, id) > (?n, ?n+1)          -- the cursor (< when descending)
 *   ORDER BY f_<order>, id LIMIT limit + 1
 * so a declared index (equality fields, order field) serves both the filter
 * and the order, and a page costs the same wherever it starts. A query ordered
 * by a field returns only the documents that have that field.
 */
#include "bnb_storage.h"
#include "v2.h"

#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SQ_DEFAULT_POOL 8
#define SQ_BUSY_MS      5000
#define SQ_SCHEMA_VER   2
#define SQ_DYN_MAX      512  /* cached dynamic statements per connection */
#define SQ_CKPT_FRAMES  1000 /* WAL frames that wake the checkpointer (SQLite's auto-checkpoint default) */
#define SQ_BATCH_MAX    256  /* commits per batch transaction (see sq_batch_enter) */

enum {
    Q_GET,
    Q_LIST_ALL,
    Q_LIST_K1,
    Q_LIST_K2,
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_SAVEPOINT,
    Q_RELEASE,
    Q_ROLLBACK_TO,
    Q_APPLIED_GET,
    Q_APPLIED_PUT,
    Q_VERSION,
    Q_DOC_INSERT,
    Q_DOC_UPDATE,
    Q_DOC_UPDATE_BODY,
    Q_DOC_TOUCH,
    Q_DOC_DELETE,
    Q_OUTBOX_PUT,
    Q_OUTBOX_FETCH,
    Q_OUTBOX_ACK,
    Q_PARK,
    Q_DEAD_COUNT,
    Q_PING,
    Q_CLAIMS_OF,
    Q_CLAIM_PUT,
    Q_CLAIM_DEL,
    Q_CLAIMS_DEL_ALL,
    Q_COLL_PUT,
    Q_COLLS_ALL,
    Q_TABLE_EXISTS,
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
    [Q_SAVEPOINT] = "SAVEPOINT b",
    [Q_RELEASE] = "RELEASE b",
    [Q_ROLLBACK_TO] = "ROLLBACK TO b",
    [Q_APPLIED_GET] = "SELECT 1 FROM applied WHERE coll = ?1 AND id = ?2 AND event_id = ?3",
    [Q_APPLIED_PUT] = "INSERT INTO applied(coll, id, event_id) VALUES (?1, ?2, ?3)",
    [Q_VERSION] = "SELECT version FROM docs WHERE coll = ?1 AND id = ?2",
    [Q_DOC_INSERT] = "INSERT INTO docs(coll, id, version, body, key1, key2) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_DOC_UPDATE] = "UPDATE docs SET version = ?3, body = ?4, key1 = ?5, key2 = ?6 WHERE coll = ?1 AND id = ?2",
    [Q_DOC_UPDATE_BODY] = "UPDATE docs SET version = ?3, body = ?4 WHERE coll = ?1 AND id = ?2",
    [Q_DOC_TOUCH] = "UPDATE docs SET version = ?3 WHERE coll = ?1 AND id = ?2",
    [Q_DOC_DELETE] = "DELETE FROM docs WHERE coll = ?1 AND id = ?2",
    [Q_OUTBOX_PUT] = "INSERT INTO outbox(event_id, topic, key, payload) VALUES (?1, ?2, ?3, ?4)",
    [Q_OUTBOX_FETCH] = "SELECT event_id, topic, key, payload FROM outbox ORDER BY seq LIMIT ?1",
    [Q_OUTBOX_ACK] = "DELETE FROM outbox WHERE event_id = ?1",
    [Q_PARK] = "INSERT INTO dead_letters(consumer, reason, event, at) VALUES (?1, ?2, ?3, ?4)",
    [Q_DEAD_COUNT] = "SELECT count(*) FROM dead_letters",
    [Q_PING] = "SELECT count(*) FROM sqlite_master",
    [Q_CLAIMS_OF] = "SELECT key FROM claims WHERE coll = ?1 AND id = ?2 ORDER BY key",
    [Q_CLAIM_PUT] = "INSERT INTO claims(key, coll, id) VALUES (?1, ?2, ?3)",
    [Q_CLAIM_DEL] = "DELETE FROM claims WHERE key = ?1",
    [Q_CLAIMS_DEL_ALL] = "DELETE FROM claims WHERE coll = ?1 AND id = ?2",
    [Q_COLL_PUT] = "INSERT OR REPLACE INTO colls(name, def) VALUES (?1, ?2)",
    [Q_COLLS_ALL] = "SELECT name, def FROM colls",
    [Q_TABLE_EXISTS] = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
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
                                "CREATE TABLE IF NOT EXISTS claims ("
                                " key TEXT NOT NULL PRIMARY KEY, coll TEXT NOT NULL, id TEXT NOT NULL) WITHOUT ROWID;"
                                "CREATE INDEX IF NOT EXISTS claims_owner ON claims(coll, id);"
                                "CREATE TABLE IF NOT EXISTS colls ("
                                " name TEXT NOT NULL PRIMARY KEY, def TEXT NOT NULL) WITHOUT ROWID;"
                                "PRAGMA user_version = 2;";

/* One cached statement prepared from dynamic SQL (declared collections). */
typedef struct sq_dyn {
    char *sql;
    sqlite3_stmt *st;
} sq_dyn_t;

typedef struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *q[Q__COUNT];
    sq_dyn_t *dyn; /* open addressing by SQL text, capacity ndyncap (power of 2) */
    size_t ndyn, ndyncap;
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
    bnb__colls_t colls; /* declared collections */
    pthread_mutex_t define_mu;
    pthread_mutex_t write_mu; /* one writer of this process at a time (see sq_begin) */
    sq_conn_t *wconn;         /* the writer connection: used only under write_mu */
    sq_conn_t *sconn;         /* the sync leader's connection: used only while syncing */
    int waiters;              /* threads waiting for write_mu (atomic; a batch gives way to them) */
    /* group commit (see "Durability" above) */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t written; /* commits done (under write_mu; read under sync_mu too: atomic) */
    uint64_t synced;  /* commits known to be on disk (sync_mu) */
    bool syncing;     /* a leader runs an fsync (sync_mu) */
    /* checkpoints, off the commit path (see sq_ckpt_main) */
    pthread_t ckpt;
    bool ckpt_started;
    bool ckpt_stop; /* ckpt_mu */
    int wal_frames; /* frames in the WAL after the last commit (atomic) */
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_cv;
} sq_store_t;

/* The batch transaction this thread holds open (see sq_batch_enter): its
 * store (write_mu held, a transaction open on its wconn) and how many commits
 * it holds; a batch that could not be committed leaves its error here for
 * bnb_storage_defer_end (sq_flush). */
static _Thread_local struct {
    sq_store_t *s;
    int n;
    int err;
} tl_batch;

static int sq_batch_close(void);

/* ---- logging ------------------------------------------------------------- */

static void sq_log_line(const sq_store_t *s, const char *msg)
{
    json_t *line = json_pack("{s:s, s:s, s:s, s:s?}", "level", "error", "msg", msg, "component", "storage.sqlite",
                             "store", s ? s->name : NULL);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    else
        fprintf(stderr, "{\"level\":\"error\",\"msg\":\"sqlite: (message lost)\"}\n");
    free(text);
    json_decref(line);
}

/* One JSON line on stderr: {"level":"error","msg":...}. */
static void sq_log_error(const sq_store_t *s, const char *what, sqlite3 *db, int rc)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "sqlite %s: %s (code %d)", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
    sq_log_line(s, msg);
}

/* Map a failed SQLite call to a BNB code, logging it. */
static int sq_fail(const sq_store_t *s, const char *what, sqlite3 *db, int rc)
{
    sq_log_error(s, what, db, rc);
    if ((rc & 0xff) == SQLITE_NOMEM)
        return BNB_ENOMEM;
    return BNB_EIO;
}

/* ---- small string builder ---------------------------------------------------- */

typedef struct sq_sb {
    char *p;
    size_t len, cap;
    bool oom;
} sq_sb_t;

static void sb_addf(sq_sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_addf(sq_sb_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* ---- connections ---------------------------------------------------------- */

static void sq_dyn_clear(sq_conn_t *c)
{
    for (size_t i = 0; i < c->ndyncap; i++) {
        if (c->dyn[i].sql) {
            sqlite3_finalize(c->dyn[i].st);
            free(c->dyn[i].sql);
        }
    }
    free(c->dyn);
    c->dyn = NULL;
    c->ndyn = c->ndyncap = 0;
}

static void sq_conn_free(sq_conn_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < Q__COUNT; i++)
        sqlite3_finalize(c->q[i]);
    sq_dyn_clear(c);
    sqlite3_close(c->db);
    free(c);
}

/* After every commit of a connection: the WAL's size; past SQ_CKPT_FRAMES the
 * checkpointer is woken (it replaces SQLite's auto-checkpoint, which would run
 * the checkpoint inside the COMMIT, under write_mu). */
static int sq_wal_hook(void *arg, sqlite3 *db, const char *dbname, int frames)
{
    sq_store_t *s = arg;
    (void)db;
    (void)dbname;
    __atomic_store_n(&s->wal_frames, frames, __ATOMIC_RELAXED);
    if (frames >= SQ_CKPT_FRAMES) {
        pthread_mutex_lock(&s->ckpt_mu);
        pthread_cond_signal(&s->ckpt_cv);
        pthread_mutex_unlock(&s->ckpt_mu);
    }
    return SQLITE_OK;
}

/* SQLite's allocation statistics take one process-wide mutex around every
 * sqlite3_malloc/free: under concurrent commits the threads queue on it. */
static void sq_global_setup(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* SQLITE_MISUSE if already initialised: harmless */
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
    sqlite3_wal_hook(c->db, sq_wal_hook, s); /* no auto-checkpoint: sq_ckpt_main */
    /* WAL is persistent in the file; asking again on every connection is cheap. */
    /* 512 KiB of page cache (SQLite's default is 2 MiB): a reading
     * connection's cache is dropped whenever another connection changed the
     * WAL, so under writes it holds little more than one call's pages, and
     * the writer's (never dropped) holds a small store's hot pages; 2 MiB per
     * connection took RSS past 32 MB after the booking load */
    rc = sqlite3_exec(c->db,
                      "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;"
                      " PRAGMA cache_size = -512;",
                      NULL, NULL, &err);
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

    if (tl_batch.s == s) {
        /* this thread's batch: read its own commits, unless someone waits
         * for the store, then the batch is committed and the pool serves */
        if (__atomic_load_n(&s->waiters, __ATOMIC_ACQUIRE) == 0) {
            *out = s->wconn;
            return 0;
        }
        (void)sq_batch_close();
    }
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
    if (c == s->wconn)
        return; /* the batch's own connection (sq_acquire), not a pooled one */
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

/* The connection's statement for `sql` (prepared once, then cached by its
 * text), reset and unbound. */
static int sq_dyn(sq_store_t *s, sq_conn_t *c, const char *sql, sqlite3_stmt **out)
{
    uint32_t h = bnb__fnv1a(2166136261u, sql, strlen(sql));
    if (c->ndyncap) {
        for (size_t i = h & (c->ndyncap - 1);; i = (i + 1) & (c->ndyncap - 1)) {
            if (!c->dyn[i].sql)
                break;
            if (strcmp(c->dyn[i].sql, sql) == 0) {
                sqlite3_reset(c->dyn[i].st);
                sqlite3_clear_bindings(c->dyn[i].st);
                *out = c->dyn[i].st;
                return 0;
            }
        }
    }
    if (c->ndyn >= SQ_DYN_MAX)
        sq_dyn_clear(c); /* more shapes than any plugin has: start over */
    if ((c->ndyn + 1) * 2 > c->ndyncap) {
        size_t ncap = c->ndyncap ? c->ndyncap * 2 : 32;
        sq_dyn_t *nd = calloc(ncap, sizeof(*nd));
        if (!nd)
            return BNB_ENOMEM;
        for (size_t i = 0; i < c->ndyncap; i++) {
            if (!c->dyn[i].sql)
                continue;
            uint32_t hh = bnb__fnv1a(2166136261u, c->dyn[i].sql, strlen(c->dyn[i].sql));
            size_t k = hh & (ncap - 1);
            while (nd[k].sql)
                k = (k + 1) & (ncap - 1);
            nd[k] = c->dyn[i];
        }
        free(c->dyn);
        c->dyn = nd;
        c->ndyncap = ncap;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(s, "prepare", c->db, rc);
    char *copy = strdup(sql);
    if (!copy) {
        sqlite3_finalize(st);
        return BNB_ENOMEM;
    }
    size_t k = h & (c->ndyncap - 1);
    while (c->dyn[k].sql)
        k = (k + 1) & (c->ndyncap - 1);
    c->dyn[k].sql = copy;
    c->dyn[k].st = st;
    c->ndyn++;
    *out = st;
    return 0;
}

static int sq_bind_text(sq_store_t *s, sq_conn_t *c, sqlite3_stmt *q, int idx, const char *v)
{
    int rc = v ? sqlite3_bind_text(q, idx, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(q, idx);
    if (rc != SQLITE_OK)
        return sq_fail(s, "bind", c->db, rc);
    return 0;
}

static int sq_bind_i64(sq_store_t *s, sq_conn_t *c, sqlite3_stmt *q, int idx, int64_t v)
{
    int rc = sqlite3_bind_int64(q, idx, (sqlite3_int64)v);
    if (rc != SQLITE_OK)
        return sq_fail(s, "bind", c->db, rc);
    return 0;
}

static int sq_bind_fval(sq_store_t *s, sq_conn_t *c, sqlite3_stmt *q, int idx, const bnb__fval_t *v)
{
    if (v->null)
        return sq_bind_text(s, c, q, idx, NULL);
    if (v->s)
        return sq_bind_text(s, c, q, idx, v->s);
    return sq_bind_i64(s, c, q, idx, v->n);
}

/* Run a statement that returns no row (or whose rows are ignored). A
 * constraint violation returns `on_constraint` (BNB_EINVAL is logged as an
 * error, another code is an expected outcome and is not). */
static int sq_run_c(sq_store_t *s, sq_conn_t *c, sqlite3_stmt *q, const char *what, int on_constraint)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT) {
            if (on_constraint == BNB_EINVAL)
                sq_log_error(s, what, c->db, rc);
            return on_constraint;
        }
        return sq_fail(s, what, c->db, rc);
    }
    return 0;
}

static int sq_run(sq_store_t *s, sq_conn_t *c, sqlite3_stmt *q, const char *what)
{
    return sq_run_c(s, c, q, what, BNB_EINVAL);
}

static int sq_simple(sq_store_t *s, sq_conn_t *c, int which, const char *what)
{
    sqlite3_stmt *q;
    int rc = sq_stmt(s, c, which, &q);
    if (rc != 0)
        return rc;
    return sq_run(s, c, q, what);
}

/* Take write_mu, counted in `waiters` meanwhile so that a batch gives way. */
static void sq_write_lock(sq_store_t *s)
{
    __atomic_add_fetch(&s->waiters, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_lock(&s->write_mu);
    __atomic_sub_fetch(&s->waiters, 1, __ATOMIC_ACQ_REL);
}

/* Open the writer connection (under write_mu). */
static int sq_writer_open(sq_store_t *s)
{
    int rc = sq_conn_open(s, false, &s->wconn, NULL, 0);
    if (rc != 0)
        s->wconn = NULL;
    return rc;
}

/* Start a write transaction on the store's writer connection (*c). Writers of
 * this process queue on write_mu rather than in SQLite's busy handler, which
 * sleeps and retries and can starve one writer past the busy timeout under a
 * steady stream of commits; the busy timeout is left for writers in other
 * processes. One connection does every write: its page cache is never
 * invalidated by another connection's commit (SQLite drops a connection's
 * whole cache when the WAL changed under it), so a commit finds its pages in
 * memory. A batch this thread holds is committed first. */
static int sq_begin(sq_store_t *s, sq_conn_t **c)
{
    int rc = 0;
    if (tl_batch.s)
        (void)sq_batch_close(); /* its error, if any, waits in tl_batch.err */
    sq_write_lock(s);
    if (!s->wconn && (rc = sq_writer_open(s)) != 0) {
        pthread_mutex_unlock(&s->write_mu);
        return rc;
    }
    rc = sq_simple(s, s->wconn, Q_BEGIN, "begin");
    if (rc != 0)
        pthread_mutex_unlock(&s->write_mu);
    else
        *c = s->wconn;
    return rc;
}

/* fsync the WAL through c's own handle of it (c belongs to this thread). */
static int sq_sync_wal(sq_store_t *s, sq_conn_t *c)
{
    sqlite3_file *f = NULL;
    int rc = sqlite3_file_control(c->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
    if (rc == SQLITE_OK && (!f || !f->pMethods)) {
        /* the WAL is opened by a connection's first read: read once */
        sqlite3_stmt *q;
        if ((rc = sq_stmt(s, c, Q_PING, &q)) != 0 || (rc = sq_run(s, c, q, "ping")) != 0)
            return rc;
        rc = sqlite3_file_control(c->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
    }
    if (rc != SQLITE_OK)
        return sq_fail(s, "journal pointer", c->db, rc);
    if (!f || !f->pMethods)
        return sq_fail(s, "wal fsync: no WAL open", NULL, SQLITE_IOERR);
    rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
    return rc == SQLITE_OK ? 0 : sq_fail(s, "wal fsync", NULL, rc);
}

/* Wait until commit number `upto` (s->written after it) is on disk: run the
 * fsync when no other thread does (it covers every commit done by then), else
 * wait for the running one and look again. The leader syncs through the
 * store's own sync connection (fsync acts on the file, any handle of the WAL
 * will do), so a commit never waits for a pooled connection to sync. */
static int sq_durable(sq_store_t *s, uint64_t upto)
{
    int rc = 0;
    pthread_mutex_lock(&s->sync_mu);
    while (s->synced < upto) {
        if (s->syncing) {
            pthread_cond_wait(&s->sync_cv, &s->sync_mu);
            continue;
        }
        s->syncing = true;
        uint64_t target = __atomic_load_n(&s->written, __ATOMIC_ACQUIRE);
        pthread_mutex_unlock(&s->sync_mu);
        if (!s->sconn && (rc = sq_conn_open(s, false, &s->sconn, NULL, 0)) != 0)
            s->sconn = NULL;
        if (s->sconn)
            rc = sq_sync_wal(s, s->sconn);
        pthread_mutex_lock(&s->sync_mu);
        s->syncing = false;
        if (rc == 0 && target > s->synced)
            s->synced = target;
        pthread_cond_broadcast(&s->sync_cv);
        if (rc != 0)
            break;
    }
    pthread_mutex_unlock(&s->sync_mu);
    return rc;
}

/* Count a write done under write_mu (still held); its number for sq_durable. */
static uint64_t sq_written(sq_store_t *s)
{
    return __atomic_add_fetch(&s->written, 1, __ATOMIC_ACQ_REL);
}

/* Everything committed until now, on disk (the outbox reader's barrier). */
static int sq_durable_now(sq_store_t *s)
{
    if (tl_batch.s)
        (void)sq_batch_close();
    sq_write_lock(s); /* a commit visible now has counted itself */
    uint64_t upto = __atomic_load_n(&s->written, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&s->write_mu);
    return sq_durable(s, upto);
}

/* bnb_storage_defer_end's flush: the batch this thread holds committed, then
 * commits up to `upto` on disk. */
static int sq_flush(bnb_store_t *st, uint64_t upto)
{
    sq_store_t *s = (sq_store_t *)st;
    int rc = tl_batch.s ? sq_batch_close() : 0; /* its number is added to its store's entry */
    if (tl_batch.err) {
        rc = tl_batch.err; /* commits that answered 0 were lost: deliver the batch again */
        tl_batch.err = 0;
    }
    return rc ? rc : sq_durable(s, upto);
}

/* COMMIT when rc is 0, else ROLLBACK; ends what sq_begin started. A commit
 * returns once it is on disk (group commit: sq_durable), unless the thread
 * defers that (bnb_storage_defer_begin) or `durable` is false (a write whose
 * loss only repeats work, e.g. an outbox ack: the events go out again and the
 * consumers are idempotent). */
static int sq_end_as(sq_store_t *s, sq_conn_t *c, int rc, bool durable)
{
    uint64_t mine = 0;
    if (rc == 0 && (rc = sq_simple(s, c, Q_COMMIT, "commit")) == 0)
        mine = sq_written(s);
    if (rc != 0 && !sqlite3_get_autocommit(c->db))
        sq_simple(s, c, Q_ROLLBACK, "rollback");
    pthread_mutex_unlock(&s->write_mu);
    if (rc == 0 && durable && !bnb__storage_defer(&s->base, sq_flush, mine))
        rc = sq_durable(s, mine);
    return rc;
}

static int sq_end(sq_store_t *s, sq_conn_t *c, int rc)
{
    return sq_end_as(s, c, rc, true);
}

/* ---- batches: consumers' commits in one transaction ---------------------------
 * While a thread defers durability (the relay delivering a batch of events,
 * bnb_storage_defer_begin), its commits to one store share one transaction:
 * the first opens it (write_mu held, BEGIN IMMEDIATE on the writer
 * connection), each commit is a savepoint in it (released, or rolled back
 * alone when it fails: a version clash, a claim taken), and the transaction
 * is committed when the thread commits to another store, gives way (another
 * thread waits for write_mu, or SQ_BATCH_MAX commits), or ends the deferral
 * (sq_flush, before the fsync). Pages written by many commits go to the WAL
 * once, and the thread's reads of that store meanwhile go through the writer
 * connection (sq_acquire), so it reads its own commits. A thread holds at most
 * one batch, so write_mu is never held while waiting for another store's.
 * A batch that cannot be committed leaves its error for sq_flush: the relay
 * then delivers the whole batch again (the consumers are idempotent). */

/* Commit the batch this thread holds and give write_mu back. */
static int sq_batch_close(void)
{
    sq_store_t *s = tl_batch.s;
    if (!s)
        return 0;
    tl_batch.s = NULL;
    tl_batch.n = 0;
    int rc = sq_simple(s, s->wconn, Q_COMMIT, "commit");
    uint64_t mine = rc == 0 ? sq_written(s) : 0;
    if (rc != 0) {
        if (!sqlite3_get_autocommit(s->wconn->db))
            sq_simple(s, s->wconn, Q_ROLLBACK, "rollback");
        if (!tl_batch.err)
            tl_batch.err = rc;
    }
    pthread_mutex_unlock(&s->write_mu);
    if (rc == 0)
        (void)bnb__storage_defer(&s->base, sq_flush, mine); /* registered when the batch opened */
    return rc;
}

/* Enter a batch of store s for one commit: 0 and a savepoint open on s->wconn,
 * 1 when this thread does not defer (commit alone), or an error. */
static int sq_batch_enter(sq_store_t *s)
{
    int rc;
    if (tl_batch.s &&
        (tl_batch.s != s || tl_batch.n >= SQ_BATCH_MAX || __atomic_load_n(&s->waiters, __ATOMIC_ACQUIRE) > 0))
        (void)sq_batch_close();
    if (!tl_batch.s) {
        if (!bnb__storage_defer(&s->base, sq_flush, 0))
            return 1;
        sq_write_lock(s);
        if (!s->wconn && (rc = sq_writer_open(s)) != 0) {
            pthread_mutex_unlock(&s->write_mu);
            return rc;
        }
        if ((rc = sq_simple(s, s->wconn, Q_BEGIN, "begin")) != 0) {
            pthread_mutex_unlock(&s->write_mu);
            return rc;
        }
        tl_batch.s = s;
        tl_batch.n = 0;
    }
    if ((rc = sq_simple(s, s->wconn, Q_SAVEPOINT, "savepoint")) != 0) {
        (void)sq_batch_close();
        return rc;
    }
    tl_batch.n++;
    return 0;
}

/* Leave the savepoint of one commit: kept when rc is 0, else rolled back. A
 * commit that lost a race (BNB_EEXIST, BNB_ENOENT: its caller reads again and
 * retries, maybe after a pause) commits the batch, so that no one waits for
 * write_mu meanwhile. */
static int sq_batch_leave(sq_store_t *s, int rc)
{
    sq_conn_t *c = s->wconn;
    if (rc != 0 && sq_simple(s, c, Q_ROLLBACK_TO, "rollback to savepoint") != 0) {
        /* the transaction is gone (an I/O error rolls it all back) */
        if (!tl_batch.err)
            tl_batch.err = BNB_EIO;
        if (!sqlite3_get_autocommit(c->db))
            sq_simple(s, c, Q_ROLLBACK, "rollback");
        tl_batch.s = NULL;
        tl_batch.n = 0;
        pthread_mutex_unlock(&s->write_mu);
        return rc;
    }
    int r2 = sq_simple(s, c, Q_RELEASE, "release savepoint");
    if (r2 != 0) {
        if (!tl_batch.err)
            tl_batch.err = r2;
        if (!sqlite3_get_autocommit(c->db))
            sq_simple(s, c, Q_ROLLBACK, "rollback");
        tl_batch.s = NULL;
        tl_batch.n = 0;
        pthread_mutex_unlock(&s->write_mu);
        return rc ? rc : r2;
    }
    if (rc == BNB_EEXIST || rc == BNB_ENOENT)
        (void)sq_batch_close();
    return rc;
}

/* One-off SQL without parameters (DDL). */
static int sq_exec(sq_store_t *s, sq_conn_t *c, const char *sql, const char *what)
{
    char *err = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &err);
    if (rc == SQLITE_OK)
        return 0;
    char msg[600];
    snprintf(msg, sizeof msg, "sqlite %s: %s (code %d)", what, err ? err : sqlite3_errstr(rc), rc);
    sqlite3_free(err);
    sq_log_line(s, msg);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return BNB_EINVAL;
    return (rc & 0xff) == SQLITE_NOMEM ? BNB_ENOMEM : BNB_EIO;
}

/* ---- declared collections: names and SQL pieces ------------------------------ */

static void tname(char *buf, size_t n, const bnb__coll_t *dc)
{
    snprintf(buf, n, "\"c_%s\"", dc->name);
}

/* The SQL expression of declared field i read from the JSON body. */
static void sb_extract(sq_sb_t *b, const bnb__coll_t *dc, size_t i)
{
    sb_addf(b, "CASE WHEN json_type(body, '$.%s') = '%s' THEN json_extract(body, '$.%s') END", dc->fields[i].name,
            dc->fields[i].type == BNB_FIELD_STR ? "text" : "integer", dc->fields[i].name);
}

/* Create or extend the table, columns and indexes of dc (inside a write
 * transaction), move its documents out of docs when the table is new, and
 * record the definition. */
static int sq_apply_coll(sq_store_t *s, sq_conn_t *c, const bnb__coll_t *dc)
{
    char t[64];
    sq_sb_t b = {0};
    sqlite3_stmt *q = NULL;
    int rc;
    bool exists;

    tname(t, sizeof t, dc);
    if ((rc = sq_stmt(s, c, Q_TABLE_EXISTS, &q)) != 0)
        return rc;
    {
        char raw[48];
        snprintf(raw, sizeof raw, "c_%s", dc->name);
        if ((rc = sq_bind_text(s, c, q, 1, raw)) != 0)
            return rc;
    }
    rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_fail(s, "define", c->db, rc);
    exists = rc == SQLITE_ROW;

    if (!exists) {
        sb_addf(&b,
                "CREATE TABLE %s (id TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL,"
                " key1 TEXT, key2 TEXT",
                t);
        for (size_t i = 0; i < dc->nfields; i++)
            sb_addf(&b, ", \"f_%s\" %s", dc->fields[i].name, dc->fields[i].type == BNB_FIELD_STR ? "TEXT" : "INTEGER");
        sb_addf(&b, ") WITHOUT ROWID; CREATE INDEX \"c_%s_key1\" ON %s(key1); CREATE INDEX \"c_%s_key2\" ON %s(key2);",
                dc->name, t, dc->name, t);
        /* its documents so far lived in docs: move them */
        sb_addf(&b, "INSERT INTO %s(id, version, body, key1, key2", t);
        for (size_t i = 0; i < dc->nfields; i++)
            sb_addf(&b, ", \"f_%s\"", dc->fields[i].name);
        sb_addf(&b, ") SELECT id, version, body, key1, key2");
        for (size_t i = 0; i < dc->nfields; i++) {
            sb_addf(&b, ", ");
            sb_extract(&b, dc, i);
        }
        sb_addf(&b, " FROM docs WHERE coll = '%s'; DELETE FROM docs WHERE coll = '%s';", dc->name, dc->name);
    } else {
        /* columns it has: add the missing ones, filled from the bodies */
        sq_sb_t ti = {0};
        sb_addf(&ti, "PRAGMA table_info(%s)", t);
        if (ti.oom) {
            rc = BNB_ENOMEM;
            goto out;
        }
        rc = sqlite3_prepare_v2(c->db, ti.p, -1, &q, NULL);
        free(ti.p);
        if (rc != SQLITE_OK) {
            rc = sq_fail(s, "define", c->db, rc);
            goto out;
        }
        bool have[BNB__FIELDS_MAX] = {0};
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            const char *col = (const char *)sqlite3_column_text(q, 1);
            const char *type = (const char *)sqlite3_column_text(q, 2);
            if (!col || strncmp(col, "f_", 2) != 0)
                continue;
            int f = bnb__coll_field(dc, col + 2);
            if (f < 0)
                continue;
            have[f] = true;
            const char *want = dc->fields[f].type == BNB_FIELD_STR ? "TEXT" : "INTEGER";
            if (!type || strcmp(type, want) != 0) {
                char msg[200];
                snprintf(msg, sizeof msg, "sqlite define: collection %s: field %s is %s in the database, not %s",
                         dc->name, dc->fields[f].name, type ? type : "?", want);
                sq_log_line(s, msg);
                sqlite3_finalize(q);
                q = NULL;
                rc = BNB_EINVAL;
                goto out;
            }
        }
        sqlite3_finalize(q);
        q = NULL;
        if (rc != SQLITE_DONE) {
            rc = sq_fail(s, "define", c->db, rc);
            goto out;
        }
        for (size_t i = 0; i < dc->nfields; i++) {
            if (have[i])
                continue;
            sb_addf(&b, "ALTER TABLE %s ADD COLUMN \"f_%s\" %s; UPDATE %s SET \"f_%s\" = ", t, dc->fields[i].name,
                    dc->fields[i].type == BNB_FIELD_STR ? "TEXT" : "INTEGER", t, dc->fields[i].name);
            sb_extract(&b, dc, i);
            sb_addf(&b, ";");
        }
    }
    for (size_t i = 0; i < dc->nindexes; i++) {
        const bnb__index_t *x = &dc->indexes[i];
        sb_addf(&b, "CREATE %sINDEX IF NOT EXISTS \"c_%s_%s\" ON %s(", x->unique ? "UNIQUE " : "", dc->name, x->name,
                t);
        for (int k = 0; k < x->nf; k++)
            sb_addf(&b, "%s\"f_%s\"", k ? ", " : "", dc->fields[x->f[k]].name);
        sb_addf(&b, "%s);", x->unique ? "" : ", id");
    }
    if (b.oom) {
        rc = BNB_ENOMEM;
        goto out;
    }
    if (b.p && (rc = sq_exec(s, c, b.p, "define")) != 0)
        goto out;
    {
        char *def = bnb__coll_dump(dc);
        if (!def) {
            rc = BNB_ENOMEM;
            goto out;
        }
        if ((rc = sq_stmt(s, c, Q_COLL_PUT, &q)) == 0 && (rc = sq_bind_text(s, c, q, 1, dc->name)) == 0 &&
            (rc = sq_bind_text(s, c, q, 2, def)) == 0)
            rc = sq_run(s, c, q, "define");
        q = NULL;
        free(def);
    }
out:
    free(b.p);
    return rc;
}

/* ---- checkpoints ------------------------------------------------------------ */

/* Copy the WAL into the database file, off the commit path. SQLite's
 * auto-checkpoint runs inside the COMMIT that crosses its threshold, so that
 * commit (and every writer queued behind write_mu) waited for ~1000 pages to
 * be copied and for the database file's fsync. Here a thread per store does
 * it: first a PASSIVE checkpoint while the writers go on (the bulk of the
 * copying and the large fsync), then a second one under write_mu that copies
 * what was committed meanwhile, so the WAL is wholly checkpointed and the next
 * writer starts it again from the beginning (a WAL kept only by passive
 * checkpoints under a steady stream of commits would grow without end).
 * Durability is unchanged: a checkpoint syncs the WAL before it copies and
 * the database file before the WAL may be restarted (synchronous = NORMAL). */
static void sq_checkpoint(sq_store_t *s, sq_conn_t *c)
{
    int nlog = 0, nckpt = 0;
    int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
    if (rc == SQLITE_OK || (rc & 0xff) == SQLITE_BUSY) {
        sq_write_lock(s);
        rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
        __atomic_store_n(&s->wal_frames, 0, __ATOMIC_RELAXED); /* the next commit says again */
        pthread_mutex_unlock(&s->write_mu);
    }
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) /* BUSY: another process checkpoints */
        sq_log_error(s, "checkpoint", c->db, rc);
}

static void *sq_ckpt_main(void *arg)
{
    sq_store_t *s = arg;
    sq_conn_t *c = NULL;
    pthread_mutex_lock(&s->ckpt_mu);
    while (!s->ckpt_stop) {
        if (__atomic_load_n(&s->wal_frames, __ATOMIC_RELAXED) < SQ_CKPT_FRAMES) {
            pthread_cond_wait(&s->ckpt_cv, &s->ckpt_mu);
            continue;
        }
        pthread_mutex_unlock(&s->ckpt_mu);
        if (c || sq_conn_open(s, false, &c, NULL, 0) == 0)
            sq_checkpoint(s, c);
        /* at most ~20 rounds a second, whatever a reader holding an old
         * snapshot leaves uncopied */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&s->ckpt_mu);
        while (!s->ckpt_stop && pthread_cond_timedwait(&s->ckpt_cv, &s->ckpt_mu, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&s->ckpt_mu);
    sq_conn_free(c);
    return NULL;
}

/* ---- open / close / ping --------------------------------------------------- */

static void sq_close(bnb_store_t *st)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c;

    if (!s)
        return;
    if (s->ckpt_started) {
        pthread_mutex_lock(&s->ckpt_mu);
        s->ckpt_stop = true;
        pthread_cond_signal(&s->ckpt_cv);
        pthread_mutex_unlock(&s->ckpt_mu);
        pthread_join(s->ckpt, NULL);
    }
    while ((c = s->idle)) {
        s->idle = c->next;
        sq_conn_free(c);
    }
    sq_conn_free(s->wconn);
    sq_conn_free(s->sconn);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->define_mu);
    pthread_mutex_destroy(&s->write_mu);
    pthread_mutex_destroy(&s->sync_mu);
    pthread_cond_destroy(&s->sync_cv);
    pthread_mutex_destroy(&s->ckpt_mu);
    pthread_cond_destroy(&s->ckpt_cv);
    bnb__colls_destroy(&s->colls);
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

/* The definitions recorded in the file (declared by an earlier run). */
static int sq_load_colls(sq_store_t *s, sq_conn_t *c)
{
    sqlite3_stmt *q;
    int rc = sq_stmt(s, c, Q_COLLS_ALL, &q);
    if (rc)
        return rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(q, 0);
        const char *def = (const char *)sqlite3_column_text(q, 1);
        bnb__coll_t *dc = name && def ? bnb__coll_load(name, def) : NULL;
        if (!dc) {
            char msg[200];
            snprintf(msg, sizeof msg, "sqlite: the recorded definition of collection %s is unreadable",
                     name ? name : "?");
            sq_log_line(s, msg);
            sqlite3_reset(q);
            return BNB_EIO;
        }
        if ((rc = bnb__colls_put(&s->colls, dc)) != 0) {
            sqlite3_reset(q);
            return rc;
        }
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : sq_fail(s, "load definitions", c->db, rc);
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
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sq_global_setup);

    s = calloc(1, sizeof(*s));
    if (!s)
        return BNB_ENOMEM;
    s->base.ops = &bnb_storage_sqlite;
    s->max = cfg->pool_size > 0 ? cfg->pool_size : SQ_DEFAULT_POOL;
    s->path = strdup(cfg->path);
    s->name = strdup(cfg->name ? cfg->name : "");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->define_mu, NULL);
    pthread_mutex_init(&s->write_mu, NULL);
    pthread_mutex_init(&s->sync_mu, NULL);
    pthread_cond_init(&s->sync_cv, NULL);
    pthread_mutex_init(&s->ckpt_mu, NULL);
    pthread_cond_init(&s->ckpt_cv, NULL);
    bnb__colls_init(&s->colls);
    if (!s->path || !s->name) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    rc = sq_conn_open(s, true, &c, errbuf, errlen);
    if (rc != 0)
        goto fail;
    s->idle = c;
    s->nconn = 1;
    if ((rc = sq_load_colls(s, c)) != 0) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "sqlite: cannot read the collection definitions in '%s'", s->path);
        goto fail;
    }
    if (pthread_create(&s->ckpt, NULL, sq_ckpt_main, s) != 0) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "sqlite: cannot start the checkpoint thread of '%s'", s->path);
        rc = BNB_ENOMEM;
        goto fail;
    }
    s->ckpt_started = true;
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

static int sq_define(bnb_store_t *st, const bnb_coll_def_t *defs, size_t n)
{
    sq_store_t *s = (sq_store_t *)st;
    bnb__coll_t **merged = NULL;
    sq_conn_t *c = NULL;
    char err[256];
    int rc;

    if (!s)
        return BNB_EINVAL;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&s->define_mu);
    if ((rc = bnb__define_merge(&s->colls, defs, n, &merged, NULL, err, sizeof err)) != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "sqlite define: %s", err);
        if (rc == BNB_EINVAL)
            sq_log_line(s, msg);
        goto out;
    }
    if ((rc = sq_begin(s, &c)) == 0) {
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = sq_apply_coll(s, c, merged[i]);
        rc = sq_end(s, c, rc);
    }
    if (rc == 0)
        rc = bnb__define_register(&s->colls, merged, n);
out:
    pthread_mutex_unlock(&s->define_mu);
    bnb__define_free(merged, NULL, n);
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
        snprintf(msg, sizeof(msg), "sqlite: stored body is not JSON: %s", text ? jerr.text : "NULL");
        sq_log_line(s, msg);
        return BNB_EIO;
    }
    return 0;
}

/* One document on connection c: 0 with *body (when body is not NULL) and
 * *version, BNB_ENOENT when absent, or an error. */
static int sq_get_on(sq_store_t *s, sq_conn_t *c, const bnb__coll_t *dc, const char *coll, const char *id,
                     json_t **body, int64_t *version)
{
    sqlite3_stmt *q = NULL;
    int rc;
    if (dc) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT version, body FROM \"c_%s\" WHERE id = ?1", dc->name);
        if ((rc = sq_dyn(s, c, sql, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, id)) != 0)
            goto out;
    } else if ((rc = sq_stmt(s, c, Q_GET, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, coll)) != 0 ||
               (rc = sq_bind_text(s, c, q, 2, id)) != 0) {
        goto out;
    }
    rc = sqlite3_step(q);
    if (rc == SQLITE_DONE) {
        rc = BNB_ENOENT;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        rc = sq_fail(s, "get", c->db, rc);
        goto out;
    }
    *version = sqlite3_column_int64(q, 0);
    rc = body ? sq_parse_body(s, q, 1, body) : 0;
out:
    if (q)
        sqlite3_reset(q);
    return rc;
}

static int sq_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    json_t *doc = NULL;
    int64_t ver = 0;
    int rc;

    if (body)
        *body = NULL;
    if (!s || !coll || !id)
        return BNB_EINVAL;
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    if ((rc = sq_acquire(s, &c)) != 0)
        return rc;
    rc = sq_get_on(s, c, dc, coll, id, body ? &doc : NULL, &ver);
    sq_release(s, c);
    if (rc != 0)
        return rc;
    if (body)
        *body = doc;
    if (version)
        *version = ver;
    return 0;
}

/* get_many: the ids one after the other on one connection (each a lookup of
 * the primary key; in-process, so no round trip to save). */
static int sq_get_many(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, json_t **items)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_conn_t *c = NULL;
    json_t *arr = NULL;
    int rc = bnb__get_many_check(coll, ids, n, items);
    if (rc != 0 || !s)
        return rc ? rc : BNB_EINVAL;
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    if (!(arr = json_array()))
        return BNB_ENOMEM;
    if ((rc = sq_acquire(s, &c)) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        json_t *doc = NULL, *item;
        int64_t ver = 0;
        rc = sq_get_on(s, c, dc, coll, ids[i], &doc, &ver);
        if (rc == BNB_ENOENT)
            item = json_null();
        else if (rc != 0)
            break;
        else
            item = bnb__get_many_item(ids[i], ver, doc);
        rc = 0;
        if (!item || json_array_append_new(arr, item) != 0) {
            rc = BNB_ENOMEM;
            break;
        }
    }
    sq_release(s, c);
    if (rc != 0)
        goto fail;
    *items = arr;
    return 0;
fail:
    json_decref(arr);
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
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    arr = json_array();
    if (!arr)
        return BNB_ENOMEM;
    rc = sq_acquire(s, &c);
    if (rc != 0)
        goto fail_noconn;
    if (dc) {
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT id, version, body FROM \"c_%s\"%s ORDER BY id", dc->name,
                 which == 0   ? ""
                 : which == 1 ? " WHERE key1 = ?1"
                              : " WHERE key2 = ?1");
        if ((rc = sq_dyn(s, c, sql, &q)) != 0 || (which > 0 && (rc = sq_bind_text(s, c, q, 1, value)) != 0))
            goto fail;
    } else if ((rc = sq_stmt(s, c,
                             which == 0   ? Q_LIST_ALL
                             : which == 1 ? Q_LIST_K1
                                          : Q_LIST_K2,
                             &q)) != 0 ||
               (rc = sq_bind_text(s, c, q, 1, coll)) != 0 ||
               (which > 0 && (rc = sq_bind_text(s, c, q, 2, value)) != 0)) {
        goto fail;
    }
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

/* ---- queries --------------------------------------------------------------- */

/* The SQL of a checked query (see the top comment); its parameters are bound
 * by sq_query_bind in the same order. */
static int sq_query_sql(const bnb__plan_t *p, sq_sb_t *b)
{
    const bnb__coll_t *dc = p->coll;
    const bnb_query_t *q = p->q;
    static const char *const ops[] = {"", "=", "<", "<=", ">", ">="};
    const char *dir = q->descending ? "DESC" : "ASC";
    int n = 0;

    sb_addf(b, "SELECT id, version, body");
    if (p->order >= 0)
        sb_addf(b, ", \"f_%s\"", dc->fields[p->order].name);
    sb_addf(b, " FROM \"c_%s\"", dc->name);
    const char *glue = " WHERE ";
    for (size_t i = 0; i < q->nconds; i++) {
        if (bnb__plan_implied(p, i))
            continue;
        sb_addf(b, "%s\"f_%s\" %s ?%d", glue, dc->fields[p->cf[i]].name, ops[q->conds[i].op], ++n);
        glue = " AND ";
    }
    if (p->order >= 0) {
        sb_addf(b, "%s\"f_%s\" IS NOT NULL", glue, dc->fields[p->order].name);
        glue = " AND ";
        if (p->has_cursor) {
            sb_addf(b, "%s(\"f_%s\", id) %s (?%d, ?%d)", glue, dc->fields[p->order].name, q->descending ? "<" : ">",
                    n + 1, n + 2);
            n += 2;
        }
        sb_addf(b, " ORDER BY \"f_%s\" %s, id %s", dc->fields[p->order].name, dir, dir);
    } else {
        if (p->has_cursor)
            sb_addf(b, "%sid %s ?%d", glue, q->descending ? "<" : ">", ++n);
        sb_addf(b, " ORDER BY id %s", dir);
    }
    sb_addf(b, " LIMIT ?%d", ++n);
    return b->oom ? BNB_ENOMEM : 0;
}

static int sq_query_bind(sq_store_t *s, sq_conn_t *c, const bnb__plan_t *p, sqlite3_stmt *st)
{
    const bnb_query_t *q = p->q;
    int n = 0, rc = 0;
    for (size_t i = 0; i < q->nconds && !rc; i++) {
        const bnb_cond_t *k = &q->conds[i];
        if (bnb__plan_implied(p, i))
            continue;
        rc = k->str ? sq_bind_text(s, c, st, ++n, k->str) : sq_bind_i64(s, c, st, ++n, k->num);
    }
    if (!rc && p->has_cursor) {
        if (p->order >= 0)
            rc = sq_bind_fval(s, c, st, ++n, &p->cur_ord);
        if (!rc)
            rc = sq_bind_text(s, c, st, ++n, p->cur_id);
    }
    if (!rc)
        rc = sq_bind_i64(s, c, st, ++n, (int64_t)q->limit + 1);
    return rc;
}

static int sq_query(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next)
{
    sq_store_t *s = (sq_store_t *)st;
    bnb__plan_t p;
    sq_sb_t sql = {0};
    sq_conn_t *c = NULL;
    sqlite3_stmt *stm = NULL;
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
    if ((rc = sq_query_sql(&p, &sql)) != 0)
        goto out;
    if (!(arr = json_array())) {
        rc = BNB_ENOMEM;
        goto out;
    }
    if ((rc = sq_acquire(s, &c)) != 0)
        goto out;
    if ((rc = sq_dyn(s, c, sql.p, &stm)) != 0 || (rc = sq_query_bind(s, c, &p, stm)) != 0)
        goto release;
    size_t got = 0;
    while ((rc = sqlite3_step(stm)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(stm, 0);
        if (got == q->limit) { /* one more than asked: there is a next page */
            if (!(*next = bnb__cursor_after(&p, json_array_get(arr, got - 1)))) {
                rc = BNB_ENOMEM;
                goto release;
            }
            rc = SQLITE_DONE;
            break;
        }
        json_t *body = NULL, *item;
        if ((rc = sq_parse_body(s, stm, 2, &body)) != 0)
            goto release;
        item = json_pack("{s:s, s:I, s:o}", "id", id ? id : "", "version", (json_int_t)sqlite3_column_int64(stm, 1),
                         "body", body);
        if (!item || json_array_append_new(arr, item) != 0) {
            rc = BNB_ENOMEM;
            goto release;
        }
        got++;
    }
    rc = rc == SQLITE_DONE ? 0 : sq_fail(s, "query", c->db, rc);
release:
    if (stm)
        sqlite3_reset(stm);
    sq_release(s, c);
out:
    free(sql.p);
    bnb__plan_free(&p);
    if (rc) {
        json_decref(arr);
        free(*next);
        *next = NULL;
        return rc;
    }
    *items = arr;
    return 0;
}

/* For tests: the plan SQLite chooses for query q (EXPLAIN QUERY PLAN, one
 * line per step). *plan is malloc'ed. */
int bnb__sqlite_explain(bnb_store_t *st, const bnb_query_t *q, char **plan);

int bnb__sqlite_explain(bnb_store_t *st, const bnb_query_t *q, char **plan)
{
    sq_store_t *s = (sq_store_t *)st;
    bnb__plan_t p;
    sq_sb_t sql = {0}, out = {0};
    sq_conn_t *c = NULL;
    sqlite3_stmt *stm = NULL;
    int rc;

    *plan = NULL;
    if ((rc = bnb__plan_make(bnb__colls_get(&s->colls, q->coll), q, &p)) != 0)
        return rc;
    sb_addf(&sql, "EXPLAIN QUERY PLAN ");
    if ((rc = sq_query_sql(&p, &sql)) != 0 || (rc = sq_acquire(s, &c)) != 0)
        goto out;
    if (sqlite3_prepare_v2(c->db, sql.p, -1, &stm, NULL) != SQLITE_OK) {
        rc = sq_fail(s, "explain", c->db, SQLITE_ERROR);
    } else if ((rc = sq_query_bind(s, c, &p, stm)) == 0) {
        while (sqlite3_step(stm) == SQLITE_ROW)
            sb_addf(&out, "%s\n", (const char *)sqlite3_column_text(stm, 3));
        *plan = out.p;
        out.p = NULL;
        if (!*plan)
            rc = BNB_ENOMEM;
    }
    sqlite3_finalize(stm);
    sq_release(s, c);
out:
    free(sql.p);
    free(out.p);
    bnb__plan_free(&p);
    return rc;
}

/* ---- commits --------------------------------------------------------------- */

/* One commit, from store_commit (keys given) or store_commit2 (claims). */
typedef struct sq_w {
    const bnb_commit_t *c;
    const char *key1, *key2;
    bool set_keys; /* 1.0 commit: a PUT sets key1/key2; commit2 leaves them */
    const char *body_text;
    const bnb__coll_t *dc; /* declared collection or NULL (docs table) */
    const char **claims;   /* normalised (sorted, unique) when c->set_claims */
    size_t nclaims;
} sq_w_t;

static int sq_claims_apply(sq_store_t *s, sq_conn_t *c, const sq_w_t *w)
{
    sqlite3_stmt *q = NULL;
    int rc;
    const bnb_commit_t *cm = w->c;

    if (cm->op == BNB_WRITE_DELETE) {
        if ((rc = sq_stmt(s, c, Q_CLAIMS_DEL_ALL, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, cm->coll)) != 0 ||
            (rc = sq_bind_text(s, c, q, 2, cm->id)) != 0)
            return rc;
        return sq_run(s, c, q, "claims release");
    }
    if (!cm->set_claims)
        return 0;
    /* the claims it holds now */
    char **cur = NULL;
    size_t ncur = 0, cap = 0;
    if ((rc = sq_stmt(s, c, Q_CLAIMS_OF, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, cm->coll)) != 0 ||
        (rc = sq_bind_text(s, c, q, 2, cm->id)) != 0)
        return rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (ncur == cap) {
            cap = cap ? cap * 2 : 16;
            char **nc = realloc(cur, cap * sizeof *nc);
            if (!nc) {
                rc = BNB_ENOMEM;
                goto out;
            }
            cur = nc;
        }
        if (!(cur[ncur] = strdup((const char *)sqlite3_column_text(q, 0)))) {
            rc = BNB_ENOMEM;
            goto out;
        }
        ncur++;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        rc = sq_fail(s, "claims", c->db, rc);
        goto out;
    }
    rc = 0;
    /* take the new ones: a key held by another document is BNB_ETAKEN */
    for (size_t i = 0; i < w->nclaims && !rc; i++) {
        if (bnb__claims_has((const char *const *)cur, ncur, w->claims[i]))
            continue;
        if ((rc = sq_stmt(s, c, Q_CLAIM_PUT, &q)) == 0 && (rc = sq_bind_text(s, c, q, 1, w->claims[i])) == 0 &&
            (rc = sq_bind_text(s, c, q, 2, cm->coll)) == 0 && (rc = sq_bind_text(s, c, q, 3, cm->id)) == 0)
            rc = sq_run_c(s, c, q, "claim", BNB_ETAKEN);
    }
    /* release the ones no longer listed */
    for (size_t i = 0; i < ncur && !rc; i++) {
        if (bnb__claims_has(w->claims, w->nclaims, cur[i]))
            continue;
        if ((rc = sq_stmt(s, c, Q_CLAIM_DEL, &q)) == 0 && (rc = sq_bind_text(s, c, q, 1, cur[i])) == 0)
            rc = sq_run(s, c, q, "claim release");
    }
out:
    if (q)
        sqlite3_reset(q);
    for (size_t i = 0; i < ncur; i++)
        free(cur[i]);
    free(cur);
    return rc;
}

/* The write of a PUT/TOUCH/DELETE on a declared collection's table. */
static int sq_write_declared(sq_store_t *s, sq_conn_t *c, const sq_w_t *w, bool exists, int64_t next)
{
    const bnb__coll_t *dc = w->dc;
    const bnb_commit_t *cm = w->c;
    sq_sb_t sql = {0};
    sqlite3_stmt *q = NULL;
    int rc;

    switch (cm->op) {
    case BNB_WRITE_PUT:
        if (exists) {
            sb_addf(&sql, "UPDATE \"c_%s\" SET version = ?2, body = ?3", dc->name);
            if (w->set_keys)
                sb_addf(&sql, ", key1 = ?4, key2 = ?5");
            for (size_t i = 0; i < dc->nfields; i++)
                sb_addf(&sql, ", \"f_%s\" = ?%zu", dc->fields[i].name, i + 6);
            sb_addf(&sql, " WHERE id = ?1");
        } else {
            sb_addf(&sql, "INSERT INTO \"c_%s\"(id, version, body, key1, key2", dc->name);
            for (size_t i = 0; i < dc->nfields; i++)
                sb_addf(&sql, ", \"f_%s\"", dc->fields[i].name);
            sb_addf(&sql, ") VALUES (?1, ?2, ?3, ?4, ?5");
            for (size_t i = 0; i < dc->nfields; i++)
                sb_addf(&sql, ", ?%zu", i + 6);
            sb_addf(&sql, ")");
        }
        break;
    case BNB_WRITE_TOUCH:
        sb_addf(&sql, "UPDATE \"c_%s\" SET version = ?2 WHERE id = ?1", dc->name);
        break;
    default:
        sb_addf(&sql, "DELETE FROM \"c_%s\" WHERE id = ?1", dc->name);
        break;
    }
    if (sql.oom) {
        rc = BNB_ENOMEM;
        goto out;
    }
    if ((rc = sq_dyn(s, c, sql.p, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, cm->id)) != 0)
        goto out;
    if (cm->op != BNB_WRITE_DELETE && (rc = sq_bind_i64(s, c, q, 2, next)) != 0)
        goto out;
    if (cm->op == BNB_WRITE_PUT) {
        if ((rc = sq_bind_text(s, c, q, 3, w->body_text)) != 0)
            goto out;
        if ((w->set_keys || !exists) && ((rc = sq_bind_text(s, c, q, 4, w->set_keys ? w->key1 : NULL)) != 0 ||
                                         (rc = sq_bind_text(s, c, q, 5, w->set_keys ? w->key2 : NULL)) != 0))
            goto out;
        for (size_t i = 0; i < dc->nfields && !rc; i++) {
            bnb__fval_t v;
            bnb__coll_value(dc, i, cm->body, &v);
            rc = sq_bind_fval(s, c, q, (int)i + 6, &v);
        }
        if (rc)
            goto out;
    }
    /* the primary key cannot clash (existence was checked): a constraint is a unique index */
    rc = sq_run_c(s, c, q, "write", BNB_ETAKEN);
out:
    free(sql.p);
    return rc;
}

/* Inside BEGIN IMMEDIATE: apply the commit; 0 or a BNB code (caller rolls back). */
static int sq_commit_tx(sq_store_t *s, sq_conn_t *c, const sq_w_t *w, const bnb_outbox_new_t *events, size_t nevents,
                        int64_t *new_version)
{
    const bnb_commit_t *cm = w->c;
    const char *applied = cm->applied_event_id;
    sqlite3_stmt *q;
    int64_t cur = 0, next;
    bool exists;
    int rc;

    if (applied) {
        if ((rc = sq_stmt(s, c, Q_APPLIED_GET, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, cm->coll)) != 0 ||
            (rc = sq_bind_text(s, c, q, 2, cm->id)) != 0 || (rc = sq_bind_text(s, c, q, 3, applied)) != 0)
            return rc;
        rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc == SQLITE_ROW)
            return BNB_EALREADY;
        if (rc != SQLITE_DONE)
            return sq_fail(s, "applied check", c->db, rc);
    }

    if (w->dc) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT version FROM \"c_%s\" WHERE id = ?1", w->dc->name);
        if ((rc = sq_dyn(s, c, sql, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, cm->id)) != 0)
            return rc;
    } else if ((rc = sq_stmt(s, c, Q_VERSION, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, cm->coll)) != 0 ||
               (rc = sq_bind_text(s, c, q, 2, cm->id)) != 0) {
        return rc;
    }
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        cur = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_fail(s, "version check", c->db, rc);
    exists = rc == SQLITE_ROW;

    if (cm->expect_version == 0 && exists)
        return BNB_EEXIST;
    if (cm->expect_version > 0 && !exists)
        return BNB_ENOENT;
    if (cm->expect_version > 0 && cur != cm->expect_version)
        return BNB_EEXIST;
    if (cm->op != BNB_WRITE_PUT && !exists)
        return BNB_ENOENT;
    next = exists ? cur + 1 : 1;

    if (w->dc) {
        if ((rc = sq_write_declared(s, c, w, exists, next)) != 0)
            return rc;
    } else {
        switch (cm->op) {
        case BNB_WRITE_PUT:
            if ((rc = sq_stmt(s, c, !exists ? Q_DOC_INSERT : w->set_keys ? Q_DOC_UPDATE : Q_DOC_UPDATE_BODY, &q)) != 0)
                return rc;
            if ((rc = sq_bind_i64(s, c, q, 3, next)) != 0 || (rc = sq_bind_text(s, c, q, 4, w->body_text)) != 0)
                return rc;
            if ((w->set_keys || !exists) && ((rc = sq_bind_text(s, c, q, 5, w->set_keys ? w->key1 : NULL)) != 0 ||
                                             (rc = sq_bind_text(s, c, q, 6, w->set_keys ? w->key2 : NULL)) != 0))
                return rc;
            break;
        case BNB_WRITE_TOUCH:
            if ((rc = sq_stmt(s, c, Q_DOC_TOUCH, &q)) != 0 || (rc = sq_bind_i64(s, c, q, 3, next)) != 0)
                return rc;
            break;
        default:
            if ((rc = sq_stmt(s, c, Q_DOC_DELETE, &q)) != 0)
                return rc;
            break;
        }
        if ((rc = sq_bind_text(s, c, q, 1, cm->coll)) != 0 || (rc = sq_bind_text(s, c, q, 2, cm->id)) != 0 ||
            (rc = sq_run(s, c, q, "write")) != 0)
            return rc;
    }
    if (cm->op == BNB_WRITE_DELETE)
        next = 0; /* the document is gone */

    if ((rc = sq_claims_apply(s, c, w)) != 0)
        return rc;
    if (applied) {
        if ((rc = sq_stmt(s, c, Q_APPLIED_PUT, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, cm->coll)) != 0 ||
            (rc = sq_bind_text(s, c, q, 2, cm->id)) != 0 || (rc = sq_bind_text(s, c, q, 3, applied)) != 0 ||
            (rc = sq_run(s, c, q, "applied mark")) != 0)
            return rc;
    }
    for (size_t i = 0; i < nevents; i++) {
        const bnb_outbox_new_t *e = &events[i];
        if ((rc = sq_stmt(s, c, Q_OUTBOX_PUT, &q)) != 0 || (rc = sq_bind_text(s, c, q, 1, e->event_id)) != 0 ||
            (rc = sq_bind_text(s, c, q, 2, e->topic)) != 0 || (rc = sq_bind_text(s, c, q, 3, e->key)) != 0 ||
            (rc = sq_bind_text(s, c, q, 4, e->payload)) != 0 || (rc = sq_run(s, c, q, "outbox insert")) != 0)
            return rc;
    }
    if (new_version)
        *new_version = next;
    return 0;
}

static int sq_commit_any(sq_store_t *s, sq_w_t *w, const bnb_outbox_new_t *events, size_t nevents, int64_t *new_version)
{
    const bnb_commit_t *cm = w->c;
    sq_conn_t *c = NULL;
    char *body_text = NULL;
    int64_t ver = 0;
    int rc;

    if (!s || (rc = bnb__commit_check(cm, events, nevents)) != 0)
        return BNB_EINVAL;
    w->dc = bnb__colls_get(&s->colls, cm->coll);
    if ((rc = bnb__commit_prepare(w->dc, cm, &w->claims, &w->nclaims)) != 0)
        goto out;
    if (cm->op == BNB_WRITE_PUT) {
        body_text = json_dumps(cm->body, JSON_COMPACT);
        if (!body_text) {
            rc = BNB_ENOMEM;
            goto out;
        }
    }
    w->body_text = body_text;
    rc = sq_batch_enter(s);
    if (rc == 0) {
        rc = sq_batch_leave(s, sq_commit_tx(s, s->wconn, w, events, nevents, &ver));
    } else if (rc == 1) {
        rc = sq_begin(s, &c);
        if (rc == 0)
            rc = sq_end(s, c, sq_commit_tx(s, c, w, events, nevents, &ver));
    }
    if (rc == 0 && new_version)
        *new_version = ver;
out:
    free(w->claims);
    free(body_text);
    return rc;
}

/* ABI 1.0 commit: a commit2 without claims that also sets key1/key2. */
static int sq_commit(bnb_store_t *st, const bnb_write_t *wr, const bnb_outbox_new_t *events, size_t nevents,
                     const char *applied_event_id, int64_t *new_version)
{
    if (!wr)
        return BNB_EINVAL;
    bnb_commit_t cm;
    bnb__commit_from_write(&cm, wr, applied_event_id);
    sq_w_t w = {.c = &cm, .key1 = wr->key1, .key2 = wr->key2, .set_keys = true};
    return sq_commit_any((sq_store_t *)st, &w, events, nevents, new_version);
}

static int sq_commit2(bnb_store_t *st, const bnb_commit_t *cm, const bnb_outbox_new_t *events, size_t nevents,
                      int64_t *new_version)
{
    sq_w_t w = {.c = cm};
    return sq_commit_any((sq_store_t *)st, &w, events, nevents, new_version);
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
    /* read first, then wait until what was read is on disk: the rows come from
     * commits done before the read ended, all counted in s->written by then */
    if ((rc = sq_bind_i64(s, c, q, 1, (int64_t)max)) != 0)
        goto fail;
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
    q = NULL;
    sq_release(s, c); /* no pooled connection is held while waiting for write_mu */
    c = NULL;
    if (got > 0 && (rc = sq_durable_now(s)) != 0)
        goto fail;
    *out = ents;
    *n = got;
    return 0;
fail:
    if (q)
        sqlite3_reset(q);
    if (c)
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
    rc = sq_begin(s, &c);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!event_ids[i])
            continue;
        if ((rc = sq_stmt(s, c, Q_OUTBOX_ACK, &q)) == 0 && (rc = sq_bind_text(s, c, q, 1, event_ids[i])) == 0)
            rc = sq_run(s, c, q, "outbox ack");
    }
    return sq_end_as(s, c, rc, false);
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
    rc = sq_begin(s, &c);
    if (rc != 0)
        return rc;
    if ((rc = sq_stmt(s, c, Q_PARK, &q)) == 0 && (rc = sq_bind_text(s, c, q, 1, consumer)) == 0 &&
        (rc = sq_bind_text(s, c, q, 2, reason ? reason : "rejected")) == 0 &&
        (rc = sq_bind_text(s, c, q, 3, event_json)) == 0 &&
        (rc = sq_bind_i64(s, c, q, 4, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000)) == 0)
        rc = sq_run(s, c, q, "park");
    return sq_end_as(s, c, rc, true);
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
    .define = sq_define,
    .query = sq_query,
    .commit2 = sq_commit2,
    .get_many = sq_get_many,
};

/*
 * What only the SQLite backend promises (the shared guarantees are in
 * test_contract.c): file handling, the connection pool under more threads
 * than connections, rollback of a commit that fails half-way, WAL mode and
 * errors reported as BNB_EIO with one JSON log line.
 */
#include "bnb_storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "storage_test.h"

static char tmpdir[PATH_MAX];

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "%s/bnb-sqlite-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rm_tree(tmpdir);
    return 0;
}

static bnb_store_t *open_db(const char *file, int pool)
{
    char path[PATH_MAX + 64], err[256] = "";
    bnb_storage_config_t cfg = {.backend = NULL, .name = file, .path = path, .pool_size = pool};
    bnb_store_t *st = NULL;

    snprintf(path, sizeof(path), "%s/%s.db", tmpdir, file);
    if (bnb_storage_open(&cfg, &st, err, sizeof(err)) != 0)
        fail_msg("open %s: %s", path, err);
    return st;
}

static int put_event(bnb_store_t *st, const char *id, int64_t expect, int n, const char *applied, const char *event_id)
{
    json_t *b = json_pack("{s:i}", "n", n);
    bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "t", .id = id, .expect_version = expect, .body = b};
    bnb_outbox_new_t ev = {.event_id = event_id, .topic = "bearbnb.test", .key = id, .payload = "{}"};
    int rc = st->ops->commit(st, &w, event_id ? &ev : NULL, event_id ? 1 : 0, applied, NULL);
    json_decref(b);
    return rc;
}

static int get_n(bnb_store_t *st, const char *id, int64_t *ver)
{
    json_t *b = NULL;
    int n;
    assert_rc(st->ops->get(st, "t", id, &b, ver), 0);
    n = (int)json_integer_value(json_object_get(b, "n"));
    json_decref(b);
    return n;
}

static void test_default_backend_is_sqlite(void **state)
{
    bnb_store_t *st = open_db("default", 0);
    (void)state;
    assert_string_equal(st->ops->name, "sqlite");
    assert_ptr_equal(st->ops, &bnb_storage_sqlite);
    assert_ptr_equal(bnb_storage_find("sqlite"), &bnb_storage_sqlite);
    assert_rc(st->ops->ping(st), 0);
    bnb_storage_close(st);
    bnb_storage_close(NULL); /* harmless */
}

static void test_missing_directory(void **state)
{
    char path[PATH_MAX + 64], err[512] = "";
    bnb_storage_config_t cfg = {.backend = "sqlite", .name = "x", .path = path};
    bnb_store_t *st = (bnb_store_t *)&cfg;
    (void)state;

    snprintf(path, sizeof(path), "%s/no-such-dir/x.db", tmpdir);
    assert_int_not_equal(bnb_storage_open(&cfg, &st, err, sizeof(err)), 0);
    assert_null(st);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "does not exist"));
    /* nothing was created */
    snprintf(path, sizeof(path), "%s/no-such-dir", tmpdir);
    assert_int_not_equal(access(path, F_OK), 0);

    /* no path at all */
    cfg.path = NULL;
    err[0] = '\0';
    assert_rc(bnb_storage_open(&cfg, &st, err, sizeof(err)), BNB_EINVAL);
    assert_null(st);
    assert_true(err[0] != '\0');
}

static void test_wal_and_schema(void **state)
{
    char path[PATH_MAX + 64];
    bnb_store_t *st = open_db("wal", 2);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    (void)state;

    assert_rc(put_event(st, "w1", 0, 1, NULL, NULL), 0);
    snprintf(path, sizeof(path), "%s/wal.db", tmpdir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                                        "('docs', 'applied', 'outbox', 'dead_letters')",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 4);
    sqlite3_finalize(q);
    sqlite3_close(db);
    bnb_storage_close(st);
}

/* A commit that fails after it wrote the document (its event id is already
 * queued) leaves nothing behind: document, applied mark and outbox. */
static void test_rollback_midway(void **state)
{
    bnb_store_t *st = open_db("rollback", 0);
    bnb_outbox_entry_t *e = NULL;
    size_t n = 0;
    int64_t v = 0;
    (void)state;

    assert_rc(put_event(st, "r1", 0, 1, NULL, "ev-1"), 0);
    assert_int_not_equal(put_event(st, "r1", 1, 2, "applied-1", "ev-1"), 0);
    assert_int_equal(get_n(st, "r1", &v), 1);
    assert_int_equal(v, 1);
    assert_rc(st->ops->outbox_fetch(st, 10, &e, &n), 0);
    assert_int_equal(n, 1);
    bnb_outbox_entries_free(e, n);
    /* the applied mark was rolled back too */
    assert_rc(put_event(st, "r1", 1, 2, "applied-1", "ev-2"), 0);
    assert_int_equal(get_n(st, "r1", &v), 2);
    assert_int_equal(v, 2);
    assert_rc(put_event(st, "r1", -1, 3, "applied-1", "ev-3"), BNB_EALREADY);
    bnb_storage_close(st);
}

/* After DELETE: applied marks stay, the id starts again at version 1. */
static void test_delete_keeps_marks(void **state)
{
    bnb_store_t *st = open_db("marks", 0);
    bnb_write_t del = {.op = BNB_WRITE_DELETE, .coll = "t", .id = "m1", .expect_version = -1};
    int64_t v = 99;
    (void)state;

    assert_rc(put_event(st, "m1", 0, 1, "ev-a", NULL), 0);
    assert_rc(put_event(st, "m1", 1, 2, NULL, NULL), 0);
    assert_rc(st->ops->commit(st, &del, NULL, 0, "ev-b", &v), 0);
    assert_int_equal(v, 0);
    assert_rc(st->ops->commit(st, &del, NULL, 0, "ev-b", &v), BNB_EALREADY);
    assert_rc(put_event(st, "m1", -1, 5, "ev-a", NULL), BNB_EALREADY);
    assert_rc(put_event(st, "m1", 0, 5, "ev-c", NULL), 0);
    assert_int_equal(get_n(st, "m1", &v), 5);
    assert_int_equal(v, 1);
    bnb_storage_close(st);
}

/* 16 threads on a pool of 2 connections: callers wait, none fails. */
#define NTH  16
#define NOPS 20

typedef struct {
    bnb_store_t *st;
    int tid;
    int errors;
} pool_arg_t;

static void *pool_worker(void *p)
{
    pool_arg_t *a = p;
    char id[32], eid[64];
    snprintf(id, sizeof(id), "doc-%d", a->tid);
    for (int i = 0; i < NOPS; i++) {
        json_t *b = NULL;
        int64_t v = 0;
        snprintf(eid, sizeof(eid), "pool-%d-%d", a->tid, i);
        if (put_event(a->st, id, i, i + 1, NULL, eid) != 0)
            a->errors++;
        if (a->st->ops->get(a->st, "t", id, &b, &v) != 0 || v != i + 1 ||
            json_integer_value(json_object_get(b, "n")) != i + 1)
            a->errors++;
        json_decref(b);
    }
    return NULL;
}

static void test_small_pool_many_threads(void **state)
{
    bnb_store_t *st = open_db("pool", 2);
    pthread_t th[NTH];
    pool_arg_t args[NTH];
    json_t *list = NULL;
    bnb_outbox_entry_t *e = NULL;
    size_t n = 0;
    (void)state;

    for (int i = 0; i < NTH; i++) {
        args[i] = (pool_arg_t){.st = st, .tid = i};
        assert_int_equal(pthread_create(&th[i], NULL, pool_worker, &args[i]), 0);
    }
    for (int i = 0; i < NTH; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    assert_rc(st->ops->list(st, "t", 0, NULL, &list), 0);
    assert_int_equal(json_array_size(list), NTH);
    json_decref(list);
    assert_rc(st->ops->outbox_fetch(st, 10000, &e, &n), 0);
    assert_int_equal(n, NTH * NOPS);
    bnb_outbox_entries_free(e, n);
    bnb_storage_close(st);
}

/* A broken row: BNB_EIO and one JSON error line on stderr. */
static void test_io_error_is_logged(void **state)
{
    char path[PATH_MAX + 64], logpath[PATH_MAX + 64], line[1024] = "";
    bnb_store_t *st = open_db("broken", 0);
    sqlite3 *db = NULL;
    json_t *b = NULL, *j;
    FILE *f;
    int saved, fd;
    (void)state;

    assert_rc(put_event(st, "b1", 0, 1, NULL, NULL), 0);
    snprintf(path, sizeof(path), "%s/broken.db", tmpdir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "UPDATE docs SET body = '{not json' WHERE id = 'b1'", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    snprintf(logpath, sizeof(logpath), "%s/stderr.log", tmpdir);
    fflush(stderr);
    saved = dup(2);
    fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    assert_rc(st->ops->get(st, "t", "b1", &b, NULL), BNB_EIO);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    assert_null(b);

    f = fopen(logpath, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    j = json_loads(line, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    assert_true(json_is_string(json_object_get(j, "msg")));
    json_decref(j);
    bnb_storage_close(st);
}

/* Every query shape with a declared index is served from that index: no
 * scan of the table, no sort (EXPLAIN QUERY PLAN of the very statement the
 * backend runs), first page and later pages alike. */
int bnb__sqlite_explain(bnb_store_t *st, const bnb_query_t *q, char **plan);

static void assert_indexed(bnb_store_t *st, const bnb_query_t *q, const char *what)
{
    /* a later page must start at its cursor in the index, not filter from the range's start */
    const char *cursor_bound = !q->cursor ? NULL : q->order_by ? ",id)" : q->descending ? "id<?" : "id>?";
    char *plan = NULL;
    assert_rc(bnb__sqlite_explain(st, q, &plan), 0);
    assert_non_null(plan);
    fprintf(stderr, "plan of %s:\n%s", what, plan);
    if (strstr(plan, "USING INDEX c_plan_") == NULL && strstr(plan, "USING COVERING INDEX c_plan_") == NULL)
        fail_msg("%s is not served from a declared index:\n%s", what, plan);
    if (strstr(plan, "SCAN ") != NULL || strstr(plan, "TEMP B-TREE") != NULL)
        fail_msg("%s scans or sorts:\n%s", what, plan);
    if (cursor_bound && strstr(plan, cursor_bound) == NULL)
        fail_msg("%s does not seek to the cursor:\n%s", what, plan);
    free(plan);
}

static void test_query_plans(void **state)
{
    static const bnb_field_def_t f[] = {
        {"city", BNB_FIELD_STR}, {"price", BNB_FIELD_INT}, {"host", BNB_FIELD_STR}, {"at", BNB_FIELD_INT}};
    static const bnb_index_def_t x[] = {{{"city", "price", NULL}, 0}, {{"host", NULL}, 0}, {{"at", NULL}, 0}};
    const bnb_coll_def_t d = {"plan", f, 4, x, 3};
    bnb_store_t *st = open_db("plans", 0);
    (void)state;
    assert_rc(st->ops->define(st, &d, 1), 0);
    for (int i = 0; i < 300; i++) {
        char id[16];
        json_t *b = json_pack("{s:s, s:i, s:s, s:i}", "city", i % 2 ? "paris" : "rome", "price", i % 97, "host",
                              i % 5 ? "h1" : "h2", "at", 1000 + i);
        bnb_commit_t c = {.op = BNB_WRITE_PUT, .coll = "plan", .id = id, .expect_version = 0, .body = b};
        snprintf(id, sizeof(id), "p%04d", i);
        assert_rc(st->ops->commit2(st, &c, NULL, 0, NULL), 0);
        json_decref(b);
    }
    /* a real cursor for each shape, from its first page */
    bnb_cond_t city = {.field = "city", .op = BNB_Q_EQ, .str = "paris"};
    bnb_cond_t range[] = {{.field = "city", .op = BNB_Q_EQ, .str = "paris"},
                          {.field = "price", .op = BNB_Q_GE, .num = 10},
                          {.field = "price", .op = BNB_Q_LT, .num = 50}};
    bnb_cond_t host = {.field = "host", .op = BNB_Q_EQ, .str = "h2"};
    bnb_cond_t since = {.field = "at", .op = BNB_Q_GT, .num = 1100};
    const struct {
        const char *what;
        bnb_query_t q;
    } shapes[] = {
        {"city = ? ORDER BY price", {.coll = "plan", .conds = &city, .nconds = 1, .order_by = "price", .limit = 10}},
        {"city = ? ORDER BY price DESC",
         {.coll = "plan", .conds = &city, .nconds = 1, .order_by = "price", .descending = 1, .limit = 10}},
        {"city = ? AND ? <= price < ? ORDER BY price",
         {.coll = "plan", .conds = range, .nconds = 3, .order_by = "price", .limit = 10}},
        {"city = ? AND ? <= price < ? ORDER BY price DESC",
         {.coll = "plan", .conds = range, .nconds = 3, .order_by = "price", .descending = 1, .limit = 10}},
        {"host = ? ORDER BY id", {.coll = "plan", .conds = &host, .nconds = 1, .limit = 10}},
        {"host = ? ORDER BY id DESC", {.coll = "plan", .conds = &host, .nconds = 1, .descending = 1, .limit = 10}},
        {"ORDER BY at", {.coll = "plan", .order_by = "at", .limit = 10}},
        {"ORDER BY at DESC", {.coll = "plan", .order_by = "at", .descending = 1, .limit = 10}},
        {"at > ? ORDER BY at", {.coll = "plan", .conds = &since, .nconds = 1, .order_by = "at", .limit = 10}},
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        bnb_query_t q = shapes[i].q;
        json_t *items = NULL;
        char *next = NULL, what[128];
        assert_indexed(st, &q, shapes[i].what);
        assert_rc(st->ops->query(st, &q, &items, &next), 0);
        assert_int_equal(json_array_size(items), 10);
        assert_non_null(next);
        q.cursor = next;
        snprintf(what, sizeof(what), "%s, after a cursor", shapes[i].what);
        assert_indexed(st, &q, what);
        json_decref(items);
        free(next);
    }
    bnb_storage_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_backend_is_sqlite),
        cmocka_unit_test(test_missing_directory),
        cmocka_unit_test(test_wal_and_schema),
        cmocka_unit_test(test_rollback_midway),
        cmocka_unit_test(test_delete_keeps_marks),
        cmocka_unit_test(test_small_pool_many_threads),
        cmocka_unit_test(test_io_error_is_logged),
        cmocka_unit_test(test_query_plans),
    };
    return cmocka_run_group_tests_name("storage sqlite", tests, setup, teardown);
}

/*
 * The storage contract: one suite that every backend must pass unchanged.
 *
 *   BNB_TEST_BACKEND  sqlite (default), mysql or mongo
 *   BNB_TEST_URL      server URL; falls back to BNB_TEST_MYSQL_URL or
 *                     BNB_TEST_MONGO_URL, then to a local default
 *
 * sqlite runs in a fresh temporary directory. Every run uses its own store
 * name (contract_<pid>_<time>) so repeated runs on a server never collide.
 * Tests share the store but use their own collections / document ids, and
 * drain the outbox first when they look at it.
 */
#include "bnb_storage.h"

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include "storage_test.h"

#define TOPIC "bearbnb.test"

static struct {
    const char *backend;
    const char *url;
    char name[96];
    char dir[PATH_MAX];
    char path[PATH_MAX + 128];
    bnb_storage_config_t cfg;
    bnb_store_t *st;
    unsigned seq; /* for unique event ids */
} fx;

/* ---- helpers ------------------------------------------------------------- */

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

/* A new event id unique within this run (and across runs: has the store name). */
static void new_event_id(char *buf, size_t len, const char *label)
{
    snprintf(buf, len, "%s-%s-%u", fx.name, label, ++fx.seq);
}

static json_t *body_n(int n)
{
    return json_pack("{s:i, s:s}", "n", n, "kind", "test");
}

/* Commit `op` on coll/id with optional applied id and up to one event whose
 * payload is {"id":event_id,"n":n}. */
static int commit1(bnb_write_op_t op, const char *coll, const char *id, int64_t expect, const json_t *body,
                   const char *key1, const char *key2, const char *applied, const char *event_id, int n, int64_t *ver)
{
    bnb_write_t w = {
        .op = op, .coll = coll, .id = id, .expect_version = expect, .body = body, .key1 = key1, .key2 = key2};
    bnb_outbox_new_t ev = {0};
    char payload[512];
    int rc;

    if (event_id) {
        snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"subject\":\"%s\",\"n\":%d}", event_id, id, n);
        ev.event_id = event_id;
        ev.topic = TOPIC;
        ev.key = id;
        ev.payload = payload;
    }
    rc = fx.st->ops->commit(fx.st, &w, event_id ? &ev : NULL, event_id ? 1 : 0, applied, ver);
    return rc;
}

static int put(const char *coll, const char *id, int64_t expect, int n, int64_t *ver)
{
    json_t *b = body_n(n);
    int rc = commit1(BNB_WRITE_PUT, coll, id, expect, b, NULL, NULL, NULL, NULL, 0, ver);
    json_decref(b);
    return rc;
}

/* Body field "n" and version of a document; asserts it exists. */
static int get_n(const char *coll, const char *id, int64_t *ver)
{
    json_t *b = NULL;
    int64_t v = -99;
    int n;

    assert_rc(fx.st->ops->get(fx.st, coll, id, &b, &v), 0);
    assert_non_null(b);
    assert_true(json_is_object(b));
    assert_true(json_is_integer(json_object_get(b, "n")));
    n = (int)json_integer_value(json_object_get(b, "n"));
    json_decref(b);
    if (ver)
        *ver = v;
    return n;
}

static void assert_absent(const char *coll, const char *id)
{
    json_t *b = NULL;
    int64_t v = 0;
    assert_rc(fx.st->ops->get(fx.st, coll, id, &b, &v), BNB_ENOENT);
    assert_null(b);
}

/* Pending outbox entries, collected chunk by chunk and acked (so the outbox
 * is empty afterwards). */
typedef struct {
    size_t n;
    char **ids;
    char **keys;
    int *nums; /* payload "n" */
} drained_t;

static void drained_free(drained_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->ids[i]);
        free(d->keys[i]);
    }
    free(d->ids);
    free(d->keys);
    free(d->nums);
    memset(d, 0, sizeof(*d));
}

static void drain(drained_t *d, size_t chunk)
{
    memset(d, 0, sizeof(*d));
    for (int rounds = 0; rounds < 10000; rounds++) {
        bnb_outbox_entry_t *e = NULL;
        size_t n = 0;
        const char **ids;

        assert_rc(fx.st->ops->outbox_fetch(fx.st, chunk, &e, &n), 0);
        assert_true(n <= chunk);
        if (n == 0) {
            free(e);
            return;
        }
        d->ids = realloc(d->ids, (d->n + n) * sizeof(char *));
        d->keys = realloc(d->keys, (d->n + n) * sizeof(char *));
        d->nums = realloc(d->nums, (d->n + n) * sizeof(int));
        ids = calloc(n, sizeof(char *));
        assert_non_null(d->ids);
        assert_non_null(d->keys);
        assert_non_null(d->nums);
        assert_non_null(ids);
        for (size_t i = 0; i < n; i++) {
            json_t *p = json_loads(e[i].payload, 0, NULL);
            assert_non_null(e[i].event_id);
            assert_string_equal(e[i].topic, TOPIC);
            assert_non_null(p);
            assert_string_equal(json_string_value(json_object_get(p, "id")), e[i].event_id);
            d->ids[d->n + i] = strdup(e[i].event_id);
            d->keys[d->n + i] = strdup(e[i].key ? e[i].key : "");
            d->nums[d->n + i] = (int)json_integer_value(json_object_get(p, "n"));
            json_decref(p);
            ids[i] = e[i].event_id;
        }
        d->n += n;
        assert_rc(fx.st->ops->outbox_ack(fx.st, ids, n), 0);
        free(ids);
        bnb_outbox_entries_free(e, n);
    }
    fail_msg("outbox never drained");
}

static void drain_all(void)
{
    drained_t d;
    drain(&d, 500);
    drained_free(&d);
}

static bool drained_has(const drained_t *d, const char *event_id)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->ids[i], event_id) == 0)
            return true;
    return false;
}

/* ---- suite setup ------------------------------------------------------------ */

static int open_store(void)
{
    char err[512] = "";
    int rc = bnb_storage_open(&fx.cfg, &fx.st, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr,
                "contract: cannot open %s store '%s' at %s: %s (rc %d)\n"
                "contract: is the server running? (scripts/infra up; set BNB_TEST_URL)\n",
                fx.backend, fx.name, fx.url ? fx.url : fx.path, err, rc);
        fx.st = NULL;
        return -1;
    }
    return 0;
}

static int suite_setup(void **state)
{
    (void)state;
    fx.backend = env_or("BNB_TEST_BACKEND", "sqlite");
    snprintf(fx.name, sizeof(fx.name), "contract_%ld_%ld", (long)getpid(), (long)time(NULL));
    fx.cfg.backend = fx.backend;
    fx.cfg.name = fx.name;
    fx.cfg.pool_size = 8;
    if (strcmp(fx.backend, "sqlite") == 0) {
        const char *tmp = env_or("TMPDIR", "/tmp");
        snprintf(fx.dir, sizeof(fx.dir), "%s/bnb-contract-XXXXXX", tmp);
        if (!mkdtemp(fx.dir)) {
            perror("contract: mkdtemp");
            return -1;
        }
        snprintf(fx.path, sizeof(fx.path), "%s/%s.db", fx.dir, fx.name);
        fx.cfg.path = fx.path;
    } else if (strcmp(fx.backend, "mysql") == 0) {
        fx.url = env_or("BNB_TEST_URL", env_or("BNB_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/bnb_contract"));
    } else if (strcmp(fx.backend, "mongo") == 0) {
        fx.url = env_or("BNB_TEST_URL", env_or("BNB_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/bnb_contract"));
    } else {
        fx.url = env_or("BNB_TEST_URL", NULL);
    }
    fx.cfg.url = fx.url;
    fprintf(stderr, "contract: backend %s, store %s, %s\n", fx.backend, fx.name, fx.url ? fx.url : fx.path);
    return open_store();
}

static int suite_teardown(void **state)
{
    (void)state;
    bnb_storage_close(fx.st);
    fx.st = NULL;
    if (fx.dir[0])
        rm_tree(fx.dir);
    return 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_backend_lookup(void **state)
{
    bnb_storage_config_t cfg = {.backend = "nosuch", .name = "x", .path = "/nonexistent/x.db"};
    const bnb_storage_ops_t *ops;
    bnb_store_t *st = (bnb_store_t *)&cfg;
    char err[256] = "";
    (void)state;

    ops = bnb_storage_find(fx.backend);
    assert_non_null(ops);
    assert_string_equal(ops->name, fx.backend);
    assert_ptr_equal(fx.st->ops, ops);
    assert_non_null(bnb_storage_find("sqlite"));
    assert_null(bnb_storage_find("nosuch"));
    assert_null(bnb_storage_find(NULL));

    assert_int_not_equal(bnb_storage_open(&cfg, &st, err, sizeof(err)), 0);
    assert_null(st);
    assert_string_equal(err, "unknown storage backend 'nosuch' (known: sqlite, mysql, mongo)");
}

static void test_ping(void **state)
{
    (void)state;
    assert_rc(fx.st->ops->ping(fx.st), 0);
}

static void test_create_only(void **state)
{
    int64_t v = 0;
    (void)state;

    assert_rc(put("create", "c1", 0, 10, &v), 0);
    assert_int_equal(v, 1);
    v = 77;
    assert_rc(put("create", "c1", 0, 11, &v), BNB_EEXIST);
    assert_int_equal(v, 77); /* untouched on failure */
    assert_int_equal(get_n("create", "c1", &v), 10);
    assert_int_equal(v, 1);
    /* same id in another collection is another document */
    assert_rc(put("create2", "c1", 0, 12, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(get_n("create", "c1", NULL), 10);
}

static void test_versions_count_up(void **state)
{
    int64_t v = 0, got = 0;
    (void)state;

    for (int i = 1; i <= 5; i++) {
        assert_rc(put("ver", "v1", -1, i, &v), 0);
        assert_int_equal(v, i);
        assert_int_equal(get_n("ver", "v1", &got), i);
        assert_int_equal(got, i);
    }
    /* new_version may be NULL */
    assert_rc(put("ver", "v1", 5, 6, NULL), 0);
    assert_int_equal(get_n("ver", "v1", &got), 6);
    assert_int_equal(got, 6);
}

static void test_cas(void **state)
{
    int64_t v = 0;
    (void)state;

    assert_rc(put("cas", "k1", 0, 1, &v), 0);
    assert_rc(put("cas", "k1", 1, 2, &v), 0);
    assert_int_equal(v, 2);
    /* stale version */
    assert_rc(put("cas", "k1", 1, 3, &v), BNB_EEXIST);
    /* future version */
    assert_rc(put("cas", "k1", 9, 3, &v), BNB_EEXIST);
    assert_int_equal(get_n("cas", "k1", &v), 2);
    assert_int_equal(v, 2);
    /* absent document */
    assert_rc(put("cas", "nope", 1, 1, &v), BNB_ENOENT);
    assert_absent("cas", "nope");
}

static void test_unconditional(void **state)
{
    int64_t v = 0;
    (void)state;

    assert_rc(put("uncond", "u1", -1, 1, &v), 0);
    assert_int_equal(v, 1);
    assert_rc(put("uncond", "u1", -1, 2, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(get_n("uncond", "u1", &v), 2);
    assert_int_equal(v, 2);
}

static void test_touch(void **state)
{
    int64_t v = 0;
    (void)state;

    assert_rc(put("touch", "t1", 0, 42, &v), 0);
    assert_rc(commit1(BNB_WRITE_TOUCH, "touch", "t1", 1, NULL, NULL, NULL, NULL, NULL, 0, &v), 0);
    assert_int_equal(v, 2);
    assert_rc(commit1(BNB_WRITE_TOUCH, "touch", "t1", -1, NULL, NULL, NULL, NULL, NULL, 0, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(get_n("touch", "t1", &v), 42); /* body unchanged */
    assert_int_equal(v, 3);
    assert_rc(commit1(BNB_WRITE_TOUCH, "touch", "t1", 1, NULL, NULL, NULL, NULL, NULL, 0, &v), BNB_EEXIST);
    assert_rc(commit1(BNB_WRITE_TOUCH, "touch", "t1", 0, NULL, NULL, NULL, NULL, NULL, 0, &v), BNB_EEXIST);
    assert_rc(commit1(BNB_WRITE_TOUCH, "touch", "absent", -1, NULL, NULL, NULL, NULL, NULL, 0, &v), BNB_ENOENT);
    assert_rc(commit1(BNB_WRITE_TOUCH, "touch", "absent", 3, NULL, NULL, NULL, NULL, NULL, 0, &v), BNB_ENOENT);
    assert_absent("touch", "absent");
    assert_int_equal(get_n("touch", "t1", &v), 42);
    assert_int_equal(v, 3);
}

static void test_delete_keeps_outbox(void **state)
{
    char e1[160], e2[160];
    json_t *b = body_n(5), *list = NULL;
    drained_t d;
    int64_t v = 0;
    (void)state;

    drain_all();
    new_event_id(e1, sizeof(e1), "created");
    new_event_id(e2, sizeof(e2), "deleted");
    assert_rc(commit1(BNB_WRITE_PUT, "del", "d1", 0, b, "k", NULL, NULL, e1, 1, &v), 0);
    assert_int_equal(v, 1);
    /* wrong version: nothing deleted */
    assert_rc(commit1(BNB_WRITE_DELETE, "del", "d1", 4, NULL, NULL, NULL, NULL, NULL, 0, NULL), BNB_EEXIST);
    assert_int_equal(get_n("del", "d1", NULL), 5);
    assert_rc(commit1(BNB_WRITE_DELETE, "del", "d1", 1, NULL, NULL, NULL, NULL, e2, 2, NULL), 0);
    assert_absent("del", "d1");
    assert_rc(fx.st->ops->list(fx.st, "del", 0, NULL, &list), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    assert_rc(fx.st->ops->list(fx.st, "del", 1, "k", &list), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    /* deleting again: no such document */
    assert_rc(commit1(BNB_WRITE_DELETE, "del", "d1", -1, NULL, NULL, NULL, NULL, NULL, 0, NULL), BNB_ENOENT);

    /* both events are still queued, in commit order */
    drain(&d, 10);
    assert_int_equal(d.n, 2);
    assert_string_equal(d.ids[0], e1);
    assert_string_equal(d.ids[1], e2);
    assert_string_equal(d.keys[0], "d1");
    drained_free(&d);

    /* the id can be created again */
    assert_rc(commit1(BNB_WRITE_PUT, "del", "d1", 0, b, NULL, NULL, NULL, NULL, 0, &v), 0);
    assert_int_equal(get_n("del", "d1", NULL), 5);
    json_decref(b);
}

static void test_applied_dedupe(void **state)
{
    char applied[160], applied2[160], o1[160], o2[160], o3[160];
    json_t *b1 = body_n(1), *b2 = body_n(2);
    drained_t d;
    int64_t v = 0;
    (void)state;

    drain_all();
    new_event_id(applied, sizeof(applied), "in");
    new_event_id(applied2, sizeof(applied2), "in");
    new_event_id(o1, sizeof(o1), "out");
    new_event_id(o2, sizeof(o2), "out");
    new_event_id(o3, sizeof(o3), "out");

    assert_rc(commit1(BNB_WRITE_PUT, "dedupe", "x1", 0, b1, NULL, NULL, applied, o1, 1, &v), 0);
    assert_int_equal(v, 1);
    /* redelivery, even unconditional and with another body: nothing changes */
    assert_rc(commit1(BNB_WRITE_PUT, "dedupe", "x1", -1, b2, NULL, NULL, applied, o2, 2, &v), BNB_EALREADY);
    assert_rc(commit1(BNB_WRITE_TOUCH, "dedupe", "x1", 1, NULL, NULL, NULL, applied, o2, 2, &v), BNB_EALREADY);
    assert_rc(commit1(BNB_WRITE_DELETE, "dedupe", "x1", -1, NULL, NULL, NULL, applied, o2, 2, &v), BNB_EALREADY);
    assert_int_equal(get_n("dedupe", "x1", &v), 1);
    assert_int_equal(v, 1);

    /* the mark belongs to (coll, id): the same event applies to another document */
    assert_rc(commit1(BNB_WRITE_PUT, "dedupe", "x2", 0, b2, NULL, NULL, applied, o3, 3, &v), 0);
    assert_int_equal(v, 1);

    /* TOUCH records a mark too */
    assert_rc(commit1(BNB_WRITE_TOUCH, "dedupe", "x1", 1, NULL, NULL, NULL, applied2, NULL, 0, &v), 0);
    assert_int_equal(v, 2);
    assert_rc(commit1(BNB_WRITE_TOUCH, "dedupe", "x1", -1, NULL, NULL, NULL, applied2, NULL, 0, &v), BNB_EALREADY);
    assert_int_equal(get_n("dedupe", "x1", &v), 1);
    assert_int_equal(v, 2);

    drain(&d, 10);
    assert_int_equal(d.n, 2);
    assert_true(drained_has(&d, o1));
    assert_true(drained_has(&d, o3));
    assert_false(drained_has(&d, o2));
    drained_free(&d);
    json_decref(b1);
    json_decref(b2);
}

static void test_failed_check_is_atomic(void **state)
{
    char applied[160], o_bad[160], o_bad2[160], o_bad3[160], o_good[160];
    json_t *b = body_n(1), *b9 = body_n(9);
    drained_t d;
    int64_t v = 0;
    (void)state;

    drain_all();
    new_event_id(applied, sizeof(applied), "in");
    new_event_id(o_bad, sizeof(o_bad), "out");
    new_event_id(o_bad2, sizeof(o_bad2), "out");
    new_event_id(o_bad3, sizeof(o_bad3), "out");
    new_event_id(o_good, sizeof(o_good), "out");

    assert_rc(commit1(BNB_WRITE_PUT, "atomic", "a1", 0, b, NULL, NULL, NULL, NULL, 0, &v), 0);
    /* version mismatch: no body change, no mark, no event */
    assert_rc(commit1(BNB_WRITE_PUT, "atomic", "a1", 7, b9, NULL, NULL, applied, o_bad, 9, &v), BNB_EEXIST);
    /* create-only conflict: same */
    assert_rc(commit1(BNB_WRITE_PUT, "atomic", "a1", 0, b9, NULL, NULL, applied, o_bad2, 9, &v), BNB_EEXIST);
    /* absent document under CAS: same */
    assert_rc(commit1(BNB_WRITE_PUT, "atomic", "zz", 3, b9, NULL, NULL, applied, o_bad3, 9, &v), BNB_ENOENT);
    assert_absent("atomic", "zz");
    assert_int_equal(get_n("atomic", "a1", &v), 1);
    assert_int_equal(v, 1);
    /* the failed commits recorded no mark: the event still applies */
    assert_rc(commit1(BNB_WRITE_PUT, "atomic", "a1", 1, b9, NULL, NULL, applied, o_good, 9, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(get_n("atomic", "a1", NULL), 9);

    drain(&d, 10);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.ids[0], o_good);
    assert_int_equal(d.nums[0], 9);
    drained_free(&d);
    json_decref(b);
    json_decref(b9);
}

static void check_list_item(json_t *item, const char *id, int64_t version, int n)
{
    json_t *body = json_object_get(item, "body");
    assert_true(json_is_object(item));
    assert_string_equal(json_string_value(json_object_get(item, "id")), id);
    assert_int_equal(json_integer_value(json_object_get(item, "version")), version);
    assert_true(json_is_object(body));
    assert_int_equal(json_integer_value(json_object_get(body, "n")), n);
}

static void test_list(void **state)
{
    json_t *b, *out = NULL;
    (void)state;

    /* created out of id order; "b" gets two versions */
    b = body_n(3);
    assert_rc(commit1(BNB_WRITE_PUT, "lst", "c", 0, b, "host-1", "paris", NULL, NULL, 0, NULL), 0);
    json_decref(b);
    b = body_n(1);
    assert_rc(commit1(BNB_WRITE_PUT, "lst", "a", 0, b, "host-1", "rome", NULL, NULL, 0, NULL), 0);
    json_decref(b);
    b = body_n(2);
    assert_rc(commit1(BNB_WRITE_PUT, "lst", "b", 0, b, "host-2", "paris", NULL, NULL, 0, NULL), 0);
    assert_rc(commit1(BNB_WRITE_PUT, "lst", "b", 1, b, "host-2", "paris", NULL, NULL, 0, NULL), 0);
    json_decref(b);
    b = body_n(4);
    assert_rc(commit1(BNB_WRITE_PUT, "lst_other", "a0", 0, b, "host-1", "paris", NULL, NULL, 0, NULL), 0);
    json_decref(b);

    assert_rc(fx.st->ops->list(fx.st, "lst", 0, NULL, &out), 0);
    assert_true(json_is_array(out));
    assert_int_equal(json_array_size(out), 3);
    check_list_item(json_array_get(out, 0), "a", 1, 1);
    check_list_item(json_array_get(out, 1), "b", 2, 2);
    check_list_item(json_array_get(out, 2), "c", 1, 3);
    json_decref(out);

    assert_rc(fx.st->ops->list(fx.st, "lst", 1, "host-1", &out), 0);
    assert_int_equal(json_array_size(out), 2);
    check_list_item(json_array_get(out, 0), "a", 1, 1);
    check_list_item(json_array_get(out, 1), "c", 1, 3);
    json_decref(out);

    assert_rc(fx.st->ops->list(fx.st, "lst", 2, "paris", &out), 0);
    assert_int_equal(json_array_size(out), 2);
    check_list_item(json_array_get(out, 0), "b", 2, 2);
    check_list_item(json_array_get(out, 1), "c", 1, 3);
    json_decref(out);

    /* keys change with the document; a PUT without keys clears them */
    b = body_n(5);
    assert_rc(commit1(BNB_WRITE_PUT, "lst", "c", 1, b, "host-2", NULL, NULL, NULL, 0, NULL), 0);
    json_decref(b);
    assert_rc(fx.st->ops->list(fx.st, "lst", 2, "paris", &out), 0);
    assert_int_equal(json_array_size(out), 1);
    check_list_item(json_array_get(out, 0), "b", 2, 2);
    json_decref(out);
    assert_rc(fx.st->ops->list(fx.st, "lst", 1, "host-2", &out), 0);
    assert_int_equal(json_array_size(out), 2);
    check_list_item(json_array_get(out, 0), "b", 2, 2);
    check_list_item(json_array_get(out, 1), "c", 2, 5);
    json_decref(out);

    /* no match, empty collection: an empty array */
    assert_rc(fx.st->ops->list(fx.st, "lst", 1, "nobody", &out), 0);
    assert_true(json_is_array(out));
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
    assert_rc(fx.st->ops->list(fx.st, "lst_empty", 0, NULL, &out), 0);
    assert_true(json_is_array(out));
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
}

static void test_outbox_order_and_ack(void **state)
{
    char ids[6][160];
    bnb_outbox_entry_t *e = NULL;
    const char *ack[3];
    json_t *b = body_n(0);
    size_t n = 0;
    int64_t v = 0;
    (void)state;

    drain_all();
    assert_rc(fx.st->ops->outbox_fetch(fx.st, 10, &e, &n), 0);
    assert_int_equal(n, 0);
    bnb_outbox_entries_free(e, n);

    for (int i = 0; i < 5; i++) {
        new_event_id(ids[i], sizeof(ids[i]), "ord");
        assert_rc(commit1(BNB_WRITE_PUT, "ord", "o1", i == 0 ? 0 : i, b, NULL, NULL, NULL, ids[i], i, &v), 0);
        assert_int_equal(v, i + 1);
    }
    /* two events in one commit keep their order */
    {
        char a[160], c[160];
        bnb_outbox_new_t evs[2] = {
            {.event_id = a, .topic = TOPIC, .key = "o1", .payload = NULL},
            {.event_id = c, .topic = TOPIC, .key = "o1", .payload = NULL},
        };
        char pa[256], pc[256];
        bnb_write_t w = {.op = BNB_WRITE_TOUCH, .coll = "ord", .id = "o1", .expect_version = 5};
        new_event_id(a, sizeof(a), "ord");
        new_event_id(c, sizeof(c), "ord");
        snprintf(pa, sizeof(pa), "{\"id\":\"%s\",\"n\":5}", a);
        snprintf(pc, sizeof(pc), "{\"id\":\"%s\",\"n\":6}", c);
        evs[0].payload = pa;
        evs[1].payload = pc;
        assert_rc(fx.st->ops->commit(fx.st, &w, evs, 2, NULL, &v), 0);
        assert_int_equal(v, 6);
        snprintf(ids[5], sizeof(ids[5]), "%s", c);
    }

    /* oldest first, at most `max` */
    assert_rc(fx.st->ops->outbox_fetch(fx.st, 3, &e, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(e[i].event_id, ids[i]);
        assert_string_equal(e[i].topic, TOPIC);
        assert_string_equal(e[i].key, "o1");
        ack[i] = e[i].event_id;
    }
    /* not acked yet: fetched again */
    {
        bnb_outbox_entry_t *again = NULL;
        size_t n2 = 0;
        assert_rc(fx.st->ops->outbox_fetch(fx.st, 1, &again, &n2), 0);
        assert_int_equal(n2, 1);
        assert_string_equal(again[0].event_id, ids[0]);
        bnb_outbox_entries_free(again, n2);
    }
    assert_rc(fx.st->ops->outbox_ack(fx.st, ack, 3), 0);
    bnb_outbox_entries_free(e, n);

    /* acked entries are gone; the rest follow in order */
    assert_rc(fx.st->ops->outbox_fetch(fx.st, 100, &e, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(e[0].event_id, ids[3]);
    assert_string_equal(e[1].event_id, ids[4]);
    assert_string_equal(e[3].event_id, ids[5]);
    {
        json_t *p2 = json_loads(e[2].payload, 0, NULL), *p3 = json_loads(e[3].payload, 0, NULL);
        assert_int_equal(json_integer_value(json_object_get(p2, "n")), 5);
        assert_int_equal(json_integer_value(json_object_get(p3, "n")), 6);
        json_decref(p2);
        json_decref(p3);
    }
    /* acking an unknown id is harmless; acking twice too */
    {
        const char *two[2] = {e[0].event_id, "no-such-event"};
        assert_rc(fx.st->ops->outbox_ack(fx.st, two, 2), 0);
        assert_rc(fx.st->ops->outbox_ack(fx.st, two, 2), 0);
    }
    bnb_outbox_entries_free(e, n);
    assert_rc(fx.st->ops->outbox_fetch(fx.st, 100, &e, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(e[0].event_id, ids[4]);
    bnb_outbox_entries_free(e, n);
    drain_all();
    assert_rc(fx.st->ops->outbox_fetch(fx.st, 100, &e, &n), 0);
    assert_int_equal(n, 0);
    bnb_outbox_entries_free(e, n);
    json_decref(b);
}

static void test_dead_letters(void **state)
{
    int64_t before = -1, after = -1;
    (void)state;

    assert_rc(fx.st->ops->dead_count(fx.st, &before), 0);
    assert_true(before >= 0);
    assert_rc(fx.st->ops->park(fx.st, "dashboard", "{\"id\":\"e1\",\"type\":\"Bogus\"}", "unknown type"), 0);
    assert_rc(fx.st->ops->park(fx.st, "payment", "not json at all {", "malformed JSON"), 0);
    assert_rc(fx.st->ops->dead_count(fx.st, &after), 0);
    assert_int_equal(after, before + 2);
}

/* 8 threads x 50 compare-and-swap increments of one counter. */
#define NTHREADS 8
#define NINCR    50

typedef struct {
    int tid;
    int done;
    int errors; /* unexpected return codes */
    int conflicts;
} worker_t;

static void *incr_worker(void *arg)
{
    worker_t *wk = arg;
    for (int i = 0; i < NINCR && wk->errors == 0;) {
        json_t *b = NULL, *nb;
        int64_t v = 0;
        char eid[160], payload[256];
        int rc, n;

        rc = fx.st->ops->get(fx.st, "conc", "counter", &b, &v);
        if (rc != 0) {
            wk->errors++;
            break;
        }
        n = (int)json_integer_value(json_object_get(b, "n"));
        json_decref(b);
        nb = body_n(n + 1);
        snprintf(eid, sizeof(eid), "%s-conc-%d-%d-%d", fx.name, wk->tid, i, wk->conflicts);
        snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"n\":%d}", eid, n + 1);
        {
            bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "conc", .id = "counter", .expect_version = v, .body = nb};
            bnb_outbox_new_t ev = {.event_id = eid, .topic = TOPIC, .key = "counter", .payload = payload};
            int64_t nv = 0;
            rc = fx.st->ops->commit(fx.st, &w, &ev, 1, NULL, &nv);
            if (rc == 0 && nv != v + 1)
                wk->errors++;
        }
        json_decref(nb);
        if (rc == 0) {
            i++;
            wk->done++;
        } else if (rc == BNB_EEXIST) {
            wk->conflicts++;
        } else {
            fprintf(stderr, "contract: thread %d commit rc %d\n", wk->tid, rc);
            wk->errors++;
        }
    }
    return NULL;
}

static void test_concurrent_cas(void **state)
{
    pthread_t th[NTHREADS];
    worker_t wk[NTHREADS];
    int conflicts = 0;
    drained_t d;
    int64_t v = 0;
    (void)state;

    drain_all();
    assert_rc(put("conc", "counter", 0, 0, &v), 0);
    int started = 0;
    for (int i = 0; i < NTHREADS; i++) {
        wk[i] = (worker_t){.tid = i};
        if (pthread_create(&th[i], NULL, incr_worker, &wk[i]) != 0)
            break;
        started++;
    }
    /* join every worker before any assert: they use this stack frame */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(started, NTHREADS);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(wk[i].errors, 0);
        assert_int_equal(wk[i].done, NINCR);
        conflicts += wk[i].conflicts;
    }
    fprintf(stderr, "contract: %d increments, %d version conflicts retried\n", NTHREADS * NINCR, conflicts);
    assert_int_equal(get_n("conc", "counter", &v), NTHREADS * NINCR);
    assert_int_equal(v, NTHREADS * NINCR + 1);

    /* exactly one event per successful increment, in commit order */
    drain(&d, 64);
    assert_int_equal(d.n, NTHREADS * NINCR);
    for (size_t i = 0; i < d.n; i++) {
        assert_string_equal(d.keys[i], "counter");
        assert_int_equal(d.nums[i], (int)i + 1);
    }
    drained_free(&d);
}

static void test_reopen(void **state)
{
    char e1[160];
    json_t *b = body_n(31);
    drained_t d;
    int64_t v = 0;
    (void)state;

    drain_all();
    new_event_id(e1, sizeof(e1), "reopen");
    assert_rc(commit1(BNB_WRITE_PUT, "reopen", "r1", 0, b, "kk", NULL, NULL, e1, 31, &v), 0);
    assert_rc(commit1(BNB_WRITE_TOUCH, "reopen", "r1", 1, NULL, NULL, NULL, NULL, NULL, 0, &v), 0);
    json_decref(b);

    bnb_storage_close(fx.st);
    fx.st = NULL;
    assert_int_equal(open_store(), 0);

    assert_rc(fx.st->ops->ping(fx.st), 0);
    assert_int_equal(get_n("reopen", "r1", &v), 31);
    assert_int_equal(v, 2);
    assert_int_equal(get_n("cas", "k1", &v), 2); /* from an earlier test */
    {
        json_t *out = NULL;
        assert_rc(fx.st->ops->list(fx.st, "reopen", 1, "kk", &out), 0);
        assert_int_equal(json_array_size(out), 1);
        json_decref(out);
    }
    drain(&d, 10);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.ids[0], e1);
    drained_free(&d);
    /* versions go on after reopening */
    assert_rc(put("reopen", "r1", 2, 32, &v), 0);
    assert_int_equal(v, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_lookup),
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_create_only),
        cmocka_unit_test(test_versions_count_up),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_unconditional),
        cmocka_unit_test(test_touch),
        cmocka_unit_test(test_delete_keeps_outbox),
        cmocka_unit_test(test_applied_dedupe),
        cmocka_unit_test(test_failed_check_is_atomic),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_outbox_order_and_ack),
        cmocka_unit_test(test_dead_letters),
        cmocka_unit_test(test_concurrent_cas),
        cmocka_unit_test(test_reopen),
    };
    return cmocka_run_group_tests_name("storage contract", tests, suite_setup, suite_teardown);
}

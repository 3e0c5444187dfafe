/*
 * Unit tests of plugins/common/bnb_idem.h (Idempotency-Key) against the fake
 * host's store (tests/plugins/fake_host.h) with a header, a user and a clock
 * of the test's: key syntax, replay of the stored answer (status, headers,
 * body), 422 for another request, per-user keys, 409 while a run holds the
 * lease, a 5xx lets the key run again, a lease that ran out is taken over and
 * recovered from the resource, expiry, and the bounded cleanup of expired
 * keys. The real host and every backend: tests/e2e/idem.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_idem.h"
#include "fake_host.h"

#include <stdio.h>
#include <string.h>

static bnb_host_api_t T; /* the fake host with the test's header and clock */
static const bnb_host_api_t *H;
static const char *key;
static int64_t clock_ms;
static int calls, fail_next;

static const char *t_header(bnb_req_t *r, const char *n)
{
    (void)r;
    return strcasecmp(n, "Idempotency-Key") == 0 ? key : NULL;
}

static int64_t t_now(void)
{
    return clock_ms;
}

static int setup(void **state)
{
    (void)state;
    fake_host_reset("idem");
    T = fake_host_api;
    T.req_header = t_header;
    T.now_ms = t_now;
    clock_ms = 1795472046123LL;
    calls = fail_next = 0;
    key = NULL;
    H = bnb_idem_host(&T);
    assert_int_equal(bnb_idem_init(&FH.ctx), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fake_host_free();
    return 0;
}

/* The route: creates things/<rid> and answers 201 {id, n} with a Location;
 * fail_next > 0 answers 503 without an effect instead. */
static void create(bnb_ctx_t *ctx, bnb_req_t *req)
{
    (void)ctx;
    char id[37], loc[64];
    calls++;
    if (fail_next > 0) {
        fail_next--;
        H->respond_problem(req, 503, "Service Unavailable", "try again");
        return;
    }
    bnb_idem_rid(H, id);
    json_t *doc = json_pack("{s:s, s:i}", "id", id, "n", calls);
    bnb_commit_t c = {.op = BNB_WRITE_PUT, .coll = "things", .id = id, .expect_version = 0, .body = doc};
    int rc = H->store_commit2(H->store(ctx), &c, NULL);
    if (rc != 0) {
        json_decref(doc);
        H->respond_problem(req, 503, "Service Unavailable", "commit %d", rc);
        return;
    }
    snprintf(loc, sizeof loc, "/things/%s", id);
    H->respond_header(req, "Location", loc);
    H->respond_json(req, 201, doc);
}

static int recovered;

static int recover(bnb_ctx_t *ctx, bnb_req_t *req, const char *rid)
{
    json_t *doc = NULL;
    int64_t v;
    if (H->store_get(H->store(ctx), "things", rid, &doc, &v) != 0)
        return 0;
    recovered++;
    H->respond_json(req, 201, doc);
    return 1;
}

/* One request as `user` with body {"x": x}; the answer in *r (caller frees r->json). */
static void run(const char *user, int x, struct bnb_req *r)
{
    memset(r, 0, sizeof *r);
    r->method = "POST";
    r->user = user;
    r->role = "guest";
    r->body = json_pack("{s:i}", "x", x);
    bnb_idem_run(&FH.ctx, r, "POST /things", create, recover);
    json_decref(r->body);
    r->body = NULL;
}

static const char *rid_of(struct bnb_req *r)
{
    return json_string_value(json_object_get(r->json, "id"));
}

static void test_key_syntax(void **state)
{
    (void)state;
    const char *s;
    size_t n;
    char longk[300];
    memset(longk, 'a', 255);
    longk[255] = '\0';
    assert_true(bnb_idem_key_ok("a", &s, &n) && n == 1);
    assert_true(bnb_idem_key_ok(longk, &s, &n) && n == 255);
    assert_true(bnb_idem_key_ok("\"q-1\"", &s, &n) && n == 3 && !strncmp(s, "q-1", 3));
    assert_true(bnb_idem_key_ok("A.b:c~d+e/f=g_h-9", &s, &n));
    longk[255] = 'a';
    longk[256] = '\0';
    const char *bad[] = {"", "\"\"", longk, "a b", "a,b", "\"a", "a\"", "k\xc3\xa9", "a\\b", NULL};
    for (int i = 0; bad[i]; i++)
        assert_false(bnb_idem_key_ok(bad[i], &s, &n));
    assert_false(bnb_idem_key_ok(NULL, &s, &n));
    /* through the route: 400 naming the header, nothing run */
    struct bnb_req r;
    key = "a b";
    run("gus", 1, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.detail, "Idempotency-Key"));
    assert_int_equal(calls, 0);
}

static void test_replay(void **state)
{
    (void)state;
    struct bnb_req a, b, c, d, e;
    key = NULL; /* no key: every request runs */
    run("gus", 1, &a);
    run("gus", 1, &b);
    assert_int_equal(calls, 2);
    assert_string_not_equal(rid_of(&a), rid_of(&b));
    json_decref(a.json);
    json_decref(b.json);
    key = "k1";
    run("gus", 1, &a);
    run("gus", 1, &b);
    assert_int_equal(calls, 3); /* the retry ran nothing */
    assert_int_equal(b.status, 201);
    assert_true(json_equal(a.json, b.json));
    run("gus", 2, &c); /* another body: 422 */
    assert_int_equal(c.status, 422);
    assert_non_null(strstr(c.detail, "Idempotency-Key"));
    run("eve", 1, &d); /* another user's identical key */
    assert_int_equal(d.status, 201);
    assert_int_equal(calls, 4);
    assert_string_not_equal(rid_of(&a), rid_of(&d));
    run("eve", 1, &e);
    assert_true(json_equal(d.json, e.json));
    assert_int_equal(calls, 4);
    json_decref(a.json);
    json_decref(b.json);
    json_decref(d.json);
    json_decref(e.json);
}

static void test_5xx_runs_again(void **state)
{
    (void)state;
    struct bnb_req a, b, c;
    key = "k5";
    fail_next = 1;
    run("gus", 1, &a);
    assert_int_equal(a.status, 503);
    run("gus", 1, &b);
    assert_int_equal(b.status, 201);
    assert_int_equal(calls, 2);
    run("gus", 1, &c);
    assert_int_equal(c.status, 201);
    assert_int_equal(calls, 2);
    assert_true(json_equal(b.json, c.json));
    json_decref(b.json);
    json_decref(c.json);
}

/* A route that, while it runs (after its commit), sees a retry of its own key
 * arrive: at `retry_at` ms later on the clock. */
static int64_t retry_at;
static struct bnb_req inner;

static void create_then_retry(bnb_ctx_t *ctx, bnb_req_t *req)
{
    create(ctx, req);
    int64_t saved = clock_ms;
    clock_ms += retry_at;
    memset(&inner, 0, sizeof inner);
    inner.method = "POST";
    inner.user = "gus";
    inner.role = "guest";
    inner.body = json_pack("{s:i}", "x", 1);
    bnb_idem_run(&FH.ctx, &inner, "POST /things", create, recover);
    json_decref(inner.body);
    clock_ms = saved;
}

static void run_with(bnb_route_fn fn, struct bnb_req *r)
{
    memset(r, 0, sizeof *r);
    r->method = "POST";
    r->user = "gus";
    r->role = "guest";
    r->body = json_pack("{s:i}", "x", 1);
    bnb_idem_run(&FH.ctx, r, "POST /things", fn, recover);
    json_decref(r->body);
}

static void test_in_progress(void **state)
{
    (void)state;
    struct bnb_req a, b;
    key = "k-busy";
    retry_at = 1000; /* within the lease (30 s) */
    run_with(create_then_retry, &a);
    assert_int_equal(inner.status, 409);
    assert_non_null(strstr(inner.detail, "in progress"));
    assert_int_equal(a.status, 201);
    run("gus", 1, &b); /* after the answer: replayed */
    assert_true(json_equal(a.json, b.json));
    assert_int_equal(calls, 1);
    json_decref(a.json);
    json_decref(b.json);
}

static void test_lease_runs_out(void **state)
{
    (void)state;
    struct bnb_req a, b;
    key = "k-slow";
    retry_at = 31000; /* the first run looks dead: the retry takes over */
    recovered = 0;
    run_with(create_then_retry, &a);
    assert_int_equal(recovered, 1); /* from the thing the first run committed */
    assert_int_equal(inner.status, 201);
    assert_int_equal(calls, 1); /* nothing was created twice */
    assert_true(json_equal(a.json, inner.json));
    run("gus", 1, &b);
    assert_true(json_equal(inner.json, b.json));
    assert_int_equal(calls, 1);
    json_decref(a.json);
    json_decref(b.json);
    json_decref(inner.json);
}

static int idem_docs(void)
{
    int n = 0;
    for (int i = 0; i < FH.store.ndocs; i++)
        n += FH.store.docs[i].body && !strcmp(FH.store.docs[i].coll, BNB_IDEM_COLL);
    return n;
}

static void test_expiry_and_cleanup(void **state)
{
    (void)state;
    struct bnb_req a, b;
    char k[32];
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "old-%d", i);
        key = k;
        run("gus", 1, &a);
        json_decref(a.json);
    }
    assert_int_equal(idem_docs(), 40);
    key = "old-0";
    run("gus", 1, &a);
    assert_int_equal(calls, 40);
    clock_ms += 86400 * 1000LL + 1; /* a day later: forgotten */
    run("gus", 1, &b);
    assert_int_equal(calls, 41);
    assert_string_not_equal(rid_of(&a), rid_of(&b));
    json_decref(a.json);
    json_decref(b.json);
    /* new keys delete the expired ones, a bounded number each */
    int before = idem_docs(), queries = FH.store.queries;
    for (int i = 0; i < 8; i++) {
        snprintf(k, sizeof k, "new-%d", i);
        key = k;
        run("gus", 1, &a);
        json_decref(a.json);
    }
    assert_true(idem_docs() < before);
    assert_int_equal(idem_docs(), 9);             /* only the 9 live keys stay */
    assert_true(FH.store.queries - queries <= 8); /* at most one query per new key */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_5xx_runs_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_runs_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_and_cleanup, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

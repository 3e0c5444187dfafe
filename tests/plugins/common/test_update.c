/*
 * Unit tests of plugins/common's load - change - commit helper (retries with a
 * bounded backoff, claims through store_commit2, SKIP, errors) and of the one
 * mapping of store errors to HTTP statuses. A tiny in-memory store with
 * injectable concurrent writers stands in for the host; the backoff sleeps go
 * to a fake clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin_util.h"

#include <stdio.h>
#include <string.h>

/* ---- one document store ----------------------------------------------------- */

static struct {
    json_t *doc; /* NULL: absent */
    int64_t version;
    int racers;     /* the next N commits find that another writer committed first */
    int fail_rc;    /* when != 0, every commit answers this */
    int commits;    /* calls of store_commit */
    int commits2;   /* calls of store_commit2 */
    int gets;       /* calls of store_get */
    json_t *claims; /* the claims the document holds */
    json_t *other;  /* claims held by another document */
    size_t nevents; /* events of the last successful commit */
    char applied[64];
    long slept[64];
    int nsleeps;
    long slept_total;
    int respond_status;
    char retry_after[16];
} S;

static void fake_sleep(long us)
{
    if (S.nsleeps < 64)
        S.slept[S.nsleeps] = us;
    S.nsleeps++;
    S.slept_total += us;
}

static int s_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    (void)st;
    (void)coll;
    (void)id;
    S.gets++;
    if (!S.doc)
        return BNB_ENOENT;
    *body = json_deep_copy(S.doc);
    *version = S.version;
    return 0;
}

/* A concurrent writer commits first: the version moves on. */
static int race_lost(void)
{
    if (S.racers <= 0)
        return 0;
    S.racers--;
    if (!S.doc)
        S.doc = json_pack("{s:i}", "n", 0);
    json_object_set_new(S.doc, "n", json_integer(json_integer_value(json_object_get(S.doc, "n")) + 1));
    S.version++;
    return 1;
}

static int s_apply(bnb_write_op_t op, int64_t expect, const json_t *body, size_t nev, const char *applied, int64_t *nv)
{
    if (S.fail_rc)
        return S.fail_rc;
    if (applied && !strcmp(applied, S.applied))
        return BNB_EALREADY;
    if (race_lost() || expect != S.version)
        return BNB_EEXIST;
    if (op == BNB_WRITE_DELETE) {
        json_decref(S.doc);
        S.doc = NULL;
        S.version = 0;
    } else {
        if (op == BNB_WRITE_PUT) {
            json_decref(S.doc);
            S.doc = json_deep_copy(body);
        }
        S.version++;
    }
    if (applied)
        snprintf(S.applied, sizeof S.applied, "%s", applied);
    S.nevents = nev;
    if (nv)
        *nv = S.version;
    return 0;
}

static int s_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_event_out_t *ev, size_t nev, const char *applied,
                    int64_t *nv)
{
    (void)st;
    (void)ev;
    S.commits++;
    return s_apply(w->op, w->expect_version, w->body, nev, applied, nv);
}

static int s_commit2(bnb_store_t *st, const bnb_commit_t *c, int64_t *nv)
{
    (void)st;
    S.commits2++;
    for (size_t i = 0; c->set_claims && i < c->nclaims; i++) {
        size_t k;
        json_t *o;
        json_array_foreach(S.other, k, o) if (!strcmp(json_string_value(o), c->claims[i])) return BNB_ETAKEN;
    }
    int rc = s_apply(c->op, c->expect_version, c->body, c->nevents, c->applied_event_id, nv);
    if (rc == 0 && c->set_claims) {
        json_array_clear(S.claims);
        for (size_t i = 0; i < c->nclaims; i++)
            json_array_append_new(S.claims, json_string(c->claims[i]));
    }
    return rc;
}

static void s_header(bnb_req_t *req, const char *name, const char *value)
{
    (void)req;
    if (!strcmp(name, "Retry-After"))
        snprintf(S.retry_after, sizeof S.retry_after, "%s", value);
}

static void s_problem(bnb_req_t *req, int status, const char *title, const char *fmt, ...)
{
    (void)req;
    (void)title;
    (void)fmt;
    S.respond_status = status;
}

static const char *q_limit, *q_string;

static const char *s_req_query(bnb_req_t *req, const char *name)
{
    (void)req;
    return !strcmp(name, "limit") ? q_limit : NULL;
}

static const char *s_req_query_string(bnb_req_t *req)
{
    (void)req;
    return q_string;
}

static bnb_host_api_t H = {.abi_version = BNB_ABI_VERSION,
                           .req_query = s_req_query,
                           .req_query_string = s_req_query_string,
                           .size = sizeof(bnb_host_api_t),
                           .store_get = s_get,
                           .store_commit = s_commit,
                           .store_commit2 = s_commit2,
                           .respond_header = s_header,
                           .respond_problem = s_problem};

static const bnb_util_retry_t fast = {
    .attempts = 8, .first_backoff_us = 100, .max_backoff_us = 1000, .sleep_us = fake_sleep};

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof S);
    S.claims = json_array();
    S.other = json_array();
    H.store_commit2 = s_commit2;
    H.size = sizeof(bnb_host_api_t);
    q_limit = q_string = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(S.doc);
    json_decref(S.claims);
    json_decref(S.other);
    return 0;
}

/* ---- changes ------------------------------------------------------------------ */

/* Counter +1 with one event; creates the document when absent. */
static int incr(bnb_util_txn_t *t, void *arg)
{
    int *calls = arg;
    (*calls)++;
    if (!t->doc)
        bnb_util_txn_set_doc(t, json_pack("{s:i}", "n", 0));
    json_object_set_new(t->doc, "n", json_integer(json_integer_value(json_object_get(t->doc, "n")) + 1));
    return bnb_util_txn_event(t, "bearbnb.test", "Incremented", t->id, NULL, json_pack("{s:i}", "n", 1));
}

static void test_creates_without_retry(void **state)
{
    (void)state;
    int calls = 0;
    json_t *out = NULL;
    int64_t nv = 0;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", incr, &calls, &fast, &out, &nv), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(nv, 1);
    assert_int_equal(json_integer_value(json_object_get(out, "n")), 1);
    assert_int_equal(S.commits, 1);
    assert_int_equal(S.commits2, 0); /* no claims: the ABI 1.0 commit */
    assert_int_equal(S.nevents, 1);
    assert_int_equal(S.nsleeps, 0);
    json_decref(out);
}

static void test_lost_races_are_retried_with_backoff(void **state)
{
    (void)state;
    S.doc = json_pack("{s:i}", "n", 10);
    S.version = 3;
    S.racers = 5; /* five other writers get in first */
    int calls = 0;
    json_t *out = NULL;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", incr, &calls, &fast, &out, NULL), 0);
    assert_int_equal(calls, 6);
    assert_int_equal(S.gets, 6); /* every try reloads */
    /* the others' five increments are kept, ours comes on top */
    assert_int_equal(json_integer_value(json_object_get(out, "n")), 16);
    assert_int_equal(S.version, 9);
    /* five sleeps, within [d/2, d] of 100, 200, 400, 800, 1000 (capped) */
    assert_int_equal(S.nsleeps, 5);
    const long bound[] = {100, 200, 400, 800, 1000};
    for (int i = 0; i < 5; i++) {
        assert_true(S.slept[i] >= bound[i] / 2);
        assert_true(S.slept[i] <= bound[i]);
    }
    json_decref(out);
}

static void test_retries_are_bounded(void **state)
{
    (void)state;
    S.racers = 1000;
    int calls = 0;
    json_t *out = (json_t *)&calls; /* must be reset to NULL */
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", incr, &calls, &fast, &out, NULL), BNB_EEXIST);
    assert_null(out);
    assert_int_equal(calls, fast.attempts);
    assert_int_equal(S.nsleeps, fast.attempts - 1);
    assert_true(S.slept_total <= (long)(fast.attempts - 1) * fast.max_backoff_us);
    /* the default is bounded too: at most 50 tries and 0.5 s of sleep */
    assert_true(bnb_util_retry_default.attempts * bnb_util_retry_default.max_backoff_us <= 500000);
}

static int skip_when_big(bnb_util_txn_t *t, void *arg)
{
    (void)arg;
    if (t->doc && json_integer_value(json_object_get(t->doc, "n")) >= 5)
        return BNB_UTIL_SKIP;
    return 0;
}

static void test_skip_commits_nothing(void **state)
{
    (void)state;
    S.doc = json_pack("{s:i}", "n", 7);
    S.version = 2;
    json_t *out = NULL;
    int64_t nv = 0;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", skip_when_big, NULL, &fast, &out, &nv), 0);
    assert_int_equal(S.commits + S.commits2, 0);
    assert_int_equal(nv, 2);
    assert_int_equal(json_integer_value(json_object_get(out, "n")), 7);
    json_decref(out);
}

static int fail_change(bnb_util_txn_t *t, void *arg)
{
    (void)t;
    (void)arg;
    return BNB_ENOENT;
}

static void test_change_error_and_store_errors_pass_through(void **state)
{
    (void)state;
    int calls = 0;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", fail_change, NULL, &fast, NULL, NULL), BNB_ENOENT);
    S.fail_rc = BNB_EIO;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", incr, &calls, &fast, NULL, NULL), BNB_EIO);
    assert_int_equal(calls, 1); /* EIO is not a lost race: no retry here */
    assert_int_equal(S.nsleeps, 0);
}

static int applied_incr(bnb_util_txn_t *t, void *arg)
{
    t->applied_event_id = "ev-1";
    return incr(t, arg);
}

static void test_applied_event_answers_ealready(void **state)
{
    (void)state;
    int calls = 0;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", applied_incr, &calls, &fast, NULL, NULL), 0);
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", applied_incr, &calls, &fast, NULL, NULL), BNB_EALREADY);
    assert_int_equal(json_integer_value(json_object_get(S.doc, "n")), 1);
}

/* Hold nights 1..n (arg) as claims. */
static int claim_nights(bnb_util_txn_t *t, void *arg)
{
    int n = *(int *)arg;
    if (!t->doc)
        bnb_util_txn_set_doc(t, json_object());
    for (int i = 1; i <= n; i++) {
        char key[32];
        snprintf(key, sizeof key, "night|r|%d", i);
        assert_int_equal(bnb_util_txn_claim(t, key), 0);
    }
    return 0;
}

static int release_all(bnb_util_txn_t *t, void *arg)
{
    (void)arg;
    bnb_util_txn_claims_clear(t);
    return 0;
}

static void test_claims_go_through_commit2(void **state)
{
    (void)state;
    int n = 40; /* more than the first allocation */
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", claim_nights, &n, &fast, NULL, NULL), 0);
    assert_int_equal(S.commits2, 1);
    assert_int_equal(json_array_size(S.claims), 40);
    assert_string_equal(json_string_value(json_array_get(S.claims, 39)), "night|r|40");
    /* a claim held elsewhere: BNB_ETAKEN, not retried */
    json_array_append_new(S.other, json_string("night|r|41"));
    n = 41;
    S.gets = 0;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", claim_nights, &n, &fast, NULL, NULL), BNB_ETAKEN);
    assert_int_equal(S.gets, 1);
    assert_int_equal(json_array_size(S.claims), 40);
    /* releasing: an empty set */
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", release_all, NULL, &fast, NULL, NULL), 0);
    assert_int_equal(json_array_size(S.claims), 0);
    /* a host without store_commit2 (ABI 1.0 table): claims are refused */
    H.size = offsetof(bnb_host_api_t, store_define);
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", release_all, NULL, &fast, NULL, NULL), BNB_EINVAL);
}

static int incr_v2(bnb_util_txn_t *t, void *arg)
{
    t->commit2 = 1;
    return incr(t, arg);
}

static void test_commit2_without_claims_keeps_them(void **state)
{
    (void)state;
    int calls = 0, n = 3;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", claim_nights, &n, &fast, NULL, NULL), 0);
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", incr_v2, &calls, &fast, NULL, NULL), 0);
    assert_int_equal(S.commits2, 2);
    assert_int_equal(S.commits, 0);
    assert_int_equal(json_array_size(S.claims), 3); /* set_claims 0: left as they were */
}

static void test_page_limit_and_names(void **state)
{
    (void)state;
    assert_int_equal(bnb_util_page_limit(&H, NULL, 20, 100), 20);
    const char *ok[] = {"1", "100", "042"};
    const size_t want[] = {1, 100, 42};
    for (int i = 0; i < 3; i++) {
        q_limit = ok[i];
        assert_int_equal(bnb_util_page_limit(&H, NULL, 20, 100), want[i]);
    }
    const char *bad[] = {"0", "101", "1000", "", "-1", "1e2", "abc", "99999"};
    for (int i = 0; i < 8; i++) {
        q_limit = bad[i];
        S.respond_status = 0;
        assert_int_equal(bnb_util_page_limit(&H, NULL, 20, 100), 0);
        assert_int_equal(S.respond_status, 400);
    }
    static const char *const known[] = {"limit", "cursor", NULL};
    q_string = "limit=5&cursor=abc";
    assert_int_equal(bnb_util_query_names_ok(&H, NULL, known), 1);
    q_string = "limit=5&sort=x";
    S.respond_status = 0;
    assert_int_equal(bnb_util_query_names_ok(&H, NULL, known), 0);
    assert_int_equal(S.respond_status, 400);
    q_string = "limits=5";
    assert_int_equal(bnb_util_query_names_ok(&H, NULL, known), 0);
    q_string = NULL;
    assert_int_equal(bnb_util_query_names_ok(&H, NULL, known), 1);
}

static int delete_it(bnb_util_txn_t *t, void *arg)
{
    (void)arg;
    t->op = BNB_WRITE_DELETE;
    return 0;
}

static void test_delete(void **state)
{
    (void)state;
    S.doc = json_pack("{s:i}", "n", 1);
    S.version = 4;
    json_t *out = (json_t *)&S;
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", delete_it, NULL, &fast, &out, NULL), 0);
    assert_null(out);
    assert_null(S.doc);
    /* deleting what is absent is a caller error */
    assert_int_equal(bnb_util_update(&H, NULL, "c", "d", delete_it, NULL, &fast, NULL, NULL), BNB_EINVAL);
}

static int count_tries(void *arg, int n)
{
    int *calls = arg;
    assert_int_equal(n, *calls);
    (*calls)++;
    return *calls < 3 ? BNB_EEXIST : 42;
}

static void test_retry_runs_until_not_eexist(void **state)
{
    (void)state;
    int calls = 0;
    assert_int_equal(bnb_util_retry(&fast, count_tries, &calls), 42);
    assert_int_equal(calls, 3);
    assert_int_equal(S.nsleeps, 2);
}

static void test_http_status_mapping(void **state)
{
    (void)state;
    assert_int_equal(bnb_util_http_status(BNB_EINVAL), 400);
    assert_int_equal(bnb_util_http_status(BNB_EPERM), 403);
    assert_int_equal(bnb_util_http_status(BNB_ENOENT), 404);
    assert_int_equal(bnb_util_http_status(BNB_ETAKEN), 409);
    assert_int_equal(bnb_util_http_status(BNB_EEXIST), 503);
    assert_int_equal(bnb_util_http_status(BNB_EIO), 503);
    assert_int_equal(bnb_util_http_status(BNB_EAGAIN), 503);
    assert_int_equal(bnb_util_http_status(BNB_ETIMEDOUT), 504);
    assert_int_equal(bnb_util_http_status(BNB_ENOMEM), 500);
    assert_int_equal(bnb_util_http_status(-999), 500);
    bnb_util_respond_error(&H, NULL, BNB_EEXIST, "test store");
    assert_int_equal(S.respond_status, 503);
    assert_string_equal(S.retry_after, "1");
    S.retry_after[0] = '\0';
    bnb_util_respond_error(&H, NULL, BNB_ETAKEN, "test store");
    assert_int_equal(S.respond_status, 409);
    assert_string_equal(S.retry_after, "");
    bnb_util_respond_error(&H, NULL, BNB_ETIMEDOUT, "test store");
    assert_int_equal(S.respond_status, 504);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_creates_without_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_races_are_retried_with_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_are_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_skip_commits_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_error_and_store_errors_pass_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_applied_event_answers_ealready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_go_through_commit2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit2_without_claims_keeps_them, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_limit_and_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_runs_until_not_eexist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_status_mapping, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

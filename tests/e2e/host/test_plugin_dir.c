/*
 * End-to-end: the real program with broken plugins in its plugin directory.
 * The directory holds copies of the real plugins plus fixtures from
 * tests/host/fixtures (bad_abi.so: ABI 999; no_symbol.so: no bnb_plugin
 * export; failing_init.so: init registers GET /failinginit/ping and a
 * subscription, then returns -22).
 *  - bad files not asked for: the host starts, logs one error line per bad
 *    file naming it and the reason, and serves the good plugins;
 *  - a failing init not asked for: same, and its route answers 404;
 *  - a failing plugin asked for with --plugins: exit non-zero, the reason on
 *    stderr.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"
#include "hostutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const real_plugins[] = {"room", "reservation", "payment", "dashboard", "notification"};

typedef struct fx {
    char dir[64];
    char env_dir[128];
} fx_t;

/* a plugin dir with the real plugins and the named fixtures */
static int make_dir(fx_t *f, const char *const *fixtures)
{
    const char *src = getenv("BEARBNB_PLUGIN_DIR");
    if (src == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/bnb-plugdir-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->env_dir, sizeof(f->env_dir), "BEARBNB_PLUGIN_DIR=%s", f->dir);
    int copied = 0;
    for (size_t i = 0; i < sizeof(real_plugins) / sizeof(real_plugins[0]); i++) {
        char from[512], sub[256], to[512];
        snprintf(from, sizeof(from), "%s/%s/%s.so", src, real_plugins[i], real_plugins[i]);
        if (access(from, R_OK) != 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", f->dir, real_plugins[i]);
        snprintf(to, sizeof(to), "%s/%s.so", sub, real_plugins[i]);
        if (mkdir(sub, 0755) != 0 || hu_copy(from, to) != 0)
            return -1;
        copied++;
    }
    for (const char *const *fx = fixtures; fx && *fx; fx++) {
        char from[512], to[512];
        snprintf(from, sizeof(from), "%s/%s.so", BNB_HOST_FIXTURES, *fx);
        snprintf(to, sizeof(to), "%s/%s.so", f->dir, *fx);
        if (hu_copy(from, to) != 0)
            return -1;
    }
    return copied > 0 ? 0 : -1;
}

static int count_lines(const char *log, const char *a, const char *b, const char *c)
{
    int n = 0;
    for (const char *line = log; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *l = strndup(line, len);
        if (l && strstr(l, a) && strstr(l, b) && (c == NULL || strstr(l, c)))
            n++;
        free(l);
        line = end ? end + 1 : NULL;
    }
    return n;
}

static void check_serves_good_plugins(e2e_host_t *h)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/rooms", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(h, E2E_HTTP2, "GET", "/dashboard/rooms", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    e2e_resp_free(&r);
    /* the Rust plugin's route is there (401: it wants a user, not 404) */
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/notifications", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    e2e_resp_free(&r);
}

static void test_bad_files_skipped(void **state)
{
    (void)state;
    fx_t f;
    static const char *const bad[] = {"bad_abi", "no_symbol", NULL};
    assert_int_equal(make_dir(&f, bad), 0);
    const char *const env[] = {f.env_dir, NULL};
    e2e_host_opts_t o = {.env = env};
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, &o), 0);
    check_serves_good_plugins(h);
    char *log = hu_slurp(e2e_host_log_path(h));
    assert_non_null(log);
    char p1[256], p2[256];
    snprintf(p1, sizeof(p1), "%s/bad_abi.so", f.dir);
    snprintf(p2, sizeof(p2), "%s/no_symbol.so", f.dir);
    /* one error line per bad file, naming it and the reason */
    assert_int_equal(count_lines(log, p1, "\"level\":\"error\"", "ABI"), 1);
    assert_int_equal(count_lines(log, p1, "", NULL), 1);
    assert_int_equal(count_lines(log, p2, "\"level\":\"error\"", "missing export"), 1);
    assert_int_equal(count_lines(log, p2, "", NULL), 1);
    free(log);
    int st = e2e_host_stop(h);
    e2e_host_free(h);
    hu_rmtree(f.dir);
    assert_int_equal(st, 0);
}

/* A plugin whose init fails is refused like a file that fails to open: when
 * it was not asked for by name, the others still run. */
static void test_failing_init_skipped(void **state)
{
    (void)state;
    fx_t f;
    static const char *const bad[] = {"bad_abi", "failing_init", NULL};
    assert_int_equal(make_dir(&f, bad), 0);
    const char *const env[] = {f.env_dir, NULL};
    e2e_host_opts_t o = {.env = env};
    e2e_host_t *h = NULL;
    int started = e2e_host_start(&h, &o);
    if (started != 0)
        hu_rmtree(f.dir);
    assert_int_equal(started, 0);
    check_serves_good_plugins(h);
    e2e_resp_t r;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/failinginit/ping", NULL, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 404));
    e2e_resp_free(&r);
    char *log = hu_slurp(e2e_host_log_path(h));
    char p[256];
    snprintf(p, sizeof(p), "%s/failing_init.so", f.dir);
    assert_int_equal(count_lines(log, p, "\"level\":\"error\"", "init failed"), 1);
    free(log);
    int st = e2e_host_stop(h);
    e2e_host_free(h);
    hu_rmtree(f.dir);
    assert_int_equal(st, 0);
}

static void test_failing_plugin_requested(void **state)
{
    (void)state;
    fx_t f;
    static const char *const bad[] = {"bad_abi", "no_symbol", "failing_init", NULL};
    assert_int_equal(make_dir(&f, bad), 0);
    char data[128];
    snprintf(data, sizeof(data), "%s/data", f.dir);
    const char *bin = getenv("BEARBNB_BIN");
    assert_non_null(bin);
    const char *const env[] = {f.env_dir, NULL};

    /* init fails: exit non-zero, stderr names the file and the reason */
    const char *const argv[] = {bin, "--plugins", "room,failinginit", "--listen", "127.0.0.1:1", "--data", data, NULL};
    hu_run_t r;
    assert_int_equal(hu_run(argv, env, 60000, &r), 0);
    if (r.status <= 0 || r.status >= 128)
        fail_msg("want an error exit, got %d; stderr:\n%s", r.status, r.err);
    char p[256];
    snprintf(p, sizeof(p), "%s/failing_init.so", f.dir);
    assert_int_equal(count_lines(r.err, "bearbnb: ", p, "init failed"), 1);
    hu_run_free(&r);

    /* a requested plugin file that cannot be loaded (asked for by file name) */
    const char *const argv2[] = {bin, "--plugins", "bad_abi", "--check-config", NULL};
    assert_int_equal(hu_run(argv2, env, 60000, &r), 0);
    assert_true(r.status > 0 && r.status < 128);
    snprintf(p, sizeof(p), "%s/bad_abi.so", f.dir);
    assert_int_equal(count_lines(r.err, "bearbnb: ", p, "ABI"), 1);
    hu_run_free(&r);

    /* asking only for good plugins with the bad files present works */
    const char *const argv3[] = {bin, "--plugins", "room", "--check-config", NULL};
    assert_int_equal(hu_run(argv3, env, 60000, &r), 0);
    if (r.status != 0)
        fail_msg("exit %d; stderr:\n%s", r.status, r.err);
    assert_non_null(strstr(r.out, "config OK: plugins room;"));
    hu_run_free(&r);
    hu_rmtree(f.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_files_skipped),
        cmocka_unit_test(test_failing_init_skipped),
        cmocka_unit_test(test_failing_plugin_requested),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* host/loader.c: dlopen, ABI and export checks, init with undo on failure.
 * The plugins are real shared modules built from tests/host/fixtures. (The
 * same fixtures in a plugin directory of the real program: tests/e2e/host.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "host.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIXTURES BNB_BUILD_ROOT "/tests/host/fixtures"

typedef struct fx {
    bnb_host_t h;
    char err[1024];
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->h.router = bnb__router_new();
    f->h.cfg = bnb__config_new();
    f->h.metrics = bnb__metrics_new();
    if (f->h.router == NULL || f->h.cfg == NULL || f->h.metrics == NULL)
        return -1;
    bnb__host = &f->h;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bnb__router_free(f->h.router);
    bnb__config_free(f->h.cfg);
    bnb__metrics_free(f->h.metrics);
    bnb__host = NULL;
    free(f);
    return 0;
}

static void count(const char *m, const char *p, void *d, void *ud)
{
    (void)m;
    (void)p;
    (void)d;
    (*(int *)ud)++;
}

static int nroutes(bnb_router_t *r, void *owner)
{
    int n = 0;
    bnb__router_each(r, owner, count, &n);
    return n;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", hay, needle);
}

static void test_bad_abi(void **state)
{
    fx_t *f = *state;
    const char *path = FIXTURES "/bad_abi.so";
    assert_int_equal(access(path, R_OK), 0);
    bnb_inst_t *c = bnb__plugin_open(&f->h, path, f->err, sizeof(f->err));
    assert_null(c);
    assert_contains(f->err, path);
    assert_contains(f->err, "ABI");
    assert_contains(f->err, "999");
    assert_int_equal(nroutes(f->h.router, NULL), 0);
}

/* ABI major.minor: a plugin built against the 1.0 header (the shorter host
 * table, abi_version 1) loads and runs on this 1.x host; another major, or a
 * newer minor than the host's, is refused naming the file and both versions. */
static void test_abi_older_minor_loads(void **state)
{
    fx_t *f = *state;
    const char *path = FIXTURES "/abi_1_0.so";
    bnb_inst_t *c = bnb__plugin_open(&f->h, path, f->err, sizeof(f->err));
    if (c == NULL)
        fail_msg("open: %s", f->err);
    assert_int_equal(c->abi, BNB_ABI_MAKE(1, 0));
    if (bnb__plugin_init(c, f->err, sizeof(f->err)) != 0)
        fail_msg("init: %s", f->err);
    int *seen_size = dlsym(c->dl, "abi_1_0_seen_size");
    int *seen_version = dlsym(c->dl, "abi_1_0_seen_version");
    assert_non_null(seen_size);
    assert_non_null(seen_version);
    assert_int_equal(*seen_size, (int)sizeof(bnb_host_api_t)); /* the host's whole table */
    assert_int_equal(*seen_version, (int)BNB_ABI_VERSION);
    /* what it registered through its 1.0 view of the table is there */
    bnb_route_match_t m;
    assert_int_equal(bnb__router_match(f->h.router, "GET", "/abiold/ping", 12, &m, NULL, 0), 200);
    assert_ptr_equal(((bnb_route_entry_t *)m.route)->ctx, c);
    bnb__route_match_clear(&m);
    bnb__plugin_close(c);
}

static void test_abi_other_major_refused(void **state)
{
    fx_t *f = *state;
    const char *path = FIXTURES "/other_major.so";
    assert_null(bnb__plugin_open(&f->h, path, f->err, sizeof(f->err)));
    assert_contains(f->err, path);
    assert_contains(f->err, "ABI 2.0");
    char host[32];
    snprintf(host, sizeof(host), "ABI %u.%u", BNB_ABI_MAJOR, BNB_ABI_MINOR);
    assert_contains(f->err, host);
    assert_contains(f->err, "another major version");

    path = FIXTURES "/newer_minor.so";
    assert_null(bnb__plugin_open(&f->h, path, f->err, sizeof(f->err)));
    assert_contains(f->err, path);
    char newer[32];
    snprintf(newer, sizeof(newer), "ABI %u.%u", BNB_ABI_MAJOR, BNB_ABI_MINOR + 1);
    assert_contains(f->err, newer);
    assert_contains(f->err, host);
    assert_contains(f->err, "newer minor");
    assert_int_equal(nroutes(f->h.router, NULL), 0);
}

/* BNB_HAS: members appended after a table's size are absent. */
static void test_has(void **state)
{
    (void)state;
    bnb_host_api_t t = bnb__host_api;
    assert_true(BNB_HAS(&t, store_query));
    assert_true(BNB_HAS(&t, store_commit2));
    assert_true(BNB_HAS(&t, store_define));
    t.size = offsetof(bnb_host_api_t, store_define); /* a 1.0 host's table */
    assert_false(BNB_HAS(&t, store_define));
    assert_false(BNB_HAS(&t, store_query));
    assert_true(BNB_HAS(&t, now_ms));
    t.size = sizeof(bnb_host_api_t);
    t.store_query = NULL;
    assert_false(BNB_HAS(&t, store_query));
}

static void test_missing_export(void **state)
{
    fx_t *f = *state;
    const char *path = FIXTURES "/no_symbol.so";
    assert_int_equal(access(path, R_OK), 0);
    bnb_inst_t *c = bnb__plugin_open(&f->h, path, f->err, sizeof(f->err));
    assert_null(c);
    assert_contains(f->err, path);
    assert_contains(f->err, "missing export");
    assert_contains(f->err, "bnb_plugin");
}

static void test_not_a_shared_object(void **state)
{
    fx_t *f = *state;
    char path[] = "/tmp/bnb-loader-XXXXXX.so";
    int fd = mkstemps(path, 3);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not ELF\n", 8), 8);
    close(fd);
    assert_null(bnb__plugin_open(&f->h, path, f->err, sizeof(f->err)));
    assert_contains(f->err, path);
    assert_contains(f->err, "cannot load");
    unlink(path);
    assert_null(bnb__plugin_open(&f->h, FIXTURES "/absent.so", f->err, sizeof(f->err)));
    assert_contains(f->err, FIXTURES "/absent.so");
}

static void test_failing_init_leaves_nothing(void **state)
{
    fx_t *f = *state;
    const char *path = FIXTURES "/failing_init.so";
    bnb_inst_t *c = bnb__plugin_open(&f->h, path, f->err, sizeof(f->err));
    if (c == NULL)
        fail_msg("open: %s", f->err);
    assert_string_equal(c->name, "failinginit");
    int *fini_calls = dlsym(c->dl, "failing_init_fini_calls");
    assert_non_null(fini_calls);
    int before = *fini_calls;

    f->err[0] = '\0';
    int rc = bnb__plugin_init(c, f->err, sizeof(f->err));
    assert_int_equal(rc, -22);
    assert_contains(f->err, path);
    assert_contains(f->err, "failinginit");
    assert_contains(f->err, "init failed");
    assert_contains(f->err, "-22");
    /* nothing stays: no route in the router, no subscription, no state */
    assert_int_equal(nroutes(f->h.router, NULL), 0);
    bnb_route_match_t m;
    assert_int_equal(bnb__router_match(f->h.router, "GET", "/failinginit/ping", 17, &m, NULL, 0), 404);
    assert_int_equal(c->nroutes, 0);
    assert_int_equal(c->nsubs, 0);
    assert_null(c->subs);
    assert_null(c->userdata);
    assert_int_equal(c->inited, 0);
    assert_int_equal(*fini_calls, before + 1); /* it could free what init allocated */
    bnb__plugin_close(c);
    assert_int_equal(*fini_calls, before + 1); /* no second fini for a plugin that never ran */
}

static void test_good_registers(void **state)
{
    fx_t *f = *state;
    const char *path = FIXTURES "/good.so";
    bnb_inst_t *c = bnb__plugin_open(&f->h, path, f->err, sizeof(f->err));
    if (c == NULL)
        fail_msg("open: %s", f->err);
    assert_string_equal(c->name, "good");
    assert_string_equal(c->path, path);
    assert_ptr_equal(c->host, &f->h);
    if (bnb__plugin_init(c, f->err, sizeof(f->err)) != 0)
        fail_msg("init: %s", f->err);
    assert_int_equal(c->inited, 1);
    assert_int_equal(nroutes(f->h.router, c), 1);
    bnb_route_match_t m;
    assert_int_equal(bnb__router_match(f->h.router, "GET", "/good/ping", 10, &m, NULL, 0), 200);
    bnb_route_entry_t *e = m.route;
    assert_ptr_equal(e->ctx, c);
    assert_string_equal(e->method, "GET");
    assert_string_equal(e->pattern, "/good/ping");
    assert_int_equal(e->who, BNB_ROLE_ANYONE);
    bnb__route_match_clear(&m);
    assert_int_equal(c->nsubs, 1);
    assert_string_equal(c->subs[0].topic, "bearbnb.room");

    /* a second instance of the same plugin cannot take its route: its init
     * fails, and undoing it must not remove the first instance's route */
    bnb_inst_t *c2 = bnb__plugin_open(&f->h, path, f->err, sizeof(f->err));
    assert_non_null(c2);
    assert_int_equal(bnb__plugin_init(c2, f->err, sizeof(f->err)), BNB_EEXIST);
    assert_contains(f->err, path);
    assert_int_equal(nroutes(f->h.router, NULL), 1);
    assert_int_equal(bnb__router_match(f->h.router, "GET", "/good/ping", 10, &m, NULL, 0), 200);
    assert_ptr_equal(((bnb_route_entry_t *)m.route)->ctx, c);
    bnb__route_match_clear(&m);
    bnb__plugin_close(c2);

    /* closing removes its routes */
    bnb__plugin_close(c);
    assert_int_equal(nroutes(f->h.router, NULL), 0);
    assert_int_equal(bnb__router_match(f->h.router, "GET", "/good/ping", 10, &m, NULL, 0), 404);
}

/* The Rust plugin (plugins/notification, a cargo cdylib) passes the same
 * checks as the C ones: a shared object exporting bnb_plugin, ABI accepted. */
static void test_rust_plugin_loads(void **state)
{
    fx_t *f = *state;
    const char *path = BNB_BUILD_ROOT "/plugins/notification/notification.so";
    assert_int_equal(access(path, R_OK), 0);
    bnb_inst_t *c = bnb__plugin_open(&f->h, path, f->err, sizeof(f->err));
    if (c == NULL)
        fail_msg("open: %s", f->err);
    assert_string_equal(c->name, "notification");
    assert_string_equal(c->path, path);
    assert_int_equal(c->inited, 0);
    bnb__plugin_close(c);
}

static void test_scan(void **state)
{
    (void)state;
    char **paths = NULL;
    size_t n = 0;
    assert_int_equal(bnb__plugin_scan(FIXTURES, &paths, &n), 0);
    static const char *const want[] = {"bad_abi.so", "failing_init.so", "good.so", "no_symbol.so"};
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            assert_true(strcmp(paths[i - 1], paths[i]) < 0); /* sorted */
        for (size_t k = 0; k < 4; k++) {
            char full[512];
            snprintf(full, sizeof(full), "%s/%s", FIXTURES, want[k]);
            found += strcmp(paths[i], full) == 0;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    assert_int_equal(found, 4);
    assert_int_equal(bnb__plugin_scan("/nonexistent-plugin-dir", &paths, &n), -ENOENT);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_abi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_export, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abi_older_minor_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abi_other_major_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_has, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_shared_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_init_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_registers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rust_plugin_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}

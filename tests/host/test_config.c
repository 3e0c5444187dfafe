/* host/config.c: YAML file + BEARBNB_* environment + CLI, with strict checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fx {
    char dir[64];
    char path[128];
    bnb_config_t *c;
    char err[1024];
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/bnb-config-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/bearbnb.yaml", f->dir);
    f->c = bnb__config_new();
    if (f->c == NULL || bnb__config_declare_host(f->c) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bnb__config_free(f->c);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(fx_t *f, const char *text)
{
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* load `text`, expect an error containing every NULL-terminated needle */
static void expect_load_error(fx_t *f, const char *text, ...)
{
    write_file(f, text);
    f->err[0] = '\0';
    int rc = bnb__config_load_file(f->c, f->path, f->err, sizeof(f->err));
    if (rc == 0)
        rc = bnb__config_finish(f->c, NULL, NULL, f->err, sizeof(f->err));
    assert_int_not_equal(rc, 0);
    va_list ap;
    va_start(ap, text);
    for (const char *n; (n = va_arg(ap, const char *)) != NULL;)
        if (strstr(f->err, n) == NULL)
            fail_msg("error '%s' does not contain '%s'", f->err, n);
    va_end(ap);
}

static void test_defaults(void **state)
{
    fx_t *f = *state;
    assert_int_equal(bnb__config_finish(f->c, NULL, NULL, f->err, sizeof(f->err)), 0);
    assert_string_equal(bnb__config_str(f->c, "listen"), "0.0.0.0:8088");
    assert_string_equal(bnb__config_str(f->c, "data"), "./data");
    assert_int_equal(bnb__config_int(f->c, "http.max_body"), 65536);
    assert_int_equal(bnb__config_int(f->c, "breaker.failure_rate"), 50);
    assert_int_equal(bnb__config_int(f->c, "breaker.window"), 100);
    assert_int_equal(bnb__config_int(f->c, "breaker.minimum_calls"), 100);
    assert_int_equal(bnb__config_int(f->c, "breaker.wait_open_ms"), 60000);
    assert_int_equal(bnb__config_int(f->c, "breaker.half_open_calls"), 10);
    assert_int_equal(bnb__config_int(f->c, "call.timeout_ms"), 2000);
    assert_int_equal(bnb__config_bool(f->c, "events.deliver_twice"), 0);
    assert_int_equal(bnb__config_bool(f->c, "admin"), 0);
    assert_int_equal(bnb__config_bool(f->c, "test.clock"), 0);
    assert_null(bnb__config_str(f->c, "plugins"));
    assert_null(bnb__config_str(f->c, "no.such.key"));
    assert_string_equal(bnb__config_origin(f->c, "listen"), "default");
    assert_string_equal(bnb__config_env_name("breaker.wait_open_ms"), "BEARBNB_BREAKER_WAIT_OPEN_MS");
    assert_string_equal(bnb__config_env_name("room.storage.url"), "BEARBNB_ROOM_STORAGE_URL");
}

static void collect(const char *key, const char *value, void *ud)
{
    char *buf = ud;
    size_t l = strlen(buf);
    snprintf(buf + l, 1024 - l, "%s=%s;", key, value);
}

static void test_yaml_flattening(void **state)
{
    fx_t *f = *state;
    assert_int_equal(bnb__config_declare(f->c, "room.greeting", BNB_CFG_STRING, "hi"), 0);
    assert_int_equal(bnb__config_declare(f->c, "room.max_photos", BNB_CFG_INT, "3"), 0);
    write_file(f, "# comment\n"
                  "listen: 127.0.0.1:9000\n"
                  "plugins:\n"
                  "  - room\n"
                  "  - payment\n"
                  "breaker:\n"
                  "  window: 20\n"
                  "  minimum_calls: 5\n"
                  "events: {deliver_twice: yes}\n"
                  "room:\n"
                  "  max_photos: 12\n"
                  "  storage:\n"
                  "    backend: sqlite\n");
    assert_int_equal(bnb__config_declare(f->c, "room.storage.backend", BNB_CFG_STRING, NULL), 0);
    assert_int_equal(bnb__config_load_file(f->c, f->path, f->err, sizeof(f->err)), 0);
    assert_int_equal(bnb__config_finish(f->c, NULL, NULL, f->err, sizeof(f->err)), 0);
    assert_string_equal(bnb__config_str(f->c, "listen"), "127.0.0.1:9000");
    assert_string_equal(bnb__config_str(f->c, "plugins"), "room,payment");
    assert_int_equal(bnb__config_int(f->c, "breaker.window"), 20);
    assert_int_equal(bnb__config_int(f->c, "breaker.minimum_calls"), 5);
    assert_int_equal(bnb__config_int(f->c, "breaker.failure_rate"), 50); /* untouched default */
    assert_int_equal(bnb__config_bool(f->c, "events.deliver_twice"), 1);
    assert_int_equal(bnb__config_int(f->c, "room.max_photos"), 12);
    assert_string_equal(bnb__config_str(f->c, "room.greeting"), "hi");
    assert_string_equal(bnb__config_str(f->c, "room.storage.backend"), "sqlite");
    /* origins are file:line (1-based) */
    char want[256];
    snprintf(want, sizeof(want), "%s:2", f->path);
    assert_string_equal(bnb__config_origin(f->c, "listen"), want);
    snprintf(want, sizeof(want), "%s:7", f->path);
    assert_string_equal(bnb__config_origin(f->c, "breaker.window"), want);
    char all[1024] = "";
    bnb__config_each(f->c, collect, all);
    assert_non_null(strstr(all, "plugins=room,payment;"));
    assert_non_null(strstr(all, "breaker.minimum_calls=5;"));
    assert_non_null(strstr(all, "room.storage.backend=sqlite;"));
    assert_null(strstr(all, "room.greeting")); /* only set keys */
}

static void test_yaml_syntax_error(void **state)
{
    fx_t *f = *state;
    char want[256];
    snprintf(want, sizeof(want), "%s:3:", f->path);
    expect_load_error(f, "listen: 127.0.0.1:1\nbreaker:\n  window: 1: 2\n  minimum_calls: 3\n", want, "YAML", NULL);
}

static void test_yaml_duplicate_key(void **state)
{
    fx_t *f = *state;
    char want[256];
    snprintf(want, sizeof(want), "%s:4:", f->path);
    expect_load_error(f, "breaker:\n  window: 1\n  minimum_calls: 2\n  window: 3\n", want, "breaker.window", "twice",
                      NULL);
}

static void test_yaml_unknown_key(void **state)
{
    fx_t *f = *state;
    char want[256];
    snprintf(want, sizeof(want), "%s:3:", f->path);
    expect_load_error(f, "listen: 127.0.0.1:1\nbreaker:\n  windw: 10\n", want, "unknown key", "breaker.windw", NULL);
}

static void test_yaml_wrong_types(void **state)
{
    fx_t *f = *state;
    char want[256];
    snprintf(want, sizeof(want), "%s:2:", f->path);
    expect_load_error(f, "breaker:\n  window: ten\n", want, "breaker.window", "integer", "ten", NULL);
    bnb__config_free(f->c);
    f->c = bnb__config_new();
    assert_int_equal(bnb__config_declare_host(f->c), 0);
    snprintf(want, sizeof(want), "%s:3:", f->path);
    expect_load_error(f, "admin: true\nevents:\n  deliver_twice: maybe\n", want, "events.deliver_twice",
                      "true or false", "maybe", NULL);
    bnb__config_free(f->c);
    f->c = bnb__config_new();
    assert_int_equal(bnb__config_declare_host(f->c), 0);
    expect_load_error(f, "http:\n  max_body: 12kb\n", "http.max_body", "integer", NULL);
}

static void test_yaml_not_a_mapping(void **state)
{
    fx_t *f = *state;
    expect_load_error(f, "- a\n- b\n", f->path, "mapping", NULL);
}

static void test_missing_file(void **state)
{
    fx_t *f = *state;
    assert_int_not_equal(bnb__config_load_file(f->c, "/nonexistent/bearbnb.yaml", f->err, sizeof(f->err)), 0);
    assert_non_null(strstr(f->err, "/nonexistent/bearbnb.yaml"));
}

static void test_env_beats_file(void **state)
{
    fx_t *f = *state;
    write_file(f, "breaker:\n  minimum_calls: 7\n  window: 30\n");
    assert_int_equal(bnb__config_load_file(f->c, f->path, f->err, sizeof(f->err)), 0);
    char *const env[] = {"PATH=/usr/bin", "BEARBNB_BREAKER_MINIMUM_CALLS=2", "BEARBNB_ADMIN=1",
                         "BEARBNB_BIN=/x/bearbnb", NULL};
    assert_int_equal(bnb__config_finish(f->c, env, NULL, f->err, sizeof(f->err)), 0);
    assert_int_equal(bnb__config_int(f->c, "breaker.minimum_calls"), 2);
    assert_string_equal(bnb__config_origin(f->c, "breaker.minimum_calls"), "BEARBNB_BREAKER_MINIMUM_CALLS");
    assert_int_equal(bnb__config_int(f->c, "breaker.window"), 30); /* file value stays */
    assert_int_equal(bnb__config_bool(f->c, "admin"), 1);
}

static void test_cli_beats_env(void **state)
{
    fx_t *f = *state;
    write_file(f, "listen: 127.0.0.1:1111\n");
    assert_int_equal(bnb__config_load_file(f->c, f->path, f->err, sizeof(f->err)), 0);
    assert_int_equal(bnb__config_set(f->c, "listen", "127.0.0.1:3333", "--listen"), 0);
    char *const env[] = {"BEARBNB_LISTEN=127.0.0.1:2222", NULL};
    assert_int_equal(bnb__config_finish(f->c, env, NULL, f->err, sizeof(f->err)), 0);
    assert_string_equal(bnb__config_str(f->c, "listen"), "127.0.0.1:3333");
    assert_string_equal(bnb__config_origin(f->c, "listen"), "--listen");
}

static void test_env_wrong_type_named(void **state)
{
    fx_t *f = *state;
    char *const env[] = {"BEARBNB_CALL_TIMEOUT_MS=soon", NULL};
    assert_int_not_equal(bnb__config_finish(f->c, env, NULL, f->err, sizeof(f->err)), 0);
    assert_non_null(strstr(f->err, "BEARBNB_CALL_TIMEOUT_MS"));
    assert_non_null(strstr(f->err, "integer"));
}

static void test_unknown_env(void **state)
{
    fx_t *f = *state;
    char *const env[] = {"HOME=/root", "BEARBNB_LISTEN=127.0.0.1:1", "BEARBNB_BREAKER_WINDOWS=3", NULL};
    assert_int_not_equal(bnb__config_finish(f->c, env, NULL, f->err, sizeof(f->err)), 0);
    assert_non_null(strstr(f->err, "BEARBNB_BREAKER_WINDOWS"));
    assert_non_null(strstr(f->err, "unknown"));
    /* a plugin key that is not declared is unknown too */
    bnb__config_free(f->c);
    f->c = bnb__config_new();
    assert_int_equal(bnb__config_declare_host(f->c), 0);
    char *const env2[] = {"BEARBNB_ROOM_COLOUR=red", NULL};
    assert_int_not_equal(bnb__config_finish(f->c, env2, NULL, f->err, sizeof(f->err)), 0);
    assert_non_null(strstr(f->err, "BEARBNB_ROOM_COLOUR"));
}

static void test_skip_plugins(void **state)
{
    fx_t *f = *state;
    /* room runs here; payment is installed but not loaded (a shared ConfigMap) */
    assert_int_equal(bnb__config_declare(f->c, "room.greeting", BNB_CFG_STRING, NULL), 0);
    write_file(f, "room:\n  greeting: hello\npayment:\n  provider: fake\n  storage:\n    url: mongodb://x\n");
    assert_int_equal(bnb__config_load_file(f->c, f->path, f->err, sizeof(f->err)), 0);
    char *const env[] = {"BEARBNB_PAYMENT_STORAGE_BACKEND=mongo", "BEARBNB_ROOM_GREETING=hey", NULL};
    const char *const skip[] = {"payment", NULL};
    assert_int_equal(bnb__config_finish(f->c, env, skip, f->err, sizeof(f->err)), 0);
    assert_string_equal(bnb__config_str(f->c, "room.greeting"), "hey");

    /* without the skip list the same input is an error naming the key */
    bnb__config_free(f->c);
    f->c = bnb__config_new();
    assert_int_equal(bnb__config_declare_host(f->c), 0);
    assert_int_equal(bnb__config_declare(f->c, "room.greeting", BNB_CFG_STRING, NULL), 0);
    assert_int_equal(bnb__config_load_file(f->c, f->path, f->err, sizeof(f->err)), 0);
    char *const noenv[] = {NULL};
    assert_int_not_equal(bnb__config_finish(f->c, noenv, NULL, f->err, sizeof(f->err)), 0);
    assert_non_null(strstr(f->err, "payment."));

    /* skipping "pay" must not skip "payment" (prefix, not a plugin name) */
    bnb__config_free(f->c);
    f->c = bnb__config_new();
    assert_int_equal(bnb__config_declare_host(f->c), 0);
    char *const env3[] = {"BEARBNB_PAYMENT_X=1", NULL};
    const char *const skip3[] = {"pay", NULL};
    assert_int_not_equal(bnb__config_finish(f->c, env3, skip3, f->err, sizeof(f->err)), 0);
    assert_non_null(strstr(f->err, "BEARBNB_PAYMENT_X"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_flattening, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_syntax_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_duplicate_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_wrong_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_not_a_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_beats_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_beats_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_wrong_type_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_skip_plugins, setup, teardown),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}

/*
 * End-to-end: the bearbnb command line (no server needed): --check-config
 * with good and bad settings, --version, --help, and `token` argument errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hostutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fx {
    const char *bin;
    char dir[64];
    char yaml[128];
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->bin = getenv("BEARBNB_BIN");
    if (f->bin == NULL) {
        fprintf(stderr, "BEARBNB_BIN is not set\n");
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/bnb-cli-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->yaml, sizeof(f->yaml), "%s/bearbnb.yaml", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    hu_rmtree(f->dir);
    free(f);
    return 0;
}

static void write_yaml(fx_t *f, const char *text)
{
    FILE *fp = fopen(f->yaml, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

static void assert_contains(const char *what, const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("%s '%s' does not contain '%s'", what, hay, needle);
}

/* run bearbnb with args (NULL-terminated after the program) and env */
static void run(fx_t *f, const char *const *env, hu_run_t *r, ...)
{
    const char *argv[16] = {f->bin};
    size_t n = 1;
    va_list ap;
    va_start(ap, r);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 15;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    assert_int_equal(hu_run(argv, env, 60000, r), 0);
}

static void test_check_config_good(void **state)
{
    fx_t *f = *state;
    write_yaml(f, "listen: 127.0.0.1:18099\n"
                  "breaker:\n"
                  "  minimum_calls: 5\n"
                  "  wait_open_ms: 500\n"
                  "plugins: [room, payment]\n");
    hu_run_t r;
    const char *const env[] = {"BEARBNB_CALL_TIMEOUT_MS=1000", NULL};
    run(f, env, &r, "--config", f->yaml, "--check-config", NULL);
    if (r.status != 0)
        fail_msg("exit %d, stderr: %s", r.status, r.err);
    assert_contains("stdout", r.out, "config OK");
    assert_contains("stdout", r.out, "room");
    assert_contains("stdout", r.out, "payment");
    assert_null(strstr(r.out, "reservation")); /* only the listed plugins */
    assert_contains("stdout", r.out, "127.0.0.1:18099");
    hu_run_free(&r);
    /* --listen beats the file */
    run(f, NULL, &r, "--config", f->yaml, "--listen", "127.0.0.1:18100", "--check-config", NULL);
    assert_int_equal(r.status, 0);
    assert_contains("stdout", r.out, "127.0.0.1:18100");
    hu_run_free(&r);
}

static void test_check_config_unknown_key(void **state)
{
    fx_t *f = *state;
    write_yaml(f, "listen: 127.0.0.1:18099\n"
                  "breaker:\n"
                  "  minimum_calls: 5\n"
                  "  wait_opn_ms: 500\n");
    hu_run_t r;
    run(f, NULL, &r, "--config", f->yaml, "--check-config", NULL);
    assert_int_not_equal(r.status, 0);
    assert_true(r.status < 128); /* an error exit, not a crash */
    char where[160];
    snprintf(where, sizeof(where), "%s:4", f->yaml);
    assert_contains("stderr", r.err, where);
    assert_contains("stderr", r.err, "breaker.wait_opn_ms");
    assert_null(strstr(r.out, "config OK"));
    hu_run_free(&r);

    /* a value of the wrong type, named with its line */
    write_yaml(f, "http:\n  max_body: lots\n");
    run(f, NULL, &r, "--config", f->yaml, "--check-config", NULL);
    assert_int_not_equal(r.status, 0);
    snprintf(where, sizeof(where), "%s:2", f->yaml);
    assert_contains("stderr", r.err, where);
    assert_contains("stderr", r.err, "http.max_body");
    hu_run_free(&r);

    /* a missing file */
    run(f, NULL, &r, "--config", "/nonexistent/x.yaml", "--check-config", NULL);
    assert_int_not_equal(r.status, 0);
    assert_contains("stderr", r.err, "/nonexistent/x.yaml");
    hu_run_free(&r);
}

static void test_check_config_unknown_env(void **state)
{
    fx_t *f = *state;
    hu_run_t r;
    const char *const env[] = {"BEARBNB_FOO=1", NULL};
    run(f, env, &r, "--check-config", NULL);
    assert_int_not_equal(r.status, 0);
    assert_true(r.status < 128);
    assert_contains("stderr", r.err, "BEARBNB_FOO");
    hu_run_free(&r);
    /* and a known one with a bad value */
    const char *const env2[] = {"BEARBNB_BREAKER_WINDOW=many", NULL};
    run(f, env2, &r, "--check-config", NULL);
    assert_int_not_equal(r.status, 0);
    assert_contains("stderr", r.err, "BEARBNB_BREAKER_WINDOW");
    hu_run_free(&r);
    /* the same program without the bad variables is fine */
    run(f, NULL, &r, "--check-config", NULL);
    if (r.status != 0)
        fail_msg("exit %d, stderr: %s", r.status, r.err);
    hu_run_free(&r);
}

static void test_version_and_help(void **state)
{
    fx_t *f = *state;
    hu_run_t r;
    run(f, NULL, &r, "--version", NULL);
    assert_int_equal(r.status, 0);
    assert_true(strncmp(r.out, "bearbnb ", 8) == 0);
    assert_contains("stdout", r.out, "ABI 1");
    hu_run_free(&r);
    run(f, NULL, &r, "--help", NULL);
    assert_int_equal(r.status, 0);
    assert_contains("stdout", r.out, "usage: bearbnb");
    assert_contains("stdout", r.out, "--check-config");
    assert_contains("stdout", r.out, "token");
    hu_run_free(&r);
    run(f, NULL, &r, "--no-such-option", NULL);
    assert_int_equal(r.status, 2);
    assert_contains("stderr", r.err, "--no-such-option");
    hu_run_free(&r);
}

static void test_token_args(void **state)
{
    fx_t *f = *state;
    hu_run_t r;
    run(f, NULL, &r, "token", "--data", f->dir, "--sub", "alice", "--role", "admin", NULL);
    assert_int_equal(r.status, 2);
    assert_contains("stderr", r.err, "--role");
    assert_contains("stderr", r.err, "host or guest");
    assert_string_equal(r.out, ""); /* no token printed */
    hu_run_free(&r);
    run(f, NULL, &r, "token", "--data", f->dir, "--role", "guest", NULL);
    assert_int_equal(r.status, 2);
    assert_contains("stderr", r.err, "--sub");
    hu_run_free(&r);
    run(f, NULL, &r, "token", "--data", f->dir, "--sub", "alice", "--role", "guest", "--ttl", "-5", NULL);
    assert_int_equal(r.status, 2);
    assert_contains("stderr", r.err, "--ttl");
    hu_run_free(&r);
    /* the good form prints one JWT (three dot-separated parts) */
    run(f, NULL, &r, "token", "--data", f->dir, "--sub", "alice", "--role", "guest", NULL);
    if (r.status != 0)
        fail_msg("exit %d, stderr: %s", r.status, r.err);
    char *nl = strchr(r.out, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    int dots = 0;
    for (char *p = r.out; p < nl; p++)
        dots += *p == '.';
    assert_int_equal(dots, 2);
    hu_run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_config_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_config_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_config_unknown_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_and_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_args, setup, teardown),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}

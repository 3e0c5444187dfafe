/* Sign-in for the web app (issue 14): GET /auth/config says which way; the
 * development sign-in POST /dev/token exists only while the generated
 * development key is the only key: not with a configured key file, not with
 * a JWKS (Keycloak). Over real sockets, three hosts. */
#include "harness.h"
#include "rawhttp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* an ES256 public key (its private half was thrown away): a JWKS the host
 * accepts, so that it runs in OIDC mode */
#define JWKS                                                                                                           \
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"web-test\",\"alg\":\"ES256\",\"use\":\"sig\","             \
    "\"x\":\"BwdW8rf7PksHvCwpPzu1zVkZt-k_ilcdyIjng5AYLRo\",\"y\":\"oBCapgy8Q6gBIEH-9n91otKbnkA_OOG5J6ol9sfLeDk\"}]}"

static int post_json(int port, const char *path, const char *body, raw_resp_t *r)
{
    char req[2048];
    snprintf(req, sizeof(req),
             "POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             path, strlen(body), body);
    return raw_request(port, req, r);
}

static json_t *body_json(const raw_resp_t *r)
{
    return json_loads(r->body, 0, NULL);
}

static void test_dev_mode(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, NULL), 0);
    int port = e2e_host_port(h);
    raw_resp_t r;
    assert_int_equal(raw_get(port, "GET", "/auth/config", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *c = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(c, "mode")), "dev");
    json_decref(c);
    raw_resp_free(&r);

    assert_int_equal(post_json(port, "/dev/token", "{\"sub\":\"alice\",\"role\":\"host\"}", &r), 0);
    assert_int_equal(r.status, 200);
    c = body_json(&r);
    const char *tok = json_string_value(json_object_get(c, "token"));
    assert_non_null(tok);
    /* the token works: alice registers a room as a host */
    e2e_resp_t er;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "POST", "/rooms", tok,
                              "{\"name\":\"Dev hut\",\"description\":\"d\",\"city\":\"Jeju\",\"pricePerNight\":50,"
                              "\"capacity\":2}",
                              &er),
                     0);
    assert_int_equal(er.status, 201);
    assert_string_equal(json_string_value(json_object_get(er.json, "hostId")), "alice");
    e2e_resp_free(&er);
    json_decref(c);
    raw_resp_free(&r);

    /* bad input: 400 naming the member */
    static const char *const bad[][2] = {
        {"{\"sub\":\"alice\",\"role\":\"admin\"}", "role"},
        {"{\"sub\":\"\",\"role\":\"guest\"}", "sub"},
        {"{\"sub\":\"a b\",\"role\":\"guest\"}", "sub"},
        {"{\"role\":\"guest\"}", "sub"},
        {"[1]", "object"},
        {"{nope", "object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(post_json(port, "/dev/token", bad[i][0], &r), 0);
        if (r.status != 400 || strstr(r.body, bad[i][1]) == NULL)
            fail_msg("%s: %d %s", bad[i][0], r.status, r.body);
        char ct[64];
        assert_int_equal(raw_header(&r, "content-type", ct, sizeof(ct)), 0);
        assert_string_equal(ct, "application/problem+json");
        raw_resp_free(&r);
    }
    assert_int_equal(raw_get(port, "GET", "/dev/token", NULL, &r), 0);
    assert_int_equal(r.status, 405);
    raw_resp_free(&r);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
}

/* A configured key file: no development sign-in, no mode. */
static void test_configured_key(void **state)
{
    (void)state;
    char dir[] = "/tmp/bnb-signin-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/prod.key", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
    fclose(f);
    char kf[200];
    snprintf(kf, sizeof(kf), "BEARBNB_AUTH_KEY_FILE=%s", path);
    const char *env[] = {kf, NULL};
    e2e_host_opts_t o = {.env = env};
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, &o), 0);
    raw_resp_t r;
    assert_int_equal(raw_get(e2e_host_port(h), "GET", "/auth/config", NULL, &r), 0);
    json_t *c = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(c, "mode")), "none");
    json_decref(c);
    raw_resp_free(&r);
    assert_int_equal(post_json(e2e_host_port(h), "/dev/token", "{\"sub\":\"alice\",\"role\":\"host\"}", &r), 0);
    assert_int_equal(r.status, 404);
    assert_null(strstr(r.body, "token\":"));
    raw_resp_free(&r);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
    unlink(path);
    rmdir(dir);
}

/* A JWKS (Keycloak): OIDC with the issuer and the web client; no dev sign-in. */
static void test_oidc(void **state)
{
    (void)state;
    char dir[] = "/tmp/bnb-signin-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/jwks.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(JWKS, f);
    fclose(f);
    char jf[200];
    snprintf(jf, sizeof(jf), "BEARBNB_AUTH_JWKS_FILE=%s", path);
    const char *env[] = {jf, "BEARBNB_AUTH_ISSUER=http://localhost:8180/realms/bearbnb", NULL};
    e2e_host_opts_t o = {.env = env};
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, &o), 0);
    raw_resp_t r;
    assert_int_equal(raw_get(e2e_host_port(h), "GET", "/auth/config", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *c = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(c, "mode")), "oidc");
    assert_string_equal(json_string_value(json_object_get(c, "issuer")), "http://localhost:8180/realms/bearbnb");
    assert_string_equal(json_string_value(json_object_get(c, "clientId")), "bearbnb-web");
    json_decref(c);
    raw_resp_free(&r);
    assert_int_equal(post_json(e2e_host_port(h), "/dev/token", "{\"sub\":\"alice\",\"role\":\"host\"}", &r), 0);
    assert_int_equal(r.status, 404);
    raw_resp_free(&r);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dev_mode),
        cmocka_unit_test(test_configured_key),
        cmocka_unit_test(test_oidc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* host/gateway/proxy.c: gateway.routes (longest prefix), the signed identity
 * header (what it covers, its age, the previous secret) and forwarding a
 * request to an upstream (a loopback HTTP server, httpd_test.h): what is
 * passed on, what is dropped, what comes back; an upstream that is down or
 * slow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway.h"
#include "host.h"
#include "httpd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fx {
    bnb_host_t h;
    char dir[64];
    char secret[128], previous[128];
} fx_t;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/bnb-test-proxy-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->secret, sizeof(f->secret), "%s/secret", f->dir);
    snprintf(f->previous, sizeof(f->previous), "%s/previous", f->dir);
    write_file(f->secret, "0123456789abcdef-current\n");
    write_file(f->previous, "0123456789abcdef-previous\n");
    f->h.cfg = bnb__config_new();
    if (f->h.cfg == NULL || bnb__config_declare_host(f->h.cfg) != 0)
        return -1;
    bnb__host = &f->h;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bnb__gateway_free();
    bnb__config_free(f->h.cfg);
    bnb__host = NULL;
    unlink(f->secret);
    unlink(f->previous);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int init_with(fx_t *f, const char *routes, const char *secret_file, char *err, size_t errlen)
{
    if (routes)
        bnb__config_set(f->h.cfg, "gateway.routes", routes, "test");
    if (secret_file)
        bnb__config_set(f->h.cfg, "gateway.secret_file", secret_file, "test");
    return bnb__gateway_init(&f->h, err, errlen);
}

static void test_routes_longest_prefix(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    assert_int_equal(init_with(f, "/rooms=http://127.0.0.1:9001/,/rooms/special=h2c://127.0.0.1:9002 /pay=http://p:1",
                               NULL, err, sizeof(err)),
                     0);
    int i = -1, h2c = -1;
    const char *b = bnb__gateway_route("/rooms/1", 8, &i, &h2c);
    assert_non_null(b);
    assert_string_equal(b, "http://127.0.0.1:9001"); /* trailing slash dropped */
    assert_int_equal(i, 0);
    assert_int_equal(h2c, 0);
    b = bnb__gateway_route("/rooms/special/x", 16, &i, &h2c);
    assert_string_equal(b, "http://127.0.0.1:9002");
    assert_int_equal(i, 1);
    assert_int_equal(h2c, 1);
    assert_non_null(bnb__gateway_route("/rooms", 6, &i, &h2c));
    assert_non_null(bnb__gateway_route("/pay", 4, &i, &h2c));
    assert_null(bnb__gateway_route("/roomsX", 7, &i, &h2c)); /* a prefix ends at a segment */
    assert_null(bnb__gateway_route("/other", 6, &i, &h2c));
    assert_false(bnb__gateway_has_secret());
}

static void test_bad_config_named(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    assert_int_equal(init_with(f, "rooms=http://x:1", NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "gateway.routes entry 'rooms=http://x:1'"));
    bnb__gateway_free();
    assert_int_equal(init_with(f, "/rooms=ftp://x:1", NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "must start with http:// or h2c://"));
    bnb__gateway_free();
    char shortf[128];
    snprintf(shortf, sizeof(shortf), "%s/short", f->dir);
    write_file(shortf, "tooshort\n");
    assert_int_equal(init_with(f, "", shortf, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "at least 16 bytes"));
    unlink(shortf);
    bnb__gateway_free();
    bnb__config_set(f->h.cfg, "gateway.secret_file", "", "test");
    bnb__config_set(f->h.cfg, "gateway.enforce", "true", "test");
    assert_int_equal(bnb__gateway_init(&f->h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "gateway.enforce needs gateway.secret_file"));
}

static void sign(bnb_signer_t by, const char *body, int64_t ts, char *out, size_t outlen)
{
    bnb__gateway_sign(by, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", body, body ? strlen(body) : 0, ts, out,
                      outlen);
}

static int verify(const char *sig, const char *method, const char *path, const char *rid, const char *user,
                  const char *role, const char *body, int64_t now)
{
    return bnb__gateway_verify(sig, method, path, rid, user, role, body, body ? strlen(body) : 0, now);
}

/* The signature covers signer, method, path with query, request id,
 * identity, body and time (60 s either way). */
static void test_signature_covers_the_request(void **state)
{
    fx_t *f = *state;
    char err[256] = "", sig[200];
    assert_int_equal(init_with(f, NULL, f->secret, err, sizeof(err)), 0);
    assert_true(bnb__gateway_has_secret());
    const int64_t now = 1700000000;
    sign(BNB_SIGNED_EDGE, "{\"x\":1}", now, sig, sizeof(sig));
    assert_true(strncmp(sig, "v2;by=edge;ts=1700000000;sig=", 29) == 0);
    const char *b = "{\"x\":1}";
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", b, now), BNB_SIGNED_EDGE);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", b, now + 60), BNB_SIGNED_EDGE);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", b, now + 61), -1);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", b, now - 61), -1);
    assert_int_equal(verify(sig, "PUT", "/rooms/1?a=b", "rid-1", "alice", "guest", b, now), -1);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=c", "rid-1", "alice", "guest", b, now), -1);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-2", "alice", "guest", b, now), -1);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "mallory", "guest", b, now), -1);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "host", b, now), -1);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", "{\"x\":2}", now), -1);
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", NULL, now), -1);
    /* the signer is part of what is signed: relabelling an edge signature as svc fails */
    char forged[200];
    snprintf(forged, sizeof(forged), "v2;by=svc;%s", sig + strlen("v2;by=edge;"));
    assert_int_equal(verify(forged, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", b, now), -1);
    sign(BNB_SIGNED_SERVICE, NULL, now, sig, sizeof(sig));
    assert_int_equal(verify(sig, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", NULL, now), BNB_SIGNED_SERVICE);
    assert_int_equal(verify("v1;by=edge;ts=1;sig=x", "POST", "/", "", "", "", NULL, now), -1);
    assert_int_equal(verify(NULL, "POST", "/", "", "", "", NULL, now), -1);
}

/* Rotation with overlap: a signature made with the previous secret is still
 * accepted; new ones are made with the current secret only. */
static void test_previous_secret_still_verifies(void **state)
{
    fx_t *f = *state;
    char err[256] = "", old[200], cur[200];
    assert_int_equal(init_with(f, NULL, f->previous, err, sizeof(err)), 0);
    sign(BNB_SIGNED_EDGE, NULL, 1700000000, old, sizeof(old));
    bnb__gateway_free();
    bnb__config_set(f->h.cfg, "gateway.secret_previous_file", f->previous, "test");
    assert_int_equal(init_with(f, NULL, f->secret, err, sizeof(err)), 0);
    sign(BNB_SIGNED_EDGE, NULL, 1700000000, cur, sizeof(cur));
    assert_string_not_equal(old, cur);
    assert_int_equal(verify(old, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", NULL, 1700000000), BNB_SIGNED_EDGE);
    assert_int_equal(verify(cur, "POST", "/rooms/1?a=b", "rid-1", "alice", "guest", NULL, 1700000000), BNB_SIGNED_EDGE);
}

/* A request as http.c hands it to a worker: a client's POST with a query,
 * its own (untrusted) identity headers, and a verified identity. */
static void make_req(bnb_req_t *r, const char *body)
{
    static const char *names[] = {"content-type", "x-bnb-user", "x-bnb-role", "x-bnb-gateway",
                                  "x-custom",     "host",       "connection", "x-request-id"};
    static const char *values[] = {"application/json", "mallory",    "host",      "v2;forged", "kept",
                                   "evil.example",     "keep-alive", "client-rid"};
    memset(r, 0, sizeof(*r));
    r->method = strdup("POST");
    r->path = strdup("/rooms/1");
    r->query = strdup("a=b");
    r->nheaders = sizeof(names) / sizeof(names[0]);
    r->hnames = calloc(r->nheaders, sizeof(char *));
    r->hvalues = calloc(r->nheaders, sizeof(char *));
    for (size_t i = 0; i < r->nheaders; i++) {
        r->hnames[i] = strdup(names[i]);
        r->hvalues[i] = strdup(values[i]);
    }
    if (body) {
        r->raw_in = strdup(body);
        r->raw_in_len = strlen(body);
    }
    r->has_id = 1;
    snprintf(r->id.sub, sizeof(r->id.sub), "alice");
    snprintf(r->id.role, sizeof(r->id.role), "guest");
    snprintf(r->exec.request_id, sizeof(r->exec.request_id), "rid-proxy");
    snprintf(r->exec.traceparent, sizeof(r->exec.traceparent),
             "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01");
}

static void header_value(const char *req, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    const char *p = strcasestr(req, name);
    if (p == NULL)
        return;
    p += strlen(name);
    const char *e = strstr(p, "\r\n");
    snprintf(out, outlen, "%.*s", (int)(e ? e - p : (long)strlen(p)), p);
}

static void test_forward_signs_and_drops_client_identity(void **state)
{
    fx_t *f = *state;
    char err[256] = "";
    assert_int_equal(init_with(f, NULL, f->secret, err, sizeof(err)), 0);
    tsrv_t s;
    assert_int_equal(tsrv_start(&s), 0);
    tsrv_answer(&s, 201, "application/json", "Retry-After: 3\r\nX-Secret: no\r\n", "{\"id\":\"r1\"}");
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", s.port);
    bnb_req_t r;
    const char *body = "{\"name\":\"n\"}";
    make_req(&r, body);
    bnb__proxy_run(&r, base, 0, 2000);
    /* the answer, as it came */
    assert_int_equal(r.status, 201);
    assert_true(r.answered);
    assert_string_equal(r.raw_out, "{\"id\":\"r1\"}");
    assert_string_equal(r.raw_ctype, "application/json");
    assert_int_equal(r.nrh, 1); /* only listed headers come back */
    assert_string_equal(r.rh_names[0], "Retry-After");
    assert_string_equal(r.rh_values[0], "3");
    /* the request, as it went */
    char *got = tsrv_last(&s);
    assert_true(strncmp(got, "POST /rooms/1?a=b HTTP/1.1\r\n", 28) == 0);
    assert_non_null(strstr(got, "\r\n\r\n{\"name\":\"n\"}"));
    char v[256];
    header_value(got, "\r\nX-Bnb-User: ", v, sizeof(v));
    assert_string_equal(v, "alice");
    header_value(got, "\r\nX-Bnb-Role: ", v, sizeof(v));
    assert_string_equal(v, "guest");
    assert_null(strcasestr(got, "mallory"));
    assert_null(strcasestr(got, "v2;forged"));
    assert_null(strcasestr(got, "evil.example"));
    assert_null(strcasestr(got, "client-rid"));
    header_value(got, "\r\nx-custom: ", v, sizeof(v));
    assert_string_equal(v, "kept");
    header_value(got, "\r\nX-Request-Id: ", v, sizeof(v));
    assert_string_equal(v, "rid-proxy");
    header_value(got, "\r\ntraceparent: ", v, sizeof(v));
    assert_string_equal(v, "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01");
    header_value(got, "\r\nX-Bnb-Gateway: ", v, sizeof(v));
    assert_int_equal(bnb__gateway_verify(v, "POST", "/rooms/1?a=b", "rid-proxy", "alice", "guest", body, strlen(body),
                                         bnb__now_ms() / 1000),
                     BNB_SIGNED_EDGE);
    free(got);
    bnb__req_free_parts(&r);
    tsrv_stop(&s);
}

static void test_upstream_down_is_502_slow_is_504(void **state)
{
    (void)state;
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", tsrv_dead_port());
    bnb_req_t r;
    make_req(&r, NULL);
    bnb__proxy_run(&r, base, 0, 1000);
    assert_int_equal(r.status, 502);
    assert_true(r.problem);
    bnb__req_free_parts(&r);

    tsrv_t s;
    assert_int_equal(tsrv_start(&s), 0);
    s.delay_ms = 600;
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", s.port);
    make_req(&r, NULL);
    bnb__proxy_run(&r, base, 0, 150);
    assert_int_equal(r.status, 504);
    assert_true(r.problem);
    bnb__req_free_parts(&r);
    tsrv_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routes_longest_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature_covers_the_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_previous_secret_still_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forward_signs_and_drops_client_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_down_is_502_slow_is_504, setup, teardown),
    };
    return cmocka_run_group_tests_name("host/proxy", tests, NULL, NULL);
}

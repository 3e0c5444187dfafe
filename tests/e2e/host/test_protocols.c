/*
 * End-to-end: the host's HTTP surface against a running all-in-one bearbnb.
 * Protocols actually negotiated (HTTP/1.1, h2c prior knowledge, h2c via
 * Upgrade, HTTP/2 over TLS with ALPN), probes and metrics, the problem+json
 * answers the host gives before any plugin runs, and x-request-id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"
#include "hostutil.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef hu_fx_t fx_t;

static int setup(void **state)
{
    *state = hu_fx_start(NULL);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    return hu_fx_stop(*state) == 0 ? 0 : -1;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (hay == NULL || strstr(hay, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", hay ? hay : "(null)", needle);
}

/* ---- protocols ---------------------------------------------------------------- */

static void check_proto(int port, hu_proto_t proto, const char *cafile, long want_version)
{
    static const char *const paths[] = {"/healthz", "/rooms"};
    for (int i = 0; i < 2; i++) {
        hu_resp_t r;
        assert_int_equal(hu_request(port, proto, cafile, "GET", paths[i], NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        if (r.http_version != want_version)
            fail_msg("GET %s (proto %d): negotiated curl version %ld, want %ld", paths[i], proto, r.http_version,
                     want_version);
        char ct[128];
        assert_int_equal(hu_header(&r, "content-type", ct, sizeof(ct)), 0);
        assert_contains(ct, "application/json");
        json_t *j = json_loads(r.body, 0, NULL);
        if (j == NULL)
            fail_msg("GET %s: body is not JSON: '%s'", paths[i], r.body);
        if (i == 0)
            assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
        json_decref(j);
        hu_resp_free(&r);
    }
}

static void test_http11(void **state)
{
    fx_t *f = *state;
    check_proto(e2e_host_port(f->h), HU_H1, NULL, CURL_HTTP_VERSION_1_1);
}

static void test_h2c_prior_knowledge(void **state)
{
    fx_t *f = *state;
    check_proto(e2e_host_port(f->h), HU_H2_PRIOR, NULL, CURL_HTTP_VERSION_2_0);
}

static void test_h2c_upgrade(void **state)
{
    fx_t *f = *state;
    check_proto(e2e_host_port(f->h), HU_H2_UPGRADE, NULL, CURL_HTTP_VERSION_2_0);
}

/* ---- probes and metrics ---------------------------------------------------------- */

static void test_probes(void **state)
{
    fx_t *f = *state;
    e2e_resp_t r;
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ready");
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(f->h, E2E_HTTP2, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ok");
    e2e_resp_free(&r);
}

static double metric(const char *text, const char *series)
{
    size_t l = strlen(series);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, series, l) == 0 && line[l] == ' ')
            return strtod(line + l + 1, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NAN;
}

static char *get_metrics(fx_t *f)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_contains(r.content_type, "text/plain");
    char *t = strdup(r.body);
    e2e_resp_free(&r);
    return t;
}

static void test_metrics(void **state)
{
    fx_t *f = *state;
    const char *ok_series = "bearbnb_http_requests_total{route=\"/rooms\",method=\"GET\",status=\"200\"}";
    const char *nf_series = "bearbnb_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}";
    char *before = get_metrics(f);
    double b_ok = metric(before, ok_series), b_nf = metric(before, nf_series);
    if (isnan(b_ok))
        b_ok = 0;
    if (isnan(b_nf))
        b_nf = 0;
    for (int i = 0; i < 3; i++) {
        e2e_resp_t r;
        assert_int_equal(e2e_call(f->h, i % 2 ? E2E_HTTP2 : E2E_HTTP1, "GET", "/rooms", NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        e2e_resp_free(&r);
    }
    e2e_resp_t r;
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/no/such/thing", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    e2e_resp_free(&r);
    char *after = get_metrics(f);
    assert_true(metric(after, ok_series) == b_ok + 3);
    assert_true(metric(after, nf_series) == b_nf + 1);
    /* the duration histogram of the route: cumulative buckets, +Inf == count */
    assert_contains(after, "# TYPE bearbnb_http_request_duration_seconds histogram\n");
    assert_contains(after, "# TYPE bearbnb_http_requests_total counter\n");
    double inf =
        metric(after, "bearbnb_http_request_duration_seconds_bucket{route=\"/rooms\",method=\"GET\",le=\"+Inf\"}");
    double cnt = metric(after, "bearbnb_http_request_duration_seconds_count{route=\"/rooms\",method=\"GET\"}");
    double sum = metric(after, "bearbnb_http_request_duration_seconds_sum{route=\"/rooms\",method=\"GET\"}");
    assert_true(inf >= 3);
    assert_true(cnt == inf);
    assert_true(sum >= 0);
    double ten =
        metric(after, "bearbnb_http_request_duration_seconds_bucket{route=\"/rooms\",method=\"GET\",le=\"10\"}");
    assert_true(ten <= inf);
    /* every line: a comment or `name{labels} value` */
    for (const char *line = after; *line;) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        if (line[0] != '#') {
            const char *sp = memrchr(line, ' ', (size_t)(end - line));
            assert_non_null(sp);
            char *vend;
            strtod(sp + 1, &vend);
            if (vend != end)
                fail_msg("bad metrics line: %.*s", (int)(end - line), line);
        } else if (strncmp(line, "# TYPE ", 7) != 0 && strncmp(line, "# HELP ", 7) != 0) {
            fail_msg("bad comment line: %.*s", (int)(end - line), line);
        }
        line = end + 1;
    }
    free(before);
    free(after);
}

/* ---- problem+json ------------------------------------------------------------------ */

static void expect_problem(fx_t *f, e2e_proto_t proto, const char *method, const char *path, const char *token,
                           const char *const *headers, const char *body, long status, const char *detail_part)
{
    e2e_req_t rq = {proto, method, path, token, body, 0, headers, 0};
    e2e_resp_t r;
    assert_int_equal(e2e_http(f->h, &rq, &r), 0);
    if (!e2e_is_problem(&r, status))
        fail_msg("%s %s: want a %ld problem, got %ld '%s'", method, path, status, r.status, r.body);
    if (detail_part)
        assert_contains(json_string_value(json_object_get(r.json, "detail")), detail_part);
    if (status == 405) {
        assert_contains(r.allow, "GET");
        assert_contains(r.allow, "POST");
    }
    e2e_resp_free(&r);
}

static void test_problems(void **state)
{
    fx_t *f = *state;
    static const char room[] =
        "{\"name\":\"Den\",\"description\":\"d\",\"city\":\"Bern\",\"pricePerNight\":100,\"capacity\":2}";
    for (int p = E2E_HTTP1; p <= E2E_HTTP2; p++) {
        expect_problem(f, p, "GET", "/no/such/route", NULL, NULL, NULL, 404, NULL);
        expect_problem(f, p, "GET", "/rooms/", NULL, NULL, NULL, 404, NULL);
        expect_problem(f, p, "DELETE", "/rooms", NULL, NULL, NULL, 405, "DELETE");
        expect_problem(f, p, "POST", "/rooms", NULL, NULL, room, 401, NULL);
        expect_problem(f, p, "POST", "/rooms", "not.a.token", NULL, room, 401, "invalid token");
        static const char *const text[] = {"Content-Type: text/plain", NULL};
        expect_problem(f, p, "POST", "/rooms", f->host_tok, text, room, 415, "JSON");
        expect_problem(f, p, "POST", "/rooms", f->host_tok, NULL, "{\"name\": ", 400, "malformed JSON");
        expect_problem(f, p, "POST", "/rooms", f->host_tok, NULL, "[1, 2]", 400, "object");
    }
    /* 413: a valid JSON object just over the 64 KiB default limit */
    size_t n = 64 * 1024 + 100;
    char *big = malloc(n + 32);
    assert_non_null(big);
    int o = snprintf(big, n + 32, "{\"description\":\"");
    memset(big + o, 'x', n - (size_t)o);
    snprintf(big + n, 32, "\"}");
    expect_problem(f, E2E_HTTP1, "POST", "/rooms", f->host_tok, NULL, big, 413, "limit");
    expect_problem(f, E2E_HTTP2, "POST", "/rooms", f->host_tok, NULL, big, 413, "limit");
    free(big);
    /* none of those reached the plugin: no room exists */
    e2e_resp_t r;
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/rooms", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"Den\""));
    e2e_resp_free(&r);
}

/* ---- x-request-id -------------------------------------------------------------------- */

static void request_id(fx_t *f, hu_proto_t proto, const char *path, const char *sent, char *got, size_t gotlen)
{
    char hdr[160];
    snprintf(hdr, sizeof(hdr), "X-Request-Id: %s", sent ? sent : "");
    const char *const hs[] = {hdr, NULL};
    hu_resp_t r;
    assert_int_equal(hu_request(e2e_host_port(f->h), proto, NULL, "GET", path, sent ? hs : NULL, NULL, &r), 0);
    if (hu_header(&r, "x-request-id", got, gotlen) != 0)
        fail_msg("GET %s: no x-request-id in the answer:\n%s", path, r.headers);
    hu_resp_free(&r);
}

static void test_request_id_routed(void **state)
{
    fx_t *f = *state;
    char got[128], got2[128];
    request_id(f, HU_H1, "/rooms", "e2e-req-42", got, sizeof(got));
    assert_string_equal(got, "e2e-req-42");
    request_id(f, HU_H2_PRIOR, "/rooms", "e2e.req_43", got, sizeof(got));
    assert_string_equal(got, "e2e.req_43");
    /* none sent: one is generated, a fresh one per request */
    request_id(f, HU_H1, "/rooms", NULL, got, sizeof(got));
    request_id(f, HU_H1, "/rooms", NULL, got2, sizeof(got2));
    assert_true(strlen(got) >= 16);
    assert_string_not_equal(got, got2);
    /* an unusable one (spaces, header injection material) is replaced */
    request_id(f, HU_H1, "/rooms", "a b", got, sizeof(got));
    assert_string_not_equal(got, "a b");
    assert_true(strlen(got) >= 16);
}

/* Answers the host gives itself (probes, 404, 405, 401, 415, 400, 413) echo
 * the client's x-request-id too. */
static void test_request_id_host_answers(void **state)
{
    fx_t *f = *state;
    char got[128];
    request_id(f, HU_H1, "/no/such/route", "e2e-404", got, sizeof(got));
    assert_string_equal(got, "e2e-404");
    request_id(f, HU_H1, "/healthz", "e2e-health", got, sizeof(got));
    assert_string_equal(got, "e2e-health");
}

/* ---- TLS ------------------------------------------------------------------------------- */

static int tls_ready(void *arg)
{
    void **a = arg;
    hu_resp_t r;
    int ok = hu_request(*(int *)a[0], HU_H1_TLS, a[1], "GET", "/readyz", NULL, NULL, &r) == 0 && r.status == 200;
    hu_resp_free(&r);
    return ok;
}

static void test_tls_alpn(void **state)
{
    (void)state;
    char dir[] = "/tmp/bnb-tls-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cert[128], key[128], ecert[160], ekey[160];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    assert_int_equal(hu_make_cert(cert, key), 0);
    snprintf(ecert, sizeof(ecert), "BEARBNB_HTTP_TLS_CERT=%s", cert);
    snprintf(ekey, sizeof(ekey), "BEARBNB_HTTP_TLS_KEY=%s", key);
    const char *const env[] = {ecert, ekey, NULL};
    e2e_host_opts_t o = {.env = env, .no_wait = 1};
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, &o), 0);
    int port = e2e_host_port(h);
    void *arg[2] = {&port, cert};
    if (e2e_wait_until(30000, 100, tls_ready, arg) != 0) {
        char *tail = e2e_host_log_tail(h, 4000);
        fprintf(stderr, "TLS host not ready:\n%s\n", tail ? tail : "");
        free(tail);
        e2e_host_free(h);
        hu_rmtree(dir);
        fail();
    }
    /* ALPN h2 (certificate verified against the generated one) */
    check_proto(port, HU_H2_TLS, cert, CURL_HTTP_VERSION_2_0);
    /* and HTTP/1.1 over TLS for a client that offers only http/1.1 */
    check_proto(port, HU_H1_TLS, cert, CURL_HTTP_VERSION_1_1);
    /* a body too large to read whole gets its 413 early over TLS too (h2o
     * makes the HTTP/2 connection after the handshake, in a write callback) */
    char big[160], url[128];
    snprintf(big, sizeof(big), "%s/big.json", dir);
    FILE *fp = fopen(big, "w");
    assert_non_null(fp);
    for (int i = 0; i < 3 * 1024; i++)
        fprintf(fp, "%1024s", "");
    assert_int_equal(fclose(fp), 0);
    char *tok = e2e_token(h, "alice", "host", 0);
    assert_non_null(tok);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/rooms", port);
    for (int with_length = 1; with_length >= 0; with_length--) {
        char *out = hu_nghttp_post(url, tok, big, with_length ? NULL : "--no-content-length");
        if (out == NULL || !hu_nghttp_got_413(out)) {
            static char sum[8192];
            if (out)
                hu_nghttp_summary(out, sum, sizeof(sum));
            fail_msg("3 MB over h2 with TLS: want 413 problem+json then RST_STREAM(NO_ERROR):\n%s", out ? sum : "");
        }
        free(out);
    }
    free(tok);
    /* cleartext on the TLS port gets no HTTP answer */
    hu_resp_t r;
    hu_request(port, HU_H1, NULL, "GET", "/healthz", NULL, NULL, &r);
    assert_true(r.curl_code != 0 || r.status != 200);
    hu_resp_free(&r);
    int st = e2e_host_stop(h);
    e2e_host_free(h);
    hu_rmtree(dir);
    assert_int_equal(st, 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http11),
        cmocka_unit_test(test_h2c_prior_knowledge),
        cmocka_unit_test(test_h2c_upgrade),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_problems),
        cmocka_unit_test(test_request_id_routed),
        cmocka_unit_test(test_request_id_host_answers),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    const struct CMUnitTest tls[] = {cmocka_unit_test(test_tls_alpn)};
    rc |= cmocka_run_group_tests_name("tls", tls, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

/*
 * The gateway end to end: real bearbnb processes on loopback.
 *
 * - proxied routing: a room-only service that enforces the gateway
 *   (gateway.enforce + gateway.secret_file) behind an edge process with no
 *   plugin (gateway.routes), upstream over HTTP/1.1 and h2c, clients over
 *   h1 and h2; requests that bypass the edge or forge its header are refused;
 *   a dead upstream gives 502, then the breaker opens (fast 503 problem+json
 *   with Retry-After) and closes again once the upstream is back; a stopped
 *   upstream gives 504 after gateway.timeout_ms;
 * - authorization (OWASP API1/API3) in the all-in-one host;
 * - limits (OWASP API4/API6): body size, per-user and per-IP token buckets,
 *   the cap on a guest's active reservations;
 * - request id and traceparent: echoed, in the access log (edge and
 *   service), and carried by the events a request causes.
 */
#include "gw_util.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>
#include <time.h>
#include <unistd.h>

#define SECRET "gw-e2e-secret-0123456789abcdef-0123456789"

static const char ROOM_BODY[] =
    "{\"name\":\"Loft\",\"description\":\"quiet\",\"city\":\"Bern\",\"pricePerNight\":120,\"capacity\":3}";

/* ---- helpers ------------------------------------------------------------------- */

static char g_tmp[64];
static char g_secret_path[128];

static int make_secret(void)
{
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/bnb-gw-e2e-XXXXXX");
    if (mkdtemp(g_tmp) == NULL)
        return -1;
    snprintf(g_secret_path, sizeof(g_secret_path), "%s/gateway.secret", g_tmp);
    FILE *f = fopen(g_secret_path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%s\n", SECRET);
    fclose(f);
    return 0;
}

static void drop_secret(void)
{
    unlink(g_secret_path);
    rmdir(g_tmp);
}

/* The bookings here use fixed dates years ahead: a booking horizon of ten
 * years (the default is two) keeps them valid. */
static int start_host(e2e_host_t **h, const char *const *env)
{
    const char *all[16] = {"BEARBNB_RESERVATION_MAX_DAYS_AHEAD=3650"};
    size_t n = 1;
    for (; env && env[n - 1] && n < 15; n++)
        all[n] = env[n - 1];
    all[n] = NULL;
    e2e_host_opts_t o = {.env = all};
    return e2e_host_start(h, &o);
}

static int stop_host(e2e_host_t *h)
{
    if (h == NULL)
        return 0;
    int rc = e2e_host_pid(h) ? e2e_host_stop(h) : 0;
    e2e_host_free(h);
    return rc;
}

/* A room (and notification) service that accepts only requests signed by the edge. */
static int start_service(e2e_host_t **h)
{
    char sf[200];
    snprintf(sf, sizeof(sf), "BEARBNB_GATEWAY_SECRET_FILE=%s", g_secret_path);
    const char *env[] = {"BEARBNB_PLUGINS=room,notification", "BEARBNB_GATEWAY_ENFORCE=1", sf, NULL};
    return start_host(h, env);
}

/* An edge with no plugin routing /rooms, /reviews and /notifications to `port` over scheme
 * ("http" or "h2c"); extra: more env or NULL. */
static int start_edge(e2e_host_t **h, int port, const char *scheme, const char *const *extra)
{
    char routes[300], sf[200];
    snprintf(
        routes, sizeof(routes),
        "BEARBNB_GATEWAY_ROUTES=/rooms=%s://127.0.0.1:%d,/reviews=%s://127.0.0.1:%d,/notifications=%s://127.0.0.1:%d",
        scheme, port, scheme, port, scheme, port);
    snprintf(sf, sizeof(sf), "BEARBNB_GATEWAY_SECRET_FILE=%s", g_secret_path);
    const char *env[24] = {"BEARBNB_PLUGINS=", routes, sf};
    size_t n = 3;
    for (size_t i = 0; extra && extra[i] && n < 23; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    return start_host(h, env);
}

static char *json_str_dup(const e2e_resp_t *r, const char *key)
{
    const char *s = json_string_value(json_object_get(r->json, key));
    return s ? strdup(s) : NULL;
}

/* POST /rooms as `tok`; the new room id (caller frees) or NULL. */
static char *create_room(const e2e_host_t *h, e2e_proto_t p, const char *tok)
{
    e2e_resp_t r;
    char *id = NULL;
    if (e2e_call(h, p, "POST", "/rooms", tok, ROOM_BODY, &r) == 0 && r.status == 201)
        id = json_str_dup(&r, "id");
    else
        fprintf(stderr, "POST /rooms: %ld %s\n", r.status, r.body ? r.body : "");
    e2e_resp_free(&r);
    return id;
}

/* POST /reservations; fills status and (when 201/202) the id and paymentId. */
static long book(const e2e_host_t *h, const char *tok, const char *room, const char *in, const char *out, char *id,
                 size_t idlen, char *pay, size_t paylen)
{
    char body[400];
    snprintf(body, sizeof(body),
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":\"4111111111111111\"}",
             room, in, out);
    e2e_resp_t r;
    if (e2e_call(h, E2E_HTTP1, "POST", "/reservations", tok, body, &r) != 0) {
        e2e_resp_free(&r);
        return -1;
    }
    long st = r.status;
    if (id && (st == 201 || st == 202))
        snprintf(id, idlen, "%s", json_string_value(json_object_get(r.json, "id")) ?: "");
    if (pay && (st == 201 || st == 202))
        snprintf(pay, paylen, "%s", json_string_value(json_object_get(r.json, "paymentId")) ?: "");
    if (st != 201 && st != 202)
        fprintf(stderr, "POST /reservations: %ld %s\n", st, r.body ? r.body : "");
    e2e_resp_free(&r);
    return st;
}

static long status_of(const e2e_host_t *h, e2e_proto_t p, const char *method, const char *path, const char *tok,
                      const char *body)
{
    e2e_resp_t r;
    e2e_call(h, p, method, path, tok, body, &r);
    long st = r.status;
    e2e_resp_free(&r);
    return st;
}

/* Move host h's clock forward instead of sleeping (h runs with BEARBNB_ADMIN=1
 * and BEARBNB_TEST_CLOCK=1): what a breaker or a token bucket waits for. */
static void advance_clock(const e2e_host_t *h, long ms)
{
    char path[64];
    snprintf(path, sizeof(path), "/admin/clock?advance_ms=%ld", ms);
    assert_int_equal(status_of(h, E2E_HTTP1, "POST", path, NULL, NULL), 200);
}

static void b64url_enc(const unsigned char *md, size_t ml, char *b)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < ml; i += 3) {
        unsigned v = (unsigned)md[i] << 16 | (i + 1 < ml ? (unsigned)md[i + 1] << 8 : 0) | (i + 2 < ml ? md[i + 2] : 0);
        b[o++] = tbl[(v >> 18) & 63];
        b[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < ml)
            b[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < ml)
            b[o++] = tbl[v & 63];
    }
    b[o] = '\0';
}

/* X-Bnb-Gateway as the scheme documented in host/README.md computes it (v2:
 * the body's SHA-256 is part of the MAC). */
static void sign_gw_body(const char *secret, const char *by, const char *method, const char *pq, const char *rid,
                         const char *user, const char *role, const char *body, long long ts, char *out, size_t outlen)
{
    unsigned char dg[32];
    char dgs[64];
    SHA256((const unsigned char *)(body ? body : ""), body ? strlen(body) : 0, dg);
    b64url_enc(dg, sizeof(dg), dgs);
    char msg[2048];
    int n =
        snprintf(msg, sizeof(msg), "v2\n%s\n%s\n%s\n%s\n%s\n%s\n%lld\n%s", by, method, pq, rid, user, role, ts, dgs);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, (size_t)n, md, &ml);
    char b[128];
    b64url_enc(md, ml, b);
    snprintf(out, outlen, "v2;by=%s;ts=%lld;sig=%s", by, ts, b);
}

static void sign_gw(const char *secret, const char *by, const char *method, const char *pq, const char *rid,
                    const char *user, const char *role, long long ts, char *out, size_t outlen)
{
    sign_gw_body(secret, by, method, pq, rid, user, role, NULL, ts, out, outlen);
}

/* ---- proxied routing ------------------------------------------------------------ */

typedef struct proxy_state {
    e2e_host_t *svc;
} proxy_state_t;

static int proxy_setup(void **state)
{
    proxy_state_t *s = calloc(1, sizeof(*s));
    if (s == NULL || make_secret() != 0 || start_service(&s->svc) != 0) {
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static int proxy_teardown(void **state)
{
    proxy_state_t *s = *state;
    int rc = stop_host(s->svc);
    free(s);
    drop_secret();
    return rc == 0 ? 0 : -1;
}

/* Rooms and reviews CRUD through an edge; clients over h1 and h2. */
static void crud_through_edge(proxy_state_t *s, const char *scheme)
{
    e2e_host_t *edge = NULL;
    assert_int_equal(start_edge(&edge, e2e_host_port(s->svc), scheme, NULL), 0);
    long svc_log0 = gw_log_size(s->svc);
    char *host = e2e_token(edge, "hana", "host", 0), *guest = e2e_token(edge, "gus", "guest", 0);
    assert_non_null(host);
    assert_non_null(guest);
    e2e_proto_t protos[] = {E2E_HTTP1, E2E_HTTP2};
    for (int pi = 0; pi < 2; pi++) {
        e2e_proto_t p = protos[pi];
        e2e_resp_t r;
        char *id = create_room(edge, p, host);
        assert_non_null(id);
        char path[200];
        snprintf(path, sizeof(path), "/rooms/%s", id);
        assert_int_equal(e2e_call(edge, p, "GET", path, NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.http_version, p == E2E_HTTP2 ? 20 : 11);
        assert_string_equal(json_string_value(json_object_get(r.json, "hostId")), "hana");
        e2e_resp_free(&r);
        /* HEAD wherever GET, through the edge too (issue 11 #7) */
        assert_int_equal(e2e_call(edge, p, "HEAD", path, NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, 0);
        e2e_resp_free(&r);
        assert_int_equal(e2e_call(edge, p, "PATCH", path, host, "{\"pricePerNight\":150}", &r), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(json_integer_value(json_object_get(r.json, "pricePerNight")), 150);
        e2e_resp_free(&r);
        /* the role check of the service applies to the identity the edge forwards */
        assert_int_equal(status_of(edge, p, "PATCH", path, guest, "{\"pricePerNight\":1}"), 403);
        assert_int_equal(status_of(edge, p, "POST", "/rooms", NULL, ROOM_BODY), 401);
        char rpath[220];
        snprintf(rpath, sizeof(rpath), "/rooms/%s/reviews", id);
        assert_int_equal(e2e_call(edge, p, "POST", rpath, guest, "{\"rating\":4,\"content\":\"nice\"}", &r), 0);
        assert_int_equal(r.status, 201);
        char *rev = json_str_dup(&r, "id");
        assert_non_null(rev);
        e2e_resp_free(&r);
        assert_int_equal(e2e_call(edge, p, "GET", rpath, NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
        e2e_resp_free(&r);
        char dpath[220];
        snprintf(dpath, sizeof(dpath), "/reviews/%s", rev);
        assert_int_equal(status_of(edge, p, "DELETE", dpath, guest, NULL), 204);
        assert_int_equal(status_of(edge, p, "DELETE", path, host, NULL), 204);
        assert_int_equal(e2e_call(edge, p, "GET", path, NULL, NULL, &r), 0);
        assert_int_equal(r.status, 404);
        assert_true(e2e_is_problem(&r, 404));
        e2e_resp_free(&r);
        free(rev);
        free(id);
    }
    /* ids cross the edge: the service's access line has the client's request
     * id and trace id, and so has the edge's */
    const char *hdr[] = {"X-Request-Id: gw-e2e-proxy-rid-1",
                         "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", NULL};
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = "/rooms?city=Bern", .headers = hdr};
    e2e_resp_t r;
    assert_int_equal(e2e_http(edge, &rq, &r), 0);
    assert_int_equal(r.status, 200);
    e2e_resp_free(&r);
    assert_true(gw_log_line_has(s->svc, svc_log0, "\"access\"", "\"requestId\":\"gw-e2e-proxy-rid-1\"",
                                "0af7651916cd43dd8448eb211c80319c"));
    assert_true(gw_log_line_has(edge, 0, "\"access\"", "\"requestId\":\"gw-e2e-proxy-rid-1\"",
                                "0af7651916cd43dd8448eb211c80319c"));
    /* the upstream protocol is the one the route names */
    int h2_seen = gw_log_line_has(s->svc, svc_log0, "\"access\"", "\"protocol\":\"h2\"", "/rooms");
    int h1_seen = gw_log_line_has(s->svc, svc_log0, "\"access\"", "\"protocol\":\"http/1.1\"", "/rooms");
    if (strcmp(scheme, "h2c") == 0) {
        assert_true(h2_seen);
        assert_false(h1_seen);
    } else {
        assert_true(h1_seen);
        assert_false(h2_seen);
    }
    free(host);
    free(guest);
    assert_int_equal(stop_host(edge), 0);
}

static void test_proxy_crud_h1_upstream(void **state)
{
    crud_through_edge(*state, "http");
}

static void test_proxy_crud_h2c_upstream(void **state)
{
    crud_through_edge(*state, "h2c");
}

/* Percent-encoded paths cross the edge as they were sent, and get what the
 * all-in-one host answers (before: a space made the edge's URL invalid, 502;
 * %2F was decoded into a path separator). The signature covers the path as
 * forwarded, so the enforcing service accepts them. */
static void test_encoded_paths_like_all_in_one(void **state)
{
    proxy_state_t *s = *state;
    e2e_host_t *aio = NULL;
    assert_int_equal(start_host(&aio, NULL), 0);
    static const char *const schemes[] = {"http", "h2c"};
    static const struct {
        const char *method, *path, *who;
    } reqs[] = {
        {"POST", "/notifications/bad%20id/read", "guest"},
        {"POST", "/notifications/a%2Fb/read", "guest"},
        {"POST", "/notifications/%25/read", "guest"},
        {"POST", "/notifications/caf%C3%A9/read", "guest"},
        {"GET", "/rooms/bad%20id", NULL},
        {"GET", "/rooms/a%2Fb", NULL},
        {"GET", "/rooms/%25", NULL},
        {"GET", "/rooms/caf%C3%A9", NULL},
        {"GET", "/rooms/x/../y%20z", NULL},
        {"GET", "/rooms?city=Z%C3%BCrich%20Ost&limit=5", NULL},
        {"POST", "/rooms/bad%20id/reviews", "guest"},
    };
    for (int si = 0; si < 2; si++) {
        e2e_host_t *edge = NULL;
        assert_int_equal(start_edge(&edge, e2e_host_port(s->svc), schemes[si], NULL), 0);
        char *guest_edge = e2e_token(edge, "gus", "guest", 0), *guest_aio = e2e_token(aio, "gus", "guest", 0);
        assert_non_null(guest_edge);
        assert_non_null(guest_aio);
        for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
            for (int p = E2E_HTTP1; p <= E2E_HTTP2; p++) {
                const char *body = strcmp(reqs[i].method, "POST") == 0 ? "{\"rating\":5,\"content\":\"x\"}" : NULL;
                e2e_resp_t a, e;
                e2e_call(aio, (e2e_proto_t)p, reqs[i].method, reqs[i].path, reqs[i].who ? guest_aio : NULL, body, &a);
                e2e_call(edge, (e2e_proto_t)p, reqs[i].method, reqs[i].path, reqs[i].who ? guest_edge : NULL, body, &e);
                if (a.status != e.status || a.status >= 500 || (a.status >= 400 && !e2e_is_problem(&e, e.status)))
                    fail_msg("%s %s (%s client, %s upstream): all-in-one %ld '%.200s', edge %ld '%.200s'",
                             reqs[i].method, reqs[i].path, p == E2E_HTTP1 ? "h1" : "h2", schemes[si], a.status,
                             a.body ? a.body : "", e.status, e.body ? e.body : "");
                e2e_resp_free(&a);
                e2e_resp_free(&e);
            }
        }
        free(guest_edge);
        free(guest_aio);
        assert_int_equal(stop_host(edge), 0);
    }
    assert_int_equal(stop_host(aio), 0);
}

/* The service refuses what did not come through the edge. */
static void test_bypass_refused(void **state)
{
    proxy_state_t *s = *state;
    int port = e2e_host_port(s->svc);
    e2e_resp_t r;
    assert_int_equal(e2e_call(s->svc, E2E_HTTP1, "GET", "/rooms", NULL, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 403));
    assert_true(gw_detail_has(&r, "must come through the gateway"));
    e2e_resp_free(&r);
    /* a token the service's own key signed does not help */
    char *tok = e2e_token(s->svc, "hana", "host", 0);
    assert_non_null(tok);
    assert_int_equal(e2e_call(s->svc, E2E_HTTP2, "POST", "/rooms", tok, ROOM_BODY, &r), 0);
    assert_true(e2e_is_problem(&r, 403));
    e2e_resp_free(&r);
    free(tok);

    long long now = (long long)time(NULL);
    char good[200], sig[200], user[64] = "X-Bnb-User: hana", role[64] = "X-Bnb-Role: host";
    const char *rid = "gw-e2e-direct-1";
    struct {
        const char *what, *secret, *by, *signed_user, *method, *path;
        long long ts;
        long want;
    } cases[] = {
        {"right secret (the documented scheme)", SECRET, "edge", "hana", "GET", "/rooms?city=Bern", now, 200},
        {"garbage signature", NULL, "edge", "hana", "GET", "/rooms?city=Bern", now, 403},
        {"wrong secret", "another-secret-0123456789abcdef", "edge", "hana", "GET", "/rooms?city=Bern", now, 403},
        {"signed for another user", SECRET, "edge", "mallory", "GET", "/rooms?city=Bern", now, 403},
        {"signed for another path", SECRET, "edge", "hana", "GET", "/rooms", now, 403},
        {"signed for another method", SECRET, "edge", "hana", "DELETE", "/rooms?city=Bern", now, 403},
        {"stale timestamp", SECRET, "edge", "hana", "GET", "/rooms?city=Bern", now - 600, 403},
        {"unknown signer", SECRET, "admin", "hana", "GET", "/rooms?city=Bern", now, 403},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].secret)
            sign_gw(cases[i].secret, cases[i].by, cases[i].method, cases[i].path, rid, cases[i].signed_user, "host",
                    cases[i].ts, good, sizeof(good));
        else
            snprintf(good, sizeof(good), "v2;by=edge;ts=%lld;sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", now);
        snprintf(sig, sizeof(sig), "X-Bnb-Gateway: %s", good);
        const char *hdr[] = {sig, user, role, "X-Request-Id: gw-e2e-direct-1", NULL};
        gw_raw_t raw;
        assert_int_equal(gw_raw(port, 0, "GET", "/rooms?city=Bern", hdr, NULL, &raw), 0);
        if (raw.status != cases[i].want)
            fprintf(stderr, "case '%s': got %ld: %s\n", cases[i].what, raw.status, raw.body);
        assert_int_equal(raw.status, cases[i].want);
        if (cases[i].want == 403)
            assert_non_null(strstr(raw.body, "must come through the gateway"));
    }
    /* the identity is the signed one: the role check applies to it */
    sign_gw(SECRET, "edge", "POST", "/rooms", rid, "gina", "guest", now, good, sizeof(good));
    snprintf(sig, sizeof(sig), "X-Bnb-Gateway: %s", good);
    const char *ghdr[] = {
        sig, "X-Bnb-User: gina", "X-Bnb-Role: guest", "X-Request-Id: gw-e2e-direct-1", "Content-Type: application/json",
        NULL};
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "POST", .path = "/rooms", .body = ROOM_BODY, .headers = ghdr};
    assert_int_equal(e2e_http(s->svc, &rq, &r), 0);
    assert_true(e2e_is_problem(&r, 403));
    e2e_resp_free(&r);
}

/* Issue 11 #10: the signature covers the body. A header captured from one
 * signed POST is refused with another body (it used to be accepted for 60 s). */
static void test_signature_covers_body(void **state)
{
    proxy_state_t *s = *state;
    long long now = (long long)time(NULL);
    char good[200], sig[220];
    sign_gw_body(SECRET, "edge", "POST", "/rooms", "gw-e2e-body-1", "hana", "host", ROOM_BODY, now, good, sizeof(good));
    snprintf(sig, sizeof(sig), "X-Bnb-Gateway: %s", good);
    const char *hdr[] = {
        sig, "X-Bnb-User: hana", "X-Bnb-Role: host", "X-Request-Id: gw-e2e-body-1", "Content-Type: application/json",
        NULL};
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "POST", .path = "/rooms", .body = ROOM_BODY, .headers = hdr};
    e2e_resp_t r;
    assert_int_equal(e2e_http(s->svc, &rq, &r), 0);
    assert_int_equal(r.status, 201);
    e2e_resp_free(&r);
    /* the same header replayed with another body */
    static const char other[] =
        "{\"name\":\"Evil\",\"description\":\"x\",\"city\":\"Bern\",\"pricePerNight\":1,\"capacity\":9}";
    rq.body = other;
    assert_int_equal(e2e_http(s->svc, &rq, &r), 0);
    if (r.status != 403)
        fprintf(stderr, "replayed signature with another body: %ld %s\n", r.status, r.body);
    assert_true(e2e_is_problem(&r, 403));
    e2e_resp_free(&r);
}

/* Issue 11 #10: the secret rotates with overlap. A service with the new
 * secret as gateway.secret_file and the old one as
 * gateway.secret_previous_file accepts both; a third is refused; an edge
 * still on the old secret keeps working through the change. */
static void test_secret_rotation_overlap(void **state)
{
    (void)state;
    char newp[200];
    snprintf(newp, sizeof(newp), "%s/gateway.secret.new", g_tmp);
    FILE *f = fopen(newp, "w");
    assert_non_null(f);
    fprintf(f, "gw-e2e-NEW-secret-abcdefghijklmnop\n");
    fclose(f);
    char sf[260], pf[260];
    snprintf(sf, sizeof(sf), "BEARBNB_GATEWAY_SECRET_FILE=%s", newp);
    snprintf(pf, sizeof(pf), "BEARBNB_GATEWAY_SECRET_PREVIOUS_FILE=%s", g_secret_path);
    const char *env[] = {"BEARBNB_PLUGINS=room", "BEARBNB_GATEWAY_ENFORCE=1", sf, pf, NULL};
    e2e_host_t *svc = NULL;
    assert_int_equal(start_host(&svc, env), 0);
    int port = e2e_host_port(svc);
    long long now = (long long)time(NULL);
    const char *secrets[] = {"gw-e2e-NEW-secret-abcdefghijklmnop", SECRET, "gw-e2e-third-secret-0123456789abc"};
    long want[] = {200, 200, 403};
    for (int i = 0; i < 3; i++) {
        char good[200], sig[220];
        sign_gw(secrets[i], "edge", "GET", "/rooms", "gw-e2e-rot-1", "", "", now, good, sizeof(good));
        snprintf(sig, sizeof(sig), "X-Bnb-Gateway: %s", good);
        const char *hdr[] = {sig, "X-Request-Id: gw-e2e-rot-1", NULL};
        gw_raw_t raw;
        assert_int_equal(gw_raw(port, 0, "GET", "/rooms", hdr, NULL, &raw), 0);
        if (raw.status != want[i])
            fprintf(stderr, "secret %d: got %ld %s\n", i, raw.status, raw.body);
        assert_int_equal(raw.status, want[i]);
    }
    /* an edge still signing with the old secret, through the service */
    e2e_host_t *edge = NULL;
    assert_int_equal(start_edge(&edge, port, "http", NULL), 0);
    assert_int_equal(status_of(edge, E2E_HTTP1, "GET", "/rooms", NULL, NULL), 200);
    char *tok = e2e_token(edge, "hana", "host", 0);
    assert_non_null(tok);
    assert_int_equal(status_of(edge, E2E_HTTP1, "POST", "/rooms", tok, ROOM_BODY), 201);
    free(tok);
    assert_int_equal(stop_host(edge), 0);
    assert_int_equal(stop_host(svc), 0);
    unlink(newp);
}

/* A stopped upstream: 504 after gateway.timeout_ms, not before. */
static void test_upstream_timeout(void **state)
{
    proxy_state_t *s = *state;
    e2e_host_t *edge = NULL;
    const char *extra[] = {"BEARBNB_GATEWAY_TIMEOUT_MS=700", NULL};
    assert_int_equal(start_edge(&edge, e2e_host_port(s->svc), "http", extra), 0);
    assert_int_equal(status_of(edge, E2E_HTTP1, "GET", "/rooms", NULL, NULL), 200);
    assert_int_equal(kill(e2e_host_pid(s->svc), SIGSTOP), 0);
    long long t0 = e2e_now_ms();
    e2e_resp_t r;
    int rc = e2e_call(edge, E2E_HTTP2, "GET", "/rooms", NULL, NULL, &r);
    long long ms = e2e_now_ms() - t0;
    kill(e2e_host_pid(s->svc), SIGCONT);
    assert_int_equal(rc, 0);
    assert_true(e2e_is_problem(&r, 504));
    e2e_resp_free(&r);
    fprintf(stderr, "stopped upstream: 504 after %lld ms (gateway.timeout_ms 700)\n", ms);
    assert_true(ms >= 650);
    assert_true(ms < 5000);
    /* back again */
    assert_int_equal(status_of(edge, E2E_HTTP1, "GET", "/rooms", NULL, NULL), 200);
    assert_int_equal(stop_host(edge), 0);
}

/* A dead upstream: 502 fast; the breaker opens (503 + Retry-After, fast) and
 * closes once the upstream is back after wait_open_ms. */
static void test_upstream_down_breaker(void **state)
{
    (void)state;
    e2e_host_t *svc = NULL, *edge = NULL;
    assert_int_equal(start_service(&svc), 0);
    const char *extra[] = {"BEARBNB_BREAKER_MINIMUM_CALLS=2",
                           "BEARBNB_BREAKER_WINDOW=4",
                           "BEARBNB_BREAKER_WAIT_OPEN_MS=1500",
                           "BEARBNB_BREAKER_HALF_OPEN_CALLS=1",
                           "BEARBNB_ADMIN=1",
                           "BEARBNB_TEST_CLOCK=1",
                           NULL};
    assert_int_equal(start_edge(&edge, e2e_host_port(svc), "http", extra), 0);
    assert_int_equal(status_of(edge, E2E_HTTP1, "GET", "/rooms", NULL, NULL), 200);
    e2e_host_kill(svc);
    gw_raw_t raw;
    assert_int_equal(gw_raw(e2e_host_port(edge), 0, "GET", "/rooms", NULL, NULL, &raw), 0);
    assert_int_equal(raw.status, 502);
    assert_non_null(strstr(raw.headers, "application/problem+json"));
    assert_true(raw.ms < 1000);
    int opened = 0;
    for (int i = 0; i < 8 && !opened; i++) {
        assert_int_equal(gw_raw(e2e_host_port(edge), i % 2, "GET", "/rooms", NULL, NULL, &raw), 0);
        if (raw.status == 503) {
            opened = 1;
            break;
        }
        assert_int_equal(raw.status, 502);
    }
    assert_true(opened);
    char ra[32] = "";
    assert_int_equal(gw_raw_header(&raw, "retry-after", ra, sizeof(ra)), 0);
    assert_true(atoi(ra) >= 1 && atoi(ra) <= 2);
    assert_non_null(strstr(raw.headers, "application/problem+json"));
    assert_non_null(strstr(raw.body, "circuit open"));
    fprintf(stderr, "open breaker answered 503 in %ld ms\n", raw.ms);
    assert_true(raw.ms < 300);
    /* the upstream comes back; after wait_open_ms a trial call closes it */
    assert_int_equal(e2e_host_restart(svc), 0);
    advance_clock(edge, 1700);
    assert_int_equal(status_of(edge, E2E_HTTP1, "GET", "/rooms", NULL, NULL), 200);
    assert_int_equal(status_of(edge, E2E_HTTP2, "GET", "/rooms", NULL, NULL), 200);
    assert_int_equal(stop_host(edge), 0);
    assert_int_equal(stop_host(svc), 0);
}

/* /readyz of the edge until it is `want` (within timeout_ms); each answer
 * must come at once (the upstreams are asked off the loop). 1 when it was. */
static int edge_ready_becomes(const e2e_host_t *edge, long want, int timeout_ms)
{
    long long end = e2e_now_ms() + timeout_ms;
    do {
        long long t0 = e2e_now_ms();
        long st = status_of(edge, E2E_HTTP1, "GET", "/readyz", NULL, NULL);
        long long ms = e2e_now_ms() - t0;
        if (ms > 500)
            fprintf(stderr, "edge /readyz took %lld ms\n", ms);
        assert_true(ms <= 500);
        if (st == want)
            return 1;
        usleep(100 * 1000);
    } while (e2e_now_ms() < end);
    return 0;
}

/* An edge stays ready while at least one upstream is (issue 17): one of two
 * services down: still ready; both down (one of them stopped, so its
 * /readyz hangs): not ready, and /readyz still answers at once; one back:
 * ready again. */
static void test_edge_ready_while_one_upstream_is(void **state)
{
    (void)state;
    e2e_host_t *a = NULL, *b = NULL, *edge = NULL;
    assert_int_equal(start_service(&a), 0);
    assert_int_equal(start_service(&b), 0);
    char routes[300], sf[200];
    snprintf(routes, sizeof(routes), "BEARBNB_GATEWAY_ROUTES=/rooms=http://127.0.0.1:%d,/reviews=h2c://127.0.0.1:%d",
             e2e_host_port(a), e2e_host_port(b));
    snprintf(sf, sizeof(sf), "BEARBNB_GATEWAY_SECRET_FILE=%s", g_secret_path);
    const char *env[] = {"BEARBNB_PLUGINS=", routes, sf, NULL};
    assert_int_equal(start_host(&edge, env), 0); /* waits for /readyz 200 */
    e2e_host_kill(a);
    assert_false(edge_ready_becomes(edge, 503, 3000)); /* b is still ready: so is the edge */
    assert_int_equal(kill(e2e_host_pid(b), SIGSTOP), 0);
    int down = edge_ready_becomes(edge, 503, 5000);
    kill(e2e_host_pid(b), SIGCONT);
    assert_true(down);
    e2e_resp_t m;
    assert_int_equal(e2e_call(edge, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &m), 0);
    assert_non_null(strstr(m.body, "bearbnb_gateway_upstreams_ready 0"));
    e2e_resp_free(&m);
    assert_true(edge_ready_becomes(edge, 200, 5000)); /* b answers again */
    e2e_host_kill(b);
    assert_true(edge_ready_becomes(edge, 503, 5000));
    assert_int_equal(e2e_host_restart(a), 0);
    assert_true(edge_ready_becomes(edge, 200, 5000));
    assert_int_equal(status_of(edge, E2E_HTTP1, "GET", "/rooms", NULL, NULL), 200);
    assert_int_equal(stop_host(edge), 0);
    assert_int_equal(stop_host(a), 0);
    e2e_host_free(b);
}

/* ---- authorization (all-in-one) ---------------------------------------------------- */

static int aio_setup(void **state)
{
    e2e_host_t *h = NULL;
    if (start_host(&h, NULL) != 0)
        return -1;
    *state = h;
    return 0;
}

static int aio_teardown(void **state)
{
    return stop_host(*state) == 0 ? 0 : -1;
}

static void test_authz_reservations_payments(void **state)
{
    e2e_host_t *h = *state;
    char *host = e2e_token(h, "hostA", "host", 0), *ga = e2e_token(h, "guestA", "guest", 0),
         *gb = e2e_token(h, "guestB", "guest", 0), *hb = e2e_token(h, "hostB", "host", 0);
    assert_non_null(host);
    assert_non_null(ga);
    assert_non_null(gb);
    assert_non_null(hb);
    char *room = create_room(h, E2E_HTTP1, host);
    assert_non_null(room);
    char rid[64], pid[128], path[200];
    assert_int_equal(book(h, ga, room, "2031-03-01", "2031-03-04", rid, sizeof(rid), pid, sizeof(pid)), 201);
    assert_true(pid[0] != '\0');
    snprintf(path, sizeof(path), "/reservations/%s", rid);
    e2e_resp_t r;
    /* B sees nothing of A's reservation, as if it did not exist */
    assert_int_equal(e2e_call(h, E2E_HTTP2, "GET", path, gb, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 404));
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(h, E2E_HTTP1, "DELETE", path, gb, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 404));
    e2e_resp_free(&r);
    /* another host does not see it either; A and the room's host do */
    assert_int_equal(status_of(h, E2E_HTTP1, "GET", path, hb, NULL), 404);
    assert_int_equal(status_of(h, E2E_HTTP1, "GET", path, host, NULL), 200);
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", path, ga, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "CONFIRMED");
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/reservations", gb, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 0); /* a page */
    e2e_resp_free(&r);
    /* A's payment */
    snprintf(path, sizeof(path), "/payments/%s", pid);
    long st = status_of(h, E2E_HTTP2, "GET", path, gb, NULL);
    assert_true(st == 403 || st == 404);
    st = status_of(h, E2E_HTTP1, "GET", path, hb, NULL);
    assert_true(st == 403 || st == 404);
    assert_int_equal(status_of(h, E2E_HTTP1, "GET", path, ga, NULL), 200);
    snprintf(path, sizeof(path), "/payments?reservationId=%s", rid);
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", path, gb, NULL, &r), 0);
    assert_true(r.status == 403 || r.status == 404 ||
                (r.status == 200 && json_array_size(json_object_get(r.json, "items")) == 0));
    e2e_resp_free(&r);
    /* paying is internal (the reservation service calls it): a client cannot
     * create a payment with an amount of its choosing */
    char pbody[400];
    snprintf(pbody, sizeof(pbody),
             "{\"reservationId\":\"%s\",\"roomId\":\"%s\",\"hostId\":\"hostA\",\"amount\":1,"
             "\"card\":\"4111111111111111\"}",
             rid, room);
    st = status_of(h, E2E_HTTP1, "POST", "/payments", gb, pbody);
    assert_true(st == 403 || st == 404 || st == 405);
    st = status_of(h, E2E_HTTP1, "POST", "/payments", ga, pbody);
    assert_true(st == 403 || st == 404 || st == 405);
    free(room);
    free(host);
    free(ga);
    free(gb);
    free(hb);
}

static void test_authz_rooms(void **state)
{
    e2e_host_t *h = *state;
    char *ha = e2e_token(h, "hostA", "host", 0), *hb = e2e_token(h, "hostB", "host", 0);
    char *room = create_room(h, E2E_HTTP2, ha);
    assert_non_null(room);
    char path[200];
    snprintf(path, sizeof(path), "/rooms/%s", room);
    e2e_resp_t r;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "PATCH", path, hb, "{\"pricePerNight\":1}", &r), 0);
    assert_true(e2e_is_problem(&r, 403));
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(h, E2E_HTTP2, "DELETE", path, hb, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 403));
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", path, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "pricePerNight")), 120);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "ACTIVE");
    e2e_resp_free(&r);
    assert_int_equal(status_of(h, E2E_HTTP1, "PATCH", path, ha, "{\"pricePerNight\":130}"), 200);
    free(room);
    free(ha);
    free(hb);
}

/* Server-owned fields are a 400 that names the field; nothing changes. */
static void test_server_owned_fields(void **state)
{
    e2e_host_t *h = *state;
    char *ha = e2e_token(h, "hostA", "host", 0), *g = e2e_token(h, "guestC", "guest", 0);
    char *room = create_room(h, E2E_HTTP1, ha);
    assert_non_null(room);
    static const char *const room_fields[] = {"status", "hostId", "reviewCnt", "rating", "version", "id", NULL};
    char body[600], path[200], quoted[40];
    e2e_resp_t r;
    for (int i = 0; room_fields[i]; i++) {
        const char *v =
            !strcmp(room_fields[i], "status") || !strcmp(room_fields[i], "hostId") || !strcmp(room_fields[i], "id")
                ? "\"x\""
                : "5";
        snprintf(quoted, sizeof(quoted), "'%s'", room_fields[i]);
        snprintf(body, sizeof(body),
                 "{\"name\":\"n\",\"description\":\"d\",\"city\":\"c\",\"pricePerNight\":10,"
                 "\"capacity\":1,\"%s\":%s}",
                 room_fields[i], v);
        assert_int_equal(e2e_call(h, E2E_HTTP1, "POST", "/rooms", ha, body, &r), 0);
        assert_true(e2e_is_problem(&r, 400));
        assert_true(gw_detail_has(&r, quoted));
        e2e_resp_free(&r);
        snprintf(path, sizeof(path), "/rooms/%s", room);
        snprintf(body, sizeof(body), "{\"%s\":%s}", room_fields[i], v);
        assert_int_equal(e2e_call(h, E2E_HTTP2, "PATCH", path, ha, body, &r), 0);
        assert_true(e2e_is_problem(&r, 400));
        assert_true(gw_detail_has(&r, quoted));
        e2e_resp_free(&r);
    }
    snprintf(path, sizeof(path), "/rooms/%s", room);
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", path, NULL, NULL, &r), 0);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(r.json, "hostId")), "hostA");
    e2e_resp_free(&r);

    static const char *const resv_fields[] = {"status", "amount",  "paymentId", "guestId",
                                              "hostId", "version", "id",        NULL};
    for (int i = 0; resv_fields[i]; i++) {
        const char *v = !strcmp(resv_fields[i], "amount") || !strcmp(resv_fields[i], "version") ? "1" : "\"x\"";
        snprintf(quoted, sizeof(quoted), "'%s'", resv_fields[i]);
        snprintf(body, sizeof(body),
                 "{\"roomId\":\"%s\",\"checkIn\":\"2031-05-01\",\"checkOut\":\"2031-05-02\",\"guests\":1,"
                 "\"card\":\"4111111111111111\",\"%s\":%s}",
                 room, resv_fields[i], v);
        assert_int_equal(e2e_call(h, E2E_HTTP1, "POST", "/reservations", g, body, &r), 0);
        assert_true(e2e_is_problem(&r, 400));
        assert_true(gw_detail_has(&r, quoted));
        e2e_resp_free(&r);
    }
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/reservations", g, NULL, &r), 0);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 0);
    e2e_resp_free(&r);
    free(room);
    free(ha);
    free(g);
}

/* ---- request id and traceparent ---------------------------------------------------- */

static void test_request_id_traceparent(void **state)
{
    e2e_host_t *h = *state;
    long log0 = gw_log_size(h);
    const char *hdr[] = {"X-Request-Id: gw-e2e-rid-echo-1",
                         "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL};
    gw_raw_t raw;
    for (int h2 = 0; h2 < 2; h2++) {
        assert_int_equal(gw_raw(e2e_host_port(h), h2, "GET", "/rooms", hdr, NULL, &raw), 0);
        assert_int_equal(raw.status, 200);
        char v[128] = "";
        assert_int_equal(gw_raw_header(&raw, "x-request-id", v, sizeof(v)), 0);
        assert_string_equal(v, "gw-e2e-rid-echo-1");
    }
    assert_true(gw_log_line_has(h, log0, "\"access\"", "\"requestId\":\"gw-e2e-rid-echo-1\"",
                                "\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    /* without one, the host makes one up and still answers it */
    assert_int_equal(gw_raw(e2e_host_port(h), 0, "GET", "/rooms", NULL, NULL, &raw), 0);
    char v[128] = "";
    assert_int_equal(gw_raw_header(&raw, "x-request-id", v, sizeof(v)), 0);
    assert_true(strlen(v) >= 16);
    /* a malformed traceparent is not propagated */
    const char *bad[] = {"X-Request-Id: gw-e2e-rid-echo-2", "traceparent: 00-zzzz-00f067aa0ba902b7-01", NULL};
    assert_int_equal(gw_raw(e2e_host_port(h), 0, "GET", "/rooms", bad, NULL, &raw), 0);
    assert_int_equal(raw.status, 200);
    assert_false(gw_log_line_has(h, log0, "\"requestId\":\"gw-e2e-rid-echo-2\"", "zzzz", NULL));
}

typedef struct log_wait {
    e2e_host_t *h;
    long from;
    const char *a, *b;
} log_wait_t;

static int log_cond(void *arg)
{
    log_wait_t *w = arg;
    return gw_log_line_has(w->h, w->from, w->a, w->b, NULL);
}

/* DELETE /rooms/{id} with a request id: the saga it starts (RoomDeleted ->
 * ReservationCancelRequested -> PaymentCancelled -> ReservationCancelled)
 * runs in event consumers; their log lines carry the request id, which they
 * can only have taken from the envelopes. */
static void test_request_id_in_events(void **state)
{
    e2e_host_t *h = *state;
    char *ha = e2e_token(h, "hostE", "host", 0), *g = e2e_token(h, "guestE", "guest", 0);
    char *room = create_room(h, E2E_HTTP1, ha);
    assert_non_null(room);
    char rid[64];
    assert_int_equal(book(h, g, room, "2031-07-01", "2031-07-03", rid, sizeof(rid), NULL, 0), 201);
    long log0 = gw_log_size(h);
    char path[200];
    snprintf(path, sizeof(path), "/rooms/%s", room);
    const char *hdr[] = {"X-Request-Id: gw-e2e-rid-event-1",
                         "traceparent: 00-11112222333344445555666677778888-00f067aa0ba902b7-01", NULL};
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "DELETE", .path = path, .token = ha, .headers = hdr};
    e2e_resp_t r;
    assert_int_equal(e2e_http(h, &rq, &r), 0);
    assert_int_equal(r.status, 204);
    e2e_resp_free(&r);
    log_wait_t w = {h, log0, "\"eventId\"", "\"requestId\":\"gw-e2e-rid-event-1\""};
    assert_int_equal(e2e_wait_until(15000, 100, log_cond, &w), 0);
    /* and the reservation ended cancelled */
    snprintf(path, sizeof(path), "/reservations/%s", rid);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", path, g, NULL, &r), 0);
        int done = r.status == 200 && !strcmp(json_string_value(json_object_get(r.json, "status")) ?: "", "CANCELLED");
        e2e_resp_free(&r);
        if (done)
            break;
        usleep(100 * 1000);
    }
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", path, g, NULL, &r), 0);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "CANCELLED");
    e2e_resp_free(&r);
    free(room);
    free(ha);
    free(g);
}

/* ---- limits ----------------------------------------------------------------------- */

static void test_body_limit(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    const char *env[] = {"BEARBNB_HTTP_MAX_BODY=2048", NULL};
    assert_int_equal(start_host(&h, env), 0);
    char *tok = e2e_token(h, "hostL", "host", 0);
    char big[4200], desc[3000];
    memset(desc, 'a', sizeof(desc) - 1);
    desc[sizeof(desc) - 1] = '\0';
    snprintf(big, sizeof(big),
             "{\"name\":\"n\",\"description\":\"%s\",\"city\":\"c\",\"pricePerNight\":10,\"capacity\":1}", desc);
    e2e_resp_t r;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "POST", "/rooms", tok, big, &r), 0);
    assert_true(e2e_is_problem(&r, 413));
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(h, E2E_HTTP2, "POST", "/rooms", tok, big, &r), 0);
    assert_true(e2e_is_problem(&r, 413));
    e2e_resp_free(&r);
    desc[1500] = '\0'; /* under the limit */
    snprintf(big, sizeof(big),
             "{\"name\":\"n\",\"description\":\"%s\",\"city\":\"c\",\"pricePerNight\":10,\"capacity\":1}", desc);
    assert_int_equal(status_of(h, E2E_HTTP1, "POST", "/rooms", tok, big), 201);
    assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/rooms", NULL, NULL, &r), 0);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
    e2e_resp_free(&r);
    free(tok);
    assert_int_equal(stop_host(h), 0);
}

static void test_user_rate_limit(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    const char *env[] = {"BEARBNB_LIMITS_USER_RATE=2", "BEARBNB_LIMITS_USER_BURST=3",
                         "BEARBNB_LIMITS_IP_RATE=0",   "BEARBNB_ADMIN=1",
                         "BEARBNB_TEST_CLOCK=1",       NULL};
    assert_int_equal(start_host(&h, env), 0);
    char *a = e2e_token(h, "ursula", "guest", 0), *b = e2e_token(h, "bob", "guest", 0);
    int ok = 0, limited = 0;
    gw_raw_t raw;
    char auth[1200], ra[32] = "";
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", a);
    const char *hdr[] = {auth, NULL};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(gw_raw(e2e_host_port(h), i % 2, "GET", "/reservations", hdr, NULL, &raw), 0);
        if (raw.status == 200)
            ok++;
        else if (raw.status == 429) {
            limited++;
            assert_int_equal(gw_raw_header(&raw, "retry-after", ra, sizeof(ra)), 0);
            assert_true(atoi(ra) >= 1);
            assert_non_null(strstr(raw.headers, "application/problem+json"));
        }
    }
    assert_true(ok >= 3 && ok <= 4); /* the burst, maybe one refilled token */
    assert_true(limited >= 2);
    /* another user is not affected; an anonymous request neither */
    assert_int_equal(status_of(h, E2E_HTTP1, "GET", "/reservations", b, NULL), 200);
    assert_int_equal(status_of(h, E2E_HTTP1, "GET", "/rooms", NULL, NULL), 200);
    /* after Retry-After the user may go on */
    advance_clock(h, atoi(ra) * 1000L);
    assert_int_equal(gw_raw(e2e_host_port(h), 0, "GET", "/reservations", hdr, NULL, &raw), 0);
    assert_int_equal(raw.status, 200);
    free(a);
    free(b);
    assert_int_equal(stop_host(h), 0);
}

static void test_ip_rate_limit(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    const char *env[] = {"BEARBNB_LIMITS_IP_RATE=1", "BEARBNB_LIMITS_IP_BURST=3", "BEARBNB_LIMITS_USER_RATE=0", NULL};
    assert_int_equal(start_host(&h, env), 0);
    gw_raw_t raw;
    int ok = 0, limited = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(gw_raw(e2e_host_port(h), i % 2, "GET", "/rooms", NULL, "127.0.0.1", &raw), 0);
        if (raw.status == 200)
            ok++;
        else if (raw.status == 429) {
            char ra[32] = "";
            limited++;
            assert_int_equal(gw_raw_header(&raw, "retry-after", ra, sizeof(ra)), 0);
            assert_true(atoi(ra) >= 1);
        }
    }
    assert_true(ok >= 3 && ok <= 4);
    assert_true(limited >= 2);
    /* another client address is not affected */
    assert_int_equal(gw_raw(e2e_host_port(h), 0, "GET", "/rooms", NULL, "127.0.0.2", &raw), 0);
    assert_int_equal(raw.status, 200);
    assert_int_equal(stop_host(h), 0);
}

static void test_active_reservation_cap(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    const char *env[] = {"BEARBNB_RESERVATION_MAX_ACTIVE_PER_GUEST=2", NULL};
    assert_int_equal(start_host(&h, env), 0);
    char *ho = e2e_token(h, "hostC", "host", 0), *a = e2e_token(h, "capA", "guest", 0),
         *b = e2e_token(h, "capB", "guest", 0);
    char *room = create_room(h, E2E_HTTP1, ho);
    assert_non_null(room);
    char r1[64], path[200];
    assert_int_equal(book(h, a, room, "2032-01-01", "2032-01-02", r1, sizeof(r1), NULL, 0), 201);
    assert_int_equal(book(h, a, room, "2032-01-02", "2032-01-03", NULL, 0, NULL, 0), 201);
    char body[300];
    snprintf(body, sizeof(body),
             "{\"roomId\":\"%s\",\"checkIn\":\"2032-01-03\",\"checkOut\":\"2032-01-04\",\"guests\":1,"
             "\"card\":\"4111111111111111\"}",
             room);
    e2e_resp_t r;
    assert_int_equal(e2e_call(h, E2E_HTTP2, "POST", "/reservations", a, body, &r), 0);
    assert_true(e2e_is_problem(&r, 409));
    assert_true(gw_detail_has(&r, "too many active reservations"));
    e2e_resp_free(&r);
    /* another guest is not affected */
    assert_int_equal(book(h, b, room, "2032-01-03", "2032-01-04", NULL, 0, NULL, 0), 201);
    /* a cancelled one no longer counts */
    snprintf(path, sizeof(path), "/reservations/%s", r1);
    assert_int_equal(status_of(h, E2E_HTTP1, "DELETE", path, a, NULL), 202);
    assert_int_equal(book(h, a, room, "2032-01-05", "2032-01-06", NULL, 0, NULL, 0), 201);
    free(room);
    free(ho);
    free(a);
    free(b);
    assert_int_equal(stop_host(h), 0);
}

int main(void)
{
    const struct CMUnitTest proxy[] = {
        cmocka_unit_test(test_proxy_crud_h1_upstream),
        cmocka_unit_test(test_proxy_crud_h2c_upstream),
        cmocka_unit_test(test_bypass_refused),
        cmocka_unit_test(test_upstream_timeout),
        cmocka_unit_test(test_signature_covers_body),
        cmocka_unit_test(test_secret_rotation_overlap),
        cmocka_unit_test(test_upstream_down_breaker),
        cmocka_unit_test(test_encoded_paths_like_all_in_one),
        cmocka_unit_test(test_edge_ready_while_one_upstream_is),
    };
    const struct CMUnitTest aio[] = {
        cmocka_unit_test(test_authz_reservations_payments), cmocka_unit_test(test_authz_rooms),
        cmocka_unit_test(test_server_owned_fields),         cmocka_unit_test(test_request_id_traceparent),
        cmocka_unit_test(test_request_id_in_events),
    };
    const struct CMUnitTest limits[] = {
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_user_rate_limit),
        cmocka_unit_test(test_ip_rate_limit),
        cmocka_unit_test(test_active_reservation_cap),
    };
    int fails = cmocka_run_group_tests_name("gateway proxy", proxy, proxy_setup, proxy_teardown);
    fails += cmocka_run_group_tests_name("gateway authorization and ids", aio, aio_setup, aio_teardown);
    fails += cmocka_run_group_tests_name("gateway limits", limits, NULL, NULL);
    return fails;
}

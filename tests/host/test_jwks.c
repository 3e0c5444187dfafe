/* Unit tests of host/jwks.c: JWK -> PEM, JWKS documents (Keycloak shape),
 * and URL refresh against a loopback HTTP server thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "jwk_test.h"

#include "bnb_plugin.h"
#include "clock.h"
#include "jwks.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct {
    EVP_PKEY *rsa, *rsa2, *ec;
} K;

/* ---- keys and JWKs ------------------------------------------------------ */

static char *pub_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    return s;
}

/* JWK of a generated key; `tweak` adds 1 to EC y (the point leaves the curve). */
static json_t *jwk_of(EVP_PKEY *k, const char *kid, int tweak)
{
    json_t *j;
    if (EVP_PKEY_is_a(k, "RSA")) {
        BIGNUM *n = NULL, *e = NULL;
        assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n), 1);
        assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e), 1);
        char *ns = b64url_bn(n, 0), *es = b64url_bn(e, 0);
        j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kid", kid, "kty", "RSA", "alg", "RS256", "use", "sig", "n", ns,
                      "e", es);
        free(ns);
        free(es);
        BN_free(n);
        BN_free(e);
    } else {
        BIGNUM *x = NULL, *y = NULL;
        assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
        assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
        if (tweak)
            assert_int_equal(BN_add_word(y, 1), 1);
        char *xs = b64url_bn(x, 32), *ys = b64url_bn(y, 32);
        j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kid", kid, "kty", "EC", "crv", "P-256", "use", "sig", "x", xs,
                      "y", ys);
        free(xs);
        free(ys);
        BN_free(x);
        BN_free(y);
    }
    assert_non_null(j);
    return j;
}

static char *jwk_text(EVP_PKEY *k, const char *kid, int tweak)
{
    json_t *j = jwk_of(k, kid, tweak);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* Keycloak's certs shape: a sig key per kid plus an RSA-OAEP "enc" key that
 * must be ignored. */
static char *jwks_text(EVP_PKEY *k1, const char *kid1, EVP_PKEY *k2, const char *kid2)
{
    json_t *keys = json_array();
    if (k1)
        json_array_append_new(keys, jwk_of(k1, kid1, 0));
    if (k2)
        json_array_append_new(keys, jwk_of(k2, kid2, 0));
    json_t *enc = jwk_of(K.rsa2, "enc-key", 0);
    json_object_set_new(enc, "use", json_string("enc"));
    json_object_set_new(enc, "alg", json_string("RSA-OAEP"));
    json_array_append_new(keys, enc);
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *s = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    return s;
}

/* ---- JWK -> PEM --------------------------------------------------------- */

static void test_jwk_to_pem_matches_openssl(void **state)
{
    (void)state;
    EVP_PKEY *keys[] = {K.rsa, K.ec};
    const char *algs[] = {"RS256", "ES256"};
    for (int i = 0; i < 2; i++) {
        char *jwk = jwk_text(keys[i], "k", 0), *pem = NULL, *want = pub_pem(keys[i]), err[160] = "";
        const char *alg = NULL;
        int rc = bnb__jwk_to_pem(jwk, &pem, &alg, err, sizeof err);
        if (rc)
            print_error("%s\n", err);
        assert_int_equal(rc, 0);
        assert_string_equal(pem, want);
        assert_string_equal(alg, algs[i]);
        free(jwk);
        free(pem);
        free(want);
    }
}

static void test_bad_jwks_rejected(void **state)
{
    (void)state;
    char *pem = NULL, err[160];
    /* EC point not on the curve */
    char *off = jwk_text(K.ec, "k", 1);
    assert_int_equal(bnb__jwk_to_pem(off, &pem, NULL, err, sizeof err), BNB_EINVAL);
    assert_null(pem);
    free(off);
    /* RSA 1024 is too weak */
    EVP_PKEY *small = EVP_RSA_gen(1024);
    assert_non_null(small);
    char *sm = jwk_text(small, "k", 0);
    assert_int_equal(bnb__jwk_to_pem(sm, &pem, NULL, err, sizeof err), BNB_EINVAL);
    free(sm);
    EVP_PKEY_free(small);
    /* an encryption key, even without an alg member */
    json_t *enc = jwk_of(K.rsa, "k", 0);
    json_object_del(enc, "alg");
    json_object_set_new(enc, "use", json_string("enc"));
    char *enc_s = json_dumps(enc, 0);
    assert_int_equal(bnb__jwk_to_pem(enc_s, &pem, NULL, err, sizeof err), BNB_EINVAL);
    assert_null(pem);
    free(enc_s);
    json_decref(enc);
    const char *bad[] = {
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}",       /* short coordinates */
        "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AAAA\",\"y\":\"AAAA\"}",       /* other curve */
        "{\"kty\":\"RSA\",\"e\":\"AQAB\"}",                                       /* no modulus */
        "{\"kty\":\"RSA\",\"n\":\"!!!not-base64!!!\",\"e\":\"AQAB\"}",            /* bad base64url */
        "{\"kty\":\"oct\",\"k\":\"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw\"}", /* symmetric */
        "{\"n\":\"AQAB\"}",                                                       /* no kty */
        "[1,2]",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        assert_int_equal(bnb__jwk_to_pem(bad[i], &pem, NULL, err, sizeof err), BNB_EINVAL);
        assert_null(pem);
        assert_true(err[0] != '\0');
    }
}

/* ---- file source -------------------------------------------------------- */

static void test_file_keycloak_shape_and_rotation(void **state)
{
    (void)state;
    char dir[] = "/tmp/bnb-jwks-XXXXXX", path[64], err[256] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/certs.json", dir);
    char *doc = jwks_text(K.rsa, "old", K.ec, "ec");
    write_file(path, doc);
    free(doc);
    bnb_jwks_t *k = NULL;
    bnb_jwks_config_t cfg = {.file = path, .kid_wait_ms = -1};
    assert_int_equal(bnb__jwks_new(&cfg, &k, err, sizeof err), 0);
    assert_int_equal(bnb__jwks_count(k), 2); /* the enc key is not kept */
    char *pem = NULL, *want = pub_pem(K.rsa);
    size_t len = 0;
    assert_int_equal(bnb__jwks_get_pem(k, "old", "RS256", &pem, &len), 0);
    assert_string_equal(pem, want);
    assert_int_equal(len, strlen(want));
    free(pem);
    free(want);
    assert_int_equal(bnb__jwks_get_pem(k, "old", "ES256", &pem, NULL), BNB_EINVAL);
    assert_int_equal(bnb__jwks_get_pem(k, "enc-key", "RS256", &pem, NULL), BNB_ENOENT);
    assert_int_equal(bnb__jwks_get_pem(k, "old", "HS256", &pem, NULL), BNB_EINVAL);
    /* no kid: the only key of that type */
    assert_int_equal(bnb__jwks_get_pem(k, NULL, "ES256", &pem, NULL), 0);
    free(pem);

    /* rotation: old + new, then only new */
    doc = jwks_text(K.rsa, "old", K.rsa2, "new");
    write_file(path, doc);
    free(doc);
    assert_int_equal(bnb__jwks_refresh(k, err, sizeof err), 0);
    assert_int_equal(bnb__jwks_get_pem(k, "old", "RS256", &pem, NULL), 0);
    free(pem);
    assert_int_equal(bnb__jwks_get_pem(k, "new", "RS256", &pem, NULL), 0);
    free(pem);
    assert_int_equal(bnb__jwks_get_pem(k, NULL, "RS256", &pem, NULL), BNB_ENOENT); /* ambiguous */
    doc = jwks_text(K.rsa2, "new", NULL, NULL);
    write_file(path, doc);
    free(doc);
    assert_int_equal(bnb__jwks_refresh(k, err, sizeof err), 0);
    assert_int_equal(bnb__jwks_get_pem(k, "old", "RS256", &pem, NULL), BNB_ENOENT);
    assert_int_equal(bnb__jwks_get_pem(k, "new", "RS256", &pem, NULL), 0);
    free(pem);
    /* a broken file keeps the previous keys and names the file */
    write_file(path, "{\"keys\": [");
    err[0] = '\0';
    assert_true(bnb__jwks_refresh(k, err, sizeof err) < 0);
    assert_non_null(strstr(err, path));
    assert_int_equal(bnb__jwks_get_pem(k, "new", "RS256", &pem, NULL), 0);
    free(pem);
    bnb__jwks_free(k);
    unlink(path);
    rmdir(dir);
}

/* ---- URL source: a loopback HTTP/1.1 server thread ----------------------- */

typedef struct srv {
    int fd, port, stop, requests, status;
    char *body; /* served as the JWKS */
    pthread_mutex_t mu;
    pthread_t thread;
} srv_t;

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        char req[4096];
        size_t got = 0;
        while (got < sizeof req - 1) {
            struct pollfd q = {.fd = c, .events = POLLIN};
            if (poll(&q, 1, 2000) <= 0)
                break;
            ssize_t r = read(c, req + got, sizeof req - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        pthread_mutex_lock(&s->mu);
        s->requests++;
        char *body = strdup(s->body ? s->body : "");
        int status = s->status;
        pthread_mutex_unlock(&s->mu);
        char head[256];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n",
                          status, strlen(body));
        if (write(c, head, (size_t)hl) == hl)
            (void)!write(c, body, strlen(body));
        free(body);
        close(c);
    }
    return NULL;
}

static void srv_start(srv_t *s, char *body)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->body = body;
    s->status = 200;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

static void srv_set(srv_t *s, char *body, int status)
{
    pthread_mutex_lock(&s->mu);
    if (body) {
        free(s->body);
        s->body = body;
    }
    s->status = status;
    pthread_mutex_unlock(&s->mu);
}

static int srv_requests(srv_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->requests;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void srv_stop(srv_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    close(s->fd);
    free(s->body);
    pthread_mutex_destroy(&s->mu);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Time is the host clock (host/core/clock.h): instead of sleeping through
 * refresh periods, move it forward (again every 50 ms, in case the refresh
 * thread was busy with a fetch when it moved) until cond holds; the fetches
 * themselves are real, so this still waits for them, up to 2 s. */
static int advance_until(int64_t ms, int (*cond)(void *), void *arg)
{
    for (int i = 0; i < 400; i++) {
        if (cond(arg))
            return 1;
        if (i % 10 == 0)
            bnb__clock_advance(ms);
        sleep_ms(5);
    }
    return cond(arg);
}

typedef struct at_least {
    srv_t *s;
    int n;
} at_least_t;

static int requests_at_least(void *arg)
{
    at_least_t *a = arg;
    return srv_requests(a->s) >= a->n;
}

static int has_two_keys(void *arg)
{
    return bnb__jwks_count(arg) == 2;
}

static int failed_twice(void *arg)
{
    return bnb__jwks_failures(arg) >= 2;
}

static int is_loaded(void *arg)
{
    return bnb__jwks_loaded(arg);
}

static int has_kid(bnb_jwks_t *k, const char *kid)
{
    char *pem = NULL;
    /* kid NULL never triggers a refresh: probe by count + exact kid */
    int rc = bnb__jwks_get_pem(k, kid, "RS256", &pem, NULL);
    free(pem);
    return rc == 0;
}

static void test_url_periodic_refresh(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, jwks_text(K.rsa, "kc-1", NULL, NULL));
    char url[128], err[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/realms/bearbnb/protocol/openid-connect/certs", s.port);
    bnb_jwks_config_t cfg = {.url = url, .refresh_s = 1, .kid_refresh_min_s = 3600, .kid_wait_ms = -1};
    bnb_jwks_t *k = NULL;
    int rc = bnb__jwks_new(&cfg, &k, err, sizeof err);
    if (rc)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(srv_requests(&s), 1);
    assert_true(has_kid(k, "kc-1"));
    /* the realm rotates: kc-2 appears next to kc-1; the 1 s timer picks it up */
    srv_set(&s, jwks_text(K.rsa, "kc-1", K.rsa2, "kc-2"), 200);
    assert_true(advance_until(1000, has_two_keys, k));
    assert_true(has_kid(k, "kc-1"));
    assert_true(has_kid(k, "kc-2"));
    /* the server fails: the keys stay */
    int before = srv_requests(&s);
    srv_set(&s, NULL, 500);
    assert_true(advance_until(1000, requests_at_least, &(at_least_t){&s, before + 2}));
    assert_int_equal(bnb__jwks_count(k), 2);
    assert_true(has_kid(k, "kc-2"));
    err[0] = '\0';
    assert_true(bnb__jwks_refresh(k, err, sizeof err) < 0);
    assert_non_null(strstr(err, url));
    assert_non_null(strstr(err, "500"));
    bnb__jwks_free(k);
    srv_stop(&s);
}

static void test_url_unknown_kid_refresh_rate_limited(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, jwks_text(K.rsa, "kc-1", NULL, NULL));
    char url[128], err[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/certs", s.port);
    bnb_jwks_config_t cfg = {.url = url, .refresh_s = 3600, .kid_refresh_min_s = 3600, .kid_wait_ms = 3000};
    bnb_jwks_t *k = NULL;
    assert_int_equal(bnb__jwks_new(&cfg, &k, err, sizeof err), 0);
    assert_int_equal(srv_requests(&s), 1);
    /* a token with a new kid: one refresh, then it verifies */
    srv_set(&s, jwks_text(K.rsa, "kc-1", K.rsa2, "kc-2"), 200);
    assert_true(has_kid(k, "kc-2"));
    assert_int_equal(srv_requests(&s), 2);
    /* more unknown kids within the interval: no more fetches */
    for (int i = 0; i < 5; i++)
        assert_false(has_kid(k, "forged-kid"));
    assert_int_equal(srv_requests(&s), 2);
    /* known kids never fetch */
    assert_true(has_kid(k, "kc-1"));
    assert_int_equal(srv_requests(&s), 2);
    bnb__jwks_free(k);
    srv_stop(&s);
}

static void test_url_down_at_start_names_url(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, strdup("{\"keys\":[]}"));
    char url[128], err[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/certs", s.port);
    bnb_jwks_config_t cfg = {.url = url, .fetch_timeout_ms = 2000};
    bnb_jwks_t *k = NULL;
    assert_true(bnb__jwks_new(&cfg, &k, err, sizeof err) < 0); /* no usable key */
    assert_null(k);
    assert_non_null(strstr(err, url));
    srv_stop(&s);
    err[0] = '\0'; /* nobody listens there any more */
    assert_true(bnb__jwks_new(&cfg, &k, err, sizeof err) < 0);
    assert_non_null(strstr(err, url));
}

/* The identity provider is down when the host starts (url_may_wait, as the
 * host asks): the set is made without keys and not loaded; the thread retries
 * with a short backoff, counts each failure, and loads once the URL answers. */
static void test_url_down_at_start_waits_and_retries(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, strdup("{\"keys\":[]}"));
    srv_set(&s, NULL, 503);
    char url[128], err[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/certs", s.port);
    bnb_jwks_config_t cfg = {.url = url, .refresh_s = 3600, .kid_wait_ms = -1, .url_may_wait = 1};
    bnb_jwks_t *k = NULL;
    assert_int_equal(bnb__jwks_new(&cfg, &k, err, sizeof err), 0);
    assert_non_null(k);
    assert_int_equal(bnb__jwks_loaded(k), 0);
    assert_int_equal(bnb__jwks_count(k), 0);
    assert_false(has_kid(k, "kc-1"));
    assert_true(bnb__jwks_failures(k) >= 1);
    /* retried long before refresh_s (3600 s): 1 s, then 2 s (at most 40 s of
     * the host clock pass here) */
    assert_true(advance_until(1000, failed_twice, k)); /* counted once the fetch is over */
    assert_true(srv_requests(&s) >= 2);
    assert_int_equal(bnb__jwks_loaded(k), 0);
    srv_set(&s, jwks_text(K.rsa, "kc-1", NULL, NULL), 200);
    assert_true(advance_until(1000, is_loaded, k));
    assert_true(has_kid(k, "kc-1"));
    /* later failures keep the keys and stay loaded, but are counted */
    unsigned long f = bnb__jwks_failures(k);
    srv_set(&s, NULL, 500);
    assert_true(bnb__jwks_refresh(k, err, sizeof err) < 0);
    assert_int_equal(bnb__jwks_failures(k), f + 1);
    assert_int_equal(bnb__jwks_loaded(k), 1);
    assert_true(has_kid(k, "kc-1"));
    bnb__jwks_free(k);
    srv_stop(&s);
}

static int group_setup(void **state)
{
    (void)state;
    K.rsa = EVP_RSA_gen(2048);
    K.rsa2 = EVP_RSA_gen(2048);
    K.ec = EVP_EC_gen("P-256");
    return K.rsa && K.rsa2 && K.ec ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(K.rsa);
    EVP_PKEY_free(K.rsa2);
    EVP_PKEY_free(K.ec);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwk_to_pem_matches_openssl),           cmocka_unit_test(test_bad_jwks_rejected),
        cmocka_unit_test(test_file_keycloak_shape_and_rotation),     cmocka_unit_test(test_url_periodic_refresh),
        cmocka_unit_test(test_url_unknown_kid_refresh_rate_limited), cmocka_unit_test(test_url_down_at_start_names_url),
        cmocka_unit_test(test_url_down_at_start_waits_and_retries),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * JWT through the real HTTP path of bearbnb: RS256 and ES256 tokens signed
 * with keys made here (OpenSSL) and published as a JWKS file or by a tiny
 * loopback HTTP server (a stand-in for Keycloak's
 * <issuer>/protocol/openid-connect/certs) that rotates its keys; HS256 with the
 * dev key; forged, alg none, algorithm confusion, expired, not yet valid,
 * wrong iss/aud, unknown kid -> 401 problem+json; roles from
 * realm_access.roles and from role.
 */
#include "gw_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ISSUER   "http://127.0.0.1/realms/bearbnb"
#define AUDIENCE "bearbnb-api"

static const char ROOM_BODY[] =
    "{\"name\":\"Loft\",\"description\":\"quiet\",\"city\":\"Bern\",\"pricePerNight\":120,\"capacity\":3}";

/* ---- keys and tokens ------------------------------------------------------------ */

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
}

static void b64url_str(const char *s, char *out)
{
    b64url((const unsigned char *)s, strlen(s), out);
}

static void bn_b64(const BIGNUM *bn, int pad, char *out)
{
    unsigned char buf[600];
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    b64url(buf, (size_t)n, out);
}

/* The public JWK of a key, as JSON text into out. */
static void jwk_of(EVP_PKEY *pk, const char *kid, char *out, size_t outlen)
{
    char a[800], b[800];
    BIGNUM *x = NULL, *y = NULL;
    if (EVP_PKEY_is_a(pk, "RSA")) {
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &x);
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &y);
        bn_b64(x, 0, a);
        bn_b64(y, 0, b);
        snprintf(out, outlen,
                 "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"}", kid, a,
                 b);
    } else {
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &x);
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &y);
        bn_b64(x, 32, a);
        bn_b64(y, 32, b);
        snprintf(out, outlen,
                 "{\"kty\":\"EC\",\"kid\":\"%s\",\"use\":\"sig\",\"alg\":\"ES256\",\"crv\":\"P-256\",\"x\":\"%s\","
                 "\"y\":\"%s\"}",
                 kid, a, b);
    }
    BN_free(x);
    BN_free(y);
}

static char *pubkey_pem(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pk);
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(bio);
    return s;
}

/* header.claims.signature; alg "RS256"/"ES256" with pk, "HS256" with hs_key,
 * "none" with an empty signature. Caller frees. */
static char *sign_token(const char *header, const char *claims, const char *alg, EVP_PKEY *pk,
                        const unsigned char *hs_key, size_t hs_len)
{
    char *input = malloc(strlen(header) * 2 + strlen(claims) * 2 + 16);
    char *h = malloc(strlen(header) * 2 + 8), *c = malloc(strlen(claims) * 2 + 8);
    if (input == NULL || h == NULL || c == NULL)
        abort();
    b64url_str(header, h);
    b64url_str(claims, c);
    sprintf(input, "%s.%s", h, c);
    free(h);
    free(c);
    unsigned char sig[1024];
    size_t sl = 0;
    if (!strcmp(alg, "HS256")) {
        unsigned int ml = 0;
        HMAC(EVP_sha256(), hs_key, (int)hs_len, (unsigned char *)input, strlen(input), sig, &ml);
        sl = ml;
    } else if (strcmp(alg, "none") != 0) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char der[1024];
        size_t dl = sizeof(der);
        EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk);
        EVP_DigestSign(md, der, &dl, (unsigned char *)input, strlen(input));
        EVP_MD_CTX_free(md);
        if (!strcmp(alg, "ES256")) { /* DER -> R||S */
            const unsigned char *p = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            sl = 64;
        } else {
            memcpy(sig, der, dl);
            sl = dl;
        }
    }
    char *out = malloc(strlen(input) + sl * 2 + 8), sb[2100];
    b64url(sig, sl, sb);
    sprintf(out, "%s.%s", input, sb);
    free(input);
    return out;
}

static EVP_PKEY *g_rsa1, *g_rsa2, *g_rsa3, *g_ec1;

static int make_keys(void)
{
    g_rsa1 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g_rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g_rsa3 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g_ec1 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    return g_rsa1 && g_rsa2 && g_rsa3 && g_ec1 ? 0 : -1;
}

static void free_keys(void)
{
    EVP_PKEY_free(g_rsa1);
    EVP_PKEY_free(g_rsa2);
    EVP_PKEY_free(g_rsa3);
    EVP_PKEY_free(g_ec1);
}

/* Claims with iss/aud/exp/nbf relative to now; extra is appended inside the object. */
static void claims(char *out, size_t n, const char *sub, const char *iss, const char *aud, long exp_off, long nbf_off,
                   const char *extra)
{
    long now = (long)time(NULL);
    snprintf(out, n, "{\"sub\":\"%s\",\"iss\":\"%s\",\"aud\":%s,\"iat\":%ld,\"nbf\":%ld,\"exp\":%ld%s%s}", sub, iss,
             aud, now, now + nbf_off, now + exp_off, extra ? "," : "", extra ? extra : "");
}

static char *rs(EVP_PKEY *k, const char *kid, const char *cl)
{
    char hdr[200];
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    return sign_token(hdr, cl, "RS256", k, NULL, 0);
}

static char *es(EVP_PKEY *k, const char *kid, const char *cl)
{
    char hdr[200];
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    return sign_token(hdr, cl, "ES256", k, NULL, 0);
}

/* ---- the JWKS file group ------------------------------------------------------------ */

static char g_dir[64];
static e2e_host_t *g_host;

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int file_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/bnb-jwt-e2e-XXXXXX");
    if (mkdtemp(g_dir) == NULL || make_keys() != 0)
        return -1;
    char j1[1500], j2[600], set[2400], path[128], env_file[200];
    jwk_of(g_rsa1, "rsa1", j1, sizeof(j1));
    jwk_of(g_ec1, "ec1", j2, sizeof(j2));
    snprintf(set, sizeof(set), "{\"keys\":[%s,%s]}", j1, j2);
    snprintf(path, sizeof(path), "%s/jwks.json", g_dir);
    if (write_file(path, set) != 0)
        return -1;
    snprintf(env_file, sizeof(env_file), "BEARBNB_AUTH_JWKS_FILE=%s", path);
    const char *env[] = {env_file,
                         "BEARBNB_AUTH_ISSUER=" ISSUER,
                         "BEARBNB_AUTH_AUDIENCE=" AUDIENCE,
                         "BEARBNB_AUTH_LEEWAY_S=30",
                         "BEARBNB_LIMITS_USER_RATE=0",
                         "BEARBNB_LIMITS_IP_RATE=0",
                         NULL};
    e2e_host_opts_t o = {.env = env};
    return e2e_host_start(&g_host, &o);
}

static int file_teardown(void **state)
{
    (void)state;
    int rc = e2e_host_stop(g_host);
    e2e_host_free(g_host);
    char path[128];
    snprintf(path, sizeof(path), "%s/jwks.json", g_dir);
    unlink(path);
    rmdir(g_dir);
    free_keys();
    return rc == 0 ? 0 : -1;
}

static long post_room(const e2e_host_t *h, const char *tok, e2e_resp_t *keep)
{
    e2e_resp_t r;
    e2e_call(h, E2E_HTTP1, "POST", "/rooms", tok, ROOM_BODY, &r);
    long st = r.status;
    if (keep)
        *keep = r;
    else
        e2e_resp_free(&r);
    return st;
}

static long status_of_get(const e2e_host_t *h, const char *tok)
{
    e2e_resp_t r;
    e2e_call(h, E2E_HTTP1, "GET", "/reservations", tok, NULL, &r);
    long st = r.status;
    e2e_resp_free(&r);
    return st;
}

/* Must be refused with 401 problem+json whose detail names `why`. */
static void expect_401(const e2e_host_t *h, char *tok, const char *why)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(h, E2E_HTTP2, "GET", "/reservations", tok, NULL, &r), 0);
    if (r.status != 401)
        fprintf(stderr, "expected 401 (%s), got %ld %s\n", why, r.status, r.body);
    assert_true(e2e_is_problem(&r, 401));
    if (why)
        assert_true(gw_detail_has(&r, why));
    e2e_resp_free(&r);
    assert_int_equal(post_room(h, tok, NULL), 401);
    free(tok);
}

static void test_rs256_es256_roles(void **state)
{
    (void)state;
    char cl[600];
    e2e_resp_t r;
    /* RS256, role from realm_access.roles (Keycloak) */
    claims(cl, sizeof(cl), "kc-host-1", ISSUER, "\"" AUDIENCE "\"", 300, 0,
           "\"realm_access\":{\"roles\":[\"offline_access\",\"host\"]}");
    char *t = rs(g_rsa1, "rsa1", cl);
    assert_int_equal(post_room(g_host, t, &r), 201);
    assert_string_equal(json_string_value(json_object_get(r.json, "hostId")), "kc-host-1");
    e2e_resp_free(&r);
    free(t);
    /* ES256, role from a role claim; aud as an array */
    claims(cl, sizeof(cl), "kc-guest-1", ISSUER, "[\"account\",\"" AUDIENCE "\"]", 300, 0, "\"role\":\"guest\"");
    t = es(g_ec1, "ec1", cl);
    assert_int_equal(e2e_call(g_host, E2E_HTTP2, "GET", "/reservations", t, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    e2e_resp_free(&r);
    assert_int_equal(post_room(g_host, t, &r), 403); /* a guest may not list rooms */
    assert_true(e2e_is_problem(&r, 403));
    e2e_resp_free(&r);
    free(t);
    /* ES256 guest via realm_access, RS256 host via role */
    claims(cl, sizeof(cl), "kc-guest-2", ISSUER, "\"" AUDIENCE "\"", 300, 0,
           "\"realm_access\":{\"roles\":[\"guest\"]}");
    t = es(g_ec1, "ec1", cl);
    assert_int_equal(post_room(g_host, t, NULL), 403);
    free(t);
    claims(cl, sizeof(cl), "kc-host-2", ISSUER, "\"" AUDIENCE "\"", 300, 0, "\"role\":\"host\"");
    t = rs(g_rsa1, "rsa1", cl);
    assert_int_equal(post_room(g_host, t, NULL), 201);
    free(t);
    /* no role at all: authenticated, but not a host */
    claims(cl, sizeof(cl), "kc-nobody", ISSUER, "\"" AUDIENCE "\"", 300, 0, NULL);
    t = rs(g_rsa1, "rsa1", cl);
    assert_int_equal(post_room(g_host, t, NULL), 403);
    free(t);
    /* clock skew within auth.leeway_s is accepted */
    claims(cl, sizeof(cl), "kc-host-3", ISSUER, "\"" AUDIENCE "\"", -5, 10, "\"role\":\"host\"");
    t = rs(g_rsa1, "rsa1", cl);
    assert_int_equal(post_room(g_host, t, NULL), 201);
    free(t);
}

static void test_hs256_dev_key(void **state)
{
    (void)state;
    char *t = e2e_token(g_host, "dev-host", "host", 0);
    assert_non_null(t);
    e2e_resp_t r;
    assert_int_equal(post_room(g_host, t, &r), 201);
    assert_string_equal(json_string_value(json_object_get(r.json, "hostId")), "dev-host");
    e2e_resp_free(&r);
    free(t);
    /* the harness signs arbitrary claims with the dev key too */
    char cl[600];
    claims(cl, sizeof(cl), "dev-guest", ISSUER, "\"" AUDIENCE "\"", 300, 0, "\"role\":\"guest\"");
    t = e2e_token_claims(g_host, cl);
    assert_non_null(t);
    assert_int_equal(status_of_get(g_host, t), 200);
    free(t);
    /* HS256 with the right claims but another secret */
    unsigned char other[32];
    memset(other, 7, sizeof(other));
    expect_401(g_host, sign_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", cl, "HS256", NULL, other, sizeof(other)),
               "bad signature");
}

static void test_forged_tokens(void **state)
{
    (void)state;
    char cl[600], hdr[300];
    claims(cl, sizeof(cl), "mallory", ISSUER, "\"" AUDIENCE "\"", 300, 0, "\"role\":\"host\"");
    /* another RSA key under a known kid */
    expect_401(g_host, rs(g_rsa2, "rsa1", cl), "bad signature");
    /* a valid token whose claims were changed afterwards */
    char *t = rs(g_rsa1, "rsa1", cl);
    char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    char c2[600], cb[900];
    claims(c2, sizeof(c2), "admin", ISSUER, "\"" AUDIENCE "\"", 300, 0, "\"role\":\"host\"");
    b64url_str(c2, cb);
    char *tampered = malloc(strlen(t) + strlen(cb) + 4);
    sprintf(tampered, "%.*s.%s%s", (int)(d1 - t), t, cb, d2);
    free(t);
    expect_401(g_host, tampered, "bad signature");
    /* ES256 signature flipped */
    t = es(g_ec1, "ec1", cl);
    size_t n = strlen(t);
    t[n - 3] = t[n - 3] == 'A' ? 'B' : 'A';
    expect_401(g_host, t, NULL);
    /* alg none, any spelling, with or without a signature */
    expect_401(g_host, sign_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", cl, "none", NULL, NULL, 0), "none");
    expect_401(g_host, sign_token("{\"alg\":\"None\",\"typ\":\"JWT\"}", cl, "none", NULL, NULL, 0), "none");
    t = rs(g_rsa1, "rsa1", cl); /* the real signature, the header swapped to none */
    d1 = strchr(t, '.');
    char nh[100], *sw = malloc(strlen(t) + 100);
    b64url_str("{\"alg\":\"none\",\"kid\":\"rsa1\"}", nh);
    sprintf(sw, "%s%s", nh, d1);
    free(t);
    expect_401(g_host, sw, "none");
    /* algorithm confusion: HS256 keyed with the RSA public key (PEM) */
    char *pem = pubkey_pem(g_rsa1);
    expect_401(g_host,
               sign_token("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"rsa1\"}", cl, "HS256", NULL,
                          (unsigned char *)pem, strlen(pem)),
               "bad signature");
    free(pem);
    /* RS256 naming the EC key, ES256 naming the RSA key */
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"RS256\",\"kid\":\"ec1\"}");
    expect_401(g_host, sign_token(hdr, cl, "RS256", g_rsa1, NULL, 0), "does not match");
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"rsa1\"}");
    expect_401(g_host, sign_token(hdr, cl, "ES256", g_ec1, NULL, 0), "does not match");
    /* other algorithms */
    expect_401(g_host, sign_token("{\"alg\":\"RS512\",\"kid\":\"rsa1\"}", cl, "RS256", g_rsa1, NULL, 0), "not allowed");
    /* unknown kid */
    expect_401(g_host, rs(g_rsa2, "rsa-unknown", cl), "unknown key id");
    /* garbage */
    expect_401(g_host, strdup("not.a.token"), NULL);
    expect_401(g_host, strdup("abc"), "malformed");
}

static void test_claims_checked(void **state)
{
    (void)state;
    char cl[600];
    claims(cl, sizeof(cl), "h", ISSUER, "\"" AUDIENCE "\"", -120, -600, "\"role\":\"host\"");
    expect_401(g_host, rs(g_rsa1, "rsa1", cl), "expired");
    claims(cl, sizeof(cl), "h", ISSUER, "\"" AUDIENCE "\"", 900, 300, "\"role\":\"host\"");
    expect_401(g_host, es(g_ec1, "ec1", cl), "not yet valid");
    claims(cl, sizeof(cl), "h", "http://127.0.0.1/realms/evil", "\"" AUDIENCE "\"", 300, 0, "\"role\":\"host\"");
    expect_401(g_host, rs(g_rsa1, "rsa1", cl), "issuer");
    claims(cl, sizeof(cl), "h", ISSUER, "\"account\"", 300, 0, "\"role\":\"host\"");
    expect_401(g_host, es(g_ec1, "ec1", cl), "audience");
    claims(cl, sizeof(cl), "h", ISSUER, "[\"account\",\"other\"]", 300, 0, "\"role\":\"host\"");
    expect_401(g_host, rs(g_rsa1, "rsa1", cl), "audience");
    /* no exp */
    long now = (long)time(NULL);
    snprintf(cl, sizeof(cl), "{\"sub\":\"h\",\"iss\":\"%s\",\"aud\":\"%s\",\"iat\":%ld,\"role\":\"host\"}", ISSUER,
             AUDIENCE, now);
    expect_401(g_host, rs(g_rsa1, "rsa1", cl), "exp");
    /* no sub */
    snprintf(cl, sizeof(cl), "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%ld,\"role\":\"host\"}", ISSUER, AUDIENCE,
             now + 300);
    expect_401(g_host, rs(g_rsa1, "rsa1", cl), "sub");
    /* the dev key's tokens are checked the same way */
    claims(cl, sizeof(cl), "h", ISSUER, "\"" AUDIENCE "\"", -120, -600, "\"role\":\"host\"");
    expect_401(g_host, e2e_token_claims(g_host, cl), "expired");
}

/* ---- the JWKS URL group: a loopback server that rotates keys ------------------------ */

typedef struct jwks_srv {
    int fd, port, stop;
    pthread_t th;
    pthread_mutex_t mu;
    char body[8192];
    int hits;
    int broken;   /* answer 500 */
    int delay_ms; /* wait this long before answering (a slow issuer) */
} jwks_srv_t;

static jwks_srv_t g_srv;

static void *srv_main(void *arg)
{
    jwks_srv_t *s = arg;
    while (1) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        char req[4096];
        size_t got = 0;
        while (got < sizeof(req) - 1) {
            struct pollfd pc = {.fd = c, .events = POLLIN};
            if (poll(&pc, 1, 2000) <= 0)
                break;
            ssize_t n = read(c, req + got, sizeof(req) - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        pthread_mutex_lock(&s->mu);
        int delay = s->delay_ms;
        pthread_mutex_unlock(&s->mu);
        if (delay > 0)
            usleep((useconds_t)delay * 1000);
        pthread_mutex_lock(&s->mu);
        s->hits++;
        char head[256];
        int ok = !s->broken && strncmp(req, "GET /realms/bearbnb/protocol/openid-connect/certs ", 50) == 0;
        const char *body = ok ? s->body : "{}";
        snprintf(head, sizeof(head),
                 "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                 ok ? "200 OK" : "500 Internal Server Error", strlen(body));
        char *resp = malloc(strlen(head) + strlen(body) + 1);
        if (resp == NULL)
            abort();
        sprintf(resp, "%s%s", head, body);
        pthread_mutex_unlock(&s->mu);
        size_t off = 0, len = strlen(resp);
        while (off < len) {
            ssize_t w = write(c, resp + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        free(resp);
        close(c);
    }
    return NULL;
}

static void srv_set(jwks_srv_t *s, EVP_PKEY *a, const char *kida, EVP_PKEY *b, const char *kidb)
{
    char ja[1500] = "", jb[1500] = "";
    jwk_of(a, kida, ja, sizeof(ja));
    if (b)
        jwk_of(b, kidb, jb, sizeof(jb));
    pthread_mutex_lock(&s->mu);
    snprintf(s->body, sizeof(s->body), "{\"keys\":[%s%s%s]}", ja, b ? "," : "", jb);
    pthread_mutex_unlock(&s->mu);
}

static int srv_hits(jwks_srv_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->hits;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int start_url_host(e2e_host_t **h, const char *refresh_s)
{
    char url[200], refresh[64];
    snprintf(url, sizeof(url), "BEARBNB_AUTH_JWKS_URL=http://127.0.0.1:%d/realms/bearbnb/protocol/openid-connect/certs",
             g_srv.port);
    snprintf(refresh, sizeof(refresh), "BEARBNB_AUTH_JWKS_REFRESH_S=%s", refresh_s);
    const char *env[] = {url,
                         refresh,
                         "BEARBNB_AUTH_ISSUER=" ISSUER,
                         "BEARBNB_AUTH_AUDIENCE=" AUDIENCE,
                         "BEARBNB_LIMITS_USER_RATE=0",
                         "BEARBNB_LIMITS_IP_RATE=0",
                         "BEARBNB_ADMIN=1",
                         "BEARBNB_TEST_CLOCK=1",
                         NULL};
    e2e_host_opts_t o = {.env = env};
    return e2e_host_start(h, &o);
}

static int url_setup(void **state)
{
    (void)state;
    if (make_keys() != 0)
        return -1;
    memset(&g_srv, 0, sizeof(g_srv));
    pthread_mutex_init(&g_srv.mu, NULL);
    g_srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(g_srv.fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(g_srv.fd, 16) != 0 ||
        getsockname(g_srv.fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    g_srv.port = ntohs(a.sin_port);
    srv_set(&g_srv, g_rsa1, "k1", g_ec1, "e1");
    if (pthread_create(&g_srv.th, NULL, srv_main, &g_srv) != 0)
        return -1;
    return start_url_host(&g_host, "1");
}

static int url_teardown(void **state)
{
    (void)state;
    int rc = e2e_host_stop(g_host);
    e2e_host_free(g_host);
    pthread_mutex_lock(&g_srv.mu);
    g_srv.stop = 1;
    pthread_mutex_unlock(&g_srv.mu);
    pthread_join(g_srv.th, NULL);
    close(g_srv.fd);
    pthread_mutex_destroy(&g_srv.mu);
    free_keys();
    return rc == 0 ? 0 : -1;
}

static long get_as_on(const e2e_host_t *h, EVP_PKEY *k, const char *kid, int ec)
{
    char cl[600];
    claims(cl, sizeof(cl), "rot-guest", ISSUER, "\"" AUDIENCE "\"", 300, 0, "\"role\":\"guest\"");
    char *t = ec ? es(k, kid, cl) : rs(k, kid, cl);
    long st = status_of_get(h, t);
    free(t);
    return st;
}

static long get_as(EVP_PKEY *k, const char *kid, int ec)
{
    return get_as_on(g_host, k, kid, ec);
}

/* Wait until the JWKS server saw `target` fetches, moving g_host's clock one
 * refresh period (1 s) forward every 50 ms instead of sleeping through the
 * periods (the host runs with BEARBNB_TEST_CLOCK=1). Small steps: tokens
 * carry real times and must not expire on the host. */
static int refreshed_until(int target)
{
    for (int i = 0; i < 200; i++) {
        if (srv_hits(&g_srv) >= target)
            return 0;
        if (i % 10 == 0) {
            e2e_resp_t r;
            e2e_call(g_host, E2E_HTTP1, "POST", "/admin/clock?advance_ms=1000", NULL, NULL, &r);
            long st = r.status;
            e2e_resp_free(&r);
            if (st != 200)
                return -1;
        }
        usleep(5 * 1000);
    }
    return srv_hits(&g_srv) >= target ? 0 : -1;
}

static void test_jwks_url_rotation(void **state)
{
    (void)state;
    assert_true(srv_hits(&g_srv) >= 1); /* loaded at start */
    assert_int_equal(get_as(g_rsa1, "k1", 0), 200);
    assert_int_equal(get_as(g_ec1, "e1", 1), 200);
    assert_int_equal(get_as(g_rsa2, "k2", 0), 401); /* not published yet */
    /* the issuer rotates: k2 added, k1 dropped; the periodic refresh picks it up */
    srv_set(&g_srv, g_rsa2, "k2", NULL, NULL);
    /* two more fetches: a whole refresh round ran after the change */
    assert_int_equal(refreshed_until(srv_hits(&g_srv) + 2), 0);
    assert_int_equal(get_as(g_rsa2, "k2", 0), 200);
    assert_int_equal(get_as(g_rsa1, "k1", 0), 401);
    assert_int_equal(get_as(g_ec1, "e1", 1), 401);
    /* the next rotation, also periodic */
    srv_set(&g_srv, g_rsa2, "k2", g_rsa3, "k3");
    assert_int_equal(refreshed_until(srv_hits(&g_srv) + 2), 0);
    assert_int_equal(get_as(g_rsa3, "k3", 0), 200);
    assert_int_equal(get_as(g_rsa2, "k2", 0), 200);
    /* a failing JWKS endpoint keeps the keys it had */
    pthread_mutex_lock(&g_srv.mu);
    g_srv.broken = 1;
    pthread_mutex_unlock(&g_srv.mu);
    assert_int_equal(refreshed_until(srv_hits(&g_srv) + 2), 0);
    assert_int_equal(get_as(g_rsa3, "k3", 0), 200);
    assert_int_equal(get_as(g_rsa2, "k2", 0), 200);
    assert_int_equal(get_as(g_rsa1, "k1", 0), 401);
    pthread_mutex_lock(&g_srv.mu);
    g_srv.broken = 0;
    pthread_mutex_unlock(&g_srv.mu);
}

/* With a long refresh period, a token with a kid published after the last
 * load makes the host fetch the JWKS once, right away (key rotation). */
static void test_jwks_url_unknown_kid_refresh(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    srv_set(&g_srv, g_rsa1, "k1", NULL, NULL);
    assert_int_equal(start_url_host(&h, "300"), 0);
    assert_int_equal(get_as_on(h, g_rsa1, "k1", 0), 200);
    srv_set(&g_srv, g_rsa1, "k1", g_rsa2, "k5");
    int before = srv_hits(&g_srv);
    assert_int_equal(get_as_on(h, g_rsa2, "k5", 0), 200);
    assert_true(srv_hits(&g_srv) > before);
    /* forged under the new kid: still refused */
    assert_int_equal(get_as_on(h, g_rsa3, "k5", 0), 401);
    /* unknown kids do not make the host hammer the JWKS endpoint */
    before = srv_hits(&g_srv);
    for (int i = 0; i < 5; i++)
        assert_int_equal(get_as_on(h, g_rsa3, "nope", 0), 401);
    assert_true(srv_hits(&g_srv) - before <= 1);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
}

typedef struct kid_req {
    const e2e_host_t *h;
    char *tok;
    long status;
    long long ms;
} kid_req_t;

static void *kid_req_main(void *arg)
{
    kid_req_t *k = arg;
    long long t0 = e2e_now_ms();
    k->status = status_of_get(k->h, k->tok);
    k->ms = e2e_now_ms() - t0;
    return NULL;
}

/* Issue 11 #9: an unknown kid makes the host fetch the JWKS, but the event
 * loop never waits for that fetch: while the issuer is slow, other clients
 * are answered at once; the request itself is answered after the refresh
 * (or 401 when the refresh takes longer than the kid wait). */
static void test_jwks_unknown_kid_never_blocks_the_loop(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    srv_set(&g_srv, g_rsa1, "k1", NULL, NULL);
    assert_int_equal(start_url_host(&h, "300"), 0);
    assert_int_equal(get_as_on(h, g_rsa1, "k1", 0), 200);
    /* the issuer publishes k6 but takes 1.5 s to answer */
    srv_set(&g_srv, g_rsa1, "k1", g_rsa2, "k6");
    pthread_mutex_lock(&g_srv.mu);
    g_srv.delay_ms = 1500;
    pthread_mutex_unlock(&g_srv.mu);
    char cl[600];
    claims(cl, sizeof(cl), "slow-guest", ISSUER, "\"" AUDIENCE "\"", 300, 0, "\"role\":\"guest\"");
    kid_req_t k = {.h = h, .tok = rs(g_rsa2, "k6", cl)};
    assert_non_null(k.tok);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, kid_req_main, &k), 0);
    usleep(150 * 1000); /* the unknown-kid request is in */
    long long worst = 0;
    for (int i = 0; i < 5; i++) {
        long long t0 = e2e_now_ms();
        e2e_resp_t r;
        assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", "/healthz", NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        e2e_resp_free(&r);
        long long ms = e2e_now_ms() - t0;
        worst = ms > worst ? ms : worst;
        usleep(100 * 1000);
    }
    pthread_join(th, NULL);
    fprintf(stderr, "unknown kid answered %ld after %lld ms; /healthz meanwhile at worst %lld ms\n", k.status, k.ms,
            worst);
    if (worst > 300)
        fail_msg("/healthz took %lld ms while a JWKS refresh ran: the loop waited", worst);
    /* the refresh takes longer than the kid wait: refused, not held forever */
    assert_int_equal(k.status, 401);
    assert_true(k.ms < 2500);
    pthread_mutex_lock(&g_srv.mu);
    g_srv.delay_ms = 0;
    pthread_mutex_unlock(&g_srv.mu);
    /* once the slow round has landed, k6 is known */
    long st = 0;
    for (int i = 0; i < 40 && (st = get_as_on(h, g_rsa2, "k6", 0)) != 200; i++)
        usleep(100 * 1000);
    assert_int_equal(st, 200);
    free(k.tok);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
}

int main(void)
{
    const struct CMUnitTest file[] = {
        cmocka_unit_test(test_rs256_es256_roles),
        cmocka_unit_test(test_hs256_dev_key),
        cmocka_unit_test(test_forged_tokens),
        cmocka_unit_test(test_claims_checked),
    };
    const struct CMUnitTest url[] = {
        cmocka_unit_test(test_jwks_url_rotation),
        cmocka_unit_test(test_jwks_url_unknown_kid_refresh),
        cmocka_unit_test(test_jwks_unknown_kid_never_blocks_the_loop),
    };
    int fails = cmocka_run_group_tests_name("jwt with a JWKS file", file, file_setup, file_teardown);
    fails += cmocka_run_group_tests_name("jwt with a rotating JWKS URL", url, url_setup, url_teardown);
    return fails;
}

/* Unit tests of host/auth.c: HS256 dev key, RS256/ES256 via a JWKS file,
 * claim checks and the usual JWT attacks. Keys are generated at test time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "jwk_test.h"

#include "auth.h"
#include "clock.h"
#include "bnb_plugin.h"

#include <fcntl.h>
#include <pthread.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/bn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct fx {
    char dir[64];
    char keyfile[128];
    char jwksfile[128];
    bnb_auth_t *auth;
} fx_t;

/* Generated once for the whole run (RSA generation is slow under ASan). */
static struct keys {
    EVP_PKEY *rsa;  /* kid "rsa1" */
    EVP_PKEY *rsa2; /* kid "rsa2" (rotation) */
    EVP_PKEY *ec;   /* kid "ec1" */
    char *rsa_priv, *rsa2_priv, *ec_priv, *rsa_pub;
} K;

/* ---- key material ------------------------------------------------------ */

static EVP_PKEY *gen_key(int rsa)
{
    EVP_PKEY *k = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

static char *pem_of(EVP_PKEY *k, int priv)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_non_null(b);
    if (priv)
        assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(b);
    assert_non_null(s);
    return s;
}

static json_t *jwk_of(EVP_PKEY *k, const char *kid)
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
        char *xs = b64url_bn(x, 32), *ys = b64url_bn(y, 32);
        j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kid", kid, "kty", "EC", "crv", "P-256", "alg", "ES256", "x",
                      xs, "y", ys);
        free(xs);
        free(ys);
        BN_free(x);
        BN_free(y);
    }
    assert_non_null(j);
    return j;
}

/* JWKS with the given keys (NULL-terminated pairs key, kid). */
static void write_jwks(const char *path, EVP_PKEY *k1, const char *kid1, EVP_PKEY *k2, const char *kid2, EVP_PKEY *k3,
                       const char *kid3)
{
    json_t *keys = json_array();
    if (k1)
        json_array_append_new(keys, jwk_of(k1, kid1));
    if (k2)
        json_array_append_new(keys, jwk_of(k2, kid2));
    if (k3)
        json_array_append_new(keys, jwk_of(k3, kid3));
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *s = json_dumps(doc, JSON_INDENT(1));
    write_file(path, s);
    free(s);
    json_decref(doc);
}

/* ---- token building ---------------------------------------------------- */

typedef struct claims {
    const char *sub, *role, *iss, *aud_json; /* aud_json: raw JSON, NULL = "bearbnb" */
    long exp_off, nbf_off;                   /* relative to now; 0 = leave out */
    int no_exp;
    const char *extra_json; /* merged into the grants */
} claims_t;

static char *sign(jwt_alg_t alg, const char *kid, const void *key, size_t keylen, const claims_t *c)
{
    jwt_t *jwt = NULL;
    long now = (long)time(NULL);
    assert_int_equal(jwt_new(&jwt), 0);
    if (c->sub)
        assert_int_equal(jwt_add_grant(jwt, "sub", c->sub), 0);
    if (c->role)
        assert_int_equal(jwt_add_grant(jwt, "role", c->role), 0);
    assert_int_equal(jwt_add_grant(jwt, "iss", c->iss ? c->iss : "bearbnb"), 0);
    char aud[256];
    snprintf(aud, sizeof aud, "{\"aud\":%s}", c->aud_json ? c->aud_json : "\"bearbnb\"");
    assert_int_equal(jwt_add_grants_json(jwt, aud), 0);
    if (!c->no_exp)
        assert_int_equal(jwt_add_grant_int(jwt, "exp", now + (c->exp_off ? c->exp_off : 300)), 0);
    if (c->nbf_off)
        assert_int_equal(jwt_add_grant_int(jwt, "nbf", now + c->nbf_off), 0);
    if (c->extra_json)
        assert_int_equal(jwt_add_grants_json(jwt, c->extra_json), 0);
    if (kid)
        assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, key, (int)keylen), 0);
    char *t = jwt_encode_str(jwt);
    assert_non_null(t);
    jwt_free(jwt);
    return t;
}

static void read_hs_key(const fx_t *f, unsigned char *key, size_t *len)
{
    char hex[200] = {0};
    FILE *fp = fopen(f->keyfile, "r");
    assert_non_null(fp);
    assert_non_null(fgets(hex, sizeof hex, fp));
    fclose(fp);
    size_t n = strcspn(hex, "\r\n");
    assert_int_equal(n, 64);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        key[i] = (unsigned char)v;
    }
    *len = n / 2;
}

static char *sign_hs(const fx_t *f, const claims_t *c)
{
    unsigned char key[64];
    size_t len;
    read_hs_key(f, key, &len);
    return sign(JWT_ALG_HS256, "dev", key, len, c);
}

static int verify(fx_t *f, const char *tok, bnb_identity_t *id, char *why)
{
    return bnb__auth_verify(f->auth, tok, id, why, 128);
}

#define EXPECT_OK(f, tok, sub_, role_)                                                                                 \
    do {                                                                                                               \
        bnb_identity_t id_;                                                                                            \
        char why_[128];                                                                                                \
        int rc_ = verify((f), (tok), &id_, why_);                                                                      \
        if (rc_ != 0)                                                                                                  \
            print_error("unexpected rejection: %s\n", why_);                                                           \
        assert_int_equal(rc_, 0);                                                                                      \
        assert_string_equal(id_.sub, (sub_));                                                                          \
        assert_string_equal(id_.role, (role_));                                                                        \
    } while (0)

#define EXPECT_FAIL(f, tok, why_sub)                                                                                   \
    do {                                                                                                               \
        bnb_identity_t id_;                                                                                            \
        char why_[128];                                                                                                \
        assert_int_equal(verify((f), (tok), &id_, why_), -1);                                                          \
        if (!strstr(why_, (why_sub)))                                                                                  \
            print_error("reason '%s' lacks '%s'\n", why_, (why_sub));                                                  \
        assert_non_null(strstr(why_, (why_sub)));                                                                      \
        assert_string_equal(id_.sub, "");                                                                              \
    } while (0)

/* ---- fixture ----------------------------------------------------------- */

static int setup_hs(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bnb-auth-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->keyfile, sizeof f->keyfile, "%s/jwt.key", f->dir);
    snprintf(f->jwksfile, sizeof f->jwksfile, "%s/jwks.json", f->dir);
    bnb_auth_config_t cfg = {.hs256_key_file = f->keyfile, .create_dev_key = 1};
    char err[256];
    assert_int_equal(bnb__auth_new(&cfg, &f->auth, err, sizeof err), 0);
    *state = f;
    return 0;
}

/* HS256 dev key plus a JWKS file holding rsa1 and ec1. */
static int setup_all(void **state)
{
    setup_hs(state);
    fx_t *f = *state;
    bnb__auth_free(f->auth);
    f->auth = NULL;
    write_jwks(f->jwksfile, K.rsa, "rsa1", K.ec, "ec1", NULL, NULL);
    bnb_auth_config_t cfg = {.hs256_key_file = f->keyfile, .create_dev_key = 1, .jwks_file = f->jwksfile};
    char err[256] = "";
    int rc = bnb__auth_new(&cfg, &f->auth, err, sizeof err);
    if (rc)
        print_error("auth_new: %s\n", err);
    assert_int_equal(rc, 0);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    K.rsa = gen_key(1);
    K.rsa2 = gen_key(1);
    K.ec = gen_key(0);
    K.rsa_priv = pem_of(K.rsa, 1);
    K.rsa2_priv = pem_of(K.rsa2, 1);
    K.ec_priv = pem_of(K.ec, 1);
    K.rsa_pub = pem_of(K.rsa, 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(K.rsa);
    EVP_PKEY_free(K.rsa2);
    EVP_PKEY_free(K.ec);
    free(K.rsa_priv);
    free(K.rsa2_priv);
    free(K.ec_priv);
    free(K.rsa_pub);
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bnb__auth_free(f->auth);
    unlink(f->keyfile);
    unlink(f->jwksfile);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- HS256 / dev key --------------------------------------------------- */

static void test_dev_key_created_0600(void **state)
{
    fx_t *f = *state;
    struct stat st;
    assert_int_equal(stat(f->keyfile, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    unsigned char key[64];
    size_t len;
    read_hs_key(f, key, &len);
    assert_int_equal(len, 32);
    /* a second instance reads the same key: tokens cross over */
    bnb_auth_t *b = NULL;
    bnb_auth_config_t cfg = {.hs256_key_file = f->keyfile, .create_dev_key = 1};
    assert_int_equal(bnb__auth_new(&cfg, &b, NULL, 0), 0);
    char *t = NULL;
    assert_int_equal(bnb__auth_mint(b, "alice", "guest", 60, &t), 0);
    EXPECT_OK(f, t, "alice", "guest");
    free(t);
    bnb__auth_free(b);
}

static void test_missing_key_file_error_names_file(void **state)
{
    fx_t *f = *state;
    char path[160], err[256] = "";
    snprintf(path, sizeof path, "%s/nope/jwt.key", f->dir);
    bnb_auth_config_t cfg = {.hs256_key_file = path, .create_dev_key = 0};
    bnb_auth_t *b = (bnb_auth_t *)1;
    assert_true(bnb__auth_new(&cfg, &b, err, sizeof err) < 0);
    assert_null(b);
    assert_non_null(strstr(err, path));
    cfg.create_dev_key = 1; /* directory missing: creation fails, still named */
    err[0] = '\0';
    assert_true(bnb__auth_new(&cfg, &b, err, sizeof err) < 0);
    assert_non_null(strstr(err, path));
    /* too short a key */
    snprintf(path, sizeof path, "%s/short.key", f->dir);
    write_file(path, "abcd\n");
    err[0] = '\0';
    assert_true(bnb__auth_new(&cfg, &b, err, sizeof err) < 0);
    assert_non_null(strstr(err, path));
    unlink(path);
}

static void test_mint_roundtrip_and_claims(void **state)
{
    fx_t *f = *state;
    char *t = NULL;
    assert_int_equal(bnb__auth_mint(f->auth, "bob", "host", 120, &t), 0);
    EXPECT_OK(f, t, "bob", "host");
    jwt_t *j = NULL;
    unsigned char key[64];
    size_t len;
    read_hs_key(f, key, &len);
    assert_int_equal(jwt_decode(&j, t, key, (int)len), 0);
    assert_string_equal(jwt_get_header(j, "kid"), "dev");
    assert_int_equal(jwt_get_alg(j), JWT_ALG_HS256);
    assert_string_equal(jwt_get_grant(j, "iss"), "bearbnb");
    assert_string_equal(jwt_get_grant(j, "aud"), "bearbnb");
    long iat = jwt_get_grant_int(j, "iat"), exp = jwt_get_grant_int(j, "exp");
    assert_int_equal(exp - iat, 120);
    assert_int_equal(jwt_get_grant_int(j, "nbf"), iat);
    char *ra = jwt_get_grants_json(j, "realm_access");
    assert_non_null(ra);
    assert_non_null(strstr(ra, "\"host\""));
    free(ra);
    jwt_free(j);
    free(t);
    assert_int_equal(bnb__auth_mint(f->auth, "bob", "admin", 120, &t), BNB_EINVAL);
    assert_null(t);
    assert_int_equal(bnb__auth_mint(f->auth, "", "host", 120, &t), BNB_EINVAL);
}

static void test_hs_valid_and_leeway(void **state)
{
    fx_t *f = *state;
    char *t = sign_hs(f, &(claims_t){.sub = "u1", .role = "guest"});
    EXPECT_OK(f, t, "u1", "guest");
    free(t);
    /* expired 10 s ago: within the default 30 s leeway */
    t = sign_hs(f, &(claims_t){.sub = "u1", .exp_off = -10});
    EXPECT_OK(f, t, "u1", "");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "u1", .exp_off = -100});
    EXPECT_FAIL(f, t, "expired");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "u1", .nbf_off = 10});
    EXPECT_OK(f, t, "u1", "");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "u1", .nbf_off = 100});
    EXPECT_FAIL(f, t, "not yet valid");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "u1", .no_exp = 1});
    EXPECT_FAIL(f, t, "exp");
    free(t);
}

static void test_hs_claim_checks(void **state)
{
    fx_t *f = *state;
    char *t = sign_hs(f, &(claims_t){.sub = "u1", .iss = "evil"});
    EXPECT_FAIL(f, t, "issuer");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "u1", .aud_json = "\"other\""});
    EXPECT_FAIL(f, t, "audience");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "u1", .aud_json = "[\"other\",\"bearbnb\"]"});
    EXPECT_OK(f, t, "u1", "");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "u1", .aud_json = "[\"other\"]"});
    EXPECT_FAIL(f, t, "audience");
    free(t);
    t = sign_hs(f, &(claims_t){.role = "host"});
    EXPECT_FAIL(f, t, "sub");
    free(t);
}

static void test_roles(void **state)
{
    fx_t *f = *state;
    char *t =
        sign_hs(f, &(claims_t){.sub = "k", .extra_json = "{\"realm_access\":{\"roles\":[\"offline\",\"guest\"]}}"});
    EXPECT_OK(f, t, "k", "guest");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "k", .extra_json = "{\"realm_access\":{\"roles\":[\"guest\",\"host\"]}}"});
    EXPECT_OK(f, t, "k", "host");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "k", .role = "host"});
    EXPECT_OK(f, t, "k", "host");
    free(t);
    t = sign_hs(f, &(claims_t){.sub = "k", .role = "admin"});
    EXPECT_OK(f, t, "k", "");
    free(t);
}

static void test_hs_wrong_signature_and_forgery(void **state)
{
    fx_t *f = *state;
    unsigned char other[32];
    memset(other, 7, sizeof other);
    char *t = sign(JWT_ALG_HS256, "dev", other, sizeof other, &(claims_t){.sub = "u1"});
    EXPECT_FAIL(f, t, "signature");
    free(t);
    /* forged: payload replaced with one claiming another sub, old signature */
    char *good = sign_hs(f, &(claims_t){.sub = "u1", .role = "guest"});
    char *evil = sign_hs(f, &(claims_t){.sub = "root", .role = "host"});
    char *g1 = strchr(good, '.'), *g2 = strrchr(good, '.');
    char *e1 = strchr(evil, '.'), *e2 = strrchr(evil, '.');
    char forged[4096];
    snprintf(forged, sizeof forged, "%.*s%.*s%s", (int)(g1 - good), good, (int)(e2 - e1), e1, g2);
    EXPECT_FAIL(f, forged, "signature");
    /* a single flipped signature character */
    size_t n = strlen(good);
    good[n - 2] = good[n - 2] == 'A' ? 'B' : 'A';
    EXPECT_FAIL(f, good, "signature");
    free(good);
    free(evil);
}

static char *b64url(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 4 / 3 + 8);
    assert_non_null(out);
    int len = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    int j = 0;
    for (int i = 0; i < len && out[i] != '='; i++)
        out[j++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[j] = '\0';
    return out;
}

static void test_alg_none_rejected(void **state)
{
    fx_t *f = *state;
    long now = (long)time(NULL);
    char body[256];
    snprintf(body, sizeof body,
             "{\"sub\":\"root\",\"role\":\"host\",\"iss\":\"bearbnb\",\"aud\":\"bearbnb\",\"exp\":%ld}", now + 300);
    const char *heads[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}"};
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
        char *h = b64url(heads[i]), *b = b64url(body), tok[1024];
        snprintf(tok, sizeof tok, "%s.%s.", h, b);
        EXPECT_FAIL(f, tok, "none");
        snprintf(tok, sizeof tok, "%s.%s", h, b);
        EXPECT_FAIL(f, tok, "malformed");
        free(h);
        free(b);
    }
    /* a crit header this verifier cannot understand, validly signed */
    {
        unsigned char key[64];
        size_t len;
        read_hs_key(f, key, &len);
        jwt_t *j = NULL;
        assert_int_equal(jwt_new(&j), 0);
        assert_int_equal(jwt_add_grants_json(j, body), 0);
        assert_int_equal(jwt_add_headers_json(j, "{\"crit\":[\"exp\"]}"), 0);
        assert_int_equal(jwt_set_alg(j, JWT_ALG_HS256, key, (int)len), 0);
        char *t = jwt_encode_str(j);
        jwt_free(j);
        EXPECT_FAIL(f, t, "crit");
        free(t);
    }
    /* other algs the HS key does not allow */
    unsigned char key[64];
    size_t len;
    read_hs_key(f, key, &len);
    char *t = sign(JWT_ALG_HS512, "dev", key, len, &(claims_t){.sub = "u1"});
    EXPECT_FAIL(f, t, "alg");
    free(t);
}

static void test_malformed_tokens(void **state)
{
    fx_t *f = *state;
    char *good = sign_hs(f, &(claims_t){.sub = "u1"});
    const char *bad[] = {"",
                         "garbage",
                         "a.b",
                         "a.b.c.d",
                         "..",
                         "!!!.???.***",
                         "eyJhbGciOiJIUzI1NiJ9.@@@@.abc",
                         "e.e.e",
                         "eyJhbGciOiJIUzI1NiJ9",
                         "bm90IGpzb24.bm90IGpzb24.c2ln"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bnb_identity_t id;
        char why[128];
        assert_int_equal(verify(f, bad[i], &id, why), -1);
        assert_true(why[0] != '\0');
    }
    /* the good token with its payload truncated by one character */
    char *p = strdup(good), *d2 = strrchr(p, '.');
    memmove(d2 - 1, d2, strlen(d2) + 1);
    bnb_identity_t id;
    char why[128];
    assert_int_equal(verify(f, p, &id, why), -1);
    free(p);
    /* NULL token, very long token */
    assert_int_equal(bnb__auth_verify(f->auth, NULL, &id, why, sizeof why), -1);
    char *big = malloc(70000);
    memset(big, 'a', 69999);
    big[69999] = '\0';
    big[10] = '.';
    big[20] = '.';
    assert_int_equal(verify(f, big, &id, why), -1);
    free(big);
    free(good);
}

/* ---- RS256 / ES256 from a JWKS ---------------------------------------- */

#define RSA_SIGN(priv, kid, ...) sign(JWT_ALG_RS256, (kid), (priv), strlen(priv), &(claims_t){__VA_ARGS__})
#define EC_SIGN(kid, ...)        sign(JWT_ALG_ES256, (kid), K.ec_priv, strlen(K.ec_priv), &(claims_t){__VA_ARGS__})

static void test_rs256_es256_valid(void **state)
{
    fx_t *f = *state;
    char *t = RSA_SIGN(K.rsa_priv, "rsa1", .sub = "kc-user", .role = "host");
    EXPECT_OK(f, t, "kc-user", "host");
    free(t);
    t = EC_SIGN("ec1", .sub = "ec-user", .role = "guest");
    EXPECT_OK(f, t, "ec-user", "guest");
    free(t);
    /* HS256 keeps working next to the JWKS */
    t = sign_hs(f, &(claims_t){.sub = "dev"});
    EXPECT_OK(f, t, "dev", "");
    free(t);
    /* a Keycloak-shaped access token: roles in realm_access, aud array */
    t = RSA_SIGN(K.rsa_priv, "rsa1", .sub = "5f0c-uuid", .aud_json = "[\"account\",\"bearbnb\"]",
                 .extra_json = "{\"realm_access\":{\"roles\":[\"offline_access\",\"guest\"]},"
                               "\"preferred_username\":\"gina\",\"typ\":\"Bearer\"}");
    EXPECT_OK(f, t, "5f0c-uuid", "guest");
    free(t);
}

static void test_rs_es_bad_signatures(void **state)
{
    fx_t *f = *state;
    /* signed by rsa2 but claiming kid rsa1 */
    char *t = RSA_SIGN(K.rsa2_priv, "rsa1", .sub = "x");
    EXPECT_FAIL(f, t, "signature");
    free(t);
    /* forged payload on an ES256 token */
    char *good = EC_SIGN("ec1", .sub = "x", .role = "guest");
    char *evil = EC_SIGN("ec1", .sub = "root", .role = "host");
    char *g1 = strchr(good, '.'), *g2 = strrchr(good, '.');
    char *e1 = strchr(evil, '.'), *e2 = strrchr(evil, '.');
    char forged[4096];
    snprintf(forged, sizeof forged, "%.*s%.*s%s", (int)(g1 - good), good, (int)(e2 - e1), e1, g2);
    EXPECT_FAIL(f, forged, "signature");
    free(good);
    free(evil);
    /* kid of an EC key on an RS256 token, and the reverse */
    t = RSA_SIGN(K.rsa_priv, "ec1", .sub = "x");
    EXPECT_FAIL(f, t, "key type");
    free(t);
    t = EC_SIGN("rsa1", .sub = "x");
    EXPECT_FAIL(f, t, "key type");
    free(t);
    /* unknown kid */
    t = RSA_SIGN(K.rsa_priv, "nope", .sub = "x");
    EXPECT_FAIL(f, t, "unknown key");
    free(t);
    /* claims are checked on RS256 too */
    t = RSA_SIGN(K.rsa_priv, "rsa1", .sub = "x", .exp_off = -3600);
    EXPECT_FAIL(f, t, "expired");
    free(t);
    t = RSA_SIGN(K.rsa_priv, "rsa1", .sub = "x", .iss = "http://kc/realms/other");
    EXPECT_FAIL(f, t, "issuer");
    free(t);
}

/* HS256 signed with the RSA public key's PEM as the HMAC secret: a verifier
 * that picks the key by kid and the algorithm from the token would accept it. */
static void test_algorithm_confusion(void **state)
{
    fx_t *f = *state;
    char *t = sign(JWT_ALG_HS256, "rsa1", K.rsa_pub, strlen(K.rsa_pub), &(claims_t){.sub = "root", .role = "host"});
    EXPECT_FAIL(f, t, "signature");
    /* and with no HS key configured at all, HS256 is not even considered */
    bnb_auth_t *jw = NULL;
    bnb_auth_config_t cfg = {.jwks_file = f->jwksfile};
    char err[256];
    assert_int_equal(bnb__auth_new(&cfg, &jw, err, sizeof err), 0);
    bnb_identity_t id;
    char why[128];
    assert_int_equal(bnb__auth_verify(jw, t, &id, why, sizeof why), -1);
    assert_non_null(strstr(why, "HS256 not allowed"));
    free(t);
    /* HS256 signed with the HS key, but RS256 in the header: no key may do both */
    t = RSA_SIGN(K.rsa_priv, "rsa1", .sub = "ok");
    assert_int_equal(bnb__auth_verify(jw, t, &id, why, sizeof why), 0);
    assert_string_equal(id.sub, "ok");
    free(t);
    /* jwks-only auth cannot mint */
    assert_int_equal(bnb__auth_mint(jw, "a", "host", 60, &t), BNB_EPERM);
    bnb__auth_free(jw);
}

static void test_key_rotation_and_kid_refresh(void **state)
{
    fx_t *f = *state;
    /* the issuer adds rsa2 to the file: a token with that kid makes the
     * verifier re-read the set once and then verify */
    write_jwks(f->jwksfile, K.rsa, "rsa1", K.rsa2, "rsa2", K.ec, "ec1");
    char *t1 = RSA_SIGN(K.rsa_priv, "rsa1", .sub = "old");
    char *t2 = RSA_SIGN(K.rsa2_priv, "rsa2", .sub = "new");
    EXPECT_OK(f, t2, "new", "");
    EXPECT_OK(f, t1, "old", ""); /* both kids verify while both are in the set */
    free(t1);
    free(t2);
    /* another unknown kid right away: refresh is rate-limited, plain failure */
    write_jwks(f->jwksfile, K.rsa2, "rsa3", NULL, NULL, NULL, NULL);
    char *t3 = RSA_SIGN(K.rsa2_priv, "rsa3", .sub = "newer");
    EXPECT_FAIL(f, t3, "unknown key");
    free(t3);
}

static void test_jwks_errors_name_file(void **state)
{
    fx_t *f = *state;
    char path[160], err[256] = "";
    snprintf(path, sizeof path, "%s/missing.json", f->dir);
    bnb_auth_config_t cfg = {.jwks_file = path};
    bnb_auth_t *b = NULL;
    assert_true(bnb__auth_new(&cfg, &b, err, sizeof err) < 0);
    assert_null(b);
    assert_non_null(strstr(err, path));
    write_file(f->jwksfile, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}");
    cfg.jwks_file = f->jwksfile;
    err[0] = '\0';
    assert_true(bnb__auth_new(&cfg, &b, err, sizeof err) < 0);
    assert_non_null(strstr(err, f->jwksfile));
    /* nothing configured */
    bnb_auth_config_t none = {0};
    assert_true(bnb__auth_new(&none, &b, err, sizeof err) < 0);
}

/* ---- threads ------------------------------------------------------------ */

typedef struct vworker {
    bnb_auth_t *auth;
    char *tokens[3];
    int *stop;
    int ok, bad;
} vworker_t;

static void *vworker_main(void *arg)
{
    vworker_t *w = arg;
    for (int i = 0; !__atomic_load_n(w->stop, __ATOMIC_ACQUIRE) || i < 30; i++) {
        bnb_identity_t id;
        char why[128];
        if (bnb__auth_verify(w->auth, w->tokens[i % 3], &id, why, sizeof why) == 0 && strcmp(id.sub, "t") == 0)
            w->ok++;
        else
            w->bad++;
    }
    return NULL;
}

/* 4 threads verify HS256/RS256/ES256 tokens while the JWKS is re-read every
 * second and rewritten under them: never a failure, never a torn key set.
 * The second passes on the host clock (host/core/clock.h), not in real time. */
static void test_concurrent_verify_during_refresh(void **state)
{
    fx_t *f = *state;
    bnb_auth_t *a = NULL;
    bnb_auth_config_t cfg = {
        .hs256_key_file = f->keyfile, .jwks_file = f->jwksfile, .jwks_refresh_s = 1, .leeway_s = -1};
    char err[256];
    assert_int_equal(bnb__auth_new(&cfg, &a, err, sizeof err), 0);
    int stop = 0;
    vworker_t w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (vworker_t){.auth = a, .stop = &stop};
        w[i].tokens[0] = sign_hs(f, &(claims_t){.sub = "t"});
        w[i].tokens[1] = RSA_SIGN(K.rsa_priv, "rsa1", .sub = "t");
        w[i].tokens[2] = EC_SIGN("ec1", .sub = "t");
        assert_int_equal(pthread_create(&th[i], NULL, vworker_main, &w[i]), 0);
    }
    for (int r = 0; r < 6; r++) { /* six refresh periods, each a background re-read */
        write_jwks(f->jwksfile, r % 2 ? K.rsa2 : K.ec, r % 2 ? "rsa2" : "ec1", K.rsa, "rsa1", K.ec, "ec1");
        bnb__clock_advance(1000);
        struct timespec ts = {0, 40000000L}; /* real time for the verifiers and the re-read */
        nanosleep(&ts, NULL);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    int ok = 0, bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
        bad += w[i].bad;
        for (int j = 0; j < 3; j++)
            free(w[i].tokens[j]);
    }
    print_message("concurrent verifications: %d ok, %d failed\n", ok, bad);
    assert_int_equal(bad, 0);
    assert_true(ok >= 4 * 30);
    bnb__auth_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dev_key_created_0600, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_file_error_names_file, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_mint_roundtrip_and_claims, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_hs_valid_and_leeway, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_hs_claim_checks, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_roles, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_hs_wrong_signature_and_forgery, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_alg_none_rejected, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_tokens, setup_hs, teardown),
        cmocka_unit_test_setup_teardown(test_rs256_es256_valid, setup_all, teardown),
        cmocka_unit_test_setup_teardown(test_rs_es_bad_signatures, setup_all, teardown),
        cmocka_unit_test_setup_teardown(test_algorithm_confusion, setup_all, teardown),
        cmocka_unit_test_setup_teardown(test_key_rotation_and_kid_refresh, setup_all, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_errors_name_file, setup_all, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_tokens, setup_all, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_verify_during_refresh, setup_all, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

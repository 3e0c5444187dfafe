/* Identity: JWT verification (HS256 dev key, RS256/ES256 from a JWKS) and
 * HS256 minting. Everything in bnb_auth_t is immutable after bnb__auth_new
 * except the JWKS key set, which has its own lock: verify is thread-safe. */
#include "auth.h"
#include "b64.h"
#include "clock.h"
#include "bnb_plugin.h"
#include "jwks.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HS_KEY_MIN 32 /* RFC 7518 3.2: at least 256 bits for HS256 */
#define HS_KEY_MAX 512
#define TOKEN_MAX  16384 /* longer tokens are rejected before any parsing */

struct bnb_auth {
    unsigned char hs_key[HS_KEY_MAX];
    size_t hs_key_len; /* 0: no HS256 key, HS256 tokens are refused */
    char *issuer;
    char *audience;
    int leeway_s;
    bnb_jwks_t *jwks; /* NULL: RS256/ES256 tokens are refused */
};

static void set_err(char *buf, size_t len, const char *fmt, const char *a, const char *b)
{
    if (buf && len)
        snprintf(buf, len, fmt, a, b ? b : "");
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Key file content: hex (as created here) is decoded; anything else is used
 * as raw bytes. Leading/trailing whitespace is ignored either way. */
static int parse_key(bnb_auth_t *a, const char *buf, size_t n)
{
    while (n && isspace((unsigned char)buf[n - 1]))
        n--;
    while (n && isspace((unsigned char)*buf))
        buf++, n--;
    int is_hex = n % 2 == 0;
    for (size_t i = 0; is_hex && i < n; i++)
        is_hex = hexval((unsigned char)buf[i]) >= 0;
    if (is_hex && n / 2 >= HS_KEY_MIN && n / 2 <= HS_KEY_MAX) {
        for (size_t i = 0; i < n / 2; i++)
            a->hs_key[i] =
                (unsigned char)(hexval((unsigned char)buf[2 * i]) << 4 | hexval((unsigned char)buf[2 * i + 1]));
        a->hs_key_len = n / 2;
        return 0;
    }
    if (n < HS_KEY_MIN || n > HS_KEY_MAX)
        return BNB_EINVAL;
    memcpy(a->hs_key, buf, n);
    a->hs_key_len = n;
    return 0;
}

static int create_key_file(const char *path, char *errbuf, size_t errlen)
{
    unsigned char raw[32];
    char hex[2 * sizeof raw + 2];
    int fd = -1;

    if (RAND_bytes(raw, sizeof raw) != 1) {
        set_err(errbuf, errlen, "cannot create HS256 key file %s: RAND_bytes failed%s", path, NULL);
        return BNB_EIO;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    hex[2 * sizeof raw] = '\n';
    hex[2 * sizeof raw + 1] = '\0';
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) /* created concurrently: read that one */
            return 0;
        set_err(errbuf, errlen, "cannot create HS256 key file %s: %s", path, strerror(errno));
        return BNB_EIO;
    }
    size_t len = strlen(hex), off = 0;
    while (off < len) {
        ssize_t w = write(fd, hex + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            set_err(errbuf, errlen, "cannot write HS256 key file %s: %s", path, strerror(errno));
            goto fail;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        set_err(errbuf, errlen, "cannot write HS256 key file %s: %s", path, strerror(errno));
        unlink(path);
        return BNB_EIO;
    }
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(hex, sizeof hex);
    return 0;
fail:
    close(fd);
    unlink(path);
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(hex, sizeof hex);
    return BNB_EIO;
}

static int load_key_file(bnb_auth_t *a, const char *path, int create, char *errbuf, size_t errlen)
{
    char buf[2 * HS_KEY_MAX + 64];
    size_t n = 0;
    FILE *f = NULL;
    int rc;

    if (create && access(path, F_OK) != 0 && errno == ENOENT) {
        rc = create_key_file(path, errbuf, errlen);
        if (rc)
            return rc;
    }
    f = fopen(path, "re");
    if (!f) {
        set_err(errbuf, errlen, "cannot read HS256 key file %s: %s", path, strerror(errno));
        return BNB_EIO;
    }
    n = fread(buf, 1, sizeof buf, f);
    if (ferror(f)) {
        set_err(errbuf, errlen, "cannot read HS256 key file %s: %s", path, strerror(errno));
        rc = BNB_EIO;
        goto done;
    }
    rc = n == sizeof buf ? BNB_EINVAL : parse_key(a, buf, n);
    if (rc)
        set_err(errbuf, errlen, "HS256 key file %s: %s", path, "need 32..512 bytes (64..1024 hex digits)");
done:
    OPENSSL_cleanse(buf, sizeof buf);
    fclose(f);
    return rc;
}

int bnb__auth_new(const bnb_auth_config_t *cfg, bnb_auth_t **out, char *errbuf, size_t errlen)
{
    bnb_auth_t *a = NULL;
    int rc = BNB_ENOMEM;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!cfg || !out)
        return BNB_EINVAL;
    *out = NULL;
    a = calloc(1, sizeof *a);
    if (!a)
        goto fail;
    a->issuer = strdup(cfg->issuer && *cfg->issuer ? cfg->issuer : "bearbnb");
    a->audience = strdup(cfg->audience && *cfg->audience ? cfg->audience : "bearbnb");
    if (!a->issuer || !a->audience)
        goto fail;
    /* 0 means "unset" (default 30); a negative value asks for no leeway. */
    a->leeway_s = cfg->leeway_s == 0 ? 30 : cfg->leeway_s < 0 ? 0 : cfg->leeway_s;
    if (cfg->hs256_key_file && *cfg->hs256_key_file) {
        rc = load_key_file(a, cfg->hs256_key_file, cfg->create_dev_key, errbuf, errlen);
        if (rc)
            goto fail;
    }
    if ((cfg->jwks_file && *cfg->jwks_file) || (cfg->jwks_url && *cfg->jwks_url)) {
        bnb_jwks_config_t jc = {
            .file = cfg->jwks_file && *cfg->jwks_file ? cfg->jwks_file : NULL,
            .url = cfg->jwks_url && *cfg->jwks_url ? cfg->jwks_url : NULL,
            .refresh_s = cfg->jwks_refresh_s,
            .url_may_wait = 1, /* an identity provider that is down at start: not ready, not dead */
        };
        rc = bnb__jwks_new(&jc, &a->jwks, errbuf, errlen);
        if (rc)
            goto fail;
    }
    if (!a->hs_key_len && !a->jwks) {
        set_err(errbuf, errlen, "no JWT key configured (HS256 key file or JWKS)%s%s", "", NULL);
        rc = BNB_EINVAL;
        goto fail;
    }
    *out = a;
    return 0;
fail:
    bnb__auth_free(a);
    return rc;
}

int bnb__auth_ready(bnb_auth_t *a)
{
    return !a || !a->jwks || bnb__jwks_loaded(a->jwks);
}

int bnb__auth_jwks_stats(bnb_auth_t *a, size_t *keys, unsigned long *failures)
{
    if (!a || !a->jwks)
        return -1;
    *keys = bnb__jwks_count(a->jwks);
    *failures = bnb__jwks_failures(a->jwks);
    return 0;
}

void bnb__auth_free(bnb_auth_t *a)
{
    if (!a)
        return;
    OPENSSL_cleanse(a->hs_key, sizeof a->hs_key);
    bnb__jwks_free(a->jwks);
    free(a->issuer);
    free(a->audience);
    free(a);
}

/* ---- verification ------------------------------------------------------ */

static json_t *decode_json_segment(const char *s, size_t n)
{
    size_t len = 0;
    unsigned char *raw = bnb__b64url_decode(s, n, &len);
    if (!raw)
        return NULL;
    json_t *j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static void say(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
}

static int claim_time(json_t *claims, const char *name, double *out)
{
    json_t *v = json_object_get(claims, name);
    if (!v)
        return BNB_ENOENT;
    if (!json_is_number(v))
        return BNB_EINVAL;
    *out = json_number_value(v);
    return 0;
}

static int aud_ok(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (json_is_array(aud)) {
        size_t i;
        json_t *v;
        json_array_foreach(aud, i, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
                return 1;
        }
    }
    return 0;
}

static const char *pick_role(json_t *claims)
{
    const char *r = json_string_value(json_object_get(claims, "role"));
    if (r && (strcmp(r, "host") == 0 || strcmp(r, "guest") == 0))
        return r;
    json_t *roles = json_object_get(json_object_get(claims, "realm_access"), "roles");
    int host = 0, guest = 0;
    size_t i;
    json_t *v;
    json_array_foreach(roles, i, v)
    {
        const char *s = json_string_value(v);
        if (s && strcmp(s, "host") == 0)
            host = 1;
        else if (s && strcmp(s, "guest") == 0)
            guest = 1;
    }
    return host ? "host" : guest ? "guest" : "";
}

/* Claims of an already signature-checked token. */
static int check_claims(bnb_auth_t *a, json_t *claims, bnb_identity_t *id, char *why, size_t whylen)
{
    double exp, nbf, now = (double)(bnb__now_ms() / 1000); /* the host clock (tests advance it) */
    int rc;

    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || strcmp(iss, a->issuer) != 0)
        return say(why, whylen, "wrong issuer"), -1;
    if (!aud_ok(json_object_get(claims, "aud"), a->audience))
        return say(why, whylen, "wrong audience"), -1;
    rc = claim_time(claims, "exp", &exp);
    if (rc)
        return say(why, whylen, rc == BNB_ENOENT ? "missing exp" : "bad exp"), -1;
    if (!(now < exp + a->leeway_s))
        return say(why, whylen, "token expired"), -1;
    rc = claim_time(claims, "nbf", &nbf);
    if (rc == BNB_EINVAL)
        return say(why, whylen, "bad nbf"), -1;
    if (rc == 0 && !(nbf <= now + a->leeway_s))
        return say(why, whylen, "token not yet valid"), -1;
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    if (!sub || !*sub)
        return say(why, whylen, "missing sub"), -1;
    if (strlen(sub) >= sizeof id->sub)
        return say(why, whylen, "sub too long"), -1;
    snprintf(id->sub, sizeof id->sub, "%s", sub);
    snprintf(id->role, sizeof id->role, "%s", pick_role(claims));
    return 0;
}

/* RS256 / ES256 over the JWS signing input with an already parsed key (the
 * JWKS keeps EVP_PKEYs: re-reading a PEM per token, as libjwt does, costs ~10x
 * the verification itself). ES256 signatures are R||S (RFC 7518 3.4). */
static int verify_pkey(EVP_PKEY *pk, int ec, const char *input, size_t inlen, const char *sig_b64)
{
    size_t slen = 0;
    unsigned char *sig = bnb__b64url_decode(sig_b64, strlen(sig_b64), &slen), *der = NULL;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *s = NULL;
    EVP_MD_CTX *ctx = NULL;
    const unsigned char *vsig = sig;
    size_t vlen = slen;
    int ok = 0;

    if (!sig || !EVP_PKEY_is_a(pk, ec ? "EC" : "RSA"))
        goto done;
    if (ec) {
        if (slen != 64)
            goto done;
        es = ECDSA_SIG_new();
        r = BN_bin2bn(sig, 32, NULL);
        s = BN_bin2bn(sig + 32, 32, NULL);
        if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1)
            goto done;
        r = s = NULL; /* owned by es now */
        int dl = i2d_ECDSA_SIG(es, &der);
        if (dl <= 0)
            goto done;
        vsig = der;
        vlen = (size_t)dl;
    }
    ctx = EVP_MD_CTX_new();
    ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
         EVP_DigestVerify(ctx, vsig, vlen, (const unsigned char *)input, inlen) == 1;
done:
    EVP_MD_CTX_free(ctx);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    free(sig);
    return ok ? 0 : -1;
}

int bnb__auth_verify(bnb_auth_t *a, const char *token, bnb_identity_t *id, char *why, size_t whylen)
{
    json_t *header = NULL, *claims = NULL;
    jwt_t *jwt = NULL;
    char *grants = NULL;
    EVP_PKEY *pkey = NULL;
    int rc = -1;

    say(why, whylen, "");
    if (!a || !token || !id)
        return say(why, whylen, "no token"), -1;
    memset(id, 0, sizeof *id);
    size_t n = strnlen(token, TOKEN_MAX + 1);
    if (n == 0 || n > TOKEN_MAX)
        return say(why, whylen, "malformed token"), -1;
    const char *d1 = memchr(token, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - token)) || d1 == token || d2 == d1 + 1)
        return say(why, whylen, "malformed token"), -1;
    for (const char *p = d2 + 1; *p; p++) {
        if (bnb__b64url_val((unsigned char)*p) < 0)
            return say(why, whylen, "malformed token"), -1;
    }
    header = decode_json_segment(token, (size_t)(d1 - token));
    if (!header) {
        say(why, whylen, "malformed token header");
        goto done;
    }
    const char *alg = json_string_value(json_object_get(header, "alg"));
    if (!alg) {
        say(why, whylen, "missing alg");
        goto done;
    }
    if (json_object_get(header, "crit")) { /* RFC 7515 4.1.11: no extension is understood here */
        say(why, whylen, "unsupported crit header");
        goto done;
    }
    if (strcmp(alg, "HS256") == 0) {
        if (!a->hs_key_len) {
            say(why, whylen, "alg HS256 not allowed");
            goto done;
        }
        /* HS256 is verified by libjwt with the HS key and nothing else */
        if (jwt_decode(&jwt, token, a->hs_key, (int)a->hs_key_len) != 0 || !jwt) {
            say(why, whylen, "bad signature");
            goto done;
        }
        if (jwt_get_alg(jwt) != JWT_ALG_HS256) { /* defence in depth */
            say(why, whylen, "alg mismatch");
            goto done;
        }
        grants = jwt_get_grants_json(jwt, NULL);
        claims = grants ? json_loads(grants, JSON_REJECT_DUPLICATES, NULL) : NULL;
    } else if (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0) {
        if (!a->jwks) {
            say(why, whylen, "alg not allowed");
            goto done;
        }
        const char *kid = json_string_value(json_object_get(header, "kid"));
        int r = bnb__jwks_get_key(a->jwks, kid, alg, &pkey);
        if (r) {
            say(why, whylen,
                r == BNB_EINVAL ? "key type does not match alg"
                : kid           ? "unknown key id"
                                : "missing key id");
            goto done;
        }
        if (verify_pkey(pkey, alg[0] == 'E', token, (size_t)(d2 - token), d2 + 1) != 0) {
            say(why, whylen, "bad signature");
            goto done;
        }
        claims = decode_json_segment(d1 + 1, (size_t)(d2 - d1 - 1));
    } else if (strcasecmp(alg, "none") == 0) {
        say(why, whylen, "alg none not allowed");
        goto done;
    } else {
        say(why, whylen, "alg not allowed");
        goto done;
    }
    if (!claims || !json_is_object(claims)) {
        say(why, whylen, "malformed claims");
        goto done;
    }
    rc = check_claims(a, claims, id, why, whylen);
done:
    if (rc)
        memset(id, 0, sizeof *id);
    json_decref(claims);
    free(grants);
    jwt_free(jwt);
    EVP_PKEY_free(pkey);
    json_decref(header);
    return rc;
}

/* ---- minting ----------------------------------------------------------- */

int bnb__auth_mint(bnb_auth_t *a, const char *sub, const char *role, long ttl_s, char **out)
{
    jwt_t *jwt = NULL;
    json_t *extra = NULL;
    char *extra_s = NULL;
    int rc = BNB_EINVAL;

    if (out)
        *out = NULL;
    if (!a || !sub || !*sub || strlen(sub) >= sizeof(((bnb_identity_t *)0)->sub) || !out || ttl_s <= 0)
        return BNB_EINVAL;
    if (role && *role && strcmp(role, "host") != 0 && strcmp(role, "guest") != 0)
        return BNB_EINVAL;
    if (!a->hs_key_len)
        return BNB_EPERM;
    long now = (long)(bnb__now_ms() / 1000);
    rc = BNB_ENOMEM;
    if (jwt_new(&jwt) != 0)
        goto fail;
    if (role && *role)
        extra = json_pack("{s:s, s:{s:[s]}}", "role", role, "realm_access", "roles", role);
    else
        extra = json_object();
    if (!extra || json_object_set_new(extra, "sub", json_string(sub)) != 0)
        goto fail;
    extra_s = json_dumps(extra, JSON_COMPACT);
    if (!extra_s)
        goto fail;
    if (jwt_add_grants_json(jwt, extra_s) != 0 || jwt_add_grant(jwt, "iss", a->issuer) != 0 ||
        jwt_add_grant(jwt, "aud", a->audience) != 0 || jwt_add_grant_int(jwt, "iat", now) != 0 ||
        jwt_add_grant_int(jwt, "nbf", now) != 0 || jwt_add_grant_int(jwt, "exp", now + ttl_s) != 0 ||
        jwt_add_header(jwt, "kid", "dev") != 0)
        goto fail;
    if (jwt_set_alg(jwt, JWT_ALG_HS256, a->hs_key, (int)a->hs_key_len) != 0)
        goto fail;
    *out = jwt_encode_str(jwt);
    if (!*out)
        goto fail;
    rc = 0;
fail:
    free(extra_s);
    json_decref(extra);
    jwt_free(jwt);
    return rc;
}

/* JWKS loading (file / URL), JWK -> PEM with OpenSSL 3, background refresh. */
#include "jwks.h"
#include "b64.h"
#include "bnb_plugin.h"
#include "clock.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JWKS_MAX_BYTES (1 << 20)
#define JWKS_MAX_KEYS  64

enum { KTY_RSA = 1, KTY_EC = 2 };

typedef struct jwk {
    char *kid; /* "" when the JWK has none */
    int kty;
    char *pem;
    size_t pem_len;
    EVP_PKEY *pkey; /* the same key, parsed once: verifying with it is ~10x cheaper than re-reading the PEM */
} jwk_t;

typedef struct keyset {
    jwk_t *keys;
    size_t n;
} keyset_t;

struct bnb_jwks {
    char *file, *url;
    int refresh_s, kid_refresh_min_s, kid_wait_ms, fetch_timeout_ms;
    _Atomic int url_loaded;         /* the URL answered with usable keys at least once */
    _Atomic unsigned long failures; /* refresh rounds with a source that failed */

    pthread_mutex_t refresh_mu; /* one refresh round at a time: an older read never replaces a newer one */
    pthread_rwlock_t lock;      /* guards file_keys, url_keys */
    keyset_t *file_keys, *url_keys;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int stop, want_refresh;
    unsigned long started, generation; /* refresh rounds begun / completed */
    int64_t last_kid_refresh_ms;       /* bnb__mono_ms() */
    int have_last_kid_refresh;
    int clock_watched;
    pthread_t thread;
    int thread_started;
    int curl_inited;
};

static void set_err(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *buf, size_t len, const char *fmt, ...)
{
    if (!buf || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

static void keyset_free(keyset_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->keys[i].kid);
        free(s->keys[i].pem);
        EVP_PKEY_free(s->keys[i].pkey);
    }
    free(s->keys);
    free(s);
}

/* ---- JWK -> PEM -------------------------------------------------------- */

/* Unpadded base64url (trailing '=' tolerated). malloc'ed; NULL when invalid/empty. */
static unsigned char *b64url_decode(const char *s, size_t *outlen)
{
    size_t n = s ? strlen(s) : 0;
    while (n && s[n - 1] == '=')
        n--;
    if (n == 0)
        return NULL;
    return bnb__b64url_decode(s, n, outlen);
}

static BIGNUM *b64url_bn(const char *s)
{
    size_t n = 0;
    unsigned char *raw = b64url_decode(s, &n);
    if (!raw)
        return NULL;
    BIGNUM *bn = BN_bin2bn(raw, (int)n, NULL);
    free(raw);
    return bn;
}

static char *pkey_to_pem(EVP_PKEY *pkey, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    if (!b)
        return NULL;
    if (PEM_write_bio_PUBKEY(b, pkey) == 1) {
        long n = BIO_get_mem_data(b, &data);
        if (n > 0 && (out = malloc((size_t)n + 1))) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
            *len = (size_t)n;
        }
    }
    BIO_free(b);
    return out;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(json_t *j, char *err, size_t errlen)
{
    BIGNUM *n = b64url_bn(json_string_value(json_object_get(j, "n")));
    BIGNUM *e = b64url_bn(json_string_value(json_object_get(j, "e")));
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;

    if (!n || !e) {
        set_err(err, errlen, "RSA key without valid n/e");
        goto fail;
    }
    if (BN_num_bits(n) < 2048 || BN_num_bits(n) > 16384 || !BN_is_odd(e) || BN_is_one(e)) {
        set_err(err, errlen, "RSA key of %d bits or bad exponent", BN_num_bits(n));
        goto fail;
    }
    bld = OSSL_PARAM_BLD_new();
    if (!bld || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1)
        goto fail;
    pkey = pkey_fromdata("RSA", bld);
    if (!pkey)
        set_err(err, errlen, "RSA key rejected by OpenSSL");
fail:
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(json_t *j, char *err, size_t errlen)
{
    const char *crv = json_string_value(json_object_get(j, "crv"));
    size_t xl = 0, yl = 0;
    unsigned char *x = NULL, *y = NULL, pub[65];
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *check = NULL;

    if (!crv || strcmp(crv, "P-256") != 0) {
        set_err(err, errlen, "EC curve %s not supported (P-256 only)", crv ? crv : "(none)");
        return NULL;
    }
    x = b64url_decode(json_string_value(json_object_get(j, "x")), &xl);
    y = b64url_decode(json_string_value(json_object_get(j, "y")), &yl);
    if (!x || !y || xl != 32 || yl != 32) {
        set_err(err, errlen, "EC P-256 key needs 32-byte x and y");
        goto fail;
    }
    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1, x, 32);
    memcpy(pub + 33, y, 32);
    bld = OSSL_PARAM_BLD_new();
    if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub) != 1)
        goto fail;
    pkey = pkey_fromdata("EC", bld);
    /* the point must be on the curve (invalid-curve attacks) */
    check = pkey ? EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL) : NULL;
    if (!check || EVP_PKEY_public_check(check) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
        set_err(err, errlen, "EC key is not a valid P-256 point");
    }
fail:
    EVP_PKEY_CTX_free(check);
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pkey;
}

/* 0 and *out filled; BNB_ENOENT when the key is fine but not for us (enc use,
 * other alg, other kty); BNB_EINVAL when broken. */
static int jwk_parse(json_t *j, jwk_t *out, char *err, size_t errlen)
{
    const char *kty = json_string_value(json_object_get(j, "kty"));
    const char *use = json_string_value(json_object_get(j, "use"));
    const char *alg = json_string_value(json_object_get(j, "alg"));
    const char *kid = json_string_value(json_object_get(j, "kid"));
    EVP_PKEY *pkey = NULL;

    memset(out, 0, sizeof *out);
    if (!json_is_object(j) || !kty) {
        set_err(err, errlen, "JWK without kty");
        return BNB_EINVAL;
    }
    if (use && strcmp(use, "sig") != 0)
        return BNB_ENOENT;
    if (strcmp(kty, "RSA") == 0) {
        if (alg && strcmp(alg, "RS256") != 0)
            return BNB_ENOENT;
        out->kty = KTY_RSA;
        pkey = rsa_from_jwk(j, err, errlen);
    } else if (strcmp(kty, "EC") == 0) {
        if (alg && strcmp(alg, "ES256") != 0)
            return BNB_ENOENT;
        out->kty = KTY_EC;
        pkey = ec_from_jwk(j, err, errlen);
    } else {
        return BNB_ENOENT;
    }
    if (!pkey)
        return BNB_EINVAL;
    out->pem = pkey_to_pem(pkey, &out->pem_len);
    out->kid = strdup(kid ? kid : "");
    out->pkey = pkey;
    if (!out->pem || !out->kid) {
        free(out->pem);
        free(out->kid);
        EVP_PKEY_free(pkey);
        memset(out, 0, sizeof *out);
        return BNB_ENOMEM;
    }
    return 0;
}

int bnb__jwk_to_pem(const char *jwk_json, char **pem, const char **alg, char *errbuf, size_t errlen)
{
    json_t *j = jwk_json ? json_loads(jwk_json, 0, NULL) : NULL;
    jwk_t k;
    int rc;

    *pem = NULL;
    if (!j) {
        set_err(errbuf, errlen, "not JSON");
        return BNB_EINVAL;
    }
    rc = jwk_parse(j, &k, errbuf, errlen);
    json_decref(j);
    if (rc == BNB_ENOENT)
        set_err(errbuf, errlen, "not a signature key of a supported type");
    if (rc)
        return rc == BNB_ENOMEM ? rc : BNB_EINVAL;
    free(k.kid);
    EVP_PKEY_free(k.pkey);
    *pem = k.pem;
    if (alg)
        *alg = k.kty == KTY_RSA ? "RS256" : "ES256";
    return 0;
}

/* A JWKS document -> key set. Broken members are skipped (and logged) as long
 * as at least one key is usable. */
static int keyset_parse(const char *text, size_t len, const char *source, keyset_t **out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr), *keys, *v;
    keyset_t *s = NULL;
    size_t i;
    int rc = BNB_EINVAL;

    *out = NULL;
    keys = json_object_get(doc, "keys");
    if (!doc || !json_is_array(keys)) {
        set_err(err, errlen, "JWKS %s: %s", source, doc ? "no \"keys\" array" : jerr.text);
        goto fail;
    }
    rc = BNB_ENOMEM;
    s = calloc(1, sizeof *s);
    if (!s || !(s->keys = calloc(json_array_size(keys) ? json_array_size(keys) : 1, sizeof *s->keys)))
        goto fail;
    json_array_foreach(keys, i, v)
    {
        char why[160] = "";
        if (s->n >= JWKS_MAX_KEYS)
            break;
        int r = jwk_parse(v, &s->keys[s->n], why, sizeof why);
        if (r == 0)
            s->n++;
        else if (r == BNB_ENOMEM)
            goto fail;
        else if (r == BNB_EINVAL)
            bnb__log(BNB_LOG_WARN, "JWKS %s: key %zu (kid %s) skipped: %s", source, i,
                     json_string_value(json_object_get(v, "kid")) ? json_string_value(json_object_get(v, "kid")) : "-",
                     why);
    }
    if (s->n == 0) {
        set_err(err, errlen, "JWKS %s: no usable RS256/ES256 signature key", source);
        rc = BNB_EINVAL;
        goto fail;
    }
    *out = s;
    json_decref(doc);
    return 0;
fail:
    keyset_free(s);
    json_decref(doc);
    return rc;
}

int bnb__jwks_parse_text(const char *text, size_t len, size_t *nkeys, char *errbuf, size_t errlen)
{
    keyset_t *s = NULL;
    int rc = keyset_parse(text, len, "(text)", &s, errbuf, errlen);
    if (nkeys != NULL)
        *nkeys = s ? s->n : 0;
    keyset_free(s);
    return rc;
}

/* ---- sources ------------------------------------------------------------ */

static int load_file(const char *path, keyset_t **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t n = 0;
    int rc = BNB_EIO;

    *out = NULL;
    if (!f) {
        set_err(err, errlen, "cannot read JWKS file %s: %s", path, strerror(errno));
        return BNB_EIO;
    }
    buf = malloc(JWKS_MAX_BYTES + 1);
    if (!buf) {
        rc = BNB_ENOMEM;
        goto done;
    }
    n = fread(buf, 1, JWKS_MAX_BYTES + 1, f);
    if (ferror(f) || n > JWKS_MAX_BYTES) {
        set_err(err, errlen, "cannot read JWKS file %s: %s", path, ferror(f) ? strerror(errno) : "too large");
        goto done;
    }
    rc = keyset_parse(buf, n, path, out, err, errlen);
done:
    free(buf);
    fclose(f);
    return rc;
}

typedef struct fetch_buf {
    char *data;
    size_t len;
    bnb_jwks_t *k;
} fetch_buf_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    fetch_buf_t *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > JWKS_MAX_BYTES)
        return 0;
    char *d = realloc(b->data, b->len + n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, ptr, n);
    b->data = d;
    b->len += n;
    d[b->len] = '\0';
    return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    bnb_jwks_t *k = ud;
    pthread_mutex_lock(&k->mu);
    int stop = k->stop;
    pthread_mutex_unlock(&k->mu);
    return stop; /* non-zero aborts the transfer on shutdown */
}

static int load_url(bnb_jwks_t *k, keyset_t **out, char *err, size_t errlen)
{
    CURL *c = curl_easy_init();
    fetch_buf_t b = {.k = k};
    char cerr[CURL_ERROR_SIZE] = "";
    long status = 0;
    int rc = BNB_EIO;

    *out = NULL;
    if (!c) {
        set_err(err, errlen, "JWKS %s: curl_easy_init failed", k->url);
        return BNB_ENOMEM;
    }
    curl_easy_setopt(c, CURLOPT_URL, k->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)k->fetch_timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(k->fetch_timeout_ms < 2000 ? k->fetch_timeout_ms : 2000));
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, k);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "bearbnb-jwks");
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        set_err(err, errlen, "cannot fetch JWKS %s: %s", k->url, cerr[0] ? cerr : curl_easy_strerror(cc));
        goto done;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || !b.data) {
        set_err(err, errlen, "cannot fetch JWKS %s: HTTP status %ld", k->url, status);
        goto done;
    }
    rc = keyset_parse(b.data, b.len, k->url, out, err, errlen);
done:
    free(b.data);
    curl_easy_cleanup(c);
    return rc;
}

int bnb__jwks_refresh(bnb_jwks_t *k, char *errbuf, size_t errlen)
{
    keyset_t *fs = NULL, *us = NULL, *old;
    int rc = 0, r;
    char e2[256];

    if (errbuf && errlen)
        errbuf[0] = '\0';
    pthread_mutex_lock(&k->refresh_mu);
    if (k->file) {
        r = load_file(k->file, &fs, errbuf, errlen);
        if (r) {
            rc = r;
        } else {
            pthread_rwlock_wrlock(&k->lock);
            old = k->file_keys;
            k->file_keys = fs;
            pthread_rwlock_unlock(&k->lock);
            keyset_free(old);
        }
    }
    if (k->url) {
        r = load_url(k, &us, rc ? e2 : errbuf, rc ? sizeof e2 : errlen);
        if (r) {
            if (!rc)
                rc = r;
        } else {
            pthread_rwlock_wrlock(&k->lock);
            old = k->url_keys;
            k->url_keys = us;
            pthread_rwlock_unlock(&k->lock);
            keyset_free(old);
            atomic_store(&k->url_loaded, 1);
        }
    }
    pthread_mutex_unlock(&k->refresh_mu);
    if (rc)
        atomic_fetch_add(&k->failures, 1);
    return rc;
}

/* ---- background refresh ------------------------------------------------- */

static void *refresh_main(void *arg)
{
    bnb_jwks_t *k = arg;
    int retry_s = 1;
    pthread_mutex_lock(&k->mu);
    while (!k->stop) {
        int64_t until = bnb__mono_ms(); /* the host clock: tests advance it (on_clock_advance) */
        /* until the URL has loaded once, retry soon (backoff), not every refresh_s */
        if (k->url && !atomic_load(&k->url_loaded)) {
            until += (int64_t)(retry_s < k->refresh_s ? retry_s : k->refresh_s) * 1000;
            retry_s = retry_s < 16 ? retry_s * 2 : 30;
        } else {
            until += (int64_t)k->refresh_s * 1000;
        }
        while (!k->stop && !k->want_refresh && bnb__mono_ms() < until)
            bnb__clock_wait(&k->cv, &k->mu, until);
        if (k->stop)
            break;
        k->want_refresh = 0;
        k->started++;
        pthread_mutex_unlock(&k->mu);
        char err[256];
        int was_loaded = atomic_load(&k->url_loaded);
        int r = bnb__jwks_refresh(k, err, sizeof err);
        if (k->url && !was_loaded && atomic_load(&k->url_loaded))
            bnb__log(BNB_LOG_INFO, "JWKS %s loaded (%zu keys)", k->url, bnb__jwks_count(k));
        if (r != 0) {
            if (k->url && !atomic_load(&k->url_loaded))
                bnb__log(BNB_LOG_WARN, "not ready: no JWKS yet (%s); retrying", err);
            else
                bnb__log(BNB_LOG_WARN, "JWKS refresh failed, keeping the previous keys: %s", err);
        }
        pthread_mutex_lock(&k->mu);
        k->generation++;
        pthread_cond_broadcast(&k->cv);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* The host clock moved forward: let the refresh thread look at it again. */
static void on_clock_advance(void *ud)
{
    bnb_jwks_t *k = ud;
    pthread_mutex_lock(&k->mu);
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

int bnb__jwks_new(const bnb_jwks_config_t *cfg, bnb_jwks_t **out, char *errbuf, size_t errlen)
{
    bnb_jwks_t *k = NULL;
    pthread_condattr_t ca;
    int rc = BNB_ENOMEM;

    if (!cfg || !out || (!cfg->file && !cfg->url))
        return BNB_EINVAL;
    *out = NULL;
    k = calloc(1, sizeof *k);
    if (!k)
        return BNB_ENOMEM;
    k->refresh_s = cfg->refresh_s > 0 ? cfg->refresh_s : 300;
    k->kid_refresh_min_s = cfg->kid_refresh_min_s > 0 ? cfg->kid_refresh_min_s : 10;
    k->kid_wait_ms = cfg->kid_wait_ms == 0 ? 1000 : cfg->kid_wait_ms < 0 ? 0 : cfg->kid_wait_ms;
    k->fetch_timeout_ms = cfg->fetch_timeout_ms > 0 ? cfg->fetch_timeout_ms : 5000;
    pthread_rwlock_init(&k->lock, NULL);
    pthread_mutex_init(&k->refresh_mu, NULL);
    pthread_mutex_init(&k->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cv, &ca);
    pthread_condattr_destroy(&ca);
    if ((cfg->file && !(k->file = strdup(cfg->file))) || (cfg->url && !(k->url = strdup(cfg->url))))
        goto fail;
    if (k->url) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            goto fail;
        k->curl_inited = 1;
    }
    char why[256] = "";
    rc = bnb__jwks_refresh(k, why, sizeof why);
    if (rc && cfg->url_may_wait && (!k->file || k->file_keys) && !atomic_load(&k->url_loaded)) {
        /* only the URL failed: serve (not ready) and let the thread retry */
        bnb__log(BNB_LOG_WARN, "not ready: no JWKS yet (%s); retrying", why);
        rc = 0;
    }
    if (rc) {
        set_err(errbuf, errlen, "%s", why);
        goto fail;
    }
    if (pthread_create(&k->thread, NULL, refresh_main, k) != 0) {
        set_err(errbuf, errlen, "cannot start the JWKS refresh thread");
        rc = BNB_ENOMEM;
        goto fail;
    }
    k->thread_started = 1;
    k->clock_watched = bnb__clock_watch(on_clock_advance, k) == 0;
    *out = k;
    return 0;
fail:
    bnb__jwks_free(k);
    return rc;
}

void bnb__jwks_free(bnb_jwks_t *k)
{
    if (!k)
        return;
    if (k->clock_watched)
        bnb__clock_unwatch(on_clock_advance, k);
    if (k->thread_started) {
        pthread_mutex_lock(&k->mu);
        k->stop = 1;
        pthread_cond_broadcast(&k->cv);
        pthread_mutex_unlock(&k->mu);
        pthread_join(k->thread, NULL);
    }
    keyset_free(k->file_keys);
    keyset_free(k->url_keys);
    pthread_rwlock_destroy(&k->lock);
    pthread_mutex_destroy(&k->refresh_mu);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    if (k->curl_inited)
        curl_global_cleanup();
    free(k->file);
    free(k->url);
    free(k);
}

/* ---- lookup -------------------------------------------------------------- */

static int want_kty(const char *alg)
{
    if (alg && strcmp(alg, "RS256") == 0)
        return KTY_RSA;
    if (alg && strcmp(alg, "ES256") == 0)
        return KTY_EC;
    return 0;
}

typedef struct want {
    char **pem;
    size_t *pem_len;
    EVP_PKEY **pkey;
} want_t;

/* Under the read lock. */
static int lookup(bnb_jwks_t *k, const char *kid, int kty, const want_t *w)
{
    const jwk_t *hit = NULL;
    int wrong_type = 0, matches = 0;
    keyset_t *sets[2] = {k->file_keys, k->url_keys};

    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; sets[s] && i < sets[s]->n; i++) {
            const jwk_t *j = &sets[s]->keys[i];
            if (kid) {
                if (strcmp(j->kid, kid) != 0)
                    continue;
                if (j->kty != kty) {
                    wrong_type = 1;
                    continue;
                }
                if (!hit)
                    hit = j;
            } else if (j->kty == kty) {
                hit = j;
                matches++;
            }
        }
    }
    if (!kid && matches > 1)
        hit = NULL; /* ambiguous without a kid */
    if (!hit)
        return wrong_type ? BNB_EINVAL : BNB_ENOENT;
    if (w->pkey) {
        if (EVP_PKEY_up_ref(hit->pkey) != 1)
            return BNB_ENOMEM;
        *w->pkey = hit->pkey;
        return 0;
    }
    *w->pem = malloc(hit->pem_len + 1);
    if (!*w->pem)
        return BNB_ENOMEM;
    memcpy(*w->pem, hit->pem, hit->pem_len + 1);
    if (w->pem_len)
        *w->pem_len = hit->pem_len;
    return 0;
}

static int locked_lookup(bnb_jwks_t *k, const char *kid, int kty, const want_t *w)
{
    pthread_rwlock_rdlock(&k->lock);
    int rc = lookup(k, kid, kty, w);
    pthread_rwlock_unlock(&k->lock);
    return rc;
}

/* Threads that must never wait (the event loop) mark themselves; an unknown
 * kid there starts the refresh and leaves a note instead of waiting. */
static __thread int t_nowait;
static __thread bnb_jwks_t *t_pend_k;
static __thread unsigned long t_pend_target;

void bnb__jwks_never_wait_here(void)
{
    t_nowait = 1;
}

int bnb__jwks_take_pending(bnb_jwks_t **k, unsigned long *round)
{
    int had = t_pend_k != NULL;
    if (had && k != NULL)
        *k = t_pend_k, *round = t_pend_target;
    t_pend_k = NULL;
    return had;
}

int bnb__jwks_round_done(bnb_jwks_t *k, unsigned long round)
{
    pthread_mutex_lock(&k->mu);
    int done = k->stop || k->generation >= round;
    pthread_mutex_unlock(&k->mu);
    return done;
}

int bnb__jwks_kid_wait_ms(const bnb_jwks_t *k)
{
    return k->kid_wait_ms;
}

static int get(bnb_jwks_t *k, const char *kid, int kty, const want_t *w)
{
    int rc = locked_lookup(k, kid, kty, w);
    if (rc != BNB_ENOENT || !kid)
        return rc;

    /* Unknown kid: maybe the issuer rotated its keys. Ask the refresh thread
     * for one round (at most once per kid_refresh_min_s) and wait for it. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t now_ms = bnb__mono_ms();
    pthread_mutex_lock(&k->mu);
    if (k->have_last_kid_refresh && now_ms - k->last_kid_refresh_ms < (int64_t)k->kid_refresh_min_s * 1000) {
        pthread_mutex_unlock(&k->mu);
        return BNB_ENOENT;
    }
    k->last_kid_refresh_ms = now_ms;
    k->have_last_kid_refresh = 1;
    k->want_refresh = 1;
    unsigned long target = k->started + 1; /* a round begun after this request */
    pthread_cond_broadcast(&k->cv);
    if (t_nowait) {
        t_pend_k = k;
        t_pend_target = target;
    } else if (k->kid_wait_ms > 0) {
        struct timespec until = now;
        until.tv_sec += k->kid_wait_ms / 1000;
        until.tv_nsec += (long)(k->kid_wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!k->stop && k->generation < target) {
            if (pthread_cond_timedwait(&k->cv, &k->mu, &until) == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_unlock(&k->mu);
    return locked_lookup(k, kid, kty, w);
}

int bnb__jwks_get_pem(bnb_jwks_t *k, const char *kid, const char *alg, char **pem, size_t *pem_len)
{
    int kty = want_kty(alg);

    if (!k || !pem || !kty)
        return BNB_EINVAL;
    *pem = NULL;
    return get(k, kid, kty, &(want_t){.pem = pem, .pem_len = pem_len});
}

int bnb__jwks_get_key(bnb_jwks_t *k, const char *kid, const char *alg, EVP_PKEY **pkey)
{
    int kty = want_kty(alg);

    if (!k || !pkey || !kty)
        return BNB_EINVAL;
    *pkey = NULL;
    return get(k, kid, kty, &(want_t){.pkey = pkey});
}

int bnb__jwks_loaded(bnb_jwks_t *k)
{
    return k && (!k->url || atomic_load(&k->url_loaded));
}

unsigned long bnb__jwks_failures(bnb_jwks_t *k)
{
    return k ? atomic_load(&k->failures) : 0;
}

size_t bnb__jwks_count(bnb_jwks_t *k)
{
    size_t n = 0;
    if (!k)
        return 0;
    pthread_rwlock_rdlock(&k->lock);
    n = (k->file_keys ? k->file_keys->n : 0) + (k->url_keys ? k->url_keys->n : 0);
    pthread_rwlock_unlock(&k->lock);
    return n;
}

/* JSON Web Key Sets (RFC 7517) for RS256/ES256 verification (host-internal).
 *
 * Keys come from a file and/or a URL (Keycloak's
 * <issuer>/protocol/openid-connect/certs). A background thread re-reads both
 * every refresh_s; a failed fetch keeps the previous keys. The key set is
 * swapped under a rwlock, so lookups are thread-safe and never see a partial
 * set. Only kty RSA (>= 2048 bits) and kty EC crv P-256 keys meant for
 * signatures are kept; symmetric ("oct") keys are never taken from a JWKS. */
#ifndef BNB_JWKS_H
#define BNB_JWKS_H

#include <openssl/evp.h>
#include <stddef.h>

typedef struct bnb_jwks bnb_jwks_t;

typedef struct bnb_jwks_config {
    const char *file;      /* JWKS JSON file, or NULL */
    const char *url;       /* http(s) URL of a JWKS, or NULL */
    int refresh_s;         /* background refresh period; <= 0: 300 */
    int kid_refresh_min_s; /* an unknown kid triggers at most one refresh per this; <= 0: 10 */
    int kid_wait_ms;       /* how long the verifying thread waits for that refresh; 0: 1000, < 0: no wait */
    int fetch_timeout_ms;  /* whole HTTP fetch; <= 0: 5000 */
    int url_may_wait;      /* 1: a URL that cannot be loaded at start is no error: the set
                              starts without its keys (bnb__jwks_loaded() == 0) and the
                              refresh thread retries (1 s, doubling up to 30 s) until it loads */
} bnb_jwks_config_t;

/* Loads file and URL once (synchronously) and starts the refresh thread.
 * Fails, naming the file or URL in errbuf, when either cannot be loaded or
 * holds no usable key. */
int bnb__jwks_new(const bnb_jwks_config_t *cfg, bnb_jwks_t **out, char *errbuf, size_t errlen);
void bnb__jwks_free(bnb_jwks_t *k);

/* The public key for `kid` (NULL: the only key of that type) usable with
 * `alg` ("RS256" or "ES256"), as a PEM SubjectPublicKeyInfo in *pem (caller
 * frees with free()). 0; BNB_ENOENT unknown kid (after at most one rate-limited
 * refresh); BNB_EINVAL the key exists but is of another type/alg. Thread-safe. */
int bnb__jwks_get_pem(bnb_jwks_t *k, const char *kid, const char *alg, char **pem, size_t *pem_len);

/* Same lookup, as a parsed key: *pkey holds a reference, release it with
 * EVP_PKEY_free. Concurrent verifications may share it (OpenSSL 3). */
int bnb__jwks_get_key(bnb_jwks_t *k, const char *kid, const char *alg, EVP_PKEY **pkey);

/* The calling thread (the event loop) never waits in a lookup: an unknown
 * kid starts the refresh round and the lookup answers BNB_ENOENT at once,
 * leaving a note that bnb__jwks_take_pending returns (1, the key set and the
 * round to wait for; it clears the note; 0 when the last lookup started no
 * round). The caller parks the request and polls bnb__jwks_round_done
 * (1 once that round has completed) for at most bnb__jwks_kid_wait_ms. */
void bnb__jwks_never_wait_here(void);
int bnb__jwks_take_pending(bnb_jwks_t **k, unsigned long *round);
int bnb__jwks_round_done(bnb_jwks_t *k, unsigned long round);
int bnb__jwks_kid_wait_ms(const bnb_jwks_t *k);

/* Re-read file and URL now, in the calling thread. 0 when every source
 * loaded; otherwise the first error (the other sources are still swapped in). */
int bnb__jwks_refresh(bnb_jwks_t *k, char *errbuf, size_t errlen);

/* Number of usable keys currently loaded. */
size_t bnb__jwks_count(bnb_jwks_t *k);

/* Parse a JWKS document (JSON text) as a refresh would: 0 and the number of
 * usable keys, or the error with the reason in errbuf; for tests and fuzzing. */
int bnb__jwks_parse_text(const char *text, size_t len, size_t *nkeys, char *errbuf, size_t errlen);

/* 1 once every configured source has loaded at least once (later failures
 * keep the last good keys and do not change this). */
int bnb__jwks_loaded(bnb_jwks_t *k);

/* Refresh rounds (background, unknown kid or at start) that failed to load a source. */
unsigned long bnb__jwks_failures(bnb_jwks_t *k);

/* Parse one JWK object (JSON text) into a PEM public key; for tests and
 * tools. 0, or BNB_EINVAL with the reason in errbuf. *alg gets "RS256" or "ES256". */
int bnb__jwk_to_pem(const char *jwk_json, char **pem, const char **alg, char *errbuf, size_t errlen);

#endif

/* Identity: JWT verification and minting (host-internal). */
#ifndef BNB_AUTH_H
#define BNB_AUTH_H

#include <stddef.h>

typedef struct bnb_auth bnb_auth_t;

typedef struct bnb_auth_config {
    const char *hs256_key_file; /* shared secret file (dev key); created with 32 random
                                   bytes (hex) when `create_dev_key` and missing */
    int create_dev_key;
    const char *jwks_file;      /* RS256/ES256 public keys (JWKS JSON), or NULL */
    const char *jwks_url;       /* refreshed every jwks_refresh_s, or NULL */
    int jwks_refresh_s;         /* default 300 */
    const char *issuer;         /* required `iss`; default "bearbnb" */
    const char *audience;       /* required in `aud`; default "bearbnb" */
    int leeway_s;               /* clock skew for exp/nbf; default 30 */
} bnb_auth_config_t;

typedef struct bnb_identity {
    char sub[128];
    char role[16]; /* "host", "guest" or "" */
} bnb_identity_t;

/* errbuf names the key file / URL that failed. */
int bnb__auth_new(const bnb_auth_config_t *cfg, bnb_auth_t **out, char *errbuf, size_t errlen);
void bnb__auth_free(bnb_auth_t *a);

/* 1 when tokens can be verified: no JWKS URL, or it has loaded once (a JWKS
 * URL that is down at start leaves this 0 while its thread retries). */
int bnb__auth_ready(bnb_auth_t *a);
/* The JWKS in use: keys loaded now and failed refresh rounds so far; -1 when
 * no JWKS is configured. */
int bnb__auth_jwks_stats(bnb_auth_t *a, size_t *keys, unsigned long *failures);

/* Verify a compact JWT (without "Bearer "). 0 and *id filled, or -1 with a
 * short human reason in `why` (e.g. "token expired", "bad signature"). Thread-safe. */
int bnb__auth_verify(bnb_auth_t *a, const char *token, bnb_identity_t *id, char *why, size_t whylen);

/* Mint an HS256 token with sub, role, realm_access.roles, iss, aud, iat, nbf,
 * exp = now + ttl_s. *out: caller frees with free(). */
int bnb__auth_mint(bnb_auth_t *a, const char *sub, const char *role, long ttl_s, char **out);

#endif

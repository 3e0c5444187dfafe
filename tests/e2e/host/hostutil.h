/* Local helpers for the host's end-to-end tests (what the shared harness
 * does not do): requests with a chosen HTTP version (h2c Upgrade, TLS with
 * ALPN) and every response header kept; running the program to completion
 * with stdout and stderr captured separately; a self-signed certificate. */
#ifndef BNB_E2E_HOSTUTIL_H
#define BNB_E2E_HOSTUTIL_H

#include <stddef.h>

typedef enum {
    HU_H1 = 1,     /* HTTP/1.1 */
    HU_H2_PRIOR,   /* h2c with prior knowledge */
    HU_H2_UPGRADE, /* HTTP/1.1 request with Upgrade: h2c */
    HU_H2_TLS,     /* https with ALPN (h2 offered first) */
    HU_H1_TLS      /* https, HTTP/1.1 only */
} hu_proto_t;

typedef struct hu_resp {
    long status;
    long http_version; /* CURL_HTTP_VERSION_1_1 (2), _2_0 (3) ... as curl reports */
    int curl_code;
    char error[256];
    char *headers; /* raw header block(s), lower-cased names not guaranteed */
    char *body;
    size_t body_len;
} hu_resp_t;

/* One request on a fresh connection to 127.0.0.1:port. `headers` is a
 * NULL-terminated list of "Name: value" or NULL. `cafile` for HU_*_TLS (the
 * certificate is verified against it, host name "localhost"). 0 when a
 * response arrived. */
int hu_request(int port, hu_proto_t proto, const char *cafile, const char *method, const char *path,
               const char *const *headers, const char *body, hu_resp_t *out);
void hu_resp_free(hu_resp_t *r);
/* Value of response header `name` (case-insensitive) from the last header
 * block, copied into out; 0 when found. */
int hu_header(const hu_resp_t *r, const char *name, char *out, size_t outlen);

typedef struct hu_run {
    int status; /* exit status, 128+signal, or -1 on timeout (killed) */
    char *out;  /* stdout, NUL-terminated */
    char *err;  /* stderr, NUL-terminated */
} hu_run_t;

/* Run argv (argv[0] is the program path) with the environment plus `env`
 * ("K=V" overrides, or "K" alone to remove K), wait up to timeout_ms. */
int hu_run(const char *const *argv, const char *const *env, int timeout_ms, hu_run_t *out);
void hu_run_free(hu_run_t *r);

/* Write a self-signed P-256 certificate for CN/SAN localhost + 127.0.0.1 and
 * its key (PEM) to the two paths. 0 or -1. */
int hu_make_cert(const char *cert_path, const char *key_path);

/* Copy a file (mode 0644). 0 or -1. */
int hu_copy(const char *from, const char *to);
/* Read a whole file; caller frees. NULL on error. */
char *hu_slurp(const char *path);
/* Remove a directory tree (rm -rf). */
void hu_rmtree(const char *dir);

#endif

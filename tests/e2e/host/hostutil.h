/* Local helpers for the host's end-to-end tests (what the shared harness
 * does not do): requests with a chosen HTTP version (h2c Upgrade, TLS with
 * ALPN) and every response header kept; running the program to completion
 * with stdout and stderr captured separately; a self-signed certificate. */
#ifndef BNB_E2E_HOSTUTIL_H
#define BNB_E2E_HOSTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

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

/* ---- nghttp (nghttp2's HTTP/2 client, Debian package nghttp2-client) ---- */

/* POST `file` (application/json, bearer `token`) to `url` with `nghttp -v`
 * and `flag` (NULL, "--no-content-length", "-u" for an h2c Upgrade...); its
 * whole output (frames and body; caller frees), NULL when it cannot run or
 * fails. https URLs: nghttp does not check the certificate. */
char *hu_nghttp_post(const char *url, const char *token, const char *file, const char *flag);
/* 1 when that output holds a 413 problem+json answer followed by
 * RST_STREAM(NO_ERROR), and no REFUSED_STREAM. */
int hu_nghttp_got_413(const char *out);
/* The received frames and error codes of that output, for a failure message. */
void hu_nghttp_summary(const char *out, char *sum, size_t cap);

/* ---- a running all-in-one host and a host's token (the usual fixture) ---- */

typedef struct hu_fx {
    e2e_host_t *h;
    char *host_tok; /* bearer token of "alice", role host */
} hu_fx_t;

/* Start an all-in-one host with `env` (NULL or "K=V" list); NULL on failure. */
hu_fx_t *hu_fx_start(const char *const *env);
/* Stop it: 0 when it exited cleanly (23 = an ASan/LSan report). */
int hu_fx_stop(hu_fx_t *f);

/* ---- raw sockets ------------------------------------------------------------ */

/* (connecting, sending, reading: e2e_raw_* in the harness) */
/* How often needle occurs in hay. */
int hu_count(const char *hay, const char *needle);
/* Whether needle (n bytes) occurs in the n_hay bytes of hay. */
int hu_contains(const char *hay, size_t n_hay, const char *needle, size_t n);
/* Resident memory of a process (kB), -1 when unknown. */
long hu_rss_kb(pid_t pid);

/* ---- HTTP/2 spoken by hand: frames, HPACK without Huffman ----------------------
 * For what no client library sends (resets right after HEADERS, HPACK
 * bombs). Buffers grow as needed (abort on out of memory); free(b.p). */

typedef struct hu_h2buf {
    unsigned char *p;
    size_t len, cap;
} hu_h2buf_t;

void hu_h2_put(hu_h2buf_t *b, const void *d, size_t n);
void hu_h2_byte(hu_h2buf_t *b, unsigned v);
/* HPACK string literal, no Huffman */
void hu_h2_str(hu_h2buf_t *b, const char *s, size_t n);
/* HPACK literal header field without indexing, new name */
void hu_h2_lit(hu_h2buf_t *b, const char *name, const char *value);
/* one frame: 9-byte header and payload */
void hu_h2_frame(hu_h2buf_t *out, unsigned type, unsigned flags, uint32_t sid, const void *payload, size_t n);
/* a header block as HEADERS + CONTINUATION frames of at most 16 KiB */
void hu_h2_headers(hu_h2buf_t *out, uint32_t sid, const hu_h2buf_t *block, int end_stream);
/* RST_STREAM(CANCEL) */
void hu_h2_rst(hu_h2buf_t *out, uint32_t sid);
/* the client preface and an empty SETTINGS frame */
void hu_h2_preface(hu_h2buf_t *out);
/* :method, :scheme http, :path, :authority, and authorization / JSON content-type when asked */
void hu_h2_req_block(hu_h2buf_t *b, const char *method, const char *path, const char *token, int json);

#endif

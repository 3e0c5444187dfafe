/* A tiny HTTP/1.1 client over a plain socket, for the web app's e2e tests:
 * the request goes out byte for byte as written (no URL normalisation, so
 * traversal attempts reach the server as sent), every response header is
 * kept, and a streaming answer (Server-Sent Events) can be read piece by piece. */
#ifndef BNB_E2E_RAWHTTP_H
#define BNB_E2E_RAWHTTP_H

#include <stddef.h>

typedef struct raw_resp {
    int status;
    char *head; /* the status line and headers, NUL-terminated */
    char *body; /* NUL-terminated (body_len bytes before it) */
    size_t body_len;
} raw_resp_t;

/* Connect to 127.0.0.1:port; the fd or -1. */
int raw_connect(int port);
/* Send `req` (a whole request, "GET / HTTP/1.1\r\n...\r\n\r\n") on a fresh
 * connection and read the answer until the connection closes (send
 * "Connection: close"). A HEAD answer has no body. 0 or -1. */
int raw_request(int port, const char *req, raw_resp_t *out);
/* GET/HEAD `path` with extra header lines ("Name: v\r\n..." or NULL). */
int raw_get(int port, const char *method, const char *path, const char *extra, raw_resp_t *out);
void raw_resp_free(raw_resp_t *r);
/* Value of header `name` (case-insensitive), copied; 0 when present. */
int raw_header(const raw_resp_t *r, const char *name, char *out, size_t outlen);
/* Read from fd into buf until `needle` appears in what was read so far or
 * timeout_ms passes. Returns bytes in buf (NUL-terminated), or -1 on error;
 * *found says whether the needle came. */
long raw_read_until(int fd, char *buf, size_t cap, size_t have, const char *needle, int timeout_ms, int *found);

#endif

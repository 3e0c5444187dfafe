/* The edge (host-internal): routes by path prefix to upstream services,
 * signs the verified identity it forwards, and lets a service refuse
 * requests that did not come through it. */
#ifndef BNB_GATEWAY_H
#define BNB_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

struct bnb_host;
struct bnb_req;

/* Parse gateway.routes ("/rooms=http://room:8082,/payments=h2c://payment:8081")
 * and read gateway.secret_file. 0 or -1 with err naming the key. */
int bnb__gateway_init(struct bnb_host *h, char *err, size_t errlen);
void bnb__gateway_free(void);
/* Upstream base URL for a path ("http://room:8082"), its index, or NULL. */
const char *bnb__gateway_route(const char *path, size_t len, int *index, int *h2c);
/* The secret is configured (the edge signs; services may enforce). */
int bnb__gateway_has_secret(void);
/* Who signs: the edge forwarding a client's request, or a service calling
 * another (host->call); only the latter may reach BNB_ROLE_SERVICE routes. */
typedef enum { BNB_SIGNED_EDGE = 1, BNB_SIGNED_SERVICE = 2 } bnb_signer_t;

/* Header value for X-Bnb-Gateway: "v2;by=edge|svc;ts=<s>;sig=<b64url>" over
 * the signer, method, path (with query), request id, user, role, time and the
 * SHA-256 of the body (body_len 0: the empty body). Signed with
 * gateway.secret_file. */
void bnb__gateway_sign(bnb_signer_t by, const char *method, const char *path, const char *request_id, const char *user,
                       const char *role, const void *body, size_t body_len, int64_t now_s, char *out, size_t outlen);
/* The signer when `header` is a valid signature made within 60 s of now_s
 * with gateway.secret_file or gateway.secret_previous_file, else -1. */
int bnb__gateway_verify(const char *header, const char *method, const char *path, const char *request_id,
                        const char *user, const char *role, const void *body, size_t body_len, int64_t now_s);
/* Forward r (method, path, query, headers, raw body) to `base`; fills the
 * raw answer of r, or hands r a stream (r->stream) when the answer is
 * text/event-stream or a 2xx of unknown length: its transfer then goes on in
 * a thread of its own, each piece queued as it comes (gateway.max_streams at
 * once, beyond that 503). timeout_ms: until the answer is complete, for a
 * stream until its head. Runs on a worker thread. */
void bnb__proxy_run(struct bnb_req *r, const char *base, int h2c, long timeout_ms);
/* An edge's readiness: a thread asks every upstream's GET /readyz once a
 * second (bnb__gateway_ready_start, after init; bnb__gateway_free stops it).
 * bnb__gateway_ready: 1 when there are no routes, or when at least one
 * upstream answered 200 in the last round (never waits); *nready (may be
 * NULL): how many did. */
int bnb__gateway_ready_start(void);
int bnb__gateway_ready(int *nready);
/* Streamed answers being relayed now (/metrics). */
int bnb__proxy_streams_open(void);

#endif

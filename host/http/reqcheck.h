/* Checks on what a client sends, before anything is dispatched (pure: libc
 * only, so the unit tests and the fuzz targets link it alone). */
#ifndef BNB_REQCHECK_H
#define BNB_REQCHECK_H

#include <stddef.h>

/* 1 when the Content-Type value `v` (n bytes, not NUL-terminated) names a
 * JSON media type: type "application", subtype "json" or "<x>+json"
 * (case-insensitive, RFC 9110 §8.3.1), optionally followed by parameters.
 * Only the type/subtype counts: "text/plain; x=application/json" is not JSON. */
int bnb__media_type_is_json(const char *v, size_t n);

/* 1 when an X-Correlation-Id value may go into envelopes and log lines:
 * 1..63 bytes of A-Z a-z 0-9 and . _ : - */
int bnb__correlation_id_ok(const char *v, size_t n);

/* Checks every name and value of a query string (without '?', n bytes) for
 * valid percent-encoding (%XX with hex digits, never %00). 0 when all are
 * valid; -1 with the offending parameter's name (as sent, control bytes and
 * quotes replaced by '?', cut to namelen - 1) in `name`. */
int bnb__query_check(const char *q, size_t n, char *name, size_t namelen);

/* A copy of the n bytes of a request target's path or query as a URL may
 * carry them onwards (the edge forwards what it received, still encoded):
 * bytes a URL may not hold (controls, space, non-ASCII, " # < > \ ^ ` { | })
 * percent-encoded, every other byte, existing %XX included, as it is. Decoding
 * the copy gives what decoding the original gives. Caller frees; NULL when out
 * of memory. */
char *bnb__uri_forwardable(const char *s, size_t n);

#endif

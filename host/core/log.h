/* Structured logs: one JSON object per line on stderr (host-internal). */
#ifndef BNB_LOG_H
#define BNB_LOG_H

#include <stdarg.h>

typedef enum { BNB_LOG_DEBUG = 0, BNB_LOG_INFO, BNB_LOG_WARN, BNB_LOG_ERROR } bnb_log_level_t;

/* Per-thread execution context: what the current request/event is. Set by
 * the host around every handler call, read by logs, events and calls. */
typedef struct bnb_exec {
    const char *plugin; /* borrowed */
    char request_id[64];
    char correlation_id[64];
    char traceparent[64];
    char event_id[64];       /* event being consumed, or "" */
    char reject_reason[256]; /* set by host->event_reject */
    const char *user;        /* borrowed identity of the request */
    const char *role;
    const char *bearer; /* raw token, forwarded by calls */
    int no_cache;       /* the answer may depend on more than the path, query and store (http read cache) */
} bnb_exec_t;

extern __thread bnb_exec_t *bnb__exec;

void bnb__log_set_level(bnb_log_level_t level);
int bnb__log_parse_level(const char *s, bnb_log_level_t *out);
/* `fields` is NULL or extra JSON members already formatted: "\"k\":1,\"s\":\"x\"". */
void bnb__logv(bnb_log_level_t level, const char *plugin, const char *fields, const char *fmt, va_list ap);
void bnb__log(bnb_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bnb__logf(bnb_log_level_t level, const char *fields, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif

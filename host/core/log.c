#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

__thread bnb_exec_t *bnb__exec;

static bnb_log_level_t min_level = BNB_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void bnb__log_set_level(bnb_log_level_t level)
{
    min_level = level;
}

int bnb__log_parse_level(const char *s, bnb_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (bnb_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void bnb__logv(bnb_log_level_t level, const char *plugin, const char *fields, const char *fmt, va_list ap)
{
    if (level < min_level)
        return;
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    json_t *m = json_string(msg);
    if (m == NULL) /* not UTF-8: keep the line, drop the text */
        m = json_string("(message not UTF-8)");
    char *qmsg = json_dumps(m, JSON_ENCODE_ANY);
    json_decref(m);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[40];
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));

    char ctx[640] = "";
    size_t off = 0;
    bnb_exec_t *ex = bnb__exec;
    if (plugin == NULL && ex != NULL)
        plugin = ex->plugin;
    if (plugin != NULL)
        off += snprintf(ctx + off, sizeof(ctx) - off, ",\"plugin\":\"%s\"", plugin);
    if (ex != NULL && ex->request_id[0] && off < sizeof(ctx))
        off += snprintf(ctx + off, sizeof(ctx) - off, ",\"requestId\":\"%s\"", ex->request_id);
    if (ex != NULL && ex->correlation_id[0] && off < sizeof(ctx))
        off += snprintf(ctx + off, sizeof(ctx) - off, ",\"correlationId\":\"%s\"", ex->correlation_id);
    if (ex != NULL && ex->traceparent[0] && off < sizeof(ctx))
        off += snprintf(ctx + off, sizeof(ctx) - off, ",\"traceparent\":\"%s\"", ex->traceparent);
    if (ex != NULL && ex->event_id[0] && off < sizeof(ctx))
        off += snprintf(ctx + off, sizeof(ctx) - off, ",\"eventId\":\"%s\"", ex->event_id);

    /* one write per line so lines from threads never interleave */
    flockfile(stderr);
    fprintf(stderr, "{\"time\":\"%s\",\"level\":\"%s\"%s%s%s,\"msg\":%s}\n", ts, level_names[level], ctx,
            fields ? "," : "", fields ? fields : "", qmsg ? qmsg : "\"\"");
    fflush(stderr);
    funlockfile(stderr);
    free(qmsg);
}

void bnb__log(bnb_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bnb__logv(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

void bnb__logf(bnb_log_level_t level, const char *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bnb__logv(level, NULL, fields, fmt, ap);
    va_end(ap);
}

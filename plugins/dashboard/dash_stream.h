/* GET /dashboard/stream: Server-Sent Events of the read model's changes
 * (issue 14). Every committed change of a room summary or a reservation view
 * is recorded in a change log in the dashboard's own store (collection
 * `changes`, one document per change, id = its sequence number, the newest
 * `stream_retention` kept); one pump thread per process reads the log in
 * order and sends each change to the open streams that may see it. */
#ifndef DASH_STREAM_H
#define DASH_STREAM_H

#include "bnb_plugin.h"

/* Config keys of the stream (in the plugin's config map). */
#define DASH_STREAM_CONFIG                                                                                             \
    {"stream_max", BNB_CFG_INT, "1000", "open /dashboard/stream answers per process (more: 503)"},                     \
        {"stream_max_per_user", BNB_CFG_INT, "4", "open /dashboard/stream answers per signed-in user (more: 429)"},    \
        {"stream_retention", BNB_CFG_INT, "1000",                                                                      \
         "changes kept in the change log for Last-Event-ID resumes (an older id gets a reset event)"},                 \
        {"stream_heartbeat_ms", BNB_CFG_INT, "15000", "comment line sent on every open stream this often"},            \
    {                                                                                                                  \
        "stream_poll_ms", BNB_CFG_INT, "250",                                                                          \
            "how often the change log is read for changes other processes (replicas) recorded"                         \
    }

/* init: read the keys, register the route (a host with streams, ABI 1.3). */
int dash_stream_init(bnb_ctx_t *ctx, const bnb_host_api_t *host, bnb_store_t *st);
/* start: the pump thread. */
int dash_stream_start(bnb_ctx_t *ctx);
/* stop: end every stream, join the pump. */
void dash_stream_stop(void);

/* After a commit (worker thread): record a changed summary (the document as
 * committed; skipped while the room is not listed) or a changed reservation
 * view (its room's host read from the summary, so that host may see it). */
void dash_stream_room_changed(bnb_store_t *st, const json_t *sum);
void dash_stream_view_changed(bnb_store_t *st, const json_t *view);

#endif

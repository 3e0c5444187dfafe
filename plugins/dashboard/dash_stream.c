/*
 * GET /dashboard/stream (issue 14): the dashboard's changes as Server-Sent
 * Events, through the host's streamed answers (plugin ABI 1.3).
 *
 * The change log. Every committed change of a listed room summary or of a
 * reservation view is recorded after its commit in the collection `changes`
 * of the dashboard's own store, a ring of stream_retention slots: number N
 * lives in the slot with id N mod stream_retention (decimal), the body
 * carrying N. A writer reads the slot and replaces it by compare-and-swap on
 * its version (expect_version 0 for a slot never written), only when it holds
 * an older number: so a number is taken once (a writer that finds it taken,
 * or loses the swap, tries the next: numbers become visible in order,
 * whichever process of the service writes them). Each record carries what the
 * privacy rules need: kind ("room" or "reservation"), the room, its host, the
 * reservation's guest, and the public document. Retention is bounded and
 * nothing is deleted: number N overwrites N - stream_retention, so the log
 * never holds more than stream_retention documents, tombstones included (the
 * first log, one document per number deleted behind it, left one tombstone
 * per change ever made: on FerretDB, which scans for every query, each write
 * cost more the longer the service had run); a hint
 * document (`changes_head/head`, every 16 numbers) lets a new process find the
 * newest number without scanning. Every read is by id: the cost of a change,
 * a poll or a resume does not grow with the log's history.
 *
 * The pump. One thread per process reads the log in order (by id, from the
 * newest it has seen; woken at once by a local commit, else every
 * stream_poll_ms for what other processes wrote), keeps the last 1024 records
 * in memory, and writes each one to every open stream allowed to see it:
 * room summaries to everyone, a reservation view only to the room's host and
 * the reservation's guest. A new stream with Last-Event-ID (or ?lastEventId=)
 * gets the records after that id first (from memory, else from the log); an
 * id older than the log keeps, or newer than its newest, gets a `reset` event
 * instead (reload, then continue). Every stream then gets a `ready` event
 * carrying the newest id. A comment line every stream_heartbeat_ms; streams
 * whose client went away are closed on the next round. Writes never block
 * (the host queues them and drops a client that lets stream_buffer fill up).
 *
 * Limits: stream_max open streams per process (503), stream_max_per_user per
 * signed-in user (429), problem+json with Retry-After.
 *
 * A change committed just before a crash, whose record was not written yet,
 * is not in the log: a client sees that room again at its next change or
 * reload (the read model itself is complete; only the live notice is lost).
 */
#include "dash_stream.h"

#include "dash_merge.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHANGES   "change_ring" /* the slots; "changes" was the first, unbounded log */
#define HINT_COLL "changes_head"
#define HINT_ID   "head"
#define RING      1024
#define GAP_MS    2000

enum { K_ROOM = 1, K_RES = 2 };

static const bnb_host_api_t *host;
static bnb_ctx_t *g_ctx;
static bnb_store_t *g_st;
static long g_max, g_max_user, g_retention, g_hb_ms, g_poll_ms;
static atomic_int g_enabled;
static atomic_llong g_alloc; /* the newest number this process knows to exist */

typedef struct sub {
    bnb_stream_t *s;
    char user[128]; /* "" when anonymous */
    long long last; /* Last-Event-ID, or -1; then the last record it was given */
    int replaying;  /* still catching up to the head: `ready` when it gets there */
    struct sub *next;
} sub_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv;
static sub_t *g_pending, *g_active; /* under g_mu */
static long g_open;                 /* both lists, under g_mu */
static int g_stop, g_kick;          /* under g_mu */
static pthread_t g_thread;
static int g_thread_started;

/* pump thread only */
typedef struct rec {
    long long seq;
    int kind;
    char *host, *guest;
    char *text; /* the whole event */
} rec_t;
static rec_t g_ring[RING];
static long long g_head; /* the newest number sent */

static long cfg_long(bnb_ctx_t *ctx, const char *key, long def, long min)
{
    const char *v = host->config(ctx, key);
    char *end = NULL;
    long x = v && *v ? strtol(v, &end, 10) : def;
    if (end != NULL && *end)
        x = def;
    return x < min ? min : x;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kick(void)
{
    pthread_mutex_lock(&g_mu);
    g_kick = 1;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void alloc_raise(long long seq)
{
    long long cur = atomic_load(&g_alloc);
    while (cur < seq && !atomic_compare_exchange_weak(&g_alloc, &cur, seq))
        ;
}

/* ---- the change log (worker threads) ------------------------------------ */

static void slot_id(long long seq, char id[32])
{
    snprintf(id, 32, "%lld", seq % g_retention);
}

/* Record number `seq` from its slot: 0 with *body, BNB_ENOENT when the slot
 * holds another number (not written yet, or overwritten), or an error. */
static int slot_get(long long seq, json_t **body)
{
    char id[32];
    int64_t version;
    slot_id(seq, id);
    *body = NULL;
    int rc = host->store_get(g_st, CHANGES, id, body, &version);
    if (rc == 0 && (long long)json_integer_value(json_object_get(*body, "seq")) != seq) {
        json_decref(*body);
        *body = NULL;
        rc = BNB_ENOENT;
    }
    return rc;
}

static void record(bnb_store_t *st, int kind, const char *room, const char *host_id, const char *guest, json_t *data)
{
    json_t *body = json_pack("{s:I, s:s, s:s?, s:s?, s:s?, s:o, s:I}", "seq", (json_int_t)0, "kind",
                             kind == K_ROOM ? "room" : "reservation", "room", room, "host", host_id, "guest", guest,
                             "data", data, "at", (json_int_t)host->now_ms());
    if (body == NULL)
        return;
    long long seq = atomic_load(&g_alloc);
    int rc = BNB_EEXIST;
    char id[32];
    for (int i = 0; i < 256 && rc == BNB_EEXIST; i++) {
        seq++;
        json_t *cur = NULL;
        int64_t version = 0;
        slot_id(seq, id);
        rc = host->store_get(st, CHANGES, id, &cur, &version);
        long long held = rc == 0 ? (long long)json_integer_value(json_object_get(cur, "seq")) : 0;
        json_decref(cur);
        if (rc == BNB_ENOENT) {
            version = 0;
        } else if (rc != 0) {
            break;
        } else if (held >= seq) {
            rc = BNB_EEXIST; /* taken (by another process): the next number */
            continue;
        }
        json_object_set_new(body, "seq", json_integer(seq));
        bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = CHANGES, .id = id, .expect_version = version, .body = body};
        rc = host->store_commit(st, &w, NULL, 0, NULL, NULL);
        if (rc == BNB_EEXIST)
            seq--; /* lost the swap: read the slot again */
    }
    json_decref(body);
    if (rc != 0) {
        host->log(g_ctx, "warn", "dashboard stream: a change of room %s is not in the change log (%d)",
                  room ? room : "?", rc);
        return;
    }
    alloc_raise(seq);
    if (seq % 16 == 0) {
        json_t *hint = json_pack("{s:I}", "seq", (json_int_t)seq);
        bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = HINT_COLL, .id = HINT_ID, .expect_version = -1, .body = hint};
        if (hint != NULL)
            host->store_commit(st, &w, NULL, 0, NULL, NULL);
        json_decref(hint);
    }
    kick();
}

void dash_stream_room_changed(bnb_store_t *st, const json_t *sum)
{
    if (!atomic_load(&g_enabled) || sum == NULL || !dash_sum_has_room(sum))
        return;
    json_t *pub = dash_sum_public(sum);
    if (pub == NULL)
        return;
    record(st, K_ROOM, json_string_value(json_object_get(pub, "id")), json_string_value(json_object_get(sum, "hostId")),
           NULL, pub);
}

void dash_stream_view_changed(bnb_store_t *st, const json_t *view)
{
    if (!atomic_load(&g_enabled) || view == NULL)
        return;
    json_t *pub = dash_view_public(view);
    if (pub == NULL)
        return;
    const char *room = json_string_value(json_object_get(pub, "roomId"));
    json_t *sum = NULL;
    int64_t version;
    const char *host_id = NULL;
    if (room != NULL && host->store_get(st, "summaries", room, &sum, &version) == 0)
        host_id = json_string_value(json_object_get(sum, "hostId"));
    record(st, K_RES, room, host_id, json_string_value(json_object_get(pub, "guestId")), pub);
    json_decref(sum);
}

/* ---- the pump (its own thread) --------------------------------------------- */

static void rec_clear(rec_t *r)
{
    free(r->host);
    free(r->guest);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

/* Record `seq` from memory or the log: 0, BNB_ENOENT (not there), or an error. */
static int rec_load(long long seq, rec_t *out, int *from_ring)
{
    rec_t *r = &g_ring[seq % RING];
    *from_ring = 0;
    if (r->seq == seq && r->text != NULL) {
        *out = *r;
        *from_ring = 1;
        return 0;
    }
    json_t *body = NULL;
    int rc = slot_get(seq, &body);
    if (rc != 0)
        return rc;
    const char *kind = json_string_value(json_object_get(body, "kind"));
    char *data = json_dumps(json_object_get(body, "data"), JSON_COMPACT);
    memset(out, 0, sizeof(*out));
    out->seq = seq;
    out->kind = kind && strcmp(kind, "room") == 0 ? K_ROOM : K_RES;
    const char *hs = json_string_value(json_object_get(body, "host"));
    const char *gs = json_string_value(json_object_get(body, "guest"));
    out->host = hs ? strdup(hs) : NULL;
    out->guest = gs ? strdup(gs) : NULL;
    size_t n = data ? strlen(data) + 96 : 0;
    out->text = data ? malloc(n) : NULL;
    if (out->text != NULL)
        snprintf(out->text, n, "id: %lld\nevent: %s\ndata: %s\n\n", seq, out->kind == K_ROOM ? "room" : "reservation",
                 data);
    free(data);
    json_decref(body);
    if (out->text == NULL) {
        rec_clear(out);
        return BNB_ENOMEM;
    }
    return 0;
}

static int visible(const rec_t *r, const sub_t *s)
{
    if (r->kind == K_ROOM)
        return 1;
    return s->user[0] && ((r->host && strcmp(r->host, s->user) == 0) || (r->guest && strcmp(r->guest, s->user) == 0));
}

static int put(sub_t *s, const char *text)
{
    return host->stream_write(s->s, text, strlen(text));
}

static void send_reset(sub_t *s, const char *why)
{
    char t[256];
    snprintf(t, sizeof(t), "id: %lld\nevent: reset\ndata: {\"reason\":\"%s\",\"id\":\"%lld\"}\n\n", g_head, why,
             g_head);
    put(s, t);
    host->count(g_ctx, "stream_resets", 1);
}

static void send_ready(sub_t *s)
{
    char t[128];
    snprintf(t, sizeof(t), "id: %lld\nevent: ready\ndata: {\"id\":\"%lld\"}\n\n", g_head, g_head);
    put(s, t);
    s->replaying = 0;
}

/* A new stream: a fresh one starts at the head; one with an id newer than
 * the head (another log) gets a reset; one with an older id catches up. */
static void begin(sub_t *s)
{
    put(s, "retry: 3000\n\n");
    if (s->last < 0 || s->last > g_head) {
        if (s->last > g_head)
            send_reset(s, "unknown event id");
        s->last = g_head;
        send_ready(s);
        return;
    }
    s->replaying = 1;
}

/* Bytes a stream may have queued and still be given more records: records
 * catching up go out as the client takes them, never more than this ahead
 * (a resume of the whole log must not fill the host's buffer at once). */
#define AHEAD 2048

/* Give `s` the records after its last one, as far as the client keeps up:
 * 0, or -1 when the stream has ended. */
static int advance(sub_t *s)
{
    for (int n = 0; n < 256 && s->last < g_head; n++) {
        int q = host->stream_write(s->s, NULL, 0);
        if (q < 0)
            return -1;
        if (s->replaying && q >= AHEAD)
            return 0; /* live records go out at once: a slow client is dropped by the host */
        rec_t r;
        int ring;
        /* older than the log keeps (the memory may still have it) */
        int rc = s->last + 1 <= g_head - g_retention ? BNB_ENOENT : rec_load(s->last + 1, &r, &ring);
        if (rc != 0) {
            send_reset(s, rc == BNB_ENOENT ? "event id too old" : "change log unavailable");
            s->last = g_head;
            s->replaying = 1;
            break;
        }
        int wrc = visible(&r, s) ? put(s, r.text) : 0;
        if (!ring)
            rec_clear(&r);
        if (wrc != 0)
            return -1;
        s->last++;
    }
    if (s->replaying && s->last == g_head)
        send_ready(s);
    return host->stream_write(s->s, NULL, 0) < 0 ? -1 : 0;
}

/* The newest number: the hint, then forward by id. */
static long long find_head(void)
{
    json_t *hint = NULL;
    int64_t version;
    long long h = 0;
    if (host->store_get(g_st, HINT_COLL, HINT_ID, &hint, &version) == 0)
        h = (long long)json_integer_value(json_object_get(hint, "seq"));
    json_decref(hint);
    for (;;) {
        json_t *b = NULL;
        if (slot_get(h + 1, &b) != 0)
            break;
        json_decref(b);
        h++;
    }
    return h;
}

static void close_sub(sub_t *s)
{
    host->stream_close(s->s);
    free(s);
}

static void *pump(void *arg)
{
    (void)arg;
    g_head = find_head();
    alloc_raise(g_head);
    int64_t next_hb = mono_ms() + g_hb_ms, gap_since = 0, next_hint = 0;
    int behind = 0;
    pthread_mutex_lock(&g_mu);
    while (!g_stop) {
        if (!g_kick && !g_pending) {
            long wait = behind ? 5 : g_poll_ms;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += (wait % 1000) * 1000000L;
            ts.tv_sec += wait / 1000 + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&g_cv, &g_mu, &ts);
        }
        g_kick = 0;
        if (g_stop)
            break;
        sub_t *fresh = g_pending;
        g_pending = NULL;
        pthread_mutex_unlock(&g_mu);

        /* new records, in order, into memory */
        for (int n = 0; n < 1000; n++) {
            rec_t r;
            int ring;
            int rc = rec_load(g_head + 1, &r, &ring);
            if (rc == BNB_ENOENT) {
                /* a number taken but never written (its writer failed)? skip it
                 * once something after it exists and it stayed missing */
                long long known = atomic_load(&g_alloc);
                int64_t now = mono_ms();
                if (known <= g_head + 1 && now >= next_hint) {
                    json_t *hint = NULL;
                    int64_t v;
                    if (host->store_get(g_st, HINT_COLL, HINT_ID, &hint, &v) == 0)
                        alloc_raise((long long)json_integer_value(json_object_get(hint, "seq")));
                    json_decref(hint);
                    next_hint = now + GAP_MS;
                    known = atomic_load(&g_alloc);
                }
                if (known > g_head + 1) {
                    if (gap_since == 0)
                        gap_since = now;
                    if (now - gap_since >= GAP_MS) {
                        g_head++;
                        gap_since = 0;
                        host->count(g_ctx, "stream_gaps_skipped", 1);
                        continue;
                    }
                }
                break;
            }
            if (rc != 0)
                break;
            gap_since = 0;
            g_head = r.seq;
            alloc_raise(g_head);
            if (!ring) {
                rec_clear(&g_ring[r.seq % RING]);
                g_ring[r.seq % RING] = r;
            }
        }

        /* new streams join; the pump alone changes the active list (under g_mu
         * for the handler's counting) */
        while (fresh != NULL) {
            sub_t *s = fresh;
            fresh = s->next;
            begin(s);
            pthread_mutex_lock(&g_mu);
            s->next = g_active;
            g_active = s;
            pthread_mutex_unlock(&g_mu);
        }

        /* every stream gets what it has not had; heartbeats; ended ones close */
        int64_t now = mono_ms();
        int hb = now >= next_hb;
        if (hb)
            next_hb = now + g_hb_ms;
        behind = 0;
        for (sub_t **pp = &g_active; *pp != NULL;) {
            sub_t *s = *pp;
            int rc = advance(s);
            if (rc == 0 && hb)
                rc = put(s, ": hb\n\n");
            if (rc != 0) {
                pthread_mutex_lock(&g_mu);
                *pp = s->next;
                g_open--;
                pthread_mutex_unlock(&g_mu);
                close_sub(s);
                continue;
            }
            behind |= s->last < g_head;
            pp = &s->next;
        }
        pthread_mutex_lock(&g_mu);
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

/* ---- the route ----------------------------------------------------------- */

static int parse_last(const char *v, long long *out)
{
    size_t n = strlen(v);
    if (n == 0 || n > 18 || strspn(v, "0123456789") != n)
        return -1;
    *out = strtoll(v, NULL, 10);
    return 0;
}

static void dash_stream_route(bnb_ctx_t *ctx, bnb_req_t *req)
{
    (void)ctx;
    const char *user = host->req_user(req);
    const char *qs = host->req_query_string(req);
    long long last = -1;
    /* the only parameters: lastEventId and access_token (read by the host),
     * for clients that cannot set headers (a browser's EventSource) */
    for (const char *p = qs; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg && (seg < 12 || strncmp(p, "lastEventId=", 12) != 0) &&
            (seg < 13 || strncmp(p, "access_token=", 13) != 0)) {
            host->respond_problem(req, 400, "Bad Request",
                                  "unknown query parameter; only lastEventId and access_token are allowed");
            return;
        }
        p = amp ? amp + 1 : p + seg;
    }
    const char *lq = host->req_query(req, "lastEventId");
    const char *lh = host->req_header(req, "last-event-id");
    /* both: the header wins, it is the newer one (a browser reconnecting by
     * itself sends it while the URL still names the id the page opened with) */
    if (lq && parse_last(lq, &last) != 0) {
        host->respond_problem(req, 400, "Bad Request", "lastEventId must be an event id (digits)");
        return;
    }
    if (lh && *lh && parse_last(lh, &last) != 0) {
        host->respond_problem(req, 400, "Bad Request", "Last-Event-ID must be an event id (digits)");
        return;
    }
    sub_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        host->respond_problem(req, 503, "Service Unavailable", "out of memory");
        return;
    }
    snprintf(s->user, sizeof(s->user), "%s", user ? user : "");
    s->last = last;

    pthread_mutex_lock(&g_mu);
    long mine = 0;
    for (int l = 0; l < 2 && s->user[0]; l++)
        for (sub_t *o = l ? g_active : g_pending; o != NULL; o = o->next)
            mine += strcmp(o->user, s->user) == 0;
    int full = g_stop ? 2 : g_open >= g_max ? 2 : (s->user[0] && mine >= g_max_user) ? 1 : 0;
    if (!full)
        g_open++; /* the place is held while the stream opens */
    pthread_mutex_unlock(&g_mu);
    if (full) {
        free(s);
        host->respond_header(req, "Retry-After", "5");
        host->count(ctx, full == 1 ? "stream_refused_user" : "stream_refused_full", 1);
        if (full == 1)
            host->respond_problem(req, 429, "Too Many Requests",
                                  "you have %ld dashboard streams open already; close one first", g_max_user);
        else
            host->respond_problem(req, 503, "Service Unavailable", "too many dashboard streams are open; retry later");
        return;
    }
    s->s = host->stream_open(req, 200, "text/event-stream; charset=utf-8");
    if (s->s == NULL) {
        pthread_mutex_lock(&g_mu);
        g_open--;
        pthread_mutex_unlock(&g_mu);
        free(s);
        host->respond_problem(req, 503, "Service Unavailable", "cannot open a stream now");
        return;
    }
    pthread_mutex_lock(&g_mu);
    s->next = g_pending;
    g_pending = s;
    g_kick = 1;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
    host->count(ctx, "stream_opened", 1);
}

/* ---- lifecycle ----------------------------------------------------------- */

int dash_stream_init(bnb_ctx_t *ctx, const bnb_host_api_t *h, bnb_store_t *st)
{
    host = h;
    g_ctx = ctx;
    g_st = st;
    g_max = cfg_long(ctx, "stream_max", 1000, 0);
    g_max_user = cfg_long(ctx, "stream_max_per_user", 4, 1);
    g_retention = cfg_long(ctx, "stream_retention", 1000, 16);
    g_hb_ms = cfg_long(ctx, "stream_heartbeat_ms", 15000, 100);
    g_poll_ms = cfg_long(ctx, "stream_poll_ms", 250, 10);
    if (!BNB_HAS(h, stream_open) || !BNB_HAS(h, stream_write) || !BNB_HAS(h, stream_close) ||
        !BNB_HAS(h, req_query_string)) {
        h->log(ctx, "warn", "the host has no streamed answers (plugin ABI 1.3): no /dashboard/stream");
        return 0;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = h->route(ctx, "GET", "/dashboard/stream", BNB_ROLE_ANYONE, dash_stream_route);
    if (rc == 0)
        atomic_store(&g_enabled, 1);
    return rc;
}

int dash_stream_start(bnb_ctx_t *ctx)
{
    (void)ctx;
    if (!atomic_load(&g_enabled))
        return 0;
    g_stop = 0;
    if (pthread_create(&g_thread, NULL, pump, NULL) != 0)
        return BNB_ENOMEM;
    g_thread_started = 1;
    return 0;
}

void dash_stream_stop(void)
{
    if (!atomic_load(&g_enabled))
        return;
    pthread_mutex_lock(&g_mu);
    g_stop = 1;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
    if (g_thread_started)
        pthread_join(g_thread, NULL);
    g_thread_started = 0;
    pthread_mutex_lock(&g_mu);
    for (int l = 0; l < 2; l++) {
        sub_t *s = l ? g_active : g_pending;
        while (s != NULL) {
            sub_t *n = s->next;
            close_sub(s);
            s = n;
        }
    }
    g_active = g_pending = NULL;
    g_open = 0;
    pthread_mutex_unlock(&g_mu);
    for (size_t i = 0; i < RING; i++)
        rec_clear(&g_ring[i]);
    atomic_store(&g_enabled, 0);
    pthread_cond_destroy(&g_cv);
}

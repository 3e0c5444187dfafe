/* Events: the outbox relay, the in-process channel, consumer dispatch with
 * idempotency handled by the plugins and poison events parked here. */
#include "reqcheck.h"
#include "host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* bearbnb_dead_letters_total{plugin} follows the count in the plugin's
 * dead-letter store (read at start and after each park), so it survives a
 * restart and counts what other processes of the same service parked. Off
 * the loop (a store call). */
static void dead_sync(bnb_host_t *h, bnb_inst_t *ctx)
{
    int64_t n = 0;
    if (ctx->store == NULL || ctx->store->ops->dead_count == NULL || ctx->store->ops->dead_count(ctx->store, &n) != 0)
        return;
    char labels[64];
    snprintf(labels, sizeof(labels), "plugin=\"%s\"", ctx->name);
    pthread_mutex_lock(&h->dl_mu);
    if (!ctx->dead_synced || n > ctx->dead_exported) {
        double delta = ctx->dead_synced ? (double)(n - ctx->dead_exported) : (double)n;
        bnb__metrics_add(h->metrics, "bearbnb_dead_letters_total", labels, delta); /* creates the series at 0 too */
        ctx->dead_exported = n;
        ctx->dead_synced = 1;
    }
    pthread_mutex_unlock(&h->dl_mu);
}

static void record_dead(bnb_host_t *h, bnb_inst_t *ctx, const char *payload, size_t len, const char *reason)
{
    dead_sync(h, ctx);
    pthread_mutex_lock(&h->dl_mu);
    json_t *ev = json_stringn(payload, len);
    json_t *item = json_pack("{s:s, s:s, s:o, s:I}", "consumer", ctx->name, "reason", reason, "event",
                             ev ? ev : json_string("(not UTF-8)"), "time", (json_int_t)bnb__now_ms());
    if (item != NULL) {
        json_array_append_new(h->dead_letters, item);
        while (json_array_size(h->dead_letters) > 1000)
            json_array_remove(h->dead_letters, 0);
    }
    pthread_mutex_unlock(&h->dl_mu);
}

static int park(bnb_host_t *h, bnb_inst_t *ctx, const char *payload, size_t len, const char *reason)
{
    char *copy = strndup(payload, len);
    if (copy == NULL)
        return BNB_ENOMEM;
    int rc = ctx->store->ops->park(ctx->store, ctx->name, copy, reason);
    free(copy);
    if (rc != 0) {
        bnb__log(BNB_LOG_ERROR, "cannot park a poison event for %s (store error %d); will retry", ctx->name, rc);
        return rc;
    }
    bnb__logf(BNB_LOG_WARN, NULL, "event parked in the dead-letter store of %s: %s", ctx->name, reason);
    record_dead(h, ctx, payload, len, reason);
    return 0;
}

/* One message for one consumer plugin: 0 = done (applied, duplicate or
 * parked), <0 = deliver again later. */
static int dispatch(bnb_host_t *h, bnb_inst_t *ctx, const char *topic, const char *payload, size_t len)
{
    if (atomic_load(&ctx->paused))
        return BNB_EAGAIN;
    json_error_t jerr;
    json_t *env = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    char reason[300];
    if (env == NULL) {
        snprintf(reason, sizeof(reason), "malformed JSON at position %d: %s", jerr.position, jerr.text);
        return park(h, ctx, payload, len, reason);
    }
    const char *id = json_string_value(json_object_get(env, "id"));
    const char *type = json_string_value(json_object_get(env, "type"));
    if (!json_is_object(env) || id == NULL || type == NULL || id[0] == '\0' || strlen(id) >= 64) {
        json_decref(env);
        return park(h, ctx, payload, len, "not an event envelope: needs string fields id (< 64 chars) and type");
    }
    bnb_exec_t ex = {0};
    ex.plugin = ctx->name;
    snprintf(ex.event_id, sizeof(ex.event_id), "%s", id);
    const char *s = json_string_value(json_object_get(env, "correlationId"));
    if (s && bnb__correlation_id_ok(s, strlen(s))) /* anything else stays out of log lines */
        snprintf(ex.correlation_id, sizeof(ex.correlation_id), "%s", s);
    if ((s = json_string_value(json_object_get(env, "traceparent"))) != NULL)
        snprintf(ex.traceparent, sizeof(ex.traceparent), "%s", s);
    if ((s = json_string_value(json_object_get(env, "requestId"))) != NULL)
        snprintf(ex.request_id, sizeof(ex.request_id), "%s", s);
    bnb_ctx_t call = {.inst = ctx, .exec = &ex}; /* this delivery's context: the handler must not keep it */
    bnb_exec_t *saved = bnb__exec;
    bnb__exec = &ex;
    int rc = 0;
    for (size_t i = 0; i < ctx->nsubs && rc == 0; i++) {
        if (strcmp(ctx->subs[i].topic, topic) != 0)
            continue;
        int times = h->deliver_twice ? 2 : 1;
        for (int t = 0; t < times && rc == 0; t++) {
            ex.reject_reason[0] = '\0';
            rc = ctx->subs[i].fn(&call, env);
            if (rc == BNB_EALREADY)
                rc = 0;
        }
    }
    bnb__exec = saved;
    json_decref(env);
    if (rc == BNB_EINVAL) {
        snprintf(reason, sizeof(reason), "%s", ex.reject_reason[0] ? ex.reject_reason : "rejected by the consumer");
        return park(h, ctx, payload, len, reason);
    }
    if (rc != 0) {
        /* ex.event_id: `id` pointed into env, freed above */
        bnb__logf(BNB_LOG_WARN, NULL, "consumer %s failed on event %s (%d); it will be delivered again", ctx->name,
                  ex.event_id, rc);
        return rc;
    }
    char labels[64];
    snprintf(labels, sizeof(labels), "plugin=\"%s\"", ctx->name);
    bnb__metrics_add(h->metrics, "bearbnb_events_consumed_total", labels, 1);
    return 0;
}

static int subscribes(bnb_inst_t *ctx, const char *topic)
{
    for (size_t i = 0; i < ctx->nsubs; i++)
        if (strcmp(ctx->subs[i].topic, topic) == 0)
            return 1;
    return 0;
}

/* In-process channel: hand the message to every local consumer of the topic. */
static int deliver_local(bnb_host_t *h, const char *topic, const char *payload, size_t len)
{
    for (size_t i = 0; i < h->nplugins; i++) {
        bnb_inst_t *c = h->plugins[i];
        if (!subscribes(c, topic))
            continue;
        int rc = dispatch(h, c, topic, payload, len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The batch to every local consumer, one consumer after the other (each
 * sees the events in order): a consumer's commits follow each other, so a
 * backend that groups a thread's deferred commits per store (sqlite) puts the
 * consumer's whole share of the batch in one transaction instead of one per
 * event. Returns how many events, from the first, every consumer took; the
 * rest is delivered again (to all: the consumers are idempotent). */
static size_t deliver_local_batch(bnb_host_t *h, bnb_outbox_entry_t *e, size_t n)
{
    size_t done = n;
    for (size_t i = 0; i < h->nplugins; i++) {
        bnb_inst_t *c = h->plugins[i];
        size_t k = 0;
        for (; k < done; k++) {
            if (!subscribes(c, e[k].topic))
                continue;
            if (dispatch(h, c, e[k].topic, e[k].payload, strlen(e[k].payload)) != 0)
                break;
        }
        done = k;
    }
    return done;
}

/* ---- relay ---------------------------------------------------------------- */

/* Publish on the channel under kafka.namespace. While the broker is known to
 * be away, wait 1 s for the acknowledgements instead of 10 s: the attempt
 * (it may be the broker coming back) does not hold a worker for long, and
 * the relay retries with a backoff. */
static int publish_prefixed(bnb_host_t *h, bnb_outbox_entry_t *e, size_t n)
{
    int timeout = !h->kafka_wanted || atomic_load(&h->channel_ready) ? 10000 : 1000;
    if (h->kafka_prefix[0] == '\0')
        return h->channel->ops->publish(h->channel, e, n, timeout);
    char **orig = malloc(n * sizeof(char *));
    if (orig == NULL)
        return BNB_ENOMEM;
    int rc = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        orig[i] = e[i].topic;
        size_t l = strlen(h->kafka_prefix) + strlen(orig[i]) + 1;
        e[i].topic = malloc(l);
        if (e[i].topic == NULL) {
            e[i].topic = orig[i];
            rc = BNB_ENOMEM;
            break;
        }
        snprintf(e[i].topic, l, "%s%s", h->kafka_prefix, orig[i]);
    }
    if (rc == 0)
        rc = h->channel->ops->publish(h->channel, e, n, timeout);
    for (size_t k = 0; k < i; k++) {
        free(e[k].topic);
        e[k].topic = orig[k];
    }
    free(orig);
    return rc;
}

/* Publish what is pending in ctx's outbox; returns 1 when more may be
 * waiting, 0 when it is empty (or the broker is away: its return wakes the
 * relay), -1 when a store or publish attempt failed (retried after a backoff). */
static int relay_once(bnb_host_t *h, bnb_inst_t *ctx)
{
    bnb_store_t *st = ctx->store;
    if (h->kafka_wanted && atomic_load(&h->channel) == NULL)
        return 0; /* not connected yet: keep it in the outbox (woken when it is) */
    for (int round = 0; round < 20; round++) {
        bnb_outbox_entry_t *e = NULL;
        size_t n = 0;
        if (st->ops->outbox_fetch(st, h->relay_batch, &e, &n) != 0)
            return -1;
        if (n == 0)
            return 0;
        size_t done = 0;
        if (h->channel != NULL) {
            if (publish_prefixed(h, e, n) == 0)
                done = n;
        } else {
            /* the consumers' commits share one fsync per store for the batch,
             * and the batch is acknowledged only once they are on disk */
            bnb_storage_defer_begin();
            done = deliver_local_batch(h, e, n);
            if (bnb_storage_defer_end() != 0) {
                bnb__log(BNB_LOG_ERROR, "outbox of %s: consumers' effects not flushed; delivering again", ctx->name);
                done = 0;
            }
            /* a backend may hold the batch's commits in one transaction until
             * defer_end (sqlite): only now are they visible, so the read
             * cache forgets what it kept meanwhile and the relays look again
             * for the events those commits queued */
            for (size_t i = 0; i < h->nplugins; i++)
                atomic_fetch_add(&h->plugins[i]->store_gen, 1);
            if (done > 0)
                bnb__events_wake(h);
        }
        if (done > 0) {
            const char **ids = malloc(done * sizeof(char *));
            if (ids != NULL) {
                for (size_t i = 0; i < done; i++)
                    ids[i] = e[i].event_id;
                if (st->ops->outbox_ack(st, ids, done) != 0)
                    bnb__log(BNB_LOG_ERROR, "outbox of %s: ack failed; events will be published again", ctx->name);
                free(ids);
            }
            char labels[64];
            snprintf(labels, sizeof(labels), "plugin=\"%s\"", ctx->name);
            bnb__metrics_add(h->metrics, "bearbnb_events_published_total", labels, (double)done);
        }
        bnb_outbox_entries_free(e, n);
        if (done < n)
            return -1; /* a consumer or the broker asked for a retry */
        if (n < h->relay_batch)
            return 0;
    }
    return 1;
}

typedef struct relay_job {
    uv_work_t w;
    bnb_host_t *h;
    bnb_inst_t *ctx;
    int more;       /* relay_once's answer */
    unsigned wakes; /* h->wakes when the job was queued */
} relay_job_t;

static void relay_work(uv_work_t *w)
{
    relay_job_t *j = w->data;
    j->more = relay_once(j->h, j->ctx);
}

static void relay_schedule(bnb_host_t *h);
static void on_relay_timer(uv_timer_t *t);

static void relay_after(uv_work_t *w, int status)
{
    (void)status;
    relay_job_t *j = w->data;
    atomic_store(&j->ctx->relaying, 0);
    atomic_fetch_sub(&j->h->relay_jobs, 1);
    bnb_host_t *h = j->h;
    int failed = j->more < 0;
    /* a commit that woke us while this job ran may have left events behind */
    int more = j->more > 0 || (!failed && atomic_load(&h->wakes) != j->wakes);
    free(j);
    if (h->relay_stopped)
        return;
    if (failed) {
        /* retry soon, backing off (100 ms doubling up to 2 s): the poll timer
         * is only a slow safety net */
        h->relay_backoff_ms = h->relay_backoff_ms ? h->relay_backoff_ms * 2 : 100;
        if (h->relay_backoff_ms > 2000)
            h->relay_backoff_ms = 2000;
        if (!uv_is_active((uv_handle_t *)&h->relay_retry))
            uv_timer_start(&h->relay_retry, on_relay_timer, (uint64_t)h->relay_backoff_ms, 0);
        return;
    }
    h->relay_backoff_ms = 0;
    if (more)
        relay_schedule(h);
}

static void relay_schedule(bnb_host_t *h)
{
    for (size_t i = 0; i < h->nplugins; i++) {
        bnb_inst_t *c = h->plugins[i];
        if (c->store == NULL || atomic_exchange(&c->relaying, 1))
            continue;
        relay_job_t *j = calloc(1, sizeof(*j));
        if (j == NULL) {
            atomic_store(&c->relaying, 0);
            continue;
        }
        j->h = h;
        j->ctx = c;
        j->w.data = j;
        j->wakes = atomic_load(&h->wakes);
        atomic_fetch_add(&h->relay_jobs, 1);
        if (uv_queue_work(h->loop, &j->w, relay_work, relay_after) != 0) {
            atomic_fetch_sub(&h->relay_jobs, 1);
            atomic_store(&c->relaying, 0);
            free(j);
        }
    }
}

static void on_relay_timer(uv_timer_t *t)
{
    relay_schedule(t->data);
}

static void on_relay_wake(uv_async_t *a)
{
    bnb_host_t *h = a->data;
    if (!h->relay_stopped)
        relay_schedule(h);
}

void bnb__events_wake(bnb_host_t *h)
{
    atomic_fetch_add(&h->wakes, 1);
    if (!h->relay_stopped)
        uv_async_send(&h->relay_wake);
}

/* ---- channel consumers ----------------------------------------------------- */

#ifdef BNB_HAVE_KAFKA
static int on_channel_message(void *ud, const char *topic, const char *payload, size_t len)
{
    bnb_inst_t *ctx = ud;
    size_t pl = strlen(ctx->host->kafka_prefix);
    if (pl > 0 && strncmp(topic, ctx->host->kafka_prefix, pl) == 0)
        topic += pl;
    return dispatch(ctx->host, ctx, topic, payload, len);
}
#endif

#ifdef BNB_HAVE_KAFKA
/* Open the Kafka channel and subscribe every plugin's consumer group. */
static int kafka_connect(bnb_host_t *h, bnb_channel_t **out, char *err, size_t errlen)
{
    static const char *const base_topics[] = {"bearbnb.room", "bearbnb.reservation", "bearbnb.payment"};
    char tb[3][160];
    const char *topics[3];
    for (int i = 0; i < 3; i++) {
        snprintf(tb[i], sizeof(tb[i]), "%s%s", h->kafka_prefix, base_topics[i]);
        topics[i] = tb[i];
    }
    char client[128] = "bearbnb";
    for (size_t i = 0; i < h->nplugins; i++) {
        size_t l = strlen(client);
        snprintf(client + l, sizeof(client) - l, "-%s", h->plugins[i]->name);
    }
    /* static membership only when asked for (kafka.instance_id): librdkafka
     * 2.0.2 can fence a static member for good (fatal "Static consumer fenced
     * by other consumer with same group.instance.id") when its own JoinGroup
     * timed out and was retried, as after a broker SIGKILL under load */
    const char *inst = bnb__config_str(h->cfg, "kafka.instance_id");
    bnb_kafka_config_t kc = {.brokers = bnb__config_str(h->cfg, "kafka.brokers"),
                             .client_id = client,
                             .topics = topics,
                             .ntopics = 3,
                             .partitions = (int)bnb__config_int(h->cfg, "kafka.partitions"),
                             .instance_id = inst,
                             .session_timeout_ms = (int)bnb__config_int(h->cfg, "kafka.session_timeout_ms"),
                             .assignment = bnb__config_str(h->cfg, "kafka.assignment"),
                             .debug = bnb__config_str(h->cfg, "kafka.debug")};
    bnb_channel_t *ch = NULL;
    if (bnb__kafka_open(&kc, &ch, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < h->nplugins; i++) {
        bnb_inst_t *c = h->plugins[i];
        if (c->nsubs == 0)
            continue;
        const char *tl[16];
        char tlb[16][160];
        size_t nt = 0;
        for (size_t k = 0; k < c->nsubs && nt < 16; k++) {
            snprintf(tlb[nt], sizeof(tlb[nt]), "%s%s", h->kafka_prefix, c->subs[k].topic);
            int dup = 0;
            for (size_t m = 0; m < nt; m++)
                dup |= strcmp(tl[m], tlb[nt]) == 0;
            if (!dup) {
                tl[nt] = tlb[nt];
                nt++;
            }
        }
        char group[192];
        snprintf(group, sizeof(group), "%sbearbnb-%s", h->kafka_prefix, c->name);
        if (ch->ops->subscribe(ch, group, tl, nt, on_channel_message, c) != 0) {
            snprintf(err, errlen, "kafka: cannot subscribe %s to its topics", c->name);
            ch->ops->close(ch, 1000);
            return -1;
        }
    }
    *out = ch;
    return 0;
}

/* Keeps trying until the broker answers: the host serves (not ready) meanwhile. */
static void *kafka_connector(void *arg)
{
    bnb_host_t *h = arg;
    for (int attempt = 1; !atomic_load(&h->kafka_stop); attempt++) {
        char err[512] = "";
        bnb_channel_t *ch = NULL;
        if (kafka_connect(h, &ch, err, sizeof(err)) == 0) {
            atomic_store(&h->channel, ch);
            atomic_store(&h->channel_ready, 1);
            bnb__log(BNB_LOG_INFO, "kafka: connected to %s after %d attempt(s)",
                     bnb__config_str(h->cfg, "kafka.brokers"), attempt);
            bnb__events_wake(h);
            return NULL;
        }
        bnb__log(BNB_LOG_WARN, "kafka: not reachable yet (%s); not ready, retrying", err);
        for (int i = 0; i < 20 && !atomic_load(&h->kafka_stop); i++)
            usleep(100 * 1000);
    }
    return NULL;
}
#endif

/* Readiness of the channel is asked off the loop (it may wait on the
 * broker); transitions of the whole host's readiness are logged, so that a
 * supervisor can wait for "ready". */
static void ready_work(uv_work_t *w)
{
    bnb_host_t *h = w->data;
    bnb_channel_t *ch = atomic_load(&h->channel);
    if (h->kafka_wanted) {
        /* down only after 3 failed checks in a row (one metadata request
         * can time out on a busy machine), up after one answer */
        int ok = ch != NULL && ch->ops->ready(ch);
        h->channel_fails = ok ? 0 : h->channel_fails + 1;
        int was = atomic_load(&h->channel_ready);
        int up = ok || (was && h->channel_fails < 3);
        atomic_store(&h->channel_ready, up);
        if (up != was) {
            /* not a readiness matter: commits keep their events in the
             * outbox meanwhile, and the relay catches up when it is back */
            if (up)
                bnb__log(BNB_LOG_INFO, "kafka: broker reachable again; publishing what the outbox kept");
            else
                bnb__log(BNB_LOG_WARN, "kafka: broker unreachable; events wait in the outbox (still ready)");
        }
    }
    for (size_t i = 0; i < h->nplugins; i++) /* once per process (retried while the store does not answer) */
        if (h->plugins[i]->store != NULL && !h->plugins[i]->dead_synced)
            dead_sync(h, h->plugins[i]);
    int stores = 1;
    for (size_t i = 0; i < h->nplugins && stores; i++) {
        bnb_store_t *st = h->plugins[i]->store;
        if (st != NULL && st->ops->ping(st) != 0) {
            if (atomic_load(&h->stores_ready)) /* said once per outage */
                bnb__log(BNB_LOG_WARN, "storage of %s does not answer", h->plugins[i]->name);
            stores = 0;
        }
    }
    atomic_store(&h->stores_ready, stores);
}

static void ready_announce(bnb_host_t *h)
{
    int r = atomic_load(&h->ready) && !atomic_load(&h->draining) && bnb__events_ready(h);
    if (r != h->ready_logged) {
        if (r)
            bnb__log(BNB_LOG_INFO, "ready");
        else if (h->ready_logged != -1 || !atomic_load(&h->draining))
            bnb__log(BNB_LOG_WARN, "not ready");
        h->ready_logged = r;
    }
}

static void ready_after(uv_work_t *w, int status)
{
    (void)status;
    bnb_host_t *h = w->data;
    h->ready_job = 0;
    free(w);
    ready_announce(h);
    if (h->kafka_wanted) {
        int up = atomic_load(&h->channel_ready);
        bnb__metrics_set(h->metrics, "bearbnb_kafka_up", NULL, up);
        if (up && !h->channel_up_seen && !h->relay_stopped)
            bnb__events_wake(h); /* the broker is back: drain the outbox now, not at the next poll */
        h->channel_up_seen = up;
    }
}

static void on_ready_timer(uv_timer_t *t)
{
    bnb_host_t *h = t->data;
    if (h->ready_job)
        return;
    uv_work_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return;
    w->data = h;
    h->ready_job = 1;
    if (uv_queue_work(h->loop, w, ready_work, ready_after) != 0) {
        h->ready_job = 0;
        free(w);
    }
}

int bnb__events_start(bnb_host_t *h, char *err, size_t errlen)
{
    h->dead_letters = json_array();
    pthread_mutex_init(&h->dl_mu, NULL);
    const char *brokers = bnb__config_str(h->cfg, "kafka.brokers");
    if (brokers != NULL && brokers[0]) {
#ifdef BNB_HAVE_KAFKA
        /* kafka.namespace prefixes topics and groups, so that several
         * deployments (or test runs) can share one cluster */
        const char *ns = bnb__config_str(h->cfg, "kafka.namespace");
        snprintf(h->kafka_prefix, sizeof(h->kafka_prefix), "%s%s", ns && ns[0] ? ns : "", ns && ns[0] ? "." : "");
        h->kafka_wanted = 1;
        if (pthread_create(&h->kafka_thread, NULL, kafka_connector, h) != 0) {
            snprintf(err, errlen, "kafka: cannot start the connector thread");
            return -1;
        }
        h->kafka_thread_started = 1;
#else
        snprintf(err, errlen, "kafka.brokers is set (%s) but this build has no Kafka support", brokers);
        return -1;
#endif
    }
    uv_async_init(h->loop, &h->relay_wake, on_relay_wake);
    h->relay_wake.data = h;
    uv_timer_init(h->loop, &h->relay_timer);
    h->relay_timer.data = h;
    uv_timer_start(&h->relay_timer, on_relay_timer, 0, (uint64_t)h->relay_interval_ms);
    uv_timer_init(h->loop, &h->relay_retry);
    h->relay_retry.data = h;
    h->ready_logged = -1;
    uv_timer_init(h->loop, &h->ready_timer);
    h->ready_timer.data = h;
    uv_timer_start(&h->ready_timer, on_ready_timer, 50, 500);
    return 0;
}

void bnb__events_stop(bnb_host_t *h)
{
    if (h->kafka_thread_started) {
        atomic_store(&h->kafka_stop, 1);
        pthread_join(h->kafka_thread, NULL);
        h->kafka_thread_started = 0;
    }
    if (!h->relay_stopped) {
        h->relay_stopped = 1;
        uv_timer_stop(&h->ready_timer);
        uv_close((uv_handle_t *)&h->ready_timer, NULL);
        while (h->ready_job)
            uv_run(h->loop, UV_RUN_ONCE);
        uv_timer_stop(&h->relay_timer);
        uv_close((uv_handle_t *)&h->relay_timer, NULL);
        uv_timer_stop(&h->relay_retry);
        uv_close((uv_handle_t *)&h->relay_retry, NULL);
        uv_close((uv_handle_t *)&h->relay_wake, NULL);
        while (atomic_load(&h->relay_jobs) > 0)
            uv_run(h->loop, UV_RUN_ONCE);
        /* last flush: what was committed before shutdown leaves now */
        for (size_t i = 0; i < h->nplugins; i++)
            if (h->plugins[i]->store)
                while (relay_once(h, h->plugins[i]) > 0)
                    ;
    }
    if (h->channel != NULL) {
        h->channel->ops->close(h->channel, 10000);
        h->channel = NULL;
    }
}

void bnb__events_free(bnb_host_t *h)
{
    if (h->dead_letters) {
        json_decref(h->dead_letters);
        h->dead_letters = NULL;
        pthread_mutex_destroy(&h->dl_mu);
    }
}

int bnb__events_inject(bnb_host_t *h, const char *topic, const char *payload, size_t len)
{
    if (h->kafka_wanted && atomic_load(&h->channel) == NULL)
        return BNB_EAGAIN;
    if (h->channel != NULL) {
        char id[37];
        bnb__uuid(id);
        char *copy = strndup(payload, len), *t = strdup(topic);
        bnb_outbox_entry_t e = {id, t, "admin", copy};
        int rc = copy && t ? publish_prefixed(h, &e, 1) : BNB_ENOMEM;
        free(copy);
        free(t);
        return rc;
    }
    return deliver_local(h, topic, payload, len);
}

/* Ready = can serve requests: the stores answer (and the keys are loaded).
 * Kafka is not part of it: a commit keeps its events in the outbox while the
 * broker is away (bearbnb_kafka_up in /metrics says so), so a broker outage
 * takes no pod out of its Service. */
int bnb__events_ready(bnb_host_t *h)
{
    return atomic_load(&h->stores_ready) &&
           bnb__auth_ready(h->auth); /* a JWKS URL down at start: not ready until it loads */
}

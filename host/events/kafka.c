/* Kafka event channel (librdkafka): an idempotent producer that waits for
 * every delivery report, and one consumer thread per subscription that
 * commits an offset only after the consumer's fn stored the effect. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "bnb_build_config.h"
#include "bnb_plugin.h"
#include "channel.h"
#include "log.h"

#define KAFKA_BACKOFF_MIN_MS    100
#define KAFKA_BACKOFF_MAX_MS    2000
#define KAFKA_POLL_MS           100
#define KAFKA_READY_CACHE_MS    1000
#define KAFKA_READY_TIMEOUT_MS  1000
#define KAFKA_ADMIN_TIMEOUT_MS  10000
#define KAFKA_DELIVERED_KEEP_MS 60000

static const char *const default_topics[] = {"bearbnb.room", "bearbnb.reservation", "bearbnb.payment"};

typedef struct kafka_channel kafka_channel_t;

/* One produced message, until its delivery report. The channel keeps the
 * ones in flight by event id: a publish() of an event whose earlier copy
 * librdkafka still holds (the relay retries after a timeout, e.g. while the
 * broker is away) waits for that copy's report instead of producing it
 * again. Without this every retry of the relay during an outage queued one
 * more copy, all delivered when the broker came back (each event 11-12
 * times after a 25 s Kafka SIGKILL: a backlog the consumers took minutes to
 * drain). A copy delivered after its publish() gave up stays listed (up to
 * KAFKA_DELIVERED_KEEP_MS) so that the retry counts it as delivered instead
 * of producing it once more. refs: 1 while in the channel's list (dropped by the report), +1
 * per publish() waiting on it. Guarded by the channel's fl_mu. */
typedef struct kafka_msg {
    char *id;        /* NULL: no event id, never shared */
    int done;        /* 0 in flight, 1 delivered, -1 failed */
    int orphan;      /* a publish() gave up waiting for it (timed out) */
    int64_t done_at; /* delivered, kept for the next publish() of it */
    int refs;
    struct kafka_msg *next;
} kafka_msg_t;

typedef struct kafka_consumer {
    kafka_channel_t *ch;
    rd_kafka_t *rk; /* replaced by a new handle after a fatal error */
    pthread_t thread;
    char *group;
    char *cid; /* client.id */
    char *gid; /* group.instance.id, NULL: dynamic membership */
    char **topics;
    size_t ntopics;
    int rebuilds; /* handles replaced after a fatal error */
    bnb_channel_deliver_fn fn;
    void *ud;
    struct kafka_consumer *next;
} kafka_consumer_t;

struct kafka_channel {
    bnb_channel_t base;
    char *brokers;
    char *client_id;
    char *instance_id; /* NULL: dynamic membership */
    char *assignment;
    char *debug; /* NULL: none */
    int session_timeout_ms;
    rd_kafka_t *producer;
    pthread_t poller;
    bool poller_started;
    atomic_bool stopping;
    pthread_mutex_t lock; /* consumers, ready cache */
    kafka_consumer_t *consumers;
    int64_t ready_checked_ms;
    int ready_cached;
    pthread_mutex_t fl_mu; /* inflight, delivery reports */
    pthread_cond_t fl_cv;  /* broadcast on every delivery report */
    kafka_msg_t *inflight;
};

static int64_t now_ms(int clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One JSON log line (host/log.c) with "component":"kafka" and up to three
 * string fields, escaped by jansson. */
static void klog(bnb_log_level_t level, const char *msg, const char *client, const char *key1, const char *val1,
                 const char *key2, const char *val2)
{
    json_t *o = json_pack("{s:s}", "component", "kafka");
    if (!o)
        return;
    if (client)
        json_object_set_new(o, "client", json_string(client));
    if (key1 && val1)
        json_object_set_new(o, key1, json_string(val1));
    if (key2 && val2)
        json_object_set_new(o, key2, json_string(val2));
    char *s = json_dumps(o, JSON_COMPACT);
    size_t n = s ? strlen(s) : 0;
    if (n >= 2 && s[0] == '{' && s[n - 1] == '}') {
        s[n - 1] = '\0';
        bnb__logf(level, s + 1, "%s", msg);
    } else {
        bnb__logf(level, NULL, "%s", msg);
    }
    free(s);
    json_decref(o);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    bool fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    klog(fatal ? BNB_LOG_ERROR : BNB_LOG_WARN, "kafka client error", rd_kafka_name(rk), "error",
         rd_kafka_err2name((rd_kafka_resp_err_t)err), "reason", reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (strcmp(fac, "FAIL") == 0) /* connection failures: reported by on_error too */
        return;
    klog(level <= 3   ? BNB_LOG_ERROR
         : level <= 4 ? BNB_LOG_WARN
         : level <= 6 ? BNB_LOG_INFO
                      : BNB_LOG_DEBUG,
         buf, rd_kafka_name(rk), "facility", fac, NULL, NULL);
}

static void msg_unref(kafka_msg_t *k) /* with fl_mu held */
{
    if (--k->refs == 0) {
        free(k->id);
        free(k);
    }
}

static void inflight_remove(kafka_channel_t *ch, kafka_msg_t *k) /* with fl_mu held */
{
    for (kafka_msg_t **pp = &ch->inflight; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            k->next = NULL;
            return;
        }
    }
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    kafka_channel_t *ch = opaque;
    kafka_msg_t *k = m->_private;
    if (!k || !ch)
        return;
    pthread_mutex_lock(&ch->fl_mu);
    k->done = m->err ? -1 : 1;
    if (k->done == 1 && k->orphan) {
        k->done_at = now_ms(CLOCK_MONOTONIC); /* kept for the retry */
    } else {
        inflight_remove(ch, k);
        msg_unref(k);
    }
    pthread_cond_broadcast(&ch->fl_cv);
    pthread_mutex_unlock(&ch->fl_mu);
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    klog(BNB_LOG_WARN, "offset commit failed", rd_kafka_name(rk), "error", rd_kafka_err2name(err), NULL, NULL);
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        if (offsets->elems[i].err)
            klog(BNB_LOG_WARN, "offset commit failed for partition", rd_kafka_name(rk), "topic",
                 offsets->elems[i].topic, "error", rd_kafka_err2name(offsets->elems[i].err));
    }
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errbuf, size_t errlen)
{
    if (rd_kafka_conf_set(conf, k, v, errbuf, errlen) != RD_KAFKA_CONF_OK)
        return BNB_EINVAL;
    return 0;
}

static rd_kafka_conf_t *base_conf(kafka_channel_t *ch, const char *client_id, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return NULL;
    if (conf_set(conf, "bootstrap.servers", ch->brokers, errbuf, errlen) ||
        conf_set(conf, "client.id", client_id, errbuf, errlen) ||
        conf_set(conf, "socket.keepalive.enable", "true", errbuf, errlen) ||
        conf_set(conf, "reconnect.backoff.max.ms", "2000", errbuf, errlen) ||
        (ch->debug && conf_set(conf, "debug", ch->debug, errbuf, errlen))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_opaque(conf, ch);
    return conf;
}

static void *poller_main(void *arg)
{
    kafka_channel_t *ch = arg;
    while (!atomic_load(&ch->stopping))
        rd_kafka_poll(ch->producer, KAFKA_POLL_MS);
    return NULL;
}

/* ------------------------------------------------------------- publish */

static int kafka_publish(bnb_channel_t *base, const bnb_outbox_entry_t *entries, size_t n, int timeout_ms)
{
    kafka_channel_t *ch = (kafka_channel_t *)base;
    if (n == 0)
        return 0;
    if (!entries)
        return BNB_EINVAL;
    kafka_msg_t **mine = calloc(n, sizeof *mine); /* this call's references */
    if (!mine)
        return BNB_ENOMEM;

    int64_t deadline = now_ms(CLOCK_MONOTONIC) + (timeout_ms > 0 ? timeout_ms : 0);
    int rc = 0, reused = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        const bnb_outbox_entry_t *e = &entries[i];
        if (!e->topic || !e->payload) {
            rc = BNB_EINVAL;
            break;
        }
        /* an earlier copy still in flight: wait for its report */
        pthread_mutex_lock(&ch->fl_mu);
        if (i == 0) { /* drop delivered copies nobody asked for again */
            int64_t old = now_ms(CLOCK_MONOTONIC) - KAFKA_DELIVERED_KEEP_MS;
            for (kafka_msg_t **pp = &ch->inflight; *pp;) {
                kafka_msg_t *x = *pp;
                if (x->done == 1 && x->done_at < old) {
                    *pp = x->next;
                    msg_unref(x);
                } else {
                    pp = &x->next;
                }
            }
        }
        kafka_msg_t *k = NULL;
        for (kafka_msg_t *x = ch->inflight; e->event_id && x && !k; x = x->next)
            if (x->id && strcmp(x->id, e->event_id) == 0)
                k = x;
        if (k && k->done == 1) { /* delivered after an earlier publish() gave up */
            inflight_remove(ch, k);
            mine[i] = k; /* the list's reference is ours now */
            reused++;
            pthread_mutex_unlock(&ch->fl_mu);
            continue;
        }
        if (k) {
            k->refs++;
            mine[i] = k;
            reused++;
            pthread_mutex_unlock(&ch->fl_mu);
            continue;
        }
        pthread_mutex_unlock(&ch->fl_mu);
        k = calloc(1, sizeof *k);
        if (!k || (e->event_id && !(k->id = strdup(e->event_id)))) {
            free(k);
            rc = BNB_ENOMEM;
            break;
        }
        k->refs = 2; /* the list's (dropped by the report) and ours */
        pthread_mutex_lock(&ch->fl_mu);
        k->next = ch->inflight;
        ch->inflight = k;
        pthread_mutex_unlock(&ch->fl_mu);
        mine[i] = k;
        rd_kafka_resp_err_t err;
        for (;;) {
            err = rd_kafka_producev(ch->producer, RD_KAFKA_V_TOPIC(e->topic),
                                    RD_KAFKA_V_KEY(e->key, e->key ? strlen(e->key) : 0),
                                    RD_KAFKA_V_VALUE(e->payload, strlen(e->payload)),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(k), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || now_ms(CLOCK_MONOTONIC) >= deadline)
                break;
            struct timespec pause = {0, 10 * 1000000L}; /* the poller drains the queue */
            nanosleep(&pause, NULL);
        }
        if (err) {
            /* not queued: no report will come */
            pthread_mutex_lock(&ch->fl_mu);
            k->done = -1;
            inflight_remove(ch, k);
            msg_unref(k);
            pthread_mutex_unlock(&ch->fl_mu);
            klog(BNB_LOG_WARN, "produce failed", ch->client_id, "topic", e->topic, "error", rd_kafka_err2name(err));
            rc = err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? BNB_ETIMEDOUT : BNB_EIO;
            i++;
            break;
        }
    }
    size_t nmine = i;

    /* Wait for the delivery reports of everything produced or reused (even
     * after a produce error: those messages may still be written). */
    pthread_mutex_lock(&ch->fl_mu);
    int failed = 0, pending = 0;
    for (;;) {
        failed = pending = 0;
        for (size_t k = 0; k < nmine; k++) {
            if (!mine[k])
                continue;
            pending += mine[k]->done == 0;
            failed += mine[k]->done < 0;
        }
        int64_t left = deadline - now_ms(CLOCK_MONOTONIC);
        if (pending == 0 || left <= 0)
            break;
        struct timespec abs;
        clock_gettime(CLOCK_MONOTONIC, &abs);
        abs.tv_sec += left / 1000;
        abs.tv_nsec += (left % 1000) * 1000000L;
        if (abs.tv_nsec >= 1000000000L) {
            abs.tv_sec++;
            abs.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ch->fl_cv, &ch->fl_mu, &abs);
    }
    for (size_t k = 0; k < nmine; k++) {
        if (!mine[k])
            continue;
        if (mine[k]->done == 0)
            mine[k]->orphan = 1; /* its report may still say delivered */
        msg_unref(mine[k]);
    }
    pthread_mutex_unlock(&ch->fl_mu);
    free(mine);
    if (reused > 0) {
        char nb[32];
        snprintf(nb, sizeof nb, "%d", reused);
        klog(BNB_LOG_DEBUG, "publish: events still in flight from an earlier attempt, not produced again",
             ch->client_id, "count", nb, NULL, NULL);
    }
    if (rc == 0 && pending > 0)
        rc = BNB_ETIMEDOUT;
    if (rc == 0 && failed > 0)
        rc = BNB_EIO;
    return rc;
}

/* ------------------------------------------------------------- consume */

/* Sleep up to ms, waking early when the channel closes. */
static void backoff_sleep(kafka_channel_t *ch, int ms)
{
    while (ms > 0 && !atomic_load(&ch->stopping)) {
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* A consumer handle for c (its group, instance id, topics), subscribed:
 * c->rk. 0, or BNB_E* with errbuf. */
static int consumer_open(kafka_consumer_t *c, char *errbuf, size_t errlen)
{
    kafka_channel_t *ch = c->ch;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *tl = NULL;
    rd_kafka_t *rk = NULL;
    char sess[16], hb[16];
    int rc = BNB_EINVAL;
    /* a consumer that died (SIGKILL, node loss) and does not come back gives
     * its partitions up after the session (librdkafka's default is 45 s); one
     * that comes back with the same static id within it gets them at once */
    snprintf(sess, sizeof sess, "%d", ch->session_timeout_ms);
    snprintf(hb, sizeof hb, "%d", ch->session_timeout_ms / 4 > 100 ? ch->session_timeout_ms / 4 : 100);
    conf = base_conf(ch, c->cid, errbuf, errlen);
    if (!conf || conf_set(conf, "group.id", c->group, errbuf, errlen) ||
        conf_set(conf, "enable.auto.commit", "false", errbuf, errlen) ||
        conf_set(conf, "enable.auto.offset.store", "false", errbuf, errlen) ||
        conf_set(conf, "auto.offset.reset", "earliest", errbuf, errlen) ||
        conf_set(conf, "allow.auto.create.topics", "true", errbuf, errlen) ||
        conf_set(conf, "topic.metadata.refresh.interval.ms", "10000", errbuf, errlen) ||
        conf_set(conf, "session.timeout.ms", sess, errbuf, errlen) ||
        conf_set(conf, "heartbeat.interval.ms", hb, errbuf, errlen) ||
        /* incremental rebalancing (KIP-429): a member joining or leaving
         * moves only the partitions that change owner, the others keep
         * consuming (librdkafka >= 1.6) */
        conf_set(conf, "partition.assignment.strategy", ch->assignment, errbuf, errlen) ||
        (c->gid && conf_set(conf, "group.instance.id", c->gid, errbuf, errlen))) {
        goto fail;
    }
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errbuf, errlen);
    if (!rk) {
        rc = BNB_EIO;
        goto fail;
    }
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(rk);
    tl = rd_kafka_topic_partition_list_new((int)c->ntopics);
    if (!tl) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < c->ntopics; i++)
        rd_kafka_topic_partition_list_add(tl, c->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, tl);
    if (err) {
        snprintf(errbuf, errlen, "subscribe: %s", rd_kafka_err2str(err));
        rc = BNB_EIO;
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(tl);
    c->rk = rk;
    return 0;
fail:
    if (tl)
        rd_kafka_topic_partition_list_destroy(tl);
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}

/* A fatal error leaves a consumer handle dead for good (librdkafka 2.0.2:
 * "Static consumer fenced by other consumer with same group.instance.id",
 * which it can raise against itself after a broker SIGKILL when its own
 * retried JoinGroup is taken for another member's). Replace the handle:
 * close it (nothing uncommitted was acknowledged: offsets are committed only
 * after the effect is stored, so what was in flight comes again), then a new
 * one with the same group, instance id and topics, retried with a backoff
 * until it subscribes or the channel closes. */
static void consumer_rebuild(kafka_consumer_t *c)
{
    kafka_channel_t *ch = c->ch;
    char reason[512] = "";
    rd_kafka_resp_err_t fe = rd_kafka_fatal_error(c->rk, reason, sizeof reason);
    klog(BNB_LOG_ERROR, "consumer fatal error: replacing the consumer (same group and instance id)",
         rd_kafka_name(c->rk), "error", rd_kafka_err2name(fe), "reason", reason);
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    c->rk = NULL;
    for (int backoff = KAFKA_BACKOFF_MIN_MS; !atomic_load(&ch->stopping);) {
        char errbuf[512] = "";
        if (consumer_open(c, errbuf, sizeof errbuf) == 0) {
            c->rebuilds++;
            klog(BNB_LOG_INFO, "consumer replaced after a fatal error", c->cid, "group", c->group, "instance",
                 c->gid ? c->gid : "(dynamic)");
            return;
        }
        klog(BNB_LOG_WARN, "consumer could not be replaced yet", c->cid, "group", c->group, "reason", errbuf);
        backoff_sleep(ch, backoff);
        backoff = backoff * 2 > KAFKA_BACKOFF_MAX_MS ? KAFKA_BACKOFF_MAX_MS : backoff * 2;
    }
}

static void *consumer_main(void *arg)
{
    kafka_consumer_t *c = arg;
    kafka_channel_t *ch = c->ch;
    int backoff = KAFKA_BACKOFF_MIN_MS;
    char *buf = NULL;
    size_t cap = 0;

    while (!atomic_load(&ch->stopping)) {
        if (rd_kafka_fatal_error(c->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            consumer_rebuild(c);
            continue;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, KAFKA_POLL_MS);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                klog(BNB_LOG_WARN, "consumer error", rd_kafka_name(c->rk), "error", rd_kafka_err2name(m->err), "reason",
                     rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        /* fn gets a NUL-terminated copy */
        if (m->len + 1 > cap) {
            char *nb = realloc(buf, m->len + 1);
            if (!nb) {
                klog(BNB_LOG_ERROR, "out of memory", rd_kafka_name(c->rk), NULL, NULL, NULL, NULL);
                goto retry;
            }
            buf = nb;
            cap = m->len + 1;
        }
        if (m->len)
            memcpy(buf, m->payload, m->len);
        buf[m->len] = '\0';

        const char *topic = rd_kafka_topic_name(m->rkt);
        if (c->fn(c->ud, topic, buf, m->len) == 0) {
            rd_kafka_resp_err_t err = rd_kafka_commit_message(c->rk, m, 1 /* async */);
            if (err)
                klog(BNB_LOG_WARN, "offset commit failed", rd_kafka_name(c->rk), "error", rd_kafka_err2name(err), NULL,
                     NULL);
            backoff = KAFKA_BACKOFF_MIN_MS;
            rd_kafka_message_destroy(m);
            continue;
        }
    retry:;
        /* Not stored: rewind this partition to the same offset so the
         * message comes again; nothing after it is committed meanwhile. */
        char off[32];
        snprintf(off, sizeof off, "%" PRId64, m->offset);
        klog(BNB_LOG_WARN, "consumer failed, will redeliver", rd_kafka_name(c->rk), "topic",
             rd_kafka_topic_name(m->rkt), "offset", off);
        rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
        if (tp) {
            rd_kafka_topic_partition_list_add(tp, rd_kafka_topic_name(m->rkt), m->partition)->offset = m->offset;
            rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, tp, 2000);
            if (e) {
                klog(BNB_LOG_WARN, "seek failed", rd_kafka_name(c->rk), "error", rd_kafka_error_name(e), "reason",
                     rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            } else if (tp->elems[0].err) {
                klog(BNB_LOG_WARN, "seek failed", rd_kafka_name(c->rk), "error", rd_kafka_err2name(tp->elems[0].err),
                     NULL, NULL);
            }
            rd_kafka_topic_partition_list_destroy(tp);
        }
        rd_kafka_message_destroy(m);
        backoff_sleep(ch, backoff);
        backoff = backoff * 2 > KAFKA_BACKOFF_MAX_MS ? KAFKA_BACKOFF_MAX_MS : backoff * 2;
    }
    free(buf);
    if (!c->rk) /* closed while a replacement was being made */
        return NULL;
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);
    if (err)
        klog(BNB_LOG_WARN, "consumer close", rd_kafka_name(c->rk), "error", rd_kafka_err2name(err), NULL, NULL);
    return NULL;
}

static void consumer_free(kafka_consumer_t *c)
{
    if (!c)
        return;
    if (c->rk)
        rd_kafka_destroy(c->rk);
    for (size_t i = 0; c->topics && i < c->ntopics; i++)
        free(c->topics[i]);
    free(c->topics);
    free(c->group);
    free(c->cid);
    free(c->gid);
    free(c);
}

static int kafka_subscribe(bnb_channel_t *base, const char *group, const char *const *topics, size_t ntopics,
                           bnb_channel_deliver_fn fn, void *ud)
{
    kafka_channel_t *ch = (kafka_channel_t *)base;
    char errbuf[512] = "";
    kafka_consumer_t *c = NULL;
    int rc = BNB_ENOMEM;

    if (!group || !*group || !topics || ntopics == 0 || !fn)
        return BNB_EINVAL;
    c = calloc(1, sizeof *c);
    if (!c || !(c->group = strdup(group)) || asprintf(&c->cid, "%s-%s", ch->client_id, group) < 0) {
        if (c)
            c->cid = NULL;
        goto fail;
    }
    c->ch = ch;
    c->fn = fn;
    c->ud = ud;
    if (ch->instance_id && asprintf(&c->gid, "%s-%s", ch->instance_id, group) < 0) {
        c->gid = NULL;
        goto fail;
    }
    if (!(c->topics = calloc(ntopics, sizeof *c->topics)))
        goto fail;
    for (c->ntopics = 0; c->ntopics < ntopics; c->ntopics++)
        if (!(c->topics[c->ntopics] = strdup(topics[c->ntopics])))
            goto fail;
    if ((rc = consumer_open(c, errbuf, sizeof errbuf)) != 0)
        goto fail;
    if (pthread_create(&c->thread, NULL, consumer_main, c) != 0) {
        rd_kafka_consumer_close(c->rk);
        snprintf(errbuf, sizeof errbuf, "pthread_create failed");
        rc = BNB_EIO;
        goto fail;
    }
    pthread_mutex_lock(&ch->lock);
    c->next = ch->consumers;
    ch->consumers = c;
    pthread_mutex_unlock(&ch->lock);
    klog(BNB_LOG_INFO, "kafka consumer subscribed", c->cid, "group", group, "instance", c->gid ? c->gid : "(dynamic)");
    return 0;

fail:
    klog(BNB_LOG_ERROR, "kafka subscribe failed", ch->client_id, "group", group, "reason", errbuf);
    consumer_free(c);
    return rc;
}

/* ------------------------------------------------------------- ready, close */

static int kafka_ready(bnb_channel_t *base)
{
    kafka_channel_t *ch = (kafka_channel_t *)base;
    pthread_mutex_lock(&ch->lock);
    int64_t now = now_ms(CLOCK_MONOTONIC);
    if (ch->ready_checked_ms && now - ch->ready_checked_ms < KAFKA_READY_CACHE_MS) {
        int r = ch->ready_cached;
        pthread_mutex_unlock(&ch->lock);
        return r;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(ch->producer, 0, NULL, &md, KAFKA_READY_TIMEOUT_MS);
    int r = err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
    if (md)
        rd_kafka_metadata_destroy(md);
    ch->ready_cached = r;
    ch->ready_checked_ms = now_ms(CLOCK_MONOTONIC);
    pthread_mutex_unlock(&ch->lock);
    return r;
}

static void kafka_close(bnb_channel_t *base, int timeout_ms)
{
    kafka_channel_t *ch = (kafka_channel_t *)base;
    if (!ch)
        return;
    atomic_store(&ch->stopping, true);
    pthread_mutex_lock(&ch->lock);
    kafka_consumer_t *c = ch->consumers;
    ch->consumers = NULL;
    pthread_mutex_unlock(&ch->lock);
    while (c) {
        kafka_consumer_t *next = c->next;
        pthread_join(c->thread, NULL);
        consumer_free(c);
        c = next;
    }
    if (ch->producer) {
        rd_kafka_resp_err_t err = rd_kafka_flush(ch->producer, timeout_ms > 0 ? timeout_ms : 0);
        if (err)
            klog(BNB_LOG_WARN, "producer flush incomplete at close", ch->client_id, "error", rd_kafka_err2name(err),
                 NULL, NULL);
        /* Undelivered messages get a (failed) delivery report, so every
         * batch of a publish() that timed out is freed. */
        rd_kafka_purge(ch->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(ch->producer, 1000);
        if (ch->poller_started)
            pthread_join(ch->poller, NULL);
        rd_kafka_poll(ch->producer, 0);
        rd_kafka_destroy(ch->producer);
    }
    while (ch->inflight) { /* reports that never came: no publish() waits any more */
        kafka_msg_t *k = ch->inflight;
        ch->inflight = k->next;
        msg_unref(k);
    }
    pthread_cond_destroy(&ch->fl_cv);
    pthread_mutex_destroy(&ch->fl_mu);
    pthread_mutex_destroy(&ch->lock);
    free(ch->brokers);
    free(ch->client_id);
    free(ch->instance_id);
    free(ch->assignment);
    free(ch->debug);
    free(ch);
}

static const bnb_channel_ops_t kafka_ops = {
    .name = "kafka",
    .publish = kafka_publish,
    .subscribe = kafka_subscribe,
    .ready = kafka_ready,
    .close = kafka_close,
};

/* ------------------------------------------------------------- open */

static int create_topics(kafka_channel_t *ch, const char *const *topics, size_t n, int partitions, char *errbuf,
                         size_t errlen)
{
    int rc = BNB_EIO;
    rd_kafka_NewTopic_t **nt = calloc(n, sizeof *nt);
    rd_kafka_queue_t *q = rd_kafka_queue_new(ch->producer);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(ch->producer, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_event_t *ev = NULL;
    if (!nt || !q || !opts) {
        rc = BNB_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, 1, errbuf, errlen);
        if (!nt[i]) {
            rc = BNB_EINVAL;
            goto fail;
        }
    }
    rd_kafka_AdminOptions_set_request_timeout(opts, KAFKA_ADMIN_TIMEOUT_MS - 1000, errbuf, errlen);
    rd_kafka_AdminOptions_set_operation_timeout(opts, 5000, errbuf, errlen);
    rd_kafka_CreateTopics(ch->producer, nt, n, opts, q);
    ev = rd_kafka_queue_poll(q, KAFKA_ADMIN_TIMEOUT_MS);
    if (!ev) {
        snprintf(errbuf, errlen, "kafka %s: CreateTopics timed out", ch->brokers);
        rc = BNB_ETIMEDOUT;
        goto fail;
    }
    if (rd_kafka_event_error(ev)) {
        snprintf(errbuf, errlen, "kafka %s: CreateTopics: %s", ch->brokers, rd_kafka_event_error_string(ev));
        goto fail;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t cnt = 0;
    const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &cnt) : NULL;
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(tr[i]);
        if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            snprintf(errbuf, errlen, "kafka: create topic %s: %s", rd_kafka_topic_result_name(tr[i]),
                     rd_kafka_topic_result_error_string(tr[i]) ? rd_kafka_topic_result_error_string(tr[i])
                                                               : rd_kafka_err2str(err));
            goto fail;
        }
    }
    rc = 0;
fail:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (nt) {
        for (size_t i = 0; i < n; i++)
            if (nt[i])
                rd_kafka_NewTopic_destroy(nt[i]);
        free(nt);
    }
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (q)
        rd_kafka_queue_destroy(q);
    return rc;
}

int bnb__kafka_open(const bnb_kafka_config_t *cfg, bnb_channel_t **out, char *errbuf, size_t errlen)
{
    char tmp[512] = "";
    rd_kafka_conf_t *conf = NULL;
    kafka_channel_t *ch = NULL;
    int rc = BNB_EINVAL;
    if (!errbuf || errlen == 0) {
        errbuf = tmp;
        errlen = sizeof tmp;
    }
    errbuf[0] = '\0';
    if (!cfg || !out || !cfg->brokers || !*cfg->brokers) {
        snprintf(errbuf, errlen, "kafka: no brokers configured");
        return BNB_EINVAL;
    }
    *out = NULL;
    ch = calloc(1, sizeof *ch);
    if (!ch) {
        snprintf(errbuf, errlen, "kafka: out of memory");
        return BNB_ENOMEM;
    }
    ch->base.ops = &kafka_ops;
    pthread_mutex_init(&ch->lock, NULL);
    pthread_mutex_init(&ch->fl_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ch->fl_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&ch->stopping, false);
    ch->brokers = strdup(cfg->brokers);
    ch->client_id = strdup(cfg->client_id && *cfg->client_id ? cfg->client_id : "bearbnb");
    ch->assignment = strdup(cfg->assignment && *cfg->assignment ? cfg->assignment : "cooperative-sticky");
    ch->instance_id = cfg->instance_id && *cfg->instance_id ? strdup(cfg->instance_id) : NULL;
    ch->session_timeout_ms = cfg->session_timeout_ms > 0 ? cfg->session_timeout_ms : 6000;
    ch->debug = cfg->debug && *cfg->debug ? strdup(cfg->debug) : NULL;
    if (!ch->brokers || !ch->client_id || !ch->assignment ||
        (cfg->instance_id && *cfg->instance_id && !ch->instance_id)) {
        rc = BNB_ENOMEM;
        goto fail;
    }

    conf = base_conf(ch, ch->client_id, errbuf, errlen);
    if (!conf || conf_set(conf, "enable.idempotence", "true", errbuf, errlen) ||
        conf_set(conf, "acks", "all", errbuf, errlen) || conf_set(conf, "linger.ms", "1", errbuf, errlen) ||
        conf_set(conf, "message.timeout.ms", "30000", errbuf, errlen)) {
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    ch->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen);
    if (!ch->producer) {
        rc = BNB_EIO;
        goto fail;
    }
    conf = NULL;

    const char *const *topics = cfg->topics && cfg->ntopics ? cfg->topics : default_topics;
    size_t ntopics = cfg->topics && cfg->ntopics ? cfg->ntopics : sizeof default_topics / sizeof *default_topics;
    rc = create_topics(ch, topics, ntopics, cfg->partitions > 0 ? cfg->partitions : 3, errbuf, errlen);
    if (rc)
        goto fail;

    if (pthread_create(&ch->poller, NULL, poller_main, ch) != 0) {
        snprintf(errbuf, errlen, "kafka: pthread_create failed");
        rc = BNB_ENOMEM;
        goto fail;
    }
    ch->poller_started = true;
    *out = &ch->base;
    return 0;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (!errbuf[0])
        snprintf(errbuf, errlen, "kafka: open failed");
    kafka_close(&ch->base, 0);
    return rc ? rc : BNB_EIO;
}

/* Event channels (host-internal): how outbox entries leave a process and how
 * events reach the plugins' consumers. The in-process channel lives in
 * events.c; the Kafka channel in kafka.c. */
#ifndef BNB_CHANNEL_H
#define BNB_CHANNEL_H

#include "bnb_storage.h"

typedef struct bnb_channel bnb_channel_t;

/* Deliver one message to a consumer. Called on a channel-owned thread, in
 * partition order. Return 0 when the effect is stored (or parked): the offset
 * may be committed; <0 to have the same message delivered again later (the
 * channel backs off, does not skip it, and does not commit past it). */
typedef int (*bnb_channel_deliver_fn)(void *ud, const char *topic, const char *payload, size_t len);

typedef struct bnb_channel_ops {
    const char *name;
    /* Publish every entry, keyed by entry->key, and wait until the broker
     * acknowledged all of them (or timeout_ms passes). 0 only when all were
     * acknowledged. Blocking; called from worker threads. */
    int (*publish)(bnb_channel_t *ch, const bnb_outbox_entry_t *entries, size_t n, int timeout_ms);
    /* Start consuming `topics` in consumer group `group` (one per plugin),
     * calling fn for each message; offsets are committed only after fn
     * returned 0. */
    int (*subscribe)(bnb_channel_t *ch, const char *group, const char *const *topics, size_t ntopics,
                     bnb_channel_deliver_fn fn, void *ud);
    /* 1 when the broker is reachable (readiness). */
    int (*ready)(bnb_channel_t *ch);
    /* Flush the producer (up to timeout_ms), stop consumers, free. */
    void (*close)(bnb_channel_t *ch, int timeout_ms);
} bnb_channel_ops_t;

struct bnb_channel {
    const bnb_channel_ops_t *ops;
};

typedef struct bnb_kafka_config {
    const char *brokers;       /* "127.0.0.1:9092" */
    const char *client_id;     /* "bearbnb-<plugins>" */
    const char *const *topics; /* topics to create when missing */
    size_t ntopics;
    int partitions; /* for created topics, default 3 */
    /* Static group membership (KIP-345): a consumer's group.instance.id is
     * "<instance_id>-<group>", stable across restarts of the same process
     * (pod), so a restarted consumer gets its partitions back at once
     * instead of after a rebalance. NULL or "": dynamic membership. Two
     * live processes must never share it (the older is fenced). */
    const char *instance_id;
    int session_timeout_ms; /* consumer session; 0 = 6000 */
    const char *assignment; /* partition.assignment.strategy; NULL = "cooperative-sticky" */
    const char *debug;      /* librdkafka debug contexts ("cgrp,broker"), logged at level debug; NULL: none */
} bnb_kafka_config_t;

#ifdef BNB_HAVE_KAFKA
int bnb__kafka_open(const bnb_kafka_config_t *cfg, bnb_channel_t **out, char *errbuf, size_t errlen);
#endif

#endif

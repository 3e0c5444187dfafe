/* Kafka channel against a real broker (suite infra): BNB_TEST_KAFKA=host:port,
 * started by `scripts/infra up kafka`. Every run uses its own topics and
 * consumer groups. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "bnb_build_config.h"
#include "bnb_plugin.h"
#include "channel.h"

#define NKEYS    4
#define PER_KEY  25
#define MAX_SEEN 1024

static const char *brokers;
static char run_id[64];

typedef struct seen {
    pthread_mutex_t mu;
    int n;
    char *msgs[MAX_SEEN];
    /* a message whose payload equals fail_payload fails fail_times times */
    const char *fail_payload;
    int fail_times;
    int fail_calls;
    int bad_len;
} seen_t;

static void seen_init(seen_t *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
}

static void seen_free(seen_t *s)
{
    assert_int_equal(s->bad_len, 0);
    for (int i = 0; i < s->n; i++)
        free(s->msgs[i]);
    pthread_mutex_destroy(&s->mu);
}

static int seen_count(seen_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int deliver(void *ud, const char *topic, const char *payload, size_t len)
{
    seen_t *s = ud;
    (void)topic;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (strlen(payload) != len) { /* must be a NUL-terminated copy */
        s->bad_len++;
    } else if (s->fail_payload && strcmp(payload, s->fail_payload) == 0 && s->fail_calls < s->fail_times) {
        s->fail_calls++;
        rc = -5;
    } else if (s->n < MAX_SEEN) {
        s->msgs[s->n++] = strdup(payload);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int wait_count(seen_t *s, int want, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (seen_count(s) >= want)
            return seen_count(s);
        usleep(50 * 1000);
    }
    return seen_count(s);
}

static void name(char *buf, size_t len, const char *what)
{
    static int seq;
    snprintf(buf, len, "bnbtest.%s.%s.%d", run_id, what, ++seq);
}

static bnb_channel_t *open_channel_inst(const char *const *topics, size_t ntopics, const char *instance_id)
{
    bnb_kafka_config_t cfg = {.brokers = brokers,
                              .client_id = "bnb-test",
                              .topics = topics,
                              .ntopics = ntopics,
                              .partitions = 3,
                              .instance_id = instance_id};
    bnb_channel_t *ch = NULL;
    char err[512] = "";
    int rc = bnb__kafka_open(&cfg, &ch, err, sizeof err);
    if (rc != 0)
        fail_msg("bnb__kafka_open(%s) = %d: %s (is the broker up? scripts/infra up kafka)", brokers, rc, err);
    assert_non_null(ch);
    return ch;
}

static bnb_channel_t *open_channel(const char *const *topics, size_t ntopics)
{
    return open_channel_inst(topics, ntopics, NULL);
}

static int publish(bnb_channel_t *ch, const char *topic, const char *key, const char *payload)
{
    bnb_outbox_entry_t e = {
        .event_id = (char *)payload, .topic = (char *)topic, .key = (char *)key, .payload = (char *)payload};
    return ch->ops->publish(ch, &e, 1, 10000);
}

/* 1 when a TCP connection to the first "host:port" of list succeeds. */
static int broker_answers(const char *list)
{
    char host[256];
    snprintf(host, sizeof host, "%s", list);
    host[strcspn(host, ",")] = '\0';
    char *colon = strrchr(host, ':');
    if (!colon)
        return 0;
    *colon = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return 0;
    int ok = 0;
    for (struct addrinfo *a = res; a && !ok; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0)
            continue;
        ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

/* Setup: the broker must answer. */
static int group_setup(void **state)
{
    (void)state;
    brokers = getenv("BNB_TEST_KAFKA");
    if (!brokers || !*brokers) {
        fprintf(stderr,
                "BNB_TEST_KAFKA is not set: run `scripts/infra up kafka` and `eval \"$(scripts/infra env)\"`\n");
        return -1;
    }
    if (!broker_answers(brokers)) {
        fprintf(stderr, "Kafka broker %s (BNB_TEST_KAFKA) does not answer: run `scripts/infra up kafka`\n", brokers);
        return -1;
    }
    snprintf(run_id, sizeof run_id, "%ld-%d", (long)time(NULL), (int)getpid());
    return 0;
}

static void test_ready(void **state)
{
    (void)state;
    char topic[128];
    name(topic, sizeof topic, "ready");
    const char *topics[] = {topic};
    bnb_channel_t *ch = open_channel(topics, 1);
    assert_int_equal(ch->ops->ready(ch), 1);
    assert_int_equal(ch->ops->ready(ch), 1); /* cached */
    ch->ops->close(ch, 1000);
}

static void test_open_unreachable_fails(void **state)
{
    (void)state;
    /* nothing listens on port 1 */
    bnb_kafka_config_t cfg = {.brokers = "127.0.0.1:1", .client_id = "bnb-test"};
    bnb_channel_t *ch = NULL;
    char err[512] = "";
    assert_true(bnb__kafka_open(&cfg, &ch, err, sizeof err) < 0);
    assert_null(ch);
    assert_true(err[0] != '\0');
}

/* Publishing to a broker that is not there must not report success. */
static void test_publish_without_ack_fails(void **state)
{
    (void)state;
    char topic[128];
    name(topic, sizeof topic, "noack");
    const char *topics[] = {topic};
    bnb_channel_t *ch = open_channel(topics, 1);
    /* ask for an ack within 0 ms: nothing can be acknowledged that fast */
    bnb_outbox_entry_t e = {.event_id = "x", .topic = topic, .key = "k", .payload = "{}"};
    assert_int_not_equal(ch->ops->publish(ch, &e, 1, 0), 0);
    /* with time, the same entry is acknowledged */
    assert_int_equal(ch->ops->publish(ch, &e, 1, 10000), 0);
    ch->ops->close(ch, 2000);
}

static void test_keyed_order(void **state)
{
    (void)state;
    char topic[128], group[128];
    name(topic, sizeof topic, "order");
    name(group, sizeof group, "g");
    const char *topics[] = {topic};
    bnb_channel_t *ch = open_channel(topics, 1);

    /* one publish() with every entry, interleaving keys */
    static char keys[NKEYS][16], payloads[NKEYS * PER_KEY][64];
    bnb_outbox_entry_t entries[NKEYS * PER_KEY];
    for (int i = 0; i < NKEYS * PER_KEY; i++) {
        int k = i % NKEYS;
        snprintf(keys[k], sizeof keys[k], "key-%d", k);
        snprintf(payloads[i], sizeof payloads[i], "{\"key\":%d,\"seq\":%d}", k, i / NKEYS);
        entries[i] =
            (bnb_outbox_entry_t){.event_id = payloads[i], .topic = topic, .key = keys[k], .payload = payloads[i]};
    }
    assert_int_equal(ch->ops->publish(ch, entries, NKEYS * PER_KEY, 15000), 0);

    seen_t s;
    seen_init(&s);
    assert_int_equal(ch->ops->subscribe(ch, group, topics, 1, deliver, &s), 0);
    int got = wait_count(&s, NKEYS * PER_KEY, 30000);
    assert_int_equal(got, NKEYS * PER_KEY);
    int next[NKEYS] = {0};
    for (int i = 0; i < got; i++) {
        int k = -1, seq = -1;
        assert_int_equal(sscanf(s.msgs[i], "{\"key\":%d,\"seq\":%d}", &k, &seq), 2);
        assert_true(k >= 0 && k < NKEYS);
        assert_int_equal(seq, next[k]); /* in order per key, none lost, none twice */
        next[k]++;
    }
    for (int k = 0; k < NKEYS; k++)
        assert_int_equal(next[k], PER_KEY);
    ch->ops->close(ch, 2000);
    seen_free(&s);
}

/* Several threads publish at once on one channel. */
typedef struct pub_arg {
    bnb_channel_t *ch;
    const char *topic;
    int id;
    int rc;
} pub_arg_t;

static void *pub_thread(void *p)
{
    pub_arg_t *a = p;
    char key[32], payload[64];
    a->rc = 0;
    for (int i = 0; i < 20 && a->rc == 0; i++) {
        snprintf(key, sizeof key, "t%d", a->id);
        snprintf(payload, sizeof payload, "{\"t\":%d,\"i\":%d}", a->id, i);
        a->rc = publish(a->ch, a->topic, key, payload);
    }
    return NULL;
}

static void test_concurrent_publish(void **state)
{
    (void)state;
    char topic[128], group[128];
    name(topic, sizeof topic, "conc");
    name(group, sizeof group, "g");
    const char *topics[] = {topic};
    bnb_channel_t *ch = open_channel(topics, 1);
    pthread_t th[4];
    pub_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (pub_arg_t){.ch = ch, .topic = topic, .id = i, .rc = -1};
        assert_int_equal(pthread_create(&th[i], NULL, pub_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].rc, 0);
    }
    seen_t s;
    seen_init(&s);
    assert_int_equal(ch->ops->subscribe(ch, group, topics, 1, deliver, &s), 0);
    assert_int_equal(wait_count(&s, 80, 30000), 80);
    int next[4] = {0};
    for (int i = 0; i < 80; i++) {
        int t = -1, n = -1;
        assert_int_equal(sscanf(s.msgs[i], "{\"t\":%d,\"i\":%d}", &t, &n), 2);
        assert_true(t >= 0 && t < 4);
        assert_int_equal(n, next[t]);
        next[t]++;
    }
    ch->ops->close(ch, 2000);
    seen_free(&s);
}

/* A failed delivery comes again (not skipped, nothing after it on that key
 * overtakes it) and offsets are committed only after success. */
static void test_redeliver_and_commit(void **state)
{
    (void)state;
    char topic[128], group[128];
    name(topic, sizeof topic, "redeliver");
    name(group, sizeof group, "g");
    const char *topics[] = {topic};
    bnb_channel_t *ch = open_channel(topics, 1);
    const char *msgs[] = {"{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(publish(ch, topic, "same-key", msgs[i]), 0);

    seen_t s;
    seen_init(&s);
    s.fail_payload = msgs[1];
    s.fail_times = 2;
    assert_int_equal(ch->ops->subscribe(ch, group, topics, 1, deliver, &s), 0);
    assert_int_equal(wait_count(&s, 4, 30000), 4);
    usleep(500 * 1000); /* nothing more comes (no duplicates after success) */
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.fail_calls, 2);
    for (int i = 0; i < 4; i++)
        assert_string_equal(s.msgs[i], msgs[i]);
    pthread_mutex_unlock(&s.mu);
    ch->ops->close(ch, 2000);
    seen_free(&s);

    /* Same group again: everything was committed, only new messages come. */
    ch = open_channel(topics, 1);
    assert_int_equal(publish(ch, topic, "same-key", "{\"n\":4}"), 0);
    seen_init(&s);
    assert_int_equal(ch->ops->subscribe(ch, group, topics, 1, deliver, &s), 0);
    assert_int_equal(wait_count(&s, 1, 30000), 1);
    usleep(1500 * 1000);
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.msgs[0], "{\"n\":4}");
    pthread_mutex_unlock(&s.mu);
    ch->ops->close(ch, 2000);
    seen_free(&s);
}

/* A message that keeps failing is never committed: a new consumer of the
 * same group gets it again. */
static void test_uncommitted_redelivered_to_next_consumer(void **state)
{
    (void)state;
    char topic[128], group[128];
    name(topic, sizeof topic, "uncommitted");
    name(group, sizeof group, "g");
    const char *topics[] = {topic};
    bnb_channel_t *ch = open_channel(topics, 1);
    assert_int_equal(publish(ch, topic, "k", "{\"n\":0}"), 0);
    assert_int_equal(publish(ch, topic, "k", "{\"poison\":1}"), 0);
    assert_int_equal(publish(ch, topic, "k", "{\"n\":2}"), 0);

    seen_t s;
    seen_init(&s);
    s.fail_payload = "{\"poison\":1}";
    s.fail_times = 1000;
    assert_int_equal(ch->ops->subscribe(ch, group, topics, 1, deliver, &s), 0);
    assert_int_equal(wait_count(&s, 1, 30000), 1);
    usleep(1500 * 1000);
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.n, 1);       /* n:2 never overtook the failing one */
    assert_true(s.fail_calls >= 2); /* it was retried */
    pthread_mutex_unlock(&s.mu);
    ch->ops->close(ch, 2000);
    seen_free(&s);

    ch = open_channel(topics, 1);
    seen_init(&s);
    assert_int_equal(ch->ops->subscribe(ch, group, topics, 1, deliver, &s), 0);
    assert_int_equal(wait_count(&s, 2, 30000), 2);
    pthread_mutex_lock(&s.mu);
    assert_string_equal(s.msgs[0], "{\"poison\":1}");
    assert_string_equal(s.msgs[1], "{\"n\":2}");
    pthread_mutex_unlock(&s.mu);
    ch->ops->close(ch, 2000);
    seen_free(&s);
}

/* Static membership (group.instance.id): a second consumer with the same
 * instance id fences the first one for good in librdkafka (a fatal error,
 * FENCED_INSTANCE_ID), as librdkafka 2.0.2 can do to itself after a broker
 * SIGKILL. The fenced consumer replaces its handle (same group and instance
 * id): once the other one is gone, it consumes again. */
static void test_static_member_fenced_rebuilds(void **state)
{
    (void)state;
    char topic[128], group[128], inst[128];
    name(topic, sizeof topic, "fenced");
    name(group, sizeof group, "g");
    name(inst, sizeof inst, "pod");
    const char *topics[] = {topic};
    bnb_channel_t *a = open_channel_inst(topics, 1, inst);
    seen_t sa, sb;
    seen_init(&sa);
    seen_init(&sb);
    assert_int_equal(a->ops->subscribe(a, group, topics, 1, deliver, &sa), 0);
    assert_int_equal(publish(a, topic, "k", "{\"n\":1}"), 0);
    assert_int_equal(wait_count(&sa, 1, 30000), 1);

    /* the same instance id joins: the broker gives it the member's place and
     * answers a's next heartbeat with FENCED_INSTANCE_ID (every 1.5 s) */
    bnb_channel_t *b = open_channel_inst(topics, 1, inst);
    assert_int_equal(b->ops->subscribe(b, group, topics, 1, deliver, &sb), 0);
    usleep(5000 * 1000);
    b->ops->close(b, 2000); /* a static member does not leave: its place stays */

    long long t0 = time(NULL);
    assert_int_equal(publish(a, topic, "k", "{\"n\":2}"), 0);
    int got = 0;
    for (int i = 0; i < 600 && !got; i++) { /* a's replacement takes the place back */
        pthread_mutex_lock(&sa.mu);
        for (int k = 0; k < sa.n; k++)
            got |= strcmp(sa.msgs[k], "{\"n\":2}") == 0;
        pthread_mutex_unlock(&sa.mu);
        pthread_mutex_lock(&sb.mu);
        for (int k = 0; k < sb.n; k++)
            got |= strcmp(sb.msgs[k], "{\"n\":2}") == 0 ? 2 : 0;
        pthread_mutex_unlock(&sb.mu);
        if (!got)
            usleep(50 * 1000);
    }
    fprintf(stderr, "fenced static member: consumed again %lld s after the other one closed (got %d)\n",
            (long long)time(NULL) - t0, got);
    assert_int_equal(got, 1); /* by a, after b had closed */
    a->ops->close(a, 2000);
    seen_free(&sa);
    seen_free(&sb);
}

/* The consumer and producer survive a broker SIGKILL and restart (librdkafka
 * reconnects). On a broker of the test's own (scripts/infra kafka-private,
 * free ports, data in a temporary directory), never the shared one:
 * BNB_TEST_KAFKA_RESTART=0 skips it (it starts a JVM twice). */
static char priv_dir[128];

static int priv_kafka(const char *cmd, char *out, size_t outlen)
{
    char line[512];
    snprintf(line, sizeof line, "'%s/scripts/infra' kafka-private %s '%s'", BNB_SOURCE_ROOT, cmd, priv_dir);
    FILE *p = popen(line, "r");
    if (!p)
        return -1;
    char buf[256] = "";
    if (fgets(buf, sizeof buf, p) && out)
        snprintf(out, outlen, "%.*s", (int)strcspn(buf, "\r\n"), buf);
    while (fgets(buf, sizeof buf, p))
        ;
    return pclose(p);
}

static int priv_setup(void **state)
{
    (void)state;
    const char *want = getenv("BNB_TEST_KAFKA_RESTART");
    priv_dir[0] = '\0';
    if (want && strcmp(want, "0") == 0)
        return 0;
    snprintf(priv_dir, sizeof priv_dir, "/tmp/bnb-kafka-XXXXXX");
    if (!mkdtemp(priv_dir))
        return -1;
    return 0;
}

static int priv_teardown(void **state)
{
    (void)state;
    if (!priv_dir[0])
        return 0;
    priv_kafka("kill", NULL, 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", priv_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_survives_broker_kill(void **state)
{
    (void)state;
    if (!priv_dir[0]) {
        skip();
        return;
    }
    char addr[128] = "";
    assert_int_equal(priv_kafka("start", addr, sizeof addr), 0);
    assert_true(addr[0] != '\0');
    const char *shared = brokers;
    brokers = addr;
    char topic[128], group[128];
    name(topic, sizeof topic, "restart");
    name(group, sizeof group, "g");
    const char *topics[] = {topic};
    bnb_channel_t *ch = open_channel(topics, 1);
    brokers = shared;
    seen_t s;
    seen_init(&s);
    assert_int_equal(ch->ops->subscribe(ch, group, topics, 1, deliver, &s), 0);
    assert_int_equal(publish(ch, topic, "k", "{\"before\":1}"), 0);
    assert_int_equal(wait_count(&s, 1, 30000), 1);

    assert_int_equal(priv_kafka("kill", NULL, 0), 0);
    long long t_kill = mono_ms();
    /* ready() notices the outage within a few seconds */
    int ready = 1;
    for (int i = 0; i < 40 && ready; i++) {
        ready = ch->ops->ready(ch);
        if (ready)
            usleep(250 * 1000);
    }
    assert_int_equal(ready, 0);
    /* the relay retries while the broker is away: every attempt times out,
     * and none queues another copy (the first is still in librdkafka) */
    bnb_outbox_entry_t during = {.event_id = "during-1", .topic = topic, .key = "k", .payload = "{\"during\":1}"};
    for (int i = 0; i < 4; i++)
        assert_int_not_equal(ch->ops->publish(ch, &during, 1, 500), 0);
    assert_int_equal(priv_kafka("start", NULL, 0), 0);
    long long t_back = mono_ms();

    for (int i = 0; i < 60 && !ready; i++) {
        ready = ch->ops->ready(ch);
        if (!ready)
            usleep(250 * 1000);
    }
    assert_int_equal(ready, 1);
    long long t_ready = mono_ms();
    int rc = -1;
    for (int i = 0; i < 6 && rc != 0; i++)
        rc = publish(ch, topic, "k", "{\"after\":1}");
    assert_int_equal(rc, 0);
    long long t_pub = mono_ms();
    rc = -1;
    for (int i = 0; i < 6 && rc != 0; i++) /* acknowledged now (its first copy) */
        rc = ch->ops->publish(ch, &during, 1, 10000);
    assert_int_equal(rc, 0);
    int seen_during = 0;
    for (int i = 0; i < 1200 && !seen_during; i++) { /* 60 s */
        pthread_mutex_lock(&s.mu);
        for (int k = 0; k < s.n; k++)
            seen_during |= strcmp(s.msgs[k], "{\"during\":1}") == 0;
        pthread_mutex_unlock(&s.mu);
        if (!seen_during)
            usleep(50 * 1000);
    }
    assert_true(seen_during);
    assert_true(wait_count(&s, 3, 60000) >= 3);
    long long t_got = mono_ms();
    fprintf(stderr,
            "broker SIGKILL: back after %lld ms; then ready() in %lld ms, publish acknowledged in %lld ms, "
            "delivered in %lld ms\n",
            t_back - t_kill, t_ready - t_back, t_pub - t_back, t_got - t_back);
    usleep(2000 * 1000); /* no more copies of "during" come */
    pthread_mutex_lock(&s.mu);
    assert_string_equal(s.msgs[0], "{\"before\":1}");
    int n_during = 0, n_after = 0;
    for (int i = 1; i < s.n; i++) {
        n_during += strcmp(s.msgs[i], "{\"during\":1}") == 0;
        n_after += strcmp(s.msgs[i], "{\"after\":1}") == 0;
    }
    fprintf(stderr, "broker SIGKILL: \"during\" (5 publish attempts) delivered %d time(s)\n", n_during);
    assert_int_equal(n_during, 1);
    assert_true(n_after >= 1); /* at-least-once: may come twice if its publish was retried */
    pthread_mutex_unlock(&s.mu);
    ch->ops->close(ch, 2000);
    seen_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_open_unreachable_fails),
        cmocka_unit_test(test_publish_without_ack_fails),
        cmocka_unit_test(test_keyed_order),
        cmocka_unit_test(test_concurrent_publish),
        cmocka_unit_test(test_redeliver_and_commit),
        cmocka_unit_test(test_uncommitted_redelivered_to_next_consumer),
        cmocka_unit_test(test_static_member_fenced_rebuilds),
        cmocka_unit_test_setup_teardown(test_survives_broker_kill, priv_setup, priv_teardown),
    };
    return cmocka_run_group_tests_name("host/kafka", tests, group_setup, NULL);
}

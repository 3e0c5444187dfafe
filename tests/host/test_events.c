/* host/events/events.c: the outbox relay and the in-process channel, with a
 * real event loop and real SQLite stores in a temp dir: a committed event
 * reaches the consumer with its envelope and leaves the outbox only once it
 * is applied; a failing consumer gets it again; a poison event is parked with
 * the consumer's reason; a paused consumer is not called; stopping flushes
 * what is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "host.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const bnb_host_api_t *H = &bnb__host_api;

#define TOPIC "bearbnb.test"

/* What the consumer does and saw (it runs on worker threads). */
static struct {
    pthread_mutex_t mu;
    atomic_int calls;
    atomic_int fail_first; /* return BNB_EIO this many times first */
    atomic_int poison;     /* reject every event */
    json_t *last;          /* the last envelope */
} C = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int consumer(bnb_ctx_t *ctx, const json_t *event)
{
    int n = atomic_fetch_add(&C.calls, 1);
    pthread_mutex_lock(&C.mu);
    json_decref(C.last);
    C.last = json_deep_copy(event);
    pthread_mutex_unlock(&C.mu);
    if (atomic_load(&C.poison)) {
        H->event_reject(ctx, "cannot apply %s", json_string_value(json_object_get(event, "type")));
        return BNB_EINVAL;
    }
    if (n < atomic_load(&C.fail_first))
        return BNB_EIO;
    return 0;
}

typedef struct fx {
    bnb_host_t h;
    uv_loop_t loop;
    char dir[64];
    bnb_inst_t *prod, *cons;
    int started;
} fx_t;

static bnb_inst_t *new_inst(fx_t *f, const char *name)
{
    bnb_inst_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->self.inst = c;
    c->host = &f->h;
    c->name = name;
    char path[128], err[256] = "";
    snprintf(path, sizeof(path), "%s/%s.db", f->dir, name);
    bnb_storage_config_t sc = {"sqlite", name, path, NULL, 2};
    assert_int_equal(bnb_storage_open(&sc, &c->store, err, sizeof(err)), 0);
    return c;
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/bnb-test-events-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    uv_loop_init(&f->loop);
    f->h.loop = &f->loop;
    f->h.cfg = bnb__config_new();
    f->h.metrics = bnb__metrics_new();
    f->h.router = bnb__router_new();
    if (f->h.cfg == NULL || bnb__config_declare_host(f->h.cfg) != 0 || f->h.metrics == NULL || f->h.router == NULL)
        return -1;
    f->h.relay_interval_ms = 20;
    f->h.relay_batch = 100;
    atomic_store(&f->h.stores_ready, 1);
    f->prod = new_inst(f, "prod");
    f->cons = new_inst(f, "cons");
    assert_int_equal(H->subscribe(&f->cons->self, TOPIC, consumer), 0);
    f->h.plugins = calloc(2, sizeof(bnb_inst_t *));
    f->h.plugins[0] = f->prod;
    f->h.plugins[1] = f->cons;
    f->h.nplugins = 2;
    bnb__host = &f->h;
    atomic_store(&C.calls, 0);
    atomic_store(&C.fail_first, 0);
    atomic_store(&C.poison, 0);
    *state = f;
    return 0;
}

static void start(fx_t *f)
{
    char err[256] = "";
    assert_int_equal(bnb__events_start(&f->h, err, sizeof(err)), 0);
    f->started = 1;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->started)
        bnb__events_stop(&f->h);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* let the closed handles go */
    bnb__events_free(&f->h);
    uv_loop_close(&f->loop);
    for (size_t i = 0; i < f->h.nplugins; i++) {
        bnb_inst_t *c = f->h.plugins[i];
        bnb__plugin_unregister(c);
        bnb_storage_close(c->store);
        free(c);
    }
    free(f->h.plugins);
    bnb__router_free(f->h.router);
    bnb__metrics_free(f->h.metrics);
    bnb__config_free(f->h.cfg);
    bnb__host = NULL;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    pthread_mutex_lock(&C.mu);
    json_decref(C.last);
    C.last = NULL;
    pthread_mutex_unlock(&C.mu);
    free(f);
    return 0;
}

/* Commit one document of "prod" with one event, as its handler would (the
 * thread's call says who and which correlation). */
static void commit_event(fx_t *f, const char *id, const char *type)
{
    bnb_exec_t ex = {.plugin = "prod"};
    snprintf(ex.correlation_id, sizeof(ex.correlation_id), "corr-%s", id);
    snprintf(ex.request_id, sizeof(ex.request_id), "req-%s", id);
    bnb__exec = &ex;
    json_t *body = json_pack("{s:s}", "id", id), *data = json_pack("{s:s}", "thing", id);
    bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "things", .id = id, .expect_version = 0, .body = body};
    bnb_event_out_t ev = {.topic = TOPIC, .type = type, .subject = id, .data = data};
    assert_int_equal(H->store_commit(f->prod->store, &w, &ev, 1, NULL, NULL), 0);
    json_decref(body);
    json_decref(data);
    bnb__exec = NULL;
}

static size_t pending(bnb_store_t *st)
{
    bnb_outbox_entry_t *e = NULL;
    size_t n = 0;
    assert_int_equal(st->ops->outbox_fetch(st, 100, &e, &n), 0);
    bnb_outbox_entries_free(e, n);
    return n;
}

/* Run the loop until the consumer was called `calls` times and the outbox of
 * prod is empty (or 5 s). */
static int run_until(fx_t *f, int calls)
{
    for (int i = 0; i < 1000; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (atomic_load(&C.calls) >= calls && pending(f->prod->store) == 0)
            return 0;
        usleep(5000);
    }
    return -1;
}

static void test_event_reaches_the_consumer_and_leaves_the_outbox(void **state)
{
    fx_t *f = *state;
    start(f);
    commit_event(f, "t1", "ThingMade");
    assert_int_equal(run_until(f, 1), 0);
    assert_int_equal(atomic_load(&C.calls), 1);
    pthread_mutex_lock(&C.mu);
    assert_string_equal(json_string_value(json_object_get(C.last, "type")), "ThingMade");
    assert_string_equal(json_string_value(json_object_get(C.last, "source")), "prod");
    assert_string_equal(json_string_value(json_object_get(C.last, "subject")), "t1");
    assert_string_equal(json_string_value(json_object_get(C.last, "correlationId")), "corr-t1");
    assert_string_equal(json_string_value(json_object_get(C.last, "requestId")), "req-t1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(C.last, "data"), "thing")), "t1");
    assert_non_null(json_string_value(json_object_get(C.last, "id")));
    pthread_mutex_unlock(&C.mu);
    size_t len = 0;
    char *m = bnb__metrics_render(f->h.metrics, &len);
    assert_non_null(strstr(m, "bearbnb_events_published_total{plugin=\"prod\"} 1"));
    assert_non_null(strstr(m, "bearbnb_events_consumed_total{plugin=\"cons\"} 1"));
    free(m);
}

/* A consumer that fails gets the same event again; it stays in the outbox
 * until then. */
static void test_failing_consumer_gets_it_again(void **state)
{
    fx_t *f = *state;
    atomic_store(&C.fail_first, 2);
    start(f);
    commit_event(f, "t2", "ThingMade");
    assert_int_equal(run_until(f, 3), 0);
    assert_int_equal(atomic_load(&C.calls), 3);
    pthread_mutex_lock(&C.mu);
    assert_string_equal(json_string_value(json_object_get(C.last, "subject")), "t2");
    pthread_mutex_unlock(&C.mu);
    int64_t dead = -1;
    assert_int_equal(f->cons->store->ops->dead_count(f->cons->store, &dead), 0);
    assert_int_equal(dead, 0);
}

/* BNB_EINVAL parks the event in the consumer's dead-letter store with the
 * reason given to event_reject; it is not delivered again. */
static void test_poison_event_is_parked_with_the_reason(void **state)
{
    fx_t *f = *state;
    atomic_store(&C.poison, 1);
    start(f);
    commit_event(f, "t3", "ThingBroken");
    assert_int_equal(run_until(f, 1), 0);
    for (int i = 0; i < 20; i++) { /* a few more relay ticks: no redelivery */
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(5000);
    }
    assert_int_equal(atomic_load(&C.calls), 1);
    int64_t dead = -1;
    assert_int_equal(f->cons->store->ops->dead_count(f->cons->store, &dead), 0);
    assert_int_equal(dead, 1);
    pthread_mutex_lock(&f->h.dl_mu);
    assert_int_equal(json_array_size(f->h.dead_letters), 1);
    json_t *d = json_array_get(f->h.dead_letters, 0);
    assert_string_equal(json_string_value(json_object_get(d, "consumer")), "cons");
    assert_string_equal(json_string_value(json_object_get(d, "reason")), "cannot apply ThingBroken");
    pthread_mutex_unlock(&f->h.dl_mu);
}

/* What is not an event envelope never reaches the consumer: parked. */
static void test_malformed_payload_is_parked(void **state)
{
    fx_t *f = *state;
    start(f);
    assert_int_equal(bnb__events_inject(&f->h, TOPIC, "{not json", 9), 0);
    assert_int_equal(bnb__events_inject(&f->h, TOPIC, "{\"id\":\"x\"}", 10), 0);
    assert_int_equal(atomic_load(&C.calls), 0);
    int64_t dead = -1;
    assert_int_equal(f->cons->store->ops->dead_count(f->cons->store, &dead), 0);
    assert_int_equal(dead, 2);
    pthread_mutex_lock(&f->h.dl_mu);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_array_get(f->h.dead_letters, 0), "reason")), "malformed JSON"));
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(f->h.dead_letters, 1), "reason")),
                           "not an event envelope"));
    pthread_mutex_unlock(&f->h.dl_mu);
}

/* A paused consumer is not called; its events wait in the outbox. */
static void test_paused_consumer_waits(void **state)
{
    fx_t *f = *state;
    atomic_store(&f->cons->paused, 1);
    start(f);
    commit_event(f, "t4", "ThingMade");
    for (int i = 0; i < 20; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(5000);
    }
    assert_int_equal(atomic_load(&C.calls), 0);
    assert_int_equal(pending(f->prod->store), 1);
    atomic_store(&f->cons->paused, 0);
    bnb__events_wake(&f->h);
    assert_int_equal(run_until(f, 1), 0);
}

/* Stopping flushes the outbox synchronously: what was committed before
 * shutdown is delivered even though the loop never ran. */
static void test_stop_flushes_the_outbox(void **state)
{
    fx_t *f = *state;
    start(f);
    commit_event(f, "t5", "ThingMade");
    commit_event(f, "t6", "ThingMade");
    assert_int_equal(atomic_load(&C.calls), 0);
    bnb__events_stop(&f->h);
    f->started = 0;
    assert_int_equal(atomic_load(&C.calls), 2);
    assert_int_equal(pending(f->prod->store), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_event_reaches_the_consumer_and_leaves_the_outbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_consumer_gets_it_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_event_is_parked_with_the_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_payload_is_parked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paused_consumer_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_flushes_the_outbox, setup, teardown),
    };
    return cmocka_run_group_tests_name("host/events", tests, NULL, NULL);
}

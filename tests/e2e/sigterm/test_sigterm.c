/*
 * End-to-end: SIGTERM in the middle of a request burst loses no request.
 *
 * 8 client threads (4 over HTTP/2 via h2c upgrade, 4 over HTTP/1.1), each
 * on its own keep-alive connection, send 25 requests back to back (GET /rooms/{id},
 * GET /rooms, and every 4th a POST /rooms). When half of the 200 requests
 * are answered the host gets SIGTERM. What must hold, precisely:
 *
 *  1. Every request sent before SIGTERM (its send started before kill())
 *     gets a complete HTTP response: no transport error, status 200/201, or
 *     503 (answered while draining). These requests ride on connections that
 *     were established before SIGTERM (each thread's first request completes
 *     before the signal is sent).
 *  2. A request sent after SIGTERM either gets a complete response (2xx/503)
 *     or is refused at the connection level before any response byte
 *     (connection refused/closed, HTTP/2 GOAWAY then refused reconnect):
 *     never a response cut in the middle (status line seen, then an error).
 *  3. The host exits with status 0 (under ASan a leak makes it 23).
 *  4. Every room whose creation was answered 201 exists after a restart on
 *     the same data dir (an acknowledged write is durable).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define EACH    25

typedef struct result {
    long long t_start, t_end;
    long status;
    int curl_code;
    int http_version;
    long new_conn;
    char room_id[40]; /* for a 201 */
    char error[256];
} result_t;

typedef struct worker {
    int n;
    e2e_proto_t proto;
    int port;
    const char *token;
    const char *room_path;
    result_t res[EACH];
    int sent;
} worker_t;

static atomic_int done_count;
static atomic_llong kill_at; /* 0 until SIGTERM was sent */

static void *run_worker(void *p)
{
    worker_t *w = p;
    e2e_client_t *c = e2e_client_new(w->port);
    char body[256];
    for (int i = 0; c && i < EACH; i++) {
        result_t *r = &w->res[i];
        e2e_resp_t resp;
        e2e_req_t rq = {.proto = w->proto, .timeout_ms = 20000};
        if (i % 4 == 3) {
            snprintf(body, sizeof(body),
                     "{\"name\":\"burst %d/%d\",\"description\":\"\",\"city\":\"Burst\",\"pricePerNight\":100,"
                     "\"capacity\":1}",
                     w->n, i);
            rq.method = "POST";
            rq.path = "/rooms";
            rq.token = w->token;
            rq.body = body;
        } else {
            rq.method = "GET";
            rq.path = i % 2 ? "/rooms?city=Burst" : w->room_path;
        }
        r->t_start = e2e_now_ms();
        e2e_client_do(c, &rq, &resp);
        r->t_end = e2e_now_ms();
        r->status = resp.status;
        r->curl_code = resp.curl_code;
        r->http_version = resp.http_version;
        r->new_conn = resp.new_connections;
        snprintf(r->error, sizeof(r->error), "%s", resp.error);
        if (resp.status == 201)
            snprintf(r->room_id, sizeof(r->room_id), "%s", json_string_value(json_object_get(resp.json, "id")) ?: "");
        e2e_resp_free(&resp);
        w->sent = i + 1;
        atomic_fetch_add(&done_count, 1);
        /* once refused after SIGTERM, the host is gone: stop this client */
        if (r->status == 0 && atomic_load(&kill_at) != 0)
            break;
    }
    e2e_client_free(c);
    return NULL;
}

static int first_round_done(void *arg)
{
    worker_t *ws = arg;
    for (int i = 0; i < THREADS; i++)
        if (ws[i].sent < 1)
            return 0;
    return 1;
}

static int half_done(void *arg)
{
    (void)arg;
    return atomic_load(&done_count) >= THREADS * EACH / 2;
}

static void sigterm_mid_burst(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    worker_t *ws = calloc(THREADS, sizeof(*ws));
    pthread_t th[THREADS];
    char room_path[128];
    int failures = 0, answered = 0, drained = 0, refused = 0;

    assert_non_null(ws);
    assert_int_equal(e2e_host_start(&h, NULL), 0);
    char *tok = e2e_token(h, "harriet", "host", 0);
    assert_non_null(tok);
    e2e_resp_t r;
    assert_int_equal(e2e_call(h, E2E_HTTP1, "POST", "/rooms", tok,
                              "{\"name\":\"Anchor\",\"description\":\"\",\"city\":\"Burst\",\"pricePerNight\":100,"
                              "\"capacity\":1}",
                              &r),
                     0);
    assert_int_equal(r.status, 201);
    snprintf(room_path, sizeof(room_path), "/rooms/%s", json_string_value(json_object_get(r.json, "id")));
    e2e_resp_free(&r);

    atomic_store(&done_count, 0);
    atomic_store(&kill_at, 0);
    for (int i = 0; i < THREADS; i++) {
        ws[i] = (worker_t){.n = i,
                           .proto = i % 2 ? E2E_HTTP1 : E2E_HTTP2_UPGRADE,
                           .port = e2e_host_port(h),
                           .token = tok,
                           .room_path = room_path};
        assert_int_equal(pthread_create(&th[i], NULL, run_worker, &ws[i]), 0);
    }
    /* every connection is up and used, and half the burst is answered */
    assert_int_equal(e2e_wait_until(60000, 1, first_round_done, ws), 0);
    assert_int_equal(e2e_wait_until(60000, 1, half_done, NULL), 0);
    long long t_kill = e2e_now_ms();
    atomic_store(&kill_at, t_kill);
    assert_int_equal(e2e_host_signal(h, SIGTERM), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    int exit_status = e2e_host_wait_exit(h, 30000);

    for (int i = 0; i < THREADS; i++) {
        for (int j = 0; j < ws[i].sent; j++) {
            result_t *x = &ws[i].res[j];
            int before = x->t_start < t_kill;
            int complete = x->curl_code == 0 && x->status != 0;
            int status_ok = x->status == 200 || x->status == 201 || x->status == 503;
            const char *why = NULL;
            if (complete && !status_ok)
                why = "unexpected status";
            else if (complete && x->http_version != (ws[i].proto == E2E_HTTP2_UPGRADE ? 20 : 11))
                why = "wrong protocol";
            else if (!complete && before)
                why = "sent before SIGTERM but no complete response";
            else if (!complete && x->status != 0)
                why = "response cut after its status line";
            if (why) {
                print_error("thread %d (%s) request %d: %s: status %ld, curl %d (%s), started %lld ms %s SIGTERM\n", i,
                            ws[i].proto == E2E_HTTP2_UPGRADE ? "h2" : "h1", j, why, x->status, x->curl_code, x->error,
                            before ? t_kill - x->t_start : x->t_start - t_kill, before ? "before" : "after");
                failures++;
            }
            if (complete && x->status == 503)
                drained++;
            else if (complete)
                answered++;
            else
                refused++;
        }
    }
    print_message("burst: %d answered, %d answered 503 while draining, %d refused after SIGTERM; exit status %d\n",
                  answered, drained, refused, exit_status);
    assert_int_equal(failures, 0);
    assert_int_equal(exit_status, 0);
    assert_true(answered >= THREADS * EACH / 2);

    /* acknowledged creations survived */
    assert_int_equal(e2e_host_restart(h), 0);
    int checked = 0;
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < ws[i].sent; j++) {
            if (!ws[i].res[j].room_id[0])
                continue;
            char path[128];
            snprintf(path, sizeof(path), "/rooms/%s", ws[i].res[j].room_id);
            assert_int_equal(e2e_call(h, E2E_HTTP1, "GET", path, NULL, NULL, &r), 0);
            if (r.status != 200)
                print_error("acknowledged room %s is missing after restart (%ld)\n", ws[i].res[j].room_id, r.status);
            assert_int_equal(r.status, 200);
            e2e_resp_free(&r);
            checked++;
        }
    assert_true(checked > 0);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
    free(tok);
    free(ws);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sigterm_mid_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

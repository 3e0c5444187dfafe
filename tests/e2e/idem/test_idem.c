/*
 * End-to-end tests of the Idempotency-Key header (issue 16) on every route
 * that takes it: POST /rooms, POST /rooms/{id}/reviews, POST /reservations,
 * DELETE /reservations/{id}. For each: a retry after the answer (the stored
 * answer, `Idempotent-Replayed: true`, nothing done again), a retry while the
 * first is in flight (409), the key with another body (422), another user's
 * identical key (independent); malformed keys (400 naming the header); a
 * stored failure replayed; expiry; and a retry after the service aborted
 * between its commit and its answer (test.idempotency_abort_key).
 *
 * Runs all-in-one on SQLite (suite e2e) and, unchanged, on the distributed
 * topology (suite infra: room and reservation on MariaDB, through the edge;
 * e2e/idem-distributed), where the crash kills only the reservation (or
 * room) process and the retry goes through the edge to its restart; and
 * with every service on FerretDB (e2e/idem-distributed-mongo: the crash test
 * only, as room and reservation take seconds per request there).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define GOOD_CARD     "4111111111111111"
#define DECLINED_CARD "4000000000000002"
#define LEASE_S       5

static void date_in(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

typedef struct world {
    e2e_host_t *h;
    char *hal, *olga; /* hosts */
    char *gus, *eve;  /* guests */
} world_t;

static world_t W;

static const char *const host_env[] = {
    "BEARBNB_ROOM_TEST_IDEMPOTENCY_HOLD_KEY=hold-",
    "BEARBNB_RESERVATION_TEST_IDEMPOTENCY_HOLD_KEY=hold-",
    "BEARBNB_ROOM_TEST_IDEMPOTENCY_ABORT_KEY=boom-",
    "BEARBNB_RESERVATION_TEST_IDEMPOTENCY_ABORT_KEY=boom-",
    "BEARBNB_ROOM_IDEMPOTENCY_LEASE_S=5",
    "BEARBNB_RESERVATION_IDEMPOTENCY_LEASE_S=5",
    /* room and reservation on FerretDB (e2e/idem-distributed-mongo) take
     * seconds per request on this shared machine: no timeout in the way */
    "BEARBNB_GATEWAY_TIMEOUT_MS=60000",
    "BEARBNB_CALL_TIMEOUT_MS=10000",
    "BEARBNB_ROOM_IDEMPOTENCY_TTL_S=60",
    "BEARBNB_RESERVATION_IDEMPOTENCY_TTL_S=60",
    "BEARBNB_ADMIN=1",
    "BEARBNB_TEST_CLOCK=1",
    NULL,
};

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    e2e_host_opts_t o = {.env = host_env};
    if (e2e_host_start(&W.h, &o) != 0)
        return -1;
    W.hal = e2e_token(W.h, "hal", "host", 0);
    W.olga = e2e_token(W.h, "olga", "host", 0);
    W.gus = e2e_token(W.h, "gus", "guest", 0);
    W.eve = e2e_token(W.h, "eve", "guest", 0);
    return W.hal && W.olga && W.gus && W.eve ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(W.hal);
    free(W.olga);
    free(W.gus);
    free(W.eve);
    int rc = W.h ? e2e_host_stop(W.h) : 0;
    e2e_host_free(W.h);
    return rc == 0 ? 0 : -1;
}

/* One request with an Idempotency-Key header line (`key` NULL: none; the
 * whole "Name: value" / "Name;" line when it starts with "Idempotency-Key"). */
static void call_key(e2e_host_t *h, const char *method, const char *path, const char *tok, const char *body,
                     const char *key, e2e_resp_t *r)
{
    char line[600];
    const char *hdrs[2] = {NULL, NULL};
    if (key) {
        if (!strncmp(key, "Idempotency-Key", 15))
            snprintf(line, sizeof line, "%s", key);
        else
            snprintf(line, sizeof line, "Idempotency-Key: %s", key);
        hdrs[0] = line;
    }
    e2e_req_t rq = {.proto = E2E_HTTP1,
                    .method = method,
                    .path = path,
                    .token = tok,
                    .body = body,
                    .headers = hdrs,
                    .timeout_ms = 60000};
    e2e_http(h, &rq, r);
}

static const char *jstr(const e2e_resp_t *r, const char *k)
{
    return json_string_value(json_object_get(r->json, k));
}

static int replayed(const e2e_resp_t *r)
{
    return !strcmp(r->replayed, "true");
}

#define ROOM_BODY                                                                                                      \
    "{\"name\":\"Cabin\",\"description\":\"by the lake\",\"city\":\"Idem\",\"pricePerNight\":100,\"capacity\":2}"

static char *new_room(const char *tok)
{
    e2e_resp_t r;
    call_key(W.h, "POST", "/rooms", tok, ROOM_BODY, NULL, &r);
    assert_int_equal(r.status, 201);
    char *id = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    return id;
}

static void booking_body(const char *room, int from, int nights, const char *card, char *out, size_t n)
{
    char in[11], o[11];
    date_in(from, in);
    date_in(from + nights, o);
    snprintf(out, n, "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":\"%s\"}", room,
             in, o, card);
}

/* The number of reservations of the guest (all statuses) on its first page. */
static size_t my_reservations(const char *tok)
{
    e2e_resp_t r;
    call_key(W.h, "GET", "/reservations?limit=100", tok, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    size_t n = json_array_size(json_object_get(r.json, "items"));
    e2e_resp_free(&r);
    return n;
}

/* A first request running in another thread (a hold key makes it take 3 s). */
typedef struct bg {
    pthread_t t;
    const char *method, *path, *tok, *body, *key;
    e2e_host_t *h; /* NULL: W.h */
    e2e_resp_t r;
} bg_t;

static void *bg_run(void *arg)
{
    bg_t *b = arg;
    call_key(b->h ? b->h : W.h, b->method, b->path, b->tok, b->body, b->key, &b->r);
    return NULL;
}

/* A "hold-" key in flight: a retry is a 409 problem with Retry-After, the
 * first then answers `want`, and a later retry replays it. */
static void in_flight(const char *method, const char *path, const char *tok, const char *body, const char *key,
                      long want)
{
    bg_t b = {.method = method, .path = path, .tok = tok, .body = body, .key = key};
    assert_int_equal(pthread_create(&b.t, NULL, bg_run, &b), 0);
    usleep(1200 * 1000); /* the first has committed and holds 3 s */
    e2e_resp_t r;
    call_key(W.h, method, path, tok, body, key, &r);
    assert_true(e2e_is_problem(&r, 409));
    assert_string_equal(r.retry_after, "1");
    assert_non_null(strstr(jstr(&r, "detail"), "in progress"));
    e2e_resp_free(&r);
    pthread_join(b.t, NULL);
    assert_int_equal(b.r.status, want);
    assert_false(replayed(&b.r));
    call_key(W.h, method, path, tok, body, key, &r);
    assert_int_equal(r.status, want);
    assert_true(replayed(&r));
    assert_string_equal(r.body, b.r.body);
    e2e_resp_free(&r);
    e2e_resp_free(&b.r);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_malformed_keys(void **state)
{
    (void)state;
    char longkey[300];
    memset(longkey, 'k', 256);
    longkey[256] = '\0';
    const char *bad[] = {"Idempotency-Key;", longkey, "a b", "k\xc3\xa9y", "\"open", "a,b", "\"\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e2e_resp_t r;
        call_key(W.h, "POST", "/rooms", W.hal, ROOM_BODY, bad[i], &r);
        if (r.status != 400)
            fprintf(stderr, "key #%zu: %ld %s\n", i, r.status, r.body);
        assert_true(e2e_is_problem(&r, 400));
        assert_non_null(strstr(jstr(&r, "detail"), "Idempotency-Key"));
        e2e_resp_free(&r);
    }
    /* the longest key, and a structured-field string, are fine */
    longkey[255] = '\0';
    const char *good[] = {longkey, "\"quoted-key\"", "a.b:c~d+e/f=g_h-1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        e2e_resp_t r;
        call_key(W.h, "POST", "/rooms", W.hal, ROOM_BODY, good[i], &r);
        assert_int_equal(r.status, 201);
        assert_false(replayed(&r));
        e2e_resp_free(&r);
    }
}

static void test_rooms(void **state)
{
    (void)state;
    e2e_resp_t a, b, c, d;
    call_key(W.h, "POST", "/rooms", W.hal, ROOM_BODY, "room-k1", &a);
    assert_int_equal(a.status, 201);
    assert_false(replayed(&a));
    /* retry after the answer: the same room, not a second one */
    call_key(W.h, "POST", "/rooms", W.hal, ROOM_BODY, "room-k1", &b);
    assert_int_equal(b.status, 201);
    assert_true(replayed(&b));
    assert_string_equal(jstr(&a, "id"), jstr(&b, "id"));
    assert_string_equal(a.location, b.location);
    assert_string_equal(a.body, b.body);
    /* another body under the key: 422 */
    call_key(W.h, "POST", "/rooms", W.hal,
             "{\"name\":\"Other\",\"description\":\"x\",\"city\":\"Idem\",\"pricePerNight\":1,\"capacity\":1}",
             "room-k1", &c);
    assert_true(e2e_is_problem(&c, 422));
    assert_non_null(strstr(jstr(&c, "detail"), "Idempotency-Key"));
    /* another host's identical key is its own */
    call_key(W.h, "POST", "/rooms", W.olga, ROOM_BODY, "room-k1", &d);
    assert_int_equal(d.status, 201);
    assert_false(replayed(&d));
    assert_string_not_equal(jstr(&a, "id"), jstr(&d, "id"));
    /* the room exists once */
    char path[128];
    snprintf(path, sizeof path, "/rooms/%s", jstr(&a, "id"));
    e2e_resp_free(&c);
    call_key(W.h, "GET", path, NULL, NULL, NULL, &c);
    assert_int_equal(c.status, 200);
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    e2e_resp_free(&c);
    e2e_resp_free(&d);
    in_flight("POST", "/rooms", W.olga, ROOM_BODY, "hold-room", 201);
}

static void test_reviews(void **state)
{
    (void)state;
    char *room = new_room(W.hal), path[128];
    snprintf(path, sizeof path, "/rooms/%s/reviews", room);
    const char *body = "{\"rating\":4,\"content\":\"nice\"}";
    e2e_resp_t a, b, c, d;
    call_key(W.h, "POST", path, W.gus, body, "rev-k1", &a);
    assert_int_equal(a.status, 201);
    call_key(W.h, "POST", path, W.gus, body, "rev-k1", &b);
    assert_int_equal(b.status, 201); /* without the key it would be a 409 (one review per guest) */
    assert_true(replayed(&b));
    assert_string_equal(jstr(&a, "id"), jstr(&b, "id"));
    call_key(W.h, "POST", path, W.gus, "{\"rating\":1,\"content\":\"bad\"}", "rev-k1", &c);
    assert_true(e2e_is_problem(&c, 422));
    call_key(W.h, "POST", path, W.eve, body, "rev-k1", &d);
    assert_int_equal(d.status, 201);
    assert_false(replayed(&d));
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    e2e_resp_free(&c);
    e2e_resp_free(&d);
    /* the room counted two reviews, not three */
    snprintf(path, sizeof path, "/rooms/%s", room);
    call_key(W.h, "GET", path, NULL, NULL, NULL, &a);
    assert_int_equal(a.status, 200);
    assert_int_equal(json_integer_value(json_object_get(a.json, "reviewCnt")), 2);
    e2e_resp_free(&a);
    free(room);
    room = new_room(W.olga);
    snprintf(path, sizeof path, "/rooms/%s/reviews", room);
    in_flight("POST", path, W.gus, body, "hold-review", 201);
    free(room);
}

static void test_reservations(void **state)
{
    (void)state;
    char *room = new_room(W.hal), body[512], other[512];
    size_t before = my_reservations(W.gus);
    booking_body(room, 30, 2, GOOD_CARD, body, sizeof body);
    e2e_resp_t a, b, c, d;
    call_key(W.h, "POST", "/reservations", W.gus, body, "resv-k1", &a);
    assert_int_equal(a.status, 201);
    assert_string_equal(jstr(&a, "status"), "CONFIRMED");
    call_key(W.h, "POST", "/reservations", W.gus, body, "resv-k1", &b);
    assert_int_equal(b.status, 201); /* without the key: 409, the nights are taken (by itself) */
    assert_true(replayed(&b));
    assert_string_equal(a.body, b.body);
    assert_string_equal(a.location, b.location);
    assert_int_equal(my_reservations(W.gus), before + 1);
    booking_body(room, 40, 2, GOOD_CARD, other, sizeof other);
    call_key(W.h, "POST", "/reservations", W.gus, other, "resv-k1", &c);
    assert_true(e2e_is_problem(&c, 422));
    assert_int_equal(my_reservations(W.gus), before + 1);
    call_key(W.h, "POST", "/reservations", W.eve, other, "resv-k1", &d);
    assert_int_equal(d.status, 201);
    assert_false(replayed(&d));
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    e2e_resp_free(&c);
    e2e_resp_free(&d);
    /* a failed request's answer is stored too: declined (402), and invalid (422) */
    booking_body(room, 50, 2, DECLINED_CARD, body, sizeof body);
    call_key(W.h, "POST", "/reservations", W.gus, body, "resv-declined", &a);
    assert_true(e2e_is_problem(&a, 402));
    call_key(W.h, "POST", "/reservations", W.gus, body, "resv-declined", &b);
    assert_true(e2e_is_problem(&b, 402));
    assert_true(replayed(&b));
    assert_string_equal(jstr(&a, "reservationId"), jstr(&b, "reservationId"));
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    booking_body(room, 60, 0, GOOD_CARD, body, sizeof body);
    call_key(W.h, "POST", "/reservations", W.gus, body, "resv-invalid", &a);
    assert_true(e2e_is_problem(&a, 422));
    call_key(W.h, "POST", "/reservations", W.gus, body, "resv-invalid", &b);
    assert_true(e2e_is_problem(&b, 422));
    assert_true(replayed(&b));
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    booking_body(room, 70, 2, GOOD_CARD, body, sizeof body);
    in_flight("POST", "/reservations", W.gus, body, "hold-book", 201);
    free(room);
}

static char *book_ok(const char *tok, const char *room, int from)
{
    char body[512];
    booking_body(room, from, 1, GOOD_CARD, body, sizeof body);
    e2e_resp_t r;
    call_key(W.h, "POST", "/reservations", tok, body, NULL, &r);
    assert_int_equal(r.status, 201);
    char *id = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    return id;
}

static void test_cancel(void **state)
{
    (void)state;
    char *room = new_room(W.hal), path[128], path2[128];
    char *r1 = book_ok(W.gus, room, 100), *r2 = book_ok(W.gus, room, 102), *r3 = book_ok(W.eve, room, 104),
         *r4 = book_ok(W.gus, room, 106);
    snprintf(path, sizeof path, "/reservations/%s", r1);
    e2e_resp_t a, b, c, d;
    call_key(W.h, "DELETE", path, W.gus, NULL, "del-k1", &a);
    assert_int_equal(a.status, 202);
    call_key(W.h, "DELETE", path, W.gus, NULL, "del-k1", &b);
    assert_int_equal(b.status, 202);
    assert_true(replayed(&b));
    assert_string_equal(a.body, b.body);
    /* the key on another reservation: another request, 422 */
    snprintf(path2, sizeof path2, "/reservations/%s", r2);
    call_key(W.h, "DELETE", path2, W.gus, NULL, "del-k1", &c);
    assert_true(e2e_is_problem(&c, 422));
    e2e_resp_free(&c);
    call_key(W.h, "GET", path2, W.gus, NULL, NULL, &c);
    assert_int_equal(c.status, 200);
    assert_string_equal(jstr(&c, "status"), "CONFIRMED");
    /* another guest's identical key is its own */
    snprintf(path2, sizeof path2, "/reservations/%s", r3);
    call_key(W.h, "DELETE", path2, W.eve, NULL, "del-k1", &d);
    assert_int_equal(d.status, 202);
    assert_false(replayed(&d));
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    e2e_resp_free(&c);
    e2e_resp_free(&d);
    /* the key of a POST cannot be reused for a DELETE */
    snprintf(path2, sizeof path2, "/reservations/%s", r2);
    call_key(W.h, "DELETE", path2, W.gus, NULL, "resv-k1", &a);
    assert_true(e2e_is_problem(&a, 422));
    e2e_resp_free(&a);
    snprintf(path2, sizeof path2, "/reservations/%s", r4);
    in_flight("DELETE", path2, W.gus, NULL, "hold-cancel", 202);
    free(r1);
    free(r2);
    free(r3);
    free(r4);
    free(room);
}

/* Keys are forgotten after idempotency_ttl_s (60 s here): the same key then
 * starts a new request. The host clock moves instead of the test sleeping. */
static void test_expiry(void **state)
{
    (void)state;
    if (e2e_host_distributed(W.h)) {
        skip(); /* one clock per process there: the all-in-one run covers it */
        return;
    }
    e2e_resp_t a, b;
    call_key(W.h, "POST", "/rooms", W.hal, ROOM_BODY, "room-exp", &a);
    assert_int_equal(a.status, 201);
    call_key(W.h, "POST", "/admin/clock?advance_ms=61000", NULL, NULL, NULL, &b);
    assert_int_equal(b.status, 200);
    e2e_resp_free(&b);
    call_key(W.h, "POST", "/rooms", W.hal, ROOM_BODY, "room-exp", &b);
    assert_int_equal(b.status, 201);
    assert_false(replayed(&b));
    assert_string_not_equal(jstr(&a, "id"), jstr(&b, "id"));
    e2e_resp_free(&a);
    e2e_resp_free(&b);
}

/* The process (all-in-one: the host; distributed: the service) aborts right
 * after the commit of a request whose key starts with "boom-", before it
 * answers. The client sees a broken connection (or a 5xx from the edge); once
 * the service is back and the lease ran out, the retry gets the answer of what
 * was committed, and nothing was done twice. Returns the retry's status; *out
 * (caller frees) its JSON body. */
static long crash_and_retry(const char *service, const char *method, const char *path, const char *tok,
                            const char *body, const char *key, json_t **out)
{
    e2e_host_t *part = e2e_host_part(W.h, service);
    e2e_host_t *proc = part ? part : W.h;
    e2e_resp_t r;
    call_key(W.h, method, path, tok, body, key, &r);
    if (!(r.status == 0 || r.status >= 500))
        fprintf(stderr, "%s %s with %s: %ld %s\n", method, path, key, r.status, r.body);
    assert_true(r.status == 0 || r.status >= 500);
    e2e_resp_free(&r);
    for (int i = 0; i < 100 && e2e_host_pid(proc) && kill(e2e_host_pid(proc), 0) == 0; i++) {
        int st;
        if (waitpid(e2e_host_pid(proc), &st, WNOHANG) > 0)
            break;
        usleep(100 * 1000);
    }
    e2e_host_kill(proc); /* reaps it */
    assert_int_equal(e2e_host_restart(proc), 0);
    usleep((LEASE_S * 1000 + 300) * 1000); /* the dead run's lease runs out */
    call_key(W.h, method, path, tok, body, key, &r);
    long status = r.status;
    fprintf(stderr, "retry of %s %s after the crash: %ld %s\n", method, path, r.status, r.body);
    e2e_resp_t again;
    call_key(W.h, method, path, tok, body, key, &again);
    assert_int_equal(again.status, status);
    assert_true(replayed(&again));
    assert_string_equal(again.body, r.body);
    e2e_resp_free(&again);
    *out = json_incref(r.json);
    e2e_resp_free(&r);
    return status;
}

static size_t count_items(const char *tok, const char *path)
{
    e2e_resp_t r;
    call_key(W.h, "GET", path, tok, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    size_t n = json_array_size(json_object_get(r.json, "items"));
    e2e_resp_free(&r);
    return n;
}

typedef struct confirmed {
    const char *tok, *path;
} confirmed_t;

static int cond_confirmed(void *arg)
{
    confirmed_t *c = arg;
    e2e_resp_t r;
    call_key(W.h, "GET", c->path, c->tok, NULL, NULL, &r);
    int ok = r.status == 200 && jstr(&r, "status") && !strcmp(jstr(&r, "status"), "CONFIRMED");
    e2e_resp_free(&r);
    return ok;
}

static void test_crash_between_commit_and_answer(void **state)
{
    (void)state;
    char *room = new_room(W.hal), body[512], path[128];
    json_t *j = NULL;

    /* POST /rooms: one room, 201 */
    const char *crash_room =
        "{\"name\":\"Crash\",\"description\":\"x\",\"city\":\"Crashtown\",\"pricePerNight\":100,\"capacity\":2}";
    assert_int_equal(crash_and_retry("room", "POST", "/rooms", W.olga, crash_room, "boom-room", &j), 201);
    assert_int_equal(count_items(NULL, "/rooms?city=Crashtown"), 1);
    json_decref(j);

    /* POST /rooms/{id}/reviews: one review, counted once */
    snprintf(path, sizeof path, "/rooms/%s/reviews", room);
    assert_int_equal(
        crash_and_retry("room", "POST", path, W.eve, "{\"rating\":5,\"content\":\"ok\"}", "boom-review", &j), 201);
    json_decref(j);
    assert_int_equal(count_items(NULL, path), 1);
    e2e_resp_t r;
    snprintf(path, sizeof path, "/rooms/%s", room);
    call_key(W.h, "GET", path, NULL, NULL, NULL, &r);
    assert_int_equal(json_integer_value(json_object_get(r.json, "reviewCnt")), 1);
    e2e_resp_free(&r);

    /* POST /reservations: one reservation (202 PENDING or already 201 CONFIRMED), CONFIRMED in the end */
    size_t before = count_items(W.eve, "/reservations?limit=100");
    booking_body(room, 200, 3, GOOD_CARD, body, sizeof body);
    long st = crash_and_retry("reservation", "POST", "/reservations", W.eve, body, "boom-book", &j);
    assert_true(st == 201 || st == 202);
    assert_int_equal(count_items(W.eve, "/reservations?limit=100"), before + 1);
    const char *id = json_string_value(json_object_get(j, "id"));
    assert_non_null(id);
    snprintf(path, sizeof path, "/reservations/%s", id);
    json_decref(j);
    confirmed_t c = {W.eve, path};
    assert_int_equal(e2e_wait_until(60000, 100, cond_confirmed, &c), 0);

    /* DELETE /reservations/{id}: 202, cancelled once */
    assert_int_equal(crash_and_retry("reservation", "DELETE", path, W.eve, NULL, "boom-cancel", &j), 202);
    assert_int_equal(count_items(W.eve, "/reservations?limit=100"), before + 1);
    json_decref(j);
    free(room);
}

/* Two processes of each service on the same stores (distributed topology,
 * replicas = 2): the key's lease and answer are in the store, so a retry that
 * reaches the other process while the first runs is a 409 there, and a later
 * one gets the stored answer there; one reservation in all. */
static void test_two_processes(void **state)
{
    (void)state;
    if (!e2e_host_distributed(W.h)) {
        skip();
        return;
    }
    e2e_host_t *h = NULL;
    e2e_host_opts_t o = {.env = host_env, .replicas = 2, .ready_timeout_ms = 120000};
    assert_int_equal(e2e_host_start(&h, &o), 0);
    e2e_host_t *edge2 = e2e_host_part(h, "edge2");
    assert_non_null(edge2);
    char *hal = e2e_token(h, "hal", "host", 0), *gus = e2e_token(h, "gus", "guest", 0), body[512];
    e2e_resp_t r;
    call_key(h, "POST", "/rooms", hal, ROOM_BODY, NULL, &r);
    assert_int_equal(r.status, 201);
    booking_body(jstr(&r, "id"), 20, 2, GOOD_CARD, body, sizeof body);
    e2e_resp_free(&r);
    bg_t b = {.method = "POST", .path = "/reservations", .tok = gus, .body = body, .key = "hold-two", .h = h};
    assert_int_equal(pthread_create(&b.t, NULL, bg_run, &b), 0);
    usleep(1500 * 1000); /* through the first edge to the first reservation process, holding 3 s */
    call_key(edge2, "POST", "/reservations", gus, body, "hold-two", &r);
    if (r.status != 409)
        fprintf(stderr, "the retry at the second process: %ld %s\n", r.status, r.body);
    assert_true(e2e_is_problem(&r, 409));
    e2e_resp_free(&r);
    pthread_join(b.t, NULL);
    assert_int_equal(b.r.status, 201);
    call_key(edge2, "POST", "/reservations", gus, body, "hold-two", &r);
    assert_int_equal(r.status, 201);
    assert_true(replayed(&r));
    assert_string_equal(r.body, b.r.body);
    e2e_resp_free(&r);
    e2e_resp_free(&b.r);
    call_key(edge2, "GET", "/reservations?limit=100", gus, NULL, NULL, &r);
    assert_int_equal(json_array_size(json_object_get(r.json, "items")), 1);
    e2e_resp_free(&r);
    free(hal);
    free(gus);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_keys),
        cmocka_unit_test(test_rooms),
        cmocka_unit_test(test_reviews),
        cmocka_unit_test(test_reservations),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_crash_between_commit_and_answer),
        cmocka_unit_test(test_two_processes),
        cmocka_unit_test(test_expiry), /* last: it moves the host clock, which a restart resets */
    };
    const char *only = getenv("BNB_E2E_ONLY"); /* e2e/idem-distributed-mongo: the crash test */
    if (only && *only)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, setup, teardown);
}

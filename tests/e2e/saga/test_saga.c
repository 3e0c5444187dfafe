/*
 * End-to-end tests of the booking saga (reservation + payment plugins) on a
 * real all-in-one bearbnb process: booking, payment, cancel/refund, declined
 * cards, concurrent double booking, payment outage with the circuit breaker,
 * duplicated events, poison events, room deletion, authorization, and the
 * card number never stored or logged in clear text outside payment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define GOOD_CARD     "4111111111111111"
#define DECLINED_CARD "4000000000000002"
#define SAGA_WAIT_MS  20000

/* "YYYY-MM-DD" of today (UTC) + days. */
static void date_in(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

typedef struct world {
    e2e_host_t *h;
    char *host_tok;   /* host "hal" */
    char *guest_tok;  /* guest "gus" */
    char *other_tok;  /* guest "eve" */
    char *other_host; /* host "olga" */
} world_t;

static int world_start(world_t *w, const char *const *env)
{
    memset(w, 0, sizeof *w);
    e2e_host_opts_t o = {.env = env};
    if (e2e_host_start(&w->h, &o) != 0)
        return -1;
    w->host_tok = e2e_token(w->h, "hal", "host", 0);
    w->guest_tok = e2e_token(w->h, "gus", "guest", 0);
    w->other_tok = e2e_token(w->h, "eve", "guest", 0);
    w->other_host = e2e_token(w->h, "olga", "host", 0);
    return w->host_tok && w->guest_tok && w->other_tok && w->other_host ? 0 : -1;
}

static void world_stop(world_t *w)
{
    free(w->host_tok);
    free(w->guest_tok);
    free(w->other_tok);
    free(w->other_host);
    if (w->h)
        assert_int_equal(e2e_host_stop(w->h), 0);
    e2e_host_free(w->h);
}

static const char *jstr(const e2e_resp_t *r, const char *k)
{
    return json_string_value(json_object_get(r->json, k));
}

/* A new room of host "hal"; caller frees. */
static char *create_room(world_t *w, long price, int capacity)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"name\":\"Cabin\",\"description\":\"by the lake\",\"city\":\"Bern\",\"pricePerNight\":%ld,"
             "\"capacity\":%d}",
             price, capacity);
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, "POST", "/rooms", w->host_tok, body, &r), 0);
    assert_int_equal(r.status, 201);
    assert_non_null(jstr(&r, "id"));
    char *id = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    return id;
}

static void book(const world_t *w, const char *tok, const char *room, int from, int nights, int guests,
                 const char *card, e2e_resp_t *r)
{
    char in[11], out[11], body[512];
    date_in(from, in);
    date_in(from + nights, out);
    snprintf(body, sizeof body,
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":%d,\"card\":{\"number\":\"%s\"}}",
             room, in, out, guests, card);
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, "POST", "/reservations", tok, body, r), 0);
}

static long status_of(const world_t *w, const char *tok, const char *method, const char *fmt, const char *id)
{
    char path[256];
    snprintf(path, sizeof path, fmt, id);
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, method, path, tok, NULL, &r), 0);
    long s = r.status;
    e2e_resp_free(&r);
    return s;
}

/* GET path as tok and the value of field `k` (caller frees) or NULL. */
static char *field_of(const world_t *w, const char *tok, const char *fmt, const char *id, const char *k)
{
    char path[256];
    snprintf(path, sizeof path, fmt, id);
    e2e_resp_t r;
    if (e2e_call(w->h, E2E_HTTP1, "GET", path, tok, NULL, &r) != 0 || r.status != 200) {
        e2e_resp_free(&r);
        return NULL;
    }
    json_t *o = r.json, *items = json_object_get(r.json, "items");
    if (json_is_array(items)) /* a page (GET /payments?reservationId=): its one item */
        o = json_array_get(items, 0);
    const char *v = json_string_value(json_object_get(o, k));
    char *s = v ? strdup(v) : NULL;
    e2e_resp_free(&r);
    return s;
}

/* The number of items of the page at `path` as tok (asserts a page shape). */
static size_t page_size(const world_t *w, const char *tok, const char *path)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, "GET", path, tok, NULL, &r), 0);
    if (r.status != 200)
        fprintf(stderr, "GET %s: %ld %s\n", path, r.status, r.body);
    assert_int_equal(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    assert_true(json_is_array(items));
    assert_non_null(json_object_get(r.json, "next"));
    size_t n = json_array_size(items);
    e2e_resp_free(&r);
    return n;
}

typedef struct waitq {
    const world_t *w;
    const char *tok, *fmt, *id, *want;
} waitq_t;

static int cond_field(void *arg)
{
    waitq_t *q = arg;
    char *s = field_of(q->w, q->tok, q->fmt, q->id, "status");
    int ok = s && !strcmp(s, q->want);
    free(s);
    return ok;
}

/* Wait until GET fmt%id as tok has status `want`; assert it happens. */
static void expect_status(const world_t *w, const char *tok, const char *fmt, const char *id, const char *want)
{
    waitq_t q = {w, tok, fmt, id, want};
    if (e2e_wait_until(SAGA_WAIT_MS, 50, cond_field, &q) != 0) {
        char *s = field_of(w, tok, fmt, id, "status");
        fprintf(stderr, "%s: %s stayed %s, expected %s\n", fmt, id, s ? s : "(none)", want);
        free(s);
        fail();
    }
}

#define RES "/reservations/%s"
#define PAY "/payments?reservationId=%s"

/* Value of the first /metrics sample whose line starts with `prefix`, or -1. */
static double metric(const world_t *w, const char *prefix)
{
    e2e_resp_t r;
    double v = -1;
    if (e2e_call(w->h, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &r) == 0 && r.status == 200) {
        for (char *line = r.body; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            if (!strncmp(line, prefix, strlen(prefix))) {
                char *sp = strrchr(line, ' ');
                if (sp)
                    v = strtod(sp + 1, NULL);
                break;
            }
            line = nl ? nl + 1 : NULL;
        }
    }
    e2e_resp_free(&r);
    return v;
}

static void admin(const world_t *w, const char *path, long want)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, "POST", path, NULL, NULL, &r), 0);
    if (r.status != want)
        fprintf(stderr, "POST %s: %ld %s\n", path, r.status, r.body);
    assert_int_equal(r.status, want);
    e2e_resp_free(&r);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_book_pay_cancel(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, NULL), 0);
    char *room = create_room(&w, 12000, 2);
    e2e_resp_t r;

    book(&w, w.guest_tok, room, 10, 3, 2, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(jstr(&r, "status"), "CONFIRMED");
    assert_int_equal(json_integer_value(json_object_get(r.json, "amount")), 36000);
    assert_non_null(jstr(&r, "paymentId"));
    char *id = strdup(jstr(&r, "id")), *pid = strdup(jstr(&r, "paymentId"));
    e2e_resp_free(&r);

    /* the guest and the room's host see it; nobody else does */
    char *s = field_of(&w, w.guest_tok, RES, id, "status");
    assert_string_equal(s, "CONFIRMED");
    free(s);
    s = field_of(&w, w.host_tok, RES, id, "guestId");
    assert_string_equal(s, "gus");
    free(s);
    assert_int_equal(status_of(&w, w.other_tok, "GET", RES, id), 404);
    assert_int_equal(status_of(&w, w.other_host, "GET", RES, id), 404);
    assert_int_equal(status_of(&w, w.other_tok, "DELETE", RES, id), 404);
    assert_int_equal(status_of(&w, w.host_tok, "DELETE", RES, id), 403);

    /* the payment: APPROVED for the amount, visible to payer and host only */
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "GET", "/payments/x", w.guest_tok, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    e2e_resp_free(&r);
    char path[256];
    snprintf(path, sizeof path, "/payments/%s", pid);
    assert_int_equal(e2e_call(w.h, E2E_HTTP2, "GET", path, w.guest_tok, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(&r, "status"), "APPROVED");
    assert_string_equal(jstr(&r, "reservationId"), id);
    assert_int_equal(json_integer_value(json_object_get(r.json, "amount")), 36000);
    assert_null(strstr(r.body, GOOD_CARD)); /* never the full number */
    e2e_resp_free(&r);
    assert_int_equal(status_of(&w, w.host_tok, "GET", "/payments/%s", pid), 200);
    assert_int_equal(status_of(&w, w.other_tok, "GET", "/payments/%s", pid), 404);

    /* my lists (pages); another guest's page of that reservation's payments is empty */
    assert_int_equal(page_size(&w, w.guest_tok, "/reservations"), 1);
    assert_int_equal(page_size(&w, w.other_tok, "/reservations"), 0);
    assert_int_equal(page_size(&w, w.host_tok, "/reservations"), 1);
    assert_int_equal(page_size(&w, w.host_tok, "/reservations?status=CONFIRMED"), 1);
    assert_int_equal(page_size(&w, w.host_tok, "/reservations?status=PENDING"), 0);
    assert_int_equal(page_size(&w, w.guest_tok, "/payments"), 1);
    assert_int_equal(page_size(&w, w.host_tok, "/payments"), 1);
    assert_int_equal(page_size(&w, w.other_tok, "/payments"), 0);
    snprintf(path, sizeof path, PAY, id);
    assert_int_equal(page_size(&w, w.other_tok, path), 0);
    assert_int_equal(page_size(&w, w.guest_tok, path), 1);

    /* overlapping dates are refused, adjacent ones are not */
    book(&w, w.other_tok, room, 12, 2, 1, GOOD_CARD, &r);
    assert_true(e2e_is_problem(&r, 409));
    e2e_resp_free(&r);
    book(&w, w.other_tok, room, 13, 1, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    e2e_resp_free(&r);

    /* validation */
    book(&w, w.other_tok, room, 30, 2, 3, GOOD_CARD, &r); /* over capacity */
    assert_true(e2e_is_problem(&r, 422));
    e2e_resp_free(&r);
    book(&w, w.other_tok, room, 30, 2, 0, GOOD_CARD, &r);
    assert_true(e2e_is_problem(&r, 422));
    e2e_resp_free(&r);
    book(&w, w.other_tok, room, 30, 0, 1, GOOD_CARD, &r); /* checkOut == checkIn */
    assert_true(e2e_is_problem(&r, 422));
    e2e_resp_free(&r);
    book(&w, w.other_tok, room, -2, 1, 1, GOOD_CARD, &r); /* past */
    assert_true(e2e_is_problem(&r, 422));
    e2e_resp_free(&r);
    book(&w, w.other_tok, room, 30, 366, 1, GOOD_CARD, &r);
    assert_true(e2e_is_problem(&r, 422));
    e2e_resp_free(&r);
    book(&w, w.other_tok, "no-such-room", 30, 1, 1, GOOD_CARD, &r);
    assert_true(e2e_is_problem(&r, 404));
    e2e_resp_free(&r);
    const char *bad[] = {
        "{\"roomId\":\"r\",\"checkIn\":\"2099-01-01\",\"checkOut\":\"2099-01-02\",\"guests\":1}",
        "{\"roomId\":\"r\",\"checkIn\":\"2099-01-01\",\"checkOut\":\"2099-01-02\",\"guests\":\"1\",\"card\":\"1\"}",
        "{\"roomId\":7,\"checkIn\":\"2099-01-01\",\"checkOut\":\"2099-01-02\",\"guests\":1,\"card\":\"1\"}",
        "{\"roomId\":\"r\",\"checkIn\":\"2099-01-01\",\"checkOut\":\"2099-01-02\",\"guests\":1,\"card\":\"1\","
        "\"price\":1}",
    };
    const char *named[] = {"card", "guests", "roomId", "price"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(e2e_call(w.h, E2E_HTTP1, "POST", "/reservations", w.other_tok, bad[i], &r), 0);
        assert_true(e2e_is_problem(&r, 400));
        assert_non_null(strstr(r.body, named[i]));
        e2e_resp_free(&r);
    }
    book(&w, w.host_tok, room, 40, 1, 1, GOOD_CARD, &r); /* hosts do not book */
    assert_int_equal(r.status, 403);
    e2e_resp_free(&r);

    /* cancel -> CANCEL_REQUESTED -> refund -> CANCELLED */
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "DELETE", "/reservations/x-unknown", w.guest_tok, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    e2e_resp_free(&r);
    snprintf(path, sizeof path, "/reservations/%s", id);
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "DELETE", path, w.guest_tok, NULL, &r), 0);
    assert_int_equal(r.status, 202);
    assert_true(!strcmp(jstr(&r, "status"), "CANCEL_REQUESTED") || !strcmp(jstr(&r, "status"), "CANCELLED"));
    e2e_resp_free(&r);
    expect_status(&w, w.guest_tok, RES, id, "CANCELLED");
    expect_status(&w, w.guest_tok, PAY, id, "CANCELLED");
    expect_status(&w, w.host_tok, PAY, id, "CANCELLED");

    /* its nights are free again */
    book(&w, w.other_tok, room, 10, 3, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(jstr(&r, "status"), "CONFIRMED");
    e2e_resp_free(&r);

    free(id);
    free(pid);
    free(room);
    world_stop(&w);
}

static void test_declined_card(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, NULL), 0);
    char *room = create_room(&w, 5000, 4);
    e2e_resp_t r;
    book(&w, w.guest_tok, room, 20, 2, 1, DECLINED_CARD, &r);
    assert_true(e2e_is_problem(&r, 402));
    const char *slash = strrchr(r.location, '/');
    assert_non_null(slash);
    char *id = strdup(slash + 1);
    assert_non_null(strstr(r.body, id));
    /* the problem names the reservation in a member of its own */
    assert_non_null(jstr(&r, "reservationId"));
    assert_string_equal(jstr(&r, "reservationId"), id);
    e2e_resp_free(&r);
    char *s = field_of(&w, w.guest_tok, RES, id, "status");
    assert_string_equal(s, "REJECTED");
    free(s);
    expect_status(&w, w.guest_tok, PAY, id, "DECLINED");
    /* cancelling a rejected reservation is a conflict */
    assert_int_equal(status_of(&w, w.guest_tok, "DELETE", RES, id), 409);
    /* same dates bookable again */
    book(&w, w.other_tok, room, 20, 2, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(jstr(&r, "status"), "CONFIRMED");
    assert_int_equal(json_integer_value(json_object_get(r.json, "amount")), 10000);
    e2e_resp_free(&r);
    free(id);
    free(room);
    world_stop(&w);
}

/* ---- concurrency ---- */

#define NTHREADS 50

typedef struct racer {
    const world_t *w;
    const char *room;
    const char *tok;
    pthread_barrier_t *go;
    int shift;
    long status;
} racer_t;

static void *race(void *arg)
{
    racer_t *rc = arg;
    char in[11], out[11], body[512];
    date_in(50 + rc->shift, in); /* [50,53), [51,54), [52,55): every pair overlaps */
    date_in(53 + rc->shift, out);
    snprintf(body, sizeof body,
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":\"" GOOD_CARD "\"}",
             rc->room, in, out);
    e2e_client_t *c = e2e_client_new(e2e_host_port(rc->w->h));
    e2e_req_t rq = {.proto = E2E_HTTP1,
                    .method = "POST",
                    .path = "/reservations",
                    .token = rc->tok,
                    .body = body,
                    .timeout_ms = 60000};
    e2e_resp_t r;
    pthread_barrier_wait(rc->go);
    rc->status = c && e2e_client_do(c, &rq, &r) == 0 ? r.status : -1;
    if (c)
        e2e_resp_free(&r);
    e2e_client_free(c);
    return NULL;
}

static void test_concurrent_double_booking(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, NULL), 0);
    char *room = create_room(&w, 9900, 2);
    pthread_t th[NTHREADS];
    racer_t rc[NTHREADS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, NTHREADS);
    for (int i = 0; i < NTHREADS; i++) {
        rc[i] = (racer_t){&w, room, i % 2 ? w.guest_tok : w.other_tok, &go, i % 3, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &rc[i]), 0);
    }
    int created = 0, conflict = 0, other = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        if (rc[i].status == 201)
            created++;
        else if (rc[i].status == 409)
            conflict++;
        else {
            fprintf(stderr, "racer %d: status %ld\n", i, rc[i].status);
            other++;
        }
    }
    pthread_barrier_destroy(&go);
    fprintf(stderr, "concurrent bookings: %d x 201, %d x 409, %d other\n", created, conflict, other);
    assert_int_equal(created, 1);
    assert_int_equal(conflict, NTHREADS - 1);
    /* the stored calendar agrees: one reservation held across both guests */
    e2e_resp_t r;
    size_t held = 0;
    const char *toks[] = {w.guest_tok, w.other_tok};
    for (int t = 0; t < 2; t++)
        held += page_size(&w, toks[t], "/reservations");
    (void)r;
    assert_int_equal(held, 1);
    free(room);
    world_stop(&w);
}

/* ---- payment outage, breaker, fallback ---- */

static const char *const outage_env[] = {"BEARBNB_ADMIN=1",
                                         "BEARBNB_BREAKER_MINIMUM_CALLS=2",
                                         "BEARBNB_BREAKER_WINDOW=4",
                                         "BEARBNB_BREAKER_WAIT_OPEN_MS=600000",
                                         "BEARBNB_CALL_TIMEOUT_MS=1000",
                                         NULL};

#define NPENDING 6

static void test_payment_down_fallback(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, outage_env), 0);
    char *room = create_room(&w, 7000, 2);
    e2e_resp_t r;
    char *ids[NPENDING];

    assert_int_equal(metric(&w, "bearbnb_breaker_state{service=\"payment\"}") > 0, 0);
    /* reservation learns payment's card key with its first booking (or from
     * reservation.payment_key_file); after that it seals cards while payment is down */
    book(&w, w.other_tok, room, 200, 1, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    e2e_resp_free(&r);
    admin(&w, "/admin/plugins/payment/pause", 200);
    for (int i = 0; i < NPENDING; i++) {
        long long t0 = e2e_now_ms();
        book(&w, w.guest_tok, room, 10 + 3 * i, 2, 1, GOOD_CARD, &r);
        long long dt = e2e_now_ms() - t0;
        fprintf(stderr, "booking %d with payment paused: %ld in %lld ms\n", i, r.status, dt);
        assert_int_equal(r.status, 202);
        assert_string_equal(jstr(&r, "status"), "PENDING");
        assert_int_equal(json_integer_value(json_object_get(r.json, "amount")), 14000);
        ids[i] = strdup(jstr(&r, "id"));
        e2e_resp_free(&r);
    }
    double br = metric(&w, "bearbnb_breaker_state{service=\"payment\"}");
    fprintf(stderr, "breaker state after %d failed calls: %g\n", NPENDING, br);
    assert_true(br == 1);
    /* pending reservations hold their nights */
    book(&w, w.other_tok, room, 10, 1, 1, GOOD_CARD, &r);
    assert_true(e2e_is_problem(&r, 409));
    e2e_resp_free(&r);
    char *s = field_of(&w, w.guest_tok, RES, ids[0], "status");
    assert_string_equal(s, "PENDING");
    free(s);
    /* cancelling a PENDING one: CANCEL_REQUESTED now, CANCELLED once payment answers */
    assert_int_equal(status_of(&w, w.guest_tok, "DELETE", RES, ids[NPENDING - 1]), 202);

    long long t0 = e2e_now_ms();
    admin(&w, "/admin/plugins/payment/resume", 200);
    for (int i = 0; i < NPENDING - 1; i++) {
        expect_status(&w, w.guest_tok, RES, ids[i], "CONFIRMED");
        expect_status(&w, w.guest_tok, PAY, ids[i], "APPROVED");
    }
    expect_status(&w, w.guest_tok, RES, ids[NPENDING - 1], "CANCELLED");
    expect_status(&w, w.guest_tok, PAY, ids[NPENDING - 1], "CANCELLED");
    fprintf(stderr, "all pending reservations final %lld ms after resume\n", e2e_now_ms() - t0);
    for (int i = 0; i < NPENDING; i++)
        free(ids[i]);
    free(room);
    world_stop(&w);
}

/* ---- duplicated events ---- */

static const char *const twice_env[] = {"BEARBNB_EVENTS_DELIVER_TWICE=1", "BEARBNB_ADMIN=1", NULL};

static void test_events_delivered_twice(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, twice_env), 0);
    char *room = create_room(&w, 3000, 2);
    e2e_resp_t r;
    char *a, *b, *c, *d;

    book(&w, w.guest_tok, room, 5, 2, 1, GOOD_CARD, &r); /* stays CONFIRMED */
    assert_int_equal(r.status, 201);
    a = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    book(&w, w.guest_tok, room, 8, 2, 1, DECLINED_CARD, &r);
    assert_int_equal(r.status, 402);
    b = strdup(strrchr(r.location, '/') + 1);
    e2e_resp_free(&r);
    book(&w, w.guest_tok, room, 11, 2, 1, GOOD_CARD, &r); /* cancelled */
    assert_int_equal(r.status, 201);
    c = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    assert_int_equal(status_of(&w, w.guest_tok, "DELETE", RES, c), 202);
    /* the event path: payment paused, so ReservationPlaced (twice) pays */
    admin(&w, "/admin/plugins/payment/pause", 200);
    book(&w, w.guest_tok, room, 14, 2, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 202);
    d = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    admin(&w, "/admin/plugins/payment/resume", 200);

    expect_status(&w, w.guest_tok, RES, a, "CONFIRMED");
    expect_status(&w, w.guest_tok, RES, b, "REJECTED");
    expect_status(&w, w.guest_tok, RES, c, "CANCELLED");
    expect_status(&w, w.guest_tok, RES, d, "CONFIRMED");
    expect_status(&w, w.guest_tok, PAY, a, "APPROVED");
    expect_status(&w, w.guest_tok, PAY, b, "DECLINED");
    expect_status(&w, w.guest_tok, PAY, c, "CANCELLED");
    expect_status(&w, w.guest_tok, PAY, d, "APPROVED");

    /* one payment per reservation, counters not doubled */
    assert_int_equal(page_size(&w, w.guest_tok, "/payments"), 4);
    assert_int_equal(page_size(&w, w.guest_tok, "/reservations"), 4);
    /* let any duplicate still in flight land before counting */
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    double approved = metric(&w, "bearbnb_payment_approved_total");
    double declined = metric(&w, "bearbnb_payment_declined_total");
    double refunded = metric(&w, "bearbnb_payment_refunded_total");
    fprintf(stderr, "payment counters: approved %g declined %g refunded %g\n", approved, declined, refunded);
    assert_true(approved == 3);
    assert_true(declined == 1);
    assert_true(refunded == 1);
    free(a);
    free(b);
    free(c);
    free(d);
    free(room);
    world_stop(&w);
}

/* ---- poison events ---- */

static void test_poison_event(void **state)
{
    (void)state;
    const char *const env[] = {"BEARBNB_ADMIN=1", NULL};
    world_t w;
    assert_int_equal(world_start(&w, env), 0);
    char *room = create_room(&w, 4000, 2);
    e2e_resp_t r;
    double before = metric(&w, "bearbnb_dead_letters_total{plugin=\"reservation\"}");
    const char *poison = "{\"id\":\"poison-1\",\"type\":\"PaymentApproved\",\"source\":\"evil\",\"subject\":\"x\","
                         "\"data\":{\"status\":\"APPROVED\"}}";
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "POST", "/admin/events?topic=bearbnb.payment", NULL, poison, &r), 0);
    assert_true(r.status >= 200 && r.status < 300);
    e2e_resp_free(&r);
    e2e_req_t rq = {.proto = E2E_HTTP1,
                    .method = "POST",
                    .path = "/admin/events?topic=bearbnb.payment",
                    .body = "{this is not json"};
    assert_int_equal(e2e_http(w.h, &rq, &r), 0);
    assert_true(r.status >= 200 && r.status < 300);
    e2e_resp_free(&r);

    int found = 0;
    for (int i = 0; i < 200 && !found; i++) {
        assert_int_equal(e2e_call(w.h, E2E_HTTP1, "GET", "/admin/dead-letters", NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        size_t k;
        json_t *e;
        json_array_foreach(r.json, k, e)
        {
            const char *reason = json_string_value(json_object_get(e, "reason"));
            const char *consumer = json_string_value(json_object_get(e, "consumer"));
            if (reason && strstr(reason, "reservationId") && consumer && strstr(consumer, "reservation"))
                found = 1;
        }
        e2e_resp_free(&r);
        if (!found) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    assert_true(found);
    double after = metric(&w, "bearbnb_dead_letters_total{plugin=\"reservation\"}");
    fprintf(stderr, "dead letters of reservation: %g -> %g\n", before, after);
    assert_true(after >= (before < 0 ? 0 : before) + 1);

    /* the count is the store's, not the process's: it survives a SIGKILL */
    e2e_host_t *rp = e2e_host_part(w.h, "reservation");
    e2e_host_kill(rp ? rp : w.h);
    assert_int_equal(e2e_host_restart(rp ? rp : w.h), 0);
    double again = metric(&w, "bearbnb_dead_letters_total{plugin=\"reservation\"}");
    fprintf(stderr, "dead letters of reservation after SIGKILL and restart: %g\n", again);
    assert_true(again >= after);

    /* the consumer is not stuck: later bookings complete, also via events */
    book(&w, w.guest_tok, room, 3, 2, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(jstr(&r, "status"), "CONFIRMED");
    e2e_resp_free(&r);
    admin(&w, "/admin/plugins/payment/pause", 200);
    book(&w, w.guest_tok, room, 6, 2, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 202);
    char *id = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    admin(&w, "/admin/plugins/payment/resume", 200);
    expect_status(&w, w.guest_tok, RES, id, "CONFIRMED");
    free(id);
    free(room);
    world_stop(&w);
}

/* ---- room deletion ---- */

static void test_room_deleted(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, NULL), 0);
    char *room = create_room(&w, 8000, 3);
    char *keep = create_room(&w, 8000, 3);
    e2e_resp_t r;
    char *ids[3];
    for (int i = 0; i < 2; i++) {
        book(&w, i ? w.other_tok : w.guest_tok, room, 7 + 4 * i, 2, 1, GOOD_CARD, &r);
        assert_int_equal(r.status, 201);
        ids[i] = strdup(jstr(&r, "id"));
        e2e_resp_free(&r);
    }
    book(&w, w.guest_tok, keep, 7, 2, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    ids[2] = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);

    long other_del = status_of(&w, w.other_host, "DELETE", "/rooms/%s", room);
    assert_true(other_del == 403 || other_del == 404);
    assert_int_equal(status_of(&w, w.host_tok, "DELETE", "/rooms/%s", room), 204);
    const char *toks[] = {w.guest_tok, w.other_tok};
    for (int i = 0; i < 2; i++) {
        expect_status(&w, toks[i], RES, ids[i], "CANCELLED");
        expect_status(&w, toks[i], PAY, ids[i], "CANCELLED");
        char *reason = field_of(&w, toks[i], RES, ids[i], "reason");
        assert_string_equal(reason, "room deleted");
        free(reason);
    }
    /* the other room is untouched; the deleted one takes no bookings */
    char *s = field_of(&w, w.guest_tok, RES, ids[2], "status");
    assert_string_equal(s, "CONFIRMED");
    free(s);
    book(&w, w.guest_tok, room, 40, 2, 1, GOOD_CARD, &r);
    assert_true(e2e_is_problem(&r, 404));
    e2e_resp_free(&r);
    for (int i = 0; i < 3; i++)
        free(ids[i]);
    free(room);
    free(keep);
    world_stop(&w);
}

/* ---- guest cap, horizon, pages ---- */

#define NCAP 20

typedef struct capper {
    const world_t *w;
    const char *room;
    int from;
    pthread_barrier_t *go;
    long status;
} capper_t;

static void *cap_race(void *arg)
{
    capper_t *c = arg;
    char in[11], out[11], body[512];
    date_in(c->from, in);
    date_in(c->from + 1, out);
    snprintf(body, sizeof body,
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":\"" GOOD_CARD "\"}",
             c->room, in, out);
    e2e_client_t *cl = e2e_client_new(e2e_host_port(c->w->h));
    e2e_req_t rq = {.proto = E2E_HTTP1,
                    .method = "POST",
                    .path = "/reservations",
                    .token = c->w->guest_tok,
                    .body = body,
                    .timeout_ms = 60000};
    e2e_resp_t r;
    pthread_barrier_wait(c->go);
    c->status = cl && e2e_client_do(cl, &rq, &r) == 0 ? r.status : -1;
    if (cl) {
        if (c->status == 409 && !strstr(r.body, "too many active reservations"))
            c->status = -409;
        e2e_resp_free(&r);
    }
    e2e_client_free(cl);
    return NULL;
}

/* 20 bookings of one guest at once, on free nights: exactly the cap (10) get
 * through, the others are 409 "too many active reservations" (issue 11 item 6). */
static void test_guest_cap_race(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, NULL), 0);
    char *rooms[2] = {create_room(&w, 1000, 2), create_room(&w, 1000, 2)};
    pthread_t th[NCAP];
    capper_t c[NCAP];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, NCAP);
    for (int i = 0; i < NCAP; i++) {
        c[i] = (capper_t){&w, rooms[i % 2], 5 + 2 * i, &go, 0};
        assert_int_equal(pthread_create(&th[i], NULL, cap_race, &c[i]), 0);
    }
    int ok = 0, capped = 0;
    for (int i = 0; i < NCAP; i++) {
        pthread_join(th[i], NULL);
        if (c[i].status == 201 || c[i].status == 202)
            ok++;
        else if (c[i].status == 409)
            capped++;
        else
            fprintf(stderr, "cap racer %d: %ld\n", i, c[i].status);
    }
    pthread_barrier_destroy(&go);
    fprintf(stderr, "guest cap race: %d accepted, %d capped of %d\n", ok, capped, NCAP);
    assert_int_equal(ok, 10);
    assert_int_equal(capped, NCAP - 10);
    assert_int_equal(page_size(&w, w.guest_tok, "/reservations?limit=100"), 10);
    /* cancelling one frees a slot */
    e2e_resp_t r;
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "GET", "/reservations?limit=1", w.guest_tok, NULL, &r), 0);
    char *id = strdup(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "items"), 0), "id")));
    e2e_resp_free(&r);
    assert_int_equal(status_of(&w, w.guest_tok, "DELETE", RES, id), 202);
    book(&w, w.guest_tok, rooms[0], 100, 1, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    e2e_resp_free(&r);
    book(&w, w.guest_tok, rooms[0], 102, 1, 1, GOOD_CARD, &r);
    assert_true(e2e_is_problem(&r, 409));
    e2e_resp_free(&r);
    free(id);
    free(rooms[0]);
    free(rooms[1]);
    world_stop(&w);
}

static void test_horizon(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, NULL), 0);
    char *room = create_room(&w, 1000, 2);
    e2e_resp_t r;
    char body[512];
    snprintf(
        body, sizeof body,
        "{\"roomId\":\"%s\",\"checkIn\":\"9999-01-01\",\"checkOut\":\"9999-01-03\",\"guests\":1,\"card\":\"" GOOD_CARD
        "\"}",
        room);
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "POST", "/reservations", w.guest_tok, body, &r), 0);
    assert_true(e2e_is_problem(&r, 422));
    assert_non_null(strstr(r.body, "horizon"));
    e2e_resp_free(&r);
    book(&w, w.guest_tok, room, 731, 1, 1, GOOD_CARD, &r); /* default horizon: 730 days */
    assert_true(e2e_is_problem(&r, 422));
    e2e_resp_free(&r);
    book(&w, w.guest_tok, room, 729, 1, 1, GOOD_CARD, &r);
    assert_int_equal(r.status, 201);
    e2e_resp_free(&r);
    free(room);
    world_stop(&w);
}

/* Walk GET path?limit=..&cursor=.. as tok to the end: every item once, pages of
 * `limit` but the last; returns how many items, *pages how many pages. */
static size_t walk_pages(const world_t *w, const char *tok, const char *path, int limit, int *pages)
{
    json_t *seen = json_object();
    char *cursor = NULL;
    *pages = 0;
    for (;;) {
        char url[1024];
        int n = snprintf(url, sizeof url, "%s%slimit=%d", path, strchr(path, '?') ? "&" : "?", limit);
        if (cursor) {
            n += snprintf(url + n, sizeof url - (size_t)n, "&cursor=");
            for (const char *c = cursor; *c && n < (int)sizeof url - 4; c++)
                n += ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
                      *c == '_')
                         ? snprintf(url + n, sizeof url - (size_t)n, "%c", *c)
                         : snprintf(url + n, sizeof url - (size_t)n, "%%%02X", (unsigned char)*c);
        }
        e2e_resp_t r;
        assert_int_equal(e2e_call(w->h, E2E_HTTP1, "GET", url, tok, NULL, &r), 0);
        if (r.status != 200)
            fprintf(stderr, "GET %s: %ld %s\n", url, r.status, r.body);
        assert_int_equal(r.status, 200);
        json_t *items = json_object_get(r.json, "items"), *e;
        size_t i;
        (*pages)++;
        json_array_foreach(items, i, e)
        {
            const char *id = json_string_value(json_object_get(e, "id"));
            assert_non_null(id);
            assert_null(json_object_get(seen, id)); /* never twice */
            json_object_set_new(seen, id, json_true());
        }
        free(cursor);
        const char *next = json_string_value(json_object_get(r.json, "next"));
        cursor = next ? strdup(next) : NULL;
        if (cursor)
            assert_int_equal(json_array_size(items), limit);
        e2e_resp_free(&r);
        if (!cursor)
            break;
    }
    size_t n = json_object_size(seen);
    json_decref(seen);
    return n;
}

static void test_pages(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(world_start(&w, NULL), 0);
    char *room = create_room(&w, 1000, 2);
    const char *toks[] = {w.guest_tok, w.other_tok};
    e2e_resp_t r;
    for (int i = 0; i < 16; i++) {
        book(&w, toks[i % 2], room, 3 + 2 * i, 1, 1, i == 5 ? DECLINED_CARD : GOOD_CARD, &r);
        assert_int_equal(r.status, i == 5 ? 402 : 201);
        e2e_resp_free(&r);
    }
    int pages = 0;
    assert_int_equal(walk_pages(&w, w.host_tok, "/reservations", 5, &pages), 16);
    assert_int_equal(pages, 4);
    assert_int_equal(walk_pages(&w, w.host_tok, "/reservations?status=CONFIRMED", 4, &pages), 15);
    assert_int_equal(pages, 4);
    assert_int_equal(walk_pages(&w, w.host_tok, "/reservations?status=REJECTED", 20, &pages), 1);
    assert_int_equal(walk_pages(&w, w.guest_tok, "/reservations", 3, &pages), 8);
    assert_int_equal(walk_pages(&w, w.host_tok, "/payments", 7, &pages), 16);
    assert_int_equal(pages, 3);
    assert_int_equal(walk_pages(&w, w.other_tok, "/payments", 100, &pages), 8);
    /* newest first */
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "GET", "/reservations?limit=2", w.host_tok, NULL, &r), 0);
    json_t *items = json_object_get(r.json, "items");
    assert_true(json_integer_value(json_object_get(json_array_get(items, 0), "createdAt")) >=
                json_integer_value(json_object_get(json_array_get(items, 1), "createdAt")));
    e2e_resp_free(&r);
    /* bad input: 400 problem naming the parameter */
    const char *bad[][2] = {{"/reservations?limit=0", "limit"},       {"/reservations?limit=1000", "limit"},
                            {"/reservations?limit=x", "limit"},       {"/reservations?status=NOPE", "status"},
                            {"/reservations?cursor=bogus", "cursor"}, {"/reservations?color=red", "color"},
                            {"/payments?limit=101", "limit"},         {"/payments?cursor=bogus", "cursor"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(e2e_call(w.h, E2E_HTTP1, "GET", bad[i][0], w.host_tok, NULL, &r), 0);
        if (r.status != 400 || !strstr(r.body, bad[i][1]))
            fprintf(stderr, "GET %s: %ld %s\n", bad[i][0], r.status, r.body);
        assert_true(e2e_is_problem(&r, 400));
        assert_non_null(strstr(r.body, bad[i][1]));
        e2e_resp_free(&r);
    }
    free(room);
    world_stop(&w);
}

/* ---- card data ---- */

#define CLEAR_CARD    "4716093345678911"
#define CLEAR_DECLINE "4916338506080002"

/* Count files under `dir` (recursively) that hold `needle`; *files gets how
 * many files were read. */
static int files_holding(const char *dir, const char *needle, int *files)
{
    int hits = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            hits += files_holding(path, needle, files);
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        char *buf = malloc((size_t)st.st_size + 1);
        size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
        fclose(f);
        (*files)++;
        size_t nl = strlen(needle);
        for (size_t i = 0; buf && n >= nl && i + nl <= n; i++)
            if (!memcmp(buf + i, needle, nl)) {
                fprintf(stderr, "card number found in %s\n", path);
                hits++;
                break;
            }
        free(buf);
    }
    closedir(d);
    return hits;
}

static void test_card_never_in_clear(void **state)
{
    (void)state;
    const char *const env[] = {"BEARBNB_ADMIN=1", "BEARBNB_LOG_LEVEL=debug", NULL};
    world_t w;
    assert_int_equal(world_start(&w, env), 0);
    char *room = create_room(&w, 6000, 2);
    e2e_resp_t r;
    /* the synchronous path, a declined card, and the event path */
    book(&w, w.guest_tok, room, 3, 2, 1, CLEAR_CARD, &r);
    assert_int_equal(r.status, 201);
    e2e_resp_free(&r);
    book(&w, w.guest_tok, room, 6, 2, 1, CLEAR_DECLINE, &r);
    assert_true(e2e_is_problem(&r, 402));
    e2e_resp_free(&r);
    admin(&w, "/admin/plugins/payment/pause", 200);
    book(&w, w.guest_tok, room, 9, 2, 1, CLEAR_CARD, &r);
    assert_int_equal(r.status, 202);
    char *id = strdup(jstr(&r, "id"));
    e2e_resp_free(&r);
    admin(&w, "/admin/plugins/payment/resume", 200);
    expect_status(&w, w.guest_tok, RES, id, "CONFIRMED");
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "GET", "/admin/dead-letters", NULL, NULL, &r), 0);
    assert_null(strstr(r.body, CLEAR_CARD));
    e2e_resp_free(&r);
    /* payment shows only the last four digits */
    char *last4 = field_of(&w, w.guest_tok, "/payments/pay-%s", id, "cardLast4");
    assert_non_null(last4);
    assert_string_equal(last4, "8911");
    free(last4);
    int files = 0;
    if (!e2e_host_distributed(w.h)) {
        /* stop (outbox flushed, logs written), then read every file it left:
         * the SQLite stores (outbox, dead letters, every service's documents,
         * WAL included) and the log */
        assert_int_equal(e2e_host_stop(w.h), 0);
        int hits = files_holding(e2e_host_dir(w.h), CLEAR_CARD, &files) +
                   files_holding(e2e_host_dir(w.h), CLEAR_DECLINE, &files);
        fprintf(stderr, "card numbers in clear: %d hits in %d files read\n", hits, files / 2);
        assert_true(files >= 4);
        assert_int_equal(hits, 0);
        e2e_host_free(w.h);
        w.h = NULL;
    } else {
        int hits = files_holding(e2e_host_dir(w.h), CLEAR_CARD, &files); /* the logs of every process */
        fprintf(stderr, "card numbers in clear: %d hits in %d files read\n", hits, files);
        assert_int_equal(hits, 0);
    }
    free(id);
    free(room);
    world_stop(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_book_pay_cancel),
        cmocka_unit_test(test_declined_card),
        cmocka_unit_test(test_concurrent_double_booking),
        cmocka_unit_test(test_payment_down_fallback),
        cmocka_unit_test(test_events_delivered_twice),
        cmocka_unit_test(test_poison_event),
        cmocka_unit_test(test_room_deleted),
        cmocka_unit_test(test_card_never_in_clear),
        cmocka_unit_test(test_guest_cap_race),
        cmocka_unit_test(test_horizon),
        cmocka_unit_test(test_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * End-to-end tests of the notification plugin (Rust, plugins/notification) on
 * a real all-in-one bearbnb process, with every event delivered twice
 * (BEARBNB_EVENTS_DELIVER_TWICE): a booking, a declined card and a
 * cancellation give the guest and the room's host their notifications, once
 * each; GET /notifications pages them newest first and shows nobody else's;
 * POST /notifications/{id}/read marks only one's own; bad parameters are 400
 * problems naming the parameter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GOOD_CARD     "4111111111111111"
#define DECLINED_CARD "4000000000000002"
#define WAIT_MS       20000

static const char *const env[] = {"BEARBNB_EVENTS_DELIVER_TWICE=1", NULL};

typedef struct world {
    e2e_host_t *h;
    char *hal, *gus, *eve, *olga; /* host, guest, another guest, another host */
} world_t;

static void date_in(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static char *create_room(world_t *w)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, "POST", "/rooms", w->hal,
                              "{\"name\":\"Cabin\",\"description\":\"by the lake\",\"city\":\"Bern\","
                              "\"pricePerNight\":5000,\"capacity\":2}",
                              &r),
                     0);
    assert_int_equal(r.status, 201);
    char *id = strdup(json_string_value(json_object_get(r.json, "id")));
    e2e_resp_free(&r);
    return id;
}

/* Books and returns the reservation id (from the body or the Location). */
static char *book(world_t *w, const char *room, int from, const char *card, long want)
{
    char in[11], out[11], body[512];
    date_in(from, in);
    date_in(from + 2, out);
    snprintf(body, sizeof body,
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":{\"number\":\"%s\"}}",
             room, in, out, card);
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, "POST", "/reservations", w->gus, body, &r), 0);
    if (r.status != want)
        fprintf(stderr, "POST /reservations: %ld %s\n", r.status, r.body);
    /* 202 PENDING is the contract's answer when payment does not answer in
     * time (a loaded machine, FerretDB); the saga then ends asynchronously and
     * the notifications checked below prove the final state either way. */
    if (!(r.status == 202 && want != 202))
        assert_int_equal(r.status, want);
    const char *id = json_string_value(json_object_get(r.json, "id"));
    if (id == NULL && strrchr(r.location, '/'))
        id = strrchr(r.location, '/') + 1;
    assert_non_null(id);
    char *s = strdup(id);
    e2e_resp_free(&r);
    return s;
}

/* GET path as tok: the page (caller decrefs); asserts 200 and the shape. */
static json_t *page(world_t *w, const char *tok, const char *path)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP2, "GET", path, tok, NULL, &r), 0);
    if (r.status != 200)
        fprintf(stderr, "GET %s: %ld %s\n", path, r.status, r.body);
    assert_int_equal(r.status, 200);
    assert_true(json_is_array(json_object_get(r.json, "items")));
    assert_true(json_is_string(json_object_get(r.json, "next")) || json_is_null(json_object_get(r.json, "next")));
    json_t *p = json_incref(r.json);
    e2e_resp_free(&r);
    return p;
}

/* Percent-encodes s (caller frees). */
static char *escape(const char *s)
{
    char *o = malloc(strlen(s) * 3 + 1), *q = o;
    assert_non_null(o);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~')
            *q++ = (char)c;
        else
            q += sprintf(q, "%%%02X", c);
    }
    *q = '\0';
    return o;
}

/* Every notification of tok, walking the cursors with `limit` (caller decrefs). */
static json_t *all_of(world_t *w, const char *tok, int limit)
{
    json_t *all = json_array();
    char path[1200];
    snprintf(path, sizeof path, "/notifications?limit=%d", limit);
    for (int guard = 0; guard < 100; guard++) {
        json_t *p = page(w, tok, path);
        json_t *items = json_object_get(p, "items");
        assert_true(json_array_size(items) <= (size_t)limit);
        json_array_extend(all, items);
        const char *next = json_string_value(json_object_get(p, "next"));
        if (next == NULL) {
            json_decref(p);
            return all;
        }
        assert_true(strlen(next) < 900);
        char *enc = escape(next);
        snprintf(path, sizeof path, "/notifications?limit=%d&cursor=%s", limit, enc);
        free(enc);
        json_decref(p);
    }
    fail_msg("more than 100 pages");
    return NULL;
}

/* The kinds in `all`, newest first, joined with ','; checks the order and the owner. */
static void kinds_of(json_t *all, const char *user, char *out, size_t len)
{
    out[0] = '\0';
    size_t i;
    json_t *n;
    json_int_t prev = INT64_MAX;
    json_array_foreach(all, i, n)
    {
        assert_string_equal(json_string_value(json_object_get(n, "userId")), user);
        json_int_t at = json_integer_value(json_object_get(n, "createdAt"));
        assert_true(at > 0 && at <= prev); /* newest first */
        prev = at;
        if (i)
            strncat(out, ",", len - strlen(out) - 1);
        strncat(out, json_string_value(json_object_get(n, "kind")), len - strlen(out) - 1);
    }
}

typedef struct waitn {
    world_t *w;
    const char *tok;
    size_t want;
} waitn_t;

static int has_n(void *arg)
{
    waitn_t *q = arg;
    json_t *p = page(q->w, q->tok, "/notifications?limit=100");
    size_t n = json_array_size(json_object_get(p, "items"));
    json_decref(p);
    return n >= q->want;
}

static void wait_for(world_t *w, const char *tok, size_t want)
{
    waitn_t q = {w, tok, want};
    assert_int_equal(e2e_wait_until(WAIT_MS, 50, has_n, &q), 0);
}

static long status_of(world_t *w, const char *method, const char *path, const char *tok)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, method, path, tok, NULL, &r), 0);
    long s = r.status;
    e2e_resp_free(&r);
    return s;
}

static void expect_400(world_t *w, const char *path, const char *param)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(w->h, E2E_HTTP1, "GET", path, w->gus, NULL, &r), 0);
    if (!e2e_is_problem(&r, 400) || !strstr(r.body, param))
        fail_msg("GET %s: %ld %s (expected a 400 naming '%s')", path, r.status, r.body, param);
    e2e_resp_free(&r);
}

/* Value of the first /metrics sample whose line starts with `prefix`, or -1. */
static double metric(world_t *w, const char *prefix)
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

static void test_notifications(void **state)
{
    (void)state;
    world_t w = {0};
    e2e_host_opts_t o = {.env = env};
    assert_int_equal(e2e_host_start(&w.h, &o), 0);
    w.hal = e2e_token(w.h, "hal", "host", 0);
    w.gus = e2e_token(w.h, "gus", "guest", 0);
    w.eve = e2e_token(w.h, "eve", "guest", 0);
    w.olga = e2e_token(w.h, "olga", "host", 0);
    assert_true(w.hal && w.gus && w.eve && w.olga);
    char *room = create_room(&w);

    /* nothing yet; a token is needed */
    json_t *p = page(&w, w.gus, "/notifications");
    assert_int_equal(json_array_size(json_object_get(p, "items")), 0);
    assert_true(json_is_null(json_object_get(p, "next")));
    json_decref(p);
    assert_int_equal(status_of(&w, "GET", "/notifications", NULL), 401);

    /* a booking: the guest is told it is confirmed, the host of a new booking */
    char *a = book(&w, room, 10, GOOD_CARD, 201);
    wait_for(&w, w.gus, 1);
    wait_for(&w, w.hal, 1);
    /* a declined card: the guest is told */
    char *b = book(&w, room, 20, DECLINED_CARD, 402);
    wait_for(&w, w.gus, 2);
    /* a cancellation: guest (cancelled, refund made) and host (cancelled) */
    char *c = book(&w, room, 30, GOOD_CARD, 201);
    char path[256];
    snprintf(path, sizeof path, "/reservations/%s", c);
    assert_int_equal(status_of(&w, "DELETE", path, w.gus), 202);
    wait_for(&w, w.gus, 5);
    wait_for(&w, w.hal, 3);

    /* every event came twice: let late duplicates land, then count */
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    char kinds[512];
    json_t *g = all_of(&w, w.gus, 100);
    kinds_of(g, "gus", kinds, sizeof kinds);
    fprintf(stderr, "gus: %s\n", kinds);
    assert_int_equal(json_array_size(g), 5);
    assert_non_null(strstr(kinds, "BOOKING_CONFIRMED"));
    assert_non_null(strstr(kinds, "PAYMENT_DECLINED"));
    assert_non_null(strstr(kinds, "CANCELLATION_DONE"));
    assert_non_null(strstr(kinds, "REFUND_MADE"));
    assert_null(strstr(kinds, "NEW_BOOKING"));
    /* the first one is the oldest: a's confirmation */
    json_t *first = json_array_get(g, json_array_size(g) - 1);
    assert_string_equal(json_string_value(json_object_get(first, "kind")), "BOOKING_CONFIRMED");
    assert_string_equal(json_string_value(json_object_get(first, "reservationId")), a);
    assert_true(json_is_false(json_object_get(first, "read")));
    json_t *h = all_of(&w, w.hal, 100);
    kinds_of(h, "hal", kinds, sizeof kinds);
    fprintf(stderr, "hal: %s\n", kinds);
    assert_int_equal(json_array_size(h), 3);
    assert_string_equal(kinds, "BOOKING_CANCELLED,NEW_BOOKING,NEW_BOOKING");
    /* created once each though delivered twice */
    assert_true(metric(&w, "bearbnb_notification_notifications_created_total") == 8);

    /* paging: walking with limit 2 gives the same list */
    json_t *g2 = all_of(&w, w.gus, 2);
    assert_true(json_equal(g, g2));
    json_decref(g2);
    json_t *g1 = all_of(&w, w.gus, 1);
    assert_true(json_equal(g, g1));
    json_decref(g1);
    p = page(&w, w.gus, "/notifications?limit=2");
    assert_int_equal(json_array_size(json_object_get(p, "items")), 2);
    assert_true(json_is_string(json_object_get(p, "next")));
    json_decref(p);

    /* another user sees nothing */
    p = page(&w, w.eve, "/notifications");
    assert_int_equal(json_array_size(json_object_get(p, "items")), 0);
    json_decref(p);
    p = page(&w, w.olga, "/notifications?limit=100");
    assert_int_equal(json_array_size(json_object_get(p, "items")), 0);
    json_decref(p);

    /* bad parameters: 400 naming them */
    expect_400(&w, "/notifications?limit=0", "limit");
    expect_400(&w, "/notifications?limit=101", "limit");
    expect_400(&w, "/notifications?limit=x", "limit");
    expect_400(&w, "/notifications?limit=1&limit=2", "limit");
    expect_400(&w, "/notifications?cursor=bm90LWEtY3Vyc29y", "cursor");
    expect_400(&w, "/notifications?sort=asc", "sort");

    /* read: mine only; another's and an unknown id are 404 */
    const char *nid = json_string_value(json_object_get(first, "id"));
    snprintf(path, sizeof path, "/notifications/%s/read", nid);
    e2e_resp_t r;
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "POST", path, w.eve, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 404));
    e2e_resp_free(&r);
    assert_int_equal(status_of(&w, "POST", path, w.hal), 404);
    assert_int_equal(status_of(&w, "POST", "/notifications/no-such-id/read", w.gus), 404);
    assert_int_equal(status_of(&w, "POST", "/notifications/bad.id/read", w.gus), 404);
    assert_int_equal(e2e_call(w.h, E2E_HTTP1, "POST", path, w.gus, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "read")));
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), nid);
    e2e_resp_free(&r);
    assert_int_equal(status_of(&w, "POST", path, w.gus), 200); /* again: still read */
    json_t *g3 = all_of(&w, w.gus, 100);
    size_t i, nread = 0;
    json_t *n;
    json_array_foreach(g3, i, n) nread += json_is_true(json_object_get(n, "read"));
    assert_int_equal(nread, 1);
    assert_true(json_is_true(json_object_get(json_array_get(g3, json_array_size(g3) - 1), "read")));
    json_decref(g3);

    json_decref(g);
    json_decref(h);
    free(a);
    free(b);
    free(c);
    free(room);
    free(w.hal);
    free(w.gus);
    free(w.eve);
    free(w.olga);
    assert_int_equal(e2e_host_stop(w.h), 0);
    e2e_host_free(w.h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notifications),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * End-to-end tests of the dashboard read model against a real all-in-one
 * bearbnb (every plugin, SQLite, in-process events): what the API does shows
 * up on GET /dashboard/rooms/{id} (the summary, with booking counts) and
 * GET /dashboard/rooms/{id}/reservations (pages, newest first), the read model
 * agrees with the services' own answers (also when every event is delivered
 * twice), only the room's host sees every reservation and a guest only their
 * own, poison events are dead-lettered with a reason without stopping later
 * events, and a restart on the same data dir changes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_storage.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_MS 20000

static e2e_host_t *host;
static char *tok_host, *tok_guest, *tok_guest2, *tok_guest3, *tok_host2;

/* ---- helpers -------------------------------------------------------------- */

static int start(const char *const *env)
{
    e2e_host_opts_t o = {.env = env};
    if (e2e_host_start(&host, &o) != 0)
        return -1;
    tok_host = e2e_token(host, "hanna", "host", 0);
    tok_guest = e2e_token(host, "gus", "guest", 0);
    tok_guest2 = e2e_token(host, "greta", "guest", 0);
    tok_guest3 = e2e_token(host, "olga", "guest", 0);
    tok_host2 = e2e_token(host, "otto", "host", 0);
    return tok_host && tok_guest && tok_guest2 && tok_guest3 && tok_host2 ? 0 : -1;
}

static int setup_plain(void **state)
{
    (void)state;
    return start(NULL);
}

static int setup_twice(void **state)
{
    (void)state;
    static const char *const env[] = {"BEARBNB_EVENTS_DELIVER_TWICE=1", NULL};
    return start(env);
}

static int setup_many(void **state)
{
    (void)state;
    static const char *const env[] = {"BEARBNB_RESERVATION_MAX_ACTIVE_PER_GUEST=0", NULL};
    return start(env);
}

static int setup_admin(void **state)
{
    (void)state;
    static const char *const env[] = {"BEARBNB_ADMIN=1", NULL};
    return start(env);
}

static int teardown(void **state)
{
    (void)state;
    int rc = host ? e2e_host_stop(host) : 0;
    e2e_host_free(host);
    host = NULL;
    free(tok_host);
    free(tok_guest);
    free(tok_guest2);
    free(tok_guest3);
    free(tok_host2);
    tok_host = tok_guest = tok_guest2 = tok_guest3 = tok_host2 = NULL;
    return rc == 0 ? 0 : -1; /* a non-zero exit (ASan/LSan report: 23) fails */
}

/* One request; asserts the status; returns the JSON body (caller decrefs) or NULL. */
static json_t *call(const char *method, const char *path, const char *tok, const char *body, long want)
{
    e2e_resp_t r;
    int rc = e2e_call(host, E2E_HTTP1, method, path, tok, body, &r);
    if (rc != 0 || r.status != want)
        fprintf(stderr, "%s %s -> %ld (want %ld): %s\n", method, path, r.status, want, r.body ? r.body : "");
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, want);
    json_t *j = r.json ? json_incref(r.json) : NULL;
    e2e_resp_free(&r);
    return j;
}

/* GET path: the JSON body when 200, else NULL. */
static json_t *get_if_200(const char *path, const char *tok)
{
    e2e_resp_t r;
    json_t *j = NULL;
    if (e2e_call(host, E2E_HTTP1, "GET", path, tok, NULL, &r) == 0 && r.status == 200 && r.json)
        j = json_incref(r.json);
    e2e_resp_free(&r);
    return j;
}

/* Every reservation view of `room` as `tok` sees them, walking the pages of
 * `limit` (NULL: the default); checks newest first and that every page but
 * the last is full. A new array, or NULL when a page did not answer 200. */
static json_t *walk_reservations(const char *room, const char *tok, const char *limit, int *pages)
{
    json_t *all = json_array();
    char *cursor = NULL;
    long long last = -1;
    int n = 0;
    for (;;) {
        char path[1200];
        int o = snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations", room);
        char sep = '?';
        if (limit) {
            o += snprintf(path + o, sizeof(path) - (size_t)o, "?limit=%s", limit);
            sep = '&';
        }
        if (cursor) {
            o += snprintf(path + o, sizeof(path) - (size_t)o, "%ccursor=", sep);
            for (const char *c = cursor; *c && (size_t)o + 4 < sizeof(path); c++) {
                unsigned char ch = (unsigned char)*c;
                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                    ch == '_' || ch == '.' || ch == '~')
                    path[o++] = (char)ch;
                else
                    o += snprintf(path + o, sizeof(path) - (size_t)o, "%%%02X", ch);
            }
            path[o] = '\0';
        }
        json_t *page = get_if_200(path, tok), *e;
        size_t i;
        free(cursor);
        cursor = NULL;
        if (!page || !json_is_array(json_object_get(page, "items"))) {
            json_decref(page);
            json_decref(all);
            return NULL;
        }
        n++;
        json_array_foreach(json_object_get(page, "items"), i, e)
        {
            long long t = json_integer_value(json_object_get(e, "createdAt"));
            assert_true(last < 0 || t <= last); /* newest first */
            last = t;
            json_array_append(all, e);
        }
        json_t *next = json_object_get(page, "next");
        if (json_is_string(next)) {
            assert_int_equal(json_array_size(json_object_get(page, "items")), limit ? (size_t)atoi(limit) : 20);
            cursor = strdup(json_string_value(next));
        } else {
            assert_true(json_is_null(next));
        }
        json_decref(page);
        if (!cursor)
            break;
    }
    if (pages)
        *pages = n;
    return all;
}

/* The room's summary (anonymous) with "reservations": every view as the
 * room's host sees them; NULL unless both answered 200. */
static json_t *get_room_doc(const char *room)
{
    char path[160];
    snprintf(path, sizeof(path), "/dashboard/rooms/%s", room);
    json_t *doc = get_if_200(path, NULL);
    if (!doc)
        return NULL;
    json_t *list = walk_reservations(room, tok_host, "100", NULL);
    if (!list) {
        json_decref(doc);
        return NULL;
    }
    json_object_set_new(doc, "reservations", list);
    return doc;
}

static void date_plus(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static json_t *find_res(const json_t *doc, const char *id)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "reservations"), i, e)
    {
        const char *eid = sget(e, "id");
        if (eid && strcmp(eid, id) == 0)
            return e;
    }
    return NULL;
}

static int str_is(const json_t *o, const char *k, const char *want)
{
    const char *v = sget(o, k);
    return v && want && strcmp(v, want) == 0;
}

/* ---- polling the dashboard ----------------------------------------------------- */

typedef int (*doc_pred_fn)(const json_t *doc, const void *arg);

typedef struct {
    char room[160];
    doc_pred_fn pred;
    const void *arg;
    json_t *last;
} poll_t;

static int poll_cond(void *a)
{
    poll_t *p = a;
    json_t *doc = get_room_doc(p->room);
    if (!doc)
        return 0;
    json_decref(p->last);
    p->last = doc;
    return p->pred(doc, p->arg);
}

/* Wait until GET /dashboard/rooms/{room} satisfies pred; returns that document
 * (caller decrefs); fails the test (printing the last document) on timeout. */
static json_t *wait_doc(const char *room, doc_pred_fn pred, const void *arg, const char *what)
{
    poll_t p = {.pred = pred, .arg = arg};
    snprintf(p.room, sizeof(p.room), "%s", room);
    if (e2e_wait_until(WAIT_MS, 50, poll_cond, &p) != 0) {
        char *s = p.last ? json_dumps(p.last, JSON_INDENT(1)) : NULL;
        fprintf(stderr, "timed out waiting for %s; last dashboard document: %s\n", what, s ? s : "(none)");
        free(s);
        json_decref(p.last);
        fail_msg("dashboard never showed %s", what);
    }
    return p.last;
}

static int pred_exists(const json_t *doc, const void *arg)
{
    (void)doc;
    (void)arg;
    return 1;
}

typedef struct {
    const char *id, *status, *pay_status;
} res_want_t;

static int pred_res(const json_t *doc, const void *arg)
{
    const res_want_t *w = arg;
    json_t *e = find_res(doc, w->id);
    return e && str_is(e, "status", w->status) && str_is(e, "paymentStatus", w->pay_status);
}

typedef struct {
    const char *key;
    json_int_t value;
} int_want_t;

static int pred_int(const json_t *doc, const void *arg)
{
    const int_want_t *w = arg;
    json_t *v = json_object_get(doc, w->key);
    return json_is_integer(v) && json_integer_value(v) == w->value;
}

typedef struct {
    json_int_t pending, confirmed, rejected, cancel_requested, cancelled, total;
} counts_t;

/* The summary's bookings equal *arg. */
static int pred_bookings(const json_t *doc, const void *arg)
{
    const counts_t *c = arg;
    json_t *b = json_object_get(doc, "bookings");
    json_int_t got[6], want[6] = {c->pending, c->confirmed, c->rejected, c->cancel_requested, c->cancelled, c->total};
    static const char *const k[6] = {"PENDING", "CONFIRMED", "REJECTED", "CANCEL_REQUESTED", "CANCELLED", "total"};
    for (int i = 0; i < 6; i++) {
        got[i] = json_integer_value(json_object_get(b, k[i]));
        if (!json_is_integer(json_object_get(b, k[i])) || got[i] != want[i])
            return 0;
    }
    return 1;
}

static int pred_status(const json_t *doc, const void *arg)
{
    return str_is(doc, "status", arg);
}

/* The dashboard document agrees with the services' own answers: the room
 * (GET /rooms/{id}), every reservation (GET /reservations/{id} as its guest)
 * and its payment (GET /payments/{paymentId}). */
static const char *const room_keys[] = {"id",       "hostId", "name",      "description", "city",       "pricePerNight",
                                        "capacity", "status", "reviewCnt", "rating",      "bookingCnt", "version"};
static const char *const res_keys[] = {"id",     "guestId", "checkIn", "checkOut",
                                       "guests", "amount",  "status",  "paymentId"};

static int same_key(const json_t *a, const json_t *b, const char *k, const char *what, int verbose)
{
    json_t *x = json_object_get(a, k), *y = json_object_get(b, k);
    int eq =
        x && y &&
        (json_equal(x, y) || (json_is_number(x) && json_is_number(y) && json_number_value(x) == json_number_value(y)));
    if (!eq && verbose) {
        char *sx = x ? json_dumps(x, JSON_ENCODE_ANY) : NULL, *sy = y ? json_dumps(y, JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "  %s.%s: dashboard %s, service %s\n", what, k, sx ? sx : "(absent)", sy ? sy : "(absent)");
        free(sx);
        free(sy);
    }
    return eq;
}

typedef struct {
    const char *guest_tok[8]; /* token of the guest of reservations[i] (by guestId) */
    int verbose;
} svc_arg_t;

static const char *token_for(const char *guest)
{
    if (guest && strcmp(guest, "greta") == 0)
        return tok_guest2;
    if (guest && strcmp(guest, "olga") == 0)
        return tok_guest3;
    return tok_guest;
}

static int pred_matches_services(const json_t *doc, const void *arg)
{
    const svc_arg_t *a = arg;
    char path[200];
    int ok = 1;
    size_t i;
    json_t *e;

    snprintf(path, sizeof(path), "/rooms/%s", sget(doc, "id"));
    json_t *room = get_if_200(path, NULL);
    if (!room)
        return 0;
    for (i = 0; i < sizeof(room_keys) / sizeof(room_keys[0]); i++)
        ok &= same_key(doc, room, room_keys[i], "room", a->verbose);
    json_decref(room);

    json_array_foreach(json_object_get(doc, "reservations"), i, e)
    {
        snprintf(path, sizeof(path), "/reservations/%s", sget(e, "id"));
        json_t *r = get_if_200(path, token_for(sget(e, "guestId")));
        if (!r) {
            if (a->verbose)
                fprintf(stderr, "  GET %s failed\n", path);
            ok = 0;
            continue;
        }
        for (size_t k = 0; k < sizeof(res_keys) / sizeof(res_keys[0]); k++)
            ok &= same_key(e, r, res_keys[k], "reservation", a->verbose);
        json_decref(r);
        if (!sget(e, "paymentId"))
            continue;
        snprintf(path, sizeof(path), "/payments/%s", sget(e, "paymentId"));
        json_t *p = get_if_200(path, token_for(sget(e, "guestId")));
        if (!p) {
            if (a->verbose)
                fprintf(stderr, "  GET %s failed\n", path);
            ok = 0;
            continue;
        }
        if (!str_is(e, "paymentStatus", sget(p, "status"))) {
            if (a->verbose)
                fprintf(stderr, "  payment %s: dashboard %s, service %s\n", sget(p, "id"), sget(e, "paymentStatus"),
                        sget(p, "status"));
            ok = 0;
        }
        json_decref(p);
    }
    return ok;
}

static void assert_matches_services(const char *room_id)
{
    svc_arg_t a = {.verbose = 0};
    json_t *doc = NULL;
    poll_t p = {.pred = pred_matches_services, .arg = &a};
    snprintf(p.room, sizeof(p.room), "%s", room_id);
    if (e2e_wait_until(WAIT_MS, 100, poll_cond, &p) != 0) {
        fprintf(stderr, "dashboard does not match the services:\n");
        a.verbose = 1;
        if (p.last)
            pred_matches_services(p.last, &a);
        json_decref(p.last);
        fail_msg("dashboard of room %s differs from the services", room_id);
    }
    doc = p.last;
    json_decref(doc);
}

/* The value of the Prometheus sample `name` (name with labels), 0 when absent. */
static double metric(const char *name)
{
    e2e_resp_t r;
    double v = 0;
    size_t n = strlen(name);
    assert_int_equal(e2e_call(host, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = strtod(p + n, NULL);
            break;
        }
    }
    e2e_resp_free(&r);
    return v;
}

static double dead_letters_metric(void)
{
    return metric("bearbnb_dead_letters_total{plugin=\"dashboard\"}");
}

/* ---- building blocks ------------------------------------------------------------ */

static char *create_room(const char *name, const char *city, int price)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"description\":\"quiet, near the river\",\"city\":\"%s\",\"pricePerNight\":%d,"
             "\"capacity\":3}",
             name, city, price);
    json_t *room = call("POST", "/rooms", tok_host, body, 201);
    assert_non_null(room);
    char *id = strdup(sget(room, "id"));
    json_decref(room);
    return id;
}

/* POST /reservations; returns the reservation id (caller frees). */
static char *book(const char *room, const char *tok, int from_day, int to_day, const char *card, long want,
                  json_t **resp)
{
    char in[11], out[11], body[300];
    date_plus(from_day, in);
    date_plus(to_day, out);
    snprintf(body, sizeof(body),
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":2,\"card\":\"%s\"}", room, in, out,
             card);
    e2e_resp_t r;
    assert_int_equal(e2e_call(host, E2E_HTTP1, "POST", "/reservations", tok, body, &r), 0);
    if (r.status != want)
        fprintf(stderr, "POST /reservations -> %ld (want %ld): %s\n", r.status, want, r.body);
    assert_int_equal(r.status, want);
    char *id = NULL;
    if (r.json && sget(r.json, "id"))
        id = strdup(sget(r.json, "id"));
    else if (strncmp(r.location, "/reservations/", 14) == 0)
        id = strdup(r.location + 14);
    if (resp)
        *resp = r.json ? json_incref(r.json) : NULL;
    e2e_resp_free(&r);
    assert_non_null(id);
    return id;
}

static void review(const char *room, const char *tok, int rating)
{
    char path[160], body[128];
    snprintf(path, sizeof(path), "/rooms/%s/reviews", room);
    snprintf(body, sizeof(body), "{\"rating\":%d,\"content\":\"stayed here, rated %d\"}", rating, rating);
    json_decref(call("POST", path, tok, body, 201));
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_booking_flow_shows_on_dashboard(void **state)
{
    (void)state;
    char *room = create_room("Riverside loft", "Bern", 12000);
    char path[160];

    /* the room fields */
    json_t *doc = wait_doc(room, pred_exists, NULL, "the new room");
    snprintf(path, sizeof(path), "/rooms/%s", room);
    json_t *svc = call("GET", path, NULL, NULL, 200);
    for (size_t i = 0; i < sizeof(room_keys) / sizeof(room_keys[0]); i++)
        assert_true(same_key(doc, svc, room_keys[i], "room", 1));
    assert_string_equal(sget(doc, "name"), "Riverside loft");
    assert_string_equal(sget(doc, "hostId"), "hanna");
    assert_string_equal(sget(doc, "status"), "ACTIVE");
    assert_int_equal(json_array_size(json_object_get(doc, "reservations")), 0);
    json_decref(svc);
    json_decref(doc);

    /* a booking: CONFIRMED and APPROVED, amount = nights x price */
    json_t *resp = NULL;
    char *r1 = book(room, tok_guest, 30, 33, "4111111111111111", 201, &resp);
    assert_string_equal(sget(resp, "status"), "CONFIRMED");
    res_want_t w1 = {r1, "CONFIRMED", "APPROVED"};
    doc = wait_doc(room, pred_res, &w1, "reservation 1 CONFIRMED/APPROVED");
    json_t *e = find_res(doc, r1);
    assert_int_equal(json_integer_value(json_object_get(e, "amount")), 3 * 12000);
    assert_string_equal(sget(e, "guestId"), "gus");
    assert_int_equal(json_integer_value(json_object_get(e, "guests")), 2);
    assert_non_null(sget(e, "paymentId"));
    assert_string_equal(sget(e, "paymentId"), sget(resp, "paymentId"));
    json_decref(resp);
    json_decref(doc);
    int_want_t one_booking = {"bookingCnt", 1};
    json_decref(wait_doc(room, pred_int, &one_booking, "bookingCnt 1"));

    /* a declined card: REJECTED and DECLINED */
    char *r2 = book(room, tok_guest2, 40, 42, "4000000000000002", 402, NULL);
    res_want_t w2 = {r2, "REJECTED", "DECLINED"};
    json_decref(wait_doc(room, pred_res, &w2, "reservation 2 REJECTED/DECLINED"));

    /* cancel: CANCELLED and CANCELLED */
    snprintf(path, sizeof(path), "/reservations/%s", r1);
    json_decref(call("DELETE", path, tok_guest, NULL, 202));
    res_want_t w1c = {r1, "CANCELLED", "CANCELLED"};
    json_decref(wait_doc(room, pred_res, &w1c, "reservation 1 CANCELLED/CANCELLED"));
    int_want_t no_booking = {"bookingCnt", 0};
    json_decref(wait_doc(room, pred_int, &no_booking, "bookingCnt 0"));
    counts_t c1 = {.rejected = 1, .cancelled = 1, .total = 2};
    json_decref(wait_doc(room, pred_bookings, &c1, "bookings: 1 rejected, 1 cancelled"));

    /* reviews: reviewCnt and rating follow the room service */
    review(room, tok_guest, 4);
    review(room, tok_guest2, 5);
    int_want_t two_reviews = {"reviewCnt", 2};
    json_decref(wait_doc(room, pred_int, &two_reviews, "reviewCnt 2"));
    assert_matches_services(room);

    /* the list, filtered by city */
    json_t *page = call("GET", "/dashboard/rooms?city=Bern", NULL, NULL, 200);
    json_t *list = json_object_get(page, "items");
    assert_true(json_is_array(list));
    assert_true(json_is_null(json_object_get(page, "next")));
    int found = 0;
    size_t i;
    json_array_foreach(list, i, e)
    {
        assert_string_equal(sget(e, "city"), "Bern");
        found += str_is(e, "id", room);
    }
    assert_int_equal(found, 1);
    json_decref(page);
    page = call("GET", "/dashboard/rooms?city=Nowhere", NULL, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 0);
    json_decref(page);

    /* an unknown room */
    e2e_resp_t r;
    assert_int_equal(e2e_call(host, E2E_HTTP1, "GET", "/dashboard/rooms/no-such-room", NULL, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 404));
    e2e_resp_free(&r);

    /* restart on the same data dir: the dashboard is unchanged */
    json_t *before = get_room_doc(room);
    json_t *all_before = call("GET", "/dashboard/rooms", NULL, NULL, 200);
    assert_non_null(before);
    assert_int_equal(e2e_host_stop(host), 0);
    assert_int_equal(e2e_host_restart(host), 0);
    json_t *after = get_room_doc(room);
    json_t *all_after = call("GET", "/dashboard/rooms", NULL, NULL, 200);
    assert_true(json_equal(before, after));
    assert_true(json_equal(all_before, all_after));
    json_decref(before);
    json_decref(after);
    json_decref(all_before);
    json_decref(all_after);
    /* and it keeps following events after the restart */
    {
        char *tok_guest3 = e2e_token(host, "gina", "guest", 0); /* one review per guest per room */
        assert_non_null(tok_guest3);
        review(room, tok_guest3, 1);
        free(tok_guest3);
    }
    int_want_t three_reviews = {"reviewCnt", 3};
    json_decref(wait_doc(room, pred_int, &three_reviews, "reviewCnt 3 after restart"));
    assert_matches_services(room);

    free(r1);
    free(r2);
    free(room);
}

static void test_deliver_twice_matches_services(void **state)
{
    (void)state;
    char *room = create_room("Twice house", "Zug", 9000);
    char *other = create_room("Other house", "Basel", 5000);
    char path[160];

    char *a = book(room, tok_guest, 20, 22, "4111111111111111", 201, NULL);
    char *b = book(room, tok_guest2, 25, 29, "4111111111111111", 201, NULL);
    char *c = book(room, tok_guest, 35, 36, "4000000000000002", 402, NULL);
    char *d = book(other, tok_guest2, 20, 23, "4111111111111111", 201, NULL);
    snprintf(path, sizeof(path), "/reservations/%s", a);
    json_decref(call("DELETE", path, tok_guest, NULL, 202));
    review(room, tok_guest, 3);
    review(room, tok_guest2, 4);
    snprintf(path, sizeof(path), "/rooms/%s", room);
    json_decref(call("PATCH", path, tok_host, "{\"name\":\"Twice house, renovated\",\"pricePerNight\":9500}", 200));

    res_want_t wa = {a, "CANCELLED", "CANCELLED"}, wb = {b, "CONFIRMED", "APPROVED"}, wc = {c, "REJECTED", "DECLINED"};
    json_decref(wait_doc(room, pred_res, &wa, "a CANCELLED/CANCELLED"));
    json_decref(wait_doc(room, pred_res, &wb, "b CONFIRMED/APPROVED"));
    json_decref(wait_doc(room, pred_res, &wc, "c REJECTED/DECLINED"));
    res_want_t wd = {d, "CONFIRMED", "APPROVED"};
    json_decref(wait_doc(other, pred_res, &wd, "d CONFIRMED/APPROVED"));
    assert_matches_services(room);
    assert_matches_services(other);
    /* every event really came twice: the second copy was recognised */
    assert_true(metric("bearbnb_dashboard_events_repeated_total") > 0);
    assert_true(metric("bearbnb_dashboard_events_repeated_total") >= metric("bearbnb_dashboard_events_applied_total"));

    counts_t c3 = {.confirmed = 1, .rejected = 1, .cancelled = 1, .total = 3}; /* not doubled */
    json_decref(wait_doc(room, pred_bookings, &c3, "bookings of the twice house"));
    json_t *doc = get_room_doc(room);
    assert_non_null(doc);
    assert_string_equal(sget(doc, "name"), "Twice house, renovated");
    assert_int_equal(json_integer_value(json_object_get(doc, "reviewCnt")), 2);
    assert_int_equal(json_integer_value(json_object_get(doc, "bookingCnt")), 1);
    assert_int_equal(json_array_size(json_object_get(doc, "reservations")), 3); /* not duplicated */
    json_decref(doc);

    /* deleting the room: DELETED, its future booking cancelled and refunded */
    snprintf(path, sizeof(path), "/rooms/%s", room);
    json_decref(call("DELETE", path, tok_host, NULL, 204));
    json_decref(wait_doc(room, pred_status, "DELETED", "room DELETED"));
    res_want_t wb2 = {b, "CANCELLED", "CANCELLED"};
    json_decref(wait_doc(room, pred_res, &wb2, "b CANCELLED/CANCELLED after room deletion"));
    counts_t c4 = {.rejected = 1, .cancelled = 2, .total = 3};
    json_decref(wait_doc(room, pred_bookings, &c4, "bookings after the room's deletion"));
    json_t *page = call("GET", "/dashboard/rooms?city=Zug", NULL, NULL, 200);
    json_t *list = json_object_get(page, "items");
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(sget(json_array_get(list, 0), "status"), "DELETED");
    json_decref(page);

    free(a);
    free(b);
    free(c);
    free(d);
    free(room);
    free(other);
}

/* ---- pages and privacy ------------------------------------------------------- */

static void expect_400(const char *path, const char *tok, const char *names)
{
    e2e_resp_t r;
    assert_int_equal(e2e_call(host, E2E_HTTP1, "GET", path, tok, NULL, &r), 0);
    if (r.status != 400 || !r.json || !strstr(sget(r.json, "detail") ?: "", names))
        fprintf(stderr, "GET %s -> %ld %s (want 400 naming %s)\n", path, r.status, r.body, names);
    assert_true(e2e_is_problem(&r, 400));
    assert_non_null(strstr(sget(r.json, "detail"), names));
    e2e_resp_free(&r);
}

static int count_guest(const json_t *list, const char *guest)
{
    size_t i;
    json_t *e;
    int n = 0;
    json_array_foreach(list, i, e) n += str_is(e, "guestId", guest);
    return n;
}

static void test_pages_and_privacy(void **state)
{
    (void)state;
    char *room = create_room("Busy flat", "Thun", 8000);
    char *ids[25];
    char path[300];
    int pages;
    const char *toks[3] = {tok_guest, tok_guest2, tok_guest3};

    /* 25 bookings: gus 12 (the 6th declined, the 4th cancelled), greta 8, olga 5 */
    for (int i = 0; i < 25; i++) {
        const char *tok = i < 12 ? toks[0] : i < 20 ? toks[1] : toks[2];
        int declined = i == 5;
        ids[i] = book(room, tok, 60 + 2 * i, 61 + 2 * i, declined ? "4000000000000002" : "4111111111111111",
                      declined ? 402 : 201, NULL);
    }
    snprintf(path, sizeof(path), "/reservations/%s", ids[3]);
    json_decref(call("DELETE", path, tok_guest, NULL, 202));
    counts_t c = {.confirmed = 23, .rejected = 1, .cancelled = 1, .total = 25};
    json_decref(wait_doc(room, pred_bookings, &c, "25 bookings counted"));
    assert_matches_services(room);

    /* the host: every reservation, newest first, once, in pages of 10 */
    json_t *all = walk_reservations(room, tok_host, "10", &pages);
    assert_non_null(all);
    assert_int_equal(json_array_size(all), 25);
    assert_int_equal(pages, 3);
    for (int i = 0; i < 25; i++) {
        int seen = 0;
        size_t k;
        json_t *e;
        json_array_foreach(all, k, e) seen += str_is(e, "id", ids[i]);
        assert_int_equal(seen, 1);
    }
    assert_int_equal(count_guest(all, "gus"), 12);
    json_t *first = json_array_get(all, 0), *last = json_array_get(all, 24);
    assert_true(json_integer_value(json_object_get(first, "createdAt")) >
                json_integer_value(json_object_get(last, "createdAt")));
    assert_string_equal(sget(last, "id"), ids[0]); /* the oldest comes last */
    assert_string_equal(sget(first, "id"), ids[24]);
    json_decref(all);
    all = walk_reservations(room, tok_host, NULL, &pages); /* default limit 20 */
    assert_int_equal(json_array_size(all), 25);
    assert_int_equal(pages, 2);
    json_decref(all);

    /* a guest: only their own */
    all = walk_reservations(room, tok_guest, "5", &pages);
    assert_int_equal(json_array_size(all), 12);
    assert_int_equal(count_guest(all, "gus"), 12);
    json_decref(all);
    all = walk_reservations(room, tok_guest2, NULL, &pages);
    assert_int_equal(json_array_size(all), 8);
    assert_int_equal(count_guest(all, "greta"), 8);
    json_decref(all);
    /* another host, a guest without bookings here: an empty page */
    all = walk_reservations(room, tok_host2, NULL, &pages);
    assert_int_equal(json_array_size(all), 0);
    json_decref(all);
    char *other = create_room("Empty flat", "Thun", 8000);
    json_decref(wait_doc(other, pred_exists, NULL, "the empty room"));
    all = walk_reservations(other, tok_guest, NULL, &pages);
    assert_int_equal(json_array_size(all), 0);
    json_decref(all);

    /* anonymous: 401 for the reservations; the summary names no guest */
    e2e_resp_t r;
    snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations", room);
    assert_int_equal(e2e_call(host, E2E_HTTP1, "GET", path, NULL, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 401));
    e2e_resp_free(&r);
    snprintf(path, sizeof(path), "/dashboard/rooms/%s", room);
    assert_int_equal(e2e_call(host, E2E_HTTP1, "GET", path, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "gus"));
    assert_null(strstr(r.body, "greta"));
    assert_null(json_object_get(r.json, "reservations"));
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(host, E2E_HTTP1, "GET", "/dashboard/rooms?limit=100", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "gus"));
    e2e_resp_free(&r);

    /* bad page parameters: 400 naming them */
    snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?limit=0", room);
    expect_400(path, tok_host, "limit");
    snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?limit=101", room);
    expect_400(path, tok_host, "limit");
    snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?limit=ten", room);
    expect_400(path, tok_host, "limit");
    snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?cursor=bm90LWEtY3Vyc29y", room);
    expect_400(path, tok_host, "cursor");
    snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?status=CONFIRMED", room);
    expect_400(path, tok_host, "status");
    expect_400("/dashboard/rooms?limit=1000", NULL, "limit");
    expect_400("/dashboard/rooms?cursor=%25%25%25", NULL, "cursor");
    expect_400("/dashboard/rooms?sort=name", NULL, "sort");

    /* the list of rooms in pages: every room once */
    json_t *seen = json_object();
    char *cursor = NULL;
    int npages = 0;
    do {
        if (cursor)
            snprintf(path, sizeof(path), "/dashboard/rooms?limit=1&cursor=%s", cursor);
        else
            snprintf(path, sizeof(path), "/dashboard/rooms?limit=1");
        free(cursor);
        cursor = NULL;
        json_t *pg = call("GET", path, NULL, NULL, 200), *e;
        size_t k;
        json_array_foreach(json_object_get(pg, "items"), k, e)
        {
            assert_null(json_object_get(seen, sget(e, "id")));
            json_object_set_new(seen, sget(e, "id"), json_true());
        }
        if (json_is_string(json_object_get(pg, "next")))
            cursor = strdup(sget(pg, "next")); /* base64url: no escaping needed */
        json_decref(pg);
        npages++;
    } while (cursor && npages < 50);
    assert_non_null(json_object_get(seen, room));
    assert_non_null(json_object_get(seen, other));
    assert_int_equal(json_object_size(seen), 2);
    json_decref(seen);

    for (int i = 0; i < 25; i++)
        free(ids[i]);
    free(room);
    free(other);
}

/* ---- poison events ------------------------------------------------------------ */

typedef struct {
    const char *needle;
} dl_arg_t;

/* A dead letter of the dashboard whose reason contains needle. */
static int has_dead_letter(void *arg)
{
    const dl_arg_t *a = arg;
    json_t *list = get_if_200("/admin/dead-letters", NULL), *e;
    size_t i;
    int found = 0;
    json_array_foreach(list, i, e)
    {
        const char *reason = sget(e, "reason");
        if (str_is(e, "consumer", "dashboard") && reason && strstr(reason, a->needle))
            found = 1;
    }
    json_decref(list);
    return found;
}

static void inject(const char *topic, const char *payload)
{
    char path[128];
    snprintf(path, sizeof(path), "/admin/events?topic=%s", topic);
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "POST", .path = path, .body = payload};
    e2e_resp_t r;
    assert_int_equal(e2e_http(host, &rq, &r), 0);
    if (r.status / 100 != 2)
        fprintf(stderr, "POST %s -> %ld: %s\n", path, r.status, r.body);
    assert_int_equal(r.status / 100, 2);
    e2e_resp_free(&r);
}

static void test_poison_events_are_dead_lettered(void **state)
{
    (void)state;
    char *room = create_room("Poison-proof", "Chur", 7000);
    char payload[600], path[160];
    json_decref(wait_doc(room, pred_exists, NULL, "the new room"));
    double before = dead_letters_metric();

    /* a room event whose data has a field of the wrong type */
    snprintf(payload, sizeof(payload),
             "{\"id\":\"poison-1\",\"type\":\"RoomModified\",\"source\":\"evil\",\"subject\":\"%s\","
             "\"time\":\"2030-01-01T00:00:00Z\",\"data\":{\"id\":\"%s\",\"name\":\"Hacked\","
             "\"pricePerNight\":\"free\",\"version\":99}}",
             room, room);
    inject("bearbnb.room", payload);
    dl_arg_t a1 = {"data.pricePerNight"};
    assert_int_equal(e2e_wait_until(WAIT_MS, 50, has_dead_letter, &a1), 0);

    /* a payment event without roomId, and an envelope without data */
    inject("bearbnb.payment", "{\"id\":\"poison-2\",\"type\":\"PaymentApproved\",\"subject\":\"p\",\"data\":{\"id\":"
                              "\"p\",\"reservationId\":\"x\",\"status\":\"APPROVED\",\"version\":1}}");
    dl_arg_t a2 = {"data.roomId"};
    assert_int_equal(e2e_wait_until(WAIT_MS, 50, has_dead_letter, &a2), 0);
    inject("bearbnb.reservation", "{\"id\":\"poison-3\",\"type\":\"ReservationPlaced\",\"subject\":\"x\"}");
    dl_arg_t a3 = {"data is missing"};
    assert_int_equal(e2e_wait_until(WAIT_MS, 50, has_dead_letter, &a3), 0);
    /* not JSON at all (parked by the host for every consumer) */
    inject("bearbnb.room", "{this is not json");

    /* an unknown type is not poison */
    inject("bearbnb.room", "{\"id\":\"harmless-1\",\"type\":\"RoomRepainted\",\"subject\":\"r\",\"data\":{}}");

    /* later events still apply, the poisoned fields did not */
    snprintf(path, sizeof(path), "/rooms/%s", room);
    json_decref(call("PATCH", path, tok_host, "{\"name\":\"Poison-proof, still\"}", 200));
    char *r1 = book(room, tok_guest, 50, 51, "4111111111111111", 201, NULL);
    res_want_t w = {r1, "CONFIRMED", "APPROVED"};
    json_t *doc = wait_doc(room, pred_res, &w, "a booking after the poison events");
    assert_int_equal(json_integer_value(json_object_get(doc, "pricePerNight")), 7000);
    json_decref(doc);
    assert_matches_services(room);
    snprintf(path, sizeof(path), "/dashboard/rooms/%s", room);
    doc = call("GET", path, NULL, NULL, 200);
    assert_string_equal(sget(doc, "name"), "Poison-proof, still");
    json_decref(doc);

    double after = dead_letters_metric();
    assert_true(after >= before + 4);
    json_t *dl = call("GET", "/admin/dead-letters", NULL, NULL, 200);
    size_t i, n = 0;
    json_t *e;
    json_array_foreach(dl, i, e)
    {
        if (!str_is(e, "consumer", "dashboard"))
            continue;
        n++;
        assert_non_null(sget(e, "reason"));
        assert_true(strlen(sget(e, "reason")) > 0);
        assert_non_null(json_object_get(e, "event"));
        const char *ev = sget(e, "event");
        assert_true(ev == NULL || strstr(ev, "harmless-1") == NULL); /* the unknown type was not parked */
    }
    assert_int_equal(n, 4);
    json_decref(dl);
    free(r1);
    free(room);
}

/* ---- the first dashboard's documents, migrated at start ----------------------- */

/* A `rooms` document of the first dashboard (one per room, every reservation
 * inside) written into the real SQLite store between two runs: the next
 * start rebuilds it as a summary and views (plugins/dashboard/README.md). */
static void test_first_dashboard_documents_migrated(void **state)
{
    (void)state;
    static const char *const room = "0f0f0f0f-aaaa-4bbb-8ccc-000000000001";
    char path[1200], err[256];
    assert_int_equal(e2e_host_stop(host), 0);
    snprintf(path, sizeof(path), "%s/dashboard.db", e2e_host_dir(host));
    bnb_storage_config_t cfg = {.backend = "sqlite", .name = "dashboard", .path = path, .pool_size = 1};
    bnb_store_t *st = NULL;
    assert_int_equal(bnb_storage_open(&cfg, &st, err, sizeof(err)), 0);
    json_t *old = json_pack(
        "{s:s, s:{s:i, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:i, s:i}, s:n, s:n,"
        " s:[{s:s, s:{s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:s}, s:{s:i, s:s, s:s, s:i}},"
        "    {s:s, s:{s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:n}, s:n}]}",
        "id", room, "_room", "v", 2, "hostId", "hanna", "name", "Old loft", "description", "d", "city", "Chur",
        "pricePerNight", 9000, "capacity", 2, "status", "ACTIVE", "reviewCnt", 0, "rating", 0, "bookingCnt", 1,
        "_reviews", "_deleted", "reservations", "id", "0f0f0f0f-bbbb-4bbb-8ccc-000000000001", "_res", "v", 2, "guestId",
        "gus", "checkIn", "2031-01-01", "checkOut", "2031-01-03", "guests", 1, "amount", 18000, "status", "CONFIRMED",
        "paymentId", "pay-old-1", "_pay", "v", 1, "id", "pay-old-1", "status", "APPROVED", "amount", 18000, "id",
        "0f0f0f0f-bbbb-4bbb-8ccc-000000000002", "_res", "v", 3, "guestId", "greta", "checkIn", "2031-02-01", "checkOut",
        "2031-02-02", "guests", 1, "amount", 9000, "status", "CANCELLED", "paymentId", "_pay");
    assert_non_null(old);
    bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "rooms", .id = room, .expect_version = 0, .body = old};
    assert_int_equal(st->ops->commit(st, &w, NULL, 0, NULL, NULL), 0);
    json_decref(old);
    bnb_storage_close(st);

    assert_int_equal(e2e_host_restart(host), 0);
    char url[300];
    snprintf(url, sizeof(url), "/dashboard/rooms/%s", room);
    json_t *sum = call("GET", url, NULL, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(sum, "name")), "Old loft");
    json_t *b = json_object_get(sum, "bookings");
    assert_int_equal(json_integer_value(json_object_get(b, "CONFIRMED")), 1);
    assert_int_equal(json_integer_value(json_object_get(b, "CANCELLED")), 1);
    json_decref(sum);
    snprintf(url, sizeof(url), "/dashboard/rooms/%s/reservations", room);
    json_t *page = call("GET", url, tok_host, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 2);
    json_decref(page);
    page = call("GET", url, tok_guest, NULL, 200); /* gus: his own only */
    json_t *items = json_object_get(page, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "paymentStatus")), "APPROVED");
    json_decref(page);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_booking_flow_shows_on_dashboard, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_twice_matches_services, setup_twice, teardown),
        cmocka_unit_test_setup_teardown(test_pages_and_privacy, setup_many, teardown),
        cmocka_unit_test_setup_teardown(test_poison_events_are_dead_lettered, setup_admin, teardown),
        cmocka_unit_test_setup_teardown(test_first_dashboard_documents_migrated, setup_plain, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Two processes of every service (issue 10): the distributed topology with
 * opts.replicas = 2 (room, reservation, payment and dashboard twice each, on
 * the same MariaDB / FerretDB databases and Kafka consumer groups, two
 * edges), and a stream of racing bookings on few rooms sent through both
 * edges at once. Then:
 *   - no two stays of a room that hold nights (PENDING, CONFIRMED,
 *     CANCEL_REQUESTED) overlap;
 *   - every reservation that left PENDING has exactly one payment, whose
 *     status matches (CONFIRMED - APPROVED, REJECTED - DECLINED), and no
 *     payment is for an unknown reservation;
 *   - one guest racing 20 bookings through both edges gets exactly the cap;
 *   - through each edge (each dashboard process) the dashboard equals the
 *     services: one view per reservation, with its status, paymentId and
 *     payment status, and the room summaries count the same statuses;
 *   - both processes of reservation and payment did work.
 * Needs the real servers (suite infra).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NROOMS   3
#define NGUESTS  6
#define NTHREADS 8
#define PER      12
#define CAPN     20
#define WAIT_MS  90000
/* The dashboards catch up after the sagas settle: ~230 events, each a few
 * commits on FerretDB, took 75-133 s on 2 shared cores at load 15-20
 * (throughput is issue 12). So the check waits while they make progress
 * (events consumed by either process) and fails once they have consumed
 * nothing for DASH_IDLE_MS (longer than the MongoDB backend's 30 s grace
 * period, after which a commit left by a failed one is settled) or after
 * DASH_WAIT_MS in all: a lagging dashboard is waited for, a lost event fails. */
#define DASH_IDLE_MS 60000
#define DASH_WAIT_MS 600000

typedef struct world {
    e2e_host_t *h;
    int ports[2]; /* edge, edge2 */
    char *host_tok;
    char *guest_tok[NGUESTS];
    char *cap_tok;
    char *rooms[NROOMS];
} world_t;

static void date_in(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* One request through edge `e` (0 or 1). */
static int edge_call(const world_t *w, int e, const char *method, const char *path, const char *tok, const char *body,
                     e2e_resp_t *r)
{
    e2e_client_t *c = e2e_client_new(w->ports[e]);
    e2e_req_t rq = {
        .proto = E2E_HTTP1, .method = method, .path = path, .token = tok, .body = body, .timeout_ms = 30000};
    int rc = c ? e2e_client_do(c, &rq, r) : -1;
    e2e_client_free(c);
    return rc;
}

/* Every item of the paged list at path (through edge e), or NULL. */
static json_t *get_all(const world_t *w, int e, const char *tok, const char *path)
{
    json_t *all = json_array();
    char *cursor = NULL;
    for (int pages = 0; pages < 1000; pages++) {
        char url[1200];
        int n = snprintf(url, sizeof url, "%s%climit=100", path, strchr(path, '?') ? '&' : '?');
        for (const char *c = cursor ? cursor : ""; *c && n < (int)sizeof url - 16; c++)
            n +=
                snprintf(url + n, sizeof url - (size_t)n, "%s%%%02X", c == cursor ? "&cursor=" : "", (unsigned char)*c);
        free(cursor);
        cursor = NULL;
        e2e_resp_t r;
        if (edge_call(w, e, "GET", url, tok, NULL, &r) != 0 || r.status != 200 ||
            !json_is_array(json_object_get(r.json, "items"))) {
            fprintf(stderr, "GET %s: %ld %s\n", url, r.status, r.body ? r.body : "");
            e2e_resp_free(&r);
            break;
        }
        json_array_extend(all, json_object_get(r.json, "items"));
        const char *next = jstr(r.json, "next");
        cursor = next ? strdup(next) : NULL;
        e2e_resp_free(&r);
        if (!cursor)
            return all;
    }
    free(cursor);
    json_decref(all);
    return NULL;
}

/* ---- the booking stream ---------------------------------------------------- */

typedef struct booker {
    const world_t *w;
    int idx;
    int created, pending, declined, conflict, capped, other;
    pthread_barrier_t *go;
} booker_t;

static void *booker_run(void *arg)
{
    booker_t *b = arg;
    unsigned seed = (unsigned)(b->idx * 7919 + 17);
    pthread_barrier_wait(b->go);
    for (int i = 0; i < PER; i++) {
        int room = (int)(rand_r(&seed) % NROOMS), from = 5 + (int)(rand_r(&seed) % 20),
            nights = 1 + (int)(rand_r(&seed) % 3), guest = (int)(rand_r(&seed) % NGUESTS);
        int decline = rand_r(&seed) % 10 == 0;
        char in[11], out[11], body[512];
        date_in(from, in);
        date_in(from + nights, out);
        snprintf(body, sizeof body,
                 "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":\"%s\"}",
                 b->w->rooms[room], in, out, decline ? "4000000000000002" : "4111111111111111");
        e2e_resp_t r;
        int rc = edge_call(b->w, (b->idx + i) % 2, "POST", "/reservations", b->w->guest_tok[guest], body, &r);
        long st = rc == 0 ? r.status : -1;
        if (st == 201)
            b->created++;
        else if (st == 202)
            b->pending++;
        else if (st == 402)
            b->declined++;
        else if (st == 409 && strstr(r.body, "too many"))
            b->capped++;
        else if (st == 409)
            b->conflict++;
        else {
            fprintf(stderr, "booker %d: %ld %s\n", b->idx, st, rc == 0 ? r.body : r.error);
            b->other++;
        }
        e2e_resp_free(&r);
    }
    return NULL;
}

typedef struct capper {
    const world_t *w;
    int idx;
    long status;
    pthread_barrier_t *go;
} capper_t;

static void *capper_run(void *arg)
{
    capper_t *c = arg;
    char in[11], out[11], body[512];
    date_in(40 + c->idx, in);
    date_in(41 + c->idx, out);
    snprintf(body, sizeof body,
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":\"4111111111111111\"}",
             c->w->rooms[c->idx % NROOMS], in, out);
    e2e_resp_t r;
    pthread_barrier_wait(c->go);
    int rc = edge_call(c->w, c->idx % 2, "POST", "/reservations", c->w->cap_tok, body, &r);
    c->status = rc == 0 ? r.status : -1;
    if (rc == 0 && r.status == 409 && !strstr(r.body, "too many"))
        c->status = -409;
    e2e_resp_free(&r);
    return NULL;
}

/* ---- checks ------------------------------------------------------------------ */

static int holds(const char *s)
{
    return s && (!strcmp(s, "PENDING") || !strcmp(s, "CONFIRMED") || !strcmp(s, "CANCEL_REQUESTED"));
}

typedef struct settled {
    const world_t *w;
    json_t *res; /* out: every reservation (host's view) */
    char why[512];
} settled_t;

/* Every reservation out of PENDING. */
static int all_settled(void *arg)
{
    settled_t *s = arg;
    json_decref(s->res);
    s->res = get_all(s->w, 0, s->w->host_tok, "/reservations");
    if (!s->res)
        return 0;
    size_t i;
    json_t *e;
    json_array_foreach(s->res, i, e) if (!strcmp(jstr(e, "status"), "PENDING"))
    {
        snprintf(s->why, sizeof s->why, "reservation %s still PENDING", jstr(e, "id"));
        return 0;
    }
    return 1;
}

typedef struct agree {
    const world_t *w;
    const json_t *res;  /* every reservation (the reservation service) */
    const json_t *pays; /* every payment (the payment service) */
    char why[512];
} agree_t;

/* Through each edge (each dashboard process), for every room: one view per
 * reservation of the service and no other, with the reservation's status and
 * paymentId and its payment's status; the summary counts by status equal the
 * service's. */
static int dashboard_agrees(void *arg)
{
    agree_t *a = arg;
    static const char *const statuses[] = {"PENDING", "CONFIRMED", "REJECTED", "CANCEL_REQUESTED", "CANCELLED"};
    for (int e = 0; e < 2; e++)
        for (int rm = 0; rm < NROOMS; rm++) {
            const char *room = a->w->rooms[rm], *dn = e ? "2" : "";
            char path[200];
            snprintf(path, sizeof path, "/dashboard/rooms/%s/reservations", room);
            json_t *dl = get_all(a->w, e, a->w->host_tok, path), *x, *d, *p;
            size_t n = 0, i, k;
            long want[5] = {0};
            int ok = json_is_array(dl);
            if (!ok)
                snprintf(a->why, sizeof a->why, "room %s: no dashboard%s reservations", room, dn);
            json_array_foreach(a->res, i, x)
            {
                if (!ok || strcmp(jstr(x, "roomId"), room))
                    continue;
                n++;
                const char *id = jstr(x, "id"), *st = jstr(x, "status"), *pst = NULL;
                for (int j = 0; j < 5; j++)
                    want[j] += !strcmp(st, statuses[j]);
                const json_t *found = NULL;
                int times = 0;
                json_array_foreach(dl, k, d) if (jstr(d, "id") && !strcmp(jstr(d, "id"), id)) found = d, times++;
                json_array_foreach(a->pays, k, p) if (!strcmp(jstr(p, "reservationId"), id)) pst = jstr(p, "status");
                json_t *pid = json_object_get(x, "paymentId"),
                       *dpid = found ? json_object_get(found, "paymentId") : NULL;
                if (times != 1 || !jstr(found, "status") || strcmp(jstr(found, "status"), st) ||
                    (pst && (!jstr(found, "paymentStatus") || strcmp(jstr(found, "paymentStatus"), pst))) ||
                    !json_equal(pid ? pid : json_null(), dpid ? dpid : json_null())) {
                    char *ds = found ? json_dumps(found, JSON_COMPACT) : NULL;
                    snprintf(a->why, sizeof a->why,
                             "reservation %s: service %s paymentId %s / payment %s; dashboard%s %d view(s) %s", id, st,
                             json_string_value(pid) ? json_string_value(pid) : "null", pst ? pst : "-", dn, times,
                             ds ? ds : "(missing)");
                    free(ds);
                    ok = 0;
                }
            }
            if (ok && json_array_size(dl) != n) {
                snprintf(a->why, sizeof a->why, "room %s: dashboard%s lists %zu, the service %zu", room, dn,
                         json_array_size(dl), n);
                ok = 0;
            }
            json_decref(dl);
            if (!ok)
                return 0;
            /* the summary's counts by status */
            e2e_resp_t r;
            snprintf(path, sizeof path, "/dashboard/rooms/%s", room);
            if (edge_call(a->w, e, "GET", path, NULL, NULL, &r) != 0 || r.status != 200) {
                snprintf(a->why, sizeof a->why, "GET %s through edge%s: %ld", path, dn, r.status);
                e2e_resp_free(&r);
                return 0;
            }
            json_t *b = json_object_get(r.json, "bookings");
            for (int j = 0; j < 5 && ok; j++)
                if (json_integer_value(json_object_get(b, statuses[j])) != want[j]) {
                    snprintf(a->why, sizeof a->why, "room %s: dashboard%s counts %lld %s, the service %ld", room, dn,
                             (long long)json_integer_value(json_object_get(b, statuses[j])), statuses[j], want[j]);
                    ok = 0;
                }
            e2e_resp_free(&r);
            if (!ok)
                return 0;
        }
    return 1;
}

/* Value of the first /metrics sample of process `part` starting with prefix,
 * or -1 (GET /metrics gathers every process, each section headed by
 * "# e2e process <name>"). */
static double part_metric(world_t *w, const char *part, const char *prefix)
{
    e2e_resp_t r;
    double v = -1;
    char head[64];
    snprintf(head, sizeof head, "# e2e process %s\n", part);
    if (e2e_call(w->h, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &r) == 0 && r.status == 200) {
        const char *sec = strstr(r.body, head), *end = sec ? strstr(sec + strlen(head), "# e2e process ") : NULL;
        for (const char *at = sec ? strstr(sec, prefix) : NULL; at && (!end || at < end); at = strstr(at + 1, prefix))
            if (at[-1] == '\n') {
                const char *sp = strchr(at, ' ');
                v = sp ? strtod(sp + 1, NULL) : -1;
                break;
            }
    }
    e2e_resp_free(&r);
    return v;
}

static void test_two_processes_per_service(void **state)
{
    (void)state;
    world_t w;
    memset(&w, 0, sizeof w);
    e2e_host_opts_t o = {.replicas = 2, .ready_timeout_ms = 120000};
    assert_int_equal(e2e_host_start(&w.h, &o), 0);
    assert_true(e2e_host_distributed(w.h));
    assert_non_null(e2e_host_part(w.h, "reservation2"));
    w.ports[0] = e2e_host_port(w.h);
    w.ports[1] = e2e_host_port(e2e_host_part(w.h, "edge2"));
    w.host_tok = e2e_token(w.h, "hal", "host", 0);
    w.cap_tok = e2e_token(w.h, "capped", "guest", 0);
    assert_non_null(w.host_tok);
    for (int g = 0; g < NGUESTS; g++) {
        char sub[16];
        snprintf(sub, sizeof sub, "guest%d", g);
        assert_non_null(w.guest_tok[g] = e2e_token(w.h, sub, "guest", 0));
    }
    for (int rm = 0; rm < NROOMS; rm++) {
        e2e_resp_t r;
        assert_int_equal(edge_call(&w, rm % 2, "POST", "/rooms", w.host_tok,
                                   "{\"name\":\"Hut\",\"description\":\"d\",\"city\":\"Chur\",\"pricePerNight\":"
                                   "5000,\"capacity\":2}",
                                   &r),
                         0);
        assert_int_equal(r.status, 201);
        w.rooms[rm] = strdup(jstr(r.json, "id"));
        e2e_resp_free(&r);
    }

    /* the racing stream, through both edges */
    long long t0 = e2e_now_ms();
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, NTHREADS);
    booker_t bk[NTHREADS];
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        bk[t] = (booker_t){.w = &w, .idx = t, .go = &go};
        assert_int_equal(pthread_create(&th[t], NULL, booker_run, &bk[t]), 0);
    }
    int created = 0, pending = 0, declined = 0, conflict = 0, capped = 0, other = 0;
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        created += bk[t].created;
        pending += bk[t].pending;
        declined += bk[t].declined;
        conflict += bk[t].conflict;
        capped += bk[t].capped;
        other += bk[t].other;
    }
    pthread_barrier_destroy(&go);
    fprintf(stderr,
            "stream of %d bookings on %d rooms through 2 edges in %lld ms: %d x 201, %d x 202, %d x 402, %d x 409 "
            "taken, %d x 409 capped, %d other\n",
            NTHREADS * PER, NROOMS, e2e_now_ms() - t0, created, pending, declined, conflict, capped, other);
    assert_int_equal(other, 0);
    assert_true(created + pending > 0);
    assert_true(conflict > 0); /* the rooms were contended */

    /* one guest, 20 bookings at once through both edges: exactly the cap */
    pthread_barrier_init(&go, NULL, CAPN);
    capper_t cp[CAPN];
    pthread_t ct[CAPN];
    for (int i = 0; i < CAPN; i++) {
        cp[i] = (capper_t){.w = &w, .idx = i, .go = &go};
        assert_int_equal(pthread_create(&ct[i], NULL, capper_run, &cp[i]), 0);
    }
    int cap_ok = 0, cap_no = 0;
    for (int i = 0; i < CAPN; i++) {
        pthread_join(ct[i], NULL);
        if (cp[i].status == 201 || cp[i].status == 202)
            cap_ok++;
        else if (cp[i].status == 409)
            cap_no++;
        else
            fprintf(stderr, "cap racer %d: %ld\n", i, cp[i].status);
    }
    pthread_barrier_destroy(&go);
    fprintf(stderr, "one guest, %d bookings through 2 reservation processes: %d accepted, %d capped\n", CAPN, cap_ok,
            cap_no);
    assert_int_equal(cap_ok, 10);
    assert_int_equal(cap_no, CAPN - 10);

    /* the sagas finish */
    settled_t s = {.w = &w};
    if (e2e_wait_until(WAIT_MS, 200, all_settled, &s) != 0) {
        fprintf(stderr, "not settled: %s\n", s.why);
        fail();
    }
    json_t *res = s.res;
    fprintf(stderr, "%zu reservations settled %lld ms after the stream began\n", json_array_size(res),
            e2e_now_ms() - t0);
    assert_int_equal(json_array_size(res), (size_t)(created + pending + declined + cap_ok));

    /* no overlapping stays that hold nights */
    size_t i, j, overlaps = 0;
    json_t *a, *b;
    json_array_foreach(res, i, a)
    {
        if (!holds(jstr(a, "status")))
            continue;
        json_array_foreach(res, j, b)
        {
            if (j <= i || !holds(jstr(b, "status")) || strcmp(jstr(a, "roomId"), jstr(b, "roomId")))
                continue;
            if (strcmp(jstr(a, "checkIn"), jstr(b, "checkOut")) < 0 &&
                strcmp(jstr(b, "checkIn"), jstr(a, "checkOut")) < 0) {
                fprintf(stderr, "overlap: %s %s..%s and %s %s..%s\n", jstr(a, "id"), jstr(a, "checkIn"),
                        jstr(a, "checkOut"), jstr(b, "id"), jstr(b, "checkIn"), jstr(b, "checkOut"));
                overlaps++;
            }
        }
    }
    assert_int_equal(overlaps, 0);

    /* exactly one payment per reservation, matching its outcome */
    json_t *pays = get_all(&w, 1, w.host_tok, "/payments");
    assert_non_null(pays);
    json_t *count = json_object();
    json_array_foreach(pays, i, a)
    {
        const char *rid = jstr(a, "reservationId");
        assert_non_null(rid);
        json_object_set_new(count, rid, json_integer(json_integer_value(json_object_get(count, rid)) + 1));
    }
    size_t bad = 0;
    json_array_foreach(res, i, a)
    {
        const char *id = jstr(a, "id"), *st = jstr(a, "status");
        json_int_t n = json_integer_value(json_object_get(count, id));
        const char *pst = NULL;
        json_array_foreach(pays, j, b) if (!strcmp(jstr(b, "reservationId"), id)) pst = jstr(b, "status");
        const char *want = !strcmp(st, "CONFIRMED") ? "APPROVED" : !strcmp(st, "REJECTED") ? "DECLINED" : NULL;
        if (n != 1 || (want && strcmp(pst, want))) {
            fprintf(stderr, "reservation %s (%s): %lld payments, status %s\n", id, st, (long long)n, pst ? pst : "-");
            bad++;
        }
    }
    fprintf(stderr, "%zu payments for %zu reservations\n", json_array_size(pays), json_array_size(res));
    assert_int_equal(bad, 0);
    assert_int_equal(json_array_size(pays), json_array_size(res));
    json_decref(count);

    /* both processes of the saga's services worked */
    double p1 = part_metric(&w, "reservation", "bearbnb_reservation_placed_total"),
           p2 = part_metric(&w, "reservation2", "bearbnb_reservation_placed_total");
    double a1 = part_metric(&w, "payment", "bearbnb_payment_approved_total"),
           a2 = part_metric(&w, "payment2", "bearbnb_payment_approved_total");
    fprintf(stderr, "placed by reservation %g / reservation2 %g; approved by payment %g / payment2 %g\n", p1, p2, a1,
            a2);
    assert_true(p1 > 0 && p2 > 0);
    assert_true(a1 > 0 && a2 > 0);

    /* both dashboard processes equal the services (issue 10) */
    agree_t ag = {.w = &w, .res = res, .pays = pays};
    long long t1 = e2e_now_ms(), moved = t1;
    double consumed = -1;
    while (!dashboard_agrees(&ag)) {
        double c1 = part_metric(&w, "dashboard", "bearbnb_events_consumed_total{plugin=\"dashboard\"}"),
               c2 = part_metric(&w, "dashboard2", "bearbnb_events_consumed_total{plugin=\"dashboard\"}");
        double c = (c1 > 0 ? c1 : 0) + (c2 > 0 ? c2 : 0);
        long long now = e2e_now_ms();
        if (c != consumed) {
            consumed = c;
            moved = now;
        }
        if (now - moved > DASH_IDLE_MS || now - t1 > DASH_WAIT_MS)
            fail_msg("the dashboard disagrees with the services (%.0f events consumed, none for %lld ms): %s", consumed,
                     now - moved, ag.why);
        usleep(1000 * 1000);
    }
    fprintf(stderr, "both dashboards equal the services %lld ms after the sagas settled (%.0f events consumed)\n",
            e2e_now_ms() - t1, consumed);
    json_decref(pays);
    json_decref(res);

    for (int rm = 0; rm < NROOMS; rm++)
        free(w.rooms[rm]);
    for (int g = 0; g < NGUESTS; g++)
        free(w.guest_tok[g]);
    free(w.host_tok);
    free(w.cap_tok);
    assert_int_equal(e2e_host_stop(w.h), 0);
    e2e_host_free(w.h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_processes_per_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

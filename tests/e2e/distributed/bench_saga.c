/*
 * Saga benchmark (not a test; run by bench/saga.sh): starts the topology the
 * e2e harness makes (BNB_E2E_TOPOLOGY=all-in-one or distributed, see
 * harness.h), then
 *   1. for min(seconds, 10), one client books and polls GET
 *      /dashboard/rooms/{id}/reservations (as the host) until the reservation
 *      shows CONFIRMED there,
 *      one booking at a time: end-to-end saga latency p50/p99;
 *   2. for `seconds`, `workers` threads POST /reservations as fast as they
 *      are answered (each on its own rooms, dates never overlapping):
 *      bookings per second (201/202 answers) and POST latency p50/p99; then
 *      how long the dashboard needs to show the last of them CONFIRMED
 *      (given up after 30 s).
 * Rate limits and the per-guest cap are turned off (BEARBNB_LIMITS_*_RATE=0,
 * BEARBNB_RESERVATION_MAX_ACTIVE_PER_GUEST=0). Loopback only.
 *
 *   bench_saga [seconds=15] [workers=4]
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROOMS_PER_WORKER 8
#define MAX_SAMPLES      100000

static const char *const env[] = {"BEARBNB_LIMITS_USER_RATE=0", "BEARBNB_LIMITS_IP_RATE=0",
                                  "BEARBNB_RESERVATION_MAX_ACTIVE_PER_GUEST=0", "BEARBNB_LOG_LEVEL=warn", NULL};

typedef struct bench {
    e2e_host_t *h;
    char *host_tok;
} bench_t;

typedef struct worker {
    bench_t *b;
    char *tok;
    char *rooms[ROOMS_PER_WORKER];
    int prober;
    long ok, failed;
    double *lat; /* ms */
    size_t nlat;
    double *saga; /* ms, prober only */
    size_t nsaga;
    char last_id[80]; /* the last booking and its room */
    const char *last_room;
    long long t_end;
} worker_t;

static void date_in(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char *new_room(bench_t *b)
{
    e2e_resp_t r;
    char *id = NULL;
    const char *body =
        "{\"name\":\"Loft\",\"description\":\"bench\",\"city\":\"Basel\",\"pricePerNight\":9000,\"capacity\":2}";
    if (e2e_call(b->h, E2E_HTTP1, "POST", "/rooms", b->host_tok, body, &r) == 0 && r.status == 201)
        id = strdup(json_string_value(json_object_get(r.json, "id")));
    else
        fprintf(stderr, "bench: POST /rooms: %ld %s\n", r.status, r.body);
    e2e_resp_free(&r);
    return id;
}

/* 1 when the dashboard shows reservation `id` of `room` as CONFIRMED (on the
 * first page of the room's reservations, newest first, as the room's host). */
static int confirmed_on_dashboard(e2e_client_t *c, const char *tok, const char *room, const char *id)
{
    char path[200];
    e2e_resp_t r;
    int ok = 0;
    size_t i;
    json_t *e;
    snprintf(path, sizeof path, "/dashboard/rooms/%s/reservations?limit=100", room);
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = path, .token = tok};
    if (e2e_client_do(c, &rq, &r) == 0 && r.status == 200)
        json_array_foreach(json_object_get(r.json, "items"), i, e)
        {
            const char *rid = json_string_value(json_object_get(e, "id"));
            const char *st = json_string_value(json_object_get(e, "status"));
            if (rid && st && !strcmp(rid, id) && !strcmp(st, "CONFIRMED"))
                ok = 1;
        }
    e2e_resp_free(&r);
    return ok;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    e2e_client_t *c = e2e_client_new(e2e_host_port(w->b->h));
    for (int k = 0; e2e_now_ms() < w->t_end && c; k++) {
        int slot = k / ROOMS_PER_WORKER;
        const char *room = w->rooms[k % ROOMS_PER_WORKER];
        char in[11], out[11], body[400];
        if (slot >= 360)
            break;
        date_in(1 + slot, in);
        date_in(2 + slot, out);
        snprintf(body, sizeof body,
                 "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":{\"number\":"
                 "\"4111111111111111\"}}",
                 room, in, out);
        e2e_req_t rq = {.proto = E2E_HTTP1, .method = "POST", .path = "/reservations", .token = w->tok, .body = body};
        e2e_resp_t r;
        double t0 = now_ms();
        int rc = e2e_client_do(c, &rq, &r);
        double t1 = now_ms();
        if (rc == 0 && (r.status == 201 || r.status == 202)) {
            w->ok++;
            snprintf(w->last_id, sizeof w->last_id, "%s", json_string_value(json_object_get(r.json, "id")));
            w->last_room = room;
            if (w->nlat < MAX_SAMPLES)
                w->lat[w->nlat++] = t1 - t0;
            if (w->prober) {
                char id[80];
                snprintf(id, sizeof id, "%s", json_string_value(json_object_get(r.json, "id")));
                while (!confirmed_on_dashboard(c, w->b->host_tok, room, id) && now_ms() - t0 < 30000) {
                    struct timespec ts = {0, 2 * 1000000L};
                    nanosleep(&ts, NULL);
                }
                if (w->nsaga < MAX_SAMPLES)
                    w->saga[w->nsaga++] = now_ms() - t0;
            }
        } else {
            w->failed++;
            if (w->failed < 5)
                fprintf(stderr, "bench: POST /reservations: %ld %s\n", r.status, r.body ? r.body : "");
        }
        e2e_resp_free(&r);
    }
    e2e_client_free(c);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 15, nworkers = argc > 2 ? atoi(argv[2]) : 4, rc = 1;
    const char *mode = getenv("BNB_E2E_TOPOLOGY");
    bench_t b = {0};
    worker_t *w;
    pthread_t *th;
    if (seconds <= 0 || seconds > 600 || nworkers <= 0 || nworkers > 64) {
        fprintf(stderr, "usage: bench_saga [seconds 1..600] [workers 1..64]\n");
        return 2;
    }
    mode = mode && *mode ? mode : "all-in-one";
    w = calloc((size_t)nworkers + 1, sizeof(*w));
    th = calloc((size_t)nworkers + 1, sizeof(*th));
    e2e_host_opts_t o = {.env = env};
    if (!w || !th || e2e_host_start(&b.h, &o) != 0)
        goto out;
    if (!(b.host_tok = e2e_token(b.h, "bench-host", "host", 0)))
        goto out;
    /* workers 0..n-1, prober n */
    for (int i = 0; i <= nworkers; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "bench-guest%d", i);
        w[i].b = &b;
        w[i].prober = i == nworkers;
        w[i].lat = calloc(MAX_SAMPLES, sizeof(double));
        w[i].saga = w[i].prober ? calloc(MAX_SAMPLES, sizeof(double)) : NULL;
        if (!(w[i].tok = e2e_token(b.h, sub, "guest", 0)) || !w[i].lat || (w[i].prober && !w[i].saga))
            goto out;
        for (int k = 0; k < ROOMS_PER_WORKER; k++)
            if (!(w[i].rooms[k] = new_room(&b)))
                goto out;
    }
    /* let every service learn the rooms (the dashboard is the last to) */
    for (int i = 0; i <= nworkers; i++)
        for (int k = 0; k < ROOMS_PER_WORKER; k++) {
            char path[200];
            snprintf(path, sizeof path, "/dashboard/rooms/%s", w[i].rooms[k]);
            for (long long until = e2e_now_ms() + 30000;;) {
                e2e_resp_t r;
                long st = e2e_call(b.h, E2E_HTTP1, "GET", path, NULL, NULL, &r) == 0 ? r.status : 0;
                e2e_resp_free(&r);
                if (st == 200 || e2e_now_ms() > until)
                    break;
                struct timespec ts = {0, 50 * 1000000L};
                nanosleep(&ts, NULL);
            }
        }
    /* phase 1: saga latency, one booking at a time */
    worker_t *p = &w[nworkers];
    p->t_end = e2e_now_ms() + (seconds < 10 ? seconds : 10) * 1000LL;
    run(p);
    /* phase 2: throughput, the workers alone */
    double t0 = now_ms();
    for (int i = 0; i < nworkers; i++) {
        w[i].t_end = e2e_now_ms() + seconds * 1000LL;
        if (pthread_create(&th[i], NULL, run, &w[i]) != 0)
            goto out;
    }
    long ok = 0, failed = 0;
    size_t nlat = 0;
    for (int i = 0; i < nworkers; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
        failed += w[i].failed;
        nlat += w[i].nlat;
    }
    double dt = (now_ms() - t0) / 1e3;
    /* how long the read model needs to catch up with that load */
    double t_drain = now_ms();
    e2e_client_t *dc = e2e_client_new(e2e_host_port(b.h));
    for (int i = 0; i < nworkers && dc; i++)
        while (w[i].last_room && !confirmed_on_dashboard(dc, b.host_tok, w[i].last_room, w[i].last_id) &&
               now_ms() - t_drain < 30000) {
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    e2e_client_free(dc);
    double drain = (now_ms() - t_drain) / 1e3;
    double *all = calloc(nlat + 1, sizeof(double));
    size_t n = 0;
    for (int i = 0; i < nworkers && all; i++) {
        memcpy(all + n, w[i].lat, w[i].nlat * sizeof(double));
        n += w[i].nlat;
    }
    failed += p->failed;
    if (all)
        qsort(all, n, sizeof(double), cmp);
    qsort(p->saga, p->nsaga, sizeof(double), cmp);
    printf("%-11s bookings/s %6.1f (%ld in %.1f s, %d workers; POST p50 %.1f ms p99 %.1f ms; dashboard caught up "
           "%s%.1f s later)  saga POST->CONFIRMED on dashboard, one at a time: p50 %.1f ms p99 %.1f ms (%zu sagas)\n",
           mode, (double)ok / dt, ok, dt, nworkers, pct(all, n, 0.5), pct(all, n, 0.99),
           drain >= 30 ? "NOT within " : "", drain, pct(p->saga, p->nsaga, 0.5), pct(p->saga, p->nsaga, 0.99),
           p->nsaga);
    fflush(stdout);
    free(all);
    rc = failed == 0 && ok > 0 ? 0 : 1;
out:
    if (b.h && e2e_host_stop(b.h) != 0)
        rc = 1;
    e2e_host_free(b.h);
    free(b.host_tok);
    for (int i = 0; w && i <= nworkers; i++) {
        free(w[i].tok);
        free(w[i].lat);
        free(w[i].saga);
        for (int k = 0; k < ROOMS_PER_WORKER; k++)
            free(w[i].rooms[k]);
    }
    free(w);
    free(th);
    return rc;
}

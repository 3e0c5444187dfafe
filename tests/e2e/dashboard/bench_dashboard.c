/*
 * Dashboard scale benchmark (not a test; run by bench/dashboard-scale.sh):
 * does the dashboard's room view cost the same whether the room had 10 or
 * 10,000 reservations?
 *
 * Starts the topology the e2e harness makes (BNB_E2E_TOPOLOGY, all-in-one by
 * default) with the admin routes on and the rate limits off, then for each
 * size N: registers a room and injects N reservation events of it
 * (POST /admin/events?topic=bearbnb.reservation: ReservationConfirmed, 50
 * guests), waits until the summary counts N bookings; then measures, one
 * request at a time on a kept-alive connection, the sizes interleaved
 * request by request (so that a shared machine's noise hits every size
 * alike), p50/p99 of
 *   - GET /dashboard/rooms/{id}                                 (anonymous, and
 *     as the room's host: not from the host's read cache)
 *   - GET /dashboard/rooms/{id}/reservations?limit=10           (the host; the
 *     same 10 items at every size: the like-for-like line)
 *   - GET /dashboard/rooms/{id}/reservations?limit=20           (the host)
 *   - GET /dashboard/rooms/{id}/reservations?limit=10&cursor=   (the host, the
 *     page after the newest reservation: served after a cursor)
 *   - GET /dashboard/rooms/{id}/reservations?limit=20           (guest g7: own)
 *   - GET /dashboard/rooms/{id}/reservations?limit=1            (guest g7: the
 *     same one item at every size of 10 or more)
 * and how long applying 200 more events of that room takes per event; first
 * GET /healthz in the same interleaved rounds (the base of bench/scale.sh's
 * ratios).
 *
 *   bench_dashboard [requests=500] [sizes...=10 10000]
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* All-in-one: the dashboard alone (the injected events concern no other
 * plugin); the distributed topology sets each process's plugins itself. */
static const char *const env[] = {"BEARBNB_LIMITS_USER_RATE=0", "BEARBNB_LIMITS_IP_RATE=0",  "BEARBNB_ADMIN=1",
                                  "BEARBNB_LOG_LEVEL=warn",     "BEARBNB_PLUGINS=dashboard", NULL};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return n ? v[i < n ? i : n - 1] : 0;
}

/* Inject reservation i of room `room` (size-tagged ids). 0 or -1. */
static int inject(e2e_client_t *c, const char *room, int size, int i)
{
    char body[1024], path[] = "/admin/events?topic=bearbnb.reservation";
    long long ms = 1798761600000LL + (long long)size * 100000000LL + i; /* distinct, increasing createdAt */
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    char when[40];
    gmtime_r(&s, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03dZ", (int)(ms % 1000));
    snprintf(body, sizeof(body),
             "{\"id\":\"bench-ev-%d-%d\",\"type\":\"ReservationConfirmed\",\"source\":\"bench\","
             "\"subject\":\"bench-res-%d-%d\",\"correlationId\":\"bench-res-%d-%d\",\"time\":\"%s\","
             "\"data\":{\"id\":\"bench-res-%d-%d\",\"roomId\":\"%s\",\"hostId\":\"hanna\",\"guestId\":\"g%d\","
             "\"checkIn\":\"2030-01-01\",\"checkOut\":\"2030-01-02\",\"guests\":1,\"amount\":100,"
             "\"status\":\"CONFIRMED\",\"paymentId\":\"bench-pay-%d-%d\",\"version\":2}}",
             size, i, size, i, size, i, when, size, i, room, i % 50, size, i);
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "POST", .path = path, .body = body};
    e2e_resp_t r;
    int ok = e2e_client_do(c, &rq, &r) == 0 && r.status / 100 == 2;
    if (!ok)
        fprintf(stderr, "bench: inject: %ld %s\n", r.status, r.body ? r.body : r.error);
    e2e_resp_free(&r);
    return ok ? 0 : -1;
}

static int register_room(e2e_client_t *c, const char *room)
{
    char body[800], path[] = "/admin/events?topic=bearbnb.room";
    snprintf(body, sizeof(body),
             "{\"id\":\"bench-room-ev-%s\",\"type\":\"RoomRegistered\",\"source\":\"bench\",\"subject\":\"%s\","
             "\"time\":\"2027-01-01T00:00:00.000Z\",\"data\":{\"id\":\"%s\",\"hostId\":\"hanna\",\"name\":\"Bench "
             "room\",\"description\":\"d\",\"city\":\"Benchville\",\"pricePerNight\":100,\"capacity\":2,"
             "\"status\":\"ACTIVE\",\"reviewCnt\":0,\"rating\":0,\"bookingCnt\":0,\"version\":1}}",
             room, room, room);
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "POST", .path = path, .body = body};
    e2e_resp_t r;
    int ok = e2e_client_do(c, &rq, &r) == 0 && r.status / 100 == 2;
    e2e_resp_free(&r);
    return ok ? 0 : -1;
}

/* bookings.total of the room's summary, -1 when not there. */
static long long booked(e2e_client_t *c, const char *room)
{
    char path[200];
    snprintf(path, sizeof(path), "/dashboard/rooms/%s", room);
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = path};
    e2e_resp_t r;
    long long n = -1;
    if (e2e_client_do(c, &rq, &r) == 0 && r.status == 200)
        n = json_integer_value(json_object_get(json_object_get(r.json, "bookings"), "total"));
    e2e_resp_free(&r);
    return n;
}

static int wait_booked(e2e_client_t *c, const char *room, long long want, int timeout_s)
{
    double until = now_ms() + timeout_s * 1000.0;
    while (booked(c, room) != want) {
        if (now_ms() > until) {
            fprintf(stderr, "bench: room %s: %lld bookings counted, want %lld\n", room, booked(c, room), want);
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

#define MAX_SIZES 8

/* One kind of request at every size, interleaved (size 1, size 2, ..., size
 * 1, ...) so that the noise of a shared machine falls on every size alike:
 * n timed rounds after 20 warm-up rounds, then one line per size with p50/p99.
 * paths[k], want[k] (items a page must have, 0: any) per size. */
static int measure(e2e_client_t *c, const char *label, const int *sizes, int nsizes, char paths[][600], const char *tok,
                   int n, const size_t *want)
{
    double *lat[MAX_SIZES] = {0};
    size_t bytes[MAX_SIZES] = {0};
    int rc = -1;
    for (int k = 0; k < nsizes; k++)
        if (!(lat[k] = calloc((size_t)n, sizeof(double))))
            goto done;
    for (int i = -20; i < n; i++) {
        for (int k = 0; k < nsizes; k++) {
            e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = paths[k], .token = tok};
            e2e_resp_t r;
            double t0 = now_ms();
            int ok = e2e_client_do(c, &rq, &r) == 0 && r.status == 200;
            double t = now_ms() - t0;
            if (ok && want[k] && json_array_size(json_object_get(r.json, "items")) != want[k])
                ok = 0;
            if (!ok) {
                fprintf(stderr, "bench: GET %s: %ld %.200s\n", paths[k], r.status, r.body ? r.body : r.error);
                e2e_resp_free(&r);
                goto done;
            }
            bytes[k] = r.body_len;
            e2e_resp_free(&r);
            if (i >= 0)
                lat[k][i] = t;
        }
    }
    for (int k = 0; k < nsizes; k++) {
        qsort(lat[k], (size_t)n, sizeof(double), cmp_d);
        printf("%-34s %8d %10.3f %10.3f %8zu\n", label, sizes[k], pct(lat[k], (size_t)n, 0.5),
               pct(lat[k], (size_t)n, 0.99), bytes[k]);
    }
    fflush(stdout);
    rc = 0;
done:
    for (int k = 0; k < nsizes; k++)
        free(lat[k]);
    return rc;
}

/* A page's `next` (caller frees), or NULL. */
static char *next_of(e2e_client_t *c, const char *path, const char *tok)
{
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = path, .token = tok};
    e2e_resp_t r;
    char *next = NULL;
    if (e2e_client_do(c, &rq, &r) == 0 && r.status == 200 && json_is_string(json_object_get(r.json, "next")))
        next = strdup(json_string_value(json_object_get(r.json, "next")));
    e2e_resp_free(&r);
    return next;
}

int main(int argc, char **argv)
{
    int requests = argc > 1 ? atoi(argv[1]) : 500;
    int sizes[MAX_SIZES] = {10, 10000}, nsizes = argc > 2 ? argc - 2 : 2;
    e2e_host_t *h = NULL;
    e2e_client_t *c = NULL, *ci = NULL;
    e2e_host_opts_t o = {.env = env, .ready_timeout_ms = 60000};
    char rooms[MAX_SIZES][64], paths[MAX_SIZES][600];
    size_t want[MAX_SIZES];
    double load_s[MAX_SIZES];
    int rc = 1;

    if (nsizes > MAX_SIZES)
        nsizes = MAX_SIZES;
    for (int k = 0; argc > 2 && k < nsizes; k++)
        sizes[k] = atoi(argv[2 + k]);
    if (requests < 10)
        requests = 10;
    if (e2e_host_start(&h, &o) != 0)
        return 1;
    char *host_tok = e2e_token(h, "hanna", "host", 0), *guest_tok = e2e_token(h, "g7", "guest", 0);
    c = e2e_client_new(e2e_host_port(h));
    /* events are injected into the process that runs the dashboard (in the
     * distributed topology straight to it: an injected event reaches only
     * the consumers of the process it is posted to) */
    e2e_host_t *dash = e2e_host_distributed(h) ? e2e_host_part(h, "dashboard") : h;
    ci = dash ? e2e_client_new(e2e_host_port(dash)) : NULL;
    if (!host_tok || !guest_tok || !c || !ci)
        goto done;

    /* every room and its reservations first */
    for (int k = 0; k < nsizes; k++) {
        snprintf(rooms[k], sizeof(rooms[k]), "bench-room-%d", sizes[k]);
        if (register_room(ci, rooms[k]) != 0)
            goto done;
        double t0 = now_ms();
        for (int i = 0; i < sizes[k]; i++)
            if (inject(ci, rooms[k], sizes[k], i) != 0)
                goto done;
        if (wait_booked(c, rooms[k], sizes[k], 1800) != 0)
            goto done;
        load_s[k] = (now_ms() - t0) / 1000.0;
    }

    printf("dashboard room view, %d requests per size, one at a time, sizes interleaved (%s)\n", requests,
           e2e_host_distributed(h) ? "distributed" : "all-in-one");
    printf("%-34s %8s %10s %10s %8s\n", "request", "resv", "p50 ms", "p99 ms", "bytes");
    /* the host's own cheapest answer, in the same rounds: the base of ratios */
    for (int k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/healthz");
        want[k] = 0;
    }
    if (measure(c, "GET /healthz", sizes, nsizes, paths, NULL, requests, want))
        goto done;
    for (int k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/dashboard/rooms/%s", rooms[k]);
        want[k] = 0;
    }
    if (measure(c, "GET summary (anonymous)", sizes, nsizes, paths, NULL, requests, want))
        goto done;
    /* signed in: never from the host's read cache (anonymous GETs of an
     * SQLite store may be) */
    if (measure(c, "GET summary (host)", sizes, nsizes, paths, host_tok, requests, want))
        goto done;
    for (int k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/dashboard/rooms/%s/reservations?limit=10", rooms[k]);
        want[k] = sizes[k] < 10 ? (size_t)sizes[k] : 10;
    }
    if (measure(c, "GET reservations?limit=10 (host)", sizes, nsizes, paths, host_tok, requests, want))
        goto done;
    for (int k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/dashboard/rooms/%s/reservations?limit=20", rooms[k]);
        want[k] = sizes[k] < 20 ? (size_t)sizes[k] : 20;
    }
    if (measure(c, "GET reservations?limit=20 (host)", sizes, nsizes, paths, host_tok, requests, want))
        goto done;
    for (int k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/dashboard/rooms/%s/reservations?limit=1", rooms[k]);
        char *next = next_of(c, paths[k], host_tok);
        if (next) /* a page deep in the history: the one after the oldest but one */
            snprintf(paths[k], sizeof(paths[k]), "/dashboard/rooms/%s/reservations?limit=10&cursor=%s", rooms[k], next);
        free(next);
        want[k] = 0;
    }
    if (measure(c, "GET reservations page 2 (host)", sizes, nsizes, paths, host_tok, requests, want))
        goto done;
    for (int k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/dashboard/rooms/%s/reservations?limit=20", rooms[k]);
        want[k] = 0;
    }
    if (measure(c, "GET reservations (guest g7, own)", sizes, nsizes, paths, guest_tok, requests, want))
        goto done;
    /* like for like: one item at every size (g7 has 1 of the first 50) */
    for (int k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "/dashboard/rooms/%s/reservations?limit=1", rooms[k]);
        want[k] = 1;
    }
    if (measure(c, "GET reservations?limit=1 (guest g7)", sizes, nsizes, paths, guest_tok, requests, want))
        goto done;

    /* applying more events of each room: the per-event cost at that size */
    for (int k = 0; k < nsizes; k++) {
        double t1 = now_ms();
        for (int i = sizes[k]; i < sizes[k] + 200; i++)
            if (inject(ci, rooms[k], sizes[k], i) != 0)
                goto done;
        if (wait_booked(c, rooms[k], sizes[k] + 200, 600) != 0)
            goto done;
        printf("%-34s %8d %10.3f %10s %8s   (loading %d took %.1f s)\n", "apply 200 more events (ms/event)", sizes[k],
               (now_ms() - t1) / 200.0, "-", "-", sizes[k], load_s[k]);
        fflush(stdout);
    }
    rc = 0;
done:
    e2e_client_free(c);
    e2e_client_free(ci);
    free(host_tok);
    free(guest_tok);
    if (e2e_host_stop(h) != 0)
        rc = 1;
    e2e_host_free(h);
    return rc;
}

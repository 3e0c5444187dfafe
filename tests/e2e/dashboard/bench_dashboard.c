/*
 * Dashboard scale benchmark (not a test; run by bench/dashboard-scale.sh):
 * does the dashboard's room view cost the same whether the room had 10 or
 * 10,000 reservations?
 *
 * Starts the topology the e2e harness makes (BNB_E2E_TOPOLOGY, all-in-one by
 * default) with the admin routes on and the rate limits off, then for each
 * size N: registers a room and injects N reservation events of it
 * (POST /admin/events?topic=bearbnb.reservation: ReservationConfirmed, 50
 * guests), waits until the summary counts N bookings, and measures, one
 * request at a time on a kept-alive connection, p50/p99 of
 *   - GET /dashboard/rooms/{id}                                 (anonymous)
 *   - GET /dashboard/rooms/{id}/reservations?limit=10           (the host; the
 *     same 10 items at every size: the like-for-like line)
 *   - GET /dashboard/rooms/{id}/reservations?limit=20           (the host)
 *   - GET /dashboard/rooms/{id}/reservations?limit=20&cursor=   (page 2, host)
 *   - GET /dashboard/rooms/{id}/reservations?limit=20           (one guest)
 * and how long applying 200 more events of that room takes per event.
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

/* p50/p99 of `n` GETs of path (as tok). */
static int measure(e2e_client_t *c, const char *label, int size, const char *path, const char *tok, int n,
                   size_t want_items)
{
    double *lat = calloc((size_t)n, sizeof(*lat));
    size_t bytes = 0;
    if (!lat)
        return -1;
    for (int i = -20; i < n; i++) { /* 20 warm-up requests */
        e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = path, .token = tok};
        e2e_resp_t r;
        double t0 = now_ms();
        int ok = e2e_client_do(c, &rq, &r) == 0 && r.status == 200;
        double t = now_ms() - t0;
        if (ok && want_items && json_array_size(json_object_get(r.json, "items")) != want_items)
            ok = 0;
        if (!ok) {
            fprintf(stderr, "bench: GET %s: %ld %.200s\n", path, r.status, r.body ? r.body : r.error);
            e2e_resp_free(&r);
            free(lat);
            return -1;
        }
        bytes = r.body_len;
        e2e_resp_free(&r);
        if (i >= 0)
            lat[i] = t;
    }
    qsort(lat, (size_t)n, sizeof(*lat), cmp_d);
    printf("%-34s %8d %10.3f %10.3f %8zu\n", label, size, pct(lat, (size_t)n, 0.5), pct(lat, (size_t)n, 0.99), bytes);
    fflush(stdout);
    free(lat);
    return 0;
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
    int def_sizes[] = {10, 10000}, nsizes = argc > 2 ? argc - 2 : 2;
    e2e_host_t *h = NULL;
    e2e_host_opts_t o = {.env = env, .ready_timeout_ms = 60000};
    int rc = 1;

    if (requests < 10)
        requests = 10;
    if (e2e_host_start(&h, &o) != 0)
        return 1;
    char *host_tok = e2e_token(h, "hanna", "host", 0), *guest_tok = e2e_token(h, "g7", "guest", 0);
    e2e_client_t *c = e2e_client_new(e2e_host_port(h));
    if (!host_tok || !guest_tok || !c)
        goto done;
    printf("dashboard room view, %d requests each, one at a time (%s)\n", requests,
           e2e_host_distributed(h) ? "distributed" : "all-in-one");
    printf("%-34s %8s %10s %10s %8s\n", "request", "resv", "p50 ms", "p99 ms", "bytes");
    for (int k = 0; k < nsizes; k++) {
        int size = argc > 2 ? atoi(argv[2 + k]) : def_sizes[k];
        char room[64], path[400], label[64];
        snprintf(room, sizeof(room), "bench-room-%d", size);
        if (register_room(c, room) != 0)
            goto done;
        double t0 = now_ms();
        for (int i = 0; i < size; i++)
            if (inject(c, room, size, i) != 0)
                goto done;
        if (wait_booked(c, room, size, 1800) != 0)
            goto done;
        double load_s = (now_ms() - t0) / 1000.0;

        snprintf(path, sizeof(path), "/dashboard/rooms/%s", room);
        if (measure(c, "GET summary (anonymous)", size, path, NULL, requests, 0))
            goto done;
        snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?limit=10", room);
        if (measure(c, "GET reservations?limit=10 (host)", size, path, host_tok, requests, 10))
            goto done;
        snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?limit=20", room);
        if (measure(c, "GET reservations p1 (host)", size, path, host_tok, requests, size < 20 ? (size_t)size : 20))
            goto done;
        char *next = next_of(c, path, host_tok);
        if (next) {
            snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?limit=20&cursor=%s", room, next);
            free(next);
            if (measure(c, "GET reservations p2 (host)", size, path, host_tok, requests, 0))
                goto done;
        }
        snprintf(path, sizeof(path), "/dashboard/rooms/%s/reservations?limit=20", room);
        if (measure(c, "GET reservations p1 (guest g7)", size, path, guest_tok, requests, 0))
            goto done;

        /* applying more events of this room: per-event cost at this size */
        double t1 = now_ms();
        for (int i = size; i < size + 200; i++)
            if (inject(c, room, size, i) != 0)
                goto done;
        if (wait_booked(c, room, size + 200, 600) != 0)
            goto done;
        snprintf(label, sizeof(label), "apply 200 more events (ms/event)");
        printf("%-34s %8d %10.3f %10s %8s   (loading %d took %.1f s)\n", label, size, (now_ms() - t1) / 200.0, "-", "-",
               size, load_s);
        fflush(stdout);
    }
    rc = 0;
done:
    e2e_client_free(c);
    free(host_tok);
    free(guest_tok);
    if (e2e_host_stop(h) != 0)
        rc = 1;
    e2e_host_free(h);
    return rc;
}

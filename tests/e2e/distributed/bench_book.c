/*
 * Booking benchmark against an already running bearbnb (not a test; run by
 * bench/all.sh, which starts the host and mints the tokens):
 *
 *   bench_book PORT PID HOST_TOKEN GUEST_TOKEN [seconds=10] [workers=16]
 *
 *   1. seeds 8 rooms per worker (POST /rooms) and waits until the dashboard
 *      knows every one of them;
 *   2. for `seconds`, `workers` threads POST /reservations as fast as they are
 *      answered (each on its own rooms, dates never overlapping); meanwhile a
 *      sampler takes the newest answered booking again and again and polls
 *      GET /dashboard/rooms/{id}/reservations until it shows CONFIRMED: the
 *      read-model lag during the load (p50 and max);
 *   3. after the load: how long until the dashboard shows every worker's last
 *      booking CONFIRMED and the rooms' bookingCnt add up to the bookings
 *      answered 201 (the room read model): "caught up after";
 *   4. the host's RSS (VmRSS of PID) right after and 2 s after.
 * Prints one "key value" line per figure (bench/all.sh reads them).
 * Rate limits and the per-guest cap must be off in the host
 * (BEARBNB_LIMITS_*_RATE=0, BEARBNB_RESERVATION_MAX_ACTIVE_PER_GUEST=0).
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROOMS_PER_WORKER 8
#define MAX_SAMPLES      200000

typedef struct shared {
    int port;
    const char *host_tok, *guest_tok;
    pthread_mutex_t mu;
    char newest_id[80], newest_room[80];
    double newest_at; /* ms, when its 201 arrived; 0 = none yet */
    volatile int loading;
} shared_t;

typedef struct worker {
    shared_t *s;
    char *rooms[ROOMS_PER_WORKER];
    long ok, confirmed, failed;
    double *lat;
    size_t nlat;
    char last_id[80];
    const char *last_room;
    double t_end;
} worker_t;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void date_in(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static long rss_kb(long pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* CPU time (user + system) of process `pid` so far, in ms; -1 if unknown. */
static double cpu_ms(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static char *new_room(e2e_client_t *c, const char *tok)
{
    e2e_resp_t r;
    char *id = NULL;
    const char *body =
        "{\"name\":\"Loft\",\"description\":\"bench\",\"city\":\"Basel\",\"pricePerNight\":9000,\"capacity\":2}";
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "POST", .path = "/rooms", .token = tok, .body = body};
    if (e2e_client_do(c, &rq, &r) == 0 && r.status == 201)
        id = strdup(json_string_value(json_object_get(r.json, "id")));
    else
        fprintf(stderr, "bench_book: POST /rooms: %ld %s\n", r.status, r.body ? r.body : "");
    e2e_resp_free(&r);
    return id;
}

static long get_status(e2e_client_t *c, const char *path, const char *tok, json_t **json)
{
    e2e_resp_t r;
    e2e_req_t rq = {.proto = E2E_HTTP1, .method = "GET", .path = path, .token = tok};
    long st = e2e_client_do(c, &rq, &r) == 0 ? r.status : 0;
    if (json)
        *json = st == 200 && r.json ? json_incref(r.json) : NULL;
    e2e_resp_free(&r);
    return st;
}

/* 1 when the dashboard shows reservation `id` of `room` as CONFIRMED. */
static int confirmed_on_dashboard(e2e_client_t *c, const char *tok, const char *room, const char *id)
{
    char path[200];
    json_t *j = NULL, *e;
    size_t i;
    int ok = 0;
    snprintf(path, sizeof path, "/dashboard/rooms/%s/reservations?limit=100", room);
    if (get_status(c, path, tok, &j) == 200)
        json_array_foreach(json_object_get(j, "items"), i, e)
        {
            const char *rid = json_string_value(json_object_get(e, "id"));
            const char *st = json_string_value(json_object_get(e, "status"));
            if (rid && st && !strcmp(rid, id) && !strcmp(st, "CONFIRMED"))
                ok = 1;
        }
    json_decref(j);
    return ok;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    e2e_client_t *c = e2e_client_new(w->s->port);
    for (int k = 0; now_ms() < w->t_end && c; k++) {
        int slot = k / ROOMS_PER_WORKER;
        const char *room = w->rooms[k % ROOMS_PER_WORKER];
        char in[11], out[11], body[400];
        if (slot >= 3000)
            break;
        date_in(1 + slot, in);
        date_in(2 + slot, out);
        snprintf(body, sizeof body,
                 "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":{\"number\":"
                 "\"4111111111111111\"}}",
                 room, in, out);
        e2e_req_t rq = {
            .proto = E2E_HTTP1, .method = "POST", .path = "/reservations", .token = w->s->guest_tok, .body = body};
        e2e_resp_t r;
        double t0 = now_ms();
        int rc = e2e_client_do(c, &rq, &r);
        double t1 = now_ms();
        const char *id = rc == 0 ? json_string_value(json_object_get(r.json, "id")) : NULL;
        if (rc == 0 && (r.status == 201 || r.status == 202) && id) {
            w->ok++;
            w->confirmed += r.status == 201;
            snprintf(w->last_id, sizeof w->last_id, "%s", id);
            w->last_room = room;
            if (w->nlat < MAX_SAMPLES)
                w->lat[w->nlat++] = t1 - t0;
            pthread_mutex_lock(&w->s->mu);
            snprintf(w->s->newest_id, sizeof w->s->newest_id, "%s", id);
            snprintf(w->s->newest_room, sizeof w->s->newest_room, "%s", room);
            w->s->newest_at = t1;
            pthread_mutex_unlock(&w->s->mu);
        } else {
            w->failed++;
            if (w->failed < 5)
                fprintf(stderr, "bench_book: POST /reservations: %ld %s\n", r.status, r.body ? r.body : "");
        }
        e2e_resp_free(&r);
    }
    e2e_client_free(c);
    return NULL;
}

typedef struct lag {
    shared_t *s;
    double v[4096];
    size_t n;
} lag_t;

/* During the load: how long after its 201 the newest booking shows CONFIRMED
 * on the dashboard, sampled one booking after the other. */
static void *sample_lag(void *arg)
{
    lag_t *l = arg;
    e2e_client_t *c = e2e_client_new(l->s->port);
    while (c && l->s->loading && l->n < sizeof l->v / sizeof l->v[0]) {
        char id[80], room[80];
        double at;
        pthread_mutex_lock(&l->s->mu);
        snprintf(id, sizeof id, "%s", l->s->newest_id);
        snprintf(room, sizeof room, "%s", l->s->newest_room);
        at = l->s->newest_at;
        pthread_mutex_unlock(&l->s->mu);
        if (at == 0) {
            sleep_ms(5);
            continue;
        }
        while (!confirmed_on_dashboard(c, l->s->host_tok, room, id) && now_ms() - at < 30000)
            sleep_ms(5);
        l->v[l->n++] = now_ms() - at;
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
    return n ? v[(size_t)(p * (double)(n - 1) + 0.5)] : 0;
}

/* Sum of bookingCnt over every bench room (the room service's read model). */
static long booking_cnt(e2e_client_t *c, worker_t *w, int nworkers)
{
    long sum = 0;
    for (int i = 0; i < nworkers; i++)
        for (int k = 0; k < ROOMS_PER_WORKER; k++) {
            char path[200];
            json_t *j = NULL;
            snprintf(path, sizeof path, "/rooms/%s", w[i].rooms[k]);
            if (get_status(c, path, NULL, &j) != 200)
                return -1;
            sum += (long)json_integer_value(json_object_get(j, "bookingCnt"));
            json_decref(j);
        }
    return sum;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: bench_book PORT PID HOST_TOKEN GUEST_TOKEN [seconds] [workers]\n");
        return 2;
    }
    shared_t s = {.port = atoi(argv[1]), .host_tok = argv[3], .guest_tok = argv[4]};
    long pid = atol(argv[2]);
    int seconds = argc > 5 ? atoi(argv[5]) : 10, nworkers = argc > 6 ? atoi(argv[6]) : 16, rc = 1;
    if (seconds <= 0 || seconds > 120 || nworkers <= 0 || nworkers > 256)
        return 2;
    pthread_mutex_init(&s.mu, NULL);
    worker_t *w = calloc((size_t)nworkers, sizeof(*w));
    pthread_t *th = calloc((size_t)nworkers, sizeof(*th));
    lag_t *lag = calloc(1, sizeof(*lag));
    e2e_client_t *c = e2e_client_new(s.port);
    pthread_t lt;
    if (!w || !th || !lag || !c)
        goto out;
    lag->s = &s;
    for (int i = 0; i < nworkers; i++) {
        w[i].s = &s;
        if (!(w[i].lat = calloc(MAX_SAMPLES, sizeof(double))))
            goto out;
        for (int k = 0; k < ROOMS_PER_WORKER; k++)
            if (!(w[i].rooms[k] = new_room(c, s.host_tok)))
                goto out;
    }
    for (int i = 0; i < nworkers; i++)
        for (int k = 0; k < ROOMS_PER_WORKER; k++) {
            char path[200];
            snprintf(path, sizeof path, "/dashboard/rooms/%s", w[i].rooms[k]);
            for (double until = now_ms() + 30000; get_status(c, path, NULL, NULL) != 200 && now_ms() < until;)
                sleep_ms(20);
        }
    long rss0 = rss_kb(pid);
    double cpu0 = cpu_ms(pid);
    s.loading = 1;
    if (pthread_create(&lt, NULL, sample_lag, lag) != 0)
        goto out;
    double t0 = now_ms();
    for (int i = 0; i < nworkers; i++) {
        w[i].t_end = t0 + seconds * 1000.0;
        if (pthread_create(&th[i], NULL, run, &w[i]) != 0)
            goto out;
    }
    long ok = 0, confirmed = 0, failed = 0;
    size_t nlat = 0;
    for (int i = 0; i < nworkers; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
        confirmed += w[i].confirmed;
        failed += w[i].failed;
        nlat += w[i].nlat;
    }
    double dt = (now_ms() - t0) / 1e3, t_end = now_ms();
    s.loading = 0;
    pthread_join(lt, NULL);
    long rss_end = rss_kb(pid);
    /* caught up: every worker's last booking on the dashboard, and bookingCnt */
    for (int i = 0; i < nworkers; i++)
        while (w[i].last_room && !confirmed_on_dashboard(c, s.host_tok, w[i].last_room, w[i].last_id) &&
               now_ms() - t_end < 30000)
            sleep_ms(10);
    double dash_caught = (now_ms() - t_end) / 1e3;
    long cnt;
    while ((cnt = booking_cnt(c, w, nworkers)) < confirmed && now_ms() - t_end < 30000)
        sleep_ms(10);
    double room_caught = (now_ms() - t_end) / 1e3;
    double cpu1 = cpu_ms(pid);
    sleep_ms(2000);
    long rss_idle = rss_kb(pid);

    double *all = calloc(nlat + 1, sizeof(double));
    size_t n = 0;
    for (int i = 0; i < nworkers && all; i++) {
        memcpy(all + n, w[i].lat, w[i].nlat * sizeof(double));
        n += w[i].nlat;
    }
    if (all)
        qsort(all, n, sizeof(double), cmp);
    qsort(lag->v, lag->n, sizeof(double), cmp);
    printf("bookings_per_s %.1f\n", (double)ok / dt);
    printf("bookings %ld\nbookings_201 %ld\nbookings_failed %ld\nworkers %d\nseconds %.1f\n", ok, confirmed, failed,
           nworkers, dt);
    printf("post_p50_ms %.2f\npost_p99_ms %.2f\n", pct(all, n, 0.5), pct(all, n, 0.99));
    printf("lag_samples %zu\nlag_p50_ms %.1f\nlag_max_ms %.1f\n", lag->n, pct(lag->v, lag->n, 0.5),
           lag->n ? lag->v[lag->n - 1] : 0);
    printf("dashboard_caught_up_s %.2f%s\nrooms_caught_up_s %.2f%s\n", dash_caught, dash_caught >= 30 ? " NOT" : "",
           room_caught, cnt < confirmed ? " NOT" : "");
    /* the host's CPU for the bookings and their read models (until caught up):
     * steadier than rates on a shared machine */
    printf("cpu_ms_per_booking %.2f\n", ok > 0 && cpu0 >= 0 && cpu1 >= 0 ? (cpu1 - cpu0) / (double)ok : 0);
    printf("rss_before_mb %.1f\nrss_end_mb %.1f\nrss_after_mb %.1f\n", rss0 / 1024.0, rss_end / 1024.0,
           rss_idle / 1024.0);
    fflush(stdout);
    free(all);
    rc = failed == 0 && ok > 0 ? 0 : 1;
out:
    e2e_client_free(c);
    for (int i = 0; w && i < nworkers; i++) {
        free(w[i].lat);
        for (int k = 0; k < ROOMS_PER_WORKER; k++)
            free(w[i].rooms[k]);
    }
    free(w);
    free(th);
    free(lag);
    pthread_mutex_destroy(&s.mu);
    return rc;
}

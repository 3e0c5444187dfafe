/*
 * bnb_seed: fills a plugin's store directly (storage API, no HTTP, no
 * events) for bench/scale.sh, so that the large sizes are seeded in seconds
 * rather than through 100,000 sequential requests. The store must have been
 * opened once by its plugin (the host started): its collection definitions
 * are then kept in the store and known here without declaring them again.
 *
 *   bnb_seed BACKEND TARGET STORE rooms N HOST_ID [THREADS]
 *       N rooms of host HOST_ID in city "Bern" (the document the room plugin
 *       writes on POST /rooms: room_new_doc), ids random like the plugin's.
 *   bnb_seed BACKEND TARGET STORE reservations ROOM_ID HOST_ID N [THREADS]
 *       N past CONFIRMED one-night reservations of ROOM_ID (nights counting
 *       back from 2019-12-31), each holding its night claim as the
 *       reservation plugin's documents do; guests seed-g0..seed-g49.
 *
 * BACKEND sqlite|mysql|mongo; TARGET the sqlite file, or the URL. Each
 * document is one commit (the store's own path; commits run on THREADS
 * threads, default 4). Prints "<n> documents in <s> s" on stdout.
 */
#include "bnb_storage.h"
#include "room_logic.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct seed {
    bnb_store_t *st;
    int rooms; /* 1 rooms, 0 reservations */
    const char *room_id, *host_id;
    long n;
    atomic_long next;
    atomic_int failed;
    int urandom;
} seed_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A random version-4 UUID (like the host's uuid()). */
static int uuid4(int fd, char out[37])
{
    unsigned char b[16];
    if (read(fd, b, sizeof b) != (ssize_t)sizeof b)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

/* YYYY-MM-DD of day `d` since 1970-01-01. */
static void fmt_day(int64_t d, char out[11])
{
    time_t t = (time_t)(d * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static int seed_one(seed_t *s, long i)
{
    char id[37];
    json_t *doc = NULL;
    int rc = -1;
    if (uuid4(s->urandom, id) != 0)
        return -1;
    if (s->rooms) {
        json_t *body = json_pack("{s:s, s:s, s:s, s:i, s:i}", "name", "Bench room", "description",
                                 "seeded by bench/seed.c", "city", "Bern", "pricePerNight", 9000, "capacity", 2);
        doc = body ? room_new_doc(body, id, s->host_id) : NULL;
        json_decref(body);
        if (!doc)
            return -1;
        bnb_commit_t c = {.op = BNB_WRITE_PUT, .coll = "rooms", .id = id, .expect_version = 0, .body = doc};
        rc = s->st->ops->commit2(s->st, &c, NULL, 0, NULL);
    } else {
        /* night i counts back from 2019-12-31 (day 18261) */
        int64_t day = 18261 - i;
        char in[11], out[11], guest[32], pay[64], claim[160];
        fmt_day(day, in);
        fmt_day(day + 1, out);
        snprintf(guest, sizeof guest, "seed-g%ld", i % 50);
        snprintf(pay, sizeof pay, "seed-pay-%s", id);
        snprintf(claim, sizeof claim, "night|%s|%s", s->room_id, in);
        doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:i, s:I}", "id", id, "roomId", s->room_id,
                        "hostId", s->host_id, "guestId", guest, "checkIn", in, "checkOut", out, "guests", 1, "amount",
                        9000, "status", "CONFIRMED", "paymentId", pay, "version", 2, "createdAt",
                        (json_int_t)(day * 86400000LL - 30LL * 86400000LL));
        if (!doc)
            return -1;
        const char *claims[] = {claim};
        bnb_commit_t c = {.op = BNB_WRITE_PUT,
                          .coll = "reservations",
                          .id = id,
                          .expect_version = 0,
                          .body = doc,
                          .set_claims = 1,
                          .claims = claims,
                          .nclaims = 1};
        rc = s->st->ops->commit2(s->st, &c, NULL, 0, NULL);
    }
    json_decref(doc);
    if (rc != 0)
        fprintf(stderr, "bnb_seed: commit %ld: %d\n", i, rc);
    return rc;
}

static void *worker(void *arg)
{
    seed_t *s = arg;
    for (;;) {
        long i = atomic_fetch_add(&s->next, 1);
        if (i >= s->n || atomic_load(&s->failed))
            break;
        if (seed_one(s, i) != 0)
            atomic_store(&s->failed, 1);
    }
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: bnb_seed BACKEND TARGET STORE rooms N HOST_ID [THREADS]\n"
                    "       bnb_seed BACKEND TARGET STORE reservations ROOM_ID HOST_ID N [THREADS]\n");
    return 2;
}

int main(int argc, char **argv)
{
    seed_t s = {0};
    int threads = 4, targ;
    if (argc < 7)
        return usage();
    const char *backend = argv[1], *target = argv[2], *name = argv[3], *what = argv[4];
    if (!strcmp(what, "rooms")) {
        s.rooms = 1;
        s.n = atol(argv[5]);
        s.host_id = argv[6];
        targ = 7;
    } else if (!strcmp(what, "reservations") && argc >= 8) {
        s.room_id = argv[5];
        s.host_id = argv[6];
        s.n = atol(argv[7]);
        targ = 8;
    } else {
        return usage();
    }
    if (argc > targ)
        threads = atoi(argv[targ]);
    if (threads < 1 || threads > 64 || s.n < 0)
        return usage();
    int sqlite = !strcmp(backend, "sqlite");
    bnb_storage_config_t cfg = {.backend = backend,
                                .name = name,
                                .path = sqlite ? target : NULL,
                                .url = sqlite ? NULL : target,
                                .pool_size = threads};
    char err[512] = "";
    if (bnb_storage_open(&cfg, &s.st, err, sizeof err) != 0) {
        fprintf(stderr, "bnb_seed: open %s %s: %s\n", backend, target, err);
        return 1;
    }
    s.urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (s.urandom < 0) {
        fprintf(stderr, "bnb_seed: /dev/urandom: %s\n", strerror(errno));
        bnb_storage_close(s.st);
        return 1;
    }
    double t0 = now_s();
    pthread_t tid[64];
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, worker, &s) != 0)
            break;
    if (started == 0)
        worker(&s);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    double t = now_s() - t0;
    close(s.urandom);
    bnb_storage_close(s.st);
    if (atomic_load(&s.failed))
        return 1;
    printf("%ld documents in %.1f s\n", s.n, t);
    return 0;
}

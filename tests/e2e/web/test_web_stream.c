/* GET /dashboard/stream (issue 14) with real clients over real sockets:
 * privacy (anonymous: room summaries only; the room's host: its
 * reservations; a guest: only their own), ids and resume with Last-Event-ID,
 * a reset for an id the change log no longer keeps, heartbeats, the caps per
 * user (429) and in total (503), a slow client dropped at its buffer cap while
 * the others go on, and streams ended on SIGTERM. The same checks run against
 * the all-in-one host and through a gateway edge in front of it (the edge
 * proxies the stream as it comes). */
#include "harness.h"
#include "rawhttp.h"

#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define BUFCAP (1 << 20)

static e2e_host_t *g_host;
static e2e_host_t *g_edge;
static int g_port; /* where the clients go: the host, or the edge */
static char g_secret[256];
static char g_keyenv[400];
static char *t_host, *t_guest, *t_guest2, *t_capper;

static const char *g_query = ""; /* appended to /dashboard/stream by sse_open */

typedef struct sse {
    int fd;
    char *buf;
    size_t have;
} sse_t;

static void sse_close(sse_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    free(s->buf);
    s->fd = -1;
    s->buf = NULL;
}

/* Open a stream; 0 with the answer's head read, or the HTTP status when it
 * was not a 200 stream (body kept in s->buf). */
static int sse_open(sse_t *s, const char *token, const char *last_id, int rcvbuf)
{
    memset(s, 0, sizeof(*s));
    s->buf = calloc(1, BUFCAP);
    s->fd = -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    s->fd = fd;
    char req[4096], auth[3000] = "", last[128] = "";
    if (token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
    if (last_id)
        snprintf(last, sizeof(last), "Last-Event-ID: %s\r\n", last_id);
    snprintf(req, sizeof(req),
             "GET /dashboard/stream%s HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n%s%s\r\n", g_query,
             auth, last);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        return -1;
    int found = 0;
    long n = raw_read_until(fd, s->buf, BUFCAP, 0, "\r\n\r\n", 10000, &found);
    if (n < 0 || !found)
        return -1;
    s->have = (size_t)n;
    int status = 0;
    sscanf(s->buf, "HTTP/1.1 %d", &status);
    if (status != 200) {
        /* the rest of a problem answer */
        n = raw_read_until(fd, s->buf, BUFCAP, s->have, "}", 5000, &found);
        s->have = n > 0 ? (size_t)n : s->have;
        return status;
    }
    if (strstr(s->buf, "text/event-stream") == NULL)
        return -1;
    return 0;
}

/* Read until `needle` has come (after what was read before). 1 when it did. */
static int sse_wait(sse_t *s, const char *needle, int timeout_ms)
{
    int found = 0;
    long n = raw_read_until(s->fd, s->buf, BUFCAP, s->have, needle, timeout_ms, &found);
    if (n > 0)
        s->have = (size_t)n;
    return found;
}

/* Read until `needle` comes after byte `from`. 1 when it did. */
static int sse_wait_from(sse_t *s, size_t from, const char *needle, int timeout_ms)
{
    int found = 0;
    long n = raw_read_until(s->fd, s->buf + from, BUFCAP - from, s->have - from, needle, timeout_ms, &found);
    if (n > 0)
        s->have = from + (size_t)n;
    return found;
}

static char *jdup(const e2e_resp_t *r, const char *k)
{
    const char *v = json_string_value(json_object_get(r->json, k));
    return v ? strdup(v) : NULL;
}

static char *create_room(const char *name)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"description\":\"stream test\",\"city\":\"Busan\",\"pricePerNight\":80,\"capacity\":2}",
             name);
    e2e_resp_t r;
    assert_int_equal(e2e_call(g_host, E2E_HTTP1, "POST", "/rooms", t_host, body, &r), 0);
    assert_int_equal(r.status, 201);
    char *id = jdup(&r, "id");
    e2e_resp_free(&r);
    assert_non_null(id);
    return id;
}

static void patch_room(const char *room, const char *desc)
{
    char path[128], *body = malloc(strlen(desc) + 64);
    snprintf(path, sizeof(path), "/rooms/%s", room);
    sprintf(body, "{\"description\":\"%s\"}", desc);
    e2e_resp_t r;
    assert_int_equal(e2e_call(g_host, E2E_HTTP1, "PATCH", path, t_host, body, &r), 0);
    assert_int_equal(r.status, 200);
    e2e_resp_free(&r);
    free(body);
}

static char *book(const char *tok, const char *room, int from_days)
{
    char in[16], out[16], body[512];
    time_t t = time(NULL) + (time_t)from_days * 86400;
    strftime(in, sizeof(in), "%Y-%m-%d", gmtime(&t));
    t += 2 * 86400;
    strftime(out, sizeof(out), "%Y-%m-%d", gmtime(&t));
    snprintf(body, sizeof(body),
             "{\"roomId\":\"%s\",\"checkIn\":\"%s\",\"checkOut\":\"%s\",\"guests\":1,\"card\":{\"number\":"
             "\"4111111111111111\"}}",
             room, in, out);
    e2e_resp_t r;
    assert_int_equal(e2e_call(g_host, E2E_HTTP1, "POST", "/reservations", tok, body, &r), 0);
    assert_true(r.status == 201 || r.status == 202);
    char *id = jdup(&r, "id");
    e2e_resp_free(&r);
    assert_non_null(id);
    return id;
}

/* The id of the last "event: <name>" whose data holds `needle`, or -1. */
static long long last_id_of(const sse_t *s, const char *name, const char *needle)
{
    long long id = -1;
    char ev[64];
    snprintf(ev, sizeof(ev), "event: %s\ndata: ", name);
    for (const char *p = s->buf; (p = strstr(p, "id: ")) != NULL; p++) {
        const char *e = strstr(p, "\n\n");
        if (e == NULL)
            break;
        const char *evp = strstr(p, ev);
        const char *nd = strstr(p, needle);
        if (evp && evp < e && nd && nd < e)
            id = atoll(p + 4);
    }
    return id;
}

static int start_world(int with_edge)
{
    const char *env[] = {"BEARBNB_DASHBOARD_STREAM_HEARTBEAT_MS=400",
                         "BEARBNB_DASHBOARD_STREAM_MAX_PER_USER=3",
                         "BEARBNB_DASHBOARD_STREAM_MAX=10",
                         "BEARBNB_DASHBOARD_STREAM_RETENTION=16",
                         "BEARBNB_DASHBOARD_STREAM_POLL_MS=50",
                         "BEARBNB_HTTP_STREAM_BUFFER=16384",
                         "BEARBNB_LIMITS_USER_RATE=0",
                         "BEARBNB_LIMITS_IP_RATE=0",
                         NULL};
    e2e_host_opts_t o = {.env = env};
    if (e2e_host_start(&g_host, &o) != 0)
        return -1;
    g_port = e2e_host_port(g_host);
    if (with_edge) {
        snprintf(g_secret, sizeof(g_secret), "%s/gw.secret", e2e_host_dir(g_host));
        FILE *f = fopen(g_secret, "w");
        if (f == NULL)
            return -1;
        fputs("0123456789abcdef0123456789abcdef\n", f);
        fclose(f);
        char routes[200], sf[400];
        snprintf(sf, sizeof(sf), "BEARBNB_GATEWAY_SECRET_FILE=%s", g_secret);
        snprintf(routes, sizeof(routes), "BEARBNB_GATEWAY_ROUTES=/dashboard=http://127.0.0.1:%d", g_port);
        /* the edge verifies the host's tokens: the same key */
        snprintf(g_keyenv, sizeof(g_keyenv), "BEARBNB_AUTH_KEY_FILE=%s/jwt.key", e2e_host_dir(g_host));
        const char *eenv[] = {"BEARBNB_PLUGINS=",
                              routes,
                              sf,
                              g_keyenv,
                              "BEARBNB_HTTP_STREAM_BUFFER=16384",
                              "BEARBNB_LIMITS_USER_RATE=0",
                              "BEARBNB_LIMITS_IP_RATE=0",
                              NULL};
        e2e_host_opts_t eo = {.env = eenv};
        if (e2e_host_start(&g_edge, &eo) != 0)
            return -1;
        g_port = e2e_host_port(g_edge);
    }
    t_host = e2e_token(g_host, "hana", "host", 0);
    t_guest = e2e_token(g_host, "gia", "guest", 0);
    t_guest2 = e2e_token(g_host, "gus", "guest", 0);
    t_capper = e2e_token(g_host, "capper", "guest", 0);
    return t_host && t_guest && t_guest2 && t_capper ? 0 : -1;
}

static int setup_direct(void **state)
{
    (void)state;
    return start_world(0);
}

static int setup_edge(void **state)
{
    (void)state;
    return start_world(1);
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (g_edge && e2e_host_stop(g_edge) != 0)
        rc = -1;
    if (g_host && e2e_host_stop(g_host) != 0)
        rc = -1;
    e2e_host_free(g_edge);
    e2e_host_free(g_host);
    g_edge = g_host = NULL;
    free(t_host);
    free(t_guest);
    free(t_guest2);
    free(t_capper);
    t_host = t_guest = t_guest2 = t_capper = NULL;
    return rc;
}

static void test_privacy_and_resume(void **state)
{
    (void)state;
    sse_t anon, host, guest, other;
    assert_int_equal(sse_open(&anon, NULL, NULL, 0), 0);
    assert_int_equal(sse_open(&host, t_host, NULL, 0), 0);
    assert_int_equal(sse_open(&guest, t_guest, NULL, 0), 0);
    assert_int_equal(sse_open(&other, t_guest2, NULL, 0), 0);
    assert_true(sse_wait(&anon, "event: ready", 5000));
    assert_true(sse_wait(&host, "event: ready", 5000));
    assert_true(sse_wait(&guest, "event: ready", 5000));
    assert_true(sse_wait(&other, "event: ready", 5000));

    char *room = create_room("Stream hut");
    char needle[128];
    snprintf(needle, sizeof(needle), "\"id\":\"%s\"", room);
    /* everyone sees the room's summary */
    assert_true(sse_wait(&anon, needle, 10000));
    assert_true(sse_wait(&host, needle, 10000));
    assert_true(sse_wait(&guest, needle, 10000));
    assert_true(sse_wait(&other, needle, 10000));
    long long room_id = last_id_of(&host, "room", needle);
    assert_true(room_id > 0);

    char *res = book(t_guest, room, 40);
    char rneedle[128];
    snprintf(rneedle, sizeof(rneedle), "\"id\":\"%s\"", res);
    /* the room's host and the reservation's guest see the reservation */
    assert_true(sse_wait(&host, rneedle, 15000));
    assert_true(sse_wait(&guest, rneedle, 15000));
    assert_non_null(strstr(host.buf, "event: reservation"));
    /* a later change everyone sees: what came before it has come */
    patch_room(room, "after the booking");
    assert_true(sse_wait(&anon, "after the booking", 10000));
    assert_true(sse_wait(&other, "after the booking", 10000));
    assert_true(sse_wait(&host, "after the booking", 10000));
    assert_null(strstr(anon.buf, "event: reservation"));
    assert_null(strstr(other.buf, "event: reservation"));
    assert_null(strstr(anon.buf, res));
    assert_null(strstr(other.buf, res));
    /* every event has an id */
    for (const char *p = host.buf; (p = strstr(p, "\nevent: ")) != NULL; p++) {
        const char *line = p;
        while (line > host.buf && line[-1] != '\n')
            line--;
        assert_memory_equal(line, "id: ", 4);
    }
    /* heartbeats */
    size_t mark = host.have;
    assert_true(sse_wait_from(&host, mark, ": hb\n", 3000));

    /* resume after the room's event: the reservation comes again, then ready */
    char lid[32];
    snprintf(lid, sizeof(lid), "%lld", room_id);
    sse_t again, anon2;
    assert_int_equal(sse_open(&again, t_host, lid, 0), 0);
    assert_true(sse_wait(&again, "event: ready", 5000));
    char *ready = strstr(again.buf, "event: ready");
    char *seen = strstr(again.buf, rneedle);
    assert_non_null(seen);
    assert_true(seen < ready);
    assert_null(strstr(again.buf, "event: reset"));
    /* a browser's EventSource cannot send headers: ?access_token= instead */
    char q[3000];
    snprintf(q, sizeof(q), "?lastEventId=%s&access_token=%s", lid, t_host);
    g_query = q;
    sse_t viaq;
    assert_int_equal(sse_open(&viaq, NULL, NULL, 0), 0);
    g_query = "";
    assert_true(sse_wait(&viaq, "event: ready", 5000));
    assert_non_null(strstr(viaq.buf, rneedle));
    sse_close(&viaq);
    char *log = e2e_host_log_tail(g_host, 1 << 20);
    assert_non_null(log);
    assert_null(strstr(log, t_host)); /* never a token in the log */
    free(log);
    /* a bad one: 401 */
    g_query = "?access_token=not.a.token";
    assert_int_equal(sse_open(&viaq, NULL, NULL, 0), 401);
    g_query = "";
    sse_close(&viaq);
    /* the same resume anonymously: summaries only */
    assert_int_equal(sse_open(&anon2, NULL, lid, 0), 0);
    assert_true(sse_wait(&anon2, "event: ready", 5000));
    assert_non_null(strstr(anon2.buf, "after the booking"));
    assert_null(strstr(anon2.buf, "event: reservation"));
    sse_close(&again);
    sse_close(&anon2);
    /* both (a browser reconnecting by itself to the URL the page opened with
     * ?lastEventId=): the header wins, it is the newer */
    snprintf(q, sizeof(q), "?lastEventId=99999999&access_token=%s", t_guest); /* the guest: hana has 3 open */
    g_query = q;
    assert_int_equal(sse_open(&viaq, NULL, lid, 0), 0);
    g_query = "";
    assert_true(sse_wait(&viaq, "event: ready", 5000));
    assert_non_null(strstr(viaq.buf, rneedle));
    assert_null(strstr(viaq.buf, "event: reset"));
    sse_close(&viaq);

    /* an id the log no longer keeps (retention 16): a reset */
    for (int i = 0; i < 20; i++) {
        char d[32];
        snprintf(d, sizeof(d), "churn %d", i);
        patch_room(room, d);
    }
    assert_true(sse_wait(&host, "churn 19", 10000));
    sse_t old;
    assert_int_equal(sse_open(&old, t_host, "1", 0), 0);
    assert_true(sse_wait(&old, "event: ready", 5000));
    assert_non_null(strstr(old.buf, "event: reset"));
    sse_close(&old);
    /* an id from another log (newer than the newest): a reset as well */
    assert_int_equal(sse_open(&old, t_host, "99999999", 0), 0);
    assert_true(sse_wait(&old, "event: ready", 5000));
    assert_non_null(strstr(old.buf, "event: reset"));
    sse_close(&old);
    /* a malformed id: 400 naming it */
    assert_int_equal(sse_open(&old, t_host, "abc", 0), 400);
    assert_non_null(strstr(old.buf, "application/problem+json"));
    assert_non_null(strstr(old.buf, "Last-Event-ID"));
    sse_close(&old);

    sse_close(&anon);
    sse_close(&host);
    sse_close(&guest);
    sse_close(&other);
    free(room);
    free(res);
}

static double metric_sum(const char *text, const char *name)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, nl) == 0 && (p[nl] == ' ' || p[nl] == '{'))
            sum += atof(strchr(p + nl, ' ') + 1);
    return sum;
}

static double metric_of(e2e_host_t *h, const char *name)
{
    e2e_resp_t m;
    if (e2e_call(h, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &m) != 0)
        return -1;
    double v = metric_sum(m.body, name);
    e2e_resp_free(&m);
    return v;
}

/* Wait until metric `name` of h is `want` (within timeout_ms). 1 when it was. */
static int metric_becomes(e2e_host_t *h, const char *name, double want, int timeout_ms)
{
    long long end = e2e_now_ms() + timeout_ms;
    do {
        if (metric_of(h, name) == want)
            return 1;
        usleep(50 * 1000);
    } while (e2e_now_ms() < end);
    return 0;
}

static void test_caps(void **state)
{
    (void)state;
    /* streams of the test before: seen closed (the host, and an edge, peek every second) */
    assert_true(metric_becomes(g_host, "bearbnb_http_streams_open", 0, 8000));
    usleep(1200 * 1000); /* and the dashboard counts them gone (at its next heartbeat, 400 ms) */
    sse_t mine[3], more;
    for (int i = 0; i < 3; i++)
        assert_int_equal(sse_open(&mine[i], t_capper, NULL, 0), 0);
    assert_int_equal(sse_open(&more, t_capper, NULL, 0), 429);
    assert_non_null(strstr(more.buf, "application/problem+json"));
    assert_non_null(strstr(more.buf, "Retry-After") ? strstr(more.buf, "Retry-After")
                                                    : strstr(more.buf, "retry-after"));
    sse_close(&more);
    /* in total: 10 per process */
    sse_t anon[7];
    for (int i = 0; i < 7; i++)
        assert_int_equal(sse_open(&anon[i], NULL, NULL, 0), 0);
    assert_int_equal(sse_open(&more, NULL, NULL, 0), 503);
    assert_non_null(strstr(more.buf, "application/problem+json"));
    sse_close(&more);
    /* a closed stream frees its place */
    sse_close(&mine[0]);
    assert_true(metric_becomes(g_host, "bearbnb_http_streams_open", 9, 8000));
    usleep(1200 * 1000); /* and the dashboard counts them gone (at its next heartbeat, 400 ms) */
    assert_int_equal(sse_open(&more, t_capper, NULL, 0), 0);
    assert_true(sse_wait(&more, "event: ready", 5000));
    sse_close(&more);
    for (int i = 1; i < 3; i++)
        sse_close(&mine[i]);
    for (int i = 0; i < 7; i++)
        sse_close(&anon[i]);
    assert_true(metric_becomes(g_host, "bearbnb_http_streams_open", 0, 8000));
    usleep(1200 * 1000); /* and the dashboard counts them gone (at its next heartbeat, 400 ms) */
}

/* A client that never reads: dropped at its 16 KiB buffer (events of about
 * 5.3 KB; the kernel's socket buffers, 64 KiB on the host's side, fill
 * first); the others go on. */
static void test_slow_client(void **state)
{
    (void)state;
    sse_t slow, fast;
    assert_int_equal(sse_open(&slow, NULL, NULL, 2048), 0);
    assert_int_equal(sse_open(&fast, NULL, NULL, 0), 0);
    assert_true(sse_wait(&fast, "event: ready", 5000));
    char *room = create_room("Slow hut");
    char *desc = malloc(4901);
    int dropped = 0;
    for (int i = 0; i < 400 && !dropped; i++) {
        memset(desc, 'a' + i % 26, 4900);
        snprintf(desc, 16, "big %03d ", i);
        desc[strlen(desc)] = 'x';
        desc[4900] = '\0';
        patch_room(room, desc);
        char tag[16];
        snprintf(tag, sizeof(tag), "big %03d ", i);
        assert_true(sse_wait(&fast, tag, 10000)); /* the fast client keeps up */
        char *after = strstr(fast.buf, tag);      /* keep only what follows */
        fast.have -= (size_t)(after - fast.buf);
        memmove(fast.buf, after, fast.have + 1);
        if (i % 10 == 9) {
            e2e_resp_t m;
            assert_int_equal(e2e_call(g_edge ? g_edge : g_host, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &m), 0);
            dropped = metric_sum(m.body, "bearbnb_http_streams_dropped") >= 1;
            e2e_resp_free(&m);
        }
    }
    assert_true(dropped);
    /* the slow one's connection is closed: reading it ends */
    char junk[65536];
    long long end = e2e_now_ms() + 10000;
    int closed = 0;
    while (!closed && e2e_now_ms() < end) {
        struct pollfd p = {.fd = slow.fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0) {
            ssize_t n = read(slow.fd, junk, sizeof(junk));
            closed = n <= 0;
        }
    }
    assert_true(closed);
    free(desc);
    free(room);
    sse_close(&slow);
    sse_close(&fast);
}

/* Through the edge only: an event reaches the client within a bound while
 * the stream stays open (nothing waits for the end of the answer); a client
 * that leaves ends the edge's upstream transfer; gateway.max_streams (a
 * second edge with 2) answers 503 problem+json beyond it and frees a place
 * when a stream ends. */
static void test_edge_relays_as_it_comes(void **state)
{
    (void)state;
    assert_true(metric_becomes(g_host, "bearbnb_http_streams_open", 0, 8000));
    usleep(1200 * 1000);
    /* and the dashboard counts them gone (at its next heartbeat, 400 ms) */ /* streams of the tests before */
    double up0 = metric_of(g_host, "bearbnb_http_streams_open");
    assert_true(up0 >= 0);
    sse_t s;
    assert_int_equal(sse_open(&s, t_host, NULL, 0), 0);
    assert_true(sse_wait(&s, "event: ready", 5000));
    assert_true(metric_becomes(g_edge, "bearbnb_gateway_streams_open", 1, 3000));
    assert_true(metric_becomes(g_host, "bearbnb_http_streams_open", up0 + 1, 3000));
    char *room = create_room("Edge hut");
    for (int i = 0; i < 5; i++) {
        char d[64];
        snprintf(d, sizeof(d), "edge relay %d", i);
        size_t mark = s.have;
        long long t0 = e2e_now_ms();
        patch_room(room, d);
        assert_true(sse_wait_from(&s, mark, d, 2000));
        long long took = e2e_now_ms() - t0;
        print_message("edge relay: event %d reached the client %lld ms after its PATCH\n", i, took);
        assert_true(took < 2000);
    }
    /* the stream stays open: heartbeats keep coming through */
    size_t mark = s.have;
    assert_true(sse_wait_from(&s, mark, ": hb\n", 3000));
    mark = s.have;
    assert_true(sse_wait_from(&s, mark, ": hb\n", 3000));
    /* the client leaves: the edge ends its upstream transfer */
    sse_close(&s);
    assert_true(metric_becomes(g_edge, "bearbnb_gateway_streams_open", 0, 4000));
    assert_true(metric_becomes(g_host, "bearbnb_http_streams_open", up0, 4000));

    /* the edge's own cap */
    char routes[200], sf[400];
    snprintf(sf, sizeof(sf), "BEARBNB_GATEWAY_SECRET_FILE=%s", g_secret);
    snprintf(routes, sizeof(routes), "BEARBNB_GATEWAY_ROUTES=/dashboard=http://127.0.0.1:%d", e2e_host_port(g_host));
    const char *eenv[] = {"BEARBNB_PLUGINS=",
                          routes,
                          sf,
                          "BEARBNB_GATEWAY_MAX_STREAMS=2",
                          "BEARBNB_BREAKER_MINIMUM_CALLS=4",
                          "BEARBNB_BREAKER_WINDOW=8",
                          "BEARBNB_LIMITS_USER_RATE=0",
                          "BEARBNB_LIMITS_IP_RATE=0",
                          NULL};
    e2e_host_opts_t eo = {.env = eenv};
    e2e_host_t *small = NULL;
    assert_int_equal(e2e_host_start(&small, &eo), 0);
    int keep_port = g_port;
    g_port = e2e_host_port(small);
    sse_t a, b, c;
    assert_int_equal(sse_open(&a, NULL, NULL, 0), 0);
    assert_int_equal(sse_open(&b, NULL, NULL, 0), 0);
    assert_true(sse_wait(&b, "event: ready", 5000));
    assert_int_equal(sse_open(&c, NULL, NULL, 0), 503);
    assert_non_null(strstr(c.buf, "application/problem+json"));
    assert_non_null(strstr(c.buf, "streams"));
    sse_close(&c);
    /* the upstream's breaker does not count the edge's refusals */
    for (int i = 0; i < 6; i++) {
        assert_int_equal(sse_open(&c, NULL, NULL, 0), 503);
        sse_close(&c);
    }
    sse_close(&a);
    assert_true(metric_becomes(small, "bearbnb_gateway_streams_open", 1, 4000));
    assert_int_equal(sse_open(&c, NULL, NULL, 0), 0);
    assert_true(sse_wait(&c, "event: ready", 5000));
    sse_close(&b);
    sse_close(&c);
    g_port = keep_port;
    assert_int_equal(e2e_host_stop(small), 0);
    e2e_host_free(small);
    free(room);
}

/* SIGTERM with streams open: they end, the process exits 0 at once. */
static void test_shutdown(void **state)
{
    (void)state;
    sse_t a, b;
    assert_int_equal(sse_open(&a, NULL, NULL, 0), 0);
    assert_int_equal(sse_open(&b, t_host, NULL, 0), 0);
    assert_true(sse_wait(&b, "event: ready", 5000));
    long long t0 = e2e_now_ms();
    if (g_edge) {
        assert_int_equal(e2e_host_stop(g_edge), 0);
        e2e_host_free(g_edge);
        g_edge = NULL;
    }
    assert_int_equal(e2e_host_stop(g_host), 0);
    long long took = e2e_now_ms() - t0;
    e2e_host_free(g_host);
    g_host = NULL;
    assert_true(took < 8000); /* not the 15 s drain timeout */
    /* the stream ended cleanly (chunked: the last chunk) or the socket closed */
    char junk[4096];
    ssize_t n;
    while ((n = read(b.fd, junk, sizeof(junk))) > 0)
        ;
    assert_true(n == 0 || n < 0);
    sse_close(&a);
    sse_close(&b);
}

int main(void)
{
    const struct CMUnitTest direct[] = {
        cmocka_unit_test(test_privacy_and_resume),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_slow_client),
        cmocka_unit_test(test_shutdown),
    };
    int rc = cmocka_run_group_tests_name("all-in-one", direct, setup_direct, teardown);
    {
        const struct CMUnitTest edge[] = {
            cmocka_unit_test(test_privacy_and_resume), cmocka_unit_test(test_caps),
            cmocka_unit_test(test_slow_client),        cmocka_unit_test(test_edge_relays_as_it_comes),
            cmocka_unit_test(test_shutdown),
        };
        rc |= cmocka_run_group_tests_name("through the edge", edge, setup_edge, teardown);
    }
    return rc;
}

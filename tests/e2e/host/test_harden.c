/*
 * End-to-end: issue 11, what an attacker or a careless client sends, against
 * a real all-in-one bearbnb over real sockets. One test per defect:
 * /metrics labels, the content-type check, X-Correlation-Id, broken
 * percent-encoding in the query, HEAD, HTTP/1.1 framing (CL+TE, two
 * Content-Lengths: 400 and close), the body limit on HTTP/1.1 and HTTP/2,
 * an HPACK bomb, HTTP/2 rapid reset (reset POSTs create no room; a flood of
 * resets leaves another client served and the server's memory bounded).
 * HTTP/2 is spoken with a small raw framer here (h2 frames, HPACK without
 * Huffman), because no client library sends what an attacker sends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char ROOM_BODY[] =
    "{\"name\":\"Loft\",\"description\":\"quiet\",\"city\":\"Bern\",\"pricePerNight\":120,\"capacity\":3}";

typedef struct fx {
    e2e_host_t *h;
    char *host_tok;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    /* the flood comes from loopback like every other client: the per-IP
     * bucket would make the test about rate limits, not about resets */
    const char *env[] = {"BEARBNB_LIMITS_IP_RATE=0", "BEARBNB_LIMITS_USER_RATE=0", NULL};
    e2e_host_opts_t o = {.env = env};
    if (f == NULL || e2e_host_start(&f->h, &o) != 0)
        return -1;
    f->host_tok = e2e_token(f->h, "alice", "host", 0);
    if (f->host_tok == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    int st = e2e_host_stop(f->h);
    e2e_host_free(f->h);
    free(f->host_tok);
    free(f);
    if (st != 0)
        fprintf(stderr, "host exit status %d (23 = ASan/LSan report)\n", st);
    return st == 0 ? 0 : -1;
}

/* ---- raw sockets ------------------------------------------------------------------ */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int raw_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read until the peer closes (*closed = 1) or nothing comes for idle_ms.
 * NUL-terminates; returns the bytes read. */
static size_t raw_read(int fd, char *buf, size_t cap, int idle_ms, int *closed)
{
    size_t got = 0;
    *closed = 0;
    while (got + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, idle_ms);
        if (pr <= 0)
            break;
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *closed = 1;
            break;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

__attribute__((unused)) static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

__attribute__((unused)) static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

__attribute__((unused)) static char *create_room(fx_t *f)
{
    e2e_resp_t r;
    char *id = NULL;
    if (e2e_call(f->h, E2E_HTTP1, "POST", "/rooms", f->host_tok, ROOM_BODY, &r) == 0 && r.status == 201)
        id = strdup(json_string_value(json_object_get(r.json, "id")));
    e2e_resp_free(&r);
    return id;
}

/* ---- /metrics (#4) ---------------------------------------------------------------- */

/* Every line of the exposition text is a comment or `name{k="v",...} value`
 * with properly escaped values. */
static void check_exposition(const char *text)
{
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        if (end == NULL)
            end = line + strlen(line);
        const char *p = line;
        if (*p != '#' && p < end) {
            while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == ':'))
                p++;
            if (p == line)
                fail_msg("bad metrics line: %.*s", (int)(end - line), line);
            if (*p == '{') {
                p++;
                while (p < end && *p != '}') {
                    while (p < end && (isalnum((unsigned char)*p) || *p == '_'))
                        p++;
                    if (p + 1 >= end || p[0] != '=' || p[1] != '"')
                        fail_msg("bad label in: %.*s", (int)(end - line), line);
                    p += 2;
                    while (p < end && *p != '"') {
                        if (*p == '\\') {
                            if (p + 1 >= end || (p[1] != '\\' && p[1] != '"' && p[1] != 'n'))
                                fail_msg("bad escape in: %.*s", (int)(end - line), line);
                            p++;
                        }
                        p++;
                    }
                    if (p >= end)
                        fail_msg("unterminated label value in: %.*s", (int)(end - line), line);
                    p++;
                    if (p < end && *p == ',')
                        p++;
                }
                if (p >= end)
                    fail_msg("unterminated labels in: %.*s", (int)(end - line), line);
                p++;
            }
            if (p >= end || *p != ' ')
                fail_msg("no value in: %.*s", (int)(end - line), line);
            char *num_end = NULL;
            strtod(p + 1, &num_end);
            if (num_end != end)
                fail_msg("bad value in: %.*s", (int)(end - line), line);
        }
        line = *end ? end + 1 : end;
    }
}

static void raw_request_line(int port, const char *method)
{
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    char req[256];
    snprintf(req, sizeof(req), "%s /rooms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method);
    assert_int_equal(raw_send(fd, req, strlen(req)), 0);
    char buf[4096];
    int closed;
    raw_read(fd, buf, sizeof(buf), 2000, &closed);
    close(fd);
}

static void test_metrics_labels(void **state)
{
    fx_t *f = *state;
    int port = e2e_host_port(f->h);
    raw_request_line(port, "PO\"ST");
    raw_request_line(port, "GE\\T");
    char m[32];
    for (int i = 0; i < 40; i++) {
        snprintf(m, sizeof(m), "MADEUP%d", i);
        raw_request_line(port, m);
    }
    e2e_resp_t r;
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    check_exposition(r.body);
    /* the method label takes one of a fixed set of values */
    static const char *const allowed[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"};
    for (const char *p = r.body; (p = strstr(p, "method=\"")) != NULL;) {
        p += 8;
        const char *q = strchr(p, '"');
        assert_non_null(q);
        int ok = 0;
        for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
            ok |= (size_t)(q - p) == strlen(allowed[i]) && strncmp(p, allowed[i], (size_t)(q - p)) == 0;
        if (!ok)
            fail_msg("method label outside the fixed set: %.*s", (int)(q - p), p);
        p = q;
    }
    assert_null(strstr(r.body, "MADEUP"));
    assert_non_null(strstr(r.body, "method=\"other\""));
    e2e_resp_free(&r);
}

/* ---- content type, correlation id, query (#10, #7) ----------------------------------- */

static long post_room_with(fx_t *f, const char *const *headers, e2e_resp_t *r)
{
    e2e_req_t rq = {.proto = E2E_HTTP1,
                    .method = "POST",
                    .path = "/rooms",
                    .token = f->host_tok,
                    .body = ROOM_BODY,
                    .headers = headers};
    assert_int_equal(e2e_http(f->h, &rq, r), 0);
    return r->status;
}

static void test_content_type_parsed(void **state)
{
    fx_t *f = *state;
    e2e_resp_t r;
    const char *smuggled[] = {"Content-Type: text/plain; x=application/json", NULL};
    assert_int_equal(post_room_with(f, smuggled, &r), 415);
    assert_true(e2e_is_problem(&r, 415));
    e2e_resp_free(&r);
    const char *other[] = {"Content-Type: text/application/json", NULL};
    assert_int_equal(post_room_with(f, other, &r), 415);
    e2e_resp_free(&r);
    const char *suffix[] = {"Content-Type: text/plain+json", NULL};
    assert_int_equal(post_room_with(f, suffix, &r), 415);
    e2e_resp_free(&r);
    /* JSON with parameters, any case, and a +json type are still JSON */
    const char *ok1[] = {"Content-Type: Application/JSON; charset=utf-8", NULL};
    assert_int_equal(post_room_with(f, ok1, &r), 201);
    e2e_resp_free(&r);
    const char *ok2[] = {"Content-Type: application/merge-patch+json", NULL};
    assert_int_equal(post_room_with(f, ok2, &r), 201);
    e2e_resp_free(&r);
}

static void test_correlation_id_checked(void **state)
{
    fx_t *f = *state;
    e2e_resp_t r;
    const char *bad[] = {"X-Correlation-Id: a\"},\"forged\":{\"x\":\"", NULL};
    assert_int_equal(post_room_with(f, bad, &r), 400);
    assert_true(e2e_is_problem(&r, 400));
    assert_non_null(strstr(r.body, "X-Correlation-Id"));
    e2e_resp_free(&r);
    char longid[200] = "X-Correlation-Id: ";
    memset(longid + strlen(longid), 'a', 100);
    const char *toolong[] = {longid, NULL};
    assert_int_equal(post_room_with(f, toolong, &r), 400);
    e2e_resp_free(&r);
    const char *good[] = {"X-Correlation-Id: order-42.retry_1", NULL};
    assert_int_equal(post_room_with(f, good, &r), 201);
    e2e_resp_free(&r);
    /* nothing of the bad values reached the log */
    char *log = e2e_host_log_tail(f->h, 1 << 20);
    assert_non_null(log);
    assert_null(strstr(log, "forged"));
    assert_null(strstr(log, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    free(log);
}

static void test_query_bad_percent(void **state)
{
    fx_t *f = *state;
    e2e_resp_t r;
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/rooms?city=%zz", NULL, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 400));
    assert_non_null(strstr(r.body, "city"));
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(f->h, E2E_HTTP2, "GET", "/rooms?limit=5&city=Be%2", NULL, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 400));
    assert_non_null(strstr(r.body, "city"));
    e2e_resp_free(&r);
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/rooms?city=%00", NULL, NULL, &r), 0);
    assert_true(e2e_is_problem(&r, 400));
    e2e_resp_free(&r);
    /* well-formed escapes still work */
    assert_int_equal(e2e_call(f->h, E2E_HTTP1, "GET", "/rooms?city=B%65rn", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    e2e_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_labels),
        cmocka_unit_test(test_content_type_parsed),
        cmocka_unit_test(test_correlation_id_checked),
        cmocka_unit_test(test_query_bad_percent),
    };
    return cmocka_run_group_tests_name("host hardening (issue 11)", tests, setup, teardown);
}

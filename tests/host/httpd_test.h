/* A tiny HTTP/1.1 server on loopback for the host's unit tests
 * (test_proxy.c, test_call.c): one thread, one request per connection
 * (answers with Connection: close), records the last request as received
 * (head and body) and answers what the test set. Header-only. */
#ifndef BNB_HTTPD_TEST_H
#define BNB_HTTPD_TEST_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct tsrv {
    int fd, port;
    pthread_t th;
    pthread_mutex_t mu;
    int stop;
    /* the answer */
    int status;
    char ctype[64];
    char extra[256]; /* more header lines, each ending in \r\n */
    char body[1024];
    int delay_ms;
    /* what came in */
    int hits;
    char last[8192]; /* head and body of the last request */
} tsrv_t;

static void tsrv_answer(tsrv_t *s, int status, const char *ctype, const char *extra, const char *body)
{
    pthread_mutex_lock(&s->mu);
    s->status = status;
    snprintf(s->ctype, sizeof(s->ctype), "%s", ctype ? ctype : "application/json");
    snprintf(s->extra, sizeof(s->extra), "%s", extra ? extra : "");
    snprintf(s->body, sizeof(s->body), "%s", body ? body : "");
    pthread_mutex_unlock(&s->mu);
}

static void tsrv_serve_one(tsrv_t *s, int c)
{
    char buf[8192];
    size_t n = 0;
    char *end = NULL;
    while (n < sizeof(buf) - 1 && end == NULL) {
        ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            return;
        n += (size_t)r;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (end == NULL)
        return;
    size_t want = (size_t)(end + 4 - buf);
    const char *cl = strcasestr(buf, "\ncontent-length:");
    if (cl != NULL && cl < end)
        want += (size_t)atol(cl + 16);
    while (n < want && n < sizeof(buf) - 1) {
        ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    pthread_mutex_lock(&s->mu);
    s->hits++;
    snprintf(s->last, sizeof(s->last), "%s", buf);
    int delay = s->delay_ms;
    char out[2048];
    int ol = snprintf(out, sizeof(out),
                      "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n%s",
                      s->status, s->ctype, strlen(s->body), s->extra, s->body);
    pthread_mutex_unlock(&s->mu);
    if (delay > 0) {
        struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (write(c, out, (size_t)ol) < 0)
        return;
}

static void *tsrv_main(void *arg)
{
    tsrv_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return NULL;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        tsrv_serve_one(s, c);
        close(c);
    }
}

/* 0, listening on 127.0.0.1:s->port and answering 200 {} */
static int tsrv_start(tsrv_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    tsrv_answer(s, 200, NULL, NULL, "{}");
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->fd, 16) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->th, NULL, tsrv_main, s) == 0 ? 0 : -1;
}

static void tsrv_stop(tsrv_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
}

/* A copy of the last request (caller frees). */
__attribute__((unused)) static char *tsrv_last(tsrv_t *s)
{
    pthread_mutex_lock(&s->mu);
    char *c = strdup(s->last);
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* A loopback port nobody listens on (bound, then closed). */
__attribute__((unused)) static int tsrv_dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

#endif

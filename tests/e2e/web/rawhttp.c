#include "rawhttp.h"

#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int raw_connect(int port)
{
    return e2e_raw_connect(port);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int raw_request(int port, const char *req, raw_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    int fd = raw_connect(port);
    if (fd < 0)
        return -1;
    if (e2e_raw_send(fd, req, strlen(req)) != 0) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, have = 0;
    char *buf = malloc(cap + 1);
    long long end = now_ms() + 20000;
    while (buf != NULL && now_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        if (have == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL)
                break;
            buf = nb, cap *= 2;
        }
        ssize_t n = read(fd, buf + have, cap - have);
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    close(fd);
    if (buf == NULL)
        return -1;
    buf[have] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) {
        fprintf(stderr, "raw_request: no response head (%zu bytes)\n", have);
        free(buf);
        return -1;
    }
    out->head = strndup(buf, (size_t)(sep - buf) + 2);
    out->body_len = have - (size_t)(sep + 4 - buf);
    out->body = malloc(out->body_len + 1);
    if (out->body != NULL) {
        memcpy(out->body, sep + 4, out->body_len);
        out->body[out->body_len] = '\0';
    }
    free(buf);
    return out->head && out->body ? 0 : -1;
}

int raw_get(int port, const char *method, const char *path, const char *extra, raw_resp_t *out)
{
    char req[4096];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s\r\n", method, path,
             extra ? extra : "");
    return raw_request(port, req, out);
}

void raw_resp_free(raw_resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

int raw_header(const raw_resp_t *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *p = r->head; p && *p;) {
        const char *e = strstr(p, "\r\n");
        if (e == NULL)
            break;
        if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(e - v), v);
            return 0;
        }
        p = e + 2;
    }
    return -1;
}

long raw_read_until(int fd, char *buf, size_t cap, size_t have, const char *needle, int timeout_ms, int *found)
{
    long long end = now_ms() + timeout_ms;
    *found = 0;
    buf[have] = '\0';
    while (!(*found = strstr(buf, needle) != NULL) && now_ms() < end && have + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 50);
        if (pr < 0)
            return -1;
        if (pr == 0)
            continue;
        ssize_t n = read(fd, buf + have, cap - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
    }
    return (long)have;
}

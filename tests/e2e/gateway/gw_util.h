/* Small helpers shared by the gateway e2e tests (header-only, static). */
#ifndef BNB_GW_UTIL_H
#define BNB_GW_UTIL_H

#include "harness.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One raw request with every response header kept (the harness keeps only a
 * few), optionally from a given local address ("127.0.0.2"). */
typedef struct gw_raw {
    long status;
    long ms;
    char headers[4096];
    char body[8192];
    size_t body_len;
} gw_raw_t;

static size_t gw_raw_hdr(char *p, size_t s, size_t n, void *ud)
{
    gw_raw_t *r = ud;
    size_t l = strlen(r->headers), k = s * n;
    if (l + k < sizeof(r->headers)) {
        memcpy(r->headers + l, p, k);
        r->headers[l + k] = '\0';
    }
    return k;
}

static size_t gw_raw_body(char *p, size_t s, size_t n, void *ud)
{
    gw_raw_t *r = ud;
    size_t k = s * n;
    if (r->body_len + k < sizeof(r->body)) {
        memcpy(r->body + r->body_len, p, k);
        r->body_len += k;
        r->body[r->body_len] = '\0';
    }
    return k;
}

__attribute__((unused)) static int gw_raw(int port, int h2, const char *method, const char *path,
                                          const char *const *headers, const char *local_ip, gw_raw_t *out)
{
    memset(out, 0, sizeof(*out));
    CURL *c = curl_easy_init();
    if (c == NULL)
        return -1;
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION,
                     h2 ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE : (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, gw_raw_hdr);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, gw_raw_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    if (local_ip != NULL)
        curl_easy_setopt(c, CURLOPT_INTERFACE, local_ip);
    long long t0 = e2e_now_ms();
    CURLcode cc = curl_easy_perform(c);
    out->ms = (long)(e2e_now_ms() - t0);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    else
        fprintf(stderr, "gw_raw %s %s: %s\n", method, url, curl_easy_strerror(cc));
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return cc == CURLE_OK ? 0 : -1;
}

/* Value of response header `name` (case-insensitive) into out, 0 or -1. */
__attribute__((unused)) static int gw_raw_header(const gw_raw_t *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *p = r->headers; *p;) {
        const char *e = strchr(p, '\n');
        size_t ll = e ? (size_t)(e - p) : strlen(p);
        if (ll > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(p + ll - v);
            while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                vl--;
            snprintf(out, outlen, "%.*s", (int)vl, v);
            return 0;
        }
        p = e ? e + 1 : p + ll;
    }
    return -1;
}

/* The host log from byte `from` on (NUL-terminated, caller frees), or NULL. */
__attribute__((unused)) static char *gw_log_from(const e2e_host_t *h, long from)
{
    FILE *f = fopen(e2e_host_log_path(h), "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    if (from > n)
        from = n;
    fseek(f, from, SEEK_SET);
    char *s = malloc((size_t)(n - from) + 1);
    size_t got = s ? fread(s, 1, (size_t)(n - from), f) : 0;
    fclose(f);
    if (s)
        s[got] = '\0';
    return s;
}

__attribute__((unused)) static long gw_log_size(const e2e_host_t *h)
{
    FILE *f = fopen(e2e_host_log_path(h), "rb");
    if (f == NULL)
        return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* 1 when one line of the log (from `from`) contains every non-NULL needle. */
__attribute__((unused)) static int gw_log_line_has(const e2e_host_t *h, long from, const char *a, const char *b,
                                                   const char *c)
{
    char *s = gw_log_from(h, from);
    int hit = 0;
    for (char *line = s; line && *line && !hit;) {
        char *e = strchr(line, '\n');
        if (e)
            *e = '\0';
        hit = (!a || strstr(line, a)) && (!b || strstr(line, b)) && (!c || strstr(line, c));
        line = e ? e + 1 : line + strlen(line);
    }
    free(s);
    return hit;
}

/* Detail of a problem answer contains `needle`. */
__attribute__((unused)) static int gw_detail_has(const e2e_resp_t *r, const char *needle)
{
    const char *d = json_string_value(json_object_get(r->json, "detail"));
    if (d == NULL || strstr(d, needle) == NULL) {
        fprintf(stderr, "detail '%s' does not contain '%s' (status %ld)\n", d ? d : "(none)", needle, r->status);
        return 0;
    }
    return 1;
}

#endif

#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

typedef struct series {
    char *name;
    char *labels;
    int gauge;
    double value;
} series_t;

typedef struct hist {
    char *labels;
    unsigned long counts[NBUCKETS];
    unsigned long count;
    double sum;
} hist_t;

struct bnb_metrics {
    pthread_mutex_t mu;
    series_t *s;
    size_t ns, caps;
    hist_t *h;
    size_t nh, caph;
};

bnb_metrics_t *bnb__metrics_new(void)
{
    bnb_metrics_t *m = calloc(1, sizeof(*m));
    if (m != NULL)
        pthread_mutex_init(&m->mu, NULL);
    return m;
}

void bnb__metrics_free(bnb_metrics_t *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->ns; i++) {
        free(m->s[i].name);
        free(m->s[i].labels);
    }
    for (size_t i = 0; i < m->nh; i++)
        free(m->h[i].labels);
    free(m->s);
    free(m->h);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* caller holds the lock */
static series_t *find_series(bnb_metrics_t *m, const char *name, const char *labels, int gauge)
{
    if (labels == NULL)
        labels = "";
    for (size_t i = 0; i < m->ns; i++)
        if (strcmp(m->s[i].name, name) == 0 && strcmp(m->s[i].labels, labels) == 0)
            return &m->s[i];
    if (m->ns == m->caps) {
        size_t cap = m->caps ? m->caps * 2 : 32;
        series_t *ns = realloc(m->s, cap * sizeof(*ns));
        if (ns == NULL)
            return NULL;
        m->s = ns;
        m->caps = cap;
    }
    series_t *s = &m->s[m->ns];
    s->name = strdup(name);
    s->labels = strdup(labels);
    if (s->name == NULL || s->labels == NULL) {
        free(s->name);
        free(s->labels);
        return NULL;
    }
    s->gauge = gauge;
    s->value = 0;
    m->ns++;
    return s;
}

static hist_t *find_hist(bnb_metrics_t *m, const char *labels)
{
    for (size_t i = 0; i < m->nh; i++)
        if (strcmp(m->h[i].labels, labels) == 0)
            return &m->h[i];
    if (m->nh == m->caph) {
        size_t cap = m->caph ? m->caph * 2 : 32;
        hist_t *nh = realloc(m->h, cap * sizeof(*nh));
        if (nh == NULL)
            return NULL;
        m->h = nh;
        m->caph = cap;
    }
    hist_t *h = &m->h[m->nh];
    memset(h, 0, sizeof(*h));
    h->labels = strdup(labels);
    if (h->labels == NULL)
        return NULL;
    m->nh++;
    return h;
}

void bnb__metrics_add(bnb_metrics_t *m, const char *name, const char *labels, double delta)
{
    pthread_mutex_lock(&m->mu);
    series_t *s = find_series(m, name, labels, 0);
    if (s != NULL)
        s->value += delta;
    pthread_mutex_unlock(&m->mu);
}

void bnb__metrics_set(bnb_metrics_t *m, const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&m->mu);
    series_t *s = find_series(m, name, labels, 1);
    if (s != NULL)
        s->value = value;
    pthread_mutex_unlock(&m->mu);
}

/* The method label comes from a fixed set: a client can send any token as a
 * method, and each new one would otherwise be a new series (and a quote in it
 * would break the exposition text). */
const char *bnb__metrics_method_label(const char *method)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; method != NULL && i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(method, known[i]) == 0)
            return known[i];
    return "other";
}

/* A label value as the exposition format wants it: backslash, double quote
 * and line feed escaped; other control bytes dropped. Always NUL-terminated. */
void bnb__metrics_escape(char *out, size_t outlen, const char *v)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    for (; v != NULL && *v && o + 2 < outlen; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '\\' || c == '"') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c >= 0x20 && c != 0x7f) {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

void bnb__metrics_http(bnb_metrics_t *m, const char *route, const char *method, int status, double seconds)
{
    char er[256];
    bnb__metrics_escape(er, sizeof(er), route);
    const char *me = bnb__metrics_method_label(method);
    if (status < 100 || status > 599)
        status = 0;
    char labels[512];
    snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status=\"%d\"", er, me, status);
    char hl[512];
    snprintf(hl, sizeof(hl), "route=\"%s\",method=\"%s\"", er, me);
    pthread_mutex_lock(&m->mu);
    series_t *s = find_series(m, "bearbnb_http_requests_total", labels, 0);
    if (s != NULL)
        s->value += 1;
    hist_t *h = find_hist(m, hl);
    if (h != NULL) {
        for (size_t i = 0; i < NBUCKETS; i++)
            if (seconds <= buckets[i])
                h->counts[i]++;
        h->count++;
        h->sum += seconds;
    }
    pthread_mutex_unlock(&m->mu);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static int cmp_series(const void *a, const void *b)
{
    const series_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

char *bnb__metrics_render(bnb_metrics_t *m, size_t *len)
{
    sbuf_t b = {malloc(4096), 0, 4096, 0};
    if (b.p == NULL)
        return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&m->mu);
    qsort(m->s, m->ns, sizeof(series_t), cmp_series);
    const char *last = "";
    for (size_t i = 0; i < m->ns; i++) {
        series_t *s = &m->s[i];
        if (strcmp(s->name, last) != 0) {
            sb_printf(&b, "# TYPE %s %s\n", s->name, s->gauge ? "gauge" : "counter");
            last = s->name;
        }
        if (s->labels[0])
            sb_printf(&b, "%s{%s} %.17g\n", s->name, s->labels, s->value);
        else
            sb_printf(&b, "%s %.17g\n", s->name, s->value);
    }
    if (m->nh > 0)
        sb_printf(&b, "# TYPE bearbnb_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < m->nh; i++) {
        hist_t *h = &m->h[i];
        for (size_t k = 0; k < NBUCKETS; k++)
            sb_printf(&b, "bearbnb_http_request_duration_seconds_bucket{%s,le=\"%g\"} %lu\n", h->labels, buckets[k],
                      h->counts[k]);
        sb_printf(&b, "bearbnb_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %lu\n", h->labels, h->count);
        sb_printf(&b, "bearbnb_http_request_duration_seconds_sum{%s} %.9f\n", h->labels, h->sum);
        sb_printf(&b, "bearbnb_http_request_duration_seconds_count{%s} %lu\n", h->labels, h->count);
    }
    pthread_mutex_unlock(&m->mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* host/metrics.c: counters, gauges, the HTTP histogram, Prometheus text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value of the sample line `name{labels}` (labels exactly as rendered,
 * or NULL for none); NAN when absent. */
static double sample(const char *text, const char *name, const char *labels)
{
    char prefix[512];
    if (labels)
        snprintf(prefix, sizeof(prefix), "%s{%s} ", name, labels);
    else
        snprintf(prefix, sizeof(prefix), "%s ", name);
    size_t pl = strlen(prefix);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, prefix, pl) == 0)
            return strtod(line + pl, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NAN;
}

/* Every line is `# TYPE name counter|gauge|histogram` or `name[{labels}] value`
 * with a metric name [a-zA-Z_:][a-zA-Z0-9_:]*, labels k="v" separated by
 * commas, and a number; each sample's family has a TYPE line before it. */
static void check_format(const char *text, size_t len)
{
    assert_int_equal(strlen(text), len);
    assert_true(len == 0 || text[len - 1] == '\n');
    char typed[64][128];
    int ntyped = 0;
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        char buf[1024];
        assert_true((size_t)(end - line) < sizeof(buf));
        memcpy(buf, line, (size_t)(end - line));
        buf[end - line] = '\0';
        if (strncmp(buf, "# TYPE ", 7) == 0) {
            char name[128], kind[32], extra[8];
            if (sscanf(buf + 7, "%127s %31s %7s", name, kind, extra) != 2)
                fail_msg("bad TYPE line: '%s'", buf);
            if (strcmp(kind, "counter") && strcmp(kind, "gauge") && strcmp(kind, "histogram"))
                fail_msg("bad kind: '%s'", buf);
            for (int i = 0; i < ntyped; i++)
                if (strcmp(typed[i], name) == 0)
                    fail_msg("family typed twice: '%s'", buf);
            assert_true(ntyped < 64);
            snprintf(typed[ntyped++], sizeof(typed[0]), "%s", name);
        } else {
            const char *p = buf;
            if (!(isalpha((unsigned char)*p) || *p == '_' || *p == ':'))
                fail_msg("bad metric name: '%s'", buf);
            while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
                p++;
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)(p - buf), buf);
            if (*p == '{') {
                p++;
                for (;;) {
                    if (!(isalpha((unsigned char)*p) || *p == '_'))
                        fail_msg("bad label name: '%s'", buf);
                    while (isalnum((unsigned char)*p) || *p == '_')
                        p++;
                    if (p[0] != '=' || p[1] != '"')
                        fail_msg("bad label: '%s'", buf);
                    p += 2;
                    while (*p && *p != '"') {
                        if (*p == '\\' && p[1])
                            p++;
                        p++;
                    }
                    if (*p != '"')
                        fail_msg("unterminated label value: '%s'", buf);
                    p++;
                    if (*p == ',') {
                        p++;
                        continue;
                    }
                    if (*p == '}') {
                        p++;
                        break;
                    }
                    fail_msg("bad label list: '%s'", buf);
                }
            }
            if (*p != ' ')
                fail_msg("no space before the value: '%s'", buf);
            p++;
            char *vend;
            strtod(p, &vend);
            if (vend == p || *vend != '\0')
                fail_msg("bad value: '%s'", buf);
            /* the family: strip histogram suffixes */
            int found = 0;
            for (int i = 0; i < ntyped && !found; i++) {
                size_t tl = strlen(typed[i]);
                found = strcmp(typed[i], name) == 0 ||
                        (strncmp(typed[i], name, tl) == 0 &&
                         (!strcmp(name + tl, "_bucket") || !strcmp(name + tl, "_sum") || !strcmp(name + tl, "_count")));
            }
            if (!found)
                fail_msg("sample before its # TYPE: '%s'", buf);
        }
        line = end + 1;
    }
}

static void test_counters_and_gauges(void **state)
{
    (void)state;
    bnb_metrics_t *m = bnb__metrics_new();
    assert_non_null(m);
    bnb__metrics_add(m, "bearbnb_events_published_total", NULL, 1);
    bnb__metrics_add(m, "bearbnb_events_published_total", NULL, 2);
    bnb__metrics_add(m, "bearbnb_events_consumed_total", "plugin=\"room\"", 1);
    bnb__metrics_add(m, "bearbnb_events_consumed_total", "plugin=\"payment\"", 5);
    bnb__metrics_add(m, "bearbnb_events_consumed_total", "plugin=\"room\"", 0.5);
    bnb__metrics_set(m, "bearbnb_breaker_state", "service=\"payment\"", 1);
    bnb__metrics_set(m, "bearbnb_breaker_state", "service=\"payment\"", 2);
    bnb__metrics_set(m, "bearbnb_breaker_state", "service=\"room\"", 0);
    bnb__metrics_set(m, "bearbnb_ready", NULL, 1);
    size_t len = 0;
    char *t = bnb__metrics_render(m, &len);
    assert_non_null(t);
    check_format(t, len);
    assert_true(sample(t, "bearbnb_events_published_total", NULL) == 3);
    assert_true(sample(t, "bearbnb_events_consumed_total", "plugin=\"room\"") == 1.5);
    assert_true(sample(t, "bearbnb_events_consumed_total", "plugin=\"payment\"") == 5);
    assert_true(sample(t, "bearbnb_breaker_state", "service=\"payment\"") == 2); /* set, not added */
    assert_true(sample(t, "bearbnb_breaker_state", "service=\"room\"") == 0);
    assert_true(sample(t, "bearbnb_ready", NULL) == 1);
    assert_non_null(strstr(t, "# TYPE bearbnb_events_published_total counter\n"));
    assert_non_null(strstr(t, "# TYPE bearbnb_events_consumed_total counter\n"));
    assert_non_null(strstr(t, "# TYPE bearbnb_breaker_state gauge\n"));
    assert_non_null(strstr(t, "# TYPE bearbnb_ready gauge\n"));
    assert_null(strstr(t, "histogram")); /* no request yet */
    assert_true(isnan(sample(t, "bearbnb_events_consumed_total", "plugin=\"dashboard\"")));
    free(t);
    bnb__metrics_free(m);
    bnb__metrics_free(NULL);
}

static void test_histogram(void **state)
{
    (void)state;
    bnb_metrics_t *m = bnb__metrics_new();
    /* GET /rooms: 0.0003 s, 0.002 s, 0.07 s, 3 s, 60 s (past the last bucket) */
    static const double secs[] = {0.0003, 0.002, 0.07, 3, 60};
    for (size_t i = 0; i < 5; i++)
        bnb__metrics_http(m, "/rooms", "GET", i == 4 ? 500 : 200, secs[i]);
    bnb__metrics_http(m, "/rooms/{id}", "PATCH", 404, 0.01);
    size_t len;
    char *t = bnb__metrics_render(m, &len);
    assert_non_null(t);
    check_format(t, len);
    assert_non_null(strstr(t, "# TYPE bearbnb_http_request_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE bearbnb_http_requests_total counter\n"));
    assert_true(sample(t, "bearbnb_http_requests_total", "route=\"/rooms\",method=\"GET\",status=\"200\"") == 4);
    assert_true(sample(t, "bearbnb_http_requests_total", "route=\"/rooms\",method=\"GET\",status=\"500\"") == 1);
    assert_true(sample(t, "bearbnb_http_requests_total", "route=\"/rooms/{id}\",method=\"PATCH\",status=\"404\"") == 1);

    /* buckets are cumulative, non-decreasing, and +Inf equals _count */
    static const char *const le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                     "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};
    static const double want[] = {1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4};
    double prev = 0;
    for (size_t i = 0; i < 14; i++) {
        char labels[128];
        snprintf(labels, sizeof(labels), "route=\"/rooms\",method=\"GET\",le=\"%s\"", le[i]);
        double v = sample(t, "bearbnb_http_request_duration_seconds_bucket", labels);
        if (v != want[i])
            fail_msg("bucket le=%s: want %g, got %g", le[i], want[i], v);
        assert_true(v >= prev);
        prev = v;
    }
    double inf =
        sample(t, "bearbnb_http_request_duration_seconds_bucket", "route=\"/rooms\",method=\"GET\",le=\"+Inf\"");
    double count = sample(t, "bearbnb_http_request_duration_seconds_count", "route=\"/rooms\",method=\"GET\"");
    double sum = sample(t, "bearbnb_http_request_duration_seconds_sum", "route=\"/rooms\",method=\"GET\"");
    assert_true(inf == 5);
    assert_true(count == inf);
    assert_true(fabs(sum - (0.0003 + 0.002 + 0.07 + 3 + 60)) < 1e-6);
    /* the other route has its own series */
    assert_true(sample(t, "bearbnb_http_request_duration_seconds_count", "route=\"/rooms/{id}\",method=\"PATCH\"") ==
                1);
    assert_true(sample(t, "bearbnb_http_request_duration_seconds_bucket",
                       "route=\"/rooms/{id}\",method=\"PATCH\",le=\"0.005\"") == 0);
    assert_true(sample(t, "bearbnb_http_request_duration_seconds_bucket",
                       "route=\"/rooms/{id}\",method=\"PATCH\",le=\"0.01\"") == 1);
    free(t);
    bnb__metrics_free(m);
}

static void *count_many(void *arg)
{
    bnb_metrics_t *m = arg;
    for (int i = 0; i < 5000; i++) {
        bnb__metrics_add(m, "bearbnb_x_total", "plugin=\"t\"", 1);
        bnb__metrics_http(m, "/t", "GET", 200, 0.001);
        if (i % 500 == 0)
            free(bnb__metrics_render(m, &(size_t){0}));
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    bnb_metrics_t *m = bnb__metrics_new();
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_many, m), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    size_t len;
    char *s = bnb__metrics_render(m, &len);
    check_format(s, len);
    assert_true(sample(s, "bearbnb_x_total", "plugin=\"t\"") == 20000);
    assert_true(sample(s, "bearbnb_http_requests_total", "route=\"/t\",method=\"GET\",status=\"200\"") == 20000);
    assert_true(sample(s, "bearbnb_http_request_duration_seconds_count", "route=\"/t\",method=\"GET\"") == 20000);
    free(s);
    bnb__metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}

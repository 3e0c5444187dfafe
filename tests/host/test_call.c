/* host/gateway/call.c: host->call in process (the target's route handler on
 * the caller's thread, with the caller's identity and ids, role checks, a
 * copy of the body) and over HTTP (a loopback server, httpd_test.h: headers
 * forwarded, answer parsed, timeout), and the circuit breaker per target. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "host.h"
#include "httpd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const bnb_host_api_t *H = &bnb__host_api;

typedef struct fx {
    bnb_host_t h;
    bnb_inst_t *caller, *target;
} fx_t;

/* What the target's handlers saw. */
static struct {
    char id[32], q[32], user[32], role[32], method[8];
    json_t *body;
    int calls;
} seen;

static void get_thing(bnb_ctx_t *ctx, bnb_req_t *req)
{
    (void)ctx;
    seen.calls++;
    snprintf(seen.id, sizeof(seen.id), "%s", H->req_param(req, "id") ? H->req_param(req, "id") : "");
    snprintf(seen.q, sizeof(seen.q), "%s", H->req_query(req, "x") ? H->req_query(req, "x") : "");
    snprintf(seen.user, sizeof(seen.user), "%s", H->req_user(req) ? H->req_user(req) : "");
    snprintf(seen.role, sizeof(seen.role), "%s", H->req_role(req) ? H->req_role(req) : "");
    snprintf(seen.method, sizeof(seen.method), "%s", H->req_method(req));
    json_decref(seen.body);
    seen.body = H->req_body(req) ? json_deep_copy(H->req_body(req)) : NULL;
    H->respond_json(req, 200, json_pack("{s:s}", "id", seen.id));
}

static void post_thing(bnb_ctx_t *ctx, bnb_req_t *req)
{
    get_thing(ctx, req);
}

static void fail_thing(bnb_ctx_t *ctx, bnb_req_t *req)
{
    (void)ctx;
    seen.calls++;
    H->respond_problem(req, 503, NULL, "down for a while");
}

static bnb_inst_t *new_inst(fx_t *f, const char *name)
{
    bnb_inst_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->self.inst = c;
    c->host = &f->h;
    c->name = name;
    return c;
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->h.cfg = bnb__config_new();
    f->h.metrics = bnb__metrics_new();
    f->h.router = bnb__router_new();
    if (f->h.cfg == NULL || bnb__config_declare_host(f->h.cfg) != 0 || f->h.metrics == NULL || f->h.router == NULL)
        return -1;
    pthread_mutex_init(&f->h.breakers_mu, NULL);
    bnb__breaker_config_default(&f->h.breaker_cfg);
    f->h.breaker_cfg.minimum_calls = 2;
    f->h.breaker_cfg.window = 2;
    f->h.breaker_cfg.failure_rate = 50;
    f->h.breaker_cfg.wait_open_ms = 60000;
    f->h.call_timeout_ms = 1000;
    f->caller = new_inst(f, "caller");
    f->target = new_inst(f, "target");
    bnb_ctx_t *t = &f->target->self;
    assert_int_equal(H->route(t, "GET", "/things/{id}", BNB_ROLE_ANYONE, get_thing), 0);
    assert_int_equal(H->route(t, "POST", "/things", BNB_ROLE_HOST, post_thing), 0);
    assert_int_equal(H->route(t, "GET", "/internal/{id}", BNB_ROLE_SERVICE, get_thing), 0);
    assert_int_equal(H->route(t, "GET", "/failing", BNB_ROLE_ANYONE, fail_thing), 0);
    f->h.plugins = calloc(2, sizeof(bnb_inst_t *));
    f->h.plugins[0] = f->caller;
    f->h.plugins[1] = f->target;
    f->h.nplugins = 2;
    bnb__host = &f->h;
    memset(&seen, 0, sizeof(seen));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    for (size_t i = 0; i < f->h.nplugins; i++) {
        bnb__plugin_unregister(f->h.plugins[i]);
        free(f->h.plugins[i]);
    }
    free(f->h.plugins);
    for (size_t i = 0; i < f->h.nbreakers; i++)
        bnb__breaker_free(f->h.breakers[i].b);
    pthread_mutex_destroy(&f->h.breakers_mu);
    bnb__router_free(f->h.router);
    bnb__metrics_free(f->h.metrics);
    bnb__config_free(f->h.cfg);
    bnb__host = NULL;
    json_decref(seen.body);
    seen.body = NULL;
    free(f);
    return 0;
}

/* The caller's handler context: a guest's request with its ids. */
typedef struct caller_call {
    bnb_exec_t ex;
    bnb_ctx_t ctx;
} caller_call_t;

static void as_caller(fx_t *f, caller_call_t *c, const char *user, const char *role)
{
    memset(c, 0, sizeof(*c));
    c->ex.plugin = "caller";
    c->ex.user = user;
    c->ex.role = role;
    c->ex.bearer = user ? "tok-abc" : NULL;
    snprintf(c->ex.request_id, sizeof(c->ex.request_id), "rid-call");
    snprintf(c->ex.correlation_id, sizeof(c->ex.correlation_id), "corr-call");
    c->ctx = (bnb_ctx_t){.inst = f->caller, .exec = &c->ex};
    bnb__exec = &c->ex; /* as bnb__req_run sets it around the caller's handler */
}

static void test_in_process_call_runs_the_target_with_the_callers_identity(void **state)
{
    fx_t *f = *state;
    caller_call_t c;
    as_caller(f, &c, "gina", "guest");
    int status = 0;
    json_t *resp = NULL;
    assert_int_equal(H->call(&c.ctx, "target", "GET", "/things/7?x=y%20z", NULL, &status, &resp), 0);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(resp, "id")), "7");
    json_decref(resp);
    assert_int_equal(seen.calls, 1);
    assert_string_equal(seen.id, "7");
    assert_string_equal(seen.q, "y z");
    assert_string_equal(seen.user, "gina");
    assert_string_equal(seen.role, "guest");
    assert_string_equal(seen.method, "GET");
    assert_ptr_equal(bnb__exec, &c.ex); /* the caller's call again once the target returned */
    /* a body is copied, not taken */
    json_t *body = json_pack("{s:s}", "name", "n");
    as_caller(f, &c, "hank", "host");
    assert_int_equal(H->call(&c.ctx, "target", "POST", "/things", body, &status, &resp), 0);
    assert_int_equal(status, 200);
    json_decref(resp);
    assert_true(json_equal(seen.body, body));
    assert_int_equal(body->refcount, 1);
    json_decref(body);
    size_t len = 0;
    char *m = bnb__metrics_render(f->h.metrics, &len);
    assert_non_null(strstr(m, "bearbnb_calls_total{service=\"target\",outcome=\"success\"} 2"));
    free(m);
    bnb__exec = NULL;
}

static void test_in_process_call_checks_roles_and_routes(void **state)
{
    fx_t *f = *state;
    caller_call_t c;
    int status = 0;
    json_t *resp = NULL;
    json_t *body = json_object();
    as_caller(f, &c, "gina", "guest"); /* a host route */
    assert_int_equal(H->call(&c.ctx, "target", "POST", "/things", body, &status, &resp), 0);
    assert_int_equal(status, 403);
    json_decref(resp);
    as_caller(f, &c, NULL, NULL); /* anonymous */
    assert_int_equal(H->call(&c.ctx, "target", "POST", "/things", body, &status, &resp), 0);
    assert_int_equal(status, 401);
    json_decref(resp);
    json_decref(body);
    assert_int_equal(seen.calls, 0);
    /* a service route: any caller going through host->call */
    assert_int_equal(H->call(&c.ctx, "target", "GET", "/internal/1", NULL, &status, &resp), 0);
    assert_int_equal(status, 200);
    json_decref(resp);
    /* no such route / method */
    assert_int_equal(H->call(&c.ctx, "target", "GET", "/nothing", NULL, &status, &resp), 0);
    assert_int_equal(status, 404);
    assert_null(resp);
    assert_int_equal(H->call(&c.ctx, "target", "DELETE", "/things/1", NULL, &status, &resp), 0);
    assert_int_equal(status, 405);
    assert_int_equal(H->call(&c.ctx, "target", "GET", "no-slash", NULL, &status, &resp), BNB_EINVAL);
    bnb__exec = NULL;
}

/* A 5xx answer is a failure: the caller gets BNB_EAGAIN (take the fallback),
 * and after minimum_calls failures the breaker opens: the target is not
 * called any more. */
static void test_failures_open_the_breaker(void **state)
{
    fx_t *f = *state;
    caller_call_t c;
    as_caller(f, &c, "gina", "guest");
    int status = 0;
    json_t *resp = NULL;
    assert_int_equal(H->call(&c.ctx, "target", "GET", "/failing", NULL, &status, &resp), BNB_EAGAIN);
    assert_null(resp);
    assert_int_equal(H->call(&c.ctx, "target", "GET", "/failing", NULL, &status, &resp), BNB_EAGAIN);
    assert_int_equal(seen.calls, 2);
    assert_int_equal(H->call(&c.ctx, "target", "GET", "/things/1", NULL, &status, &resp), BNB_EAGAIN);
    assert_int_equal(seen.calls, 2); /* open: not called */
    size_t len = 0;
    char *m = bnb__metrics_render(f->h.metrics, &len);
    assert_non_null(strstr(m, "bearbnb_calls_total{service=\"target\",outcome=\"failure\"} 2"));
    assert_non_null(strstr(m, "bearbnb_calls_total{service=\"target\",outcome=\"rejected\"} 1"));
    assert_non_null(strstr(m, "bearbnb_breaker_state{service=\"target\"} 1"));
    free(m);
    /* after wait_open_ms (on the host clock) one trial call goes through and closes it */
    bnb__clock_advance(60000);
    assert_int_equal(H->call(&c.ctx, "target", "GET", "/things/1", NULL, &status, &resp), 0);
    assert_int_equal(status, 200);
    json_decref(resp);
    bnb__exec = NULL;
}

static void header_value(const char *req, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    const char *p = strcasestr(req, name);
    if (p == NULL)
        return;
    p += strlen(name);
    const char *e = strstr(p, "\r\n");
    snprintf(out, outlen, "%.*s", (int)(e ? e - p : (long)strlen(p)), p);
}

/* Not loaded here: over HTTP to services.<name>.url, with the caller's token,
 * request id and correlation id; the JSON answer comes back parsed. */
static void test_remote_call_over_http(void **state)
{
    fx_t *f = *state;
    tsrv_t s;
    assert_int_equal(tsrv_start(&s), 0);
    tsrv_answer(&s, 201, "application/json", NULL, "{\"ok\":true}");
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", s.port);
    bnb__config_set(f->h.cfg, "services.payment.url", url, "test");
    caller_call_t c;
    as_caller(f, &c, "gina", "guest");
    int status = 0;
    json_t *resp = NULL, *body = json_pack("{s:i}", "amount", 5);
    assert_int_equal(H->call(&c.ctx, "payment", "POST", "/payments?x=1", body, &status, &resp), 0);
    assert_int_equal(status, 201);
    assert_true(json_is_true(json_object_get(resp, "ok")));
    json_decref(resp);
    json_decref(body);
    char *got = tsrv_last(&s), v[128];
    assert_true(strncmp(got, "POST /payments?x=1 HTTP/1.1\r\n", 29) == 0);
    header_value(got, "\r\nAuthorization: ", v, sizeof(v));
    assert_string_equal(v, "Bearer tok-abc");
    header_value(got, "\r\nX-Request-Id: ", v, sizeof(v));
    assert_string_equal(v, "rid-call");
    header_value(got, "\r\nX-Correlation-Id: ", v, sizeof(v));
    assert_string_equal(v, "corr-call");
    header_value(got, "\r\nContent-Type: ", v, sizeof(v));
    assert_string_equal(v, "application/json");
    assert_non_null(strstr(got, "\r\n\r\n{\"amount\":5}"));
    assert_null(strstr(got, "X-Bnb-Gateway")); /* no secret configured: not signed */
    free(got);
    /* slower than call.timeout_ms: BNB_ETIMEDOUT */
    s.delay_ms = 600;
    f->h.call_timeout_ms = 150;
    assert_int_equal(H->call(&c.ctx, "payment", "GET", "/payments/1", NULL, &status, &resp), BNB_ETIMEDOUT);
    /* nowhere to send it: BNB_EAGAIN */
    assert_int_equal(H->call(&c.ctx, "dashboard", "GET", "/x", NULL, &status, &resp), BNB_EAGAIN);
    tsrv_stop(&s);
    bnb__exec = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_in_process_call_runs_the_target_with_the_callers_identity, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_in_process_call_checks_roles_and_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_open_the_breaker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remote_call_over_http, setup, teardown),
    };
    return cmocka_run_group_tests_name("host/call", tests, NULL, NULL);
}

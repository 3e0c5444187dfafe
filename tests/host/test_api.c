/* host/core/api.c: the per-call context (plugin-api/bnb_plugin.h, "Contexts").
 * A handler gets a bnb_ctx_t of its own; event_reject and set_correlation act
 * on the call whose context they are given, never on whatever the thread
 * happens to be doing, and never through the instance's context. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "host.h"

#include <stdlib.h>
#include <string.h>

static const bnb_host_api_t *H = &bnb__host_api;

typedef struct fx {
    bnb_host_t h;
    bnb_inst_t *inst;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->h.router = bnb__router_new();
    f->h.cfg = bnb__config_new();
    f->h.metrics = bnb__metrics_new();
    f->inst = calloc(1, sizeof(*f->inst));
    if (f->h.router == NULL || f->h.cfg == NULL || f->h.metrics == NULL || f->inst == NULL)
        return -1;
    f->inst->self.inst = f->inst;
    f->inst->host = &f->h;
    f->inst->name = "tplug";
    bnb__host = &f->h;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bnb__router_free(f->h.router);
    bnb__config_free(f->h.cfg);
    bnb__metrics_free(f->h.metrics);
    bnb__host = NULL;
    free(f->inst);
    free(f);
    return 0;
}

static void test_event_reject_acts_on_the_given_call(void **state)
{
    fx_t *f = *state;
    bnb_exec_t mine = {0}, other = {0};
    bnb_ctx_t call = {.inst = f->inst, .exec = &mine};
    bnb__exec = &other; /* the thread is busy with another call */
    H->event_reject(&call, "room %s is gone (%d)", "r1", 7);
    assert_string_equal(mine.reject_reason, "room r1 is gone (7)");
    assert_string_equal(other.reject_reason, "");
    /* the instance's context is not a delivery: nothing is recorded anywhere */
    H->event_reject(&f->inst->self, "not a handler");
    assert_string_equal(mine.reject_reason, "room r1 is gone (7)");
    assert_string_equal(other.reject_reason, "");
    bnb__exec = NULL;
}

static void test_set_correlation_acts_on_the_given_call(void **state)
{
    fx_t *f = *state;
    bnb_exec_t a = {0}, b = {0};
    bnb_ctx_t ca = {.inst = f->inst, .exec = &a}, cb = {.inst = f->inst, .exec = &b};
    bnb__exec = &b;
    H->set_correlation(&ca, "res-a");
    assert_string_equal(a.correlation_id, "res-a");
    assert_string_equal(b.correlation_id, "");
    H->set_correlation(&cb, "res-b");
    assert_string_equal(a.correlation_id, "res-a");
    assert_string_equal(b.correlation_id, "res-b");
    H->set_correlation(&f->inst->self, "ignored");
    H->set_correlation(&ca, NULL);
    assert_string_equal(a.correlation_id, "res-a");
    assert_string_equal(b.correlation_id, "res-b");
    bnb__exec = NULL;
}

/* What the route handler below saw. */
static struct {
    bnb_ctx_t *ctx;
    bnb_inst_t *inst;
    void *userdata;
    const char *name;
} seen;

static void handler(bnb_ctx_t *ctx, bnb_req_t *req)
{
    seen.ctx = ctx;
    seen.inst = ctx->inst;
    seen.userdata = H->userdata(ctx);
    seen.name = H->name(ctx);
    H->set_correlation(ctx, "from-handler");
    H->respond_empty(req, 204);
}

/* bnb__req_run gives the handler a context of this request (not the
 * instance's), through which the plugin's userdata and name are reached. */
static void test_route_handler_gets_a_call_context(void **state)
{
    fx_t *f = *state;
    int ud = 42;
    H->set_userdata(&f->inst->self, &ud);
    bnb_route_entry_t e = {.ctx = f->inst, .who = BNB_ROLE_ANYONE, .fn = handler, .pattern = "/t", .method = "GET"};
    bnb_req_t r;
    memset(&r, 0, sizeof(r));
    r.ctx = f->inst;
    r.route = &e;
    memset(&seen, 0, sizeof(seen));
    bnb__req_run(&r);
    assert_int_equal(r.status, 204);
    assert_non_null(seen.ctx);
    assert_ptr_not_equal(seen.ctx, &f->inst->self);
    assert_ptr_equal(seen.inst, f->inst);
    assert_ptr_equal(seen.userdata, &ud);
    assert_string_equal(seen.name, "tplug");
    assert_string_equal(r.exec.correlation_id, "from-handler");
    assert_null(bnb__exec); /* restored after the call */
    bnb__req_free_parts(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_event_reject_acts_on_the_given_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_correlation_acts_on_the_given_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_handler_gets_a_call_context, setup, teardown),
    };
    return cmocka_run_group_tests_name("host/api", tests, NULL, NULL);
}

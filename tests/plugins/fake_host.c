#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fake_host.h"

#include <stdio.h>
#include <string.h>

fake_host_t FH;

void fake_host_reset(const char *name)
{
    memset(&FH, 0, sizeof(FH));
    FH.store.events = json_array();
    FH.store.max_which = 2;
    FH.name = name;
}

void fake_host_free(void)
{
    for (int i = 0; i < FH.store.ndocs; i++) {
        json_decref(FH.store.docs[i].body);
        json_decref(FH.store.docs[i].applied);
    }
    json_decref(FH.store.events);
    FH.store.events = NULL;
}

fake_doc_t *fake_find_doc(const char *coll, const char *id)
{
    for (int i = 0; i < FH.store.ndocs; i++)
        if (FH.store.docs[i].body && strcmp(FH.store.docs[i].coll, coll) == 0 && strcmp(FH.store.docs[i].id, id) == 0)
            return &FH.store.docs[i];
    return NULL;
}

bnb_route_fn fake_route(const char *method, const char *pattern, bnb_role_t *who)
{
    for (int i = 0; i < FH.nroutes; i++)
        if (strcmp(FH.routes[i].method, method) == 0 && strcmp(FH.routes[i].pattern, pattern) == 0) {
            if (who)
                *who = FH.routes[i].who;
            return FH.routes[i].fn;
        }
    return NULL;
}

bnb_event_fn fake_handler(const char *topic)
{
    for (int i = 0; i < FH.nsubs; i++)
        if (strcmp(FH.subs[i].topic, topic) == 0)
            return FH.subs[i].fn;
    return NULL;
}

/* ---- the host API ----------------------------------------------------------- */

static int f_route(bnb_ctx_t *ctx, const char *method, const char *pattern, bnb_role_t who, bnb_route_fn fn)
{
    (void)ctx;
    assert_true(FH.nroutes < FAKE_MAX_ROUTES);
    FH.routes[FH.nroutes++] = (fake_route_t){method, pattern, who, fn};
    return 0;
}

static int f_subscribe(bnb_ctx_t *ctx, const char *topic, bnb_event_fn fn)
{
    (void)ctx;
    assert_true(FH.nsubs < FAKE_MAX_SUBS);
    FH.subs[FH.nsubs++] = (fake_sub_t){topic, fn};
    return 0;
}

static void f_set_userdata(bnb_ctx_t *ctx, void *d)
{
    (void)ctx;
    FH.userdata = d;
}

static void *f_userdata(bnb_ctx_t *ctx)
{
    (void)ctx;
    return FH.userdata;
}

static const char *f_config(bnb_ctx_t *ctx, const char *k)
{
    (void)ctx;
    (void)k;
    return NULL;
}

static const char *f_name(bnb_ctx_t *ctx)
{
    (void)ctx;
    return FH.name;
}

static const char *f_req_method(bnb_req_t *r)
{
    return r->method;
}

static const char *f_req_param(bnb_req_t *r, const char *n)
{
    return strcmp(n, "id") == 0 ? r->id : NULL;
}

static const char *f_req_query(bnb_req_t *r, const char *n)
{
    return strcmp(n, "city") == 0 ? r->city : NULL;
}

static const json_t *f_req_body(bnb_req_t *r)
{
    return r->body;
}

static const char *f_req_user(bnb_req_t *r)
{
    return r->user;
}

static const char *f_req_role(bnb_req_t *r)
{
    return r->role;
}

static const char *f_req_header(bnb_req_t *r, const char *n)
{
    (void)r;
    (void)n;
    return NULL;
}

static void f_respond_json(bnb_req_t *r, int status, json_t *body)
{
    assert_false(r->answered); /* exactly one answer */
    r->answered = 1;
    r->status = status;
    r->json = body;
}

static void f_respond_problem(bnb_req_t *r, int status, const char *title, const char *fmt, ...)
{
    va_list ap;
    (void)title;
    assert_false(r->answered);
    r->answered = 1;
    r->status = status;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
    va_end(ap);
}

static void f_respond_empty(bnb_req_t *r, int status)
{
    assert_false(r->answered);
    r->answered = 1;
    r->status = status;
}

static void f_respond_header(bnb_req_t *r, const char *n, const char *v)
{
    (void)r;
    (void)n;
    (void)v;
}

static bnb_store_t *f_store(bnb_ctx_t *ctx)
{
    (void)ctx;
    return &FH.store;
}

static void check_coll(bnb_store_t *st, const char *coll)
{
    assert_ptr_equal(st, &FH.store);
    if (FH.store.only_coll)
        assert_string_equal(coll, FH.store.only_coll);
}

static int f_store_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    check_coll(st, coll);
    fake_doc_t *d = fake_find_doc(coll, id);
    if (!d)
        return BNB_ENOENT;
    *body = json_deep_copy(d->body);
    *version = d->version;
    return 0;
}

static int f_store_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    check_coll(st, coll);
    assert_true(which >= 0 && which <= FH.store.max_which);
    *out = json_array();
    for (int i = 0; i < FH.store.ndocs; i++) {
        fake_doc_t *d = &FH.store.docs[i];
        if (!d->body || strcmp(d->coll, coll) != 0)
            continue;
        if ((which == 1 && strcmp(d->key1, value) != 0) || (which == 2 && strcmp(d->key2, value) != 0))
            continue;
        json_array_append_new(
            *out, json_pack("{s:s, s:I, s:O}", "id", d->id, "version", (json_int_t)d->version, "body", d->body));
    }
    return 0;
}

static int f_store_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_event_out_t *ev, size_t nev,
                          const char *applied, int64_t *newv)
{
    struct bnb_store *S = &FH.store;
    check_coll(st, w->coll);
    if (S->ops)
        assert_true(S->ops & (1u << w->op));
    if (S->no_events) {
        assert_int_equal(nev, 0);
        assert_null(ev);
    }
    fake_doc_t *d = fake_find_doc(w->coll, w->id);
    S->commits++;
    if (!applied)
        S->commits_without_event_id++;
    if (S->fail_eexist > 0 && (!S->fail_coll || strcmp(w->coll, S->fail_coll) == 0)) {
        S->fail_eexist--;
        return BNB_EEXIST;
    }
    if (d && S->conflicts > 0) { /* another worker committed meanwhile */
        S->conflicts--;
        d->version++;
    }
    if (d && applied) {
        size_t i;
        json_t *v;
        json_array_foreach(d->applied, i, v) if (strcmp(json_string_value(v), applied) == 0) return BNB_EALREADY;
    }
    if (w->expect_version == 0 && d)
        return BNB_EEXIST;
    if (w->expect_version > 0 && !d)
        return BNB_ENOENT;
    if (w->expect_version > 0 && d->version != w->expect_version)
        return BNB_EEXIST;
    if (!d) {
        assert_true(w->op != BNB_WRITE_TOUCH);
        assert_true(S->ndocs < FAKE_MAX_DOCS);
        d = &S->docs[S->ndocs++];
        memset(d, 0, sizeof(*d));
        snprintf(d->coll, sizeof(d->coll), "%s", w->coll);
        snprintf(d->id, sizeof(d->id), "%s", w->id);
        d->applied = json_array();
    }
    if (w->op == BNB_WRITE_DELETE) {
        json_decref(d->body);
        d->body = NULL;
        json_decref(d->applied);
        d->applied = NULL;
        d->coll[0] = '\0';
    } else {
        if (w->op == BNB_WRITE_PUT) {
            assert_true(json_is_object(w->body));
            json_decref(d->body);
            d->body = json_deep_copy(w->body);
        }
        d->version++;
        snprintf(d->key1, sizeof(d->key1), "%s", w->key1 ? w->key1 : "");
        snprintf(d->key2, sizeof(d->key2), "%s", w->key2 ? w->key2 : "");
        if (applied)
            json_array_append_new(d->applied, json_string(applied));
    }
    for (size_t i = 0; i < nev; i++)
        json_array_append_new(S->events, json_pack("{s:s, s:s, s:s, s:O}", "type", ev[i].type, "topic", ev[i].topic,
                                                   "subject", ev[i].subject, "data", ev[i].data));
    if (newv)
        *newv = d->version;
    return 0;
}

static void f_event_reject(bnb_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    (void)ctx;
    va_start(ap, fmt);
    vsnprintf(FH.reject, sizeof(FH.reject), fmt, ap);
    va_end(ap);
}

static int f_call(bnb_ctx_t *ctx, const char *s, const char *m, const char *p, const json_t *b, int *st, json_t **r)
{
    (void)ctx, (void)s, (void)m, (void)p, (void)b, (void)st, (void)r;
    return BNB_EAGAIN;
}

static void f_log(bnb_ctx_t *ctx, const char *level, const char *fmt, ...)
{
    (void)ctx;
    (void)level;
    (void)fmt;
}

static void f_count(bnb_ctx_t *ctx, const char *name, double d)
{
    (void)ctx;
    (void)name;
    (void)d;
}

static void f_set_correlation(bnb_ctx_t *ctx, const char *c)
{
    (void)ctx;
    (void)c;
}

static void f_uuid(char out[37])
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", ++FH.uuid_counter);
}

static int64_t f_now_ms(void)
{
    return 1795472046123LL;
}

const bnb_host_api_t fake_host_api = {
    .abi_version = BNB_ABI_VERSION,
    .size = sizeof(bnb_host_api_t),
    .route = f_route,
    .subscribe = f_subscribe,
    .set_userdata = f_set_userdata,
    .userdata = f_userdata,
    .config = f_config,
    .name = f_name,
    .req_method = f_req_method,
    .req_param = f_req_param,
    .req_query = f_req_query,
    .req_body = f_req_body,
    .req_user = f_req_user,
    .req_role = f_req_role,
    .req_header = f_req_header,
    .respond_json = f_respond_json,
    .respond_problem = f_respond_problem,
    .respond_empty = f_respond_empty,
    .respond_header = f_respond_header,
    .store = f_store,
    .store_get = f_store_get,
    .store_list = f_store_list,
    .store_commit = f_store_commit,
    .event_reject = f_event_reject,
    .call = f_call,
    .log = f_log,
    .count = f_count,
    .set_correlation = f_set_correlation,
    .uuid = f_uuid,
    .now_ms = f_now_ms,
};

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fake_host.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
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
        json_decref(FH.store.docs[i].claims);
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

/* Decode %XX and '+' of s[0..len) into out (size len+1); -1 when broken. */
static int fake_decode(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            unsigned v;
            if (i + 2 >= len || !isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2]) ||
                sscanf(s + i + 1, "%2x", &v) != 1)
                return -1;
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    return 0;
}

static const char *f_req_query(bnb_req_t *r, const char *n)
{
    static __thread char val[1024];
    if (strcmp(n, "city") == 0 && r->city)
        return r->city;
    for (const char *p = r->query; p && *p;) {
        const char *amp = strchr(p, '&'), *eq;
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        char key[256];
        eq = memchr(p, '=', seg);
        size_t kl = eq ? (size_t)(eq - p) : seg;
        if (kl < sizeof(key) && fake_decode(p, kl, key) == 0 && strcmp(key, n) == 0) {
            size_t vl = eq ? seg - kl - 1 : 0;
            if (vl >= sizeof(val) || (eq && fake_decode(eq + 1, vl, val) != 0))
                return NULL;
            if (!eq)
                val[0] = '\0';
            return val;
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    return NULL;
}

static const char *f_req_query_string(bnb_req_t *r)
{
    return r->query;
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
    FH.store.gets++;
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
        json_decref(d->claims);
        d->claims = NULL;
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

/* ---- storage v2 (ABI 1.1), in memory: enough semantics for unit tests ------- */

static const bnb_coll_def_t *fake_coll(const char *coll)
{
    for (int i = 0; i < FH.store.ncolls; i++)
        if (strcmp(FH.store.colls[i]->name, coll) == 0)
            return FH.store.colls[i];
    return NULL;
}

static const bnb_field_def_t *fake_field(const bnb_coll_def_t *c, const char *name)
{
    for (size_t i = 0; c && i < c->nfields; i++)
        if (strcmp(c->fields[i].name, name) == 0)
            return &c->fields[i];
    return NULL;
}

static int f_store_define(bnb_ctx_t *ctx, const bnb_coll_def_t *colls, size_t n)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        if (fake_coll(colls[i].name))
            continue;
        assert_true(FH.store.ncolls < FAKE_MAX_COLLS);
        for (size_t k = 0; k < colls[i].nindexes; k++)
            for (int f = 0; colls[i].indexes[k].fields[f]; f++)
                assert_non_null(fake_field(&colls[i], colls[i].indexes[k].fields[f])); /* indexes declared fields */
        FH.store.colls[FH.store.ncolls++] = &colls[i];
    }
    return 0;
}

/* The declared field `name` of body as a JSON value of its type, or NULL (SQL NULL). */
static const json_t *fake_value(const bnb_field_def_t *f, const json_t *body)
{
    const json_t *v = json_object_get(body, f->name);
    if (f->type == BNB_FIELD_STR ? json_is_string(v) : json_is_integer(v))
        return v;
    return NULL;
}

/* <0, 0, >0 as a sorts before / with / after b (NULL first). */
static int fake_cmp(const json_t *a, const json_t *b)
{
    if (!a || !b)
        return !a && !b ? 0 : !a ? -1 : 1;
    if (json_is_string(a))
        return strcmp(json_string_value(a), json_string_value(b));
    json_int_t x = json_integer_value(a), y = json_integer_value(b);
    return x < y ? -1 : x > y;
}

static const bnb_query_t *fake_q; /* the query being sorted */

static int fake_order(const void *pa, const void *pb)
{
    const fake_doc_t *a = *(fake_doc_t *const *)pa, *b = *(fake_doc_t *const *)pb;
    int c = 0;
    if (fake_q->order_by) {
        const bnb_field_def_t *f = fake_field(fake_coll(fake_q->coll), fake_q->order_by);
        c = fake_cmp(fake_value(f, a->body), fake_value(f, b->body));
    }
    if (c == 0)
        c = strcmp(a->id, b->id);
    return fake_q->descending ? -c : c;
}

static int f_store_query(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next)
{
    const bnb_coll_def_t *c = fake_coll(q->coll);
    const bnb_field_def_t *of = NULL;
    fake_doc_t **rows = NULL;
    json_t *after = NULL, *after_val = NULL;
    const char *after_id = NULL;
    size_t n = 0, out = 0;

    check_coll(st, q->coll);
    *items = NULL;
    *next = NULL;
    FH.store.queries++;
    if (q->limit > FH.store.max_limit)
        FH.store.max_limit = q->limit;
    if (!c || q->limit < 1 || q->limit > 1000)
        return BNB_EINVAL;
    if (q->order_by && !(of = fake_field(c, q->order_by)))
        return BNB_EINVAL;
    for (size_t i = 0; i < q->nconds; i++) {
        const bnb_field_def_t *f = fake_field(c, q->conds[i].field);
        if (!f || (f->type == BNB_FIELD_STR) != (q->conds[i].str != NULL))
            return BNB_EINVAL;
    }
    if (q->cursor) { /* "fake:" + JSON [order value, id] */
        if (strncmp(q->cursor, "fake:", 5) != 0 || !(after = json_loads(q->cursor + 5, 0, NULL)) ||
            !json_is_array(after) || json_array_size(after) != 2 || !json_is_string(json_array_get(after, 1))) {
            json_decref(after);
            return BNB_EINVAL;
        }
        after_val = json_array_get(after, 0);
        after_id = json_string_value(json_array_get(after, 1));
        if (json_is_null(after_val))
            after_val = NULL;
    }
    rows = calloc(FAKE_MAX_DOCS, sizeof(*rows));
    assert_non_null(rows);
    for (int i = 0; i < FH.store.ndocs; i++) {
        fake_doc_t *d = &FH.store.docs[i];
        int ok = d->body && strcmp(d->coll, q->coll) == 0;
        for (size_t k = 0; ok && k < q->nconds; k++) {
            const bnb_cond_t *cd = &q->conds[k];
            const json_t *v = fake_value(fake_field(c, cd->field), d->body);
            json_t *want = cd->str ? json_string(cd->str) : json_integer(cd->num);
            int r = v ? fake_cmp(v, want) : 0;
            ok = v && (cd->op == BNB_Q_EQ   ? r == 0
                       : cd->op == BNB_Q_LT ? r < 0
                       : cd->op == BNB_Q_LE ? r <= 0
                       : cd->op == BNB_Q_GT ? r > 0
                                            : r >= 0);
            json_decref(want);
        }
        if (ok && after_id) { /* strictly after the cursor in the query's order */
            int r = of ? fake_cmp(fake_value(of, d->body), after_val) : 0;
            if (r == 0)
                r = strcmp(d->id, after_id);
            ok = q->descending ? r < 0 : r > 0;
        }
        if (ok)
            rows[n++] = d;
    }
    fake_q = q;
    qsort(rows, n, sizeof(*rows), fake_order);
    *items = json_array();
    for (size_t i = 0; i < n && out < q->limit; i++, out++)
        json_array_append_new(*items, json_pack("{s:s, s:I, s:O}", "id", rows[i]->id, "version",
                                                (json_int_t)rows[i]->version, "body", rows[i]->body));
    FH.store.query_rows += (int)out;
    if (out < n) {
        const fake_doc_t *last = rows[out - 1];
        json_t *k = json_pack("[O?, s]", of ? fake_value(of, last->body) : NULL, last->id);
        char *txt = json_dumps(k, JSON_COMPACT);
        *next = malloc(strlen(txt) + 6);
        sprintf(*next, "fake:%s", txt);
        free(txt);
        json_decref(k);
    }
    json_decref(after);
    free(rows);
    return 0;
}

static int f_store_commit2(bnb_store_t *st, const bnb_commit_t *c, int64_t *newv)
{
    const bnb_coll_def_t *def = fake_coll(c->coll);
    fake_doc_t *self = fake_find_doc(c->coll, c->id);
    check_coll(st, c->coll);
    if (c->op == BNB_WRITE_PUT && def) { /* unique indexes */
        for (size_t k = 0; k < def->nindexes; k++) {
            const bnb_index_def_t *ix = &def->indexes[k];
            if (!ix->unique)
                continue;
            for (int i = 0; i < FH.store.ndocs; i++) {
                fake_doc_t *d = &FH.store.docs[i];
                int same = d->body && d != self && strcmp(d->coll, c->coll) == 0;
                for (int f = 0; same && ix->fields[f]; f++) {
                    const bnb_field_def_t *fd = fake_field(def, ix->fields[f]);
                    const json_t *a = fake_value(fd, d->body), *b = fake_value(fd, c->body);
                    same = a && b && fake_cmp(a, b) == 0;
                }
                if (same)
                    return BNB_ETAKEN;
            }
        }
    }
    if (c->set_claims && c->op != BNB_WRITE_DELETE) { /* claims held by another document */
        for (size_t k = 0; k < c->nclaims; k++)
            for (int i = 0; i < FH.store.ndocs; i++) {
                fake_doc_t *d = &FH.store.docs[i];
                size_t j;
                json_t *v;
                if (!d->body || d == self || !d->claims)
                    continue;
                json_array_foreach(d->claims, j,
                                   v) if (strcmp(json_string_value(v), c->claims[k]) == 0) return BNB_ETAKEN;
            }
    }
    bnb_event_out_t *ev = NULL;
    if (c->nevents) {
        ev = calloc(c->nevents, sizeof(*ev));
        assert_non_null(ev);
        memcpy(ev, c->events, c->nevents * sizeof(*ev));
    }
    bnb_write_t w = {.op = c->op, .coll = c->coll, .id = c->id, .expect_version = c->expect_version, .body = c->body};
    int rc = f_store_commit(st, &w, ev, c->nevents, c->applied_event_id, newv);
    free(ev);
    if (rc == 0 && c->set_claims && c->op != BNB_WRITE_DELETE) {
        fake_doc_t *d = fake_find_doc(c->coll, c->id);
        json_decref(d->claims);
        d->claims = json_array();
        for (size_t k = 0; k < c->nclaims; k++)
            json_array_append_new(d->claims, json_string(c->claims[k]));
    }
    return rc;
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
    .store_define = f_store_define,
    .store_query = f_store_query,
    .store_commit2 = f_store_commit2,
    .req_query_string = f_req_query_string,
};

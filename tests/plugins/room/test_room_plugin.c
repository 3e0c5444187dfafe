/*
 * Unit tests of plugins/room/room.c against a fake host (in-memory store
 * with versions, applied-event marks and an outbox; captured responses).
 * The real host is exercised by tests/e2e/rooms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const bnb_plugin_t bnb_plugin;

/* ---- fake store --------------------------------------------------------------- */

#define MAXDOCS   64
#define MAXEVENTS 64

typedef struct doc {
    char coll[32], id[64];
    json_t *body;
    int64_t version;
    json_t *applied; /* array of event ids */
    char key1[64], key2[128];
} doc_t;

struct bnb_store {
    doc_t docs[MAXDOCS];
    int ndocs;
    json_t *events;  /* [{type, topic, subject, data}] */
    int fail_eexist; /* next N commits to rooms answer BNB_EEXIST */
    int commits;
};

struct bnb_req {
    const char *method;
    const char *id;
    const char *city;
    json_t *body;
    const char *user, *role;
    int status;
    json_t *json;
    char detail[512];
    int answered;
};

struct bnb_ctx {
    int dummy;
};

typedef struct route {
    const char *method, *pattern;
    bnb_role_t who;
    bnb_route_fn fn;
} route_t;

static struct bnb_store S;
static struct bnb_ctx CTX;
static route_t routes[16];
static int nroutes;
static bnb_event_fn resv_handler;
static char reject_reason[256];
static int uuid_counter;

static doc_t *find_doc(const char *coll, const char *id)
{
    for (int i = 0; i < S.ndocs; i++)
        if (S.docs[i].body && strcmp(S.docs[i].coll, coll) == 0 && strcmp(S.docs[i].id, id) == 0)
            return &S.docs[i];
    return NULL;
}

static int f_route(bnb_ctx_t *ctx, const char *method, const char *pattern, bnb_role_t who, bnb_route_fn fn)
{
    (void)ctx;
    routes[nroutes++] = (route_t){method, pattern, who, fn};
    return 0;
}

static int f_subscribe(bnb_ctx_t *ctx, const char *topic, bnb_event_fn fn)
{
    (void)ctx;
    assert_string_equal(topic, "bearbnb.reservation");
    resv_handler = fn;
    return 0;
}

static void f_set_userdata(bnb_ctx_t *ctx, void *d)
{
    (void)ctx;
    (void)d;
}

static void *f_userdata(bnb_ctx_t *ctx)
{
    (void)ctx;
    return NULL;
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
    return "room";
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
    assert_false(r->answered);
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
    return &S;
}

static int f_store_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    (void)st;
    doc_t *d = find_doc(coll, id);
    if (!d)
        return BNB_ENOENT;
    *body = json_deep_copy(d->body);
    *version = d->version;
    return 0;
}

static int f_store_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    (void)st;
    *out = json_array();
    for (int i = 0; i < S.ndocs; i++) {
        doc_t *d = &S.docs[i];
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
    (void)st;
    doc_t *d = find_doc(w->coll, w->id);
    S.commits++;
    if (S.fail_eexist > 0 && strcmp(w->coll, "rooms") == 0) {
        S.fail_eexist--;
        return BNB_EEXIST;
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
        assert_true(S.ndocs < MAXDOCS);
        d = &S.docs[S.ndocs++];
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
        json_array_append_new(S.events, json_pack("{s:s, s:s, s:s, s:O}", "type", ev[i].type, "topic", ev[i].topic,
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
    vsnprintf(reject_reason, sizeof(reject_reason), fmt, ap);
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
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", ++uuid_counter);
}

static int64_t f_now_ms(void)
{
    return 1795472046123LL;
}

static const bnb_host_api_t API = {
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

/* ---- driving the plugin ---------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    memset(&S, 0, sizeof(S));
    S.events = json_array();
    nroutes = 0;
    uuid_counter = 0;
    resv_handler = NULL;
    assert_int_equal(bnb_plugin.abi_version, BNB_ABI_VERSION);
    assert_string_equal(bnb_plugin.name, "room");
    return bnb_plugin.init(&CTX, &API);
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < S.ndocs; i++) {
        json_decref(S.docs[i].body);
        json_decref(S.docs[i].applied);
    }
    json_decref(S.events);
    return 0;
}

/* Call the route registered for (method, pattern). The response body (if
 * any) is returned, caller decrefs; *status gets the status. */
static json_t *call(const char *method, const char *pattern, const char *id, const char *user, const char *role,
                    const char *body, int *status, char *detail)
{
    struct bnb_req r = {.method = method, .id = id, .user = user, .role = role};
    if (body) {
        r.body = json_loads(body, 0, NULL);
        assert_non_null(r.body);
    }
    for (int i = 0; i < nroutes; i++)
        if (strcmp(routes[i].method, method) == 0 && strcmp(routes[i].pattern, pattern) == 0) {
            routes[i].fn(&CTX, &r);
            break;
        }
    assert_true(r.answered);
    json_decref(r.body);
    *status = r.status;
    if (detail)
        strcpy(detail, r.detail);
    return r.json;
}

static const json_t *last_event(const char *type)
{
    size_t n = json_array_size(S.events);
    assert_true(n > 0);
    const json_t *e = json_array_get(S.events, n - 1);
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    assert_string_equal(json_string_value(json_object_get(e, "topic")), "bearbnb.room");
    return json_object_get(e, "data");
}

static char *create(const char *user)
{
    int st;
    json_t *room = call(
        "POST", "/rooms", NULL, user, "host",
        "{\"name\":\"Den\",\"description\":\"d\",\"city\":\"Bern\",\"pricePerNight\":100,\"capacity\":2}", &st, NULL);
    assert_int_equal(st, 201);
    char *id = strdup(json_string_value(json_object_get(room, "id")));
    json_decref(room);
    return id;
}

static void routes_registered(void **state)
{
    (void)state;
    assert_int_equal(nroutes, 8);
    assert_non_null(resv_handler);
    for (int i = 0; i < nroutes; i++) {
        if (strcmp(routes[i].method, "POST") == 0 && strcmp(routes[i].pattern, "/rooms") == 0)
            assert_int_equal(routes[i].who, BNB_ROLE_HOST);
        if (strcmp(routes[i].pattern, "/rooms/{id}/reviews") == 0 && strcmp(routes[i].method, "POST") == 0)
            assert_int_equal(routes[i].who, BNB_ROLE_GUEST);
        if (strcmp(routes[i].method, "GET") == 0)
            assert_int_equal(routes[i].who, BNB_ROLE_ANYONE);
    }
}

static void create_publishes_registered(void **state)
{
    (void)state;
    int st;
    char detail[512];
    char *id = create("alice");
    assert_int_equal(json_array_size(S.events), 1);
    const json_t *d = last_event("RoomRegistered");
    assert_string_equal(json_string_value(json_object_get(d, "id")), id);
    assert_string_equal(json_string_value(json_object_get(d, "hostId")), "alice");
    assert_int_equal(json_integer_value(json_object_get(d, "version")), 1);
    assert_int_equal(json_object_size(d), 12);
    json_t *got = call("GET", "/rooms/{id}", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_true(json_equal(got, d));
    json_decref(got);
    /* invalid: nothing committed */
    int commits = S.commits;
    json_decref(call("POST", "/rooms", NULL, "alice", "host", "{\"name\":\"x\"}", &st, detail));
    assert_int_equal(st, 400);
    assert_non_null(strstr(detail, "description"));
    assert_int_equal(S.commits, commits);
    free(id);
}

static void patch_and_delete(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    json_decref(call("PATCH", "/rooms/{id}", id, "bob", "host", "{\"name\":\"B\"}", &st, NULL));
    assert_int_equal(st, 403);
    assert_int_equal(json_array_size(S.events), 1);
    json_t *p = call("PATCH", "/rooms/{id}", id, "alice", "host", "{\"name\":\"B\",\"capacity\":5}", &st, NULL);
    assert_int_equal(st, 200);
    assert_int_equal(json_integer_value(json_object_get(p, "version")), 2);
    assert_true(json_equal(p, last_event("RoomModified")));
    json_decref(p);
    /* no-op patch: no event */
    json_decref(call("PATCH", "/rooms/{id}", id, "alice", "host", "{\"name\":\"B\"}", &st, NULL));
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(S.events), 2);

    json_decref(call("DELETE", "/rooms/{id}", id, "bob", "host", NULL, &st, NULL));
    assert_int_equal(st, 403);
    json_decref(call("DELETE", "/rooms/{id}", id, "alice", "host", NULL, &st, NULL));
    assert_int_equal(st, 204);
    const json_t *d = last_event("RoomDeleted");
    assert_string_equal(json_string_value(json_object_get(d, "status")), "DELETED");
    assert_int_equal(json_integer_value(json_object_get(d, "version")), 3);
    json_decref(call("GET", "/rooms/{id}", id, NULL, NULL, NULL, &st, NULL));
    assert_int_equal(st, 404);
    json_t *list = call("GET", "/rooms", NULL, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    free(id);
}

static void reviews_follow(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    json_t *r1 =
        call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":5,\"content\":\"a\"}", &st, NULL);
    assert_int_equal(st, 201);
    json_t *r2 = call("POST", "/rooms/{id}/reviews", id, "gus", "guest", "{\"rating\":4,\"content\":\"b\"}", &st, NULL);
    assert_int_equal(st, 201);
    const json_t *d = last_event("ReviewCreated");
    json_t *room = json_object_get(d, "room");
    assert_int_equal(json_integer_value(json_object_get(room, "reviewCnt")), 2);
    assert_true(json_number_value(json_object_get(room, "rating")) == 4.5);
    assert_int_equal(json_integer_value(json_object_get(room, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(d, "authorId")), "gus");
    assert_non_null(find_doc("reviews_idx", json_string_value(json_object_get(r2, "id"))));
    json_t *list = call("GET", "/rooms/{id}/reviews", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);

    /* delete: not the author 403, author 204, index gone */
    const char *rid = json_string_value(json_object_get(r1, "id"));
    json_decref(call("DELETE", "/reviews/{id}", rid, "gus", "guest", NULL, &st, NULL));
    assert_int_equal(st, 403);
    json_decref(call("DELETE", "/reviews/{id}", rid, "gina", "guest", NULL, &st, NULL));
    assert_int_equal(st, 204);
    d = last_event("ReviewDeleted");
    assert_string_equal(json_string_value(json_object_get(d, "id")), rid);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(d, "room"), "reviewCnt")), 1);
    assert_true(json_number_value(json_object_get(json_object_get(d, "room"), "rating")) == 4.0);
    assert_null(find_doc("reviews_idx", rid));
    json_decref(call("DELETE", "/reviews/{id}", rid, "gina", "guest", NULL, &st, NULL));
    assert_int_equal(st, 404);
    json_decref(r1);
    json_decref(r2);
    free(id);
}

static void review_retries_on_conflict(void **state)
{
    (void)state;
    int st;
    char *id = create("alice");
    size_t nev = json_array_size(S.events);
    /* the room commit loses three races (another writer got there first):
     * the plugin re-reads and commits once, with one event */
    S.fail_eexist = 3;
    json_t *r = call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":3,\"content\":\"c\"}", &st, NULL);
    assert_int_equal(st, 201);
    json_decref(r);
    assert_int_equal(S.fail_eexist, 0);
    assert_int_equal(json_array_size(S.events), nev + 1);
    json_t *room = call("GET", "/rooms/{id}", id, NULL, NULL, NULL, &st, NULL);
    assert_int_equal(json_integer_value(json_object_get(room, "reviewCnt")), 1);
    json_decref(room);
    /* endless conflicts: bounded, answered 409, no review, no index left */
    S.fail_eexist = 100000;
    r = call("POST", "/rooms/{id}/reviews", id, "gina", "guest", "{\"rating\":3,\"content\":\"d\"}", &st, NULL);
    json_decref(r);
    assert_int_equal(st, 409);
    assert_true(S.fail_eexist > 0);
    S.fail_eexist = 0;
    assert_int_equal(json_array_size(S.events), nev + 1);
    int idx = 0;
    for (int i = 0; i < S.ndocs; i++)
        idx += S.docs[i].body && strcmp(S.docs[i].coll, "reviews_idx") == 0;
    assert_int_equal(idx, 1);
    free(id);
}

static void reservation_events(void **state)
{
    (void)state;
    char *id = create("alice");
    char ev[512];
    json_t *e;
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e1\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res1\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    assert_int_equal(resv_handler(&CTX, e), 0);
    const json_t *d = last_event("RoomModified");
    assert_int_equal(json_integer_value(json_object_get(d, "bookingCnt")), 1);
    size_t n = json_array_size(S.events);
    assert_int_equal(resv_handler(&CTX, e), 0); /* redelivery: EALREADY is success */
    assert_int_equal(json_array_size(S.events), n);
    json_decref(e);
    /* same reservation, new event id: still counted once */
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e2\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res1\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    assert_int_equal(resv_handler(&CTX, e), 0);
    assert_int_equal(json_array_size(S.events), n);
    json_decref(e);
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e3\",\"type\":\"ReservationCancelled\",\"data\":{\"id\":\"res1\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    assert_int_equal(resv_handler(&CTX, e), 0);
    json_decref(e);
    assert_int_equal(json_integer_value(json_object_get(last_event("RoomModified"), "bookingCnt")), 0);
    /* unknown room: ignored */
    e = json_loads("{\"id\":\"e4\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"r\",\"roomId\":\"nope\"}}", 0,
                   NULL);
    assert_int_equal(resv_handler(&CTX, e), 0);
    json_decref(e);
    /* malformed: poison with a reason */
    reject_reason[0] = '\0';
    e = json_loads("{\"id\":\"e5\",\"type\":\"ReservationConfirmed\",\"data\":{\"roomId\":7}}", 0, NULL);
    assert_int_equal(resv_handler(&CTX, e), BNB_EINVAL);
    assert_true(reject_reason[0] != '\0');
    json_decref(e);
    /* a room commit that keeps conflicting is redelivered later, not lost */
    snprintf(ev, sizeof(ev),
             "{\"id\":\"e6\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res2\",\"roomId\":\"%s\"}}", id);
    e = json_loads(ev, 0, NULL);
    S.fail_eexist = 1000;
    int rc = resv_handler(&CTX, e);
    assert_true(rc < 0 && rc != BNB_EINVAL);
    S.fail_eexist = 2; /* two lost races, then it goes through */
    assert_int_equal(resv_handler(&CTX, e), 0);
    assert_int_equal(json_integer_value(json_object_get(last_event("RoomModified"), "bookingCnt")), 1);
    json_decref(e);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(routes_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(create_publishes_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(patch_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(reviews_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(review_retries_on_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(reservation_events, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

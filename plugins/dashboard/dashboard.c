/*
 * dashboard: the CQRS read model, built only from events (bearbnb.room,
 * bearbnb.reservation, bearbnb.payment); it never reads another plugin's
 * store nor calls it. Storage v2 (plugin ABI 1.1), two declared collections:
 *
 *   summaries/<roomId>   the room summary (dash_merge.h): room fields,
 *                        reviewCnt/rating, booking counts by status.
 *                        Indexed: listed (1 once a room event came), city.
 *   views/<reservationId> one reservation view: status, payment status,
 *                        guest, amount, dates, createdAt.
 *                        Indexed: (roomId, createdAt), (roomId, guestId, createdAt).
 *   rooms/<roomId>       the first dashboard's documents (every reservation
 *                        inside): rebuilt as summaries and views at init,
 *                        then deleted (migrate_legacy).
 *
 * Every event touches only the documents it concerns (room/review events: the
 * summary; reservation/payment events: the view, then the summary's counts
 * through the view's pending transitions), each commit idempotent through
 * its applied-event mark. The merge itself is pure and lives in dash_merge.c.
 *
 * Routes (README.md says who sees what):
 *   GET /dashboard/rooms?limit=&cursor=[&city=]         page of summaries, by id
 *   GET /dashboard/rooms/{id}                           one summary
 *   GET /dashboard/rooms/{id}/reservations?limit=&cursor=
 *                                                       page of views, newest first
 *   GET /dashboard/stream                               Server-Sent Events of the
 *                                                       changes (dash_stream.c)
 */
#include "bnb_plugin.h"
#include "bnb_plugin_util.h"
#include "dash_merge.h"
#include "dash_stream.h"

#include <stdlib.h>
#include <string.h>

#define SUMS          "summaries"
#define VIEWS         "views"
#define LEGACY        "rooms" /* one document per room, before storage v2 (dash_merge.h) */
#define LEGACY_PAGE   20
#define LIMIT_DEFAULT 20
#define LIMIT_MAX     100
#define CURSOR_MAX    2048

static const bnb_host_api_t *host;

static const bnb_field_def_t sum_fields[] = {{"listed", BNB_FIELD_INT}, {"city", BNB_FIELD_STR}};
static const bnb_index_def_t sum_indexes[] = {{{"listed", NULL}, 0}, {{"listed", "city", NULL}, 0}};
static const bnb_field_def_t view_fields[] = {
    {"roomId", BNB_FIELD_STR}, {"guestId", BNB_FIELD_STR}, {"createdAt", BNB_FIELD_INT}};
static const bnb_index_def_t view_indexes[] = {{{"roomId", "createdAt", NULL}, 0},
                                               {{"roomId", "guestId", "createdAt", NULL}, 0}};
static const bnb_coll_def_t dashboard_colls[] = {
    {SUMS, sum_fields, 2, sum_indexes, 2},
    {VIEWS, view_fields, 3, view_indexes, 2},
    {LEGACY, NULL, 0, NULL, 0}, /* the first dashboard's documents, until migrated */
};

/* ---- storage: v2, or the ABI 1.0 fallback ------------------------------------
 * On a store without storage v2 (a backend that cannot declare collections
 * yet, or a host before ABI 1.1) the same documents are kept through the ABI
 * 1.0 calls: each document carries two lookup keys (summaries: "1" when
 * listed / city; views: roomId / guestId) and a page is cut in the plugin
 * from store_list by the first key a condition names, sorted and filtered in
 * memory, with a cursor of its own. That costs what the room has (all its
 * views), not what the store has; storage v2 makes it a real index seek. */

static int use_v2;

typedef struct fb_keys {
    const char *coll, *key1, *key2; /* the declared fields the keys stand for */
} fb_keys_t;

static const fb_keys_t fb_keys[] = {{SUMS, "listed", "city"}, {VIEWS, "roomId", "guestId"}};

static const fb_keys_t *fb_keys_of(const char *coll)
{
    for (size_t i = 0; i < sizeof(fb_keys) / sizeof(fb_keys[0]); i++)
        if (strcmp(fb_keys[i].coll, coll) == 0)
            return &fb_keys[i];
    return NULL;
}

/* The key text of body[field]: its string, or its integer in decimal. */
static const char *fb_key(const json_t *body, const char *field, char *buf, size_t n)
{
    json_t *v = json_object_get(body, field);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

static int store_write(bnb_store_t *st, const char *coll, const bnb_commit_t *c)
{
    if (use_v2)
        return host->store_commit2(st, c, NULL);
    const fb_keys_t *k = fb_keys_of(coll);
    char b1[32], b2[32];
    bnb_write_t w = {
        .op = c->op,
        .coll = c->coll,
        .id = c->id,
        .expect_version = c->expect_version,
        .body = c->body,
        .key1 = k ? fb_key(c->body, k->key1, b1, sizeof(b1)) : NULL,
        .key2 = k ? fb_key(c->body, k->key2, b2, sizeof(b2)) : NULL,
    };
    return host->store_commit(st, &w, NULL, 0, c->applied_event_id, NULL);
}

/* -1, 0, 1 comparing two field values (null/absent first). */
static int fb_vcmp(const json_t *a, const json_t *b)
{
    int na = !a || json_is_null(a), nb = !b || json_is_null(b);
    if (na || nb)
        return nb - na;
    if (json_is_string(a) && json_is_string(b))
        return strcmp(json_string_value(a), json_string_value(b));
    json_int_t x = json_integer_value(a), y = json_integer_value(b);
    return x < y ? -1 : x > y;
}

/* Position of row b relative to (val, id) in the query's order. */
static int fb_rowcmp(const bnb_query_t *q, const json_t *row, const json_t *val, const char *id)
{
    const json_t *v = q->order_by ? json_object_get(json_object_get(row, "body"), q->order_by) : NULL;
    int c = q->order_by ? fb_vcmp(v, val) : 0;
    if (!c)
        c = strcmp(json_string_value(json_object_get(row, "id")) ?: "", id);
    return q->descending ? -c : c;
}

static __thread const bnb_query_t *fb_sort_q;

static int fb_sort(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const char *yid = json_string_value(json_object_get(y, "id")) ?: "";
    const json_t *yv = fb_sort_q->order_by ? json_object_get(json_object_get(y, "body"), fb_sort_q->order_by) : NULL;
    return fb_rowcmp(fb_sort_q, x, yv, yid);
}

/* The shape of a query (what a cursor must match): collection, order,
 * direction, condition fields. */
static void fb_shape(const bnb_query_t *q, char *out, size_t n)
{
    int o = snprintf(out, n, "%s|%s|%d", q->coll, q->order_by ? q->order_by : "", q->descending);
    for (size_t i = 0; i < q->nconds && o > 0 && (size_t)o < n; i++)
        o += snprintf(out + o, n - (size_t)o, "|%s%d", q->conds[i].field, (int)q->conds[i].op);
}

static char *fb_cursor_make(const bnb_query_t *q, const json_t *row)
{
    char shape[256];
    fb_shape(q, shape, sizeof(shape));
    json_t *v = q->order_by ? json_object_get(json_object_get(row, "body"), q->order_by) : NULL;
    json_t *c = json_pack("[s, O?, O]", shape, v, json_object_get(row, "id"));
    char *txt = c ? json_dumps(c, JSON_COMPACT) : NULL, *hex = NULL;
    json_decref(c);
    if (txt && (hex = malloc(strlen(txt) * 2 + 4)) != NULL) {
        strcpy(hex, "v1.");
        for (size_t i = 0; txt[i]; i++)
            sprintf(hex + 3 + 2 * i, "%02x", (unsigned char)txt[i]);
    }
    free(txt);
    return hex;
}

/* *out: [shape ok, value, id] decoded from `cursor`; BNB_EINVAL when it is
 * not a cursor of this query. */
static int fb_cursor_read(const bnb_query_t *q, const char *cursor, json_t **out)
{
    size_t n = strlen(cursor);
    char shape[256], *txt;
    *out = NULL;
    if (n < 5 || strncmp(cursor, "v1.", 3) != 0 || (n - 3) % 2)
        return BNB_EINVAL;
    txt = calloc(1, (n - 3) / 2 + 1);
    if (!txt)
        return BNB_ENOMEM;
    for (size_t i = 0; i < (n - 3) / 2; i++) {
        unsigned v;
        if (sscanf(cursor + 3 + 2 * i, "%2x", &v) != 1 || v == 0) {
            free(txt);
            return BNB_EINVAL;
        }
        txt[i] = (char)v;
    }
    json_t *c = json_loads(txt, 0, NULL);
    free(txt);
    fb_shape(q, shape, sizeof(shape));
    if (!json_is_array(c) || json_array_size(c) != 3 || !json_is_string(json_array_get(c, 2)) ||
        strcmp(json_string_value(json_array_get(c, 0)) ?: "", shape) != 0) {
        json_decref(c);
        return BNB_EINVAL;
    }
    *out = c;
    return 0;
}

static int fb_cond_ok(const json_t *body, const bnb_cond_t *c)
{
    const json_t *v = json_object_get(body, c->field);
    json_t *want = c->str ? json_string(c->str) : json_integer(c->num);
    int r, ok;
    if (!v || json_is_null(v) || json_is_string(v) != (c->str != NULL)) {
        json_decref(want);
        return 0;
    }
    r = fb_vcmp(v, want);
    json_decref(want);
    ok = c->op == BNB_Q_EQ   ? r == 0
         : c->op == BNB_Q_LT ? r < 0
         : c->op == BNB_Q_LE ? r <= 0
         : c->op == BNB_Q_GT ? r > 0
                             : r >= 0;
    return ok;
}

/* store_query, on the ABI 1.0 calls. */
static int fb_query(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next)
{
    const fb_keys_t *k = fb_keys_of(q->coll);
    json_t *rows = NULL, *cur = NULL, *row, **v = NULL;
    int which = 0, rc;
    const char *value = NULL;
    char buf[32];
    size_t i, n = 0;

    *items = NULL;
    *next = NULL;
    if (!k || q->limit < 1)
        return BNB_EINVAL;
    if (q->cursor && (rc = fb_cursor_read(q, q->cursor, &cur)) != 0)
        return rc;
    for (i = 0; i < q->nconds && !which; i++) {
        const bnb_cond_t *c = &q->conds[i];
        if (c->op != BNB_Q_EQ)
            continue;
        which = strcmp(c->field, k->key1) == 0 ? 1 : strcmp(c->field, k->key2) == 0 ? 2 : 0;
        if (c->str)
            value = c->str;
        else
            snprintf(buf, sizeof(buf), "%lld", (long long)c->num), value = buf;
    }
    rc = host->store_list(st, q->coll, which, which ? value : NULL, &rows);
    if (rc)
        goto done;
    v = calloc(json_array_size(rows) + 1, sizeof(*v));
    rc = BNB_ENOMEM;
    if (!v)
        goto done;
    json_array_foreach(rows, i, row)
    {
        json_t *body = json_object_get(row, "body");
        int ok = 1;
        for (size_t c = 0; ok && c < q->nconds; c++)
            ok = fb_cond_ok(body, &q->conds[c]);
        if (ok && cur)
            ok = fb_rowcmp(q, row, json_array_get(cur, 1), json_string_value(json_array_get(cur, 2))) > 0;
        if (ok)
            v[n++] = row;
    }
    fb_sort_q = q;
    qsort(v, n, sizeof(*v), fb_sort);
    *items = json_array();
    if (!*items)
        goto done;
    for (i = 0; i < n && i < q->limit; i++)
        if (json_array_append(*items, v[i]))
            goto done;
    if (n > q->limit && !(*next = fb_cursor_make(q, v[q->limit - 1])))
        goto done;
    rc = 0;
done:
    if (rc) {
        json_decref(*items);
        *items = NULL;
    }
    free(v);
    json_decref(rows);
    json_decref(cur);
    return rc;
}

static int store_page(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next)
{
    return use_v2 ? host->store_query(st, q, items, next) : fb_query(st, q, items, next);
}

/* ---- load, change, commit ------------------------------------------------- */

typedef enum { OUT_APPLIED = 1, OUT_STALE, OUT_REPEATED } outcome_t;

/* Changes a document in place: 1 changed, 0 nothing to change, < 0 error. */
typedef int (*change_fn)(json_t *doc, const void *arg);
typedef json_t *(*new_fn)(const char *id);

typedef struct update {
    bnb_store_t *st;
    const char *coll, *id;
    new_fn fresh;
    change_fn fn;
    const void *arg;
    const char *mark;
    outcome_t *out;
    json_t **committed; /* when not NULL: the document as committed (a new reference) */
} update_t;

/* One try of doc_update: BNB_EEXIST when another writer came in between. */
static int update_attempt(void *a, int n)
{
    update_t *u = a;
    json_t *doc = NULL;
    int64_t version = 0;
    int rc;
    (void)n;

    rc = host->store_get(u->st, u->coll, u->id, &doc, &version);
    if (rc == BNB_ENOENT) {
        if (!u->fresh)
            return 0;
        version = 0;
        doc = u->fresh(u->id);
        if (!doc)
            return BNB_ENOMEM;
    } else if (rc) {
        return rc == BNB_EEXIST ? BNB_EIO : rc; /* transient: redelivered later */
    }
    int changed = u->fn(doc, u->arg);
    if (changed < 0) {
        json_decref(doc);
        return changed == BNB_EEXIST ? BNB_EINVAL : changed;
    }
    if (!changed && (!u->mark || version == 0)) {
        json_decref(doc);
        *u->out = OUT_STALE;
        return 0;
    }
    bnb_commit_t c = {
        .op = changed ? BNB_WRITE_PUT : BNB_WRITE_TOUCH,
        .coll = u->coll,
        .id = u->id,
        .expect_version = version,
        .body = doc,
        .applied_event_id = u->mark,
    };
    rc = store_write(u->st, u->coll, &c);
    if (rc == 0 && u->committed) {
        json_decref(*u->committed);
        *u->committed = json_incref(doc);
    }
    json_decref(doc);
    if (rc == 0 || rc == BNB_EALREADY) {
        *u->out = rc == BNB_EALREADY ? OUT_REPEATED : changed ? OUT_APPLIED : OUT_STALE;
        return 0;
    }
    /* ENOENT: the document we read is gone (or came) meanwhile: read again */
    return rc == BNB_ENOENT ? BNB_EEXIST : rc;
}

/* Load coll/id (or a new document from `fresh`; none: nothing to do), change
 * it with `fn` and commit it through store_commit2 with the applied mark `mark`
 * (or NULL), trying again after a concurrent writer with the common jittered
 * backoff (bnb_util_retry). An unchanged document is still TOUCHed when there
 * is a mark to record, and left alone otherwise. *out says what happened.
 * BNB_EAGAIN when every try lost its race. */
static int doc_update(bnb_store_t *st, const char *coll, const char *id, new_fn fresh, change_fn fn, const void *arg,
                      const char *mark, outcome_t *out, json_t **committed)
{
    update_t u = {st, coll, id, fresh, fn, arg, mark, out, committed};
    int rc = bnb_util_retry(NULL, update_attempt, &u);
    return rc == BNB_EEXIST ? BNB_EAGAIN : rc;
}

static int change_sum_event(json_t *doc, const void *ev)
{
    return dash_sum_apply(doc, ev);
}

static int change_view_event(json_t *doc, const void *ev)
{
    return dash_view_apply(doc, ev);
}

static int change_count(json_t *doc, const void *tr)
{
    const char *from = json_string_value(json_object_get(tr, "from"));
    const char *to = json_string_value(json_object_get(tr, "to"));
    int rc = dash_sum_count(doc, from, to);
    return rc ? rc : 1;
}

/* Drop from the view every transition of the array `done`. */
static int change_drop(json_t *doc, const void *done)
{
    size_t i;
    json_t *e;
    int dropped = 0;
    json_array_foreach((json_t *)done, i, e) dropped |=
        dash_view_drop_pending(doc, json_string_value(json_object_get(e, "mark")));
    return dropped;
}

/* Count the pending transitions of view `res_id` on their room's summary
 * (each once, through its mark), then drop them from the view. `view` is the
 * view as this worker committed it, or NULL to read it. */
static int flush_pending(bnb_store_t *st, const char *res_id, json_t *view)
{
    json_t *pending, *e;
    int64_t version;
    outcome_t out;
    size_t i;
    int rc = view ? 0 : host->store_get(st, VIEWS, res_id, &view, &version);
    if (rc)
        return rc == BNB_ENOENT ? 0 : rc;
    pending = json_incref((json_t *)dash_view_pending(view));
    json_decref(view);
    if (json_array_size(pending) == 0) {
        json_decref(pending);
        return 0;
    }
    json_array_foreach(pending, i, e)
    {
        const char *room = json_string_value(json_object_get(e, "room"));
        const char *mark = json_string_value(json_object_get(e, "mark"));
        json_t *sum = NULL;
        rc = room && mark ? doc_update(st, SUMS, room, dash_sum_new, change_count, e, mark, &out, &sum) : BNB_EINVAL;
        if (rc == 0 && out == OUT_APPLIED)
            dash_stream_room_changed(st, sum);
        json_decref(sum);
        if (rc)
            goto done;
    }
    rc = doc_update(st, VIEWS, res_id, NULL, change_drop, pending, NULL, &out, NULL);
done:
    json_decref(pending);
    return rc;
}

/* ---- events -------------------------------------------------------------- */

/* Apply a checked event (kind, room_id, res_id from dash_event_check). */
static int apply_event(bnb_store_t *st, const json_t *ev, dash_ev_kind_t kind, const char *room_id, const char *res_id,
                       outcome_t *out)
{
    const char *event_id = json_string_value(json_object_get(ev, "id"));
    int rc;
    if (kind == DASH_EV_RESERVATION || kind == DASH_EV_PAYMENT) {
        json_t *view = NULL;
        rc = doc_update(st, VIEWS, res_id, dash_view_new, change_view_event, ev, event_id, out, &view);
        if (rc == 0 && *out == OUT_APPLIED)
            dash_stream_view_changed(st, view);
        /* also after a repeat (then read afresh): a crash may have left the
         * counting undone */
        if (rc == 0)
            rc = flush_pending(st, res_id, *out == OUT_REPEATED ? NULL : json_incref(view));
        json_decref(view);
    } else {
        json_t *sum = NULL;
        rc = doc_update(st, SUMS, room_id, dash_sum_new, change_sum_event, ev, event_id, out, &sum);
        if (rc == 0 && *out == OUT_APPLIED)
            dash_stream_room_changed(st, sum);
        json_decref(sum);
    }
    return rc;
}

static int dashboard_on_event(bnb_ctx_t *ctx, const json_t *ev)
{
    char why[256] = "";
    dash_ev_kind_t kind;
    const char *room_id = NULL, *res_id = NULL;
    bnb_store_t *st = host->store(ctx);
    outcome_t out = OUT_STALE;
    int rc;

    rc = dash_event_check(ev, &kind, &room_id, &res_id, why, sizeof(why));
    if (rc == 1) {
        host->count(ctx, "events_ignored", 1);
        return 0;
    }
    if (rc) {
        host->log(ctx, "warn", "rejecting event: %s", why);
        host->event_reject(ctx, "%s", why);
        host->count(ctx, "events_rejected", 1);
        return BNB_EINVAL;
    }
    rc = apply_event(st, ev, kind, room_id, res_id, &out);
    if (rc == BNB_EINVAL) {
        host->log(ctx, "error", "stored dashboard document for room %s is corrupt", room_id);
        host->event_reject(ctx, "stored dashboard document for room %s is corrupt", room_id);
        return rc;
    }
    if (rc == BNB_EAGAIN)
        host->log(ctx, "warn", "room %s: still conflicting after every retry, redelivered later", room_id);
    if (rc)
        return rc;
    host->count(ctx,
                out == OUT_REPEATED  ? "events_repeated"
                : out == OUT_APPLIED ? "events_applied"
                                     : "events_stale",
                1);
    return 0;
}

/* ---- routes -------------------------------------------------------------- */

/* 1 when s[0..len) is valid percent-encoding. */
static int pct_ok(const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    for (size_t i = 0; i < len; i++)
        if (s[i] == '%' && (i + 2 >= len || !strchr(hex, s[i + 1]) || !strchr(hex, s[i + 2])))
            return 0;
    return 1;
}

/* Every parameter of the raw query is one of `allowed` (NULL-terminated, at
 * most 8), given once, well encoded: 0, or answers 400 naming it. Hosts
 * before plugin ABI 1.2 do not give the raw query: then nothing is checked
 * here. */
static int check_params(bnb_req_t *req, const char *const *allowed)
{
    const char *qs = BNB_HAS(host, req_query_string) ? host->req_query_string(req) : NULL;
    unsigned seen = 0;

    for (const char *p = qs; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', seg);
        size_t kl = eq ? (size_t)(eq - p) : seg;
        int k = -1;

        for (int i = 0; seg && allowed[i]; i++)
            if (strlen(allowed[i]) == kl && strncmp(allowed[i], p, kl) == 0)
                k = i;
        if (seg && k < 0) {
            int printable = kl <= 32;
            for (size_t i = 0; printable && i < kl; i++)
                printable = (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
                            (p[i] >= '0' && p[i] <= '9') || p[i] == '_' || p[i] == '-' || p[i] == '.';
            if (printable)
                host->respond_problem(req, 400, "Bad Request", "unknown query parameter '%.*s'", (int)kl, p);
            else
                host->respond_problem(req, 400, "Bad Request", "unknown query parameter");
            return BNB_EINVAL;
        }
        if (seg && (seen & (1u << k))) {
            host->respond_problem(req, 400, "Bad Request", "%s is given more than once", allowed[k]);
            return BNB_EINVAL;
        }
        if (seg && eq && !pct_ok(eq + 1, seg - kl - 1)) {
            host->respond_problem(req, 400, "Bad Request", "%s is not valid percent-encoding", allowed[k]);
            return BNB_EINVAL;
        }
        if (seg)
            seen |= 1u << k;
        if (!amp)
            break;
        p = amp + 1;
    }
    return 0;
}

/* The page parameters: 0, or answers 400 naming the parameter (limit: the
 * common check of plugins/common, so every list words it alike). */
static int page_params(bnb_req_t *req, size_t *limit, const char **cursor)
{
    *limit = bnb_util_page_limit(host, req, LIMIT_DEFAULT, LIMIT_MAX);
    if (*limit == 0)
        return BNB_EINVAL;
    *cursor = host->req_query(req, "cursor");
    if (*cursor && (!**cursor || strlen(*cursor) > CURSOR_MAX)) {
        host->respond_problem(req, 400, "Bad Request", "cursor is not a cursor of this list");
        return BNB_EINVAL;
    }
    return 0;
}

/* Answer one page of `q` with every body mapped through `show`. */
static void respond_page(bnb_req_t *req, const bnb_query_t *q, bnb_store_t *st, json_t *(*show)(const json_t *))
{
    json_t *rows = NULL, *items = NULL, *row, *page;
    char *next = NULL;
    size_t i;
    int rc = store_page(st, q, &rows, &next);
    if (rc == BNB_EINVAL && q->cursor) {
        host->respond_problem(req, 400, "Bad Request", "cursor is not a cursor of this list");
        return;
    }
    if (rc) {
        host->respond_problem(req, 503, "Service Unavailable", "cannot read the read model (%d)", rc);
        return;
    }
    items = json_array();
    if (!items)
        goto fail;
    json_array_foreach(rows, i, row)
    {
        json_t *v = show(json_object_get(row, "body"));
        if (!v || json_array_append_new(items, v))
            goto fail;
    }
    page = json_pack("{s:o, s:s?}", "items", items, "next", next);
    items = NULL;
    if (!page)
        goto fail;
    free(next);
    json_decref(rows);
    host->respond_json(req, 200, page);
    return;
fail:
    free(next);
    json_decref(items);
    json_decref(rows);
    host->respond_problem(req, 500, "Internal Server Error", "out of memory");
}

static void dashboard_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *city = host->req_query(req, "city");
    bnb_cond_t conds[2] = {{.field = "listed", .op = BNB_Q_EQ, .num = 1},
                           {.field = "city", .op = BNB_Q_EQ, .str = city}};
    bnb_query_t q = {.coll = SUMS, .conds = conds, .nconds = city ? 2 : 1};
    static const char *const allowed[] = {"limit", "cursor", "city", NULL};

    if (check_params(req, allowed) || page_params(req, &q.limit, &q.cursor))
        return;
    respond_page(req, &q, host->store(ctx), dash_sum_public);
}

/* The summary of the room in path parameter {id}: 0, or answers 404/503. */
static int load_summary(bnb_ctx_t *ctx, bnb_req_t *req, json_t **sum)
{
    const char *id = host->req_param(req, "id");
    int64_t version;
    int rc;

    *sum = NULL;
    rc = id && bnb_util_id_ok(id) ? host->store_get(host->store(ctx), SUMS, id, sum, &version) : BNB_ENOENT;
    if (rc == 0 && !dash_sum_has_room(*sum))
        rc = BNB_ENOENT;
    if (rc == BNB_ENOENT)
        host->respond_problem(req, 404, "Not Found", "no room %.64s on the dashboard", id ? id : "");
    else if (rc)
        host->respond_problem(req, 503, "Service Unavailable", "cannot read the read model (%d)", rc);
    if (rc) {
        json_decref(*sum);
        *sum = NULL;
    }
    return rc;
}

static void dashboard_get(bnb_ctx_t *ctx, bnb_req_t *req)
{
    static const char *const allowed[] = {NULL};
    json_t *sum, *view;
    if (check_params(req, allowed) || load_summary(ctx, req, &sum))
        return;
    view = dash_sum_public(sum);
    json_decref(sum);
    if (!view) {
        host->respond_problem(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    host->respond_json(req, 200, view);
}

/* The room's host sees every reservation of the room; anyone else signed in
 * only their own (an empty page when they have none); anonymous callers 401. */
static void dashboard_reservations(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *user = host->req_user(req), *room = host->req_param(req, "id");
    json_t *sum;
    size_t limit;
    const char *cursor;

    if (!user) {
        host->respond_header(req, "WWW-Authenticate", "Bearer");
        host->respond_problem(req, 401, "Unauthorized", "the reservations of a room need a bearer token");
        return;
    }
    static const char *const allowed[] = {"limit", "cursor", NULL};
    if (check_params(req, allowed) || page_params(req, &limit, &cursor) || load_summary(ctx, req, &sum))
        return;
    const char *host_id = json_string_value(json_object_get(sum, "hostId"));
    int is_host = host_id && strcmp(host_id, user) == 0;
    json_decref(sum);

    bnb_cond_t conds[2] = {{.field = "roomId", .op = BNB_Q_EQ, .str = room},
                           {.field = "guestId", .op = BNB_Q_EQ, .str = user}};
    bnb_query_t q = {.coll = VIEWS,
                     .conds = conds,
                     .nconds = is_host ? 1 : 2,
                     .order_by = "createdAt",
                     .descending = 1,
                     .limit = limit,
                     .cursor = cursor};
    respond_page(req, &q, host->store(ctx), dash_view_public);
}

/* ---- migration of the first dashboard's documents ------------------------ */

/* Rebuild one `rooms` document of the first dashboard as summaries and views
 * (dash_legacy_events: repeats are BNB_EALREADY, so a migration interrupted
 * anywhere is finished by the next start), then delete it. */
static int migrate_one(bnb_ctx_t *ctx, bnb_store_t *st, const json_t *row, size_t *events)
{
    const char *id = json_string_value(json_object_get(row, "id"));
    json_t *evs = id ? dash_legacy_events(json_object_get(row, "body"), id) : NULL, *ev;
    size_t i;
    int rc = evs ? 0 : id ? BNB_ENOMEM : BNB_EINVAL;
    json_array_foreach(evs, i, ev)
    {
        dash_ev_kind_t kind;
        const char *room_id = NULL, *res_id = NULL;
        outcome_t out = OUT_STALE;
        if (rc || dash_event_check(ev, &kind, &room_id, &res_id, NULL, 0) != 0)
            continue;
        rc = apply_event(st, ev, kind, room_id, res_id, &out);
        *events += rc == 0 && out == OUT_APPLIED;
    }
    json_decref(evs);
    if (rc == 0) {
        bnb_commit_t c = {.op = BNB_WRITE_DELETE,
                          .coll = LEGACY,
                          .id = id,
                          .expect_version = json_integer_value(json_object_get(row, "version"))};
        rc = host->store_commit2(st, &c, NULL);
        if (rc == BNB_ENOENT || rc == BNB_EEXIST)
            rc = 0; /* another process migrated it meanwhile */
    }
    if (rc)
        host->log(ctx, "warn",
                  "dashboard migration: room document %s not migrated yet (%d): tried again at the next start",
                  id ? id : "?", rc);
    return rc;
}

/* The first dashboard's `rooms` documents, LEGACY_PAGE at a time (a keyset
 * walk: one bounded query per page; each migrated document is deleted). Runs
 * at init, before the plugin serves or consumes; a store without them costs
 * one empty query. */
struct migrate_walk {
    bnb_ctx_t *ctx;
    bnb_store_t *st;
    size_t events;
};

static int migrate_row(void *arg, const json_t *row)
{
    struct migrate_walk *w = arg;
    return migrate_one(w->ctx, w->st, row, &w->events);
}

static int migrate_legacy(bnb_ctx_t *ctx, bnb_store_t *st)
{
    struct migrate_walk w = {ctx, st, 0};
    size_t docs = 0, failed = 0, events;
    int rc = bnb_util_each(host, st, LEGACY, LEGACY_PAGE, migrate_row, &w, &docs, &failed);
    events = w.events;
    if (docs || failed)
        host->log(ctx, "info",
                  "dashboard migration: %zu room documents of the first dashboard rebuilt as summaries and views "
                  "(%zu events applied), %zu left for the next start",
                  docs, events, failed);
    if (rc)
        host->log(ctx, "warn", "dashboard migration: cannot read the first dashboard's documents (%d)", rc);
    return rc;
}

/* ---- plugin -------------------------------------------------------------- */

static const bnb_util_route_t dashboard_routes[] = {
    {"GET", "/dashboard/rooms", BNB_ROLE_ANYONE, dashboard_list},
    {"GET", "/dashboard/rooms/{id}", BNB_ROLE_ANYONE, dashboard_get},
    {"GET", "/dashboard/rooms/{id}/reservations", BNB_ROLE_ANYONE, dashboard_reservations},
    {NULL, NULL, 0, NULL},
};

static const bnb_util_sub_t dashboard_subs[] = {
    {"bearbnb.room", dashboard_on_event},
    {"bearbnb.reservation", dashboard_on_event},
    {"bearbnb.payment", dashboard_on_event},
    {NULL, NULL},
};

static int dashboard_init(bnb_ctx_t *ctx, const bnb_host_api_t *h)
{
    int rc;
    host = h;
    use_v2 = BNB_HAS(h, store_define) && BNB_HAS(h, store_query) && BNB_HAS(h, store_commit2);
    if (use_v2) {
        rc = h->store_define(ctx, dashboard_colls, sizeof(dashboard_colls) / sizeof(dashboard_colls[0]));
        if (rc) {
            h->log(ctx, "warn",
                   "this store cannot declare the dashboard's collections (%d): pages are cut from ABI 1.0 lists", rc);
            use_v2 = 0;
        } else {
            migrate_legacy(ctx, h->store(ctx)); /* what is left is tried again at the next start */
        }
    } else {
        h->log(ctx, "warn", "the host has no storage v2 (plugin ABI 1.1): pages are cut from ABI 1.0 lists");
    }
    rc = bnb_util_register(ctx, host, dashboard_routes, dashboard_subs);
    return rc ? rc : dash_stream_init(ctx, h, h->store(ctx));
}

static int dashboard_start(bnb_ctx_t *ctx)
{
    return dash_stream_start(ctx);
}

static void dashboard_stop(bnb_ctx_t *ctx)
{
    (void)ctx;
    dash_stream_stop();
}

static const bnb_cfg_item_t dashboard_config[] = {DASH_STREAM_CONFIG, {NULL, 0, NULL, NULL}};

BNB_EXPORT const bnb_plugin_t bnb_plugin = {
    .abi_version = BNB_ABI_VERSION,
    .name = "dashboard",
    .version = "0.2.0",
    .config = dashboard_config,
    .init = dashboard_init,
    .start = dashboard_start,
    .stop = dashboard_stop,
};

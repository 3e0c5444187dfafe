/*
 * plugins/common: Idempotency-Key (bnb_idem.h says what and why).
 */
#include "bnb_idem.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_HEADERS 8
#define HOLD_MS     3000
#define CLEAN_BATCH 16 /* expired keys one cleanup deletes at most; it runs for 1 new key in 8 */

static const bnb_host_api_t *R; /* the real host table */
static bnb_host_api_t W;        /* the plugin's copy */
static int64_t ttl_ms = 86400000, lease_ms = 30000;
static char abort_key[BNB_IDEM_KEY_MAX + 1], hold_key[BNB_IDEM_KEY_MAX + 1];

/* The request run under a key on this thread (one at a time per thread: a
 * handler runs to its end on the thread that started it). */
typedef struct run {
    bnb_req_t *req;
    const char *pid; /* the route's {id}, or NULL */
    char key[BNB_IDEM_KEY_MAX + 1];
    char rid[37];
    int takeover; /* a retry that took the lease over: no test hook */
    int committed;
    /* the answer */
    int answered, status;
    json_t *body;
    int nh;
    char *hn[MAX_HEADERS], *hv[MAX_HEADERS];
} run_t;

static __thread run_t *cur;

static int mine(bnb_req_t *req)
{
    return cur && cur->req == req;
}

/* ---- the wrapped host functions --------------------------------------------- */

static void w_respond_json(bnb_req_t *req, int status, json_t *body)
{
    if (mine(req) && !cur->answered) {
        cur->answered = 1;
        cur->status = status;
        cur->body = json_incref(body);
    }
    R->respond_json(req, status, body);
}

/* The problem object the host builds for respond_problem (host/core/api.c). */
static json_t *problem_obj(int status, const char *title, const char *detail)
{
    char type[128];
    size_t o = (size_t)snprintf(type, sizeof type, "urn:bearbnb:problem:");
    for (const char *p = title; *p && o + 1 < sizeof type; p++) {
        if (isalnum((unsigned char)*p))
            type[o++] = (char)tolower((unsigned char)*p);
        else if (o > 0 && type[o - 1] != '-' && type[o - 1] != ':')
            type[o++] = '-';
    }
    while (o > 0 && type[o - 1] == '-')
        o--;
    type[o] = '\0';
    json_t *j = json_pack("{s:s, s:s, s:i}", "type", type, "title", title, "status", status);
    json_t *d = json_string(detail);
    if (j && !d)
        d = json_string("(detail not UTF-8)");
    json_object_set_new(j, "detail", d);
    return j;
}

static void w_respond_problem(bnb_req_t *req, int status, const char *title, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (mine(req) && !cur->answered) {
        cur->answered = 1;
        cur->status = status;
        cur->body = problem_obj(status, title ? title : "Error", detail);
    }
    R->respond_problem(req, status, title, "%s", detail);
}

static void w_respond_empty(bnb_req_t *req, int status)
{
    if (mine(req) && !cur->answered) {
        cur->answered = 1;
        cur->status = status;
    }
    R->respond_empty(req, status);
}

static void w_respond_header(bnb_req_t *req, const char *name, const char *value)
{
    if (mine(req) && !cur->answered && cur->nh < MAX_HEADERS && name && value) {
        cur->hn[cur->nh] = strdup(name);
        cur->hv[cur->nh] = strdup(value);
        if (cur->hn[cur->nh] && cur->hv[cur->nh])
            cur->nh++;
        else {
            free(cur->hn[cur->nh]);
            free(cur->hv[cur->nh]);
        }
    }
    R->respond_header(req, name, value);
}

/* Test hooks, after the first commit of the request's own documents (its
 * resource rid, or the resource its path names: {id}) in the first run of a
 * key (a retry that takes over runs without them). */
static void after_commit(const char *id)
{
    run_t *r = cur;
    if (!r || r->takeover || r->committed || !id || (strcmp(id, r->rid) && (!r->pid || strcmp(id, r->pid))))
        return;
    r->committed = 1;
    if (abort_key[0] && !strncmp(r->key, abort_key, strlen(abort_key))) {
        fprintf(stderr, "test.idempotency_abort_key: aborting after the commit of %s\n", id);
        fflush(stderr);
        abort();
    }
    if (hold_key[0] && !strncmp(r->key, hold_key, strlen(hold_key))) {
        struct timespec ts = {HOLD_MS / 1000, (HOLD_MS % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
}

static int w_store_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_event_out_t *events, size_t nevents,
                          const char *applied_event_id, int64_t *new_version)
{
    int rc = R->store_commit(st, w, events, nevents, applied_event_id, new_version);
    if (rc == 0 && cur)
        after_commit(w->id);
    return rc;
}

static int w_store_commit2(bnb_store_t *st, const bnb_commit_t *c, int64_t *new_version)
{
    int rc = R->store_commit2(st, c, new_version);
    if (rc == 0 && cur)
        after_commit(c->id);
    return rc;
}

const bnb_host_api_t *bnb_idem_host(const bnb_host_api_t *host)
{
    size_t n = host->size < sizeof W ? host->size : sizeof W;
    R = host;
    memset(&W, 0, sizeof W);
    memcpy(&W, host, n);
    W.size = n;
    W.respond_json = w_respond_json;
    W.respond_problem = w_respond_problem;
    W.respond_empty = w_respond_empty;
    W.respond_header = w_respond_header;
    W.store_commit = w_store_commit;
    if (BNB_HAS(host, store_commit2))
        W.store_commit2 = w_store_commit2;
    return &W;
}

/* ---- setup ---------------------------------------------------------------------- */

static const bnb_field_def_t idem_fields[] = {{"exp", BNB_FIELD_INT}};
static const bnb_index_def_t idem_indexes[] = {{{"exp", NULL}, 0}};
static const bnb_coll_def_t idem_coll = {BNB_IDEM_COLL, idem_fields, 1, idem_indexes, 1};

static int64_t cfg_int(bnb_ctx_t *ctx, const char *key, int64_t def, int64_t lo, int64_t hi)
{
    const char *v = R->config(ctx, key);
    char *end = NULL;
    long long n = v && *v ? strtoll(v, &end, 10) : def;
    if ((end && *end) || n < lo || n > hi) {
        R->log(ctx, "warn", "%s.%s=%s is not an integer in [%lld, %lld]; using %lld", R->name(ctx), key, v,
               (long long)lo, (long long)hi, (long long)def);
        return def;
    }
    return n;
}

int bnb_idem_init(bnb_ctx_t *ctx)
{
    ttl_ms = cfg_int(ctx, "idempotency_ttl_s", 86400, 60, 2592000) * 1000;
    lease_ms = cfg_int(ctx, "idempotency_lease_s", 30, 1, 3600) * 1000;
    const char *a = R->config(ctx, "test.idempotency_abort_key");
    const char *h = R->config(ctx, "test.idempotency_hold_key");
    snprintf(abort_key, sizeof abort_key, "%s", a ? a : "");
    snprintf(hold_key, sizeof hold_key, "%s", h ? h : "");
    if (abort_key[0] || hold_key[0])
        R->log(ctx, "warn", "test hooks of Idempotency-Key are on (tests only)");
    return R->store_define(ctx, &idem_coll, 1);
}

/* ---- keys, hashes ------------------------------------------------------------ */

int bnb_idem_key_ok(const char *key, const char **start, size_t *len)
{
    size_t n = key ? strlen(key) : 0;
    if (n >= 2 && key[0] == '"' && key[n - 1] == '"') {
        key++;
        n -= 2;
    }
    if (n < 1 || n > BNB_IDEM_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)key[i]) && !strchr("-_.:~+/=", key[i]))
            return 0;
    *start = key;
    *len = n;
    return 1;
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char x[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = x[d[i] >> 4];
        out[2 * i + 1] = x[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* SHA-256 of the parts, each followed by a newline, in hex (65 bytes). */
static int sha_hex(const char *const *parts, size_t nparts, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = m && EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    for (size_t i = 0; ok && i < nparts; i++)
        ok = EVP_DigestUpdate(m, parts[i] ? parts[i] : "", parts[i] ? strlen(parts[i]) : 0) &&
             EVP_DigestUpdate(m, "\n", 1);
    ok = ok && EVP_DigestFinal_ex(m, md, &mdlen) && mdlen == 32;
    EVP_MD_CTX_free(m);
    if (ok)
        hex(md, 32, out);
    return ok ? 0 : BNB_ENOMEM;
}

/* The hash of the request: the rid (salt), the route, its {id} and the
 * canonical body. */
static int req_hash(bnb_req_t *req, const char *rid, const char *scope, const char *pid, char out[65])
{
    const json_t *body = R->req_body(req);
    char *dump = body ? json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    if (body && !dump)
        return BNB_ENOMEM;
    const char *parts[] = {rid, scope, pid ? pid : "", dump ? dump : "-"};
    int rc = sha_hex(parts, 4, out);
    free(dump);
    return rc;
}

/* ---- the run ---------------------------------------------------------------- */

static int put(bnb_store_t *st, const char *docid, int64_t expect, const json_t *body, int64_t *ver)
{
    bnb_commit_t c = {.op = BNB_WRITE_PUT, .coll = BNB_IDEM_COLL, .id = docid, .expect_version = expect, .body = body};
    return R->store_commit2(st, &c, ver);
}

/* Forget up to CLEAN_BATCH expired keys. Called for one new key in 8: at most
 * 2 deletions per new key on average, more than the one each adds, and the
 * query (on the `exp` index) is paid by one request in 8. */
static void cleanup(bnb_store_t *st, int64_t now)
{
    bnb_cond_t cond = {.field = "exp", .op = BNB_Q_LT, .num = now};
    bnb_query_t q = {.coll = BNB_IDEM_COLL, .conds = &cond, .nconds = 1, .order_by = "exp", .limit = CLEAN_BATCH};
    json_t *items = NULL, *e;
    char *next = NULL;
    size_t i;
    if (R->store_query(st, &q, &items, &next) == 0)
        json_array_foreach(items, i, e)
        {
            bnb_commit_t c = {.op = BNB_WRITE_DELETE,
                              .coll = BNB_IDEM_COLL,
                              .id = json_string_value(json_object_get(e, "id")),
                              .expect_version = json_integer_value(json_object_get(e, "version"))};
            if (c.id)
                (void)R->store_commit2(st, &c, NULL); /* a lost race: someone else did it */
        }
    json_decref(items);
    free(next);
}

static void replay(bnb_ctx_t *ctx, bnb_req_t *req, const json_t *doc)
{
    const json_t *hs = json_object_get(doc, "headers"), *h;
    const char *text = json_string_value(json_object_get(doc, "body"));
    int status = (int)json_integer_value(json_object_get(doc, "status"));
    json_t *body = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    size_t i;
    json_array_foreach(hs, i, h)
    {
        const char *n = json_string_value(json_object_get(h, "n")), *v = json_string_value(json_object_get(h, "v"));
        if (n && v)
            R->respond_header(req, n, v);
    }
    R->respond_header(req, BNB_IDEM_REPLAYED, "true");
    R->count(ctx, "idempotency_replayed", 1);
    if (body)
        R->respond_json(req, status, body);
    else
        R->respond_empty(req, status);
}

/* Store the answer of `r` (below 500), or let the key be run again (5xx or no
 * answer); the lease version `ver` must still be ours. */
static void finish(bnb_ctx_t *ctx, bnb_store_t *st, const char *docid, const run_t *r, const char *h, int64_t exp,
                   int64_t ver)
{
    int done = r->answered && r->status < 500;
    json_t *d = json_pack("{s:s, s:s, s:s, s:I, s:I}", "rid", r->rid, "h", h, "st", done ? "done" : "free", "lease",
                          (json_int_t)0, "exp", (json_int_t)exp);
    json_t *hs = json_array();
    int rc = d && hs ? 0 : BNB_ENOMEM;
    /* headers as {n, v} objects and the body as JSON text: a document any
     * backend stores as is (FerretDB refuses nested arrays, MongoDB keys with
     * '.' or '$'), and the replay sends the same bytes */
    char *text = NULL;
    if (rc == 0 && done) {
        for (int i = 0; i < r->nh; i++)
            json_array_append_new(hs, json_pack("{s:s, s:s}", "n", r->hn[i], "v", r->hv[i]));
        json_object_set_new(d, "status", json_integer(r->status));
        json_object_set(d, "headers", hs);
        if (r->body && !(text = json_dumps(r->body, JSON_COMPACT | JSON_ENCODE_ANY)))
            rc = BNB_ENOMEM;
        json_object_set_new(d, "body", text ? json_string(text) : json_null());
        free(text);
    }
    if (rc == 0)
        rc = put(st, docid, ver, d, NULL);
    if (rc != 0)
        R->log(ctx, "warn", "Idempotency-Key %s: storing the answer failed (%d); a retry recovers it", r->key, rc);
    json_decref(hs);
    json_decref(d);
}

void bnb_idem_rid(const bnb_host_api_t *h, char out[37])
{
    if (cur && cur->rid[0])
        memcpy(out, cur->rid, 37);
    else
        h->uuid(out);
}

void bnb_idem_run(bnb_ctx_t *ctx, bnb_req_t *req, const char *scope, bnb_route_fn fn, bnb_idem_recover_fn recover)
{
    const char *hv = R->req_header(req, BNB_IDEM_HEADER), *user = R->req_user(req), *ks = NULL;
    size_t kl = 0;
    if (!hv || !user) {
        fn(ctx, req);
        return;
    }
    if (!bnb_idem_key_ok(hv, &ks, &kl)) {
        R->respond_problem(req, 400, "Bad Request",
                           "header '" BNB_IDEM_HEADER "' must be 1 to %d characters of A-Z a-z 0-9 - _ . : ~ + / = "
                           "(optionally in double quotes)",
                           BNB_IDEM_KEY_MAX);
        return;
    }
    bnb_store_t *st = R->store(ctx);
    run_t run = {.req = req, .pid = R->req_param(req, "id")}, *outer = cur; /* outer: a keyed request calling in */
    memcpy(run.key, ks, kl);
    run.key[kl] = '\0';
    char docid[65], h[65];
    const char *parts[] = {"idem", user, run.key};
    json_t *doc = NULL;
    int64_t ver = 0, exp = 0, mine_ver = 0;
    int rc = sha_hex(parts, 3, docid), takeover = 0;
    for (int attempt = 0; rc == 0; attempt++) {
        if (attempt == 4) {
            rc = BNB_EEXIST; /* a storm of retries of one key: busy */
            break;
        }
        json_decref(doc);
        doc = NULL;
        /* a first request of its key (the common case) creates the document
         * without reading first: expect_version 0 fails with BNB_EEXIST when
         * the key is known, and the next round reads it */
        rc = attempt == 0 ? BNB_ENOENT : R->store_get(st, BNB_IDEM_COLL, docid, &doc, &ver);
        if (rc != 0 && rc != BNB_ENOENT)
            break;
        int64_t now = R->now_ms();
        json_t *jexp = json_object_get(doc, "exp");
        if (rc == BNB_ENOENT || !json_is_integer(jexp) || json_integer_value(jexp) <= now) {
            /* a new key (or one forgotten): a new resource id */
            R->uuid(run.rid);
            exp = now + ttl_ms;
            rc = req_hash(req, run.rid, scope, run.pid, h);
            json_t *nd = rc ? NULL
                            : json_pack("{s:s, s:s, s:s, s:I, s:I}", "rid", run.rid, "h", h, "st", "run", "lease",
                                        (json_int_t)(now + lease_ms), "exp", (json_int_t)exp);
            rc = rc ? rc : nd ? put(st, docid, doc ? ver : 0, nd, &mine_ver) : BNB_ENOMEM;
            json_decref(nd);
            if (rc == BNB_EEXIST) {
                rc = 0;
                continue; /* another request of this key got there first */
            }
            if (rc == 0 && (run.rid[0] == '0' || run.rid[0] == '8')) /* random hex: 1 in 8 */
                cleanup(st, now);
            break;
        }
        const char *rid = json_string_value(json_object_get(doc, "rid"));
        const char *sh = json_string_value(json_object_get(doc, "h"));
        const char *state = json_string_value(json_object_get(doc, "st"));
        if (!rid || strlen(rid) != 36 || !sh || !state) {
            rc = BNB_EIO;
            break;
        }
        if ((rc = req_hash(req, rid, scope, run.pid, h)) != 0)
            break;
        if (strcmp(h, sh)) {
            R->respond_problem(req, 422, "Idempotency Key Reused",
                               "header '" BNB_IDEM_HEADER "' was already used with another request (another route or "
                               "body); use a new key");
            goto out;
        }
        if (!strcmp(state, "done")) {
            replay(ctx, req, doc);
            goto out;
        }
        if (!strcmp(state, "run") && json_integer_value(json_object_get(doc, "lease")) > now) {
            R->respond_header(req, "Retry-After", "1");
            R->respond_problem(req, 409, "Idempotency Key In Use",
                               "a request with this '" BNB_IDEM_HEADER "' is still in progress; retry later");
            goto out;
        }
        /* the run before us crashed (lease ran out) or failed (5xx): take over */
        json_object_set_new(doc, "st", json_string("run"));
        json_object_set_new(doc, "lease", json_integer(now + lease_ms));
        rc = put(st, docid, ver, doc, &mine_ver);
        if (rc == BNB_EEXIST) {
            rc = 0;
            continue;
        }
        if (rc == 0) {
            memcpy(run.rid, rid, 37);
            exp = json_integer_value(jexp);
            takeover = run.takeover = 1;
        }
        break;
    }
    if (rc != 0) {
        if (rc == BNB_EEXIST || rc == BNB_EIO || rc == BNB_EAGAIN)
            R->respond_header(req, "Retry-After", "1");
        R->respond_problem(req,
                           rc == BNB_ETIMEDOUT ? 504
                           : rc == BNB_ENOMEM  ? 500
                                               : 503,
                           rc == BNB_ETIMEDOUT ? "Gateway Timeout"
                           : rc == BNB_ENOMEM  ? "Internal Server Error"
                                               : "Service Unavailable",
                           "idempotency store error %d", rc);
        goto out;
    }
    cur = &run;
    if (!(takeover && recover && recover(ctx, req, run.rid) > 0))
        fn(ctx, req);
    cur = outer;
    finish(ctx, st, docid, &run, h, exp, mine_ver);
out:
    cur = outer;
    json_decref(doc);
    json_decref(run.body);
    for (int i = 0; i < run.nh; i++) {
        free(run.hn[i]);
        free(run.hv[i]);
    }
}

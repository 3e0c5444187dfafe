/* The function table handed to plugins (plugin-api/bnb_plugin.h). */
#include "host.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

bnb_host_t *bnb__host;

/* ---- small shared helpers --------------------------------------------- */

void bnb__uuid(char out[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

const char *bnb__status_title(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 400 ? "OK" : "Error";
    }
}

static json_t *problem_obj(int status, const char *title, const char *detail)
{
    if (title == NULL)
        title = bnb__status_title(status);
    char type[128];
    size_t o = (size_t)snprintf(type, sizeof(type), "urn:bearbnb:problem:");
    for (const char *p = title; *p && o + 1 < sizeof(type); p++) {
        if (isalnum((unsigned char)*p))
            type[o++] = (char)tolower((unsigned char)*p);
        else if (o > 0 && type[o - 1] != '-' && type[o - 1] != ':')
            type[o++] = '-';
    }
    while (o > 0 && type[o - 1] == '-')
        o--;
    type[o] = '\0';
    json_t *j = json_pack("{s:s, s:s, s:i}", "type", type, "title", title, "status", status);
    json_t *d = json_string(detail ? detail : "");
    if (d == NULL)
        d = json_string("(detail not UTF-8)");
    json_object_set_new(j, "detail", d);
    return j;
}

char *bnb__problem_text(int status, const char *title, const char *detail, size_t *len)
{
    json_t *j = problem_obj(status, title, detail);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s != NULL && len != NULL)
        *len = strlen(s);
    return s;
}

/* ---- requests ----------------------------------------------------------- */

void bnb__req_free_parts(bnb_req_t *r)
{
    if (r->stream != NULL) /* never handed to the HTTP side */
        bnb__stream_abandon(r->stream);
    r->stream = NULL;
    bnb__route_match_clear(&r->match);
    json_decref(r->body);
    json_decref(r->resp);
    free(r->method);
    free(r->path);
    free(r->query);
    free(r->bearer);
    free(r->raw_in);
    free(r->raw_out);
    free(r->raw_ctype);
    free(r->upstream);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->hnames[i]);
        free(r->hvalues[i]);
    }
    free(r->hnames);
    free(r->hvalues);
    for (size_t i = 0; i < r->nrh; i++) {
        free(r->rh_names[i]);
        free(r->rh_values[i]);
    }
    for (size_t i = 0; i < r->nq; i++) {
        free(r->qcache_key[i]);
        free(r->qcache_val[i]);
    }
}

void bnb__problem_json(bnb_req_t *r, int status, const char *title, const char *detail)
{
    json_decref(r->resp);
    r->resp = problem_obj(status, title, detail);
    r->status = status;
    r->problem = 1;
    r->answered = 1;
}

void bnb__req_run(bnb_req_t *r)
{
    bnb_exec_t *saved = bnb__exec;
    r->exec.plugin = r->ctx->name;
    r->exec.user = r->has_id ? r->id.sub : NULL;
    r->exec.role = r->has_id ? r->id.role : NULL;
    r->exec.bearer = r->bearer;
    bnb__exec = &r->exec;
    bnb_ctx_t call = {.inst = r->ctx, .exec = &r->exec}; /* this request's context: the handler must not keep it */
    r->route->fn(&call, r);
    bnb__exec = saved;
    if (!r->answered) {
        bnb__log(BNB_LOG_ERROR, "plugin %s: handler for %s %s returned without an answer", r->ctx->name,
                 r->route->method, r->route->pattern);
        bnb__problem_json(r, 500, NULL, "the handler did not answer");
    }
}

static int route(bnb_ctx_t *pctx, const char *method, const char *pattern, bnb_role_t who, bnb_route_fn fn)
{
    bnb_inst_t *ctx = pctx->inst;
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    int ok = 0;
    for (size_t i = 0; i < 5; i++)
        ok |= strcmp(method, methods[i]) == 0;
    if (!ok || fn == NULL || pattern == NULL || (int)who < BNB_ROLE_ANYONE || (int)who > BNB_ROLE_SERVICE ||
        strncmp(pattern, "/admin", 6) == 0 || strcmp(pattern, "/healthz") == 0 || strcmp(pattern, "/readyz") == 0 ||
        strcmp(pattern, "/metrics") == 0)
        return BNB_EINVAL;
    bnb_route_entry_t *e = calloc(1, sizeof(*e));
    bnb_route_entry_t **nr = realloc(ctx->routes, (ctx->nroutes + 1) * sizeof(*nr));
    if (e == NULL || nr == NULL) {
        free(e);
        if (nr)
            ctx->routes = nr;
        return BNB_ENOMEM;
    }
    ctx->routes = nr;
    e->ctx = ctx;
    e->who = who;
    e->fn = fn;
    e->pattern = strdup(pattern);
    e->method = strdup(method);
    if (e->pattern == NULL || e->method == NULL) {
        free(e->pattern);
        free(e->method);
        free(e);
        return BNB_ENOMEM;
    }
    int rc = bnb__router_add(ctx->host->router, method, pattern, ctx, e);
    if (rc != 0) {
        bnb__log(BNB_LOG_ERROR, "plugin %s: cannot register %s %s: %s", ctx->name, method, pattern,
                 rc == -17 ? "already registered" : "bad pattern");
        free(e->pattern);
        free(e->method);
        free(e);
        return rc == -17 ? BNB_EEXIST : BNB_EINVAL;
    }
    ctx->routes[ctx->nroutes++] = e;
    return 0;
}

static int subscribe(bnb_ctx_t *pctx, const char *topic, bnb_event_fn fn)
{
    bnb_inst_t *ctx = pctx->inst;
    if (topic == NULL || fn == NULL)
        return BNB_EINVAL;
    bnb_sub_t *ns = realloc(ctx->subs, (ctx->nsubs + 1) * sizeof(*ns));
    if (ns == NULL)
        return BNB_ENOMEM;
    ctx->subs = ns;
    ns[ctx->nsubs].topic = strdup(topic);
    ns[ctx->nsubs].fn = fn;
    if (ns[ctx->nsubs].topic == NULL)
        return BNB_ENOMEM;
    ctx->nsubs++;
    return 0;
}

static void set_userdata(bnb_ctx_t *pctx, void *data)
{
    bnb_inst_t *ctx = pctx->inst;
    ctx->userdata = data;
}

static void *userdata(bnb_ctx_t *pctx)
{
    bnb_inst_t *ctx = pctx->inst;
    return ctx->userdata;
}

static const char *config(bnb_ctx_t *pctx, const char *key)
{
    bnb_inst_t *ctx = pctx->inst;
    char full[256];
    snprintf(full, sizeof(full), "%s.%s", ctx->name, key);
    return bnb__config_str(ctx->host->cfg, full);
}

static const char *name(bnb_ctx_t *pctx)
{
    bnb_inst_t *ctx = pctx->inst;
    return ctx->name;
}

static const char *req_method(bnb_req_t *r)
{
    return r->method;
}

static const char *req_param(bnb_req_t *r, const char *pname)
{
    size_t l = strlen(pname);
    for (size_t i = 0; i < r->match.nparams; i++) {
        const char *n = r->match.names[i]; /* "{name}" */
        if (strlen(n) == l + 2 && strncmp(n + 1, pname, l) == 0)
            return r->match.values[i];
    }
    return NULL;
}

static const char *req_query(bnb_req_t *r, const char *qname)
{
    for (size_t i = 0; i < r->nq; i++)
        if (strcmp(r->qcache_key[i], qname) == 0)
            return r->qcache_val[i];
    if (r->query == NULL || r->nq == 8)
        return NULL;
    size_t l = strlen(qname);
    const char *p = r->query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', seg);
        size_t kl = eq ? (size_t)(eq - p) : seg;
        char *k = bnb__url_decode(p, kl, 1);
        if (k != NULL && strlen(k) == l && strcmp(k, qname) == 0) {
            char *v = eq ? bnb__url_decode(eq + 1, seg - kl - 1, 1) : strdup("");
            if (v == NULL) {
                free(k);
                return NULL;
            }
            r->qcache_key[r->nq] = k;
            r->qcache_val[r->nq++] = v;
            return v;
        }
        free(k);
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    return NULL;
}

static const char *req_query_string(bnb_req_t *r)
{
    return r->query;
}

static const json_t *req_body(bnb_req_t *r)
{
    return r->body;
}

static const char *req_user(bnb_req_t *r)
{
    return r->has_id ? r->id.sub : NULL;
}

static const char *req_role(bnb_req_t *r)
{
    return r->has_id && r->id.role[0] ? r->id.role : NULL;
}

static const char *req_header(bnb_req_t *r, const char *hname)
{
    r->exec.no_cache = 1; /* the answer may depend on this header */
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->hnames[i], hname) == 0)
            return r->hvalues[i];
    return NULL;
}

static void respond_json(bnb_req_t *r, int status, json_t *body)
{
    if (r->answered) {
        json_decref(body);
        return;
    }
    r->status = status;
    r->resp = body;
    r->answered = 1;
    /* an error answer whose body is a problem object goes out as one (a
     * plugin adds members, e.g. the reservationId of a 402) */
    json_t *pst = json_object_get(body, "status");
    if (status >= 400 && json_is_string(json_object_get(body, "type")) &&
        json_is_string(json_object_get(body, "title")) && json_is_integer(pst) && json_integer_value(pst) == status)
        r->problem = 1;
}

static void respond_problem(bnb_req_t *r, int status, const char *title, const char *fmt, ...)
{
    if (r->answered)
        return;
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    bnb__problem_json(r, status, title, detail);
}

static void respond_empty(bnb_req_t *r, int status)
{
    if (r->answered)
        return;
    r->status = status;
    r->answered = 1;
}

static bnb_stream_t *stream_open(bnb_req_t *r, int status, const char *content_type)
{
    if (r->answered || !r->can_stream || r->stream != NULL || content_type == NULL || status < 200 || status > 299 ||
        atomic_load(&bnb__host->draining))
        return NULL;
    bnb_stream_t *s = bnb__stream_new(status, content_type, bnb__host->stream_buffer);
    if (s == NULL)
        return NULL;
    r->stream = s; /* the HTTP side's reference */
    r->status = status;
    r->answered = 1;
    return s;
}

static int stream_write(bnb_stream_t *s, const void *data, size_t len)
{
    return s ? bnb__stream_write(s, data, len) : BNB_EINVAL;
}

static void stream_close(bnb_stream_t *s)
{
    if (s)
        bnb__stream_close(s);
}

static void respond_header(bnb_req_t *r, const char *hname, const char *value)
{
    if (r->nrh == 8)
        return;
    r->rh_names[r->nrh] = strdup(hname);
    r->rh_values[r->nrh] = strdup(value);
    if (r->rh_names[r->nrh] == NULL || r->rh_values[r->nrh] == NULL) {
        free(r->rh_names[r->nrh]);
        free(r->rh_values[r->nrh]);
        return;
    }
    r->nrh++;
}

static bnb_store_t *store(bnb_ctx_t *pctx)
{
    bnb_inst_t *ctx = pctx->inst;
    return ctx->store;
}

static int store_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    return st->ops->get(st, coll, id, body, version);
}

static int store_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    return st->ops->list(st, coll, which, value, out);
}

/* The envelopes of `events` (ids, payloads), built the same way for
 * store_commit and store_commit2. */
typedef struct envs {
    size_t n;
    bnb_outbox_new_t *out;
    char (*ids)[37];
    char **payloads;
} envs_t;

static void envs_free(envs_t *e)
{
    for (size_t i = 0; e->payloads && i < e->n; i++)
        free(e->payloads[i]);
    free(e->payloads);
    free(e->ids);
    free(e->out);
    memset(e, 0, sizeof(*e));
}

static int envs_build(envs_t *v, const bnb_event_out_t *events, size_t nevents)
{
    bnb_exec_t *ex = bnb__exec;
    memset(v, 0, sizeof(*v));
    if (nevents == 0)
        return 0;
    if (events == NULL)
        return BNB_EINVAL;
    v->n = nevents;
    v->out = calloc(nevents, sizeof(*v->out));
    v->ids = calloc(nevents, sizeof(*v->ids));
    v->payloads = calloc(nevents, sizeof(*v->payloads));
    if (v->out == NULL || v->ids == NULL || v->payloads == NULL)
        return BNB_ENOMEM;
    char now[40];
    {
        int64_t ms = bnb__now_ms();
        time_t s = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&s, &tm);
        size_t n = strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(now + n, sizeof(now) - n, ".%03dZ", (int)(ms % 1000));
    }
    for (size_t i = 0; i < nevents; i++) {
        const bnb_event_out_t *e = &events[i];
        if (e->topic == NULL || e->type == NULL || e->subject == NULL)
            return BNB_EINVAL;
        bnb__uuid(v->ids[i]);
        const char *corr = e->correlation_id;
        if (corr == NULL && ex != NULL && ex->correlation_id[0])
            corr = ex->correlation_id;
        json_t *env = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", v->ids[i], "type", e->type, "source",
                                ex && ex->plugin ? ex->plugin : "host", "subject", e->subject, "time", now);
        if (env == NULL)
            return BNB_ENOMEM;
        json_object_set_new(env, "correlationId", corr ? json_string(corr) : json_null());
        if (ex != NULL && ex->traceparent[0])
            json_object_set_new(env, "traceparent", json_string(ex->traceparent));
        if (ex != NULL && ex->request_id[0])
            json_object_set_new(env, "requestId", json_string(ex->request_id));
        json_object_set(env, "data", e->data ? (json_t *)e->data : json_null());
        v->payloads[i] = json_dumps(env, JSON_COMPACT);
        json_decref(env);
        if (v->payloads[i] == NULL)
            return BNB_ENOMEM;
        v->out[i].event_id = v->ids[i];
        v->out[i].topic = e->topic;
        v->out[i].key = e->subject;
        v->out[i].payload = v->payloads[i];
    }
    return 0;
}

bnb_inst_t *bnb__inst_of_store(bnb_host_t *h, const bnb_store_t *st)
{
    for (size_t i = 0; h != NULL && st != NULL && i < h->nplugins; i++)
        if (h->plugins[i]->store == st)
            return h->plugins[i];
    return NULL;
}

/* A commit to st changed what its plugin's GET routes answer: drop the http
 * read cache's entries of that plugin. */
static void store_changed(bnb_store_t *st)
{
    bnb_inst_t *in = bnb__inst_of_store(bnb__host, st);
    if (in != NULL)
        atomic_fetch_add(&in->store_gen, 1);
}

static int store_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_event_out_t *events, size_t nevents,
                        const char *applied_event_id, int64_t *new_version)
{
    envs_t v;
    int rc = envs_build(&v, events, nevents);
    if (rc == 0)
        rc = st->ops->commit(st, w, v.out, nevents, applied_event_id, new_version);
    store_changed(st); /* also on failure: a failed commit may still have landed */
    if (rc == 0 && nevents > 0 && bnb__host != NULL)
        bnb__events_wake(bnb__host);
    envs_free(&v);
    return rc;
}

/* Record the definitions in ctx (for the host's own view of the plugin's
 * collections) and create them in the plugin's store. */
static int store_define(bnb_ctx_t *pctx, const bnb_coll_def_t *colls, size_t ncolls)
{
    bnb_inst_t *ctx = pctx->inst;
    char err[256] = "";
    int rc = bnb__colls_validate(colls, ncolls, err, sizeof(err));
    if (rc != 0) {
        bnb__log(BNB_LOG_ERROR, "plugin %s: store_define: %s", ctx->name, err);
        return rc;
    }
    if (ctx->inited) {
        bnb__log(BNB_LOG_ERROR, "plugin %s: store_define is for init only", ctx->name);
        return BNB_EPERM;
    }
    if (ctx->store == NULL || ctx->store->ops->define == NULL)
        return BNB_EINVAL;
    rc = ctx->store->ops->define(ctx->store, colls, ncolls);
    if (rc != 0) {
        bnb__log(BNB_LOG_ERROR, "plugin %s: store_define: the %s store refused the definitions (%d)", ctx->name,
                 ctx->store->ops->name, rc);
        return rc;
    }
    for (size_t i = 0; i < ncolls; i++) {
        const bnb__coll_t *old = bnb__colls_get(&ctx->colls, colls[i].name);
        bnb__coll_t *c = NULL;
        if (old != NULL)
            rc = bnb__coll_merge(old, &colls[i], &c, err, sizeof(err));
        else if ((c = bnb__coll_copy(&colls[i])) == NULL)
            rc = BNB_ENOMEM;
        if (rc == 0)
            rc = bnb__colls_put(&ctx->colls, c);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int store_query(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next)
{
    if (items != NULL)
        *items = NULL;
    if (next != NULL)
        *next = NULL;
    if (st == NULL || q == NULL || items == NULL || next == NULL || st->ops->query == NULL)
        return BNB_EINVAL;
    return st->ops->query(st, q, items, next);
}

#define STORE_GET_MANY_MAX 1000

static int store_get_many(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, json_t **items)
{
    if (items != NULL)
        *items = NULL;
    if (st == NULL || coll == NULL || ids == NULL || items == NULL || n == 0 || n > STORE_GET_MANY_MAX)
        return BNB_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ids[i] == NULL)
            return BNB_EINVAL;
    if (st->ops->get_many != NULL)
        return st->ops->get_many(st, coll, ids, n, items);
    json_t *arr = json_array();
    if (arr == NULL)
        return BNB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *body = NULL, *item;
        int64_t version = 0;
        int rc = st->ops->get(st, coll, ids[i], &body, &version);
        if (rc == BNB_ENOENT)
            item = json_null();
        else if (rc != 0) {
            json_decref(arr);
            return rc;
        } else
            item = json_pack("{s:s, s:I, s:o}", "id", ids[i], "version", (json_int_t)version, "body", body);
        if (item == NULL || json_array_append_new(arr, item) != 0) {
            json_decref(arr);
            return BNB_ENOMEM;
        }
    }
    *items = arr;
    return 0;
}

static int store_commit2(bnb_store_t *st, const bnb_commit_t *c, int64_t *new_version)
{
    if (st == NULL || c == NULL || st->ops->commit2 == NULL)
        return BNB_EINVAL;
    envs_t v;
    int rc = envs_build(&v, c->events, c->nevents);
    if (rc == 0)
        rc = st->ops->commit2(st, c, v.out, c->nevents, new_version);
    store_changed(st);
    if (rc == 0 && c->nevents > 0 && bnb__host != NULL)
        bnb__events_wake(bnb__host);
    envs_free(&v);
    return rc;
}

static void event_reject(bnb_ctx_t *ctx, const char *fmt, ...)
{
    bnb_exec_t *ex = ctx != NULL ? ctx->exec : NULL; /* NULL: not a handler's context */
    if (ex == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ex->reject_reason, sizeof(ex->reject_reason), fmt, ap);
    va_end(ap);
}

static void plugin_log(bnb_ctx_t *pctx, const char *level, const char *fmt, ...)
{
    bnb_inst_t *ctx = pctx->inst;
    bnb_log_level_t l = BNB_LOG_INFO;
    if (level != NULL)
        bnb__log_parse_level(level, &l);
    va_list ap;
    va_start(ap, fmt);
    bnb__logv(l, ctx->name, NULL, fmt, ap);
    va_end(ap);
}

static void count(bnb_ctx_t *pctx, const char *cname, double delta)
{
    bnb_inst_t *ctx = pctx->inst;
    char full[256];
    snprintf(full, sizeof(full), "bearbnb_%s_%s_total", ctx->name, cname);
    for (char *p = full; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            *p = '_';
    bnb__metrics_add(ctx->host->metrics, full, NULL, delta);
}

static void set_correlation(bnb_ctx_t *ctx, const char *cid)
{
    bnb_exec_t *ex = ctx != NULL ? ctx->exec : NULL; /* NULL: not a handler's context */
    if (ex != NULL && cid != NULL)
        snprintf(ex->correlation_id, sizeof(ex->correlation_id), "%s", cid);
}

const bnb_host_api_t bnb__host_api = {
    .abi_version = BNB_ABI_VERSION,
    .size = sizeof(bnb_host_api_t),
    .route = route,
    .subscribe = subscribe,
    .set_userdata = set_userdata,
    .userdata = userdata,
    .config = config,
    .name = name,
    .req_method = req_method,
    .req_param = req_param,
    .req_query = req_query,
    .req_body = req_body,
    .req_user = req_user,
    .req_role = req_role,
    .req_header = req_header,
    .respond_json = respond_json,
    .respond_problem = respond_problem,
    .respond_empty = respond_empty,
    .respond_header = respond_header,
    .store = store,
    .store_get = store_get,
    .store_list = store_list,
    .store_commit = store_commit,
    .event_reject = event_reject,
    .call = bnb__call,
    .log = plugin_log,
    .count = count,
    .set_correlation = set_correlation,
    .uuid = bnb__uuid,
    .now_ms = bnb__now_ms,
    .store_define = store_define,
    .store_query = store_query,
    .store_commit2 = store_commit2,
    .req_query_string = req_query_string,
    .stream_open = stream_open,
    .stream_write = stream_write,
    .stream_close = stream_close,
    .store_get_many = store_get_many,
};

/*
 * BearBnB storage backend: MongoDB wire protocol (mongo-c-driver 1.23), written
 * for FerretDB 1.x: NO multi-document transactions, sessions or change streams
 * are used, only single-document atomicity.
 *
 * URL: mongodb://[user:pass@]host:port/db[?options] (any mongoc URL; the
 * database defaults to "bearbnb"). serverSelectionTimeoutMS defaults to 5000.
 *
 * Collections in that database, prefixed with the store name cfg->name:
 *   <name>_docs  one document per (coll, id):
 *     { _id: "<coll>/<id>"   (coll is [a-z_]+, so the first '/' splits it),
 *       coll, id, version: int64, deleted: bool,
 *       body: "<JSON text>" | null,   the plugin's body as JSON text, so every
 *                                     JSON value round-trips exactly and keys
 *                                     with '$' or '.' are never rejected,
 *       key1, key2: string | null,
 *       applied: [event ids applied to this document],
 *       outbox_ids: [pending event ids, in commit order],
 *       outbox: { <event id>: {topic, key, payload, seq} } }
 *   <name>_dead  {consumer, reason, event, at}
 *
 * Why outbox is an id list plus a map and not an array of sub-documents:
 * FerretDB 1.24's $pull compares elements for equality only (no query
 * conditions like {$pull: {outbox: {event_id: X}}}), so an entry is removed
 * with $pullAll on the id list and $unset of "outbox.<id>", in one update.
 * Event ids therefore must not contain '.' or start with '$' (host ids are
 * UUIDs); others are refused with BNB_EINVAL.
 *
 * commit() is ONE findAndModify on the document whose filter holds every
 * precondition: {_id, version: expect, deleted, applied: {$ne: event id}};
 * the update $inc's the version, $set's body/keys, $push'es the applied id and
 * the outbox ids and $set's the outbox entries. When nothing matched, one read
 * tells which precondition failed (EALREADY > ENOENT > EEXIST), or the attempt
 * is repeated when the document changed in between. A create (expect 0) is an
 * insert (duplicate _id => the document exists). Everything a commit does is
 * thus in one document write: atomic without transactions.
 *
 * applied keeps every event id applied to the document (no cap): a cap would
 * let a very late redelivery through, and FerretDB 1.24 has no $push $slice
 * to cap atomically. Ids are ~40 bytes; a document carries a few thousand
 * without trouble.
 *
 * DELETE leaves a tombstone (deleted: true, body/keys null) that keeps its
 * pending outbox entries until they are acked and keeps its applied ids and
 * its version, so a re-create continues the version (no ABA) and a redelivered
 * event is still recognised. get/list skip tombstones.
 *
 * outbox_fetch returns each document's entries in commit order; across
 * documents it merges by a per-store sequence (microsecond clock, strictly
 * increasing per process), which is commit order within one process.
 *
 * FerretDB 1.24 findings (checked against its source and a real server):
 *  - findAndModify/update are NOT atomic read-modify-write: the handler reads
 *    the document, applies the operators in Go and writes it back with
 *    `UPDATE ... WHERE _id = ?` (backends/sqlite/collection.go UpdateAll), so
 *    two concurrent conditional updates of one document can both "match" and
 *    one update is lost (seen: 8 threads x 50 CAS increments ended at 114).
 *    Only the unique _id on insert is enforced atomically. Therefore every
 *    write to a document (commit, outbox ack) takes an in-process per-document
 *    lock (64 stripes). This makes the backend correct on FerretDB for ONE
 *    writing process per store (one pod per plugin); with several processes
 *    writing the same store it is correct on MongoDB proper only.
 *  - $pull takes values only (no conditions); $push has $each but no $slice;
 *    findAndModify rejects a "fields" projection (NotImplemented) so the whole
 *    new document comes back; no sessions (mongoc's endSessions at pool
 *    destroy is refused: that warning is dropped); createIndexes listing
 *    several already existing indexes panics the connection (one index per
 *    command here); only `{_id: value}` filters are pushed down to SQLite,
 *    every other filter is a scan in FerretDB.
 *  - Work: insert (duplicate _id => code 11000), $set/$unset/$inc/$push $each/
 *    $pullAll, {array: {$ne: x}}, {array: {$in: [...]}}, "array.0" $exists,
 *    sort, limit, count_documents, createIndexes (one at a time).
 *
 * Connections: mongoc_client_pool_t with max size cfg->pool_size (default 8);
 * the driver reconnects by itself after a network error.
 */
#include "bnb_build_config.h"
#include "bnb_storage.h"

#include <mongoc/mongoc.h>

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define MG_DEFAULT_POOL 8
#define MG_PREFIX_MAX   48
#define MG_ATTEMPTS     8
#define MG_STRIPES      64

typedef struct mg_store {
    bnb_store_t base;
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    char *db;
    char docs[MG_PREFIX_MAX + 8];
    char dead[MG_PREFIX_MAX + 8];
    pthread_mutex_t seq_mu;
    int64_t last_seq;
    pthread_mutex_t doc_mu[MG_STRIPES]; /* per-document writers, see top comment */
} mg_store_t;

static pthread_once_t mg_once = PTHREAD_ONCE_INIT;

/* One JSON line on stderr: {"level":"error","msg":...,"component","store"}. */
static void mg_log(const mg_store_t *s, const char *what, const bson_error_t *err)
{
    char msg[700];
    snprintf(msg, sizeof msg, "mongo %s: %s (domain %u, code %u)", what, err ? err->message : "failed",
             err ? err->domain : 0, err ? err->code : 0);
    json_t *line = json_pack("{s:s, s:s, s:s, s:s?}", "level", "error", "msg", msg, "component", "storage.mongo",
                             "store", s ? s->docs : NULL);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(line);
}

/* mongoc's own warnings as JSON lines too (its default handler prints plain
 * text); "endSessions" is refused by FerretDB at every pool destroy: dropped. */
static void mg_log_handler(mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
    (void)data;
    if (level > MONGOC_LOG_LEVEL_WARNING || strstr(message, "endSessions"))
        return;
    json_t *line = json_pack("{s:s, s:s, s:s, s:s}", "level", level <= MONGOC_LOG_LEVEL_CRITICAL ? "error" : "warn",
                             "msg", message, "component", "storage.mongo", "domain", domain ? domain : "");
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(line);
}

static void mg_lib_init(void)
{
    mongoc_init();
    mongoc_log_set_handler(mg_log_handler, NULL);
}

static bool name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!(isalnum((unsigned char)s[n]) || s[n] == '_'))
            return false;
    return n > 0 && n <= MG_PREFIX_MAX;
}

/* An event id usable as a field name. */
static bool event_id_ok(const char *s)
{
    return s && *s && *s != '$' && !strchr(s, '.');
}

static bool is_dup(const bson_error_t *e)
{
    return e->code == 11000 || e->code == 11001;
}

static int64_t next_seq(mg_store_t *s)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t now = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    pthread_mutex_lock(&s->seq_mu);
    if (now <= s->last_seq)
        now = s->last_seq + 1;
    s->last_seq = now;
    pthread_mutex_unlock(&s->seq_mu);
    return now;
}

/* The writer lock of document key k (FNV-1a stripe). */
static pthread_mutex_t *doc_lock(mg_store_t *s, const char *k)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &s->doc_mu[h % MG_STRIPES];
}

/* "<coll>/<id>" */
static char *doc_key(const char *coll, const char *id)
{
    char *k = NULL;
    if (asprintf(&k, "%s/%s", coll, id) < 0)
        return NULL;
    return k;
}

static void append_str_or_null(bson_t *b, const char *key, const char *v)
{
    if (v)
        BSON_APPEND_UTF8(b, key, v);
    else
        BSON_APPEND_NULL(b, key);
}

/* URL for messages: no password. */
static void url_show(const mongoc_uri_t *uri, const char *db, char *out, size_t n)
{
    size_t len = 0;
    const char *user = mongoc_uri_get_username(uri);
    len += (size_t)snprintf(out + len, n - len, "mongodb://%s%s", user ? user : "", user ? "@" : "");
    int i = 0;
    for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h && len < n; h = h->next, i++)
        len += (size_t)snprintf(out + len, n - len, "%s%s", i ? "," : "", h->host_and_port);
    if (len < n)
        snprintf(out + len, n - len, "/%s", db);
}

/* ---- open / close -------------------------------------------------------- */

/* One createIndexes command per index: FerretDB 1.24 panics (and drops the
 * connection) on a createIndexes listing several indexes that already exist
 * (validateIndexesForCreation deletes from a shrinking slice). */
static int create_indexes(mongoc_client_t *cl, mg_store_t *s, bson_error_t *err)
{
    static const char *const names[] = {"by_key1", "by_key2", "by_outbox"};
    for (int i = 0; i < 3; i++) {
        bson_t cmd = BSON_INITIALIZER, idx, one, key, reply;
        BSON_APPEND_UTF8(&cmd, "createIndexes", s->docs);
        BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &idx);
        BSON_APPEND_DOCUMENT_BEGIN(&idx, "0", &one);
        BSON_APPEND_DOCUMENT_BEGIN(&one, "key", &key);
        if (i < 2) {
            BSON_APPEND_INT32(&key, "coll", 1);
            BSON_APPEND_INT32(&key, i == 0 ? "key1" : "key2", 1);
        } else {
            BSON_APPEND_INT32(&key, "outbox_ids", 1);
        }
        bson_append_document_end(&one, &key);
        BSON_APPEND_UTF8(&one, "name", names[i]);
        bson_append_document_end(&idx, &one);
        bson_append_array_end(&cmd, &idx);
        bool ok = mongoc_client_write_command_with_opts(cl, s->db, &cmd, NULL, &reply, err);
        bson_destroy(&reply);
        bson_destroy(&cmd);
        if (!ok)
            return BNB_EIO;
    }
    return 0;
}

static int mg_ping_client(mongoc_client_t *cl, const char *db, bson_error_t *err)
{
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_t reply;
    bool ok = mongoc_client_command_simple(cl, db, cmd, NULL, &reply, err);
    bson_destroy(&reply);
    bson_destroy(cmd);
    return ok ? 0 : BNB_EIO;
}

static int mg_open(const bnb_storage_config_t *cfg, bnb_store_t **out, char *errbuf, size_t errlen)
{
    char dummy[1];
    if (!errbuf || !errlen) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    *out = NULL;
    bson_error_t err;
    char shown[512];
    mongoc_client_t *cl = NULL;
    int rc;

    pthread_once(&mg_once, mg_lib_init);
    const char *name = cfg->name ? cfg->name : "bnb";
    if (!name_ok(name)) {
        snprintf(errbuf, errlen, "mongo: store name '%s' must be [A-Za-z0-9_]{1,%d}", name, MG_PREFIX_MAX);
        return BNB_EINVAL;
    }
    if (!cfg->url) {
        snprintf(errbuf, errlen, "mongo: no url configured");
        return BNB_EINVAL;
    }
    mg_store_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errbuf, errlen, "mongo: out of memory");
        return BNB_ENOMEM;
    }
    pthread_mutex_init(&s->seq_mu, NULL);
    for (int i = 0; i < MG_STRIPES; i++)
        pthread_mutex_init(&s->doc_mu[i], NULL);
    s->base.ops = &bnb_storage_mongo;
    snprintf(s->docs, sizeof s->docs, "%s_docs", name);
    snprintf(s->dead, sizeof s->dead, "%s_dead", name);

    s->uri = mongoc_uri_new_with_error(cfg->url, &err);
    if (!s->uri) {
        /* the message of mongoc may quote the URL: do not echo it */
        snprintf(errbuf, errlen, "mongo: invalid url (expected mongodb://host:port/db)");
        rc = BNB_EINVAL;
        goto fail;
    }
    const char *db = mongoc_uri_get_database(s->uri);
    s->db = strdup(db && *db ? db : "bearbnb");
    if (!s->db) {
        rc = BNB_ENOMEM;
        snprintf(errbuf, errlen, "mongo: out of memory");
        goto fail;
    }
    url_show(s->uri, s->db, shown, sizeof shown);
    if (!mongoc_uri_has_option(s->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(s->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
    if (!mongoc_uri_has_option(s->uri, MONGOC_URI_APPNAME))
        mongoc_uri_set_appname(s->uri, "bearbnb");

    s->pool = mongoc_client_pool_new_with_error(s->uri, &err);
    if (!s->pool) {
        snprintf(errbuf, errlen, "%s: %s", shown, err.message);
        rc = BNB_EINVAL;
        goto fail;
    }
    mongoc_client_pool_set_error_api(s->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_max_size(s->pool, (uint32_t)(cfg->pool_size > 0 ? cfg->pool_size : MG_DEFAULT_POOL));

    cl = mongoc_client_pool_pop(s->pool);
    if (!cl) {
        snprintf(errbuf, errlen, "%s: no client", shown);
        rc = BNB_EIO;
        goto fail;
    }
    if (mg_ping_client(cl, s->db, &err) != 0) {
        snprintf(errbuf, errlen, "%s: cannot reach server: %s", shown, err.message);
        rc = BNB_EIO;
        goto fail;
    }
    if (create_indexes(cl, s, &err) != 0) {
        snprintf(errbuf, errlen, "%s: cannot create indexes on %s: %s", shown, s->docs, err.message);
        rc = BNB_EIO;
        goto fail;
    }
    mongoc_client_pool_push(s->pool, cl);
    *out = &s->base;
    return 0;
fail:
    if (cl)
        mongoc_client_pool_push(s->pool, cl);
    if (s->pool)
        mongoc_client_pool_destroy(s->pool);
    if (s->uri)
        mongoc_uri_destroy(s->uri);
    free(s->db);
    pthread_mutex_destroy(&s->seq_mu);
    for (int i = 0; i < MG_STRIPES; i++)
        pthread_mutex_destroy(&s->doc_mu[i]);
    free(s);
    return rc;
}

static void mg_close(bnb_store_t *st)
{
    mg_store_t *s = (mg_store_t *)st;
    if (!s)
        return;
    mongoc_client_pool_destroy(s->pool);
    mongoc_uri_destroy(s->uri);
    free(s->db);
    pthread_mutex_destroy(&s->seq_mu);
    for (int i = 0; i < MG_STRIPES; i++)
        pthread_mutex_destroy(&s->doc_mu[i]);
    free(s);
}

static int mg_ping(bnb_store_t *st)
{
    mg_store_t *s = (mg_store_t *)st;
    bson_error_t err;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    if (!cl)
        return BNB_EIO;
    int rc = mg_ping_client(cl, s->db, &err);
    mongoc_client_pool_push(s->pool, cl);
    if (rc)
        mg_log(s, "ping", &err);
    return rc;
}

/* ---- reads --------------------------------------------------------------- */

/* The first document matching `filter` (a copy in *doc), or BNB_ENOENT. */
static int find_one(const mg_store_t *s, mongoc_collection_t *c, const bson_t *filter, const bson_t *projection,
                    bson_t **doc)
{
    *doc = NULL;
    bson_t opts = BSON_INITIALIZER;
    if (projection)
        BSON_APPEND_DOCUMENT(&opts, "projection", projection);
    BSON_APPEND_INT64(&opts, "limit", 1);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, &opts, NULL);
    bson_destroy(&opts);
    const bson_t *d;
    bson_error_t err;
    int rc = BNB_ENOENT;
    if (mongoc_cursor_next(cur, &d)) {
        *doc = bson_copy(d);
        rc = *doc ? 0 : BNB_ENOMEM;
    } else if (mongoc_cursor_error(cur, &err)) {
        mg_log(s, "find", &err);
        rc = BNB_EIO;
    }
    mongoc_cursor_destroy(cur);
    return rc;
}

static int64_t get_i64(const bson_t *d, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, d, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

static bool get_bool(const bson_t *d, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, d, key) && bson_iter_as_bool(&it);
}

/* NULL when missing or not a string. */
static const char *get_str(const bson_t *d, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, d, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

/* Does array field `key` of d contain the string v? */
static bool array_has(const bson_t *d, const char *key, const char *v)
{
    bson_iter_t it, child;
    if (!bson_iter_init_find(&it, d, key) || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &child))
        return false;
    while (bson_iter_next(&child))
        if (BSON_ITER_HOLDS_UTF8(&child) && !strcmp(bson_iter_utf8(&child, NULL), v))
            return true;
    return false;
}

static json_t *parse_body(const bson_t *d)
{
    const char *txt = get_str(d, "body");
    json_error_t jerr;
    return txt ? json_loads(txt, 0, &jerr) : NULL;
}

static int mg_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    mg_store_t *s = (mg_store_t *)st;
    if (body)
        *body = NULL;
    if (!coll || !id)
        return BNB_EINVAL;
    char *k = doc_key(coll, id);
    if (!k)
        return BNB_ENOMEM;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, s->docs);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(k), "deleted", BCON_BOOL(false));
    bson_t *proj = BCON_NEW("body", BCON_INT32(1), "version", BCON_INT32(1));
    bson_t *doc = NULL;
    int rc = find_one(s, c, filter, proj, &doc);
    if (rc == 0) {
        if (body && !(*body = parse_body(doc)))
            rc = BNB_EIO;
        else if (version)
            *version = get_i64(doc, "version");
    }
    bson_destroy(doc);
    bson_destroy(proj);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    free(k);
    return rc;
}

static int mg_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    mg_store_t *s = (mg_store_t *)st;
    *out = NULL;
    if (!coll || which < 0 || which > 2 || (which && !value))
        return BNB_EINVAL;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, s->docs);
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "coll", coll);
    BSON_APPEND_BOOL(&filter, "deleted", false);
    if (which)
        BSON_APPEND_UTF8(&filter, which == 1 ? "key1" : "key2", value);
    bson_t *opts = BCON_NEW("projection", "{", "id", BCON_INT32(1), "version", BCON_INT32(1), "body", BCON_INT32(1),
                            "}", "sort", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, opts, NULL);
    json_t *arr = json_array();
    int rc = arr ? 0 : BNB_ENOMEM;
    const bson_t *d;
    while (!rc && mongoc_cursor_next(cur, &d)) {
        json_t *b = parse_body(d);
        const char *id = get_str(d, "id");
        if (!b || !id) {
            json_decref(b);
            rc = BNB_EIO;
            break;
        }
        json_t *item = json_pack("{s:s, s:I, s:o}", "id", id, "version", (json_int_t)get_i64(d, "version"), "body", b);
        if (!item || json_array_append_new(arr, item))
            rc = BNB_ENOMEM;
    }
    bson_error_t err;
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "list", &err);
        rc = BNB_EIO;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    if (rc)
        json_decref(arr);
    else
        *out = arr;
    return rc;
}

/* ---- commit -------------------------------------------------------------- */

/* Fields of the outbox entries and the applied id, for an insert (arrays) or
 * an update ($push / $set parts). */
static void append_entry(bson_t *b, const char *key, const bnb_outbox_new_t *e, int64_t seq)
{
    bson_t sub;
    BSON_APPEND_DOCUMENT_BEGIN(b, key, &sub);
    BSON_APPEND_UTF8(&sub, "topic", e->topic);
    append_str_or_null(&sub, "key", e->key);
    BSON_APPEND_UTF8(&sub, "payload", e->payload);
    BSON_APPEND_INT64(&sub, "seq", seq);
    bson_append_document_end(b, &sub);
}

static bson_t *build_insert(const char *k, const bnb_write_t *w, const char *body_txt, const bnb_outbox_new_t *ev,
                            size_t nev, const int64_t *seqs, const char *applied)
{
    bson_t *d = bson_new(), arr, map;
    char idx[24];
    BSON_APPEND_UTF8(d, "_id", k);
    BSON_APPEND_UTF8(d, "coll", w->coll);
    BSON_APPEND_UTF8(d, "id", w->id);
    BSON_APPEND_INT64(d, "version", 1);
    BSON_APPEND_BOOL(d, "deleted", false);
    BSON_APPEND_UTF8(d, "body", body_txt);
    append_str_or_null(d, "key1", w->key1);
    append_str_or_null(d, "key2", w->key2);
    BSON_APPEND_ARRAY_BEGIN(d, "applied", &arr);
    if (applied)
        BSON_APPEND_UTF8(&arr, "0", applied);
    bson_append_array_end(d, &arr);
    BSON_APPEND_ARRAY_BEGIN(d, "outbox_ids", &arr);
    for (size_t i = 0; i < nev; i++) {
        snprintf(idx, sizeof idx, "%zu", i);
        BSON_APPEND_UTF8(&arr, idx, ev[i].event_id);
    }
    bson_append_array_end(d, &arr);
    BSON_APPEND_DOCUMENT_BEGIN(d, "outbox", &map);
    for (size_t i = 0; i < nev; i++)
        append_entry(&map, ev[i].event_id, &ev[i], seqs[i]);
    bson_append_document_end(d, &map);
    return d;
}

static bson_t *build_update(const bnb_write_t *w, const char *body_txt, const bnb_outbox_new_t *ev, size_t nev,
                            const int64_t *seqs, const char *applied)
{
    bson_t *u = bson_new(), sub, push, each, arr;
    char idx[24];
    BSON_APPEND_DOCUMENT_BEGIN(u, "$inc", &sub);
    BSON_APPEND_INT64(&sub, "version", 1);
    bson_append_document_end(u, &sub);

    if (w->op != BNB_WRITE_TOUCH || nev) {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$set", &sub);
        if (w->op == BNB_WRITE_PUT) {
            BSON_APPEND_BOOL(&sub, "deleted", false);
            BSON_APPEND_UTF8(&sub, "body", body_txt);
            append_str_or_null(&sub, "key1", w->key1);
            append_str_or_null(&sub, "key2", w->key2);
        } else if (w->op == BNB_WRITE_DELETE) {
            BSON_APPEND_BOOL(&sub, "deleted", true);
            BSON_APPEND_NULL(&sub, "body");
            BSON_APPEND_NULL(&sub, "key1");
            BSON_APPEND_NULL(&sub, "key2");
        }
        for (size_t i = 0; i < nev; i++) {
            char *path = NULL;
            if (asprintf(&path, "outbox.%s", ev[i].event_id) < 0) {
                bson_destroy(u);
                return NULL;
            }
            append_entry(&sub, path, &ev[i], seqs[i]);
            free(path);
        }
        bson_append_document_end(u, &sub);
    }
    if (applied || nev) {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$push", &push);
        if (applied)
            BSON_APPEND_UTF8(&push, "applied", applied);
        if (nev) {
            BSON_APPEND_DOCUMENT_BEGIN(&push, "outbox_ids", &each);
            BSON_APPEND_ARRAY_BEGIN(&each, "$each", &arr);
            for (size_t i = 0; i < nev; i++) {
                snprintf(idx, sizeof idx, "%zu", i);
                BSON_APPEND_UTF8(&arr, idx, ev[i].event_id);
            }
            bson_append_array_end(&each, &arr);
            bson_append_document_end(&push, &each);
        }
        bson_append_document_end(u, &push);
    }
    return u;
}

/* Insert the whole document (version 1). 0, MG dup => BNB_EEXIST, or EIO. */
static int try_insert(const mg_store_t *s, mongoc_collection_t *c, const bson_t *doc)
{
    bson_error_t err;
    if (mongoc_collection_insert_one(c, doc, NULL, NULL, &err))
        return 0;
    if (is_dup(&err))
        return BNB_EEXIST;
    mg_log(s, "insert", &err);
    return BNB_EIO;
}

/* One findAndModify; 0 with *v when a document matched, BNB_ENOENT when none. */
static int try_update(const mg_store_t *s, mongoc_collection_t *c, const bson_t *filter, const bson_t *update,
                      int64_t *v)
{
    mongoc_find_and_modify_opts_t *o = mongoc_find_and_modify_opts_new();
    bson_t reply;
    bson_error_t err;
    int rc;
    mongoc_find_and_modify_opts_set_update(o, update);
    /* no "fields" projection: FerretDB 1.24 answers "not implemented" */
    mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    if (!mongoc_collection_find_and_modify_with_opts(c, filter, o, &reply, &err)) {
        mg_log(s, "findAndModify", &err);
        rc = BNB_EIO;
    } else {
        bson_iter_t it, val;
        if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
            bson_iter_recurse(&it, &val) && bson_iter_find(&val, "version") && BSON_ITER_HOLDS_NUMBER(&val)) {
            *v = bson_iter_as_int64(&val);
            rc = 0;
        } else {
            rc = BNB_ENOENT;
        }
    }
    bson_destroy(&reply);
    mongoc_find_and_modify_opts_destroy(o);
    return rc;
}

static int mg_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_outbox_new_t *events, size_t nevents,
                     const char *applied, int64_t *new_version)
{
    mg_store_t *s = (mg_store_t *)st;
    if (!w || !w->coll || !w->id || (nevents && !events) || w->expect_version < -1)
        return BNB_EINVAL;
    if (w->op != BNB_WRITE_PUT && w->op != BNB_WRITE_DELETE && w->op != BNB_WRITE_TOUCH)
        return BNB_EINVAL;
    if (w->op == BNB_WRITE_PUT && !json_is_object(w->body))
        return BNB_EINVAL;
    for (size_t i = 0; i < nevents; i++) {
        if (!event_id_ok(events[i].event_id) || !events[i].topic || !events[i].payload)
            return BNB_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(events[i].event_id, events[j].event_id))
                return BNB_EINVAL;
    }

    int rc = BNB_EIO;
    char *body_txt = NULL, *k = NULL;
    int64_t *seqs = NULL;
    bson_t *ins = NULL, *upd = NULL, *filter = NULL, *doc = NULL, *proj = NULL;
    mongoc_client_t *cl = NULL;
    mongoc_collection_t *c = NULL;
    int64_t v = 0;
    bool create = w->expect_version == 0;

    if (w->op == BNB_WRITE_PUT && !(body_txt = json_dumps(w->body, JSON_COMPACT)))
        return BNB_ENOMEM;
    if (!(k = doc_key(w->coll, w->id)))
        goto nomem;
    if (nevents && !(seqs = malloc(nevents * sizeof *seqs)))
        goto nomem;
    for (size_t i = 0; i < nevents; i++)
        seqs[i] = next_seq(s);
    if (w->op == BNB_WRITE_PUT)
        ins = build_insert(k, w, body_txt, events, nevents, seqs, applied);
    upd = build_update(w, body_txt, events, nevents, seqs, applied);
    filter = bson_new();
    proj = BCON_NEW("version", BCON_INT32(1), "deleted", BCON_INT32(1), "applied", BCON_INT32(1));
    if (!upd || !filter || !proj || (w->op == BNB_WRITE_PUT && !ins))
        goto nomem;
    BSON_APPEND_UTF8(filter, "_id", k);
    if (create)
        BSON_APPEND_BOOL(filter, "deleted", true); /* re-create over a tombstone */
    else if (w->expect_version > 0 || w->op != BNB_WRITE_PUT)
        BSON_APPEND_BOOL(filter, "deleted", false);
    if (w->expect_version > 0)
        BSON_APPEND_INT64(filter, "version", w->expect_version);
    if (applied) {
        bson_t ne;
        BSON_APPEND_DOCUMENT_BEGIN(filter, "applied", &ne);
        BSON_APPEND_UTF8(&ne, "$ne", applied);
        bson_append_document_end(filter, &ne);
    }

    cl = mongoc_client_pool_pop(s->pool);
    c = mongoc_client_get_collection(cl, s->db, s->docs);
    bson_t *idfilter = BCON_NEW("_id", BCON_UTF8(k));
    pthread_mutex_t *lock = doc_lock(s, k);
    pthread_mutex_lock(lock);
    rc = BNB_EIO;
    for (int attempt = 0; attempt < MG_ATTEMPTS; attempt++) {
        if (create && w->op == BNB_WRITE_PUT) {
            rc = try_insert(s, c, ins);
            if (rc == 0) {
                v = 1;
                break;
            }
            if (rc != BNB_EEXIST)
                break;
        }
        rc = try_update(s, c, filter, upd, &v);
        if (rc != BNB_ENOENT)
            break; /* done, or I/O error */

        /* Nothing matched: find out which precondition failed. */
        bson_destroy(doc);
        rc = find_one(s, c, idfilter, proj, &doc);
        if (rc == BNB_ENOENT) {
            if (w->op != BNB_WRITE_PUT || w->expect_version > 0)
                break; /* BNB_ENOENT */
            if (create)
                continue;               /* it was just removed? insert again */
            rc = try_insert(s, c, ins); /* expect -1: upsert */
            if (rc == 0) {
                v = 1;
                break;
            }
            if (rc != BNB_EEXIST)
                break;
            continue;
        }
        if (rc)
            break;
        bool deleted = get_bool(doc, "deleted");
        if (applied && array_has(doc, "applied", applied)) {
            rc = BNB_EALREADY;
            break;
        }
        if (create) {
            if (!deleted) {
                rc = BNB_EEXIST;
                break;
            }
            continue;
        }
        if (deleted && (w->expect_version > 0 || w->op != BNB_WRITE_PUT)) {
            rc = BNB_ENOENT;
            break;
        }
        if (w->expect_version > 0 && get_i64(doc, "version") != w->expect_version) {
            rc = BNB_EEXIST;
            break;
        }
        rc = BNB_EIO; /* changed in between: try again */
    }
    pthread_mutex_unlock(lock);
    bson_destroy(idfilter);
    if (rc == 0 && new_version)
        *new_version = v;
    goto out;
nomem:
    rc = BNB_ENOMEM;
out:
    if (c)
        mongoc_collection_destroy(c);
    if (cl)
        mongoc_client_pool_push(s->pool, cl);
    bson_destroy(doc);
    bson_destroy(proj);
    bson_destroy(filter);
    bson_destroy(upd);
    bson_destroy(ins);
    free(seqs);
    free(k);
    free(body_txt);
    return rc;
}

/* ---- outbox -------------------------------------------------------------- */

typedef struct pend {
    bnb_outbox_entry_t e;
    int64_t seq;
} pend_t;

typedef struct run {
    pend_t *p;
    size_t n, next;
} run_t;

static int mg_outbox_fetch(bnb_store_t *st, size_t max, bnb_outbox_entry_t **out, size_t *n)
{
    mg_store_t *s = (mg_store_t *)st;
    *out = NULL;
    *n = 0;
    if (max == 0)
        return 0;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, s->docs);
    bson_t *filter = BCON_NEW("outbox_ids.0", "{", "$exists", BCON_BOOL(true), "}");
    bson_t *opts = BCON_NEW("projection", "{", "outbox_ids", BCON_INT32(1), "outbox", BCON_INT32(1), "}", "sort", "{",
                            "_id", BCON_INT32(1), "}", "limit", BCON_INT64((int64_t)max));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, opts, NULL);
    run_t *runs = NULL;
    size_t nruns = 0, total = 0;
    bnb_outbox_entry_t *res = NULL;
    int rc = 0;
    const bson_t *d;

    /* One run per document, in that document's commit order. */
    while (!rc && total < max && mongoc_cursor_next(cur, &d)) {
        bson_iter_t it, ids;
        if (!bson_iter_init_find(&it, d, "outbox_ids") || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &ids))
            continue;
        run_t *nr = realloc(runs, (nruns + 1) * sizeof *runs);
        if (!nr) {
            rc = BNB_ENOMEM;
            break;
        }
        runs = nr;
        run_t *r = &runs[nruns++];
        memset(r, 0, sizeof *r);
        while (!rc && total < max && bson_iter_next(&ids)) {
            if (!BSON_ITER_HOLDS_UTF8(&ids))
                continue;
            const char *eid = bson_iter_utf8(&ids, NULL);
            bson_iter_t ob, ent;
            if (!bson_iter_init_find(&ob, d, "outbox") || !BSON_ITER_HOLDS_DOCUMENT(&ob) ||
                !bson_iter_recurse(&ob, &ent) || !bson_iter_find(&ent, eid) || !BSON_ITER_HOLDS_DOCUMENT(&ent))
                continue; /* id without entry: cannot happen (one update writes both) */
            uint32_t len;
            const uint8_t *data;
            bson_t sub;
            bson_iter_document(&ent, &len, &data);
            if (!bson_init_static(&sub, data, len))
                continue;
            pend_t *np = realloc(r->p, (r->n + 1) * sizeof *r->p);
            if (!np) {
                rc = BNB_ENOMEM;
                break;
            }
            r->p = np;
            pend_t *p = &r->p[r->n++];
            const char *key = get_str(&sub, "key");
            p->e.event_id = strdup(eid);
            p->e.topic = strdup(get_str(&sub, "topic") ? get_str(&sub, "topic") : "");
            p->e.key = key ? strdup(key) : NULL;
            p->e.payload = strdup(get_str(&sub, "payload") ? get_str(&sub, "payload") : "");
            p->seq = get_i64(&sub, "seq");
            total++;
            if (!p->e.event_id || !p->e.topic || (key && !p->e.key) || !p->e.payload)
                rc = BNB_ENOMEM;
        }
    }
    bson_error_t err;
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "outbox fetch", &err);
        rc = BNB_EIO;
    }
    if (!rc && total) {
        /* Merge the runs by seq, keeping each run's own order. */
        res = calloc(total, sizeof *res);
        if (!res)
            rc = BNB_ENOMEM;
        for (size_t k = 0; !rc && k < total; k++) {
            run_t *best = NULL;
            for (size_t i = 0; i < nruns; i++)
                if (runs[i].next < runs[i].n && (!best || runs[i].p[runs[i].next].seq < best->p[best->next].seq))
                    best = &runs[i];
            res[k] = best->p[best->next].e;
            memset(&best->p[best->next].e, 0, sizeof best->p[best->next].e);
            best->next++;
        }
    }
    for (size_t i = 0; i < nruns; i++) {
        for (size_t j = 0; j < runs[i].n; j++) {
            free(runs[i].p[j].e.event_id);
            free(runs[i].p[j].e.topic);
            free(runs[i].p[j].e.key);
            free(runs[i].p[j].e.payload);
        }
        free(runs[i].p);
    }
    free(runs);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    if (rc) {
        if (res)
            bnb_outbox_entries_free(res, total);
        return rc;
    }
    *out = res;
    *n = total;
    return 0;
}

static int mg_outbox_ack(bnb_store_t *st, const char *const *event_ids, size_t n)
{
    mg_store_t *s = (mg_store_t *)st;
    if (n == 0)
        return 0;
    if (!event_ids)
        return BNB_EINVAL;
    /* Per document (under its writer lock, FerretDB updates are read-modify-write):
     * {_id} -> {$pullAll: {outbox_ids: ids}, $unset: {outbox.<id>: ""}} */
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, f, in, pa, arr, un;
    char idx[24];
    size_t m = 0;
    int rc = 0;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "outbox_ids", &f);
    BSON_APPEND_ARRAY_BEGIN(&f, "$in", &in);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$pullAll", &pa);
    BSON_APPEND_ARRAY_BEGIN(&pa, "outbox_ids", &arr);
    for (size_t i = 0; i < n; i++) {
        if (!event_id_ok(event_ids[i]))
            continue;
        snprintf(idx, sizeof idx, "%zu", m++);
        BSON_APPEND_UTF8(&in, idx, event_ids[i]);
        BSON_APPEND_UTF8(&arr, idx, event_ids[i]);
    }
    bson_append_array_end(&f, &in);
    bson_append_document_end(&filter, &f);
    bson_append_array_end(&pa, &arr);
    bson_append_document_end(&update, &pa);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$unset", &un);
    for (size_t i = 0; i < n && !rc; i++) {
        char *path = NULL;
        if (!event_id_ok(event_ids[i]))
            continue;
        if (asprintf(&path, "outbox.%s", event_ids[i]) < 0) {
            rc = BNB_ENOMEM;
            break;
        }
        BSON_APPEND_UTF8(&un, path, "");
        free(path);
    }
    bson_append_document_end(&update, &un);
    if (rc || !m)
        goto out;

    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, s->docs);
    bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, opts, NULL);
    const bson_t *d;
    bson_error_t err;
    while (!rc && mongoc_cursor_next(cur, &d)) {
        const char *k = get_str(d, "_id");
        if (!k)
            continue;
        bson_t *one = BCON_NEW("_id", BCON_UTF8(k));
        pthread_mutex_t *lock = doc_lock(s, k);
        pthread_mutex_lock(lock);
        if (!mongoc_collection_update_one(c, one, &update, NULL, NULL, &err)) {
            mg_log(s, "outbox ack", &err);
            rc = BNB_EIO;
        }
        pthread_mutex_unlock(lock);
        bson_destroy(one);
    }
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "outbox ack (find)", &err);
        rc = BNB_EIO;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
out:
    bson_destroy(&filter);
    bson_destroy(&update);
    return rc;
}

/* ---- dead letters -------------------------------------------------------- */

static int mg_park(bnb_store_t *st, const char *consumer, const char *event_json, const char *reason)
{
    mg_store_t *s = (mg_store_t *)st;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    bson_t *d = BCON_NEW("consumer", BCON_UTF8(consumer ? consumer : ""), "reason", BCON_UTF8(reason ? reason : ""),
                         "event", BCON_UTF8(event_json ? event_json : ""), "at",
                         BCON_DATE_TIME((int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000));
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, s->dead);
    bson_error_t err;
    int rc = 0;
    if (!mongoc_collection_insert_one(c, d, NULL, NULL, &err)) {
        mg_log(s, "park", &err);
        rc = BNB_EIO;
    }
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    bson_destroy(d);
    return rc;
}

static int mg_dead_count(bnb_store_t *st, int64_t *count)
{
    mg_store_t *s = (mg_store_t *)st;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, s->dead);
    bson_t filter = BSON_INITIALIZER;
    bson_error_t err;
    int64_t n = mongoc_collection_count_documents(c, &filter, NULL, NULL, NULL, &err);
    bson_destroy(&filter);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    if (n < 0) {
        mg_log(s, "dead count", &err);
        return BNB_EIO;
    }
    *count = n;
    return 0;
}

const bnb_storage_ops_t bnb_storage_mongo = {
    .name = "mongo",
    .open = mg_open,
    .close = mg_close,
    .ping = mg_ping,
    .get = mg_get,
    .list = mg_list,
    .commit = mg_commit,
    .outbox_fetch = mg_outbox_fetch,
    .outbox_ack = mg_outbox_ack,
    .park = mg_park,
    .dead_count = mg_dead_count,
};

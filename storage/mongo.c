/*
 * BearBnB storage backend: MongoDB wire protocol (mongo-c-driver 1.23), written
 * for FerretDB 1.24 (SQLite handler): NO multi-document transactions or
 * sessions are used, and no conditional update is trusted to be atomic.
 *
 * URL: mongodb://[user:pass@]host:port/db[?options] (any mongoc URL; the
 * database defaults to "bearbnb"). serverSelectionTimeoutMS defaults to 5000.
 *
 * What FerretDB 1.24 guarantees, and what it costs (its source, EXPLAIN on
 * its SQLite files, and tests/storage/test_mongo.c):
 *  - update / findAndModify / replace are read-modify-write in Go: the handler
 *    reads the document, applies the operators and writes it back with
 *    `UPDATE ... WHERE _id = ?`. Two processes doing a conditional update
 *    ({_id, n: k} -> n: k + 1) both "match": test_mongo loses ~100 of 300.
 *  - Atomic are: an insert against a unique index (the _id, or a unique field
 *    index: SQLite's UNIQUE constraint), a delete by _id, a write by _id.
 *  - Cheap are only inserts (the unique index is used) and find({}) with a
 *    limit (pushed down as LIMIT). Even {_id: x} is a scan of the collection's
 *    table: the pushed-down WHERE reads `_ferretdb_sjson->'$._id'`, the _id
 *    index is on `_ferretdb_sjson->"_id"`, SQLite does not match them
 *    (EXPLAIN QUERY PLAN: SCAN). Every other filter and every sort is a scan
 *    in Go. createIndexes listing several existing indexes panics the
 *    connection: indexes are created one per command.
 * So checks are inserts wherever possible, and the relay reads only a
 * collection that holds pending work, with find({}) + limit.
 *
 * Collections, prefixed with the store name <p>:
 *   <p>_docs      undeclared collections: {_id: "<coll>/<id>", coll, id,
 *                 version, deleted, body: "<JSON text>", key1, key2, + meta}
 *   <p>_c_<coll>  one per declared collection: {_id: id, version, deleted,
 *                 body: {real BSON}, f: {declared fields with their declared
 *                 type}, _t: 0 (a tombstone: its id), key1, key2, + meta},
 *                 indexes {_t, f.a, f.b, _id} per declared index, unique
 *                 ones {f.a, f.b, _t} (so that tombstones never collide)
 *   meta fields:  _ap: the last MG_RING (64) applied event ids, _cl: [{k, t}]
 *                 the claims it holds, _wr: [{v, t, w}] the intents of its last
 *                 MG_WR (32) versions, wtok: that of the current one, mtime
 *   <p>_wal       write intents: {_id: token, slot: "<ref>#<version>" UNIQUE,
 *                 mc, k (the document), ver, state "p"|"c", at, seq, ap (the
 *                 applied event id), ev: [events]}; a commit in flight, or
 *                 committed and not yet settled by the relay
 *   <p>_applied   {_id: "<ref>|<event id>", t: token}: applied-event marks
 *   <p>_claims    {_id: <claim key>, oc, oi (owner collection and _id), t, at}
 *   <p>_locks     {_id: "<claim key>!<token>"}: one taker per dead claim
 *   <p>_colls     {_id: <coll>, def}: the declared definitions
 *   <p>_meta      {_id: "schema", v}
 *   <p>_dead      {consumer, reason, event, at}
 * (<ref> is "<mongo collection>/<_id>".)
 *
 * A commit (no lock, any number of processes):
 *  1. the write intent of version v + 1 is inserted (slot unique): one writer
 *     per version wins, whatever its process; a lost slot is a version
 *     conflict (BNB_EEXIST for a compare-and-swap, a retry otherwise). For a
 *     compare-and-swap v is expect_version and the document is read once,
 *     after the intent; a create first tries the document as new (its insert
 *     is the check); otherwise it is read before and after the intent.
 *  2. claims (and unique index values, as claims "\1u|<coll>|<index>|..."):
 *     insert {_id: key}; a key held by another document is BNB_ETAKEN (what
 *     this commit inserted is deleted again).
 *  3. the applied mark is inserted: a duplicate means the event was applied
 *     (BNB_EALREADY), unless that mark's intent is still unsettled (wait for
 *     it: it writes, or dies and its mark is dropped with it).
 *  4. the document is written by _id ($set, or an insert): version v + 1,
 *     body, fields, claims, _ap, _wr. This write is the commit point.
 *  5. the claims it dropped are deleted, its intent is marked "c".
 * Checks come in the contract's order (applied, version, claims): a commit
 * failing its version check looks for its applied mark first.
 * A crash between 1 and 4 leaves an intent whose document never reached its
 * version (and maybe claims and a mark with its token): after MG_GRACE_MS
 * (30 s; far longer than a commit, which checks before step 4 that it is well
 * within it) a later writer or the relay deletes its mark, then the intent
 * (dead_mark_drop; a mark that cannot be deleted keeps the intent). So a mark
 * whose intent is gone is always one of a commit that wrote: only such a mark
 * answers BNB_EALREADY (a mark left without its intent once made the
 * redelivered event of a killed commit "applied" that never was: the
 * dashboard lost a reservation view for good). A crash between 4 and 5
 * leaves an unmarked intent that the document's _wr names: committed (a
 * writer marks such an intent before it leaves _wr, so the relay can always
 * tell).
 *
 * Claims hold without transactions: a claim document names its owner, and the
 * owner document lists it (with its token) in _cl, written in the owner's own
 * atomic write (step 4). A claim is valid while its owner lists it. A claim its
 * owner does not list, older than MG_GRACE_MS, whose owner was not written in
 * that time either (a release writes the owner, then deletes the claim), was
 * left by a commit that died: one taker (the insert of <p>_locks/"<key>!<t>"
 * decides which) deletes it and claims the key.
 *
 * Applied marks: one document each in <p>_applied, inserted before the commit
 * point (its insert is the dedupe check, an index lookup whatever the
 * history); the document keeps its last MG_RING ids in _ap for the cheap
 * answer. Neither the document nor any check grows with history.
 *
 * Outbox: a commit's events live in its intent in <p>_wal, which holds only
 * commits in flight or not yet settled. The relay reads it with find({}) +
 * limit (pushed down: O(pending), not O(stored documents)), publishes the
 * intents marked "c" (an unmarked one older than MG_INFLIGHT_MS is resolved
 * through its document's _wr), deletes each intent once its events are all
 * acked, and deletes finished intents without events in batches. Per
 * document, events come out in version order; across documents in commit
 * order (seq: a microsecond clock per process).
 *
 * Queries (declared collections): {_t: 0, $and: [conditions on f.<field>,
 * keyset $or]}, sort {f.<order>: 1, _id: 1}, limit + 1, one batch. MongoDB
 * serves them from the declared indexes; FerretDB 1.24 scans the collection.
 *
 * Connections: mongoc_client_pool_t with max size cfg->pool_size (default 8);
 * the driver reconnects by itself after a network error. Test knobs:
 * BNB_STORAGE_MONGO_GRACE_MS (the grace period), BNB_STORAGE_MONGO_CRASH
 * (end the process at a commit stage, as a kill -9 would).
 */
#include "bnb_build_config.h"
#include "bnb_storage.h"
#include "v2.h"

#include <mongoc/mongoc.h>

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define MG_DEFAULT_POOL 8
#define MG_PREFIX_MAX   48
#define MG_NAME_MAX     (MG_PREFIX_MAX + BNB__COLL_NAME_MAX + 8)
#define MG_ATTEMPTS     50
#define MG_RING         64 /* applied ids a document remembers */
#define MG_WR           32 /* write intents (version, token) a document remembers */
#define MG_GRACE_MS     30000
#define MG_INFLIGHT_MS  2000 /* an unmarked intent younger than this is a commit in flight */
#define MG_SCHEMA       2
#define MG_PW_MAX       20000 /* intents handed out and not acked that are remembered */

/* An intent whose events outbox_fetch handed out, until they are all acked. */
typedef struct mg_pw {
    char *tok;
    size_t nev;
    char **eids;
    bool *acked;
} mg_pw_t;

typedef struct mg_store {
    bnb_store_t base;
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    char *db;
    char prefix[MG_PREFIX_MAX + 1];
    char docs[MG_NAME_MAX], wal[MG_NAME_MAX], applied[MG_NAME_MAX], claims[MG_NAME_MAX], locks[MG_NAME_MAX],
        colls_c[MG_NAME_MAX], meta[MG_NAME_MAX], dead[MG_NAME_MAX];
    int64_t grace_ms;
    pthread_mutex_t seq_mu;
    int64_t last_seq;
    bnb__colls_t colls;
    pthread_mutex_t define_mu;
    /* intents whose events outbox_fetch handed out, until acked */
    pthread_mutex_t ack_mu;
    mg_pw_t *pw;
    size_t npw;
} mg_store_t;

static pthread_once_t mg_once = PTHREAD_ONCE_INIT;

/* ---- logging and small helpers -------------------------------------------- */

static void mg_log_at(const mg_store_t *s, const char *level, const char *msg)
{
    json_t *line = json_pack("{s:s, s:s, s:s, s:s?}", "level", level, "msg", msg, "component", "storage.mongo", "store",
                             s ? s->prefix : NULL);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(line);
}

static void mg_log_msg(const mg_store_t *s, const char *msg)
{
    mg_log_at(s, "error", msg);
}

/* One JSON line on stderr: {"level":"error","msg":...,"component","store"}. */
static void mg_log(const mg_store_t *s, const char *what, const bson_error_t *err)
{
    char msg[700];
    snprintf(msg, sizeof msg, "mongo %s: %s (domain %u, code %u)", what, err ? err->message : "failed",
             err ? err->domain : 0, err ? err->code : 0);
    mg_log_msg(s, msg);
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

static bool is_dup(const bson_error_t *e)
{
    return e->code == 11000 || e->code == 11001;
}

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
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

/* A token unique across processes and machines (an ObjectId). */
static void new_token(char out[25])
{
    bson_oid_t oid;
    bson_oid_init(&oid, NULL);
    bson_oid_to_string(&oid, out);
}

static void backoff(int attempt)
{
    unsigned ms = 1u << (attempt < 6 ? attempt : 6);
    usleep((useconds_t)(ms * 1000 + (unsigned)rand() % 1000));
}

static int64_t get_i64(const bson_t *d, const char *key)
{
    bson_iter_t it;
    if (d && bson_iter_init_find(&it, d, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

static bool get_bool(const bson_t *d, const char *key)
{
    bson_iter_t it;
    return d && bson_iter_init_find(&it, d, key) && bson_iter_as_bool(&it);
}

/* NULL when missing or not a string. */
static const char *get_str(const bson_t *d, const char *key)
{
    bson_iter_t it;
    if (d && bson_iter_init_find(&it, d, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

/* Does array field `key` of d contain the string v? */
static bool array_has(const bson_t *d, const char *key, const char *v)
{
    bson_iter_t it, child;
    if (!d || !bson_iter_init_find(&it, d, key) || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &child))
        return false;
    while (bson_iter_next(&child))
        if (BSON_ITER_HOLDS_UTF8(&child) && !strcmp(bson_iter_utf8(&child, NULL), v))
            return true;
    return false;
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

/* ---- JSON <-> BSON (declared collections keep real BSON) -------------------- */

static bool key_ok(const char *k)
{
    return k[0] != '$' && !strchr(k, '.');
}

static bool json_to_bson_value(bson_t *b, const char *key, const json_t *v);

/* The members of object o into b; false when a key cannot be a BSON field
 * ('$' first, or a '.') or nesting is too deep. */
static bool json_to_bson_obj(bson_t *b, const json_t *o, int depth)
{
    const char *k;
    json_t *v;
    if (depth > 64)
        return false;
    json_object_foreach((json_t *)o, k, v)
    {
        if (!key_ok(k))
            return false;
        if (json_is_object(v)) {
            bson_t sub;
            if (!BSON_APPEND_DOCUMENT_BEGIN(b, k, &sub) || !json_to_bson_obj(&sub, v, depth + 1) ||
                !bson_append_document_end(b, &sub))
                return false;
        } else if (json_is_array(v)) {
            bson_t sub;
            char idx[24];
            if (!BSON_APPEND_ARRAY_BEGIN(b, k, &sub))
                return false;
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *e = json_array_get(v, i);
                snprintf(idx, sizeof idx, "%zu", i);
                if (json_is_object(e)) {
                    bson_t d;
                    if (!BSON_APPEND_DOCUMENT_BEGIN(&sub, idx, &d) || !json_to_bson_obj(&d, e, depth + 1) ||
                        !bson_append_document_end(&sub, &d))
                        return false;
                } else if (json_is_array(e)) {
                    /* arrays of arrays: wrap through a temporary object */
                    json_t *tmp = json_pack("{s:O}", "a", e);
                    bson_t t = BSON_INITIALIZER;
                    bson_iter_t it;
                    bool ok = tmp && json_to_bson_obj(&t, tmp, depth + 1) && bson_iter_init_find(&it, &t, "a") &&
                              bson_append_iter(&sub, idx, -1, &it);
                    bson_destroy(&t);
                    json_decref(tmp);
                    if (!ok)
                        return false;
                } else if (!json_to_bson_value(&sub, idx, e)) {
                    return false;
                }
            }
            if (!bson_append_array_end(b, &sub))
                return false;
        } else if (!json_to_bson_value(b, k, v)) {
            return false;
        }
    }
    return true;
}

static bool json_to_bson_value(bson_t *b, const char *key, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return BSON_APPEND_UTF8(b, key, json_string_value(v));
    case JSON_INTEGER:
        return BSON_APPEND_INT64(b, key, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return BSON_APPEND_DOUBLE(b, key, json_real_value(v));
    case JSON_TRUE:
        return BSON_APPEND_BOOL(b, key, true);
    case JSON_FALSE:
        return BSON_APPEND_BOOL(b, key, false);
    case JSON_NULL:
        return BSON_APPEND_NULL(b, key);
    default:
        return false;
    }
}

static json_t *bson_iter_to_json(bson_iter_t *it, int depth);

static json_t *bson_doc_to_json(bson_iter_t *child, bool array, int depth)
{
    json_t *out = array ? json_array() : json_object();
    while (out && bson_iter_next(child)) {
        json_t *v = bson_iter_to_json(child, depth + 1);
        if (!v) {
            json_decref(out);
            return NULL;
        }
        if (array ? json_array_append_new(out, v) : json_object_set_new(out, bson_iter_key(child), v)) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *bson_iter_to_json(bson_iter_t *it, int depth)
{
    bson_iter_t child;
    if (depth > 66)
        return NULL;
    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8:
        return json_stringn(bson_iter_utf8(it, NULL), strlen(bson_iter_utf8(it, NULL)));
    case BSON_TYPE_INT32:
        return json_integer(bson_iter_int32(it));
    case BSON_TYPE_INT64:
        return json_integer(bson_iter_int64(it));
    case BSON_TYPE_DOUBLE:
        return json_real(bson_iter_double(it));
    case BSON_TYPE_BOOL:
        return json_boolean(bson_iter_bool(it));
    case BSON_TYPE_NULL:
        return json_null();
    case BSON_TYPE_DOCUMENT:
        return bson_iter_recurse(it, &child) ? bson_doc_to_json(&child, false, depth) : NULL;
    case BSON_TYPE_ARRAY:
        return bson_iter_recurse(it, &child) ? bson_doc_to_json(&child, true, depth) : NULL;
    default:
        return NULL;
    }
}

/* The body of a stored document: BSON subdocument (declared) or JSON text. */
static json_t *doc_body(const bson_t *d)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d, "body"))
        return NULL;
    if (BSON_ITER_HOLDS_UTF8(&it)) {
        json_error_t jerr;
        return json_loads(bson_iter_utf8(&it, NULL), 0, &jerr);
    }
    if (BSON_ITER_HOLDS_DOCUMENT(&it))
        return bson_iter_to_json(&it, 0);
    return NULL;
}

/* ---- collections and documents -------------------------------------------- */

/* Where a document lives. */
typedef struct mg_doc {
    const bnb__coll_t *dc; /* declared collection, or NULL: <p>_docs */
    char mc[MG_NAME_MAX];  /* its mongo collection */
    char *key;             /* its _id there */
    char *ref;             /* "<mc>/<key>" */
} mg_doc_t;

static void mg_doc_free(mg_doc_t *d)
{
    free(d->key);
    free(d->ref);
    d->key = d->ref = NULL;
}

static int mg_doc_init(mg_store_t *s, const char *coll, const char *id, mg_doc_t *d)
{
    memset(d, 0, sizeof *d);
    d->dc = bnb__colls_get(&s->colls, coll);
    if (d->dc) {
        snprintf(d->mc, sizeof d->mc, "%s_c_%s", s->prefix, d->dc->name);
        d->key = strdup(id);
    } else {
        snprintf(d->mc, sizeof d->mc, "%s", s->docs);
        if (asprintf(&d->key, "%s/%s", coll, id) < 0)
            d->key = NULL;
    }
    if (!d->key || asprintf(&d->ref, "%s/%s", d->mc, d->key) < 0) {
        d->ref = NULL;
        mg_doc_free(d);
        return BNB_ENOMEM;
    }
    return 0;
}

/* The first document matching `filter` (a copy in *doc), or BNB_ENOENT. */
static int find_one(const mg_store_t *s, mongoc_collection_t *c, const bson_t *filter, const bson_t *projection,
                    bson_t **doc)
{
    *doc = NULL;
    bson_t opts = BSON_INITIALIZER;
    if (projection)
        BSON_APPEND_DOCUMENT(&opts, "projection", projection);
    BSON_APPEND_INT64(&opts, "limit", 1);
    BSON_APPEND_BOOL(&opts, "singleBatch", true); /* no cursor left open: FerretDB is slow to close one */
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

/* find_one by _id (the only lookup FerretDB serves from an index). */
static int find_id(const mg_store_t *s, mongoc_collection_t *c, const char *id, const bson_t *projection, bson_t **doc)
{
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&f, "_id", id);
    int rc = find_one(s, c, &f, projection, doc);
    bson_destroy(&f);
    return rc;
}

static int delete_id(const mg_store_t *s, mongoc_collection_t *c, const char *id)
{
    bson_t f = BSON_INITIALIZER;
    bson_error_t err;
    BSON_APPEND_UTF8(&f, "_id", id);
    bool ok = mongoc_collection_delete_one(c, &f, NULL, NULL, &err);
    bson_destroy(&f);
    if (!ok) {
        mg_log(s, "delete", &err);
        return BNB_EIO;
    }
    return 0;
}

/* Insert; BNB_EEXIST on a duplicate key (not logged). */
static int insert_doc(const mg_store_t *s, mongoc_collection_t *c, const bson_t *doc)
{
    bson_error_t err;
    if (mongoc_collection_insert_one(c, doc, NULL, NULL, &err))
        return 0;
    if (is_dup(&err))
        return BNB_EEXIST;
    mg_log(s, "insert", &err);
    return BNB_EIO;
}

/* The applied mark of the intent `w` (a commit that died: never written),
 * deleted when it is that commit's (its token), before the intent itself is:
 * a mark whose intent is gone must always be one of a commit that wrote
 * (applied_dup answers BNB_EALREADY for it). 0 when the intent may go (no
 * mark, or deleted), BNB_EIO (keep the intent: the next pass tries again). */
static int dead_mark_drop(const mg_store_t *s, mongoc_collection_t *ap, const bson_t *w)
{
    const char *tok = get_str(w, "_id"), *mc = get_str(w, "mc"), *k = get_str(w, "k"), *apid = get_str(w, "ap");
    char *aid = NULL;
    if (!apid)
        return 0;
    if (!tok || !mc || !k || asprintf(&aid, "%s/%s|%s", mc, k, apid) < 0)
        return BNB_EIO;
    /* {_id, t}: not another commit's mark of that event (one inserted after
     * another cleaner dropped this one) */
    bson_t *f = BCON_NEW("_id", BCON_UTF8(aid), "t", BCON_UTF8(tok));
    bson_error_t err;
    bool ok = mongoc_collection_delete_one(ap, f, NULL, NULL, &err);
    if (!ok)
        mg_log(s, "delete a dead commit's applied mark", &err);
    bson_destroy(f);
    free(aid);
    return ok ? 0 : BNB_EIO;
}

/* ---- open / close -------------------------------------------------------- */

static int mg_ping_client(mongoc_client_t *cl, const char *db, bson_error_t *err)
{
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_t reply;
    bool ok = mongoc_client_command_simple(cl, db, cmd, NULL, &reply, err);
    bson_destroy(&reply);
    bson_destroy(cmd);
    return ok ? 0 : BNB_EIO;
}

/* One createIndexes command per index: FerretDB 1.24 panics (and drops the
 * connection) on a createIndexes listing several indexes that already exist
 * (validateIndexesForCreation deletes from a shrinking slice). `keys` is the
 * key document. */
static int create_index(mongoc_client_t *cl, const mg_store_t *s, const char *coll, const char *name,
                        const bson_t *keys, bool unique, bson_error_t *err)
{
    bson_t cmd = BSON_INITIALIZER, idx, one, reply;
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &idx);
    BSON_APPEND_DOCUMENT_BEGIN(&idx, "0", &one);
    BSON_APPEND_DOCUMENT(&one, "key", keys);
    BSON_APPEND_UTF8(&one, "name", name);
    if (unique)
        BSON_APPEND_BOOL(&one, "unique", true);
    bson_append_document_end(&idx, &one);
    bson_append_array_end(&cmd, &idx);
    bool ok = mongoc_client_write_command_with_opts(cl, s->db, &cmd, NULL, &reply, err);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok ? 0 : BNB_EIO;
}

static int create_base_indexes(mongoc_client_t *cl, const mg_store_t *s, bson_error_t *err)
{
    bson_t *k1 = BCON_NEW("coll", BCON_INT32(1), "key1", BCON_INT32(1));
    bson_t *k2 = BCON_NEW("coll", BCON_INT32(1), "key2", BCON_INT32(1));
    bson_t *slot = BCON_NEW("slot", BCON_INT32(1));
    int rc = create_index(cl, s, s->docs, "by_key1", k1, false, err);
    if (!rc)
        rc = create_index(cl, s, s->docs, "by_key2", k2, false, err);
    if (!rc)
        rc = create_index(cl, s, s->wal, "by_slot", slot, true, err);
    bson_destroy(k1);
    bson_destroy(k2);
    bson_destroy(slot);
    return rc;
}

static int load_colls(mg_store_t *s, mongoc_client_t *cl)
{
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, s->colls_c);
    bson_t filter = BSON_INITIALIZER;
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, NULL, NULL);
    const bson_t *d;
    bson_error_t err;
    int rc = 0;
    while (!rc && mongoc_cursor_next(cur, &d)) {
        const char *name = get_str(d, "_id"), *def = get_str(d, "def");
        bnb__coll_t *dc = name && def ? bnb__coll_load(name, def) : NULL;
        if (!dc) {
            mg_log_msg(s, "mongo: a recorded collection definition is unreadable");
            rc = BNB_EIO;
        } else {
            rc = bnb__colls_put(&s->colls, dc);
        }
    }
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "load definitions", &err);
        rc = BNB_EIO;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(&filter);
    mongoc_collection_destroy(c);
    return rc;
}

/* Stores written by the first version of this backend kept pending events and
 * every applied id inside each document (outbox_ids/outbox, applied): move
 * them to <p>_wal and <p>_applied once (a scan, at open, recorded in <p>_meta
 * so that it never runs again). Safe when two processes do it at once. */
static int migrate_v1(mg_store_t *s, mongoc_client_t *cl)
{
    mongoc_collection_t *meta = mongoc_client_get_collection(cl, s->db, s->meta);
    mongoc_collection_t *docs = mongoc_client_get_collection(cl, s->db, s->docs);
    mongoc_collection_t *wal = mongoc_client_get_collection(cl, s->db, s->wal);
    mongoc_collection_t *ap = mongoc_client_get_collection(cl, s->db, s->applied);
    bson_t *m = NULL;
    int rc = find_id(s, meta, "schema", NULL, &m);
    if (rc == 0 && get_i64(m, "v") >= MG_SCHEMA)
        goto out;
    if (rc != 0 && rc != BNB_ENOENT)
        goto out;
    rc = 0;
    bson_t *filter = BCON_NEW("$or", "[", "{", "outbox_ids.0", "{", "$exists", BCON_BOOL(true), "}", "}", "{",
                              "applied.0", "{", "$exists", BCON_BOOL(true), "}", "}", "]");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(docs, filter, NULL, NULL);
    const bson_t *d;
    bson_error_t err;
    while (!rc && mongoc_cursor_next(cur, &d)) {
        const char *id = get_str(d, "_id");
        bson_iter_t it, child;
        if (!id)
            continue;
        char ref[MG_NAME_MAX + 300];
        snprintf(ref, sizeof ref, "%s/%s", s->docs, id);
        /* applied ids */
        if (bson_iter_init_find(&it, d, "applied") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &child)) {
            while (!rc && bson_iter_next(&child)) {
                if (!BSON_ITER_HOLDS_UTF8(&child))
                    continue;
                char *aid = NULL;
                if (asprintf(&aid, "%s|%s", ref, bson_iter_utf8(&child, NULL)) < 0)
                    rc = BNB_ENOMEM;
                else {
                    bson_t *a = BCON_NEW("_id", BCON_UTF8(aid));
                    int r = insert_doc(s, ap, a);
                    if (r && r != BNB_EEXIST)
                        rc = r;
                    bson_destroy(a);
                    free(aid);
                }
            }
        }
        /* pending events: one committed intent each */
        if (bson_iter_init_find(&it, d, "outbox_ids") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &child)) {
            while (!rc && bson_iter_next(&child)) {
                if (!BSON_ITER_HOLDS_UTF8(&child))
                    continue;
                const char *eid = bson_iter_utf8(&child, NULL);
                bson_iter_t ob, ent;
                if (!bson_iter_init_find(&ob, d, "outbox") || !BSON_ITER_HOLDS_DOCUMENT(&ob) ||
                    !bson_iter_recurse(&ob, &ent) || !bson_iter_find(&ent, eid) || !BSON_ITER_HOLDS_DOCUMENT(&ent))
                    continue;
                uint32_t len;
                const uint8_t *data;
                bson_t sub;
                bson_iter_document(&ent, &len, &data);
                if (!bson_init_static(&sub, data, len))
                    continue;
                char slot[MG_NAME_MAX + 400];
                snprintf(slot, sizeof slot, "legacy/%s", eid);
                bson_t *w = BCON_NEW("_id", BCON_UTF8(eid), "slot", BCON_UTF8(slot), "mc", BCON_UTF8(s->docs), "k",
                                     BCON_UTF8(id), "state", BCON_UTF8("c"), "at", BCON_INT64(now_ms()), "seq",
                                     BCON_INT64(get_i64(&sub, "seq")), "ver", BCON_INT64(0));
                bson_t arr, one;
                BSON_APPEND_ARRAY_BEGIN(w, "ev", &arr);
                BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &one);
                BSON_APPEND_UTF8(&one, "id", eid);
                BSON_APPEND_UTF8(&one, "topic", get_str(&sub, "topic") ? get_str(&sub, "topic") : "");
                append_str_or_null(&one, "key", get_str(&sub, "key"));
                BSON_APPEND_UTF8(&one, "payload", get_str(&sub, "payload") ? get_str(&sub, "payload") : "");
                bson_append_document_end(&arr, &one);
                bson_append_array_end(w, &arr);
                int r = insert_doc(s, wal, w);
                if (r && r != BNB_EEXIST)
                    rc = r;
                bson_destroy(w);
            }
        }
        if (!rc) {
            bson_t *one = BCON_NEW("_id", BCON_UTF8(id));
            bson_t *upd = BCON_NEW("$unset", "{", "outbox_ids", BCON_UTF8(""), "outbox", BCON_UTF8(""), "applied",
                                   BCON_UTF8(""), "}");
            if (!mongoc_collection_update_one(docs, one, upd, NULL, NULL, &err)) {
                mg_log(s, "migrate", &err);
                rc = BNB_EIO;
            }
            bson_destroy(one);
            bson_destroy(upd);
        }
    }
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "migrate", &err);
        rc = BNB_EIO;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    if (!rc) {
        bson_t *sel = BCON_NEW("_id", BCON_UTF8("schema"));
        bson_t *doc = BCON_NEW("_id", BCON_UTF8("schema"), "v", BCON_INT32(MG_SCHEMA));
        bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
        if (!mongoc_collection_replace_one(meta, sel, doc, opts, NULL, &err) && !is_dup(&err)) {
            mg_log(s, "migrate", &err);
            rc = BNB_EIO;
        }
        bson_destroy(sel);
        bson_destroy(doc);
        bson_destroy(opts);
    }
out:
    bson_destroy(m);
    mongoc_collection_destroy(meta);
    mongoc_collection_destroy(docs);
    mongoc_collection_destroy(wal);
    mongoc_collection_destroy(ap);
    return rc;
}

static void mg_free(mg_store_t *s)
{
    if (s->pool)
        mongoc_client_pool_destroy(s->pool);
    if (s->uri)
        mongoc_uri_destroy(s->uri);
    free(s->db);
    pthread_mutex_destroy(&s->seq_mu);
    pthread_mutex_destroy(&s->define_mu);
    pthread_mutex_destroy(&s->ack_mu);
    bnb__colls_destroy(&s->colls);
    for (size_t i = 0; i < s->npw; i++) {
        for (size_t k = 0; k < s->pw[i].nev; k++)
            free(s->pw[i].eids[k]);
        free(s->pw[i].eids);
        free(s->pw[i].acked);
        free(s->pw[i].tok);
    }
    free(s->pw);
    free(s);
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
    pthread_mutex_init(&s->define_mu, NULL);
    pthread_mutex_init(&s->ack_mu, NULL);
    bnb__colls_init(&s->colls);
    s->base.ops = &bnb_storage_mongo;
    snprintf(s->prefix, sizeof s->prefix, "%s", name);
    snprintf(s->docs, sizeof s->docs, "%s_docs", name);
    snprintf(s->wal, sizeof s->wal, "%s_wal", name);
    snprintf(s->applied, sizeof s->applied, "%s_applied", name);
    snprintf(s->claims, sizeof s->claims, "%s_claims", name);
    snprintf(s->locks, sizeof s->locks, "%s_locks", name);
    snprintf(s->colls_c, sizeof s->colls_c, "%s_colls", name);
    snprintf(s->meta, sizeof s->meta, "%s_meta", name);
    snprintf(s->dead, sizeof s->dead, "%s_dead", name);
    s->grace_ms = MG_GRACE_MS;
    {
        /* tests shorten the grace period to see a dead commit recovered */
        const char *g = getenv("BNB_STORAGE_MONGO_GRACE_MS");
        if (g && atoll(g) > 0)
            s->grace_ms = atoll(g);
    }

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
    if (create_base_indexes(cl, s, &err) != 0) {
        snprintf(errbuf, errlen, "%s: cannot create indexes of %s: %s", shown, s->prefix, err.message);
        rc = BNB_EIO;
        goto fail;
    }
    if ((rc = migrate_v1(s, cl)) != 0 || (rc = load_colls(s, cl)) != 0) {
        snprintf(errbuf, errlen, "%s: cannot prepare the store %s (see the log)", shown, s->prefix);
        goto fail;
    }
    mongoc_client_pool_push(s->pool, cl);
    *out = &s->base;
    return 0;
fail:
    if (cl)
        mongoc_client_pool_push(s->pool, cl);
    mg_free(s);
    return rc;
}

static void mg_close(bnb_store_t *st)
{
    if (st)
        mg_free((mg_store_t *)st);
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

/* ---- define ---------------------------------------------------------------- */

static int mg_define(bnb_store_t *st, const bnb_coll_def_t *defs, size_t n)
{
    mg_store_t *s = (mg_store_t *)st;
    bnb__coll_t **merged = NULL;
    char err[256];
    int rc;
    if (!s)
        return BNB_EINVAL;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&s->define_mu);
    bool *fresh = NULL;
    if ((rc = bnb__define_merge(&s->colls, defs, n, &merged, &fresh, err, sizeof err)) == BNB_EINVAL) {
        char msg[300];
        snprintf(msg, sizeof msg, "mongo define: %s", err);
        mg_log_msg(s, msg);
    }
    mongoc_client_t *cl = rc ? NULL : mongoc_client_pool_pop(s->pool);
    for (size_t i = 0; i < n && !rc; i++) {
        const bnb__coll_t *dc = merged[i];
        char mc[MG_NAME_MAX];
        bson_error_t berr;
        snprintf(mc, sizeof mc, "%s_c_%s", s->prefix, dc->name);
        bson_t *k1 = BCON_NEW("key1", BCON_INT32(1)), *k2 = BCON_NEW("key2", BCON_INT32(1));
        rc = create_index(cl, s, mc, "by_key1", k1, false, &berr);
        if (!rc)
            rc = create_index(cl, s, mc, "by_key2", k2, false, &berr);
        bson_destroy(k1);
        bson_destroy(k2);
        for (size_t k = 0; k < dc->nindexes && !rc; k++) {
            const bnb__index_t *x = &dc->indexes[k];
            bson_t keys = BSON_INITIALIZER;
            char path[BNB__FIELD_NAME_MAX + 4];
            if (!x->unique)
                BSON_APPEND_INT32(&keys, "_t", 1);
            for (int j = 0; j < x->nf; j++) {
                snprintf(path, sizeof path, "f.%s", dc->fields[x->f[j]].name);
                BSON_APPEND_INT32(&keys, path, 1);
            }
            if (x->unique)
                BSON_APPEND_INT32(&keys, "_t", 1); /* tombstones carry their id: they never collide */
            else
                BSON_APPEND_INT32(&keys, "_id", 1);
            rc = create_index(cl, s, mc, x->name, &keys, x->unique, &berr);
            bson_destroy(&keys);
        }
        if (rc) {
            mg_log(s, "define (createIndexes)", &berr);
            break;
        }
        /* documents of this collection written before it was declared */
        if (fresh[i]) {
            mongoc_collection_t *docs = mongoc_client_get_collection(cl, s->db, s->docs);
            mongoc_collection_t *dst = mongoc_client_get_collection(cl, s->db, mc);
            bson_t *filter = BCON_NEW("coll", BCON_UTF8(dc->name));
            mongoc_cursor_t *cur = mongoc_collection_find_with_opts(docs, filter, NULL, NULL);
            const bson_t *d;
            while (!rc && mongoc_cursor_next(cur, &d)) {
                const char *id = get_str(d, "id"), *key = get_str(d, "_id");
                json_t *body = doc_body(d);
                bool deleted = get_bool(d, "deleted");
                if (!id || !key || (!deleted && !body)) {
                    json_decref(body);
                    continue;
                }
                bson_t nd = BSON_INITIALIZER, sub;
                BSON_APPEND_UTF8(&nd, "_id", id);
                BSON_APPEND_INT64(&nd, "version", get_i64(d, "version"));
                BSON_APPEND_BOOL(&nd, "deleted", deleted);
                if (deleted) {
                    BSON_APPEND_NULL(&nd, "body");
                    BSON_APPEND_UTF8(&nd, "_t", id);
                } else {
                    BSON_APPEND_DOCUMENT_BEGIN(&nd, "body", &sub);
                    json_to_bson_obj(&sub, body, 0);
                    bson_append_document_end(&nd, &sub);
                    BSON_APPEND_DOCUMENT_BEGIN(&nd, "f", &sub);
                    for (size_t f = 0; f < dc->nfields; f++) {
                        bnb__fval_t v;
                        bnb__coll_value(dc, f, body, &v);
                        if (!v.null && v.s)
                            BSON_APPEND_UTF8(&sub, dc->fields[f].name, v.s);
                        else if (!v.null)
                            BSON_APPEND_INT64(&sub, dc->fields[f].name, v.n);
                    }
                    bson_append_document_end(&nd, &sub);
                    BSON_APPEND_INT32(&nd, "_t", 0);
                }
                append_str_or_null(&nd, "key1", get_str(d, "key1"));
                append_str_or_null(&nd, "key2", get_str(d, "key2"));
                BSON_APPEND_INT64(&nd, "mtime", now_ms());
                json_decref(body);
                int r = insert_doc(s, dst, &nd);
                bson_destroy(&nd);
                if (r && r != BNB_EEXIST) {
                    rc = r;
                    break;
                }
                /* its applied marks follow it (new ref) */
                bson_iter_t it, ch;
                if (bson_iter_init_find(&it, d, "_ap") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &ch)) {
                    mongoc_collection_t *ap = mongoc_client_get_collection(cl, s->db, s->applied);
                    while (bson_iter_next(&ch)) {
                        char *aid = NULL;
                        if (!BSON_ITER_HOLDS_UTF8(&ch) ||
                            asprintf(&aid, "%s/%s|%s", mc, id, bson_iter_utf8(&ch, NULL)) < 0)
                            continue;
                        bson_t *a = BCON_NEW("_id", BCON_UTF8(aid));
                        insert_doc(s, ap, a);
                        bson_destroy(a);
                        free(aid);
                    }
                    mongoc_collection_destroy(ap);
                }
                if (!rc)
                    rc = delete_id(s, docs, key);
            }
            bson_error_t cerr;
            if (!rc && mongoc_cursor_error(cur, &cerr)) {
                mg_log(s, "define (move documents)", &cerr);
                rc = BNB_EIO;
            }
            mongoc_cursor_destroy(cur);
            bson_destroy(filter);
            mongoc_collection_destroy(docs);
            mongoc_collection_destroy(dst);
        }
        if (!rc) {
            char *def = bnb__coll_dump(dc);
            mongoc_collection_t *cc = mongoc_client_get_collection(cl, s->db, s->colls_c);
            bson_t *sel = BCON_NEW("_id", BCON_UTF8(dc->name));
            bson_t *doc = def ? BCON_NEW("_id", BCON_UTF8(dc->name), "def", BCON_UTF8(def)) : NULL;
            bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
            if (!doc)
                rc = BNB_ENOMEM;
            else if (!mongoc_collection_replace_one(cc, sel, doc, opts, NULL, &berr) && !is_dup(&berr)) {
                mg_log(s, "define", &berr);
                rc = BNB_EIO;
            }
            bson_destroy(sel);
            bson_destroy(doc);
            bson_destroy(opts);
            mongoc_collection_destroy(cc);
            free(def);
        }
    }
    if (cl)
        mongoc_client_pool_push(s->pool, cl);
    if (!rc)
        rc = bnb__define_register(&s->colls, merged, n);
    pthread_mutex_unlock(&s->define_mu);
    bnb__define_free(merged, fresh, n);
    return rc;
}

/* ---- reads --------------------------------------------------------------- */

static int mg_get(bnb_store_t *st, const char *coll, const char *id, json_t **body, int64_t *version)
{
    mg_store_t *s = (mg_store_t *)st;
    if (body)
        *body = NULL;
    if (!coll || !id)
        return BNB_EINVAL;
    mg_doc_t md;
    if (mg_doc_init(s, coll, id, &md))
        return BNB_ENOMEM;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, md.mc);
    bson_t *proj = BCON_NEW("body", BCON_INT32(1), "version", BCON_INT32(1), "deleted", BCON_INT32(1));
    bson_t *doc = NULL;
    /* by _id alone (FerretDB serves only that from an index); tombstones are skipped here */
    int rc = find_id(s, c, md.key, proj, &doc);
    if (rc == 0 && get_bool(doc, "deleted"))
        rc = BNB_ENOENT;
    if (rc == 0) {
        if (body && !(*body = doc_body(doc))) {
            mg_log_msg(s, "mongo get: stored body is unreadable");
            rc = BNB_EIO;
        } else if (version) {
            *version = get_i64(doc, "version");
        }
    }
    bson_destroy(doc);
    bson_destroy(proj);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    mg_doc_free(&md);
    return rc;
}

/* get_many: one find({_id: {$in: [...]}}) (MongoDB: one _id index lookup per
 * id; FerretDB 1.24 pushes no $in down: one scan of the collection in Go,
 * instead of one scan per id in SQLite with a get each). */
static int mg_get_many(bnb_store_t *st, const char *coll, const char *const *ids, size_t n, json_t **items)
{
    mg_store_t *s = (mg_store_t *)st;
    int rc = bnb__get_many_check(coll, ids, n, items);
    if (rc != 0 || !s)
        return rc ? rc : BNB_EINVAL;
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    char mc[MG_NAME_MAX];
    if (dc)
        snprintf(mc, sizeof mc, "%s_c_%s", s->prefix, dc->name);
    else
        snprintf(mc, sizeof mc, "%s", s->docs);
    json_t *found = json_object(), *arr = json_array();
    bson_t filter = BSON_INITIALIZER, in, list;
    if (!found || !arr) {
        rc = BNB_ENOMEM;
        goto out;
    }
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);
    for (size_t i = 0; i < n && !rc; i++) {
        char k[16], *key = NULL;
        const char *kk;
        bson_uint32_to_string((uint32_t)i, &kk, k, sizeof k);
        if (!dc && asprintf(&key, "%s/%s", coll, ids[i]) < 0) {
            rc = BNB_ENOMEM;
            break;
        }
        if (!bson_append_utf8(&list, kk, -1, dc ? ids[i] : key, -1))
            rc = BNB_EINVAL;
        free(key);
    }
    bson_append_array_end(&in, &list);
    bson_append_document_end(&filter, &in);
    if (rc)
        goto out;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, mc);
    bson_t *opts = BCON_NEW("projection", "{", "id", BCON_INT32(1), "version", BCON_INT32(1), "body", BCON_INT32(1),
                            "deleted", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, opts, NULL);
    const bson_t *d;
    while (!rc && mongoc_cursor_next(cur, &d)) {
        if (get_bool(d, "deleted"))
            continue;
        json_t *b = doc_body(d);
        const char *id = get_str(d, dc ? "_id" : "id");
        json_t *item = b && id ? bnb__get_many_item(id, get_i64(d, "version"), b) : NULL;
        if (!b || !id) {
            json_decref(b);
            mg_log_msg(s, "mongo: a stored document is unreadable");
            rc = BNB_EIO;
        } else if (!item || json_object_set_new(found, id, item) != 0) {
            rc = BNB_ENOMEM;
        }
    }
    bson_error_t err;
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "find", &err);
        rc = BNB_EIO;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    if (rc == 0)
        rc = bnb__get_many_order(found, ids, n, arr);
out:
    bson_destroy(&filter);
    json_decref(found);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *items = arr;
    return 0;
}

/* Documents of a cursor as [{"id","version","body"}] (the id is `idfield`). */
static int collect(const mg_store_t *s, mongoc_cursor_t *cur, const char *idfield, json_t *arr, size_t max)
{
    const bson_t *d;
    int rc = 0;
    while (!rc && json_array_size(arr) < max && mongoc_cursor_next(cur, &d)) {
        json_t *b = doc_body(d);
        const char *id = get_str(d, idfield);
        if (!b || !id) {
            json_decref(b);
            mg_log_msg(s, "mongo: a stored document is unreadable");
            rc = BNB_EIO;
            break;
        }
        json_t *item = json_pack("{s:s, s:I, s:o}", "id", id, "version", (json_int_t)get_i64(d, "version"), "body", b);
        if (!item || json_array_append_new(arr, item))
            rc = BNB_ENOMEM;
    }
    bson_error_t err;
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "find", &err);
        rc = BNB_EIO;
    }
    return rc;
}

static int mg_list(bnb_store_t *st, const char *coll, int which, const char *value, json_t **out)
{
    mg_store_t *s = (mg_store_t *)st;
    *out = NULL;
    if (!coll || which < 0 || which > 2 || (which && !value))
        return BNB_EINVAL;
    const bnb__coll_t *dc = bnb__colls_get(&s->colls, coll);
    char mc[MG_NAME_MAX];
    bson_t filter = BSON_INITIALIZER;
    if (dc) {
        snprintf(mc, sizeof mc, "%s_c_%s", s->prefix, dc->name);
        BSON_APPEND_INT32(&filter, "_t", 0);
    } else {
        snprintf(mc, sizeof mc, "%s", s->docs);
        BSON_APPEND_UTF8(&filter, "coll", coll);
        BSON_APPEND_BOOL(&filter, "deleted", false);
    }
    if (which)
        BSON_APPEND_UTF8(&filter, which == 1 ? "key1" : "key2", value);
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, mc);
    bson_t *opts = BCON_NEW("projection", "{", "id", BCON_INT32(1), "version", BCON_INT32(1), "body", BCON_INT32(1),
                            "}", "sort", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, opts, NULL);
    json_t *arr = json_array();
    int rc = arr ? collect(s, cur, dc ? "_id" : "id", arr, SIZE_MAX) : BNB_ENOMEM;
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

/* ---- queries ----------------------------------------------------------------- */

static void append_fval(bson_t *b, const char *key, const bnb__fval_t *v)
{
    if (v->null)
        BSON_APPEND_NULL(b, key);
    else if (v->s)
        BSON_APPEND_UTF8(b, key, v->s);
    else
        BSON_APPEND_INT64(b, key, v->n);
}

static int mg_query(bnb_store_t *st, const bnb_query_t *q, json_t **items, char **next)
{
    mg_store_t *s = (mg_store_t *)st;
    static const char *const ops[] = {"", "$eq", "$lt", "$lte", "$gt", "$gte"};
    bnb__plan_t p;
    int rc;
    if (items)
        *items = NULL;
    if (next)
        *next = NULL;
    if (!s || !q || !items || !next)
        return BNB_EINVAL;
    if ((rc = bnb__plan_make(bnb__colls_get(&s->colls, q->coll), q, &p)) != 0)
        return rc;
    const bnb__coll_t *dc = p.coll;
    char mc[MG_NAME_MAX], path[BNB__FIELD_NAME_MAX + 4], opath[BNB__FIELD_NAME_MAX + 4];
    snprintf(mc, sizeof mc, "%s_c_%s", s->prefix, dc->name);
    if (p.order >= 0)
        snprintf(opath, sizeof opath, "f.%s", dc->fields[p.order].name);
    bson_t filter = BSON_INITIALIZER, and, one, op, or, alt;
    char idx[24];
    int k = 0;
    BSON_APPEND_INT32(&filter, "_t", 0);
    BSON_APPEND_ARRAY_BEGIN(&filter, "$and", &and);
    for (size_t i = 0; i < q->nconds; i++) {
        if (bnb__plan_implied(&p, i))
            continue;
        snprintf(idx, sizeof idx, "%d", k++);
        snprintf(path, sizeof path, "f.%s", dc->fields[p.cf[i]].name);
        BSON_APPEND_DOCUMENT_BEGIN(&and, idx, &one);
        BSON_APPEND_DOCUMENT_BEGIN(&one, path, &op);
        if (q->conds[i].str)
            BSON_APPEND_UTF8(&op, ops[q->conds[i].op], q->conds[i].str);
        else
            BSON_APPEND_INT64(&op, ops[q->conds[i].op], q->conds[i].num);
        bson_append_document_end(&one, &op);
        bson_append_document_end(&and, &one);
    }
    const char *cmp = q->descending ? "$lt" : "$gt";
    if (p.order >= 0) {
        snprintf(idx, sizeof idx, "%d", k++);
        BSON_APPEND_DOCUMENT_BEGIN(&and, idx, &one);
        BSON_APPEND_DOCUMENT_BEGIN(&one, opath, &op);
        BSON_APPEND_BOOL(&op, "$exists", true);
        bson_append_document_end(&one, &op);
        bson_append_document_end(&and, &one);
        if (p.has_cursor) {
            snprintf(idx, sizeof idx, "%d", k++);
            BSON_APPEND_DOCUMENT_BEGIN(&and, idx, &one);
            BSON_APPEND_ARRAY_BEGIN(&one, "$or", & or);
            BSON_APPEND_DOCUMENT_BEGIN(& or, "0", &alt);
            BSON_APPEND_DOCUMENT_BEGIN(&alt, opath, &op);
            append_fval(&op, cmp, &p.cur_ord);
            bson_append_document_end(&alt, &op);
            bson_append_document_end(& or, &alt);
            BSON_APPEND_DOCUMENT_BEGIN(& or, "1", &alt);
            append_fval(&alt, opath, &p.cur_ord);
            BSON_APPEND_DOCUMENT_BEGIN(&alt, "_id", &op);
            BSON_APPEND_UTF8(&op, cmp, p.cur_id);
            bson_append_document_end(&alt, &op);
            bson_append_document_end(& or, &alt);
            bson_append_array_end(&one, & or);
            bson_append_document_end(&and, &one);
        }
    } else if (p.has_cursor) {
        snprintf(idx, sizeof idx, "%d", k++);
        BSON_APPEND_DOCUMENT_BEGIN(&and, idx, &one);
        BSON_APPEND_DOCUMENT_BEGIN(&one, "_id", &op);
        BSON_APPEND_UTF8(&op, cmp, p.cur_id);
        bson_append_document_end(&one, &op);
        bson_append_document_end(&and, &one);
    }
    if (k == 0) { /* $and must not be empty */
        BSON_APPEND_DOCUMENT_BEGIN(&and, "0", &one);
        BSON_APPEND_INT32(&one, "_t", 0);
        bson_append_document_end(&and, &one);
    }
    bson_append_array_end(&filter, &and);
    bson_t opts = BSON_INITIALIZER, sort;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    if (p.order >= 0)
        BSON_APPEND_INT32(&sort, opath, q->descending ? -1 : 1);
    BSON_APPEND_INT32(&sort, "_id", q->descending ? -1 : 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", (int64_t)q->limit + 1);
    BSON_APPEND_INT64(&opts, "batchSize", (int64_t)q->limit + 1);
    BSON_APPEND_BOOL(&opts, "singleBatch", true);

    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, mc);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, &opts, NULL);
    json_t *arr = json_array();
    rc = arr ? collect(s, cur, "_id", arr, q->limit + 1) : BNB_ENOMEM;
    if (!rc && json_array_size(arr) > q->limit) {
        json_array_remove(arr, q->limit);
        if (!(*next = bnb__cursor_after(&p, json_array_get(arr, q->limit - 1))))
            rc = BNB_ENOMEM;
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(s->pool, cl);
    bson_destroy(&opts);
    bson_destroy(&filter);
    bnb__plan_free(&p);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *items = arr;
    return 0;
}

/* ---- commit -------------------------------------------------------------- */

/* The claims a document lists in _cl: keys and tokens (borrowed from d). */
typedef struct cl_list {
    size_t n;
    const char **k, **t;
} cl_list_t;

static int cl_read(const bson_t *d, cl_list_t *out)
{
    bson_iter_t it, ch;
    memset(out, 0, sizeof *out);
    if (!d || !bson_iter_init_find(&it, d, "_cl") || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &ch))
        return 0;
    size_t cap = 0;
    while (bson_iter_next(&ch)) {
        bson_iter_t e;
        const char *k = NULL, *t = NULL;
        if (!BSON_ITER_HOLDS_DOCUMENT(&ch) || !bson_iter_recurse(&ch, &e))
            continue;
        while (bson_iter_next(&e)) {
            if (!strcmp(bson_iter_key(&e), "k") && BSON_ITER_HOLDS_UTF8(&e))
                k = bson_iter_utf8(&e, NULL);
            else if (!strcmp(bson_iter_key(&e), "t") && BSON_ITER_HOLDS_UTF8(&e))
                t = bson_iter_utf8(&e, NULL);
        }
        if (!k || !t)
            continue;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 8;
            const char **nk = realloc(out->k, cap * sizeof *nk);
            if (!nk)
                return BNB_ENOMEM;
            out->k = nk;
            const char **nt = realloc(out->t, cap * sizeof *nt);
            if (!nt)
                return BNB_ENOMEM;
            out->t = nt;
        }
        out->k[out->n] = k;
        out->t[out->n] = t;
        out->n++;
    }
    return 0;
}

static void cl_free(cl_list_t *l)
{
    free(l->k);
    free(l->t);
    memset(l, 0, sizeof *l);
}

static const char *cl_token(const cl_list_t *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->k[i], key))
            return l->t[i];
    return NULL;
}

#define UNIQUE_PREFIX "\001u|"

/* The claims standing for the unique-index values of `body` (declared
 * collections): "\1u|<coll>|<index>|<s|i><value>\x1f...". Appended to v. */
static int unique_claims(const bnb__coll_t *dc, const json_t *body, char ***v, size_t *n)
{
    for (size_t k = 0; k < dc->nindexes; k++) {
        const bnb__index_t *x = &dc->indexes[k];
        if (!x->unique)
            continue;
        size_t len = strlen(dc->name) + strlen(x->name) + 16;
        bnb__fval_t vals[BNB_INDEX_MAX_FIELDS];
        bool all = true;
        for (int j = 0; j < x->nf; j++) {
            bnb__coll_value(dc, (size_t)x->f[j], body, &vals[j]);
            all = all && !vals[j].null;
            len += (vals[j].s ? strlen(vals[j].s) : 24) + 2;
        }
        if (!all)
            continue; /* a document without the value holds none */
        char *key = malloc(len), **nv = realloc(*v, (*n + 1) * sizeof *nv);
        if (!key || !nv) {
            free(key);
            if (nv)
                *v = nv;
            return BNB_ENOMEM;
        }
        *v = nv;
        size_t o = (size_t)snprintf(key, len, UNIQUE_PREFIX "%s|%s|", dc->name, x->name);
        for (int j = 0; j < x->nf; j++) {
            if (vals[j].s)
                o += (size_t)snprintf(key + o, len - o, "s%s\x1f", vals[j].s);
            else
                o += (size_t)snprintf(key + o, len - o, "i%" PRId64 "\x1f", vals[j].n);
        }
        (*v)[(*n)++] = key;
    }
    return 0;
}

/* The state of one commit. */
typedef struct mg_c {
    mg_store_t *s;
    const bnb_commit_t *c;
    const char *key1, *key2;
    bool set_keys;
    mg_doc_t md;
    const bnb_outbox_new_t *events;
    size_t nevents;
    const char **uclaims; /* user claims, normalised */
    size_t nuclaims;
    char **xclaims; /* unique-index claims of the new body */
    size_t nxclaims;
    mongoc_client_t *cl;
    mongoc_collection_t *docs, *wal, *applied, *claims, *locks;
    bool create_general; /* a create found the document there: read it first */
} mg_c_t;

/* Read the document: projection of everything but the body. */
static int read_state(mg_c_t *m, bson_t **doc)
{
    bson_t *proj = BCON_NEW("version", BCON_INT32(1), "deleted", BCON_INT32(1), "_ap", BCON_INT32(1), "_cl",
                            BCON_INT32(1), "wtok", BCON_INT32(1), "_wr", BCON_INT32(1), "key1", BCON_INT32(1), "key2",
                            BCON_INT32(1), "applied", BCON_INT32(1), "mtime", BCON_INT32(1));
    int rc = find_id(m->s, m->docs, m->md.key, proj, doc);
    bson_destroy(proj);
    return rc;
}

static bool same_state(const bson_t *a, const bson_t *b)
{
    const char *ta = get_str(a, "wtok"), *tb = get_str(b, "wtok");
    return get_i64(a, "version") == get_i64(b, "version") && get_bool(a, "deleted") == get_bool(b, "deleted") &&
           ((!ta && !tb) || (ta && tb && !strcmp(ta, tb)));
}

/* Mark an intent committed (by its token: that very intent, or nothing). */
static void flag_committed(mg_c_t *m, const char *tok)
{
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(tok));
    bson_t *upd = BCON_NEW("$set", "{", "state", BCON_UTF8("c"), "}");
    bson_error_t err;
    if (!mongoc_collection_update_one(m->wal, sel, upd, NULL, NULL, &err))
        mg_log(m->s, "flag intent", &err);
    bson_destroy(sel);
    bson_destroy(upd);
}

/* Insert the write intent of version `ver`. 0, BNB_EEXIST (slot held), EIO. */
static int intent_insert(mg_c_t *m, const char *tok, int64_t ver, int64_t at)
{
    char slot[MG_NAME_MAX + 600];
    snprintf(slot, sizeof slot, "%s#%" PRId64, m->md.ref, ver);
    bson_t d = BSON_INITIALIZER, arr, one;
    char idx[24];
    BSON_APPEND_UTF8(&d, "_id", tok);
    BSON_APPEND_UTF8(&d, "slot", slot);
    BSON_APPEND_UTF8(&d, "mc", m->md.mc);
    BSON_APPEND_UTF8(&d, "k", m->md.key);
    BSON_APPEND_INT64(&d, "ver", ver);
    BSON_APPEND_UTF8(&d, "state", "p");
    BSON_APPEND_INT64(&d, "at", at);
    BSON_APPEND_INT64(&d, "seq", next_seq(m->s));
    append_str_or_null(&d, "ap", m->c->applied_event_id);
    BSON_APPEND_ARRAY_BEGIN(&d, "ev", &arr);
    for (size_t i = 0; i < m->nevents; i++) {
        snprintf(idx, sizeof idx, "%zu", i);
        BSON_APPEND_DOCUMENT_BEGIN(&arr, idx, &one);
        BSON_APPEND_UTF8(&one, "id", m->events[i].event_id);
        BSON_APPEND_UTF8(&one, "topic", m->events[i].topic);
        append_str_or_null(&one, "key", m->events[i].key);
        BSON_APPEND_UTF8(&one, "payload", m->events[i].payload);
        bson_append_document_end(&arr, &one);
    }
    bson_append_array_end(&d, &arr);
    int rc = insert_doc(m->s, m->wal, &d);
    bson_destroy(&d);
    return rc;
}

/* The slot of version `ver` is held. 1 when that version exists (the
 * document reached it: a conflict, final); 0 when the holder is a commit in
 * flight (wait for it: it writes or gives up) or was dropped because it
 * belonged to a commit that died (older than the grace period, its document
 * still below ver), or is gone: try again either way. Waiting, not failing,
 * keeps the answers those of a serial order: a losing create must not answer
 * BNB_EEXIST before the winner's document can be read. */
static int slot_settled(mg_c_t *m, int64_t ver)
{
    char slot[MG_NAME_MAX + 600];
    snprintf(slot, sizeof slot, "%s#%" PRId64, m->md.ref, ver);
    bson_t *f = BCON_NEW("slot", BCON_UTF8(slot));
    bson_t *h = NULL, *d = NULL;
    int settled = 0;
    /* a scan of <p>_wal, which holds only commits in flight or unsettled */
    int rc = find_one(m->s, m->wal, f, NULL, &h);
    if (rc == 0 && read_state(m, &d) != BNB_EIO) {
        if (d && get_i64(d, "version") >= ver) {
            settled = 1;
        } else if (get_i64(h, "at") < now_ms() - m->s->grace_ms) {
            /* a dead commit's: its mark first (see dead_mark_drop) */
            const char *tok = get_str(h, "_id");
            if (tok && dead_mark_drop(m->s, m->applied, h) == 0)
                delete_id(m->s, m->wal, tok);
        }
    }
    bson_destroy(d);
    bson_destroy(h);
    bson_destroy(f);
    return settled;
}

/* Is the claim doc `cd` (held by another document, or an unlisted one of
 * ours) one that a dead commit left? (see the top comment) */
static bool claim_stale(mg_c_t *m, const bson_t *cd)
{
    int64_t now = now_ms();
    const char *oc = get_str(cd, "oc"), *oi = get_str(cd, "oi"), *t = get_str(cd, "t");
    if (get_i64(cd, "at") >= now - m->s->grace_ms || !oc || !oi || !t)
        return false;
    mongoc_collection_t *c = mongoc_client_get_collection(m->cl, m->s->db, oc);
    bson_t *proj = BCON_NEW("_cl", BCON_INT32(1), "mtime", BCON_INT32(1));
    bson_t *owner = NULL;
    int rc = find_id(m->s, c, oi, proj, &owner);
    bool stale = false;
    if (rc == BNB_ENOENT) {
        stale = true;
    } else if (rc == 0) {
        cl_list_t l;
        if (cl_read(owner, &l) == 0) {
            const char *held = cl_token(&l, get_str(cd, "_id") ? get_str(cd, "_id") : "");
            stale = (!held || strcmp(held, t) != 0) && get_i64(owner, "mtime") < now - m->s->grace_ms;
        }
        cl_free(&l);
    }
    bson_destroy(owner);
    bson_destroy(proj);
    mongoc_collection_destroy(c);
    return stale;
}

/* Take claim `key` for this commit (token tok). 0, BNB_ETAKEN or EIO. */
static int claim_take(mg_c_t *m, const char *key, const char *tok)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        bson_t *d = BCON_NEW("_id", BCON_UTF8(key), "oc", BCON_UTF8(m->md.mc), "oi", BCON_UTF8(m->md.key), "t",
                             BCON_UTF8(tok), "at", BCON_INT64(now_ms()));
        int rc = insert_doc(m->s, m->claims, d);
        bson_destroy(d);
        if (rc != BNB_EEXIST)
            return rc;
        bson_t *cd = NULL;
        rc = find_id(m->s, m->claims, key, NULL, &cd);
        if (rc == BNB_ENOENT)
            continue; /* released meanwhile */
        if (rc) {
            bson_destroy(cd);
            return rc;
        }
        bool stale = claim_stale(m, cd);
        char lock[BNB__CLAIM_MAX * 2 + 64];
        snprintf(lock, sizeof lock, "%s!%s", key, get_str(cd, "t") ? get_str(cd, "t") : "");
        bson_destroy(cd);
        if (!stale)
            return BNB_ETAKEN;
        /* one taker per dead claim: the lock insert decides */
        bson_t *l = BCON_NEW("_id", BCON_UTF8(lock), "at", BCON_INT64(now_ms()));
        rc = insert_doc(m->s, m->locks, l);
        bson_destroy(l);
        if (rc == BNB_EEXIST)
            return BNB_ETAKEN;
        if (rc || (rc = delete_id(m->s, m->claims, key)) != 0)
            return rc;
        char msg[BNB__CLAIM_MAX + 120];
        snprintf(msg, sizeof msg, "mongo: claim %s was left by a commit that did not finish: taken over", key);
        mg_log_at(m->s, "warn", msg);
    }
    return BNB_ETAKEN;
}

/* Test hook: BNB_STORAGE_MONGO_CRASH=<stage> ends the process there, as a
 * kill -9 would, to test what the next commits and the relay make of it. */
static void crash_point(const char *stage)
{
    const char *want = getenv("BNB_STORAGE_MONGO_CRASH");
    if (want && !strcmp(want, stage))
        _exit(77);
}

/* The document write: $set on the existing document, or an insert. */
static int write_doc(mg_c_t *m, bool exists, const bson_t *old, int64_t ver, const char *tok, const bson_t *ring,
                     const bson_t *cl_arr, const bson_t *wr)
{
    const bnb_commit_t *c = m->c;
    const bnb__coll_t *dc = m->md.dc;
    bson_t set = BSON_INITIALIZER, sub;
    bool deleted = c->op == BNB_WRITE_DELETE;
    int64_t now = now_ms();
    BSON_APPEND_INT64(&set, "version", ver);
    if (c->op != BNB_WRITE_TOUCH) {
        BSON_APPEND_BOOL(&set, "deleted", deleted);
        if (deleted) {
            BSON_APPEND_NULL(&set, "body");
        } else if (dc) {
            BSON_APPEND_DOCUMENT_BEGIN(&set, "body", &sub);
            bool ok = json_to_bson_obj(&sub, c->body, 0);
            bson_append_document_end(&set, &sub);
            if (!ok) {
                bson_destroy(&set);
                return BNB_EINVAL;
            }
        } else {
            char *txt = json_dumps(c->body, JSON_COMPACT);
            if (!txt) {
                bson_destroy(&set);
                return BNB_ENOMEM;
            }
            BSON_APPEND_UTF8(&set, "body", txt);
            free(txt);
        }
        if (dc) {
            if (deleted) {
                BSON_APPEND_UTF8(&set, "_t", m->md.key);
                BSON_APPEND_DOCUMENT_BEGIN(&set, "f", &sub); /* empty: matches nothing */
                bson_append_document_end(&set, &sub);
            } else {
                BSON_APPEND_INT32(&set, "_t", 0);
                BSON_APPEND_DOCUMENT_BEGIN(&set, "f", &sub);
                for (size_t i = 0; i < dc->nfields; i++) {
                    bnb__fval_t v;
                    bnb__coll_value(dc, i, c->body, &v);
                    if (!v.null)
                        append_fval(&sub, dc->fields[i].name, &v);
                }
                bson_append_document_end(&set, &sub);
            }
        }
        const char *k1 = deleted ? NULL : m->set_keys ? m->key1 : exists && old ? get_str(old, "key1") : NULL;
        const char *k2 = deleted ? NULL : m->set_keys ? m->key2 : exists && old ? get_str(old, "key2") : NULL;
        append_str_or_null(&set, "key1", k1);
        append_str_or_null(&set, "key2", k2);
    }
    BSON_APPEND_ARRAY(&set, "_ap", ring);
    BSON_APPEND_ARRAY(&set, "_cl", cl_arr);
    BSON_APPEND_UTF8(&set, "wtok", tok);
    BSON_APPEND_ARRAY(&set, "_wr", wr);
    BSON_APPEND_INT64(&set, "mtime", now);
    int rc;
    bson_error_t err;
    if (!exists) {
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "_id", m->md.key);
        if (!dc) {
            BSON_APPEND_UTF8(&doc, "coll", c->coll);
            BSON_APPEND_UTF8(&doc, "id", c->id);
        }
        bson_concat(&doc, &set);
        rc = insert_doc(m->s, m->docs, &doc);
        bson_destroy(&doc);
    } else {
        bson_t upd = BSON_INITIALIZER, *sel = BCON_NEW("_id", BCON_UTF8(m->md.key));
        BSON_APPEND_DOCUMENT(&upd, "$set", &set);
        rc = 0;
        if (!mongoc_collection_update_one(m->docs, sel, &upd, NULL, NULL, &err)) {
            mg_log(m->s, "write", &err);
            rc = BNB_EIO;
        }
        bson_destroy(sel);
        bson_destroy(&upd);
    }
    bson_destroy(&set);
    return rc;
}

/* One attempt: 0 (done, *nv set), a final BNB code, or MG_AGAIN. */
#define MG_AGAIN 1

/* The applied mark of this commit is already there (its insert failed as a
 * duplicate): the event was applied (BNB_EALREADY), unless the mark belongs
 * to a commit still in flight, or to one that died and the relay has not
 * cleaned up yet (MG_AGAIN: wait and look again). Rare: a redelivery. */
static int applied_dup(mg_c_t *m, const char *aid)
{
    bson_t *mark = NULL, *w = NULL;
    int rc = find_id(m->s, m->applied, aid, NULL, &mark);
    if (rc == BNB_ENOENT)
        return MG_AGAIN; /* a dead commit's mark, removed meanwhile */
    if (rc)
        return rc;
    const char *t = get_str(mark, "t");
    rc = t ? find_id(m->s, m->wal, t, NULL, &w) : BNB_ENOENT;
    if (rc == BNB_ENOENT && t) {
        /* its intent is gone: settled after its write (the mark stays), or
         * dropped as dead, which deletes the mark first (dead_mark_drop): so
         * the mark, still there after the intent is gone, is a written one */
        bson_t *again = NULL;
        int r2 = find_id(m->s, m->applied, aid, NULL, &again);
        if (r2 == 0)
            rc = get_str(again, "t") && !strcmp(get_str(again, "t"), t) ? BNB_EALREADY : MG_AGAIN;
        else
            rc = r2 == BNB_ENOENT ? MG_AGAIN : r2;
        bson_destroy(again);
    } else if (rc == BNB_ENOENT) {
        rc = BNB_EALREADY; /* a mark without a token: moved from the first version's documents */
    } else if (rc == 0) {  /* settled: applied; else in flight (wait for it) or dead (cleaned up soon) */
        rc = get_str(w, "state") && !strcmp(get_str(w, "state"), "c") ? BNB_EALREADY : MG_AGAIN;
    }
    bson_destroy(mark);
    bson_destroy(w);
    return rc;
}

/* A commit that fails its version check answers BNB_EALREADY instead when
 * its event was applied already (that check comes first in the contract). */
static int applied_first(mg_c_t *m, const bson_t *doc, const char *aid, int otherwise)
{
    const char *ev = m->c->applied_event_id;
    if (!aid)
        return otherwise;
    if (array_has(doc, "_ap", ev) || array_has(doc, "applied", ev))
        return BNB_EALREADY;
    return applied_dup(m, aid) == BNB_EALREADY ? BNB_EALREADY : otherwise;
}

static int commit_once(mg_c_t *m, int64_t *nv)
{
    const bnb_commit_t *c = m->c;
    bson_t *doc = NULL, *doc2 = NULL;
    cl_list_t old = {0};
    const char **want = NULL; /* the claims the document will hold */
    size_t nwant = 0;
    const char **taken = NULL; /* inserted by this attempt */
    size_t ntaken = 0;
    char tok[25], *aid = NULL;
    bool intent = false, marked = false, exists = false;
    int64_t cur = 0, started = now_ms();
    int rc = 0;

    new_token(tok);
    if (c->applied_event_id && asprintf(&aid, "%s|%s", m->md.ref, c->applied_event_id) < 0) {
        aid = NULL;
        return BNB_ENOMEM;
    }
    if (c->expect_version > 0) {
        /* compare-and-swap: the intent of version expect + 1 first, then one
         * read of the document (every read by _id is a scan on FerretDB 1.24) */
        cur = c->expect_version;
        rc = intent_insert(m, tok, cur + 1, started);
        if (rc == BNB_EEXIST) {
            rc = slot_settled(m, cur + 1) ? applied_first(m, NULL, aid, BNB_EEXIST) : MG_AGAIN;
            goto out;
        }
        if (rc)
            goto out;
        intent = true;
        if ((rc = read_state(m, &doc)) != 0) {
            rc = rc == BNB_ENOENT ? applied_first(m, NULL, aid, BNB_ENOENT) : rc;
            goto out;
        }
        exists = true;
        if (get_bool(doc, "deleted")) {
            rc = applied_first(m, doc, aid, BNB_ENOENT);
            goto out;
        }
        if (get_i64(doc, "version") != cur) {
            rc = applied_first(m, doc, aid, BNB_EEXIST);
            goto out;
        }
    } else if (c->expect_version == 0 && c->op == BNB_WRITE_PUT && !m->create_general) {
        /* create: as a new document first, whose insert is the check; when
         * version 1 is taken or the document is there (live or deleted), the
         * general path (below) */
        rc = intent_insert(m, tok, 1, started);
        if (rc == BNB_EEXIST) {
            m->create_general = true;
            rc = MG_AGAIN;
            goto out;
        }
        if (rc)
            goto out;
        intent = true;
    } else {
        /* unconditional, or a create of a document that is or was there:
         * read, intent, read again */
        if ((rc = read_state(m, &doc)) != 0 && rc != BNB_ENOENT)
            goto out;
        rc = 0;
        exists = doc != NULL;
        bool live = exists && !get_bool(doc, "deleted");
        cur = exists ? get_i64(doc, "version") : 0;
        if (c->expect_version == 0 && live) {
            rc = applied_first(m, doc, aid, BNB_EEXIST);
            goto out;
        }
        if (!live && c->op != BNB_WRITE_PUT) {
            rc = applied_first(m, doc, aid, BNB_ENOENT);
            goto out;
        }
        rc = intent_insert(m, tok, cur + 1, started);
        if (rc == BNB_EEXIST) {
            /* another commit of that version: in flight (wait), done (read
             * again: a create then answers BNB_EEXIST), or dead (cleared) */
            slot_settled(m, cur + 1);
            rc = MG_AGAIN;
            goto out;
        }
        if (rc)
            goto out;
        intent = true;
        if ((rc = read_state(m, &doc2)) != 0 && rc != BNB_ENOENT)
            goto out;
        rc = 0;
        if ((doc2 != NULL) != exists || (doc2 && !same_state(doc, doc2))) {
            rc = MG_AGAIN;
            goto out;
        }
    }
    /* applied: the last ids of the document (cheap); <p>_applied below */
    if (c->applied_event_id &&
        (array_has(doc, "_ap", c->applied_event_id) || array_has(doc, "applied", c->applied_event_id))) {
        rc = BNB_EALREADY;
        goto out;
    }
    crash_point("after-intent");

    /* claims: the user's (kept or replaced) and the unique-index values */
    if ((rc = cl_read(doc, &old)) != 0)
        goto out;
    if (c->op != BNB_WRITE_DELETE) {
        want = calloc(old.n + m->nuclaims + m->nxclaims + 1, sizeof *want);
        if (!want) {
            rc = BNB_ENOMEM;
            goto out;
        }
        if (c->set_claims) {
            for (size_t i = 0; i < m->nuclaims; i++)
                want[nwant++] = m->uclaims[i];
        } else {
            for (size_t i = 0; i < old.n; i++)
                if (strncmp(old.k[i], UNIQUE_PREFIX, strlen(UNIQUE_PREFIX)) != 0)
                    want[nwant++] = old.k[i];
        }
        if (c->op == BNB_WRITE_PUT) {
            for (size_t i = 0; i < m->nxclaims; i++)
                want[nwant++] = m->xclaims[i];
        } else { /* TOUCH keeps the body, so its unique values */
            for (size_t i = 0; i < old.n; i++)
                if (strncmp(old.k[i], UNIQUE_PREFIX, strlen(UNIQUE_PREFIX)) == 0)
                    want[nwant++] = old.k[i];
        }
        if (!(taken = calloc(nwant + 1, sizeof *taken))) {
            rc = BNB_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < nwant && !rc; i++) {
            if (cl_token(&old, want[i]))
                continue;
            rc = claim_take(m, want[i], tok);
            if (!rc)
                taken[ntaken++] = want[i];
        }
        if (rc)
            goto out;
    }
    crash_point("after-claims");

    /* the applied mark: its insert is the check (an index lookup) */
    if (aid) {
        bson_t *a = BCON_NEW("_id", BCON_UTF8(aid), "t", BCON_UTF8(tok));
        rc = insert_doc(m->s, m->applied, a);
        bson_destroy(a);
        if (rc == BNB_EEXIST)
            rc = applied_dup(m, aid);
        if (rc)
            goto out;
        marked = true;
    }
    crash_point("after-mark");

    /* the write, within the grace period (a later writer or the relay may
     * take an intent older than that for a dead commit's) */
    if (now_ms() - started > m->s->grace_ms / 3) {
        mg_log_msg(m->s, "mongo commit: too slow to write safely within the grace period; not written");
        rc = BNB_EIO;
        goto out;
    }
    bson_t ring = BSON_INITIALIZER, cl_arr = BSON_INITIALIZER, wr = BSON_INITIALIZER;
    {
        /* _wr: the intents of the last MG_WR versions, so that the relay can
         * tell a committed intent its writer did not mark (it died right
         * after its write) from a dead one */
        bson_iter_t it, ch;
        size_t nwr = 0, skip = 0;
        if (doc && bson_iter_init_find(&it, doc, "_wr") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &ch))
            while (bson_iter_next(&ch))
                nwr++;
        if (nwr >= MG_WR)
            skip = nwr - MG_WR + 1;
        size_t i = 0, o = 0;
        char idx[24];
        if (nwr && bson_iter_init_find(&it, doc, "_wr") && bson_iter_recurse(&it, &ch)) {
            while (bson_iter_next(&ch)) {
                bson_t e;
                uint32_t len;
                const uint8_t *data;
                if (!BSON_ITER_HOLDS_DOCUMENT(&ch))
                    continue;
                bson_iter_document(&ch, &len, &data);
                if (!bson_init_static(&e, data, len))
                    continue;
                if (i++ < skip) {
                    /* its writer marked it, unless it died right after its
                     * write: mark it (again) before it leaves _wr */
                    if (get_bool(&e, "w") && get_str(&e, "t"))
                        flag_committed(m, get_str(&e, "t"));
                    continue;
                }
                snprintf(idx, sizeof idx, "%zu", o++);
                BSON_APPEND_DOCUMENT(&wr, idx, &e);
            }
        }
        bson_t e;
        snprintf(idx, sizeof idx, "%zu", o++);
        BSON_APPEND_DOCUMENT_BEGIN(&wr, idx, &e);
        BSON_APPEND_INT64(&e, "v", cur + 1);
        BSON_APPEND_UTF8(&e, "t", tok);
        BSON_APPEND_BOOL(&e, "w", m->nevents > 0 || c->applied_event_id != NULL);
        bson_append_document_end(&wr, &e);

        /* applied ring: the last MG_RING ids, this one included */
        const char *ids[MG_RING + 1];
        size_t nids = 0;
        if (doc && bson_iter_init_find(&it, doc, "_ap") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &ch))
            while (bson_iter_next(&ch))
                if (BSON_ITER_HOLDS_UTF8(&ch)) {
                    if (nids == MG_RING) {
                        memmove(ids, ids + 1, (MG_RING - 1) * sizeof *ids);
                        nids--;
                    }
                    ids[nids++] = bson_iter_utf8(&ch, NULL);
                }
        if (c->applied_event_id) {
            if (nids == MG_RING) {
                memmove(ids, ids + 1, (MG_RING - 1) * sizeof *ids);
                nids--;
            }
            ids[nids++] = c->applied_event_id;
        }
        for (size_t k = 0; k < nids; k++) {
            snprintf(idx, sizeof idx, "%zu", k);
            BSON_APPEND_UTF8(&ring, idx, ids[k]);
        }
        for (size_t k = 0; k < nwant; k++) {
            bson_t one;
            snprintf(idx, sizeof idx, "%zu", k);
            BSON_APPEND_DOCUMENT_BEGIN(&cl_arr, idx, &one);
            BSON_APPEND_UTF8(&one, "k", want[k]);
            BSON_APPEND_UTF8(&one, "t", cl_token(&old, want[k]) ? cl_token(&old, want[k]) : tok);
            bson_append_document_end(&cl_arr, &one);
        }
    }
    rc = write_doc(m, exists, doc, cur + 1, tok, &ring, &cl_arr, &wr);
    bson_destroy(&ring);
    bson_destroy(&cl_arr);
    bson_destroy(&wr);
    if (rc == BNB_EEXIST) { /* a create, and the document exists: the general path */
        m->create_general = true;
        rc = MG_AGAIN;
        goto out;
    }
    if (rc == BNB_EIO) {
        /* it may have been written: leave the intent, the mark and the claims
         * for the relay / the next writer to settle (see the top comment) */
        intent = marked = false;
        ntaken = 0;
        goto out;
    }
    if (rc)
        goto out;
    crash_point("after-write");

    /* after the commit point */
    ntaken = 0; /* they are the document's now */
    marked = false;
    for (size_t i = 0; i < old.n; i++) {
        bool keep = false;
        for (size_t k = 0; k < nwant && !keep; k++)
            keep = !strcmp(old.k[i], want[k]);
        if (!keep)
            delete_id(m->s, m->claims, old.k[i]);
    }
    /* the intent is marked committed: the relay publishes its events (or
     * just deletes it) without reading the document */
    flag_committed(m, tok);
    intent = false;
    *nv = cur + 1;
    rc = 0;
out:
    for (size_t i = 0; i < ntaken; i++)
        delete_id(m->s, m->claims, taken[i]);
    /* the mark before the intent (see dead_mark_drop); a mark that could not
     * be deleted keeps the intent, settled as a dead commit's later */
    if (marked && delete_id(m->s, m->applied, aid) != 0)
        intent = false;
    if (intent)
        delete_id(m->s, m->wal, tok);
    free(aid);
    free(taken);
    free(want);
    cl_free(&old);
    bson_destroy(doc);
    bson_destroy(doc2);
    return rc;
}

static int commit_any(mg_store_t *s, const bnb_commit_t *c, const char *key1, const char *key2, bool set_keys,
                      const bnb_outbox_new_t *events, size_t nevents, int64_t *new_version)
{
    int rc = bnb__commit_check(c, events, nevents);
    if (rc)
        return rc;
    mg_c_t m = {.s = s, .c = c, .key1 = key1, .key2 = key2, .set_keys = set_keys, .events = events, .nevents = nevents};
    if ((rc = mg_doc_init(s, c->coll, c->id, &m.md)) != 0)
        return rc;
    if ((rc = bnb__commit_prepare(m.md.dc, c, &m.uclaims, &m.nuclaims)) != 0)
        goto out;
    if (m.md.dc && c->op == BNB_WRITE_PUT && (rc = unique_claims(m.md.dc, c->body, &m.xclaims, &m.nxclaims)) != 0)
        goto out;
    m.cl = mongoc_client_pool_pop(s->pool);
    m.docs = mongoc_client_get_collection(m.cl, s->db, m.md.mc);
    m.wal = mongoc_client_get_collection(m.cl, s->db, s->wal);
    m.applied = mongoc_client_get_collection(m.cl, s->db, s->applied);
    m.claims = mongoc_client_get_collection(m.cl, s->db, s->claims);
    m.locks = mongoc_client_get_collection(m.cl, s->db, s->locks);
    int64_t nv = 0;
    for (int attempt = 0; attempt < MG_ATTEMPTS; attempt++) {
        rc = commit_once(&m, &nv);
        if (rc != MG_AGAIN)
            break;
        backoff(attempt);
    }
    if (rc == MG_AGAIN) {
        mg_log_msg(s, "mongo commit: the document kept changing; giving up for now");
        rc = BNB_EIO;
    }
    if (rc == 0 && new_version)
        *new_version = nv;
    mongoc_collection_destroy(m.docs);
    mongoc_collection_destroy(m.wal);
    mongoc_collection_destroy(m.applied);
    mongoc_collection_destroy(m.claims);
    mongoc_collection_destroy(m.locks);
    mongoc_client_pool_push(s->pool, m.cl);
out:
    for (size_t i = 0; i < m.nxclaims; i++)
        free(m.xclaims[i]);
    free(m.xclaims);
    free(m.uclaims);
    mg_doc_free(&m.md);
    return rc;
}

/* ABI 1.0 commit: commit2 without claims that also sets key1/key2. */
static int mg_commit(bnb_store_t *st, const bnb_write_t *w, const bnb_outbox_new_t *events, size_t nevents,
                     const char *applied, int64_t *new_version)
{
    if (!w)
        return BNB_EINVAL;
    bnb_commit_t c;
    bnb__commit_from_write(&c, w, applied);
    return commit_any((mg_store_t *)st, &c, w->key1, w->key2, true, events, nevents, new_version);
}

static int mg_commit2(bnb_store_t *st, const bnb_commit_t *c, const bnb_outbox_new_t *events, size_t nevents,
                      int64_t *new_version)
{
    return commit_any((mg_store_t *)st, c, NULL, NULL, false, events, nevents, new_version);
}

/* ---- outbox -------------------------------------------------------------- */

static void pw_free(mg_pw_t *w)
{
    for (size_t k = 0; k < w->nev; k++)
        free(w->eids[k]);
    free(w->eids);
    free(w->acked);
    free(w->tok);
}

/* Remember intent `tok` and its events as handed out (under ack_mu). */
static void pw_note(mg_store_t *s, const char *tok, const char *const *eids, size_t nev)
{
    for (size_t i = 0; i < s->npw; i++)
        if (!strcmp(s->pw[i].tok, tok))
            return;
    if (s->npw >= MG_PW_MAX) { /* a relay that never acks: forget (the events come again) */
        for (size_t i = 0; i < s->npw; i++)
            pw_free(&s->pw[i]);
        s->npw = 0;
    }
    mg_pw_t *n = realloc(s->pw, (s->npw + 1) * sizeof *n);
    if (!n)
        return;
    s->pw = n;
    mg_pw_t w = {.tok = strdup(tok),
                 .nev = nev,
                 .eids = calloc(nev + 1, sizeof(char *)),
                 .acked = calloc(nev + 1, sizeof(bool))};
    bool ok = w.tok && w.eids && w.acked;
    for (size_t k = 0; ok && k < nev; k++)
        ok = (w.eids[k] = strdup(eids[k])) != NULL;
    if (!ok) {
        pw_free(&w);
        return;
    }
    s->pw[s->npw++] = w;
}

/* Was event `eid` acked already (its intent had events not acked yet)? */
static bool pw_acked(mg_store_t *s, const char *eid)
{
    for (size_t i = 0; i < s->npw; i++)
        for (size_t k = 0; k < s->pw[i].nev; k++)
            if (!strcmp(s->pw[i].eids[k], eid))
                return s->pw[i].acked[k];
    return false;
}

typedef struct pend {
    bnb_outbox_entry_t e;
    int64_t seq, ver;
    int pos;   /* of the event in its commit */
    char *doc; /* "<mc>/<k>" */
} pend_t;

static int cmp_pend(const void *a, const void *b)
{
    const pend_t *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Is intent w committed? 1 yes, 0 in flight, -1 dead (its commit never
 * happened, or was refused). */
static int intent_resolve(mg_store_t *s, mongoc_client_t *cl, mongoc_collection_t *wal, const bson_t *w)
{
    const char *tok = get_str(w, "_id"), *mc = get_str(w, "mc"), *k = get_str(w, "k"), *st = get_str(w, "state");
    int64_t ver = get_i64(w, "ver");
    bool old = get_i64(w, "at") < now_ms() - s->grace_ms;
    if (st && !strcmp(st, "c"))
        return 1;
    if (!tok || !mc || !k)
        return -1;
    mongoc_collection_t *c = mongoc_client_get_collection(cl, s->db, mc);
    bson_t *proj = BCON_NEW("version", BCON_INT32(1), "_wr", BCON_INT32(1));
    bson_t *d = NULL, *again = NULL;
    int res = 0;
    int rc = find_id(s, c, k, proj, &d);
    if (rc == BNB_ENOENT || (rc == 0 && ver > get_i64(d, "version"))) {
        res = old ? -1 : 0; /* not written (yet) */
    } else if (rc == 0) {
        bson_iter_t it, ch;
        bool found = false;
        if (bson_iter_init_find(&it, d, "_wr") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &ch)) {
            while (!found && bson_iter_next(&ch)) {
                bson_iter_t e;
                int64_t v = -1;
                const char *t = NULL;
                if (!BSON_ITER_HOLDS_DOCUMENT(&ch) || !bson_iter_recurse(&ch, &e))
                    continue;
                while (bson_iter_next(&e)) {
                    if (!strcmp(bson_iter_key(&e), "v") && BSON_ITER_HOLDS_NUMBER(&e))
                        v = bson_iter_as_int64(&e);
                    else if (!strcmp(bson_iter_key(&e), "t") && BSON_ITER_HOLDS_UTF8(&e))
                        t = bson_iter_utf8(&e, NULL);
                }
                if (v == ver) {
                    found = true;
                    res = t && !strcmp(t, tok) ? 1 : -1; /* its version was written by this intent or another */
                }
            }
        }
        if (!found) {
            /* older than what _wr remembers: a committed intent with work for
             * the relay was marked "c" before it left _wr; read it again
             * (after the document) to see that mark */
            rc = find_id(s, wal, tok, NULL, &again);
            res = rc == 0 && get_str(again, "state") && !strcmp(get_str(again, "state"), "c") ? 1 : -1;
        }
    } else {
        res = 0; /* cannot tell now */
    }
    bson_destroy(d);
    bson_destroy(again);
    bson_destroy(proj);
    mongoc_collection_destroy(c);
    return res;
}

/* Delete intents by token, several per command (FerretDB scans <p>_wal for
 * an $in filter: it holds only pending work). */
static void wal_delete_many(mg_store_t *s, mongoc_collection_t *wal, char **toks, size_t n)
{
    for (size_t from = 0; from < n; from += 200) {
        bson_t f = BSON_INITIALIZER, id, in;
        char idx[24];
        BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &id);
        BSON_APPEND_ARRAY_BEGIN(&id, "$in", &in);
        for (size_t i = from; i < n && i < from + 200; i++) {
            snprintf(idx, sizeof idx, "%zu", i - from);
            BSON_APPEND_UTF8(&in, idx, toks[i]);
        }
        bson_append_array_end(&id, &in);
        bson_append_document_end(&f, &id);
        bson_error_t err;
        if (!mongoc_collection_delete_many(wal, &f, NULL, NULL, &err))
            mg_log(s, "outbox cleanup", &err);
        bson_destroy(&f);
    }
}

/* One pass over the first `max` intents: the events of committed ones into
 * *p, the applied marks of committed ones into <p>_applied, dead and finished
 * intents deleted. *cleaned counts the deleted ones. */
static int fetch_pass(mg_store_t *s, mongoc_client_t *cl, size_t max, pend_t **p, size_t *np, size_t *cap,
                      size_t *cleaned)
{
    mongoc_collection_t *wal = mongoc_client_get_collection(cl, s->db, s->wal);
    mongoc_collection_t *ap = mongoc_client_get_collection(cl, s->db, s->applied);
    /* find({}) + limit: FerretDB pushes the LIMIT down; <p>_wal holds only
     * pending work, so this costs O(pending), whatever is stored elsewhere */
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("limit", BCON_INT64((int64_t)max), "batchSize", BCON_INT64((int64_t)max), "singleBatch",
                            BCON_BOOL(true));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(wal, &filter, opts, NULL);
    char **blocked = NULL; /* documents with an intent in flight: later ones wait */
    size_t nblocked = 0;
    char **gone = NULL; /* intents to delete */
    size_t ngone = 0;
    int rc = 0;
    const bson_t *w;
    while (!rc && mongoc_cursor_next(cur, &w)) {
        const char *tok = get_str(w, "_id");
        char docref[MG_NAME_MAX + 300];
        snprintf(docref, sizeof docref, "%s/%s", get_str(w, "mc") ? get_str(w, "mc") : "",
                 get_str(w, "k") ? get_str(w, "k") : "");
        bool is_blocked = false;
        for (size_t i = 0; i < nblocked && !is_blocked; i++)
            is_blocked = !strcmp(blocked[i], docref);
        if (!tok || is_blocked)
            continue;
        pthread_mutex_lock(&s->ack_mu);
        bool handed = false;
        for (size_t i = 0; i < s->npw && !handed; i++)
            handed = !strcmp(s->pw[i].tok, tok);
        pthread_mutex_unlock(&s->ack_mu);
        const char *state = get_str(w, "state");
        int res;
        if (handed || (state && !strcmp(state, "c")))
            res = 1; /* marked by its writer: no need to read the document */
        else if (get_i64(w, "at") > now_ms() - MG_INFLIGHT_MS)
            res = 0; /* being committed */
        else
            res = intent_resolve(s, cl, wal, w); /* its writer died, or is slow */
        if (res == 0) {
            char **nb = realloc(blocked, (nblocked + 1) * sizeof *nb);
            if (nb)
                blocked = nb;
            if (!nb || !(blocked[nblocked] = strdup(docref))) {
                rc = BNB_ENOMEM;
                break;
            }
            nblocked++;
            continue;
        }
        /* a dead commit's applied mark, if it got that far, goes first; the
         * intent stays when it could not be deleted */
        if (res < 0 && dead_mark_drop(s, ap, w) != 0)
            continue;
        bson_iter_t it, ev;
        bool has_ev = bson_iter_init_find(&it, w, "ev") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &ev) &&
                      bson_iter_next(&ev);
        if (res < 0 || !has_ev) {
            char **ng = realloc(gone, (ngone + 1) * sizeof *ng);
            if (ng)
                gone = ng;
            if (!ng || !(gone[ngone] = strdup(tok))) {
                rc = BNB_ENOMEM;
                break;
            }
            ngone++;
            continue;
        }
        /* its events */
        const char *eids[256];
        size_t nev = 0;
        int pos = 0;
        bson_iter_init_find(&it, w, "ev");
        bson_iter_recurse(&it, &ev);
        while (!rc && bson_iter_next(&ev)) {
            bson_iter_t e;
            const char *id = NULL, *topic = NULL, *key = NULL, *payload = NULL;
            if (!BSON_ITER_HOLDS_DOCUMENT(&ev) || !bson_iter_recurse(&ev, &e))
                continue;
            while (bson_iter_next(&e)) {
                const char *f = bson_iter_key(&e);
                const char *v = BSON_ITER_HOLDS_UTF8(&e) ? bson_iter_utf8(&e, NULL) : NULL;
                if (!strcmp(f, "id"))
                    id = v;
                else if (!strcmp(f, "topic"))
                    topic = v;
                else if (!strcmp(f, "key"))
                    key = v;
                else if (!strcmp(f, "payload"))
                    payload = v;
            }
            if (!id || !topic || !payload)
                continue;
            if (nev < sizeof eids / sizeof *eids)
                eids[nev++] = id;
            pthread_mutex_lock(&s->ack_mu);
            bool done = pw_acked(s, id);
            pthread_mutex_unlock(&s->ack_mu);
            if (done)
                continue; /* acked before (its commit had events not acked yet) */
            if (*np == *cap) {
                size_t nc = *cap ? *cap * 2 : 64;
                pend_t *nnp = realloc(*p, nc * sizeof *nnp);
                if (!nnp) {
                    rc = BNB_ENOMEM;
                    break;
                }
                *p = nnp;
                *cap = nc;
            }
            pend_t *x = &(*p)[(*np)++];
            memset(x, 0, sizeof *x);
            x->seq = get_i64(w, "seq");
            x->ver = get_i64(w, "ver");
            x->pos = pos++;
            x->e.event_id = strdup(id);
            x->e.topic = strdup(topic);
            x->e.key = key ? strdup(key) : NULL;
            x->e.payload = strdup(payload);
            x->doc = strdup(docref);
            if (!x->e.event_id || !x->e.topic || (key && !x->e.key) || !x->e.payload || !x->doc)
                rc = BNB_ENOMEM;
        }
        pthread_mutex_lock(&s->ack_mu);
        pw_note(s, tok, eids, nev);
        pthread_mutex_unlock(&s->ack_mu);
    }
    bson_error_t err;
    if (!rc && mongoc_cursor_error(cur, &err)) {
        mg_log(s, "outbox fetch", &err);
        rc = BNB_EIO;
    }
    mongoc_cursor_destroy(cur);
    if (ngone)
        wal_delete_many(s, wal, gone, ngone);
    *cleaned = ngone;
    for (size_t i = 0; i < ngone; i++)
        free(gone[i]);
    free(gone);
    for (size_t i = 0; i < nblocked; i++)
        free(blocked[i]);
    free(blocked);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(ap);
    mongoc_collection_destroy(wal);
    return rc;
}

static int mg_outbox_fetch(bnb_store_t *st, size_t max, bnb_outbox_entry_t **out, size_t *n)
{
    mg_store_t *s = (mg_store_t *)st;
    *out = NULL;
    *n = 0;
    if (max == 0)
        return 0;
    if (max > 10000)
        max = 10000;
    mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
    pend_t *p = NULL;
    size_t np = 0, cap = 0;
    int rc = 0;
    /* a pass that only finished intents (commits without events) makes room:
     * look again, for a while */
    int64_t until = now_ms() + 2000;
    for (int round = 0; !rc && np == 0 && now_ms() < until; round++) {
        size_t cleaned = 0;
        rc = fetch_pass(s, cl, max, &p, &np, &cap, &cleaned);
        if (cleaned == 0)
            break;
    }
    mongoc_client_pool_push(s->pool, cl);
    bnb_outbox_entry_t *res = NULL;
    size_t total = np < max ? np : max;
    if (!rc && np) {
        /* commit order (insertion sort: a commit's events share a seq and keep
         * their order) */
        for (size_t i = 1; i < np; i++) {
            pend_t x = p[i];
            size_t j = i;
            while (j > 0 && cmp_pend(&p[j - 1], &x) > 0) {
                p[j] = p[j - 1];
                j--;
            }
            p[j] = x;
        }
        /* per document, version order, whatever the clocks of the processes
         * that committed: its events are put back into its own places */
        for (size_t i = 0; i < np; i++) {
            for (size_t j = i + 1; j < np; j++) {
                if (strcmp(p[i].doc, p[j].doc) != 0)
                    continue;
                if (p[j].ver < p[i].ver || (p[j].ver == p[i].ver && p[j].pos < p[i].pos)) {
                    pend_t x = p[i];
                    p[i] = p[j];
                    p[j] = x;
                }
            }
        }
        res = calloc(total, sizeof *res);
        if (!res)
            rc = BNB_ENOMEM;
        for (size_t i = 0; !rc && i < total; i++) {
            res[i] = p[i].e;
            memset(&p[i].e, 0, sizeof p[i].e);
        }
    }
    for (size_t i = 0; i < np; i++) {
        free(p[i].e.event_id);
        free(p[i].e.topic);
        free(p[i].e.key);
        free(p[i].e.payload);
        free(p[i].doc);
    }
    free(p);
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
    /* intents whose events are now all acked are deleted; unknown ids (handed
     * out by another process, or before a restart) are ignored */
    char **done = calloc(n, sizeof *done);
    size_t ndone = 0;
    if (!done)
        return BNB_ENOMEM;
    pthread_mutex_lock(&s->ack_mu);
    for (size_t i = 0; i < n; i++) {
        for (size_t w = 0; event_ids[i] && w < s->npw; w++) {
            mg_pw_t *pw = &s->pw[w];
            size_t k = 0;
            while (k < pw->nev && strcmp(pw->eids[k], event_ids[i]) != 0)
                k++;
            if (k == pw->nev)
                continue;
            pw->acked[k] = true;
            bool all = true;
            for (size_t j = 0; j < pw->nev && all; j++)
                all = pw->acked[j];
            if (all) {
                done[ndone++] = pw->tok;
                pw->tok = NULL;
                pw_free(pw);
                s->pw[w] = s->pw[--s->npw];
            }
            break;
        }
    }
    pthread_mutex_unlock(&s->ack_mu);
    int rc = 0;
    if (ndone) {
        mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
        mongoc_collection_t *wal = mongoc_client_get_collection(cl, s->db, s->wal);
        for (size_t k = 0; k < ndone; k++)
            if (delete_id(s, wal, done[k]) != 0)
                rc = BNB_EIO;
        mongoc_collection_destroy(wal);
        mongoc_client_pool_push(s->pool, cl);
    }
    for (size_t k = 0; k < ndone; k++)
        free(done[k]);
    free(done);
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
    .define = mg_define,
    .query = mg_query,
    .commit2 = mg_commit2,
    .get_many = mg_get_many,
};

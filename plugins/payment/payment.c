/*
 * payment plugin: a simulated card processor (docs/api.md).
 *
 * Store (storage v2): payments/<reservationId> {id:"pay-<reservationId>",
 * reservationId, roomId, hostId, payerId, amount, status, cardLast4, voided?,
 * version, createdAt}, one document per payment that never grows; declared
 * fields reservationId (UNIQUE index), payerId, hostId, createdAt. The document
 * id is the reservation id and it is created with expect_version 0, and the
 * unique index refuses a second payment of a reservation on every backend, so
 * a reservation is charged at most once, across processes, whether the
 * synchronous POST /payments, the ReservationPlaced event, or both reach us.
 * Only the last four card digits are stored.
 *
 * States: APPROVED | DECLINED, APPROVED -> CANCELLED (refund). A refund request
 * (ReservationCancelRequested) for a reservation not paid yet stores a voided
 * CANCELLED payment (amount 0), so a later charge attempt finds it and charges
 * nothing; a refund of a DECLINED payment is a no-op.
 */
#include "bnb_plugin.h"
#include "bnb_plugin_util.h"
#include "bnb_seal.h"
#include "pay_logic.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC_PAY "bearbnb.payment"
#define COLL      "payments"
#define PAGE_MAX  100
#define PAGE_DEF  20

static const bnb_field_def_t pay_fields_def[] = {
    {"reservationId", BNB_FIELD_STR},
    {"payerId", BNB_FIELD_STR},
    {"hostId", BNB_FIELD_STR},
    {"createdAt", BNB_FIELD_INT},
};

static const bnb_index_def_t pay_indexes[] = {
    {{"reservationId", NULL}, 1},        /* one payment per reservation */
    {{"payerId", "createdAt", NULL}, 0}, /* mine as payer, newest first */
    {{"hostId", "createdAt", NULL}, 0},  /* for my rooms as host */
};

static const bnb_coll_def_t pay_colls[] = {
    {COLL, pay_fields_def, sizeof pay_fields_def / sizeof pay_fields_def[0], pay_indexes,
     sizeof pay_indexes / sizeof pay_indexes[0]},
};

static const bnb_host_api_t *H;
/* 1 when the store speaks storage v2 (declared collection, unique index,
 * keyset pages). 0 on a store whose backend has no v2 yet: the same documents
 * through the ABI 1.0 calls (lookup keys payerId / hostId, pages cut here);
 * one payment per reservation still holds (the document id is the
 * reservation id, created create-only), pages then cost the user's history. */
static int V2;

/* card_key_file: PEM X25519 private key that opens the sealed cards (give
 * reservation its public half, `openssl pkey -pubout`). Empty: a key pair is
 * generated once and kept in this service's store (card_keys/current, created
 * create-only so every process of the service uses the same one). */
static const bnb_cfg_item_t pay_config[] = {
    {"card_key_file", BNB_CFG_STRING, "", "PEM X25519 private key for sealed cards (empty: generated, in the store)"},
    {NULL, 0, NULL, NULL}};

/* ---- the card key ---------------------------------------------------------- */

static pthread_mutex_t key_mu = PTHREAD_MUTEX_INITIALIZER;
static char *key_priv, *key_pub; /* base64 raw X25519, loaded once */
static char key_kid[17];

static int key_from_store(bnb_ctx_t *ctx, char **priv)
{
    bnb_store_t *st = H->store(ctx);
    json_t *doc = NULL;
    int64_t v;
    int rc = H->store_get(st, "card_keys", "current", &doc, &v);
    if (rc == BNB_ENOENT) {
        char *gpriv = NULL, *gpub = NULL;
        rc = bnb_seal_keygen(&gpriv, &gpub);
        json_t *body = rc == 0 ? json_pack("{s:s, s:s, s:s, s:I}", "alg", BNB_SEAL_ALG, "private", gpriv, "public",
                                           gpub, "createdAt", (json_int_t)H->now_ms())
                               : NULL;
        bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "card_keys", .id = "current", .expect_version = 0, .body = body};
        rc = rc != 0 ? rc : body ? H->store_commit(st, &w, NULL, 0, NULL, NULL) : BNB_ENOMEM;
        if (rc == 0) {
            H->log(ctx, "info", "generated the card key pair (kept in the payment store)");
            *priv = gpriv;
            gpriv = NULL;
        }
        json_decref(body);
        bnb_seal_free_secret(gpriv);
        free(gpub);
        if (rc != BNB_EEXIST)
            return rc;
        rc = H->store_get(st, "card_keys", "current", &doc, &v); /* another process made it first */
    }
    if (rc != 0)
        return rc;
    const char *p = json_string_value(json_object_get(doc, "private"));
    *priv = p ? strdup(p) : NULL;
    rc = p ? (*priv ? 0 : BNB_ENOMEM) : BNB_EINVAL;
    json_decref(doc);
    return rc;
}

/* The card key pair (borrowed, loaded once): from card_key_file, else the store. */
static int card_key(bnb_ctx_t *ctx, const char **priv, const char **pub, const char **kid)
{
    int rc = 0;
    pthread_mutex_lock(&key_mu);
    if (!key_priv) {
        const char *file = H->config(ctx, "card_key_file");
        char *p = NULL, *q = NULL;
        if (file && *file) {
            rc = bnb_seal_read_private_pem(file, &p);
            if (rc != 0)
                H->log(ctx, "error", "card_key_file %s: not a readable PEM X25519 private key", file);
        } else {
            rc = key_from_store(ctx, &p);
        }
        if (rc == 0 && (rc = bnb_seal_public_of(p, &q)) == 0 && (rc = bnb_seal_kid(q, key_kid)) == 0) {
            key_priv = p;
            key_pub = q;
            p = q = NULL;
        }
        bnb_seal_free_secret(p);
        free(q);
    }
    *priv = key_priv;
    *pub = key_pub;
    *kid = key_kid;
    pthread_mutex_unlock(&key_mu);
    return rc;
}

/* The card number sealed in `sealed` for reservation `res_id` (caller frees
 * with bnb_seal_free_secret). BNB_EINVAL when it does not open. */
static int open_card(bnb_ctx_t *ctx, const char *sealed, const char *res_id, char **number)
{
    const char *priv, *pub, *kid;
    int rc = card_key(ctx, &priv, &pub, &kid);
    if (rc != 0)
        return rc == BNB_EINVAL || rc == BNB_ENOENT ? BNB_EIO : rc;
    rc = bnb_unseal(priv, sealed, res_id, number);
    if (rc == 0 && !pay_card_valid(*number)) {
        bnb_seal_free_secret(*number);
        *number = NULL;
        rc = BNB_EINVAL;
    }
    return rc;
}

static const char *event_type_for(const char *status)
{
    if (!strcmp(status, "APPROVED"))
        return "PaymentApproved";
    if (!strcmp(status, "DECLINED"))
        return "PaymentDeclined";
    return "PaymentCancelled";
}

static json_t *event_data(const json_t *p)
{
    return json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O}", "id", json_object_get(p, "id"), "reservationId",
                     json_object_get(p, "reservationId"), "roomId", json_object_get(p, "roomId"), "hostId",
                     json_object_get(p, "hostId"), "payerId", json_object_get(p, "payerId"), "amount",
                     json_object_get(p, "amount"), "status", json_object_get(p, "status"), "version",
                     json_object_get(p, "version"));
}

/* Commit payment document `p` (expect_version `ver`) with the event of its state. */
static int pay_commit(bnb_store_t *st, const json_t *p, int64_t ver, const char *applied)
{
    const char *res_id = json_string_value(json_object_get(p, "reservationId"));
    json_t *data = event_data(p);
    if (!data)
        return BNB_ENOMEM;
    bnb_event_out_t ev = {.topic = TOPIC_PAY,
                          .type = event_type_for(json_string_value(json_object_get(p, "status"))),
                          .subject = json_string_value(json_object_get(p, "id")),
                          .correlation_id = res_id,
                          .data = data};
    bnb_commit_t c = {.op = BNB_WRITE_PUT,
                      .coll = COLL,
                      .id = res_id,
                      .expect_version = ver,
                      .body = p,
                      .events = &ev,
                      .nevents = 1,
                      .applied_event_id = applied};
    bnb_write_t w = {.op = BNB_WRITE_PUT,
                     .coll = COLL,
                     .id = res_id,
                     .expect_version = ver,
                     .body = p,
                     .key1 = json_string_value(json_object_get(p, "payerId")),
                     .key2 = json_string_value(json_object_get(p, "hostId"))};
    int rc = V2 ? H->store_commit2(st, &c, NULL) : H->store_commit(st, &w, &ev, 1, applied, NULL);
    json_decref(data);
    return rc;
}

/* Charge reservation `res_id` once. *out (caller frees) is the payment, new or
 * the one that already existed (*created says which). */
static int pay_create(bnb_ctx_t *ctx, const char *res_id, const char *room_id, const char *host_id, const char *payer,
                      json_int_t amount, const char *number, const char *applied, json_t **out, int *created)
{
    bnb_store_t *st = H->store(ctx);
    char pid[80], last4[5];
    if (pay_id_for(res_id, pid, sizeof pid) != 0)
        return BNB_EINVAL;
    pay_last4(number, last4);
    const char *status = pay_decide(number);
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:i, s:I}", "id", pid, "reservationId", res_id,
                          "roomId", room_id, "hostId", host_id, "payerId", payer, "amount", amount, "status", status,
                          "cardLast4", last4, "version", 1, "createdAt", (json_int_t)H->now_ms());
    if (!p)
        return BNB_ENOMEM;
    int rc = pay_commit(st, p, 0, applied);
    if (rc == 0) {
        H->count(ctx, !strcmp(status, "APPROVED") ? "approved" : "declined", 1);
        *created = 1;
        *out = p;
        return 0;
    }
    json_decref(p);
    if (rc != BNB_EEXIST && rc != BNB_ETAKEN && rc != BNB_EALREADY)
        return rc;
    int64_t v;
    *created = 0;
    return H->store_get(st, COLL, res_id, out, &v);
}

/* Refund (or void) the payment of the reservation in event data `d`: one
 * load - change - commit of its payment document. */
typedef struct refund {
    bnb_ctx_t *ctx;
    const json_t *d;
    const char *applied;
    const char *counter; /* what the commit did, counted once it is stored */
} refund_t;

static int refund_change(bnb_util_txn_t *t, void *arg)
{
    refund_t *rf = arg;
    const json_t *d = rf->d;
    rf->counter = NULL;
    t->applied_event_id = rf->applied;
    if (!t->doc) {
        char pid[80];
        if (pay_id_for(t->id, pid, sizeof pid) != 0)
            return BNB_EINVAL;
        bnb_util_txn_set_doc(t, json_pack("{s:s, s:s, s:O, s:O, s:O, s:i, s:s, s:n, s:b, s:i, s:I}", "id", pid,
                                          "reservationId", t->id, "roomId", json_object_get(d, "roomId"), "hostId",
                                          json_object_get(d, "hostId"), "payerId", json_object_get(d, "guestId"),
                                          "amount", 0, "status", "CANCELLED", "cardLast4", "voided", 1, "version", 1,
                                          "createdAt", (json_int_t)H->now_ms()));
        rf->counter = "voided";
    } else {
        const char *next = pay_refund_next(json_string_value(json_object_get(t->doc, "status")));
        if (!next)
            return BNB_UTIL_SKIP;
        json_object_set_new(t->doc, "status", json_string(next));
        json_object_set_new(t->doc, "version",
                            json_integer(json_integer_value(json_object_get(t->doc, "version")) + 1));
        json_object_set_new(t->doc, "refundedAt", json_integer(H->now_ms()));
        rf->counter = "refunded";
    }
    if (!t->doc)
        return BNB_ENOMEM;
    t->commit2 = V2;
    t->key1 = V2 ? NULL : json_string_value(json_object_get(t->doc, "payerId"));
    t->key2 = V2 ? NULL : json_string_value(json_object_get(t->doc, "hostId"));
    return bnb_util_txn_event(t, TOPIC_PAY, event_type_for(json_string_value(json_object_get(t->doc, "status"))),
                              json_string_value(json_object_get(t->doc, "id")), t->id, event_data(t->doc));
}

static int pay_refund(bnb_ctx_t *ctx, const json_t *d, const char *applied)
{
    const char *res_id = json_string_value(json_object_get(d, "id"));
    refund_t rf = {.ctx = ctx, .d = d, .applied = applied};
    int rc = bnb_util_update(H, H->store(ctx), COLL, res_id, refund_change, &rf, NULL, NULL, NULL);
    if (rc == 0 && rf.counter)
        H->count(ctx, rf.counter, 1);
    return rc == BNB_EALREADY ? 0 : rc;
}

/* ---- HTTP ------------------------------------------------------------------ */

static const char *const pay_fields[] = {"reservationId", "roomId", "hostId", "amount", "sealedCard", NULL};

static void on_pay(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const json_t *body = bnb_util_body(H, req, pay_fields, NULL);
    const char *user = H->req_user(req);
    if (!body)
        return;
    const char *res_id = json_string_value(json_object_get(body, "reservationId"));
    const char *room_id = json_string_value(json_object_get(body, "roomId"));
    const char *host_id = json_string_value(json_object_get(body, "hostId"));
    const json_t *amount = json_object_get(body, "amount");
    const char *sealed = json_string_value(json_object_get(body, "sealedCard"));
    const char *bad = !bnb_util_id_ok(res_id)                                      ? "reservationId"
                      : !room_id                                                   ? "roomId"
                      : !host_id                                                   ? "hostId"
                      : !json_is_integer(amount) || json_integer_value(amount) < 0 ? "amount"
                      : !sealed                                                    ? "sealedCard"
                                                                                   : NULL;
    if (bad) {
        H->respond_problem(req, 400, "Bad Request", "field '%s' is missing or has the wrong type", bad);
        return;
    }
    H->set_correlation(ctx, res_id);
    json_t *p = NULL;
    int created = 0;
    char *number = NULL;
    int rc = open_card(ctx, sealed, res_id, &number);
    if (rc == BNB_EINVAL) {
        H->respond_problem(req, 422, "Unprocessable Entity",
                           "field 'sealedCard' does not open with this service's card key for reservation %s", res_id);
        return;
    }
    if (rc == 0)
        rc = pay_create(ctx, res_id, room_id, host_id, user, json_integer_value(amount), number, NULL, &p, &created);
    bnb_seal_free_secret(number);
    if (rc != 0) {
        bnb_util_respond_error(H, req, rc, "payment store");
        return;
    }
    const char *payer = json_string_value(json_object_get(p, "payerId"));
    if (!payer || strcmp(payer, user)) {
        json_decref(p);
        H->respond_problem(req, 409, "Conflict", "reservation %s is already paid by someone else", res_id);
        return;
    }
    H->respond_json(req, created ? 201 : 200, p);
}

/* The payment of reservation `res_id` if `user` paid it or hosts its room. */
static int load_visible(bnb_ctx_t *ctx, const char *id, const char *user, json_t **out)
{
    const char *res_id = pay_reservation_of(id);
    json_t *p = NULL;
    int64_t v;
    if (!bnb_util_id_ok(res_id) || !user)
        return BNB_ENOENT;
    int rc = H->store_get(H->store(ctx), COLL, res_id, &p, &v);
    if (rc != 0)
        return rc;
    const char *payer = json_string_value(json_object_get(p, "payerId"));
    const char *host = json_string_value(json_object_get(p, "hostId"));
    if (!((payer && !strcmp(payer, user)) || (host && !strcmp(host, user)))) {
        json_decref(p);
        return BNB_ENOENT;
    }
    *out = p;
    return 0;
}

static void respond_one(bnb_req_t *req, int rc, json_t *p, const char *id)
{
    if (rc == 0)
        H->respond_json(req, 200, p);
    else if (rc == BNB_ENOENT)
        H->respond_problem(req, 404, "Not Found", "no payment '%s'", id ? id : "");
    else
        bnb_util_respond_error(H, req, rc, "payment store");
}

static void on_get(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *id = H->req_param(req, "id");
    json_t *p = NULL;
    int rc = load_visible(ctx, id, H->req_user(req), &p);
    respond_one(req, rc, p, id);
}

/* createdAt desc, then id desc. */
static int newest_first(const void *a, const void *b)
{
    const json_t *x = json_object_get(*(json_t *const *)a, "body"), *y = json_object_get(*(json_t *const *)b, "body");
    json_int_t cx = json_integer_value(json_object_get(x, "createdAt")),
               cy = json_integer_value(json_object_get(y, "createdAt"));
    if (cx != cy)
        return cx > cy ? -1 : 1;
    return -strcmp(json_string_value(json_object_get(x, "reservationId")) ?: "",
                   json_string_value(json_object_get(y, "reservationId")) ?: "");
}

/* A page without storage v2: the user's payments by lookup key, newest first,
 * after `cursor` ("v1:<createdAt>:<reservationId>"). */
static int list_v1(bnb_ctx_t *ctx, int which, const char *user, size_t limit, const char *cursor, json_t **rows,
                   char **next)
{
    json_t *all = NULL;
    long long after_at = 0;
    int after_n = 0;
    char after_id[80] = "";
    *rows = NULL;
    *next = NULL;
    if (cursor &&
        (sscanf(cursor, "v1:%lld:%79[A-Za-z0-9_-]%n", &after_at, after_id, &after_n) != 2 || cursor[after_n] != '\0'))
        return BNB_EINVAL;
    int rc = H->store_list(H->store(ctx), COLL, which, user, &all);
    if (rc != 0)
        return rc;
    size_t n = json_array_size(all), i, start = 0;
    json_t **v = n ? calloc(n, sizeof *v) : NULL;
    if (n && !v) {
        json_decref(all);
        return BNB_ENOMEM;
    }
    for (i = 0; i < n; i++)
        v[i] = json_array_get(all, i);
    if (n)
        qsort(v, n, sizeof *v, newest_first);
    if (cursor)
        for (; start < n; start++) {
            const json_t *b = json_object_get(v[start], "body");
            json_int_t at = json_integer_value(json_object_get(b, "createdAt"));
            const char *id = json_string_value(json_object_get(b, "reservationId")) ?: "";
            if (at < after_at || (at == after_at && strcmp(id, after_id) < 0))
                break;
        }
    *rows = json_array();
    for (i = start; *rows && i < n && i < start + limit; i++)
        json_array_append(*rows, v[i]);
    if (*rows && i < n && i > start) {
        const json_t *b = json_object_get(v[i - 1], "body");
        char buf[128];
        snprintf(buf, sizeof buf, "v1:%lld:%s", (long long)json_integer_value(json_object_get(b, "createdAt")),
                 json_string_value(json_object_get(b, "reservationId")) ?: "");
        *next = strdup(buf);
    }
    free(v);
    json_decref(all);
    return *rows ? 0 : BNB_ENOMEM;
}

/* GET /payments?reservationId=&limit=&cursor=: a page of mine (as payer, or
 * for my rooms as host), newest first; with reservationId the page holds that
 * reservation's payment when I may see it. */
static void on_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    static const char *const known[] = {"reservationId", "limit", "cursor", NULL};
    const char *user = H->req_user(req), *role = H->req_role(req);
    if (!bnb_util_query_names_ok(H, req, known))
        return;
    size_t limit = bnb_util_page_limit(H, req, PAGE_DEF, PAGE_MAX);
    if (!limit)
        return;
    /* copies: a host may reuse the buffer of req_query on the next call */
    char res_id_buf[80], cursor_buf[1100];
    const char *res_id = H->req_query(req, "reservationId");
    if (res_id && strlen(res_id) < sizeof res_id_buf)
        res_id = strcpy(res_id_buf, res_id);
    else if (res_id)
        res_id = "";
    const char *cursor = H->req_query(req, "cursor");
    if (cursor && strlen(cursor) < sizeof cursor_buf)
        cursor = strcpy(cursor_buf, cursor);
    else if (cursor)
        cursor = "";
    if (res_id && !bnb_util_id_ok(res_id)) {
        H->respond_problem(req, 400, "Bad Request", "query parameter 'reservationId' is not a reservation id");
        return;
    }
    if (cursor && (!*cursor || strlen(cursor) > 1024)) {
        H->respond_problem(req, 400, "Bad Request", "query parameter 'cursor' is not a cursor of this list");
        return;
    }
    json_t *items = json_array();
    if (!items) {
        H->respond_problem(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    if (res_id) { /* at most one: the unique index */
        json_t *p = NULL;
        int rc = cursor ? BNB_ENOENT : load_visible(ctx, res_id, user, &p);
        if (rc != 0 && rc != BNB_ENOENT) {
            json_decref(items);
            bnb_util_respond_error(H, req, rc, "payment store");
            return;
        }
        if (p)
            json_array_append_new(items, p);
        H->respond_json(req, 200, json_pack("{s:o, s:n}", "items", items, "next"));
        return;
    }
    bnb_cond_t cond = {
        .field = role && !strcmp(role, "host") ? "hostId" : "payerId", .op = BNB_Q_EQ, .str = user ? user : ""};
    bnb_query_t q = {.coll = COLL,
                     .conds = &cond,
                     .nconds = 1,
                     .order_by = "createdAt",
                     .descending = 1,
                     .limit = limit,
                     .cursor = cursor};
    json_t *rows = NULL, *e;
    char *next = NULL;
    size_t i;
    int rc = V2 ? H->store_query(H->store(ctx), &q, &rows, &next)
                : list_v1(ctx, role && !strcmp(role, "host") ? 2 : 1, user ? user : "", limit, cursor, &rows, &next);
    if (rc == BNB_EINVAL && cursor)
        H->respond_problem(req, 400, "Bad Request", "query parameter 'cursor' is not a cursor of this list");
    else if (rc != 0)
        bnb_util_respond_error(H, req, rc, "payment store");
    else {
        json_array_foreach(rows, i, e) json_array_append(items, json_object_get(e, "body"));
        H->respond_json(req, 200, json_pack("{s:O, s:s?}", "items", items, "next", next));
    }
    json_decref(items);
    json_decref(rows);
    free(next);
}

/* ---- events ---------------------------------------------------------------- */

static int on_reservation_event(bnb_ctx_t *ctx, const json_t *ev)
{
    const char *ev_id, *type;
    const json_t *d;
    if (bnb_util_envelope(H, ctx, ev, &ev_id, &type, &d) != 0)
        return BNB_EINVAL;
    int placed = !strcmp(type, "ReservationPlaced");
    if (!placed && strcmp(type, "ReservationCancelRequested"))
        return 0;
    if (!json_is_object(d))
        return bnb_util_reject(H, ctx, "reservation event without data object");
    const char *res_id = json_string_value(json_object_get(d, "id"));
    const char *room_id = json_string_value(json_object_get(d, "roomId"));
    const char *host_id = json_string_value(json_object_get(d, "hostId"));
    const char *guest_id = json_string_value(json_object_get(d, "guestId"));
    const json_t *amount = json_object_get(d, "amount");
    if (!bnb_util_id_ok(res_id) || !room_id || !host_id || !guest_id || !json_is_integer(amount))
        return bnb_util_reject(H, ctx, "reservation event data needs id, roomId, hostId, guestId and amount");
    H->set_correlation(ctx, res_id);
    if (!placed)
        return pay_refund(ctx, d, ev_id);
    const char *sealed = json_string_value(json_object_get(d, "sealedCard"));
    if (!sealed)
        return bnb_util_reject(H, ctx, "ReservationPlaced without sealedCard");
    /* Usually the booking's own call paid already: then there is nothing to
     * do (pay_create would find it too), and opening the card (an X25519
     * agreement) would be wasted. A payment is never deleted, so its
     * presence is final. */
    int64_t v;
    json_t *paid = NULL;
    int rc = H->store_get(H->store(ctx), COLL, res_id, &paid, &v);
    json_decref(paid);
    if (rc == 0)
        return 0;
    if (rc != BNB_ENOENT)
        return rc;
    char *number = NULL;
    rc = open_card(ctx, sealed, res_id, &number);
    if (rc == BNB_EINVAL)
        return bnb_util_reject(H, ctx, "sealedCard does not open with this service's card key");
    if (rc != 0)
        return rc;
    json_t *p = NULL;
    int created = 0;
    rc = pay_create(ctx, res_id, room_id, host_id, guest_id, json_integer_value(amount), number, ev_id, &p, &created);
    bnb_seal_free_secret(number);
    json_decref(p);
    return rc;
}

/* GET /payments/keys/card (services only): the public key to seal cards with. */
static void on_card_key(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *priv, *pub, *kid;
    int rc = card_key(ctx, &priv, &pub, &kid);
    if (rc != 0) {
        bnb_util_respond_error(H, req, rc == BNB_EINVAL || rc == BNB_ENOENT ? BNB_EIO : rc, "payment card key");
        return;
    }
    H->respond_json(req, 200, json_pack("{s:s, s:s, s:s}", "alg", BNB_SEAL_ALG, "kid", kid, "publicKey", pub));
}

static const bnb_util_route_t pay_routes[] = {
    {"GET", "/payments/keys/card", BNB_ROLE_SERVICE, on_card_key},
    {"POST", "/payments", BNB_ROLE_SERVICE, on_pay},
    {"GET", "/payments", BNB_ROLE_USER, on_list},
    {"GET", "/payments/{id}", BNB_ROLE_USER, on_get},
    {NULL, NULL, 0, NULL},
};

static const bnb_util_sub_t pay_subs[] = {
    {"bearbnb.reservation", on_reservation_event},
    {NULL, NULL},
};

static int pay_init(bnb_ctx_t *ctx, const bnb_host_api_t *host)
{
    H = host;
    int rc = BNB_EINVAL;
    if (BNB_HAS(host, store_define) && BNB_HAS(host, store_query) && BNB_HAS(host, store_commit2))
        rc = host->store_define(ctx, pay_colls, sizeof pay_colls / sizeof pay_colls[0]);
    if (rc != 0 && rc != BNB_EINVAL)
        return rc; /* the database failed: not a reason to change modes */
    V2 = rc == 0;
    if (!V2)
        H->log(ctx, "warn", "payment: this store has no storage v2: payments through the ABI 1.0 calls");
    return bnb_util_register(ctx, host, pay_routes, pay_subs);
}

static void pay_fini(bnb_ctx_t *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&key_mu);
    bnb_seal_free_secret(key_priv);
    free(key_pub);
    key_priv = key_pub = NULL;
    pthread_mutex_unlock(&key_mu);
}

BNB_EXPORT const bnb_plugin_t bnb_plugin = {
    .abi_version = BNB_ABI_VERSION,
    .name = "payment",
    .version = "0.2.0",
    .config = pay_config,
    .init = pay_init,
    .fini = pay_fini,
};

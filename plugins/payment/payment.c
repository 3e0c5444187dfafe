/*
 * payment plugin: a simulated card processor (docs/api.md).
 *
 * Store: payments/<reservationId> {id:"pay-<reservationId>", reservationId, roomId,
 * hostId, payerId, amount, status, cardLast4, voided?, version, createdAt},
 * key1 payerId, key2 hostId. The document id is the reservation id and it is
 * created with expect_version 0, so a reservation is charged at most once
 * whether the synchronous POST /payments, the ReservationPlaced event, or both
 * reach us. Only the last four card digits are stored.
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

static const bnb_host_api_t *H;

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
    bnb_write_t w = {.op = BNB_WRITE_PUT,
                     .coll = "payments",
                     .id = res_id,
                     .expect_version = ver,
                     .body = p,
                     .key1 = json_string_value(json_object_get(p, "payerId")),
                     .key2 = json_string_value(json_object_get(p, "hostId"))};
    int rc = H->store_commit(st, &w, &ev, 1, applied, NULL);
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
    if (rc != BNB_EEXIST && rc != BNB_EALREADY)
        return rc;
    int64_t v;
    *created = 0;
    return H->store_get(st, "payments", res_id, out, &v);
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
    t->key1 = json_string_value(json_object_get(t->doc, "payerId"));
    t->key2 = json_string_value(json_object_get(t->doc, "hostId"));
    return bnb_util_txn_event(t, TOPIC_PAY, event_type_for(json_string_value(json_object_get(t->doc, "status"))),
                              json_string_value(json_object_get(t->doc, "id")), t->id, event_data(t->doc));
}

static int pay_refund(bnb_ctx_t *ctx, const json_t *d, const char *applied)
{
    const char *res_id = json_string_value(json_object_get(d, "id"));
    refund_t rf = {.ctx = ctx, .d = d, .applied = applied};
    int rc = bnb_util_update(H, H->store(ctx), "payments", res_id, refund_change, &rf, NULL, NULL, NULL);
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
    int rc = H->store_get(H->store(ctx), "payments", res_id, &p, &v);
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

static void on_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *user = H->req_user(req);
    const char *res_id = H->req_query(req, "reservationId");
    if (res_id) {
        json_t *p = NULL;
        int rc = load_visible(ctx, res_id, user, &p);
        respond_one(req, rc, p, res_id);
        return;
    }
    const char *role = H->req_role(req);
    json_t *rows = NULL, *out = json_array();
    size_t i;
    json_t *e;
    int rc =
        out ? H->store_list(H->store(ctx), "payments", role && !strcmp(role, "host") ? 2 : 1, user ? user : "", &rows)
            : BNB_ENOMEM;
    if (rc != 0) {
        json_decref(out);
        bnb_util_respond_error(H, req, rc, "payment store");
        return;
    }
    json_array_foreach(rows, i, e) json_array_append(out, json_object_get(e, "body"));
    json_decref(rows);
    H->respond_json(req, 200, out);
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
    char *number = NULL;
    int rc = open_card(ctx, sealed, res_id, &number);
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
    .version = "0.1.0",
    .config = pay_config,
    .init = pay_init,
    .fini = pay_fini,
};

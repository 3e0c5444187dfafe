/*
 * reservation plugin: date-range bookings of rooms and the booking saga, on
 * storage v2 (plugin ABI 1.1).
 *
 * Store:
 *   reservations/<id>   one document per reservation (declared fields roomId,
 *                       guestId, hostId, checkIn, checkOut, status, createdAt,
 *                       slot; indexes below). A booking is one create-only
 *                       commit of its document, with its ReservationPlaced
 *                       event and its CLAIMS: one key per night
 *                       ("night|<roomId>|<YYYY-MM-DD>") and, when the guest cap
 *                       is on, one of the guest's slot keys ("slot|<guestId>|<k>",
 *                       k < max_active_per_guest). A claim is unique in the whole
 *                       store on every backend, so two processes can never hold
 *                       the same night (BNB_ETAKEN -> 409) nor one guest more
 *                       active reservations than slots. Every later commit of the
 *                       document sets its claims from its status: nights while it
 *                       holds them (PENDING, CONFIRMED, CANCEL_REQUESTED), the slot
 *                       while it is active (PENDING, CONFIRMED), nothing once
 *                       REJECTED or CANCELLED. A slot of a reservation whose stay
 *                       has ended is taken back by the next booking that needs it.
 *   rooms/<roomId>      replica of the room fed by bearbnb.room events
 *                       {id, hostId, pricePerNight, capacity, status, version}
 *   keys/payment-card   payment's public card key (see seal_card)
 *   calendars/<roomId>  the per-room calendars before storage v2: moved into
 *                       reservations (with their claims) at init, then
 *                       deleted (migrate_legacy)
 * No document grows with history; a booking reads the room replica, the
 * guest's slot holders (at most max_active_per_guest) and writes one document.
 *
 * A reservation: {id, roomId, hostId, guestId, checkIn, checkOut, guests, amount,
 * status, paymentId, reason?, version, createdAt} (+ internal `slot`). States
 * (resv_logic.h): PENDING -> CONFIRMED | REJECTED | CANCEL_REQUESTED,
 * CONFIRMED -> CANCEL_REQUESTED, CANCEL_REQUESTED -> CANCELLED. Cancelling a
 * PENDING reservation (guest or room deletion) moves it to CANCEL_REQUESTED
 * right away: payment then refunds the charge if it made one, or records a
 * voided payment so that no later charge happens, and answers with
 * PaymentCancelled (or PaymentDeclined when the card was declined); either ends
 * the reservation CANCELLED. Its nights stay held until then.
 */
#include "bnb_idem.h"
#include "bnb_plugin.h"
#include "bnb_plugin_util.h"
#include "bnb_seal.h"
#include "resv_logic.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC_RESV  "bearbnb.reservation"
#define COLL        "reservations"
#define PAGE_MAX    100
#define PAGE_DEF    20
#define LEGACY      "calendars" /* before storage v2: {roomId, roomDeleted, reservations: [...]} per room */
#define LEGACY_IDX  "reservations_idx"
#define LEGACY_PAGE 20

static const bnb_host_api_t *H;

/* max_active_per_guest: how many PENDING/CONFIRMED reservations whose stay has
 * not ended one guest may hold; one more is a 409 "too many active
 * reservations" (OWASP API6), exact across processes (slot claims). 0 = no cap.
 * max_days_ahead: the booking horizon, checkIn at most this many days after
 * today (422 beyond). max_nights: the longest stay (422 beyond). */
static const bnb_cfg_item_t resv_config[] = {
    {"max_active_per_guest", BNB_CFG_INT, "10", "cap on a guest's PENDING/CONFIRMED future reservations (0 = none)"},
    {"max_days_ahead", BNB_CFG_INT, "730", "booking horizon: checkIn at most this many days ahead"},
    {"max_nights", BNB_CFG_INT, "365", "longest stay in nights (at most 365)"},
    {"payment_key_file", BNB_CFG_STRING, "",
     "PEM X25519 public key of payment's card key (empty: asked from payment once, then kept in this store)"},
    BNB_IDEM_CONFIG,
    {NULL, 0, NULL, NULL}};

static const bnb_field_def_t resv_fields[] = {
    {"roomId", BNB_FIELD_STR},   {"guestId", BNB_FIELD_STR}, {"hostId", BNB_FIELD_STR},    {"checkIn", BNB_FIELD_STR},
    {"checkOut", BNB_FIELD_STR}, {"status", BNB_FIELD_STR},  {"createdAt", BNB_FIELD_INT}, {"slot", BNB_FIELD_INT},
};

static const bnb_index_def_t resv_indexes[] = {
    {{"guestId", "createdAt", NULL}, 0},           /* mine as guest, newest first */
    {{"guestId", "status", "createdAt", NULL}, 0}, /* ... with a status */
    {{"hostId", "createdAt", NULL}, 0},            /* for my rooms as host */
    {{"hostId", "status", "createdAt", NULL}, 0},
    {{"roomId", "checkOut", NULL}, 0}, /* a room's stays not over yet (room deleted, conflicts) */
    {{"guestId", "slot", NULL}, 0},    /* the guest's slot holders */
};

static const bnb_coll_def_t resv_colls[] = {
    {COLL, resv_fields, sizeof resv_fields / sizeof resv_fields[0], resv_indexes,
     sizeof resv_indexes / sizeof resv_indexes[0]},
    {LEGACY, NULL, 0, NULL, 0}, /* the per-room calendars before storage v2, until migrated */
};

/* ---- helpers -------------------------------------------------------------- */

static int32_t today(void)
{
    return resv_day_of_ms(H->now_ms());
}

static long cfg_long(bnb_ctx_t *ctx, const char *key, long def)
{
    const char *v = H->config(ctx, key);
    char *end = NULL;
    long n = v && *v ? strtol(v, &end, 10) : def;
    return end && *end ? def : n;
}

static void respond_store_error(bnb_req_t *req, int rc)
{
    bnb_util_respond_error(H, req, rc, "reservation store");
}

static const char *event_type_for(const char *status)
{
    if (!strcmp(status, "PENDING"))
        return "ReservationPlaced";
    if (!strcmp(status, "CONFIRMED"))
        return "ReservationConfirmed";
    if (!strcmp(status, "REJECTED"))
        return "ReservationRejected";
    if (!strcmp(status, "CANCEL_REQUESTED"))
        return "ReservationCancelRequested";
    return "ReservationCancelled";
}

static int status_active(const char *s)
{
    return s && (!strcmp(s, "PENDING") || !strcmp(s, "CONFIRMED"));
}

/* What a client or an event sees of a stored reservation (caller frees). */
static json_t *public_view(const json_t *r)
{
    json_t *d = json_deep_copy(r);
    if (d)
        json_object_del(d, "slot");
    return d;
}

/* The event of a reservation in its current state (caller frees the data). */
static json_t *event_data(const json_t *r, const json_t *sealed_card)
{
    json_t *d = public_view(r);
    if (!d)
        return NULL;
    json_object_del(d, "createdAt");
    json_object_del(d, "updatedAt");
    if (sealed_card)
        json_object_set(d, "sealedCard", (json_t *)sealed_card);
    return d;
}

/* Claims a reservation holds in its state: its nights while its status holds
 * them, its slot while it is active. */
static int set_claims(bnb_util_txn_t *t, const json_t *r)
{
    const char *status = json_string_value(json_object_get(r, "status"));
    const char *room = json_string_value(json_object_get(r, "roomId"));
    const char *guest = json_string_value(json_object_get(r, "guestId"));
    int32_t in, out;
    char key[160], day[11];
    bnb_util_txn_claims_clear(t);
    if (resv_status_holds(status)) {
        if (!room || resv_parse_date(json_string_value(json_object_get(r, "checkIn")), &in) != 0 ||
            resv_parse_date(json_string_value(json_object_get(r, "checkOut")), &out) != 0)
            return BNB_EINVAL;
        for (int32_t d = in; d < out; d++) {
            resv_format_date(d, day);
            snprintf(key, sizeof key, "night|%s|%s", room, day);
            int rc = bnb_util_txn_claim(t, key);
            if (rc != 0)
                return rc;
        }
    }
    json_t *slot = json_object_get(r, "slot");
    if (status_active(status) && json_is_integer(slot) && guest) {
        snprintf(key, sizeof key, "slot|%s|%lld", guest, (long long)json_integer_value(slot));
        return bnb_util_txn_claim(t, key);
    }
    return 0;
}

/* ---- state changes ------------------------------------------------------------ */

typedef struct input {
    bnb_ctx_t *ctx;
    resv_input_t in;
    json_int_t paid; /* amount of an approved payment, or -1 */
    const char *payment_id, *reason, *applied;
} input_t;

static int input_change(bnb_util_txn_t *t, void *arg)
{
    input_t *a = arg;
    json_t *r = t->doc;
    if (!r)
        return BNB_ENOENT;
    resv_input_t eff = a->in;
    const char *payment_id = a->payment_id, *reason = a->reason;
    if (a->in == RESV_IN_APPROVED && a->paid >= 0 && a->paid != json_integer_value(json_object_get(r, "amount"))) {
        H->log(a->ctx, "warn", "reservation %s: payment of %lld does not match its amount, rejecting", t->id,
               (long long)a->paid);
        eff = RESV_IN_DECLINED;
        payment_id = NULL;
        reason = "payment does not match the reservation";
    }
    const char *next = resv_next_status(json_string_value(json_object_get(r, "status")), eff);
    if (!next)
        return BNB_UTIL_SKIP;
    json_object_set_new(r, "status", json_string(next));
    if (payment_id)
        json_object_set_new(r, "paymentId", json_string(payment_id));
    if (reason)
        json_object_set_new(r, "reason", json_string(reason));
    if (!status_active(next))
        json_object_del(r, "slot");
    json_object_set_new(r, "version", json_integer(json_integer_value(json_object_get(r, "version")) + 1));
    json_object_set_new(r, "updatedAt", json_integer(H->now_ms()));
    t->applied_event_id = a->applied;
    int rc = set_claims(t, r);
    return rc ? rc : bnb_util_txn_event(t, TOPIC_RESV, event_type_for(next), t->id, t->id, event_data(r, NULL));
}

/* Apply `in` to reservation `res_id`, publishing the event of the new state.
 * *out (optional, caller frees) is the reservation afterwards; a transition
 * that does not apply changes nothing and is not an error. `paid` (>= 0) is the
 * amount of an approved payment: one that does not match the reservation (a
 * payment made outside the saga) rejects it instead. BNB_ENOENT when the
 * reservation does not exist. */
static int apply_input(bnb_ctx_t *ctx, const char *res_id, resv_input_t in, json_int_t paid, const char *payment_id,
                       const char *reason, const char *applied, json_t **out)
{
    input_t a = {ctx, in, paid, payment_id, reason, applied};
    int rc = bnb_util_update(H, H->store(ctx), COLL, res_id, input_change, &a, NULL, out, NULL);
    if (rc == BNB_EALREADY) {
        rc = 0;
        if (out) {
            int64_t v;
            *out = NULL;
            rc = H->store_get(H->store(ctx), COLL, res_id, out, &v);
        }
    }
    return rc;
}

/* ---- room replica --------------------------------------------------------- */

/* The replica of a room (caller frees), fetching it from the room service when
 * it is not here yet. BNB_ENOENT unknown room, BNB_EAGAIN room unreachable. */
static int room_lookup(bnb_ctx_t *ctx, const char *room_id, json_t **room)
{
    bnb_store_t *st = H->store(ctx);
    int64_t v;
    int rc = H->store_get(st, "rooms", room_id, room, &v);
    if (rc != BNB_ENOENT)
        return rc;
    char path[128];
    snprintf(path, sizeof path, "/rooms/%s", room_id);
    int status = 0;
    json_t *resp = NULL;
    rc = H->call(ctx, "room", "GET", path, NULL, &status, &resp);
    if (rc != 0) {
        H->log(ctx, "warn", "room lookup of %s failed: %d", room_id, rc);
        return BNB_EAGAIN;
    }
    if (status == 404 || status == 410) {
        json_decref(resp);
        return BNB_ENOENT;
    }
    const char *host_id = json_string_value(json_object_get(resp, "hostId"));
    json_t *price = json_object_get(resp, "pricePerNight"), *cap = json_object_get(resp, "capacity");
    if (status != 200 || !host_id || !json_is_integer(price) || !json_is_integer(cap)) {
        H->log(ctx, "warn", "room lookup of %s: unexpected answer %d", room_id, status);
        json_decref(resp);
        return BNB_EAGAIN;
    }
    const char *rs = json_string_value(json_object_get(resp, "status"));
    json_t *ver = json_object_get(resp, "version");
    *room = json_pack("{s:s, s:s, s:O, s:O, s:s, s:I}", "id", room_id, "hostId", host_id, "pricePerNight", price,
                      "capacity", cap, "status", rs ? rs : "ACTIVE", "version",
                      (json_int_t)(json_is_integer(ver) ? json_integer_value(ver) : 0));
    json_decref(resp);
    if (!*room)
        return BNB_ENOMEM;
    /* Remember it; events with a newer version replace it. */
    bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "rooms", .id = room_id, .expect_version = 0, .body = *room};
    (void)H->store_commit(st, &w, NULL, 0, NULL, NULL);
    return 0;
}

/* Store the replica of a room from its event unless a newer one is stored. */
typedef struct replica {
    const char *ev_id, *type;
    const json_t *d;
} replica_t;

static int replica_change(bnb_util_txn_t *t, void *arg)
{
    replica_t *rp = arg;
    const json_t *d = rp->d;
    json_int_t ver = json_integer_value(json_object_get(d, "version"));
    if (!t->doc)
        bnb_util_txn_set_doc(t, json_object());
    json_t *cur = t->doc, *cv = json_object_get(cur, "version");
    if (!cur)
        return BNB_ENOMEM;
    if (t->version > 0 && json_is_integer(cv) && json_integer_value(cv) >= ver)
        return BNB_UTIL_SKIP; /* stale */
    t->applied_event_id = rp->ev_id;
    json_object_set_new(cur, "id", json_string(t->id));
    json_object_set_new(cur, "version", json_integer(ver));
    const char *host_id = json_string_value(json_object_get(d, "hostId"));
    if (host_id)
        json_object_set_new(cur, "hostId", json_string(host_id));
    if (!strcmp(rp->type, "RoomDeleted")) {
        json_object_set_new(cur, "status", json_string("DELETED"));
    } else {
        json_object_set(cur, "pricePerNight", json_object_get(d, "pricePerNight"));
        json_object_set(cur, "capacity", json_object_get(d, "capacity"));
        const char *s = json_string_value(json_object_get(d, "status"));
        json_object_set_new(cur, "status", json_string(s ? s : "ACTIVE"));
    }
    return 0;
}

static int replica_apply(bnb_ctx_t *ctx, const char *ev_id, const char *type, const json_t *d)
{
    replica_t rp = {ev_id, type, d};
    int rc = bnb_util_update(H, H->store(ctx), "rooms", json_string_value(json_object_get(d, "id")), replica_change,
                             &rp, NULL, NULL, NULL);
    return rc == BNB_EALREADY ? 0 : rc;
}

/* ---- payment's card key ------------------------------------------------------ */

/* The card number never leaves the payment service in clear text: it is sealed
 * here for payment alone (bnb_seal.h, bound to the reservation id) and only the
 * sealed value goes into the call, the ReservationPlaced event and the outbox.
 * Payment's public key comes from payment_key_file, else from this store
 * (keys/payment-card), else from payment itself (GET /payments/keys/card,
 * then kept in this store so that bookings still work while payment is down). */
static pthread_mutex_t key_mu = PTHREAD_MUTEX_INITIALIZER;
static char *payment_key; /* base64 raw X25519 public key */

static int payment_key_fetch(bnb_ctx_t *ctx, char **pub)
{
    bnb_store_t *st = H->store(ctx);
    json_t *doc = NULL, *resp = NULL;
    int64_t v;
    int status = 0;
    int rc = H->store_get(st, "keys", "payment-card", &doc, &v);
    if (rc == 0) {
        const char *k = json_string_value(json_object_get(doc, "publicKey"));
        *pub = k ? strdup(k) : NULL;
        json_decref(doc);
        return *pub ? 0 : BNB_EIO;
    }
    if (rc != BNB_ENOENT)
        return rc;
    rc = H->call(ctx, "payment", "GET", "/payments/keys/card", NULL, &status, &resp);
    const char *k = json_string_value(json_object_get(resp, "publicKey"));
    const char *alg = json_string_value(json_object_get(resp, "alg"));
    char kid[17];
    if (rc != 0 || status != 200 || !k || !alg || strcmp(alg, BNB_SEAL_ALG) || bnb_seal_kid(k, kid) != 0) {
        H->log(ctx, "warn", "payment's card key is not known yet and payment did not give it (rc %d, status %d)", rc,
               status);
        json_decref(resp);
        return BNB_EAGAIN;
    }
    json_t *body = json_pack("{s:s, s:s, s:s}", "alg", alg, "kid", kid, "publicKey", k);
    bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "keys", .id = "payment-card", .expect_version = -1, .body = body};
    rc = body ? H->store_commit(st, &w, NULL, 0, NULL, NULL) : BNB_ENOMEM;
    *pub = rc == 0 ? strdup(k) : NULL;
    json_decref(body);
    json_decref(resp);
    return rc != 0 ? rc : *pub ? 0 : BNB_ENOMEM;
}

/* Seal card `number` for reservation `res_id`: *sealed a JSON string. */
static int seal_card(bnb_ctx_t *ctx, const char *number, const char *res_id, json_t **sealed)
{
    int rc = 0;
    pthread_mutex_lock(&key_mu);
    if (!payment_key) {
        const char *file = H->config(ctx, "payment_key_file");
        if (file && *file) {
            rc = bnb_seal_read_public_pem(file, &payment_key);
            if (rc != 0) {
                H->log(ctx, "error", "payment_key_file %s: not a readable PEM X25519 public key", file);
                rc = BNB_EIO;
            }
        } else {
            rc = payment_key_fetch(ctx, &payment_key);
        }
    }
    char *blob = NULL;
    if (rc == 0)
        rc = bnb_seal(payment_key, number, res_id, &blob);
    pthread_mutex_unlock(&key_mu);
    if (rc == 0) {
        *sealed = json_string(blob);
        rc = *sealed ? 0 : BNB_ENOMEM;
    }
    free(blob);
    return rc;
}

/* ---- the guest cap: slots ---------------------------------------------------- */

typedef struct reclaim {
    const char *today; /* YYYY-MM-DD */
} reclaim_t;

/* Take the slot back from a reservation that is no longer active (its stay
 * ended, or it left PENDING/CONFIRMED). */
static int reclaim_change(bnb_util_txn_t *t, void *arg)
{
    reclaim_t *rc = arg;
    json_t *r = t->doc;
    const char *out = json_string_value(json_object_get(r, "checkOut"));
    if (!r || !json_object_get(r, "slot"))
        return BNB_UTIL_SKIP;
    if (status_active(json_string_value(json_object_get(r, "status"))) && out && strcmp(out, rc->today) > 0)
        return BNB_UTIL_SKIP;   /* still active */
    json_object_del(r, "slot"); /* its nights, if it still holds them, stay held */
    return set_claims(t, r);
}

/* The slots of `guest` held by active reservations (used[k] = 1) and how many;
 * slots of reservations that ended are taken back on the way. */
static int guest_slots(bnb_ctx_t *ctx, const char *guest, long cap, unsigned char *used, long *active)
{
    bnb_store_t *st = H->store(ctx);
    char now[11];
    resv_format_date(today(), now);
    reclaim_t rcl = {now};
    bnb_cond_t conds[] = {{.field = "guestId", .op = BNB_Q_EQ, .str = guest},
                          {.field = "slot", .op = BNB_Q_GE, .num = 0}};
    char *cursor = NULL;
    int rc = 0;
    *active = 0;
    memset(used, 0, (size_t)cap);
    do {
        bnb_query_t q = {
            .coll = COLL, .conds = conds, .nconds = 2, .order_by = "slot", .limit = PAGE_MAX, .cursor = cursor};
        json_t *items = NULL, *e;
        char *next = NULL;
        size_t i;
        rc = H->store_query(st, &q, &items, &next);
        free(cursor);
        cursor = next;
        if (rc != 0)
            break;
        json_array_foreach(items, i, e)
        {
            const json_t *r = json_object_get(e, "body");
            const char *id = json_string_value(json_object_get(e, "id"));
            const char *out = json_string_value(json_object_get(r, "checkOut"));
            json_int_t k = json_integer_value(json_object_get(r, "slot"));
            if (status_active(json_string_value(json_object_get(r, "status"))) && out && strcmp(out, now) > 0) {
                (*active)++;
                if (k >= 0 && k < cap)
                    used[k] = 1;
                continue;
            }
            rc = bnb_util_update(H, st, COLL, id, reclaim_change, &rcl, NULL, NULL, NULL);
            if (rc != 0)
                break;
        }
        json_decref(items);
    } while (rc == 0 && cursor);
    free(cursor);
    return rc;
}

/* 1 when a document other than none holds slot `k` of `guest`. */
static int slot_held(bnb_ctx_t *ctx, const char *guest, long k, int *held)
{
    bnb_cond_t conds[] = {{.field = "guestId", .op = BNB_Q_EQ, .str = guest},
                          {.field = "slot", .op = BNB_Q_EQ, .num = k}};
    bnb_query_t q = {.coll = COLL, .conds = conds, .nconds = 2, .limit = 1};
    json_t *items = NULL;
    char *next = NULL;
    int rc = H->store_query(H->store(ctx), &q, &items, &next);
    *held = rc == 0 && json_array_size(items) > 0;
    json_decref(items);
    free(next);
    return rc;
}

/* A reservation of `room` holding some night of [in, out) (caller frees), or NULL. */
static json_t *find_overlap(bnb_ctx_t *ctx, const char *room, const char *in, const char *out)
{
    bnb_cond_t conds[] = {{.field = "roomId", .op = BNB_Q_EQ, .str = room},
                          {.field = "checkOut", .op = BNB_Q_GT, .str = in}};
    char *cursor = NULL;
    json_t *found = NULL;
    do {
        bnb_query_t q = {
            .coll = COLL, .conds = conds, .nconds = 2, .order_by = "checkOut", .limit = PAGE_MAX, .cursor = cursor};
        json_t *items = NULL, *e;
        char *next = NULL;
        size_t i;
        int rc = H->store_query(H->store(ctx), &q, &items, &next);
        free(cursor);
        cursor = next;
        json_array_foreach(items, i, e)
        {
            const json_t *r = json_object_get(e, "body");
            const char *ci = json_string_value(json_object_get(r, "checkIn"));
            if (!found && resv_status_holds(json_string_value(json_object_get(r, "status"))) && ci &&
                strcmp(ci, out) < 0)
                found = json_deep_copy(r);
        }
        json_decref(items);
        if (rc != 0 || found)
            break;
    } while (cursor);
    free(cursor);
    return found;
}

/* ---- HTTP ------------------------------------------------------------------ */

static const char *const book_fields[] = {"roomId", "checkIn", "checkOut", "guests", "card", NULL};
/* fields of a reservation only the server sets (OWASP API3): named in the 400 */
static const char *const book_server_owned[] = {"id",     "status",  "amount",    "paymentId", "guestId",
                                                "hostId", "version", "createdAt", "reason",    NULL};

static void respond_reservation(bnb_req_t *req, int status, const json_t *res)
{
    const char *id = json_string_value(json_object_get(res, "id"));
    if (id && (status == 201 || status == 202)) {
        char loc[128];
        snprintf(loc, sizeof loc, "/reservations/%s", id);
        H->respond_header(req, "Location", loc);
    }
    H->respond_json(req, status, public_view(res));
}

/* 402: the card was declined, the reservation is REJECTED and its nights free;
 * a problem+json with the reservation's id (reservationId) and Location. */
static void respond_declined(bnb_req_t *req, const char *id)
{
    char loc[128], detail[256];
    snprintf(loc, sizeof loc, "/reservations/%s", id);
    snprintf(detail, sizeof detail, "payment declined: reservation %s is REJECTED and its nights are free again", id);
    H->respond_header(req, "Location", loc);
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title", "Payment Required", "status",
                          402, "detail", detail, "reservationId", id);
    if (p)
        H->respond_json(req, 402, p);
    else
        H->respond_problem(req, 402, "Payment Required", "%s", detail);
}

/* Pay synchronously; answer 201 CONFIRMED, 402 declined, or 202 PENDING. */
static void book_pay(bnb_ctx_t *ctx, bnb_req_t *req, const json_t *res, const json_t *card)
{
    const char *id = json_string_value(json_object_get(res, "id"));
    json_t *body =
        json_pack("{s:s, s:O, s:O, s:O, s:O}", "reservationId", id, "roomId", json_object_get(res, "roomId"), "hostId",
                  json_object_get(res, "hostId"), "amount", json_object_get(res, "amount"), "sealedCard", card);
    int status = 0;
    json_t *resp = NULL;
    int rc = body ? H->call(ctx, "payment", "POST", "/payments", body, &status, &resp) : BNB_ENOMEM;
    json_decref(body);
    const char *pst = json_string_value(json_object_get(resp, "status"));
    const char *pid = json_string_value(json_object_get(resp, "id"));
    json_t *after = NULL;
    if (rc == 0 && (status == 200 || status == 201) && pst && pid &&
        (!strcmp(pst, "APPROVED") || !strcmp(pst, "DECLINED"))) {
        int approved = !strcmp(pst, "APPROVED");
        rc = apply_input(ctx, id, approved ? RESV_IN_APPROVED : RESV_IN_DECLINED,
                         json_integer_value(json_object_get(resp, "amount")), approved ? pid : NULL,
                         approved ? NULL : "payment declined", NULL, &after);
        json_decref(resp);
        if (rc == 0 && after) {
            const char *now = json_string_value(json_object_get(after, "status"));
            if (now && !strcmp(now, "REJECTED"))
                respond_declined(req, id);
            else
                respond_reservation(req, now && !strcmp(now, "PENDING") ? 202 : 201, after);
            json_decref(after);
            return;
        }
        json_decref(after);
        H->log(ctx, "warn", "reservation %s: storing the payment answer failed (%d), events will finish it", id, rc);
    } else {
        json_decref(resp);
        H->log(ctx, "warn", "reservation %s: payment call failed (rc %d, status %d), answer PENDING", id, rc, status);
        H->count(ctx, "payment_fallback", 1);
    }
    respond_reservation(req, 202, res);
}

/* After the booking committed: if the room was deleted meanwhile (the
 * RoomDeleted handler may have looked for the room's stays before this one
 * was stored), cancel it here. 1 when it was cancelled. */
static int cancelled_by_deletion(bnb_ctx_t *ctx, const char *room_id, const char *id)
{
    json_t *room = NULL;
    int64_t v;
    if (H->store_get(H->store(ctx), "rooms", room_id, &room, &v) != 0)
        return 0;
    const char *s = json_string_value(json_object_get(room, "status"));
    int deleted = s && !strcmp(s, "DELETED");
    json_decref(room);
    if (deleted)
        (void)apply_input(ctx, id, RESV_IN_CANCEL, -1, NULL, "room deleted", NULL, NULL);
    return deleted;
}

/* Idempotency-Key: the answer for reservation `rid`, which an earlier run of
 * this key committed before it could answer (bnb_idem.h): 202 while PENDING,
 * 402 when REJECTED, else 201 with its state now. 0 when there is none. */
static int load_visible(bnb_ctx_t *ctx, const char *id, const char *user, int guest_only, json_t **out);

static int book_recover(bnb_ctx_t *ctx, bnb_req_t *req, const char *rid)
{
    json_t *r = NULL;
    int rc = load_visible(ctx, rid, H->req_user(req), 1, &r);
    if (rc == BNB_ENOENT)
        return 0;
    if (rc != 0) {
        respond_store_error(req, rc);
        return 1;
    }
    const char *s = json_string_value(json_object_get(r, "status"));
    if (s && !strcmp(s, "REJECTED"))
        respond_declined(req, rid);
    else
        respond_reservation(req, s && !strcmp(s, "PENDING") ? 202 : 201, r);
    json_decref(r);
    return 1;
}

static void on_book_run(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = H->store(ctx);
    const json_t *body = bnb_util_body(H, req, book_fields, book_server_owned);
    const char *user = H->req_user(req);
    json_t *room = NULL, *res = NULL, *card = NULL;
    unsigned char *used = NULL;
    char id[37];

    if (!body)
        return;
    const char *room_id = json_string_value(json_object_get(body, "roomId"));
    const char *check_in = json_string_value(json_object_get(body, "checkIn"));
    const char *check_out = json_string_value(json_object_get(body, "checkOut"));
    const json_t *jguests = json_object_get(body, "guests");
    const char *number = resv_card_number(json_object_get(body, "card"));
    if (!room_id || !*room_id) {
        H->respond_problem(req, 400, "Bad Request", "field 'roomId' must be a non-empty string");
        return;
    }
    if (!check_in || !check_out) {
        H->respond_problem(req, 400, "Bad Request", "field '%s' must be a string YYYY-MM-DD",
                           check_in ? "checkOut" : "checkIn");
        return;
    }
    if (!json_is_integer(jguests)) {
        H->respond_problem(req, 400, "Bad Request", "field 'guests' must be an integer");
        return;
    }
    if (!number) {
        H->respond_problem(req, 400, "Bad Request", "field 'card' must be a card number string or {\"number\": ...}");
        return;
    }
    int32_t in, out, nights, now = today();
    const char *why = NULL;
    if (resv_check_stay(check_in, check_out, now, &in, &out, &nights, &why) != 0) {
        H->respond_problem(req, 422, "Unprocessable Entity", "%s", why);
        return;
    }
    long horizon = cfg_long(ctx, "max_days_ahead", 730), max_nights = cfg_long(ctx, "max_nights", RESV_MAX_NIGHTS);
    if (in > now + horizon) {
        H->respond_problem(req, 422, "Unprocessable Entity",
                           "checkIn is beyond the booking horizon: at most %ld days ahead", horizon);
        return;
    }
    if (nights > max_nights) {
        H->respond_problem(req, 422, "Unprocessable Entity", "a stay is at most %ld nights", max_nights);
        return;
    }
    json_int_t guests = json_integer_value(jguests);
    if (guests < 1) {
        H->respond_problem(req, 422, "Unprocessable Entity", "guests must be at least 1");
        return;
    }
    if (!resv_card_number_valid(number)) {
        H->respond_problem(req, 422, "Unprocessable Entity", "card number must be 12 to 19 digits");
        return;
    }
    if (!bnb_util_id_ok(room_id)) {
        H->respond_problem(req, 404, "Not Found", "no room '%s'", room_id);
        return;
    }
    int rc = room_lookup(ctx, room_id, &room);
    if (rc == BNB_ENOENT) {
        H->respond_problem(req, 404, "Not Found", "no room '%s'", room_id);
        return;
    }
    if (rc == BNB_EAGAIN) {
        H->respond_header(req, "Retry-After", "1");
        H->respond_problem(req, 503, "Service Unavailable", "room service unavailable, retry later");
        return;
    }
    if (rc != 0) {
        respond_store_error(req, rc);
        return;
    }
    const char *rstatus = json_string_value(json_object_get(room, "status"));
    if (rstatus && !strcmp(rstatus, "DELETED")) {
        H->respond_problem(req, 404, "Not Found", "room '%s' was deleted", room_id);
        goto done;
    }
    json_int_t cap = json_integer_value(json_object_get(room, "capacity"));
    if (guests > cap) {
        H->respond_problem(req, 422, "Unprocessable Entity", "guests (%lld) exceed the room's capacity (%lld)",
                           (long long)guests, (long long)cap);
        goto done;
    }
    int64_t amount;
    if (resv_amount(json_integer_value(json_object_get(room, "pricePerNight")), nights, &amount) != 0) {
        H->respond_problem(req, 422, "Unprocessable Entity", "amount out of range");
        goto done;
    }
    const char *host_id = json_string_value(json_object_get(room, "hostId"));
    char din[11], dout[11];
    resv_format_date(in, din);
    resv_format_date(out, dout);
    bnb_idem_rid(H, id); /* the key's reservation id when retried with one */
    H->set_correlation(ctx, id);
    rc = seal_card(ctx, number, id, &card);
    if (rc == BNB_EAGAIN) {
        H->respond_header(req, "Retry-After", "1");
        H->respond_problem(req, 503, "Service Unavailable",
                           "payment service unreachable and its card key is not known here yet, retry later");
        goto done;
    }
    if (rc != 0) {
        bnb_util_respond_error(H, req, rc, "card sealing");
        goto done;
    }
    res = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:n, s:i, s:I}", "id", id, "roomId", room_id,
                    "hostId", host_id ? host_id : "", "guestId", user, "checkIn", din, "checkOut", dout, "guests",
                    guests, "amount", (json_int_t)amount, "status", "PENDING", "paymentId", "version", 1, "createdAt",
                    (json_int_t)H->now_ms());
    json_t *data = res ? event_data(res, card) : NULL;
    long gcap = cfg_long(ctx, "max_active_per_guest", 10);
    used = gcap > 0 ? calloc((size_t)gcap, 1) : NULL;
    if (!res || !data || (gcap > 0 && !used)) {
        json_decref(data);
        H->respond_problem(req, 500, "Internal Server Error", "out of memory");
        goto done;
    }
    /* Commit with the nights and a free slot. BNB_ETAKEN is a night held by
     * another reservation, or the slot taken by a booking of this guest racing
     * us: when the slot is now held, pick again; else it is the nights. */
    rc = BNB_ETAKEN;
    for (int attempt = 0; attempt < 2 * gcap + 4 && rc == BNB_ETAKEN; attempt++) {
        long slot = -1, active = 0;
        if (gcap > 0) {
            rc = guest_slots(ctx, user, gcap, used, &active);
            if (rc != 0)
                break;
            for (long k = 0; k < gcap && slot < 0; k++)
                if (!used[k])
                    slot = k;
            if (active >= gcap || slot < 0) {
                json_decref(data);
                H->respond_problem(
                    req, 409, "Conflict",
                    "too many active reservations: you hold %ld PENDING/CONFIRMED reservations, the limit is %ld",
                    active, gcap);
                goto done;
            }
            json_object_set_new(res, "slot", json_integer(slot));
        }
        bnb_util_txn_t t = {.hold = json_array()};
        rc = t.hold ? set_claims(&t, res) : BNB_ENOMEM;
        bnb_event_out_t ev = {
            .topic = TOPIC_RESV, .type = "ReservationPlaced", .subject = id, .correlation_id = id, .data = data};
        bnb_commit_t c = {.op = BNB_WRITE_PUT,
                          .coll = COLL,
                          .id = id,
                          .expect_version = 0,
                          .body = res,
                          .events = &ev,
                          .nevents = 1,
                          .set_claims = 1,
                          .claims = (const char *const *)t.claims,
                          .nclaims = t.nclaims};
        if (rc == 0)
            rc = H->store_commit2(st, &c, NULL);
        json_decref(t.hold);
        free(t.claims);
        if (rc == BNB_ETAKEN && slot >= 0) {
            int held = 0;
            int qrc = slot_held(ctx, user, slot, &held);
            if (qrc != 0) {
                rc = qrc;
                break;
            }
            if (held)
                continue; /* the slot went to a racing booking of this guest */
        }
        if (rc == BNB_ETAKEN) {
            json_t *other = find_overlap(ctx, room_id, din, dout);
            const char *oid = json_string_value(json_object_get(other, "id"));
            if (oid && !strcmp(id, oid)) {
                /* our own id: an earlier run of this Idempotency-Key booked it */
                json_decref(other);
                json_decref(data);
                if (!book_recover(ctx, req, id))
                    respond_store_error(req, BNB_EEXIST);
                goto done;
            }
            if (other || attempt >= 2) {
                json_decref(data);
                if (other)
                    H->respond_problem(req, 409, "Conflict", "room %s is already booked from %s to %s", room_id,
                                       json_string_value(json_object_get(other, "checkIn")),
                                       json_string_value(json_object_get(other, "checkOut")));
                else
                    H->respond_problem(req, 409, "Conflict", "room %s is already booked for some of these nights",
                                       room_id);
                json_decref(other);
                goto done;
            }
            /* the holder let go meanwhile: try again */
        }
    }
    json_decref(data);
    if (rc != 0) {
        if (rc == BNB_ETAKEN)
            H->respond_problem(req, 409, "Conflict", "room %s is already booked for some of these nights", room_id);
        else
            respond_store_error(req, rc);
        goto done;
    }
    H->count(ctx, "placed", 1);
    if (cancelled_by_deletion(ctx, room_id, id)) {
        H->respond_problem(req, 404, "Not Found", "room '%s' was deleted", room_id);
        goto done;
    }
    book_pay(ctx, req, res, card);
done:
    free(used);
    json_decref(card);
    json_decref(res);
    json_decref(room);
}

/* The reservation `id` if `user` may see it (its guest, or its room's host, or
 * only its guest when guest_only); caller frees. BNB_ENOENT otherwise. */
static int load_visible(bnb_ctx_t *ctx, const char *id, const char *user, int guest_only, json_t **out)
{
    json_t *r = NULL;
    int64_t v;
    if (!bnb_util_id_ok(id) || !user)
        return BNB_ENOENT;
    int rc = H->store_get(H->store(ctx), COLL, id, &r, &v);
    if (rc != 0)
        return rc;
    const char *g = json_string_value(json_object_get(r, "guestId"));
    const char *h = json_string_value(json_object_get(r, "hostId"));
    if (!((g && !strcmp(g, user)) || (!guest_only && h && !strcmp(h, user)))) {
        json_decref(r);
        return BNB_ENOENT;
    }
    *out = r;
    return 0;
}

static void on_get(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *id = H->req_param(req, "id");
    json_t *r = NULL;
    int rc = load_visible(ctx, id, H->req_user(req), 0, &r);
    if (rc == BNB_ENOENT)
        H->respond_problem(req, 404, "Not Found", "no reservation '%s'", id ? id : "");
    else if (rc != 0)
        respond_store_error(req, rc);
    else
        respond_reservation(req, 200, r);
    json_decref(r);
}

static const char *const resv_statuses[] = {"PENDING", "CONFIRMED", "REJECTED", "CANCEL_REQUESTED", "CANCELLED", NULL};

static void on_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    static const char *const known[] = {"status", "limit", "cursor", NULL};
    const char *role = H->req_role(req), *user = H->req_user(req);
    if (!bnb_util_query_names_ok(H, req, known))
        return;
    size_t limit = bnb_util_page_limit(H, req, PAGE_DEF, PAGE_MAX);
    if (!limit)
        return;
    /* copies: a host may reuse the buffer of req_query on the next call */
    const char *v = H->req_query(req, "status");
    char *want = v ? strdup(v) : NULL;
    v = H->req_query(req, "cursor");
    char *cursor = v ? strdup(v) : NULL;
    json_t *rows = NULL, *items = NULL, *e;
    char *next = NULL;
    size_t i;
    int ok = !want;
    for (int i = 0; !ok && resv_statuses[i]; i++)
        ok = !strcmp(want, resv_statuses[i]);
    if (!ok) {
        H->respond_problem(req, 400, "Bad Request",
                           "query parameter 'status' must be one of PENDING, CONFIRMED, REJECTED, CANCEL_REQUESTED, "
                           "CANCELLED");
        goto out;
    }
    if (cursor && (!*cursor || strlen(cursor) > 1024)) {
        H->respond_problem(req, 400, "Bad Request", "query parameter 'cursor' is not a cursor of this list");
        goto out;
    }
    bnb_cond_t conds[2] = {
        {.field = role && !strcmp(role, "host") ? "hostId" : "guestId", .op = BNB_Q_EQ, .str = user ? user : ""},
        {.field = "status", .op = BNB_Q_EQ, .str = want}};
    bnb_query_t q = {.coll = COLL,
                     .conds = conds,
                     .nconds = want ? 2 : 1,
                     .order_by = "createdAt",
                     .descending = 1,
                     .limit = limit,
                     .cursor = cursor};
    items = json_array();
    int rc = items ? H->store_query(H->store(ctx), &q, &rows, &next) : BNB_ENOMEM;
    if (rc == BNB_EINVAL && cursor) {
        H->respond_problem(req, 400, "Bad Request", "query parameter 'cursor' is not a cursor of this list");
        goto out;
    }
    if (rc != 0) {
        respond_store_error(req, rc);
        goto out;
    }
    json_array_foreach(rows, i, e) json_array_append_new(items, public_view(json_object_get(e, "body")));
    H->respond_json(req, 200, json_pack("{s:O, s:s?}", "items", items, "next", next));
out:
    json_decref(items);
    json_decref(rows);
    free(next);
    free(want);
    free(cursor);
}

static void on_cancel_run(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *id = H->req_param(req, "id");
    json_t *r = NULL, *after = NULL;
    int rc = load_visible(ctx, id, H->req_user(req), 1, &r);
    if (rc == BNB_ENOENT) {
        H->respond_problem(req, 404, "Not Found", "no reservation '%s'", id ? id : "");
        return;
    }
    if (rc != 0) {
        respond_store_error(req, rc);
        return;
    }
    const char *status = json_string_value(json_object_get(r, "status"));
    int32_t in;
    if (status && (!strcmp(status, "PENDING") || !strcmp(status, "CONFIRMED")) &&
        (resv_parse_date(json_string_value(json_object_get(r, "checkIn")), &in) != 0 || in < today())) {
        H->respond_problem(req, 409, "Conflict", "the stay of reservation %s has already begun", id);
        goto done;
    }
    rc = apply_input(ctx, id, RESV_IN_CANCEL, -1, NULL, "cancelled by guest", NULL, &after);
    if (rc != 0) {
        respond_store_error(req, rc == BNB_ENOENT ? BNB_EIO : rc);
        goto done;
    }
    status = json_string_value(json_object_get(after, "status"));
    if (status && (!strcmp(status, "CANCEL_REQUESTED") || !strcmp(status, "CANCELLED")))
        respond_reservation(req, 202, after);
    else
        H->respond_problem(req, 409, "Conflict", "reservation %s is %s and cannot be cancelled", id,
                           status ? status : "?");
done:
    json_decref(after);
    json_decref(r);
}

static void on_book(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_idem_run(ctx, req, "POST /reservations", on_book_run, book_recover);
}

/* Cancelling again changes nothing and answers the same: no recover needed. */
static void on_cancel(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_idem_run(ctx, req, "DELETE /reservations/{id}", on_cancel_run, NULL);
}

/* ---- events ---------------------------------------------------------------- */

/* RoomDeleted: ask to cancel every future reservation of the room that still
 * holds or will hold money (PENDING, CONFIRMED), page by page through the
 * (roomId, checkOut) index: only stays not over yet are read. */
static int room_stays_cancel(bnb_ctx_t *ctx, const char *ev_id, const char *room_id)
{
    char now[11];
    int32_t day = today();
    resv_format_date(day, now);
    bnb_cond_t conds[] = {{.field = "roomId", .op = BNB_Q_EQ, .str = room_id},
                          {.field = "checkOut", .op = BNB_Q_GT, .str = now}};
    char *cursor = NULL;
    int rc = 0, n = 0;
    do {
        bnb_query_t q = {
            .coll = COLL, .conds = conds, .nconds = 2, .order_by = "checkOut", .limit = PAGE_MAX, .cursor = cursor};
        json_t *items = NULL, *e;
        char *next = NULL;
        size_t i;
        rc = H->store_query(H->store(ctx), &q, &items, &next);
        free(cursor);
        cursor = next;
        json_array_foreach(items, i, e)
        {
            const json_t *r = json_object_get(e, "body");
            int32_t in;
            if (rc != 0 || !status_active(json_string_value(json_object_get(r, "status"))) ||
                resv_parse_date(json_string_value(json_object_get(r, "checkIn")), &in) != 0 || in < day)
                continue;
            rc = apply_input(ctx, json_string_value(json_object_get(e, "id")), RESV_IN_CANCEL, -1, NULL, "room deleted",
                             ev_id, NULL);
            if (rc == 0)
                n++;
        }
        json_decref(items);
    } while (rc == 0 && cursor);
    free(cursor);
    if (n)
        H->count(ctx, "cancelled_by_room_deletion", (double)n);
    return rc;
}

static int on_room_event(bnb_ctx_t *ctx, const json_t *ev)
{
    const char *ev_id, *type;
    const json_t *d;
    if (bnb_util_envelope(H, ctx, ev, &ev_id, &type, &d) != 0)
        return BNB_EINVAL;
    int del = !strcmp(type, "RoomDeleted");
    if (!del && strcmp(type, "RoomRegistered") && strcmp(type, "RoomModified"))
        return 0; /* reviews: not ours */
    if (!json_is_object(d))
        return bnb_util_reject(H, ctx, "room event without data object");
    const char *room_id = json_string_value(json_object_get(d, "id"));
    json_t *ver = json_object_get(d, "version");
    if (!room_id || !bnb_util_id_ok(room_id) || !json_is_integer(ver) || json_integer_value(ver) < 1)
        return bnb_util_reject(H, ctx, "room event data needs id and version >= 1");
    if (!del &&
        (!json_is_string(json_object_get(d, "hostId")) || !json_is_integer(json_object_get(d, "pricePerNight")) ||
         json_integer_value(json_object_get(d, "pricePerNight")) < 0 ||
         !json_is_integer(json_object_get(d, "capacity"))))
        return bnb_util_reject(H, ctx, "room event data needs hostId, pricePerNight >= 0 and capacity");
    int rc = replica_apply(ctx, ev_id, type, d);
    if (rc != 0 || !del)
        return rc;
    return room_stays_cancel(ctx, ev_id, room_id);
}

static int on_payment_event(bnb_ctx_t *ctx, const json_t *ev)
{
    const char *ev_id, *type;
    const json_t *d;
    if (bnb_util_envelope(H, ctx, ev, &ev_id, &type, &d) != 0)
        return BNB_EINVAL;
    resv_input_t in;
    if (!strcmp(type, "PaymentApproved"))
        in = RESV_IN_APPROVED;
    else if (!strcmp(type, "PaymentDeclined"))
        in = RESV_IN_DECLINED;
    else if (!strcmp(type, "PaymentCancelled"))
        in = RESV_IN_REFUNDED;
    else
        return 0;
    if (!json_is_object(d))
        return bnb_util_reject(H, ctx, "payment event without data object");
    const char *res_id = json_string_value(json_object_get(d, "reservationId"));
    const char *pay_id = json_string_value(json_object_get(d, "id"));
    const json_t *jpaid = json_object_get(d, "amount");
    if (!res_id || !bnb_util_id_ok(res_id) || !pay_id)
        return bnb_util_reject(H, ctx, "payment event data needs id and reservationId");
    if (in == RESV_IN_APPROVED && !json_is_integer(jpaid))
        return bnb_util_reject(H, ctx, "PaymentApproved data needs an integer amount");
    json_int_t paid = in == RESV_IN_APPROVED ? json_integer_value(jpaid) : -1;
    H->set_correlation(ctx, res_id);
    int rc = apply_input(ctx, res_id, in, paid, in == RESV_IN_APPROVED ? pay_id : NULL,
                         in == RESV_IN_DECLINED ? "payment declined" : NULL, ev_id, NULL);
    if (rc == BNB_ENOENT)
        return bnb_util_reject(H, ctx, "payment for an unknown reservation");
    return rc;
}

/* ---- plugin ----------------------------------------------------------------- */

/* ---- migration of the per-room calendars ----------------------------------- */

/* Create reservation `arg` as its own document with the claims its status
 * holds (its nights; no guest slot: it took none), unless a document of that
 * id is there already (migrated before). */
static int migrate_change(bnb_util_txn_t *t, void *arg)
{
    if (t->doc)
        return BNB_UTIL_SKIP;
    json_t *r = json_deep_copy(arg);
    if (!r)
        return BNB_ENOMEM;
    json_object_del(r, "slot");
    bnb_util_txn_set_doc(t, r);
    int rc = set_claims(t, r);
    t->commit2 = 1;
    return rc;
}

/* Move the reservations of one calendar into documents of their own, then
 * delete the calendar and the old index documents. A stay whose nights were
 * booked since (the calendar held them, no claim did) is BNB_ETAKEN: logged,
 * the calendar kept for the next start. */
static int migrate_calendar(bnb_ctx_t *ctx, bnb_store_t *st, const json_t *row, size_t *moved)
{
    const char *room = json_string_value(json_object_get(row, "id"));
    const json_t *list = json_object_get(json_object_get(row, "body"), "reservations"), *r;
    size_t i;
    int rc = room ? 0 : BNB_EINVAL, failed = 0;
    json_array_foreach(list, i, r)
    {
        const char *id = json_string_value(json_object_get(r, "id"));
        json_t *copy = NULL;
        if (!id || !bnb_util_id_ok(id)) {
            H->log(ctx, "warn", "reservation migration: calendar of room %s: an entry without a valid id, dropped",
                   room ? room : "?");
            continue;
        }
        if (!json_object_get(r, "roomId") && (copy = json_deep_copy(r)) != NULL)
            json_object_set_new(copy, "roomId", json_string(room));
        int r2 = bnb_util_update(H, st, COLL, id, migrate_change, copy ? copy : (void *)r, NULL, NULL, NULL);
        json_decref(copy);
        if (r2 == 0) {
            bnb_commit_t d = {.op = BNB_WRITE_DELETE, .coll = LEGACY_IDX, .id = id, .expect_version = -1};
            H->store_commit2(st, &d, NULL); /* its ABI 1.0 index entry (ENOENT: none) */
            (*moved)++;
        } else {
            H->log(ctx, "error",
                   "reservation migration: reservation %s of room %s not moved (%d%s): kept in the calendar, tried "
                   "again at the next start",
                   id, room ? room : "?", r2, r2 == BNB_ETAKEN ? ": its nights were booked since" : "");
            failed = 1;
        }
    }
    if (rc == 0 && !failed) {
        bnb_commit_t d = {.op = BNB_WRITE_DELETE,
                          .coll = LEGACY,
                          .id = room,
                          .expect_version = json_integer_value(json_object_get(row, "version"))};
        rc = H->store_commit2(st, &d, NULL);
        if (rc == BNB_ENOENT || rc == BNB_EEXIST)
            rc = 0; /* another process migrated it meanwhile */
    }
    return rc ? rc : failed ? BNB_ETAKEN : 0;
}

/* The per-room calendars kept before storage v2, LEGACY_PAGE at a time (keyset
 * pages): each reservation becomes its own document, with the claims of its
 * nights, so stays booked before the upgrade keep their nights. At init,
 * before the plugin serves or consumes; idempotent (a start interrupted
 * anywhere is finished by the next); a store without calendars costs one
 * empty query. Reservations keep their data; none takes a guest slot (they
 * count against the guest cap only once they are moved with a new booking:
 * never), a deliberate simplification for stays from before the cap was exact. */
struct migrate_walk {
    bnb_ctx_t *ctx;
    bnb_store_t *st;
    size_t moved;
};

static int migrate_row(void *arg, const json_t *row)
{
    struct migrate_walk *w = arg;
    return migrate_calendar(w->ctx, w->st, row, &w->moved);
}

static void migrate_legacy(bnb_ctx_t *ctx, bnb_store_t *st)
{
    struct migrate_walk w = {ctx, st, 0};
    size_t cals = 0, failed = 0, moved;
    int rc = bnb_util_each(H, st, LEGACY, LEGACY_PAGE, migrate_row, &w, &cals, &failed);
    moved = w.moved;
    if (cals || failed)
        H->log(ctx, "info",
               "reservation migration: %zu calendars moved (%zu reservations as documents of their own), %zu left "
               "for the next start",
               cals, moved, failed);
    if (rc)
        H->log(ctx, "warn", "reservation migration: cannot read the calendars (%d)", rc);
}

static const bnb_util_route_t resv_routes[] = {
    {"POST", "/reservations", BNB_ROLE_GUEST, on_book},
    {"GET", "/reservations", BNB_ROLE_USER, on_list},
    {"GET", "/reservations/{id}", BNB_ROLE_USER, on_get},
    {"DELETE", "/reservations/{id}", BNB_ROLE_GUEST, on_cancel},
    {NULL, NULL, 0, NULL},
};

static const bnb_util_sub_t resv_subs[] = {
    {"bearbnb.room", on_room_event},
    {"bearbnb.payment", on_payment_event},
    {NULL, NULL},
};

static int resv_init(bnb_ctx_t *ctx, const bnb_host_api_t *host)
{
    H = bnb_idem_host(host);
    if (!BNB_HAS(host, store_define) || !BNB_HAS(host, store_query) || !BNB_HAS(host, store_commit2)) {
        H->log(ctx, "error", "reservation needs a host with storage v2 (plugin ABI 1.1)");
        return BNB_EINVAL;
    }
    long mn = cfg_long(ctx, "max_nights", RESV_MAX_NIGHTS), gcap = cfg_long(ctx, "max_active_per_guest", 10);
    if (mn < 1 || mn > RESV_MAX_NIGHTS || gcap < 0 || gcap > 1000 || cfg_long(ctx, "max_days_ahead", 730) < 0) {
        H->log(ctx, "error", "reservation: max_nights must be 1..%d, max_active_per_guest 0..1000, max_days_ahead >= 0",
               RESV_MAX_NIGHTS);
        return BNB_EINVAL;
    }
    int rc = host->store_define(ctx, resv_colls, sizeof resv_colls / sizeof resv_colls[0]);
    if (rc != 0) {
        H->log(ctx, "error",
               "reservation needs storage v2 from its store (claims keep two processes from booking one night): "
               "store_define failed (%d)",
               rc);
        return rc;
    }
    migrate_legacy(ctx, host->store(ctx)); /* what is left is tried again at the next start */
    if ((rc = bnb_idem_init(ctx)) != 0) {
        H->log(ctx, "error", "reservation: declaring the idem collection failed (%d)", rc);
        return rc;
    }
    return bnb_util_register(ctx, host, resv_routes, resv_subs);
}

static void resv_fini(bnb_ctx_t *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&key_mu);
    free(payment_key);
    payment_key = NULL;
    pthread_mutex_unlock(&key_mu);
}

BNB_EXPORT const bnb_plugin_t bnb_plugin = {
    .abi_version = BNB_ABI_VERSION,
    .name = "reservation",
    .version = "0.2.0",
    .config = resv_config,
    .init = resv_init,
    .fini = resv_fini,
};

/*
 * reservation plugin: date-range bookings of rooms and the booking saga.
 *
 * Store:
 *   calendars/<roomId>        {roomId, roomDeleted, reservations:[reservation...]}
 *                             every booking is one compare-and-swap commit of the
 *                             room's calendar (with its ReservationPlaced event), and
 *                             the overlap check is re-done on every retry, so two
 *                             overlapping reservations can never both hold nights.
 *   reservations_idx/<id>     {id, roomId, guestId, hostId}, key1 guestId, key2 hostId
 *   rooms/<roomId>            replica of the room fed by bearbnb.room events
 *                             {id, hostId, pricePerNight, capacity, status, version}
 *
 * A reservation: {id, roomId, hostId, guestId, checkIn, checkOut, guests, amount,
 * status, paymentId, reason?, version, createdAt}. States (resv_logic.h):
 *   PENDING -> CONFIRMED | REJECTED | CANCEL_REQUESTED, CONFIRMED -> CANCEL_REQUESTED,
 *   CANCEL_REQUESTED -> CANCELLED.
 * Cancelling a PENDING reservation (guest or room deletion) moves it to
 * CANCEL_REQUESTED right away: payment then refunds the charge if it made one, or
 * records a voided payment so that no later charge happens, and answers with
 * PaymentCancelled (or PaymentDeclined when the card was declined); either ends
 * the reservation CANCELLED. Its nights stay held until then.
 */
#include "bnb_plugin.h"
#include "bnb_plugin_util.h"
#include "bnb_seal.h"
#include "resv_logic.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC_RESV      "bearbnb.reservation"
#define COMMIT_ATTEMPTS 200

static const bnb_host_api_t *H;

/* max_active_per_guest: how many PENDING/CONFIRMED reservations that have not
 * ended yet one guest may hold; one more is a 409 "too many active
 * reservations" (OWASP API6). 0 turns the cap off. The count is taken before the
 * booking commits, so two bookings of one guest racing each other may both pass. */
static const bnb_cfg_item_t resv_config[] = {
    {"max_active_per_guest", BNB_CFG_INT, "10", "cap on a guest's PENDING/CONFIRMED future reservations (0 = none)"},
    {"payment_key_file", BNB_CFG_STRING, "",
     "PEM X25519 public key of payment's card key (empty: asked from payment once, then kept in this store)"},
    {NULL, 0, NULL, NULL}};

/* ---- helpers -------------------------------------------------------------- */

static int32_t today(void)
{
    return resv_day_of_ms(H->now_ms());
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

/* Load the calendar of a room; an absent one is a new empty calendar (version 0). */
static int calendar_load(bnb_store_t *st, const char *room_id, json_t **cal, int64_t *ver)
{
    json_t *body = NULL;
    int64_t v = 0;
    int rc = H->store_get(st, "calendars", room_id, &body, &v);
    if (rc == BNB_ENOENT) {
        body = json_pack("{s:s, s:b, s:[]}", "roomId", room_id, "roomDeleted", 0, "reservations");
        if (!body)
            return BNB_ENOMEM;
        v = 0;
    } else if (rc != 0) {
        return rc;
    }
    if (!json_is_array(json_object_get(body, "reservations")))
        json_object_set_new(body, "reservations", json_array());
    *cal = body;
    *ver = v;
    return 0;
}

static json_t *calendar_find(json_t *cal, const char *res_id)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(cal, "reservations"), i, r)
    {
        const char *id = json_string_value(json_object_get(r, "id"));
        if (id && !strcmp(id, res_id))
            return r;
    }
    return NULL;
}

static int calendar_commit(bnb_store_t *st, const char *room_id, json_t *cal, int64_t ver, const bnb_event_out_t *evs,
                           size_t nev, const char *applied)
{
    bnb_write_t w = {.op = BNB_WRITE_PUT, .coll = "calendars", .id = room_id, .expect_version = ver, .body = cal};
    return H->store_commit(st, &w, evs, nev, applied, NULL);
}

/* The event of a reservation in its current state (caller frees the data). */
static json_t *event_data(const json_t *r, const json_t *card)
{
    json_t *d = json_deep_copy(r);
    if (!d)
        return NULL;
    json_object_del(d, "createdAt");
    json_object_del(d, "updatedAt");
    if (card)
        json_object_set(d, "sealedCard", (json_t *)card);
    return d;
}

/* Apply `in` to reservation `res_id` of room `room_id`, publishing the event of
 * the new state. *out (optional, caller frees) is the reservation afterwards;
 * a transition that does not apply changes nothing and is not an error.
 * `paid` (>= 0) is the amount of an approved payment: one that does not match
 * the reservation (a payment made outside the saga) rejects it instead.
 * BNB_ENOENT when the reservation does not exist. */
static int apply_input(bnb_ctx_t *ctx, const char *room_id, const char *res_id, resv_input_t in, json_int_t paid,
                       const char *payment_id, const char *reason, const char *applied, json_t **out)
{
    bnb_store_t *st = H->store(ctx);
    int rc = BNB_EEXIST;
    for (int attempt = 0; attempt < COMMIT_ATTEMPTS && rc == BNB_EEXIST; attempt++) {
        json_t *cal = NULL, *data = NULL;
        int64_t ver = 0;
        rc = calendar_load(st, room_id, &cal, &ver);
        if (rc != 0)
            return rc;
        json_t *r = calendar_find(cal, res_id);
        if (!r) {
            json_decref(cal);
            return BNB_ENOENT;
        }
        resv_input_t eff = in;
        if (in == RESV_IN_APPROVED && paid >= 0 && paid != json_integer_value(json_object_get(r, "amount"))) {
            H->log(ctx, "warn", "reservation %s: payment of %lld does not match its amount, rejecting", res_id,
                   (long long)paid);
            eff = RESV_IN_DECLINED;
            payment_id = NULL;
            reason = "payment does not match the reservation";
        }
        const char *next = resv_next_status(json_string_value(json_object_get(r, "status")), eff);
        if (!next) {
            if (out)
                *out = json_deep_copy(r);
            json_decref(cal);
            return 0;
        }
        json_object_set_new(r, "status", json_string(next));
        if (payment_id)
            json_object_set_new(r, "paymentId", json_string(payment_id));
        if (reason)
            json_object_set_new(r, "reason", json_string(reason));
        json_object_set_new(r, "version", json_integer(json_integer_value(json_object_get(r, "version")) + 1));
        json_object_set_new(r, "updatedAt", json_integer(H->now_ms()));
        data = event_data(r, NULL);
        bnb_event_out_t ev = {.topic = TOPIC_RESV,
                              .type = event_type_for(next),
                              .subject = res_id,
                              .correlation_id = res_id,
                              .data = data};
        rc = data ? calendar_commit(st, room_id, cal, ver, &ev, 1, applied) : BNB_ENOMEM;
        if (rc == 0 || rc == BNB_EALREADY) {
            if (out)
                *out = json_deep_copy(r);
            rc = 0;
        }
        json_decref(data);
        json_decref(cal);
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

/* ---- HTTP ------------------------------------------------------------------ */

static const char *const book_fields[] = {"roomId", "checkIn", "checkOut", "guests", "card", NULL};
/* fields of a reservation only the server sets (OWASP API3): named in the 400 */
static const char *const book_server_owned[] = {"id",     "status",  "amount",    "paymentId", "guestId",
                                                "hostId", "version", "createdAt", "reason",    NULL};

/* The reservations of `user` as guest (which=1) or as host of the room
 * (which=2), read from their rooms' calendars. *out: a new array (it holds
 * references to the reservation objects); caller frees with json_decref. */
static int user_reservations(bnb_store_t *st, int which, const char *user, json_t **out)
{
    json_t *idxs = NULL, *cals = json_object(), *list = json_array();
    size_t i;
    json_t *e;
    int rc = cals && list ? H->store_list(st, "reservations_idx", which, user ? user : "", &idxs) : BNB_ENOMEM;
    if (rc != 0)
        goto fail;
    json_array_foreach(idxs, i, e)
    {
        json_t *body = json_object_get(e, "body");
        const char *id = json_string_value(json_object_get(body, "id"));
        const char *room_id = json_string_value(json_object_get(body, "roomId"));
        if (!id || !room_id)
            continue;
        json_t *cal = json_object_get(cals, room_id);
        if (!cal) {
            int64_t v;
            rc = calendar_load(st, room_id, &cal, &v);
            if (rc != 0)
                goto fail;
            json_object_set_new(cals, room_id, cal);
        }
        json_t *r = calendar_find(cal, id);
        if (r != NULL) /* else: an index entry of a booking that was refused */
            json_array_append(list, r);
    }
    json_decref(idxs);
    json_decref(cals);
    *out = list;
    return 0;
fail:
    json_decref(idxs);
    json_decref(cals);
    json_decref(list);
    return rc;
}

/* How many of `user`'s reservations are PENDING or CONFIRMED and not over yet. */
static int count_active(bnb_store_t *st, const char *user, long *n)
{
    char now[11];
    resv_format_date(today(), now);
    *n = 0;
    json_t *list = NULL, *r;
    size_t i;
    int rc = user_reservations(st, 1, user, &list);
    if (rc != 0)
        return rc;
    json_array_foreach(list, i, r)
    {
        const char *s = json_string_value(json_object_get(r, "status"));
        const char *out = json_string_value(json_object_get(r, "checkOut"));
        if (s && out && (!strcmp(s, "PENDING") || !strcmp(s, "CONFIRMED")) && strcmp(out, now) > 0)
            (*n)++;
    }
    json_decref(list);
    return 0;
}

static void idx_forget(bnb_store_t *st, const char *id)
{
    bnb_write_t w = {.op = BNB_WRITE_DELETE, .coll = "reservations_idx", .id = id, .expect_version = -1};
    (void)H->store_commit(st, &w, NULL, 0, NULL, NULL);
}

static void respond_reservation(bnb_req_t *req, int status, json_t *res)
{
    const char *id = json_string_value(json_object_get(res, "id"));
    if (id && (status == 201 || status == 202)) {
        char loc[128];
        snprintf(loc, sizeof loc, "/reservations/%s", id);
        H->respond_header(req, "Location", loc);
    }
    H->respond_json(req, status, res);
}

/* Pay synchronously; answer 201 CONFIRMED, 402 declined, or 202 PENDING. */
static void book_pay(bnb_ctx_t *ctx, bnb_req_t *req, json_t *res, const json_t *card)
{
    const char *id = json_string_value(json_object_get(res, "id"));
    const char *room_id = json_string_value(json_object_get(res, "roomId"));
    json_t *body =
        json_pack("{s:s, s:s, s:O, s:O, s:O}", "reservationId", id, "roomId", room_id, "hostId",
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
        rc = apply_input(ctx, room_id, id, approved ? RESV_IN_APPROVED : RESV_IN_DECLINED,
                         json_integer_value(json_object_get(resp, "amount")), approved ? pid : NULL,
                         approved ? NULL : "payment declined", NULL, &after);
        if (rc == 0 && after) {
            const char *now = json_string_value(json_object_get(after, "status"));
            if (now && !strcmp(now, "REJECTED")) {
                char loc[128];
                snprintf(loc, sizeof loc, "/reservations/%s", id);
                H->respond_header(req, "Location", loc);
                H->respond_problem(req, 402, "Payment Required",
                                   "payment declined: reservation %s is REJECTED and its nights are free again", id);
                json_decref(after);
            } else {
                respond_reservation(req, now && !strcmp(now, "PENDING") ? 202 : 201, after);
            }
            json_decref(resp);
            json_decref(res);
            return;
        }
        json_decref(after);
        H->log(ctx, "warn", "reservation %s: storing the payment answer failed (%d), events will finish it", id, rc);
    } else {
        H->log(ctx, "warn", "reservation %s: payment call failed (rc %d, status %d), answer PENDING", id, rc, status);
        H->count(ctx, "payment_fallback", 1);
    }
    json_decref(resp);
    respond_reservation(req, 202, res);
}

static void on_book(bnb_ctx_t *ctx, bnb_req_t *req)
{
    bnb_store_t *st = H->store(ctx);
    const json_t *body = bnb_util_body(H, req, book_fields, book_server_owned);
    const char *user = H->req_user(req);
    json_t *room = NULL, *res = NULL, *card = NULL;
    int idx_written = 0;
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
    int32_t in, out, nights;
    const char *why = NULL;
    if (resv_check_stay(check_in, check_out, today(), &in, &out, &nights, &why) != 0) {
        H->respond_problem(req, 422, "Unprocessable Entity", "%s", why);
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
    const char *capv = H->config(ctx, "max_active_per_guest");
    long cap_active = capv ? strtol(capv, NULL, 10) : 10, active = 0;
    int rc = cap_active > 0 ? count_active(st, user, &active) : 0;
    if (rc != 0) {
        respond_store_error(req, rc);
        return;
    }
    if (cap_active > 0 && active >= cap_active) {
        H->respond_problem(
            req, 409, "Conflict",
            "too many active reservations: you hold %ld PENDING/CONFIRMED reservations, the limit is %ld", active,
            cap_active);
        return;
    }
    rc = room_lookup(ctx, room_id, &room);
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
    H->uuid(id);
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
    json_t *idx = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "roomId", room_id, "guestId", user, "hostId",
                            host_id ? host_id : "");
    if (!card || !res || !idx) {
        json_decref(idx);
        H->respond_problem(req, 500, "Internal Server Error", "out of memory");
        goto done;
    }
    bnb_write_t wi = {.op = BNB_WRITE_PUT,
                      .coll = "reservations_idx",
                      .id = id,
                      .expect_version = 0,
                      .body = idx,
                      .key1 = user,
                      .key2 = host_id};
    rc = H->store_commit(st, &wi, NULL, 0, NULL, NULL);
    json_decref(idx);
    if (rc != 0) {
        respond_store_error(req, rc);
        goto done;
    }
    idx_written = 1;

    rc = BNB_EEXIST;
    for (int attempt = 0; attempt < COMMIT_ATTEMPTS && rc == BNB_EEXIST; attempt++) {
        json_t *cal = NULL;
        int64_t ver = 0;
        rc = calendar_load(st, room_id, &cal, &ver);
        if (rc != 0)
            break;
        if (json_is_true(json_object_get(cal, "roomDeleted"))) {
            json_decref(cal);
            H->respond_problem(req, 404, "Not Found", "room '%s' was deleted", room_id);
            goto done;
        }
        const json_t *other = resv_find_conflict(json_object_get(cal, "reservations"), in, out);
        if (other) {
            H->respond_problem(req, 409, "Conflict", "room %s is already booked from %s to %s", room_id,
                               json_string_value(json_object_get(other, "checkIn")),
                               json_string_value(json_object_get(other, "checkOut")));
            json_decref(cal);
            goto done;
        }
        json_array_append(json_object_get(cal, "reservations"), res);
        json_t *data = event_data(res, card);
        bnb_event_out_t ev = {
            .topic = TOPIC_RESV, .type = "ReservationPlaced", .subject = id, .correlation_id = id, .data = data};
        rc = data ? calendar_commit(st, room_id, cal, ver, &ev, 1, NULL) : BNB_ENOMEM;
        json_decref(data);
        json_decref(cal);
    }
    if (rc != 0) {
        respond_store_error(req, rc);
        goto done;
    }
    idx_written = 0; /* it now belongs to a placed reservation */
    H->count(ctx, "placed", 1);
    book_pay(ctx, req, res, card);
    res = NULL;
done:
    if (idx_written)
        idx_forget(st, id);
    json_decref(card);
    json_decref(res);
    json_decref(room);
}

/* The reservation `id` if `user` may see it (its guest, or its room's host, or
 * only its guest when guest_only); caller frees. BNB_ENOENT otherwise. */
static int load_visible(bnb_ctx_t *ctx, const char *id, const char *user, int guest_only, json_t **out)
{
    bnb_store_t *st = H->store(ctx);
    json_t *idx = NULL, *cal = NULL;
    int64_t v;
    if (!bnb_util_id_ok(id) || !user)
        return BNB_ENOENT;
    int rc = H->store_get(st, "reservations_idx", id, &idx, &v);
    if (rc != 0)
        return rc;
    const char *room_id = json_string_value(json_object_get(idx, "roomId"));
    const char *g = json_string_value(json_object_get(idx, "guestId"));
    const char *h = json_string_value(json_object_get(idx, "hostId"));
    int allowed = (g && !strcmp(g, user)) || (!guest_only && h && !strcmp(h, user));
    if (!allowed || !room_id) {
        json_decref(idx);
        return BNB_ENOENT;
    }
    rc = calendar_load(st, room_id, &cal, &v);
    if (rc == 0) {
        json_t *r = calendar_find(cal, id);
        *out = r ? json_deep_copy(r) : NULL;
        rc = r ? 0 : BNB_ENOENT;
    }
    json_decref(cal);
    json_decref(idx);
    return rc;
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
        H->respond_json(req, 200, r);
}

static void on_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *role = H->req_role(req);
    const char *want = H->req_query(req, "status");
    json_t *list = NULL, *out = json_array(), *r;
    size_t i;
    int rc = out ? user_reservations(H->store(ctx), role && !strcmp(role, "host") ? 2 : 1, H->req_user(req), &list)
                 : BNB_ENOMEM;
    if (rc != 0) {
        json_decref(out);
        respond_store_error(req, rc);
        return;
    }
    json_array_foreach(list, i, r)
    {
        if (want && strcmp(want, json_string_value(json_object_get(r, "status")) ?: ""))
            continue;
        json_array_append(out, r);
    }
    json_decref(list);
    H->respond_json(req, 200, out);
}

static void on_cancel(bnb_ctx_t *ctx, bnb_req_t *req)
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
    rc = apply_input(ctx, json_string_value(json_object_get(r, "roomId")), id, RESV_IN_CANCEL, -1, NULL,
                     "cancelled by guest", NULL, &after);
    if (rc != 0) {
        respond_store_error(req, rc == BNB_ENOENT ? BNB_EIO : rc);
        goto done;
    }
    status = json_string_value(json_object_get(after, "status"));
    if (status && (!strcmp(status, "CANCEL_REQUESTED") || !strcmp(status, "CANCELLED"))) {
        H->respond_json(req, 202, after);
        after = NULL;
    } else {
        H->respond_problem(req, 409, "Conflict", "reservation %s is %s and cannot be cancelled", id,
                           status ? status : "?");
    }
done:
    json_decref(after);
    json_decref(r);
}

/* ---- events ---------------------------------------------------------------- */

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

/* RoomDeleted: close the calendar and ask to cancel every future reservation
 * that still holds or will hold money (PENDING, CONFIRMED). */
static int calendar_close(bnb_ctx_t *ctx, const char *ev_id, const char *room_id)
{
    bnb_store_t *st = H->store(ctx);
    int32_t day = today();
    int rc = BNB_EEXIST;
    for (int attempt = 0; attempt < COMMIT_ATTEMPTS && rc == BNB_EEXIST; attempt++) {
        json_t *cal = NULL, *datas = json_array();
        int64_t ver = 0;
        rc = datas ? calendar_load(st, room_id, &cal, &ver) : BNB_ENOMEM;
        if (rc != 0) {
            json_decref(datas);
            return rc;
        }
        int changed = !json_is_true(json_object_get(cal, "roomDeleted"));
        json_object_set_new(cal, "roomDeleted", json_true());
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(cal, "reservations"), i, r)
        {
            const char *s = json_string_value(json_object_get(r, "status"));
            int32_t in;
            if (!s || (strcmp(s, "PENDING") && strcmp(s, "CONFIRMED")))
                continue;
            if (resv_parse_date(json_string_value(json_object_get(r, "checkIn")), &in) != 0 || in < day)
                continue;
            json_object_set_new(r, "status", json_string("CANCEL_REQUESTED"));
            json_object_set_new(r, "reason", json_string("room deleted"));
            json_object_set_new(r, "version", json_integer(json_integer_value(json_object_get(r, "version")) + 1));
            json_object_set_new(r, "updatedAt", json_integer(H->now_ms()));
            json_array_append_new(datas, event_data(r, NULL));
            changed = 1;
        }
        size_t n = json_array_size(datas);
        bnb_event_out_t *evs = n ? calloc(n, sizeof *evs) : NULL;
        if (n && !evs) {
            rc = BNB_ENOMEM;
        } else if (!changed) {
            rc = 0;
        } else {
            for (i = 0; i < n; i++) {
                json_t *d = json_array_get(datas, i);
                evs[i] = (bnb_event_out_t){.topic = TOPIC_RESV,
                                           .type = "ReservationCancelRequested",
                                           .subject = json_string_value(json_object_get(d, "id")),
                                           .correlation_id = json_string_value(json_object_get(d, "id")),
                                           .data = d};
            }
            rc = calendar_commit(st, room_id, cal, ver, evs, n, ev_id);
            if (rc == 0 && n)
                H->count(ctx, "cancelled_by_room_deletion", (double)n);
        }
        free(evs);
        json_decref(datas);
        json_decref(cal);
    }
    return rc == BNB_EALREADY ? 0 : rc;
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
    return calendar_close(ctx, ev_id, room_id);
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
    json_t *idx = NULL;
    int64_t v;
    int rc = H->store_get(H->store(ctx), "reservations_idx", res_id, &idx, &v);
    if (rc == BNB_ENOENT)
        return bnb_util_reject(H, ctx, "payment for an unknown reservation");
    if (rc != 0)
        return rc;
    const char *room_id = json_string_value(json_object_get(idx, "roomId"));
    rc = room_id ? apply_input(ctx, room_id, res_id, in, paid, in == RESV_IN_APPROVED ? pay_id : NULL,
                               in == RESV_IN_DECLINED ? "payment declined" : NULL, ev_id, NULL)
                 : BNB_ENOENT;
    json_decref(idx);
    if (rc == BNB_ENOENT)
        return bnb_util_reject(H, ctx, "payment for an unknown reservation");
    return rc;
}

/* ---- plugin ----------------------------------------------------------------- */

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
    H = host;
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
    .version = "0.1.0",
    .config = resv_config,
    .init = resv_init,
    .fini = resv_fini,
};

/*
 * Dashboard read model: the pure merge logic (no host, no store).
 *
 * Two kinds of documents, both of bounded size (independent of the room's
 * history), both built only from events of bearbnb.room,
 * bearbnb.reservation and bearbnb.payment:
 *
 * - a room SUMMARY (one per room): the room's fields, reviewCnt/rating and
 *   booking counts by reservation status. It keeps the sources it was derived
 *   from, each with the aggregate version it came from:
 *       _room     last RoomRegistered/RoomModified data   (room version)
 *       _reviews  last ReviewCreated/ReviewDeleted counts (room version)
 *       _deleted  RoomDeleted data                        (room version)
 *       _counts   {status: n}: reservations counted per status
 *   A source is replaced only by an event with a strictly higher version and
 *   the visible fields are recomputed from the sources after every event, so
 *   the room part depends only on the SET of events applied.
 *
 * - a reservation VIEW (one per reservation): status, payment status, guest,
 *   amount, dates, createdAt. Sources `_res` (last Reservation* data,
 *   reservation version) and `_pay` (last Payment* data, payment version),
 *   merged the same way; `_t` the earliest reservation event time seen.
 *
 * Counts: a view remembers in `_counted` {s, v} the status (and the
 * reservation version it came from) that the room summary counts for it.
 * When a newer reservation event changes the view's status, dash_view_apply
 * appends a TRANSITION {room, from, to, mark} to the view's `_pending` list
 * (committed atomically with the view). The plugin then applies each pending
 * transition to the summary (dash_sum_count) with `mark` as the summary's
 * applied-event id, and finally drops it from the view. A transition's mark
 * ("n:<reservationId>:<version>") is unique, so a transition applied twice
 * (crash, redelivery, two workers) counts once; the chain of transitions of
 * one reservation always ends at its newest status, whatever order its events
 * came in.
 *
 * Keys starting with '_' are internal: the *_public() functions strip them.
 */
#ifndef BNB_DASH_MERGE_H
#define BNB_DASH_MERGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Event kinds the dashboard understands. */
typedef enum {
    DASH_EV_IGNORE = 0, /* unknown type on a subscribed topic: not poison */
    DASH_EV_ROOM,       /* RoomRegistered, RoomModified */
    DASH_EV_ROOM_DELETED,
    DASH_EV_REVIEW, /* ReviewCreated, ReviewDeleted */
    DASH_EV_RESERVATION,
    DASH_EV_PAYMENT
} dash_ev_kind_t;

/* Reservation statuses that are counted on the summary (in this order). */
extern const char *const dash_statuses[];

/* Check an event envelope and its data. Returns:
 *   0           a known event, well formed; *room_id (borrowed from ev) is the
 *               room it concerns, *res_id (borrowed, NULL for room/review
 *               events) the reservation, *kind its kind
 *   1           a well-formed envelope of a type the dashboard ignores
 *   BNB_EINVAL  malformed: `why` (NUL-terminated) says what is wrong */
int dash_event_check(const json_t *ev, dash_ev_kind_t *kind, const char **room_id, const char **res_id, char *why,
                     size_t whylen);

/* Milliseconds since the epoch of an RFC 3339 UTC time
 * "YYYY-MM-DDTHH:MM:SS[.fff]Z"; -1 when `s` is NULL or not that. */
int64_t dash_time_ms(const char *s);

/* ---- room summary ---- */

/* A new empty (placeholder) summary of room `room_id`. Caller frees with
 * json_decref; NULL on out of memory. */
json_t *dash_sum_new(const char *room_id);
/* Apply a CHECKED room, room-deleted or review event to `sum` in place.
 * 1 changed, 0 stale (nothing changed), BNB_ENOMEM / BNB_EINVAL (discard sum). */
int dash_sum_apply(json_t *sum, const json_t *ev);
/* Count one reservation transition: one less under `from` (NULL: none), one
 * more under `to` (NULL: none). 0, BNB_ENOMEM or BNB_EINVAL. */
int dash_sum_count(json_t *sum, const char *from, const char *to);
/* 1 when a room event (registered/modified/deleted) has been applied. */
int dash_sum_has_room(const json_t *sum);
/* The summary as shown: {id, hostId, name, description, city, pricePerNight,
 * capacity, status, reviewCnt, rating, bookingCnt, bookings: {PENDING, ...,
 * total}, version}. New reference or NULL. */
json_t *dash_sum_public(const json_t *sum);

/* ---- reservation view ---- */

/* A new empty view of reservation `res_id`; caller frees with json_decref. */
json_t *dash_view_new(const char *res_id);
/* Apply a CHECKED reservation or payment event to `view` in place (see the
 * top comment for the transitions it may append). 1 changed, 0 stale,
 * BNB_ENOMEM / BNB_EINVAL (discard view). */
int dash_view_apply(json_t *view, const json_t *ev);
/* The pending transitions of `view` (borrowed array, maybe empty): each
 * {room, from (string|null), to (string|null), mark}. */
const json_t *dash_view_pending(const json_t *view);
/* Remove the pending transition with `mark`: 1 removed, 0 not there. */
int dash_view_drop_pending(json_t *view, const char *mark);
/* The view as shown: {id, roomId, guestId, checkIn, checkOut, guests, amount,
 * status, paymentId, paymentStatus, reason, createdAt}. New reference or NULL. */
json_t *dash_view_public(const json_t *view);

/* ---- documents of the first dashboard ------------------------------------
 * Before the summaries and views (storage v2), the dashboard kept ONE
 * document per room in collection `rooms`: {id, _room, _reviews, _deleted,
 * reservations: [{id, _res, _pay, ...}]} (the same sources, but `_res`
 * without roomId/hostId/reason and no createdAt). dash_legacy_events turns
 * such a document into the events that rebuild it in the new read model:
 * RoomModified (_room), ReviewCreated (_reviews), RoomDeleted (_deleted) and,
 * per reservation, a Reservation* event (_res; data.createdAt 0: older than
 * any reservation made since) and a Payment* event (_pay), each with the
 * source's version and a fixed id "legacy:<aggregate>:<part>" (so applying
 * them twice is a repeat). Sources that are not well formed are left out.
 * A new array (maybe empty), or NULL on out of memory. */
json_t *dash_legacy_events(const json_t *old, const char *room_id);

#endif

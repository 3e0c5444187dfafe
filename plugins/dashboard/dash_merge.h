/*
 * Dashboard read model: the pure merge logic (no host, no store).
 *
 * One document per room, built only from events of bearbnb.room,
 * bearbnb.reservation and bearbnb.payment. The document keeps, next to the
 * fields it shows, the SOURCES it was derived from, each with the aggregate
 * version it came from:
 *
 *   _room     last RoomRegistered/RoomModified data   (room version)
 *   _reviews  last ReviewCreated/ReviewDeleted counts (room version)
 *   _deleted  RoomDeleted data                        (room version)
 *   reservations[i]._res  last Reservation* data      (reservation version)
 *   reservations[i]._pay  last Payment* data          (payment version)
 *
 * A source is replaced only by an event with a strictly higher version, and
 * the visible fields are recomputed from the sources after every event, so
 * the document is a pure function of the SET of events applied: any order,
 * any redelivery gives the same document. Events arriving before the event
 * that creates their parent (a payment before its reservation, a reservation
 * before its room) create placeholder entries that later events fill.
 *
 * Keys starting with '_' are internal: dash_doc_view() strips them.
 */
#ifndef BNB_DASH_MERGE_H
#define BNB_DASH_MERGE_H

#include <jansson.h>
#include <stddef.h>

/* Event kinds the dashboard understands. */
typedef enum {
    DASH_EV_IGNORE = 0, /* unknown type on a subscribed topic: not poison */
    DASH_EV_ROOM,       /* RoomRegistered, RoomModified */
    DASH_EV_ROOM_DELETED,
    DASH_EV_REVIEW, /* ReviewCreated, ReviewDeleted */
    DASH_EV_RESERVATION,
    DASH_EV_PAYMENT
} dash_ev_kind_t;

/* Check an event envelope and its data. Returns:
 *   0           a known event, well formed; *room_id (borrowed from ev) is the
 *               document it applies to, *kind its kind
 *   1           a well-formed envelope of a type the dashboard ignores
 *   BNB_EINVAL  malformed: `why` (NUL-terminated) says what is wrong */
int dash_event_check(const json_t *ev, dash_ev_kind_t *kind, const char **room_id, char *why, size_t whylen);

/* A new empty (placeholder) document for room `room_id`. Caller frees with
 * json_decref; NULL on out of memory. */
json_t *dash_doc_new(const char *room_id);

/* Apply a CHECKED event (dash_event_check returned 0) to `doc` in place.
 * Returns 1 when the document changed, 0 when the event was stale or a
 * repeat (nothing changed), BNB_ENOMEM / BNB_EINVAL on failure (doc may then
 * be partly updated: discard it). */
int dash_apply(json_t *doc, const json_t *ev);

/* 1 when a room event (registered/modified/deleted) has been applied, 0 for a
 * placeholder created by reservation/payment/review events only. */
int dash_doc_has_room(const json_t *doc);

/* The document as shown to clients: a deep copy without the '_' keys
 * (also inside reservations). Caller frees with json_decref. */
json_t *dash_doc_view(const json_t *doc);

#endif

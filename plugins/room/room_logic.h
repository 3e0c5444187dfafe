/*
 * Room plugin: pure logic (no host, no store), unit-tested in
 * tests/plugins/room/test_room_logic.c.
 *
 * The stored room document (collection `rooms`, id = room id):
 *   {id, hostId, name, description, city, pricePerNight, capacity,
 *    status ("ACTIVE"|"DELETED"), reviewCnt, ratingSum, bookingCnt,
 *    reviews: [{id, roomId, authorId, rating, content, createdAt}],
 *    bookings: [reservation ids currently counted in bookingCnt]}
 * Its store version is the room's public `version`.
 */
#ifndef BNB_ROOM_LOGIC_H
#define BNB_ROOM_LOGIC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define ROOM_NAME_MAX        200
#define ROOM_DESCRIPTION_MAX 5000
#define ROOM_CITY_MAX        100
#define ROOM_CAPACITY_MAX    50
#define ROOM_PRICE_MAX       1000000000LL /* smallest currency unit */
#define ROOM_REVIEW_MAX      2000

/* A validation failure: HTTP status (400 shape error, 422 value out of
 * range), the offending field and a human detail naming it. */
typedef struct room_err {
    int status;
    char field[64];
    char detail[256];
} room_err_t;

/* Validate a POST /rooms body. 0 when valid, else err->status (400/422). */
int room_check_create(const json_t *body, room_err_t *err);
/* Validate a PATCH /rooms/{id} body (name, description, pricePerNight, capacity). */
int room_check_patch(const json_t *body, room_err_t *err);
/* Validate a POST /rooms/{id}/reviews body {rating, content}. */
int room_check_review(const json_t *body, room_err_t *err);

/* Number of UTF-8 code points in s. */
size_t room_utf8_len(const char *s);
/* Average rating rounded half up to one decimal; 0 when cnt == 0. */
double room_rating(int64_t sum, int64_t cnt);
/* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
void room_iso8601(int64_t ms, char out[32]);

/* A new stored document from a valid create body. Caller frees (json_decref). */
json_t *room_new_doc(const json_t *body, const char *id, const char *host_id);
/* Apply a valid patch body to doc in place. 1 when something changed, 0 otherwise. */
int room_apply_patch(json_t *doc, const json_t *body);
/* The public room (also RoomRegistered/RoomModified data). Caller frees. */
json_t *room_view(const json_t *doc, int64_t version);
/* RoomDeleted data {id, hostId, status:"DELETED", version}. Caller frees. */
json_t *room_deleted_data(const json_t *doc, int64_t version);
/* 1 when doc is a live (not deleted) room. */
int room_is_active(const json_t *doc);

/* A new review object. Caller frees. */
json_t *room_new_review(const char *id, const char *room_id, const char *author_id, int rating, const char *content,
                        int64_t now_ms);
/* Append `review` (reference stolen) and update reviewCnt/ratingSum. 0 or -1. */
int room_add_review(json_t *doc, json_t *review);
/* Remove the review `review_id`; *removed gets it (caller frees). 0, or -1
 * when absent. Updates reviewCnt/ratingSum. */
int room_remove_review(json_t *doc, const char *review_id, json_t **removed);
/* The review `review_id` in doc (borrowed) or NULL. */
const json_t *room_find_review(const json_t *doc, const char *review_id);
/* ReviewCreated/ReviewDeleted data. Caller frees. */
json_t *room_review_event_data(const json_t *review, const json_t *doc, int64_t version);

/* A reservation event that concerns the room plugin. */
typedef enum { ROOM_RESV_IGNORE = 0, ROOM_RESV_CONFIRMED, ROOM_RESV_CANCELLED } room_resv_kind_t;

typedef struct room_resv_event {
    room_resv_kind_t kind;
    const char *event_id;       /* borrowed from the envelope */
    const char *reservation_id; /* data.id */
    const char *room_id;        /* data.roomId */
} room_resv_event_t;

/* Parse an envelope of bearbnb.reservation. 0 (kind may be IGNORE for other
 * types), or -1 with a reason in `why` when it is malformed (poison). */
int room_parse_resv_event(const json_t *event, room_resv_event_t *out, char *why, size_t whylen);
/* Apply a CONFIRMED/CANCELLED reservation to doc's booking counter. 1 when
 * the document changed, 0 when it is a no-op (already counted / never
 * counted), -1 on error. */
int room_apply_booking(json_t *doc, room_resv_kind_t kind, const char *reservation_id);

#endif

/*
 * Room plugin: pure logic (no host, no store), unit-tested in
 * tests/plugins/room/test_room_logic.c.
 *
 * The stored room document (collection `rooms`, id = room id), bounded:
 *   {id, hostId, name, description, city, pricePerNight, capacity,
 *    status ("ACTIVE"|"DELETED"), reviewCnt, ratingSum, bookingCnt}
 * Its store version is the room's public `version`. Nothing in it grows with
 * history: reviews are their own documents (collection `reviews`), the
 * nights of reservations live in per-(room, month) documents (`nights`), and
 * which reservation was counted in bookingCnt is one small document per
 * reservation (`stays`).
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
/* The stored review: the public review plus createdMs (for the index). Caller frees. */
json_t *room_review_doc(const json_t *review, int64_t now_ms);
/* The public review of a stored one {id, roomId, authorId, rating, content, createdAt}. Caller frees. */
json_t *room_review_view(const json_t *doc);
/* Add (sign +1) or remove (sign -1) a review of `rating` to the room's counters. */
void room_count_review(json_t *room, int sign, int64_t rating);
/* ReviewCreated/ReviewDeleted data. Caller frees. */
json_t *room_review_event_data(const json_t *review, const json_t *doc, int64_t version);

/* ---- dates: day numbers (days since 1970-01-01) ------------------------- */

/* Parse a strict "YYYY-MM-DD" (years 1970..9999) into a day number. 0 or -1. */
int room_parse_date(const char *s, int64_t *day);
/* Format a day number as "YYYY-MM-DD". */
void room_format_date(int64_t day, char out[11]);
/* The first day of the month holding `day`, and the first day of the next month. */
void room_month_bounds(int64_t day, int64_t *first, int64_t *next);

/* ---- query parameters ----------------------------------------------------- */

#define ROOM_LIMIT_DEFAULT 20
#define ROOM_LIMIT_MAX     100
#define ROOM_CURSOR_MAX    1024
#define ROOM_HOST_ID_MAX   255 /* bytes: a declared, indexed string field */

/* A parsed GET /rooms (or GET /rooms/{id}/reviews) query. Strings point into
 * the storage of the struct (freed by room_list_query_free). */
typedef struct room_list_query {
    char *city, *cursor;
    char *host_id;                        /* hostId: the rooms of one host (given with limit and cursor only) */
    int64_t guests, min_price, max_price; /* -1 when not given */
    int64_t check_in, check_out;          /* day numbers, -1 when not given */
    size_t limit;
} room_list_query_t;

/* Which parameters a list accepts. */
typedef enum { ROOM_QUERY_ROOMS = 1, ROOM_QUERY_REVIEWS } room_query_kind_t;

/* Parse and check the raw query string `raw` (NULL or "" = none): known
 * names only, each at most once, strict percent-encoding, values in range,
 * dates valid with checkIn < checkOut and at most max_nights nights. 0, or
 * err (status 400, field = the parameter, detail naming it) when invalid. */
int room_parse_list_query(const char *raw, room_query_kind_t kind, int64_t max_nights, room_list_query_t *q,
                          room_err_t *err);
void room_list_query_free(room_list_query_t *q);

/* ---- the availability read model ------------------------------------------
 * One document per (room, month) in collection `nights`, id "<roomId>|YYYY-MM":
 *   {roomId, month: "YYYY-MM", nights: {"YYYY-MM-DD": [reservation ids holding it]}}
 * A night is free when no reservation holds it. A reservation adds its id to
 * its nights when placed (or confirmed) and removes only its own id when
 * rejected or cancelled, so the events of different reservations may arrive
 * in any order. At most 31 nights, each held by one reservation (two only
 * while the events of a freed and a new booking cross): bounded. */

/* The id of the month document of `room_id` holding `day` into out. -1 when too long. */
int room_nights_id(const char *room_id, int64_t day, char *out, size_t outlen);
/* A new empty month document. Caller frees. */
json_t *room_nights_new(const char *room_id, int64_t day);
/* Hold (hold=1) or free (hold=0) the nights [from, to) that fall in doc's
 * month for reservation `resv`. 1 when doc changed, 0 when not, -1 on error. */
int room_nights_apply(json_t *doc, int64_t from, int64_t to, const char *resv, int hold);
/* 1 when every night of [from, to) in doc's month is free (doc NULL: all free). */
int room_nights_free(const json_t *doc, int64_t from, int64_t to);

/* ---- reservation events -------------------------------------------------- */

#define ROOM_STAY_EVENT_MAX_NIGHTS 800 /* a longer stay in an event is poison */

/* A reservation event that concerns the room plugin. */
typedef enum {
    ROOM_RESV_IGNORE = 0,
    ROOM_RESV_PLACED,    /* holds its nights */
    ROOM_RESV_CONFIRMED, /* holds its nights, counted in bookingCnt */
    ROOM_RESV_REJECTED,  /* frees its nights */
    ROOM_RESV_CANCELLED  /* frees its nights, no longer counted */
} room_resv_kind_t;

typedef struct room_resv_event {
    room_resv_kind_t kind;
    const char *event_id;        /* borrowed from the envelope */
    const char *reservation_id;  /* data.id */
    const char *room_id;         /* data.roomId */
    int64_t check_in, check_out; /* day numbers of data.checkIn / data.checkOut */
} room_resv_event_t;

/* Parse an envelope of bearbnb.reservation. 0 (kind may be IGNORE for other
 * types), or -1 with a reason in `why` when it is malformed (poison). */
int room_parse_resv_event(const json_t *event, room_resv_event_t *out, char *why, size_t whylen);

#endif

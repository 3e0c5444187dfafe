/* Unit tests of plugins/room/room_logic.c (validation, rating math, documents). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "room_logic.h"

#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &e);
    if (!j)
        fail_msg("bad test JSON: %s", e.text);
    return j;
}

/* Validate `text` with fn; expect status and field. */
static void check_body(int (*fn)(const json_t *, room_err_t *), const char *text, int status, const char *field)
{
    json_t *b = parse(text);
    room_err_t err;
    int rc = fn(b, &err);
    json_decref(b);
    assert_int_equal(rc, status);
    if (status) {
        assert_int_equal(err.status, status);
        assert_string_equal(err.field, field);
        if (*field)
            assert_non_null(strstr(err.detail, field));
    }
}

#define VALID_ROOM "\"name\":\"Den\",\"description\":\"cosy\",\"city\":\"Bern\",\"pricePerNight\":100,\"capacity\":2"

static void create_valid(void **state)
{
    (void)state;
    check_body(room_check_create, "{" VALID_ROOM "}", 0, "");
    check_body(room_check_create,
               "{\"name\":\"D\",\"description\":\"\",\"city\":\"B\",\"pricePerNight\":1,\"capacity\":50}", 0, "");
}

static void create_unknown_and_server_owned(void **state)
{
    (void)state;
    check_body(room_check_create, "{" VALID_ROOM ",\"colour\":\"red\"}", 400, "colour");
    const char *owned[] = {"id", "hostId", "status", "reviewCnt", "rating", "bookingCnt", "version"};
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++) {
        char buf[512];
        snprintf(buf, sizeof(buf), "{" VALID_ROOM ",\"%s\":1}", owned[i]);
        check_body(room_check_create, buf, 400, owned[i]);
    }
}

static void create_missing(void **state)
{
    (void)state;
    check_body(room_check_create, "{\"description\":\"x\",\"city\":\"Bern\",\"pricePerNight\":100,\"capacity\":2}", 400,
               "name");
    check_body(room_check_create, "{\"name\":\"x\",\"description\":\"x\",\"pricePerNight\":100,\"capacity\":2}", 400,
               "city");
    check_body(room_check_create, "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"capacity\":2}", 400,
               "pricePerNight");
    check_body(room_check_create, "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":2}", 400,
               "capacity");
    check_body(room_check_create, "{\"name\":\"x\",\"city\":\"B\",\"pricePerNight\":2,\"capacity\":2}", 400,
               "description");
}

static void create_wrong_types(void **state)
{
    (void)state;
    check_body(room_check_create,
               "{\"name\":5,\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":2,\"capacity\":2}", 400, "name");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":\"2\",\"capacity\":2}", 400,
               "pricePerNight");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":2.5,\"capacity\":2}", 400,
               "pricePerNight");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":null,\"city\":\"B\",\"pricePerNight\":2,\"capacity\":2}", 400,
               "description");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":[],\"pricePerNight\":2,\"capacity\":true}", 400, "city");
    /* a shape error wins over an earlier value error */
    check_body(room_check_create,
               "{\"name\":\"\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":2,\"capacity\":\"2\"}", 400,
               "capacity");
}

static void create_out_of_range(void **state)
{
    (void)state;
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":0,\"capacity\":2}", 422,
               "pricePerNight");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":-5,\"capacity\":2}", 422,
               "pricePerNight");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":0}", 422,
               "capacity");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":51}", 422,
               "capacity");
    check_body(room_check_create,
               "{\"name\":\"\",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}", 422, "name");
    check_body(room_check_create,
               "{\"name\":\"   \",\"description\":\"x\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}", 422,
               "name");
    check_body(room_check_create,
               "{\"name\":\"x\",\"description\":\"x\",\"city\":\"\",\"pricePerNight\":5,\"capacity\":1}", 422, "city");
}

static void create_string_limits(void **state)
{
    (void)state;
    static char big[6000], buf[7000];
    /* name: 200 ok, 201 too long; multi-byte characters count once */
    memset(big, 'a', 200);
    big[200] = '\0';
    snprintf(buf, 7000, "{\"name\":\"%s\",\"description\":\"\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}",
             big);
    check_body(room_check_create, buf, 0, "");
    strcpy(big, "");
    for (int i = 0; i < 200; i++)
        strcat(big, "\xc3\xa9"); /* é: 200 characters, 400 bytes */
    snprintf(buf, 7000, "{\"name\":\"%s\",\"description\":\"\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}",
             big);
    check_body(room_check_create, buf, 0, "");
    memset(big, 'a', 201);
    big[201] = '\0';
    snprintf(buf, 7000, "{\"name\":\"%s\",\"description\":\"\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}",
             big);
    check_body(room_check_create, buf, 422, "name");
    memset(big, 'd', 5001);
    big[5001] = '\0';
    snprintf(buf, 7000, "{\"name\":\"n\",\"description\":\"%s\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}",
             big);
    check_body(room_check_create, buf, 422, "description");
    big[5000] = '\0';
    snprintf(buf, 7000, "{\"name\":\"n\",\"description\":\"%s\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}",
             big);
    check_body(room_check_create, buf, 0, "");
    memset(big, 'c', 101);
    big[101] = '\0';
    snprintf(buf, 7000, "{\"name\":\"n\",\"description\":\"\",\"city\":\"%s\",\"pricePerNight\":5,\"capacity\":1}",
             big);
    check_body(room_check_create, buf, 422, "city");
}

static void create_not_object(void **state)
{
    (void)state;
    room_err_t err;
    json_t *a = json_array();
    assert_int_equal(room_check_create(a, &err), 400);
    assert_int_equal(room_check_create(NULL, &err), 400);
    json_decref(a);
}

static void patch_rules(void **state)
{
    (void)state;
    check_body(room_check_patch, "{}", 0, "");
    check_body(room_check_patch, "{\"name\":\"New\",\"capacity\":3}", 0, "");
    check_body(room_check_patch, "{\"city\":\"Zurich\"}", 400, "city");
    check_body(room_check_patch, "{\"hostId\":\"eve\"}", 400, "hostId");
    check_body(room_check_patch, "{\"version\":3}", 400, "version");
    check_body(room_check_patch, "{\"garden\":true}", 400, "garden");
    check_body(room_check_patch, "{\"capacity\":\"3\"}", 400, "capacity");
    check_body(room_check_patch, "{\"capacity\":99}", 422, "capacity");
    check_body(room_check_patch, "{\"pricePerNight\":0}", 422, "pricePerNight");
}

static void review_rules(void **state)
{
    (void)state;
    check_body(room_check_review, "{\"rating\":5,\"content\":\"great\"}", 0, "");
    check_body(room_check_review, "{\"rating\":1,\"content\":\"x\"}", 0, "");
    check_body(room_check_review, "{\"rating\":0,\"content\":\"x\"}", 422, "rating");
    check_body(room_check_review, "{\"rating\":6,\"content\":\"x\"}", 422, "rating");
    check_body(room_check_review, "{\"rating\":4.5,\"content\":\"x\"}", 400, "rating");
    check_body(room_check_review, "{\"rating\":\"4\",\"content\":\"x\"}", 400, "rating");
    check_body(room_check_review, "{\"content\":\"x\"}", 400, "rating");
    check_body(room_check_review, "{\"rating\":3}", 400, "content");
    check_body(room_check_review, "{\"rating\":3,\"content\":\"\"}", 422, "content");
    check_body(room_check_review, "{\"rating\":3,\"content\":\"x\",\"authorId\":\"me\"}", 400, "authorId");
    check_body(room_check_review, "{\"rating\":3,\"content\":\"x\",\"stars\":2}", 400, "stars");
    static char big[2100], buf[2200];
    memset(big, 'r', 2001);
    big[2001] = '\0';
    snprintf(buf, 2200, "{\"rating\":3,\"content\":\"%s\"}", big);
    check_body(room_check_review, buf, 422, "content");
    big[2000] = '\0';
    snprintf(buf, 2200, "{\"rating\":3,\"content\":\"%s\"}", big);
    check_body(room_check_review, buf, 0, "");
}

static void rating_math(void **state)
{
    (void)state;
    assert_true(room_rating(0, 0) == 0.0);
    assert_true(room_rating(5, 1) == 5.0);
    assert_true(room_rating(9, 2) == 4.5);
    assert_true(room_rating(10, 3) == 3.3); /* 3.333 */
    assert_true(room_rating(11, 3) == 3.7); /* 3.667 */
    assert_true(room_rating(13, 4) == 3.3); /* 3.25 rounds half up */
    assert_true(room_rating(7, 4) == 1.8);  /* 1.75 */
    assert_true(room_rating(400000, 100000) == 4.0);
}

static void utf8_length(void **state)
{
    (void)state;
    assert_int_equal(room_utf8_len(""), 0);
    assert_int_equal(room_utf8_len("abc"), 3);
    assert_int_equal(room_utf8_len("\xc3\xa9t\xc3\xa9"), 3);
    assert_int_equal(room_utf8_len("\xf0\x9f\x90\xbb"), 1); /* bear emoji */
}

static void iso8601(void **state)
{
    (void)state;
    char out[32];
    room_iso8601(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    room_iso8601(1795472046123LL, out);
    assert_string_equal(out, "2026-11-23T22:14:06.123Z");
}

static json_t *new_room(void)
{
    json_t *b = parse("{" VALID_ROOM "}");
    json_t *doc = room_new_doc(b, "r1", "alice");
    json_decref(b);
    assert_non_null(doc);
    return doc;
}

static void document_and_view(void **state)
{
    (void)state;
    json_t *doc = new_room(), *v = room_view(doc, 1);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "id")), "r1");
    assert_string_equal(json_string_value(json_object_get(v, "hostId")), "alice");
    assert_string_equal(json_string_value(json_object_get(v, "status")), "ACTIVE");
    assert_int_equal(json_integer_value(json_object_get(v, "pricePerNight")), 100);
    assert_int_equal(json_integer_value(json_object_get(v, "reviewCnt")), 0);
    assert_true(json_number_value(json_object_get(v, "rating")) == 0.0);
    assert_int_equal(json_integer_value(json_object_get(v, "bookingCnt")), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "version")), 1);
    /* internal members stay internal */
    assert_null(json_object_get(v, "reviews"));
    assert_null(json_object_get(v, "ratingSum"));
    assert_null(json_object_get(v, "bookings"));
    assert_int_equal(json_object_size(v), 12);
    assert_true(room_is_active(doc));
    json_decref(v);

    json_t *p = parse("{\"name\":\"Loft\",\"capacity\":4}");
    assert_int_equal(room_apply_patch(doc, p), 1);
    assert_int_equal(room_apply_patch(doc, p), 0);
    json_decref(p);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "Loft");
    assert_string_equal(json_string_value(json_object_get(doc, "city")), "Bern");

    json_object_set_new(doc, "status", json_string("DELETED"));
    assert_false(room_is_active(doc));
    v = room_deleted_data(doc, 7);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "DELETED");
    assert_int_equal(json_integer_value(json_object_get(v, "version")), 7);
    assert_int_equal(json_object_size(v), 4);
    json_decref(v);
    json_decref(doc);
}

static void reviews_follow(void **state)
{
    (void)state;
    json_t *doc = new_room(), *d;
    room_count_review(doc, +1, 5);
    room_count_review(doc, +1, 4);
    room_count_review(doc, +1, 4);
    json_t *v = room_view(doc, 4);
    assert_int_equal(json_integer_value(json_object_get(v, "reviewCnt")), 3);
    assert_true(json_number_value(json_object_get(v, "rating")) == 4.3);
    json_decref(v);

    json_t *review = room_new_review("v1", "r1", "bob", 5, "top", 0);
    json_t *stored = room_review_doc(review, 1234);
    assert_int_equal(json_integer_value(json_object_get(stored, "createdMs")), 1234);
    json_t *view = room_review_view(stored);
    assert_true(json_equal(view, review)); /* the stored extras stay inside */
    json_decref(view);
    json_decref(stored);
    room_count_review(doc, -1, 5);
    d = room_review_event_data(review, doc, 5);
    assert_string_equal(json_string_value(json_object_get(d, "id")), "v1");
    assert_string_equal(json_string_value(json_object_get(d, "roomId")), "r1");
    assert_int_equal(json_integer_value(json_object_get(d, "rating")), 5);
    json_t *room = json_object_get(d, "room");
    assert_int_equal(json_integer_value(json_object_get(room, "reviewCnt")), 2);
    assert_true(json_number_value(json_object_get(room, "rating")) == 4.0);
    assert_int_equal(json_integer_value(json_object_get(room, "version")), 5);
    json_decref(d);
    json_decref(review);
    room_count_review(doc, -1, 4);
    room_count_review(doc, -1, 4);
    room_count_review(doc, -1, 4); /* never below zero */
    v = room_view(doc, 8);
    assert_int_equal(json_integer_value(json_object_get(v, "reviewCnt")), 0);
    assert_true(json_number_value(json_object_get(v, "rating")) == 0.0);
    json_decref(v);
    json_decref(doc);
}

static void reservation_events(void **state)
{
    (void)state;
    room_resv_event_t ev;
    char why[200];
    int64_t d1, d3;
    assert_int_equal(room_parse_date("2030-01-01", &d1), 0);
    assert_int_equal(room_parse_date("2030-01-03", &d3), 0);
    json_t *e = parse("{\"id\":\"e1\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res1\",\"roomId\":\"r1\","
                      "\"checkIn\":\"2030-01-01\",\"checkOut\":\"2030-01-03\"}}");
    assert_int_equal(room_parse_resv_event(e, &ev, why, sizeof(why)), 0);
    assert_int_equal(ev.kind, ROOM_RESV_CONFIRMED);
    assert_string_equal(ev.event_id, "e1");
    assert_string_equal(ev.reservation_id, "res1");
    assert_string_equal(ev.room_id, "r1");
    assert_true(ev.check_in == d1 && ev.check_out == d3);
    json_decref(e);

    const char *kinds[][2] = {{"ReservationPlaced", "1"},
                              {"ReservationRejected", "3"},
                              {"ReservationCancelled", "4"},
                              {"ReservationCancelRequested", "0"},
                              {"PaymentApproved", "0"}};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        char txt[400];
        snprintf(txt, sizeof(txt),
                 "{\"id\":\"e\",\"type\":\"%s\",\"data\":{\"id\":\"r\",\"roomId\":\"x\",\"checkIn\":\"2030-01-01\","
                 "\"checkOut\":\"2030-01-03\"}}",
                 kinds[i][0]);
        e = parse(txt);
        assert_int_equal(room_parse_resv_event(e, &ev, why, sizeof(why)), 0);
        assert_int_equal((int)ev.kind, atoi(kinds[i][1]));
        json_decref(e);
    }
    e = parse("{\"id\":\"e2\",\"type\":\"ReservationCancelRequested\",\"data\":{}}");
    assert_int_equal(room_parse_resv_event(e, &ev, why, sizeof(why)), 0);
    assert_int_equal(ev.kind, ROOM_RESV_IGNORE);
    json_decref(e);

#define DATES ",\"checkIn\":\"2030-01-01\",\"checkOut\":\"2030-01-03\""
    const char *bad[] = {
        "[]",
        "{\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"r\",\"roomId\":\"x\"" DATES "}}",
        "{\"id\":\"e\",\"data\":{}}",
        "{\"id\":\"e\",\"type\":\"ReservationConfirmed\"}",
        "{\"id\":\"e\",\"type\":\"ReservationCancelled\",\"data\":{\"id\":\"r\"" DATES "}}",
        "{\"id\":\"e\",\"type\":\"ReservationCancelled\",\"data\":{\"roomId\":\"x\"" DATES "}}",
        "{\"id\":\"e\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":7,\"roomId\":\"x\"" DATES "}}",
        "{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"data\":{\"id\":\"r\",\"roomId\":\"x|y\"" DATES "}}",
        "{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"data\":{\"id\":\"r\",\"roomId\":\"x\"}}",
        "{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"data\":{\"id\":\"r\",\"roomId\":\"x\",\"checkIn\":\"2030-01-"
        "03\","
        "\"checkOut\":\"2030-01-03\"}}",
        "{\"id\":\"e\",\"type\":\"ReservationPlaced\",\"data\":{\"id\":\"r\",\"roomId\":\"x\",\"checkIn\":\"2030-01-"
        "01\","
        "\"checkOut\":\"2040-01-03\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e = parse(bad[i]);
        why[0] = '\0';
        assert_int_equal(room_parse_resv_event(e, &ev, why, sizeof(why)), -1);
        assert_true(why[0] != '\0');
        json_decref(e);
    }
}

static void dates(void **state)
{
    (void)state;
    int64_t d;
    char out[11];
    assert_int_equal(room_parse_date("1970-01-01", &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(room_parse_date("2000-03-01", &d), 0);
    assert_int_equal(d, 11017);
    room_format_date(d, out);
    assert_string_equal(out, "2000-03-01");
    assert_int_equal(room_parse_date("2028-02-29", &d), 0); /* leap */
    room_format_date(d + 1, out);
    assert_string_equal(out, "2028-03-01");
    const char *bad[] = {"2027-02-29", "2030-13-01", "2030-00-10", "2030-04-31",  "2030-1-01",     "2030/01/01",
                         "20300101",   "",           "1969-12-31", "2030-01-01x", "２０３０-01-01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(room_parse_date(bad[i], &d), -1);
    assert_int_equal(room_parse_date(NULL, &d), -1);
    int64_t first, next;
    assert_int_equal(room_parse_date("2030-12-17", &d), 0);
    room_month_bounds(d, &first, &next);
    room_format_date(first, out);
    assert_string_equal(out, "2030-12-01");
    room_format_date(next, out);
    assert_string_equal(out, "2031-01-01");
}

static void nights_model(void **state)
{
    (void)state;
    int64_t jan30, feb2, feb1, jan1;
    room_parse_date("2030-01-30", &jan30);
    room_parse_date("2030-02-02", &feb2);
    room_parse_date("2030-02-01", &feb1);
    room_parse_date("2030-01-01", &jan1);
    char id[64];
    assert_int_equal(room_nights_id("room1", jan30, id, sizeof(id)), 0);
    assert_string_equal(id, "room1|2030-01");
    assert_int_equal(room_nights_id("room1", jan30, id, 8), -1);
    json_t *jan = room_nights_new("room1", jan30), *feb = room_nights_new("room1", feb1);
    assert_string_equal(json_string_value(json_object_get(jan, "month")), "2030-01");
    /* r1 holds Jan 30, 31 (this month) and Feb 1 (the next) */
    assert_int_equal(room_nights_apply(jan, jan30, feb2, "r1", 1), 1);
    assert_int_equal(room_nights_apply(jan, jan30, feb2, "r1", 1), 0); /* idempotent */
    assert_int_equal(json_object_size(json_object_get(jan, "nights")), 2);
    assert_int_equal(room_nights_apply(feb, jan30, feb2, "r1", 1), 1);
    assert_int_equal(json_object_size(json_object_get(feb, "nights")), 1);
    assert_false(room_nights_free(jan, jan30, feb2));
    assert_true(room_nights_free(jan, jan1, jan30)); /* checkout on the 30th: adjacent */
    assert_false(room_nights_free(feb, feb1, feb1 + 1));
    assert_true(room_nights_free(feb, feb2, feb2 + 5));
    assert_true(room_nights_free(NULL, feb2, feb2 + 5));
    /* r2 holds Feb 1 too (events crossing); freeing r1 keeps r2's hold */
    assert_int_equal(room_nights_apply(feb, feb1, feb2, "r2", 1), 1);
    assert_int_equal(room_nights_apply(feb, jan30, feb2, "r1", 0), 1);
    assert_false(room_nights_free(feb, feb1, feb2));
    assert_int_equal(room_nights_apply(feb, jan30, feb2, "r1", 0), 0);
    assert_int_equal(room_nights_apply(feb, feb1, feb2, "r2", 0), 1);
    assert_true(room_nights_free(feb, feb1, feb2));
    assert_int_equal(json_object_size(json_object_get(feb, "nights")), 0); /* nothing left behind */
    /* freeing what another reservation holds changes nothing */
    assert_int_equal(room_nights_apply(jan, jan30, feb2, "r9", 0), 0);
    assert_false(room_nights_free(jan, jan30, jan30 + 1));
    json_decref(jan);
    json_decref(feb);
}

static void control_characters(void **state)
{
    (void)state;
    check_body(room_check_create,
               "{\"name\":\"a\\u0007b\",\"description\":\"d\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}", 400,
               "name");
    check_body(room_check_create,
               "{\"name\":\"ab\",\"description\":\"d\",\"city\":\"B\\nern\",\"pricePerNight\":5,\"capacity\":1}", 400,
               "city");
    check_body(room_check_create,
               "{\"name\":\"a\\u0000b\",\"description\":\"d\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}", 400,
               "name");
    check_body(room_check_create,
               "{\"name\":\"a\\u0085b\",\"description\":\"d\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}", 400,
               "name");
    check_body(room_check_create,
               "{\"name\":\"a\\u007fb\",\"description\":\"d\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}", 400,
               "name");
    /* a description may have lines, not other control characters */
    check_body(room_check_create,
               "{\"name\":\"ab\",\"description\":\"l1\\nl2\\tx\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}", 0,
               "");
    check_body(room_check_create,
               "{\"name\":\"ab\",\"description\":\"l1\\u001bx\",\"city\":\"B\",\"pricePerNight\":5,\"capacity\":1}",
               400, "description");
    check_body(room_check_patch, "{\"name\":\"a\\rb\"}", 400, "name");
    check_body(room_check_review, "{\"rating\":5,\"content\":\"a\\u0000\"}", 400, "content");
    /* ordinary non-ASCII is fine */
    check_body(room_check_create,
               "{\"name\":\"Zürich ß\",\"description\":\"d\",\"city\":\"Zürich\",\"pricePerNight\":5,\"capacity\":1}",
               0, "");
}

static void list_query(void **state)
{
    (void)state;
    room_list_query_t q;
    room_err_t err;
    assert_int_equal(room_parse_list_query(NULL, ROOM_QUERY_ROOMS, 90, &q, &err), 0);
    assert_int_equal(q.limit, 20);
    assert_true(q.guests == -1 && q.check_in == -1 && !q.city && !q.cursor);
    room_list_query_free(&q);
    assert_int_equal(room_parse_list_query("city=Z%C3%BCrich&guests=2&minPrice=0&maxPrice=900&checkIn=2030-01-01&"
                                           "checkOut=2030-03-31&limit=100&cursor=abc&",
                                           ROOM_QUERY_ROOMS, 90, &q, &err),
                     0);
    assert_string_equal(q.city, "Zürich");
    assert_string_equal(q.cursor, "abc");
    assert_true(q.guests == 2 && q.min_price == 0 && q.max_price == 900 && q.limit == 100);
    assert_int_equal(q.check_out - q.check_in, 89);
    room_list_query_free(&q);
    /* 90 nights is the default cap, configurable */
    assert_int_equal(room_parse_list_query("checkIn=2030-01-01&checkOut=2030-04-01", ROOM_QUERY_ROOMS, 90, &q, &err),
                     0);
    room_list_query_free(&q);
    assert_int_equal(room_parse_list_query("checkIn=2030-01-01&checkOut=2030-04-02", ROOM_QUERY_ROOMS, 90, &q, &err),
                     400);
    assert_string_equal(err.field, "checkOut");
    assert_int_equal(room_parse_list_query("checkIn=2030-01-01&checkOut=2030-04-02", ROOM_QUERY_ROOMS, 91, &q, &err),
                     0);
    room_list_query_free(&q);
    /* hostId: a host's own rooms, with limit and cursor only */
    assert_int_equal(room_parse_list_query("hostId=alice&limit=5&cursor=x", ROOM_QUERY_ROOMS, 90, &q, &err), 0);
    assert_string_equal(q.host_id, "alice");
    room_list_query_free(&q);
    assert_int_equal(room_parse_list_query("hostId=alice&city=Oslo", ROOM_QUERY_ROOMS, 90, &q, &err), 400);
    assert_string_equal(err.field, "hostId");
    assert_int_equal(room_parse_list_query("hostId=", ROOM_QUERY_ROOMS, 90, &q, &err), 400);
    assert_string_equal(err.field, "hostId");
    assert_int_equal(room_parse_list_query("hostId=a%0Ab", ROOM_QUERY_ROOMS, 90, &q, &err), 400);
    assert_string_equal(err.field, "hostId");
    assert_int_equal(room_parse_list_query("hostId=a&hostId=b", ROOM_QUERY_ROOMS, 90, &q, &err), 400);
    assert_string_equal(err.field, "hostId");
    /* reviews take limit and cursor only */
    assert_int_equal(room_parse_list_query("limit=5&cursor=x", ROOM_QUERY_REVIEWS, 90, &q, &err), 0);
    room_list_query_free(&q);
    assert_int_equal(room_parse_list_query("limit=5&city=x", ROOM_QUERY_REVIEWS, 90, &q, &err), 400);
    assert_string_equal(err.field, "city");
    assert_int_equal(room_parse_list_query("lim%zzit=5", ROOM_QUERY_REVIEWS, 90, &q, &err), 400);
    assert_string_equal(err.field, "lim%zzit");
    assert_int_equal(room_parse_list_query("limit=5&cursor=a%20b", ROOM_QUERY_REVIEWS, 90, &q, &err), 400);
    assert_string_equal(err.field, "cursor");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_valid),        cmocka_unit_test(create_unknown_and_server_owned),
        cmocka_unit_test(create_missing),      cmocka_unit_test(create_wrong_types),
        cmocka_unit_test(create_out_of_range), cmocka_unit_test(create_string_limits),
        cmocka_unit_test(create_not_object),   cmocka_unit_test(patch_rules),
        cmocka_unit_test(review_rules),        cmocka_unit_test(rating_math),
        cmocka_unit_test(utf8_length),         cmocka_unit_test(iso8601),
        cmocka_unit_test(document_and_view),   cmocka_unit_test(reviews_follow),
        cmocka_unit_test(reservation_events),  cmocka_unit_test(dates),
        cmocka_unit_test(nights_model),        cmocka_unit_test(control_characters),
        cmocka_unit_test(list_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

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
    json_t *j = json_loads(text, 0, &e);
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
    json_t *doc = new_room(), *removed = NULL, *d;
    assert_int_equal(room_add_review(doc, room_new_review("v1", "r1", "bob", 5, "top", 0)), 0);
    assert_int_equal(room_add_review(doc, room_new_review("v2", "r1", "eve", 4, "ok", 0)), 0);
    assert_int_equal(room_add_review(doc, room_new_review("v3", "r1", "bob", 4, "ok", 0)), 0);
    json_t *v = room_view(doc, 4);
    assert_int_equal(json_integer_value(json_object_get(v, "reviewCnt")), 3);
    assert_true(json_number_value(json_object_get(v, "rating")) == 4.3);
    json_decref(v);
    assert_non_null(room_find_review(doc, "v2"));
    assert_null(room_find_review(doc, "nope"));

    assert_int_equal(room_remove_review(doc, "v1", &removed), 0);
    assert_string_equal(json_string_value(json_object_get(removed, "authorId")), "bob");
    d = room_review_event_data(removed, doc, 5);
    assert_string_equal(json_string_value(json_object_get(d, "id")), "v1");
    assert_string_equal(json_string_value(json_object_get(d, "roomId")), "r1");
    assert_int_equal(json_integer_value(json_object_get(d, "rating")), 5);
    json_t *room = json_object_get(d, "room");
    assert_int_equal(json_integer_value(json_object_get(room, "reviewCnt")), 2);
    assert_true(json_number_value(json_object_get(room, "rating")) == 4.0);
    assert_int_equal(json_integer_value(json_object_get(room, "version")), 5);
    json_decref(d);
    json_decref(removed);
    assert_int_equal(room_remove_review(doc, "v1", &removed), -1);
    assert_null(removed);
    assert_int_equal(room_remove_review(doc, "v2", &removed), 0);
    json_decref(removed);
    assert_int_equal(room_remove_review(doc, "v3", &removed), 0);
    json_decref(removed);
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
    char why[160];
    json_t *e = parse("{\"id\":\"e1\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"res1\",\"roomId\":\"r1\"}}");
    assert_int_equal(room_parse_resv_event(e, &ev, why, sizeof(why)), 0);
    assert_int_equal(ev.kind, ROOM_RESV_CONFIRMED);
    assert_string_equal(ev.event_id, "e1");
    assert_string_equal(ev.reservation_id, "res1");
    assert_string_equal(ev.room_id, "r1");
    json_decref(e);

    e = parse("{\"id\":\"e2\",\"type\":\"ReservationPlaced\",\"data\":{}}");
    assert_int_equal(room_parse_resv_event(e, &ev, why, sizeof(why)), 0);
    assert_int_equal(ev.kind, ROOM_RESV_IGNORE);
    json_decref(e);

    const char *bad[] = {
        "[]",
        "{\"type\":\"ReservationConfirmed\",\"data\":{\"id\":\"r\",\"roomId\":\"x\"}}",
        "{\"id\":\"e\",\"data\":{}}",
        "{\"id\":\"e\",\"type\":\"ReservationConfirmed\"}",
        "{\"id\":\"e\",\"type\":\"ReservationCancelled\",\"data\":{\"id\":\"r\"}}",
        "{\"id\":\"e\",\"type\":\"ReservationCancelled\",\"data\":{\"roomId\":\"x\"}}",
        "{\"id\":\"e\",\"type\":\"ReservationConfirmed\",\"data\":{\"id\":7,\"roomId\":\"x\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e = parse(bad[i]);
        why[0] = '\0';
        assert_int_equal(room_parse_resv_event(e, &ev, why, sizeof(why)), -1);
        assert_true(why[0] != '\0');
        json_decref(e);
    }
}

static void booking_counter(void **state)
{
    (void)state;
    json_t *doc = new_room();
    assert_int_equal(room_apply_booking(doc, ROOM_RESV_CANCELLED, "a"), 0); /* never confirmed */
    assert_int_equal(room_apply_booking(doc, ROOM_RESV_CONFIRMED, "a"), 1);
    assert_int_equal(room_apply_booking(doc, ROOM_RESV_CONFIRMED, "a"), 0); /* duplicate */
    assert_int_equal(room_apply_booking(doc, ROOM_RESV_CONFIRMED, "b"), 1);
    assert_int_equal(json_integer_value(json_object_get(doc, "bookingCnt")), 2);
    assert_int_equal(room_apply_booking(doc, ROOM_RESV_CANCELLED, "a"), 1);
    assert_int_equal(room_apply_booking(doc, ROOM_RESV_CANCELLED, "a"), 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "bookingCnt")), 1);
    json_decref(doc);
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
        cmocka_unit_test(reservation_events),  cmocka_unit_test(booking_counter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

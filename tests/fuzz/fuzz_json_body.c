/* libFuzzer: the JSON body checks a request goes through before a plugin
 * acts on it: the host's media-type check and JSON parse (an object only),
 * then the room checks (create, patch, review) and the reservation's date
 * and card checks on every string member. The first input line (up to the
 * first newline) is the Content-Type, the rest the body. */
#include "reqcheck.h"
#include "resv_logic.h"
#include "room_logic.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    const char *nl = memchr(d, '\n', size);
    size_t ctl = nl ? (size_t)(nl - d) : size;
    (void)bnb__media_type_is_json(d, ctl);
    if (nl == NULL)
        return 0;
    const char *body = nl + 1;
    size_t blen = size - ctl - 1;
    json_error_t je;
    json_t *j = json_loadb(body, blen, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        return 0;
    if (json_is_object(j)) {
        room_err_t err;
        (void)room_check_create(j, &err);
        (void)room_check_patch(j, &err);
        (void)room_check_review(j, &err);
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            const char *s = json_string_value(v);
            if (s == NULL)
                continue;
            int32_t days;
            (void)resv_parse_date(s, &days);
            (void)resv_card_number_valid(s);
            (void)room_utf8_len(s);
        }
    }
    json_decref(j);
    return 0;
}

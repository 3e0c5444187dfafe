/* libFuzzer: event envelopes as consumers parse them: the dashboard's check
 * and merge into a fresh summary or reservation view, the room's reservation-event
 * parser, and the host's correlation id check. */
#include "dash_merge.h"
#include "reqcheck.h"
#include "room_logic.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t je;
    json_t *ev = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (ev == NULL)
        return 0;
    const char *cid = json_string_value(json_object_get(ev, "correlationId"));
    if (cid != NULL)
        (void)bnb__correlation_id_ok(cid, strlen(cid));
    char why[256];
    dash_ev_kind_t kind;
    const char *room_id = NULL, *res_id = NULL;
    if (dash_event_check(ev, &kind, &room_id, &res_id, why, sizeof(why)) == 0) {
        if ((kind == DASH_EV_ROOM || kind == DASH_EV_ROOM_DELETED || kind == DASH_EV_REVIEW) && room_id != NULL) {
            json_t *sum = dash_sum_new(room_id);
            if (sum != NULL) {
                (void)dash_sum_apply(sum, ev);
                (void)dash_sum_apply(sum, ev); /* redelivery changes nothing */
                json_decref(dash_sum_public(sum));
                json_decref(sum);
            }
        } else if ((kind == DASH_EV_RESERVATION || kind == DASH_EV_PAYMENT) && res_id != NULL) {
            json_t *view = dash_view_new(res_id);
            if (view != NULL) {
                (void)dash_view_apply(view, ev);
                (void)dash_view_apply(view, ev);
                (void)dash_view_pending(view);
                json_decref(dash_view_public(view));
                json_decref(view);
            }
        }
    }
    (void)dash_time_ms(json_string_value(json_object_get(ev, "time")));
    room_resv_event_t re;
    (void)room_parse_resv_event(ev, &re, why, sizeof(why));
    json_decref(ev);
    return 0;
}

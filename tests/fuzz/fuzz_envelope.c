/* libFuzzer: event envelopes as consumers parse them: the dashboard's check
 * and merge into a fresh read-model document, the room's reservation-event
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
    const char *room_id = NULL;
    if (dash_event_check(ev, &kind, &room_id, why, sizeof(why)) == 0 && room_id != NULL) {
        json_t *doc = dash_doc_new(room_id);
        if (doc != NULL) {
            (void)dash_apply(doc, ev);
            (void)dash_apply(doc, ev); /* redelivery changes nothing */
            json_t *view = dash_doc_view(doc);
            json_decref(view);
            json_decref(doc);
        }
    }
    room_resv_event_t re;
    (void)room_parse_resv_event(ev, &re, why, sizeof(why));
    json_decref(ev);
    return 0;
}

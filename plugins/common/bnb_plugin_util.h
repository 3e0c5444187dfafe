/*
 * Helpers shared by the plugins (plugins/common): a static library linked
 * into every plugin's shared module, hidden there (nothing here is exported).
 * It depends only on the plugin API and jansson; the host is passed in.
 */
#ifndef BNB_PLUGIN_UTIL_H
#define BNB_PLUGIN_UTIL_H

#include "bnb_plugin.h"

#include <jansson.h>

/* 1 when `s` is 1..64 characters of [A-Za-z0-9_-]. */
int bnb_util_id_ok(const char *s);

/* The card number of a request's or event's `card`: a string, or an object
 * whose `number` is a string. Borrowed, NULL when neither. */
const char *bnb_util_card_number(const json_t *card);
/* 1 when `number` is 12..19 ASCII digits. */
int bnb_util_card_valid(const char *number);

/* The JSON object body of `req` when the request has a user and every member
 * of the body is named in `known` (NULL-terminated). Otherwise answers 400 and
 * returns NULL: "body must be a JSON object", or "unknown field '<key>'", or,
 * for a member named in `server_owned` (NULL-terminated, may be NULL),
 * "field '<key>' is set by the server and cannot be given". */
const json_t *bnb_util_body(const bnb_host_api_t *h, bnb_req_t *req, const char *const *known,
                            const char *const *server_owned);

/* Reject the event being handled with `why`; returns BNB_EINVAL. */
int bnb_util_reject(const bnb_host_api_t *h, bnb_ctx_t *ctx, const char *why);

/* The id, type (strings) and data (may be NULL) of the envelope `ev`, all
 * borrowed. 0, or BNB_EINVAL after rejecting the event ("envelope without
 * string id/type") when it is not an object with string id and type. */
int bnb_util_envelope(const bnb_host_api_t *h, bnb_ctx_t *ctx, const json_t *ev, const char **id, const char **type,
                      const json_t **data);

/* One route or subscription of a plugin (tables end with a zeroed entry). */
typedef struct bnb_util_route {
    const char *method;
    const char *pattern;
    bnb_role_t who;
    bnb_route_fn fn;
} bnb_util_route_t;

typedef struct bnb_util_sub {
    const char *topic;
    bnb_event_fn fn;
} bnb_util_sub_t;

/* Register `routes` then `subs` (either may be NULL), in order, stopping at
 * the first failure: 0 or the host's error code. */
int bnb_util_register(bnb_ctx_t *ctx, const bnb_host_api_t *h, const bnb_util_route_t *routes,
                      const bnb_util_sub_t *subs);

#endif

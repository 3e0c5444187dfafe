#include "bnb_plugin_util.h"

#include <stdio.h>
#include <string.h>

int bnb_util_id_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_'))
            return 0;
    return 1;
}

const char *bnb_util_card_number(const json_t *card)
{
    if (json_is_string(card))
        return json_string_value(card);
    if (json_is_object(card))
        return json_string_value(json_object_get(card, "number"));
    return NULL;
}

int bnb_util_card_valid(const char *number)
{
    if (!number)
        return 0;
    size_t n = strlen(number);
    if (n < 12 || n > 19)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (number[i] < '0' || number[i] > '9')
            return 0;
    return 1;
}

static int in_list(const char *const *list, const char *key)
{
    for (int i = 0; list && list[i]; i++)
        if (!strcmp(key, list[i]))
            return 1;
    return 0;
}

const json_t *bnb_util_body(const bnb_host_api_t *h, bnb_req_t *req, const char *const *known,
                            const char *const *server_owned)
{
    const json_t *body = h->req_body(req);
    const char *key;
    json_t *val;
    if (!json_is_object(body) || !h->req_user(req)) {
        h->respond_problem(req, 400, "Bad Request", "body must be a JSON object");
        return NULL;
    }
    json_object_foreach((json_t *)body, key, val)
    {
        if (in_list(known, key))
            continue;
        if (in_list(server_owned, key))
            h->respond_problem(req, 400, "Bad Request", "field '%s' is set by the server and cannot be given", key);
        else
            h->respond_problem(req, 400, "Bad Request", "unknown field '%s'", key);
        return NULL;
    }
    return body;
}

int bnb_util_reject(const bnb_host_api_t *h, bnb_ctx_t *ctx, const char *why)
{
    h->event_reject(ctx, "%s", why);
    return BNB_EINVAL;
}

int bnb_util_envelope(const bnb_host_api_t *h, bnb_ctx_t *ctx, const json_t *ev, const char **id, const char **type,
                      const json_t **data)
{
    *id = json_string_value(json_object_get(ev, "id"));
    *type = json_string_value(json_object_get(ev, "type"));
    *data = json_object_get(ev, "data");
    if (!json_is_object(ev) || !*id || !*type)
        return bnb_util_reject(h, ctx, "envelope without string id/type");
    return 0;
}

int bnb_util_register(bnb_ctx_t *ctx, const bnb_host_api_t *h, const bnb_util_route_t *routes,
                      const bnb_util_sub_t *subs)
{
    int rc = 0;
    for (; rc == 0 && routes && routes->fn; routes++)
        rc = h->route(ctx, routes->method, routes->pattern, routes->who, routes->fn);
    for (; rc == 0 && subs && subs->fn; subs++)
        rc = h->subscribe(ctx, subs->topic, subs->fn);
    return rc;
}

int bnb_util_query_names_ok(const bnb_host_api_t *h, bnb_req_t *req, const char *const *known)
{
    if (!BNB_HAS(h, req_query_string))
        return 1;
    const char *q = h->req_query_string(req);
    while (q && *q) {
        size_t n = strcspn(q, "=&");
        int ok = n == 0;
        for (int i = 0; !ok && known[i]; i++)
            ok = strlen(known[i]) == n && !strncmp(q, known[i], n);
        if (!ok) {
            h->respond_problem(req, 400, "Bad Request", "unknown query parameter '%.*s'", (int)(n > 64 ? 64 : n), q);
            return 0;
        }
        q += strcspn(q, "&");
        if (*q == '&')
            q++;
    }
    return 1;
}

size_t bnb_util_page_limit(const bnb_host_api_t *h, bnb_req_t *req, size_t def, size_t max)
{
    const char *v = h->req_query(req, "limit");
    if (!v)
        return def;
    size_t n = 0, len = strlen(v);
    int digits = len >= 1 && len <= 4;
    for (size_t i = 0; digits && i < len; i++) {
        digits = v[i] >= '0' && v[i] <= '9';
        n = n * 10 + (size_t)(v[i] - '0');
    }
    if (!digits || n < 1 || n > max) {
        h->respond_problem(req, 400, "Bad Request", "query parameter 'limit' must be an integer from 1 to %zu", max);
        return 0;
    }
    return n;
}

/*
 * dashboard: the CQRS read model. One document per room in the `rooms`
 * collection, built only from events (bearbnb.room, bearbnb.reservation,
 * bearbnb.payment); it never reads another plugin's store nor calls it.
 * The merge itself is pure and lives in dash_merge.c.
 *
 * Routes (anyone):
 *   GET /dashboard/rooms[?city=C]  every room known from a room event, deleted
 *                                  rooms included with status "DELETED",
 *                                  sorted by id
 *   GET /dashboard/rooms/{id}      one room, 404 when no room event for it
 *                                  has been applied yet
 */
#include "bnb_plugin.h"
#include "bnb_plugin_util.h"
#include "dash_merge.h"

#include <stdlib.h>
#include <string.h>

#define COLL        "rooms"
#define MAX_RETRIES 16

static const bnb_host_api_t *host;

/* ---- events -------------------------------------------------------------- */

static int dashboard_on_event(bnb_ctx_t *ctx, const json_t *ev)
{
    char why[256] = "";
    dash_ev_kind_t kind;
    const char *room_id = NULL, *event_id;
    bnb_store_t *st = host->store(ctx);
    int rc;

    rc = dash_event_check(ev, &kind, &room_id, why, sizeof(why));
    if (rc == 1) {
        host->count(ctx, "events_ignored", 1);
        return 0;
    }
    if (rc) {
        host->log(ctx, "warn", "rejecting event: %s", why);
        host->event_reject(ctx, "%s", why);
        host->count(ctx, "events_rejected", 1);
        return BNB_EINVAL;
    }
    event_id = json_string_value(json_object_get(ev, "id"));

    for (int attempt = 0; attempt < MAX_RETRIES; attempt++) {
        json_t *doc = NULL;
        int64_t version = 0;
        int changed;

        rc = host->store_get(st, COLL, room_id, &doc, &version);
        if (rc == BNB_ENOENT) {
            version = 0;
            doc = dash_doc_new(room_id);
            if (!doc)
                return BNB_ENOMEM;
        } else if (rc) {
            return rc; /* transient: redelivered later */
        }

        changed = dash_apply(doc, ev);
        if (changed < 0) {
            json_decref(doc);
            if (changed == BNB_EINVAL) {
                host->log(ctx, "error", "stored document of room %s is not a dashboard document", room_id);
                host->event_reject(ctx, "stored document of room %s is corrupt", room_id);
            }
            return changed;
        }

        json_t *city = json_object_get(doc, "city"), *hid = json_object_get(doc, "hostId");
        bnb_write_t w = {
            .op = changed ? BNB_WRITE_PUT : BNB_WRITE_TOUCH,
            .coll = COLL,
            .id = room_id,
            .expect_version = version,
            .body = doc,
            .key1 = json_string_value(city),
            .key2 = json_string_value(hid),
        };
        rc = host->store_commit(st, &w, NULL, 0, event_id, NULL);
        json_decref(doc);
        if (rc == 0 || rc == BNB_EALREADY) {
            host->count(ctx, rc == BNB_EALREADY ? "events_repeated" : changed ? "events_applied" : "events_stale", 1);
            return 0;
        }
        if (rc != BNB_EEXIST)
            return rc;
        /* someone else updated the room's document meanwhile: read it again */
    }
    host->log(ctx, "warn", "room %s: still conflicting after %d attempts, retry later", room_id, MAX_RETRIES);
    return BNB_EAGAIN;
}

/* ---- routes -------------------------------------------------------------- */

static int cmp_by_id(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "id"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "id"));
    return strcmp(x ? x : "", y ? y : "");
}

static void dashboard_list(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *city = host->req_query(req, "city");
    json_t *rows = NULL, *out = NULL, *row, **views = NULL;
    size_t i, n = 0;
    int rc;

    rc = host->store_list(host->store(ctx), COLL, city ? 1 : 0, city, &rows);
    if (rc) {
        host->respond_problem(req, 503, "Service Unavailable", "cannot read the read model (%d)", rc);
        return;
    }
    views = calloc(json_array_size(rows) + 1, sizeof(*views));
    out = json_array();
    if (!views || !out)
        goto fail;
    json_array_foreach(rows, i, row)
    {
        json_t *body = json_object_get(row, "body");
        if (!json_is_object(body) || !dash_doc_has_room(body))
            continue; /* placeholder: no room event yet */
        views[n] = dash_doc_view(body);
        if (!views[n])
            goto fail;
        n++;
    }
    qsort(views, n, sizeof(*views), cmp_by_id);
    for (i = 0; i < n; i++) {
        int r = json_array_append_new(out, views[i]);
        views[i] = NULL;
        if (r)
            goto fail;
    }
    free(views);
    json_decref(rows);
    host->respond_json(req, 200, out);
    return;
fail:
    for (i = 0; views && i < n; i++)
        json_decref(views[i]);
    free(views);
    json_decref(out);
    json_decref(rows);
    host->respond_problem(req, 500, "Internal Server Error", "out of memory");
}

static void dashboard_get(bnb_ctx_t *ctx, bnb_req_t *req)
{
    const char *id = host->req_param(req, "id");
    json_t *doc = NULL, *view;
    int64_t version;
    int rc;

    rc = id ? host->store_get(host->store(ctx), COLL, id, &doc, &version) : BNB_ENOENT;
    if (rc == 0 && !dash_doc_has_room(doc))
        rc = BNB_ENOENT;
    if (rc == BNB_ENOENT) {
        json_decref(doc);
        host->respond_problem(req, 404, "Not Found", "no room %s on the dashboard", id ? id : "");
        return;
    }
    if (rc) {
        host->respond_problem(req, 503, "Service Unavailable", "cannot read the read model (%d)", rc);
        return;
    }
    view = dash_doc_view(doc);
    json_decref(doc);
    if (!view) {
        host->respond_problem(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    host->respond_json(req, 200, view);
}

/* ---- plugin -------------------------------------------------------------- */

static const bnb_util_route_t dashboard_routes[] = {
    {"GET", "/dashboard/rooms", BNB_ROLE_ANYONE, dashboard_list},
    {"GET", "/dashboard/rooms/{id}", BNB_ROLE_ANYONE, dashboard_get},
    {NULL, NULL, 0, NULL},
};

static const bnb_util_sub_t dashboard_subs[] = {
    {"bearbnb.room", dashboard_on_event},
    {"bearbnb.reservation", dashboard_on_event},
    {"bearbnb.payment", dashboard_on_event},
    {NULL, NULL},
};

static int dashboard_init(bnb_ctx_t *ctx, const bnb_host_api_t *h)
{
    host = h;
    return bnb_util_register(ctx, host, dashboard_routes, dashboard_subs);
}

static const bnb_cfg_item_t dashboard_config[] = {{NULL, 0, NULL, NULL}};

BNB_EXPORT const bnb_plugin_t bnb_plugin = {
    .abi_version = BNB_ABI_VERSION,
    .name = "dashboard",
    .version = "0.1.0",
    .config = dashboard_config,
    .init = dashboard_init,
};

/*
 * Storage front door: pick a compiled backend by name and forward to it.
 */
#include "bnb_build_config.h"
#include "bnb_storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const bnb_storage_ops_t *const backends[] = {
    &bnb_storage_sqlite,
#ifdef BNB_HAVE_MYSQL
    &bnb_storage_mysql,
#endif
#ifdef BNB_HAVE_MONGO
    &bnb_storage_mongo,
#endif
};

#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

const bnb_storage_ops_t *bnb_storage_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < NBACKENDS; i++) {
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    }
    return NULL;
}

int bnb_storage_open(const bnb_storage_config_t *cfg, bnb_store_t **out, char *errbuf, size_t errlen)
{
    const char *name;
    const bnb_storage_ops_t *ops;
    int rc;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!out) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "storage: no output store pointer");
        return BNB_EINVAL;
    }
    *out = NULL;
    if (!cfg) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "storage: no configuration");
        return BNB_EINVAL;
    }
    name = cfg->backend ? cfg->backend : "sqlite";
    ops = bnb_storage_find(name);
    if (!ops) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "unknown storage backend '%s' (known: sqlite, mysql, mongo)", name);
        return BNB_EINVAL;
    }
    rc = ops->open(cfg, out, errbuf, errlen);
    if (rc != 0) {
        *out = NULL;
        if (errbuf && errlen && errbuf[0] == '\0')
            snprintf(errbuf, errlen, "%s: cannot open store (error %d)", name, rc);
        return rc;
    }
    return 0;
}

void bnb_storage_close(bnb_store_t *st)
{
    if (st && st->ops && st->ops->close)
        st->ops->close(st);
}

void bnb_outbox_entries_free(bnb_outbox_entry_t *entries, size_t n)
{
    if (!entries)
        return;
    for (size_t i = 0; i < n; i++) {
        free(entries[i].event_id);
        free(entries[i].topic);
        free(entries[i].key);
        free(entries[i].payload);
    }
    free(entries);
}

/* ---- deferred durability ---------------------------------------------------- */

#define DEFER_MAX 16

static _Thread_local struct {
    int on;
    size_t n;
    struct {
        bnb_store_t *st;
        int (*flush)(bnb_store_t *st, uint64_t upto);
        uint64_t upto;
    } e[DEFER_MAX];
} defer;

void bnb_storage_defer_begin(void)
{
    defer.on = 1;
    defer.n = 0;
}

int bnb__storage_defer(bnb_store_t *st, int (*flush)(bnb_store_t *st, uint64_t upto), uint64_t upto)
{
    if (!defer.on || !st || !flush)
        return 0;
    for (size_t i = 0; i < defer.n; i++) {
        if (defer.e[i].st == st) {
            if (upto > defer.e[i].upto)
                defer.e[i].upto = upto;
            return 1;
        }
    }
    if (defer.n == DEFER_MAX)
        return 0;
    defer.e[defer.n].st = st;
    defer.e[defer.n].flush = flush;
    defer.e[defer.n].upto = upto;
    defer.n++;
    return 1;
}

int bnb_storage_defer_end(void)
{
    int rc = 0;
    /* still on while flushing: a flush may commit a backend's batch (sqlite)
     * and raise another store's `upto` through bnb__storage_defer */
    for (size_t i = 0; i < defer.n; i++) {
        int r = defer.e[i].flush(defer.e[i].st, defer.e[i].upto);
        if (r != 0 && rc == 0)
            rc = r;
    }
    defer.on = 0;
    defer.n = 0;
    return rc;
}

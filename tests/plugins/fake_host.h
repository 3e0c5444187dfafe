/*
 * A fake host for the plugins' unit tests (tests/plugins/<name>/test_*_plugin.c):
 * the whole bnb_host_api_t over one in-memory store with the storage
 * contract's commit semantics (expect_version, applied event ids, BNB_EALREADY
 * / BNB_EEXIST, an outbox of the events committed), recorded routes and
 * subscriptions, and fake requests whose answer is captured. The real host is
 * exercised by tests/e2e. Include after <cmocka.h>.
 */
#ifndef FAKE_HOST_H
#define FAKE_HOST_H

#include "bnb_plugin.h"

#include <stdint.h>

#define FAKE_MAX_DOCS   512
#define FAKE_MAX_COLLS  8
#define FAKE_MAX_ROUTES 16
#define FAKE_MAX_SUBS   8

struct bnb_ctx {
    int dummy;
};

/* One fake request: the test fills the inputs, the plugin's answer lands in
 * status / json / detail (exactly one answer, else the test fails). */
struct bnb_req {
    const char *method;
    const char *id;    /* path parameter {id} */
    const char *city;  /* query parameter city */
    const char *query; /* raw query string (req_query_string; req_query decodes it) */
    json_t *body;
    const char *user, *role;
    int status;
    json_t *json; /* respond_json's body (the test frees it) */
    char detail[512];
    int answered;
};

typedef struct fake_doc {
    char coll[32], id[80];
    json_t *body; /* NULL once deleted */
    int64_t version;
    json_t *applied; /* array of event ids */
    char key1[80], key2[128];
    json_t *claims; /* array of claim keys held (storage v2) */
} fake_doc_t;

struct bnb_store {
    fake_doc_t docs[FAKE_MAX_DOCS];
    int ndocs;
    json_t *events; /* outbox: [{type, topic, subject, data}] */
    int commits;    /* store_commit calls */
    int commits_without_event_id;
    int fail_eexist;       /* the next N commits (to fail_coll, or any when NULL) answer BNB_EEXIST */
    const char *fail_coll; /* see fail_eexist */
    int conflicts;         /* the next N commits to an existing document meet a concurrent writer */
    /* what a test may require of the plugin (checked on every call) */
    const char *only_coll; /* every store call names this collection (NULL: any) */
    int max_which;         /* store_list's key selector is at most this (0..2) */
    unsigned ops;          /* write ops allowed, bits (1u << op); 0: any */
    int no_events;         /* commits carry no events */
    /* storage v2 (ABI 1.1): the declared collections (pointers kept: pass
     * static definitions) and what the queries asked */
    const bnb_coll_def_t *colls[FAKE_MAX_COLLS];
    int ncolls;
    int queries;      /* store_query calls */
    size_t max_limit; /* the largest limit a query asked for */
    int query_rows;   /* rows returned by all queries */
    int gets;         /* store_get calls */
};

typedef struct fake_route {
    const char *method, *pattern;
    bnb_role_t who;
    bnb_route_fn fn;
} fake_route_t;

typedef struct fake_sub {
    const char *topic;
    bnb_event_fn fn;
} fake_sub_t;

typedef struct fake_host {
    struct bnb_store store;
    struct bnb_ctx ctx;
    fake_route_t routes[FAKE_MAX_ROUTES];
    int nroutes;
    fake_sub_t subs[FAKE_MAX_SUBS];
    int nsubs;
    char reject[256]; /* the last event_reject reason */
    void *userdata;
    const char *name; /* the plugin's name (host->name) */
    int uuid_counter;
} fake_host_t;

extern fake_host_t FH;
extern const bnb_host_api_t fake_host_api;

/* Empty every state of the fake; `name` is what host->name answers. */
void fake_host_reset(const char *name);
/* Free what the store holds. */
void fake_host_free(void);
/* The live document coll/id, or NULL. */
fake_doc_t *fake_find_doc(const char *coll, const char *id);
/* The handler registered for method + pattern (*who gets its role when not
 * NULL), or NULL. */
bnb_route_fn fake_route(const char *method, const char *pattern, bnb_role_t *who);
/* The handler subscribed to `topic`, or NULL. */
bnb_event_fn fake_handler(const char *topic);

#endif

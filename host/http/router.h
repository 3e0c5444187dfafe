/* Route table: METHOD + pattern with {param} segments (host-internal, pure). */
#ifndef BNB_ROUTER_H
#define BNB_ROUTER_H

#include <stddef.h>

#define BNB_ROUTE_MAX_PARAMS 8

typedef struct bnb_router bnb_router_t;

typedef struct bnb_route_match {
    void *route; /* the `data` given to add */
    const char *pattern;
    size_t nparams;
    const char *names[BNB_ROUTE_MAX_PARAMS];
    char *values[BNB_ROUTE_MAX_PARAMS]; /* decoded; freed by bnb__route_match_clear */
} bnb_route_match_t;

bnb_router_t *bnb__router_new(void);
void bnb__router_free(bnb_router_t *r);
/* 0; -EEXIST when method+pattern is taken; -EINVAL for a bad pattern. `owner`
 * groups routes so that one plugin's can be removed together. */
int bnb__router_add(bnb_router_t *r, const char *method, const char *pattern, void *owner, void *data);
void bnb__router_remove_owner(bnb_router_t *r, void *owner);
/* 200 and *m filled; 404 no such path; 405 path exists for other methods
 * (then `allow` gets "GET, POST"). `path` excludes the query string. */
int bnb__router_match(bnb_router_t *r, const char *method, const char *path, size_t pathlen, bnb_route_match_t *m,
                      char *allow, size_t allowlen);
void bnb__route_match_clear(bnb_route_match_t *m);
/* Every route of `owner` (or all when NULL): calls fn(method, pattern, data). */
void bnb__router_each(bnb_router_t *r, void *owner,
                      void (*fn)(const char *method, const char *pattern, void *data, void *ud), void *ud);
/* Percent-decode [s, s+len) into a new string; NULL on bad escapes or NUL.
 * `form`: '+' means a space (query strings); in paths it is a literal plus. */
char *bnb__url_decode(const char *s, size_t len, int form);

#endif

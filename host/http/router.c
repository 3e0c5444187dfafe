#include "router.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct route {
    char *method;
    char *pattern;
    size_t nsegs;
    char **segs; /* "{name}" kept with braces */
    void *owner;
    void *data;
} route_t;

struct bnb_router {
    route_t *routes;
    size_t n, cap;
};

bnb_router_t *bnb__router_new(void)
{
    return calloc(1, sizeof(bnb_router_t));
}

static void route_free(route_t *rt)
{
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->method);
    free(rt->pattern);
}

void bnb__router_free(bnb_router_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        route_free(&r->routes[i]);
    free(r->routes);
    free(r);
}

static int split(const char *path, size_t len, char ***out, size_t *n)
{
    size_t cap = 8, cnt = 0;
    char **segs = malloc(cap * sizeof(char *));
    if (segs == NULL)
        return -ENOMEM;
    size_t i = 0;
    if (len == 0 || path[0] != '/')
        goto bad;
    while (i < len) {
        i++; /* skip '/' */
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        if (i == start && i == len && cnt == 0)
            break; /* "/" */
        if (i == start)
            goto bad; /* empty segment or trailing slash */
        if (cnt == cap) {
            cap *= 2;
            char **ns = realloc(segs, cap * sizeof(char *));
            if (ns == NULL)
                goto bad;
            segs = ns;
        }
        segs[cnt] = strndup(path + start, i - start);
        if (segs[cnt] == NULL)
            goto bad;
        cnt++;
    }
    *out = segs;
    *n = cnt;
    return 0;
bad:
    for (size_t k = 0; k < cnt; k++)
        free(segs[k]);
    free(segs);
    return -EINVAL;
}

static int is_param(const char *seg)
{
    size_t l = strlen(seg);
    return l > 2 && seg[0] == '{' && seg[l - 1] == '}';
}

int bnb__router_add(bnb_router_t *r, const char *method, const char *pattern, void *owner, void *data)
{
    char **segs;
    size_t nsegs, nparams = 0;
    if (split(pattern, strlen(pattern), &segs, &nsegs) != 0)
        return -EINVAL;
    for (size_t i = 0; i < nsegs; i++)
        nparams += is_param(segs[i]);
    int rc = -EINVAL;
    if (nparams > BNB_ROUTE_MAX_PARAMS)
        goto fail;
    rc = -EEXIST;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->routes[i].method, method) == 0 && strcmp(r->routes[i].pattern, pattern) == 0)
            goto fail;
    rc = -ENOMEM;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        route_t *nr = realloc(r->routes, cap * sizeof(route_t));
        if (nr == NULL)
            goto fail;
        r->routes = nr;
        r->cap = cap;
    }
    route_t *rt = &r->routes[r->n];
    rt->method = strdup(method);
    rt->pattern = strdup(pattern);
    if (rt->method == NULL || rt->pattern == NULL) {
        free(rt->method);
        free(rt->pattern);
        goto fail;
    }
    rt->segs = segs;
    rt->nsegs = nsegs;
    rt->owner = owner;
    rt->data = data;
    r->n++;
    return 0;
fail:
    for (size_t i = 0; i < nsegs; i++)
        free(segs[i]);
    free(segs);
    return rc;
}

void bnb__router_remove_owner(bnb_router_t *r, void *owner)
{
    size_t w = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->routes[i].owner == owner)
            route_free(&r->routes[i]);
        else
            r->routes[w++] = r->routes[i];
    }
    r->n = w;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

char *bnb__url_decode(const char *s, size_t len, int form)
{
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int h, l;
            if (i + 2 >= len || (h = hexval(s[i + 1])) < 0 || (l = hexval(s[i + 2])) < 0)
                goto bad;
            char c = (char)(h * 16 + l);
            if (c == '\0')
                goto bad;
            out[o++] = c;
            i += 2;
        } else if (form && s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '\0') {
            goto bad; /* a raw NUL would cut the string short, as %00 would */
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

int bnb__router_match(bnb_router_t *r, const char *method, const char *path, size_t pathlen, bnb_route_match_t *m,
                      char *allow, size_t allowlen)
{
    memset(m, 0, sizeof(*m));
    if (allow && allowlen)
        allow[0] = '\0';
    char **segs;
    size_t nsegs;
    if (split(path, pathlen, &segs, &nsegs) != 0)
        return 404;
    int found_path = 0;
    route_t *hit = NULL;
    for (size_t i = 0; i < r->n; i++) {
        route_t *rt = &r->routes[i];
        if (rt->nsegs != nsegs)
            continue;
        size_t k;
        for (k = 0; k < nsegs; k++)
            if (!is_param(rt->segs[k]) && strcmp(rt->segs[k], segs[k]) != 0)
                break;
        if (k != nsegs)
            continue;
        /* literal matches beat parameters: prefer the route with more literals */
        if (strcmp(rt->method, method) == 0) {
            if (hit == NULL) {
                hit = rt;
            } else {
                size_t lh = 0, lr = 0;
                for (k = 0; k < nsegs; k++) {
                    lh += !is_param(hit->segs[k]);
                    lr += !is_param(rt->segs[k]);
                }
                if (lr > lh)
                    hit = rt;
            }
        }
        if (allow && allowlen && strstr(allow, rt->method) == NULL) {
            size_t l = strlen(allow);
            snprintf(allow + l, allowlen - l, "%s%s", l ? ", " : "", rt->method);
        }
        found_path = 1;
    }
    int status = hit ? 200 : found_path ? 405 : 404;
    if (hit != NULL) {
        m->route = hit->data;
        m->pattern = hit->pattern;
        for (size_t k = 0; k < nsegs; k++) {
            if (!is_param(hit->segs[k]))
                continue;
            char *v = bnb__url_decode(segs[k], strlen(segs[k]), 0);
            if (v == NULL) {
                bnb__route_match_clear(m);
                status = 404;
                break;
            }
            m->names[m->nparams] = hit->segs[k]; /* "{name}" */
            m->values[m->nparams++] = v;
        }
    }
    for (size_t k = 0; k < nsegs; k++)
        free(segs[k]);
    free(segs);
    return status;
}

void bnb__route_match_clear(bnb_route_match_t *m)
{
    for (size_t i = 0; i < m->nparams; i++)
        free(m->values[i]);
    m->nparams = 0;
}

void bnb__router_each(bnb_router_t *r, void *owner, void (*fn)(const char *, const char *, void *, void *), void *ud)
{
    for (size_t i = 0; i < r->n; i++)
        if (owner == NULL || r->routes[i].owner == owner)
            fn(r->routes[i].method, r->routes[i].pattern, r->routes[i].data, ud);
}

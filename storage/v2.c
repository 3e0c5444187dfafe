/*
 * Storage v2 helpers shared by the backends: see v2.h.
 */
#include "v2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ----------------------------------------------------------------- */

static bool coll_name_ok(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || s[n] == '_'))
            return false;
    return n > 0 && n <= BNB__COLL_NAME_MAX;
}

static bool field_name_ok(const char *s)
{
    size_t n = 0;
    if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9') ||
              s[n] == '_'))
            return false;
    return n <= BNB__FIELD_NAME_MAX;
}

uint32_t bnb__fnv1a(uint32_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static int def_field(const bnb_coll_def_t *d, const char *name)
{
    for (size_t i = 0; i < d->nfields; i++)
        if (strcmp(d->fields[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int check_one(const bnb_coll_def_t *d, char *errbuf, size_t errlen)
{
    if (!coll_name_ok(d->name)) {
        snprintf(errbuf, errlen, "collection name '%s' must be [a-z_]{1,%d}", d->name ? d->name : "(null)",
                 BNB__COLL_NAME_MAX);
        return BNB_EINVAL;
    }
    if ((d->nfields && !d->fields) || d->nfields > BNB__FIELDS_MAX || (d->nindexes && !d->indexes) ||
        d->nindexes > BNB__INDEXES_MAX) {
        snprintf(errbuf, errlen, "collection %s: fields/indexes missing or more than %d/%d", d->name, BNB__FIELDS_MAX,
                 BNB__INDEXES_MAX);
        return BNB_EINVAL;
    }
    for (size_t i = 0; i < d->nfields; i++) {
        const bnb_field_def_t *f = &d->fields[i];
        if (!field_name_ok(f->name)) {
            snprintf(errbuf, errlen, "collection %s: field name '%s' must be [a-zA-Z][a-zA-Z0-9_]{0,%d}", d->name,
                     f->name ? f->name : "(null)", BNB__FIELD_NAME_MAX - 1);
            return BNB_EINVAL;
        }
        if (f->type != BNB_FIELD_STR && f->type != BNB_FIELD_INT) {
            snprintf(errbuf, errlen, "collection %s: field %s has an unknown type %d", d->name, f->name, (int)f->type);
            return BNB_EINVAL;
        }
        if (def_field(d, f->name) != (int)i) {
            snprintf(errbuf, errlen, "collection %s: field %s declared twice", d->name, f->name);
            return BNB_EINVAL;
        }
    }
    for (size_t i = 0; i < d->nindexes; i++) {
        const bnb_index_def_t *x = &d->indexes[i];
        int nf = 0;
        while (nf <= BNB_INDEX_MAX_FIELDS && x->fields[nf])
            nf++;
        if (nf == 0 || nf > BNB_INDEX_MAX_FIELDS) {
            snprintf(errbuf, errlen, "collection %s: index %zu needs 1..%d fields", d->name, i, BNB_INDEX_MAX_FIELDS);
            return BNB_EINVAL;
        }
        for (int k = 0; k < nf; k++) {
            if (def_field(d, x->fields[k]) < 0) {
                snprintf(errbuf, errlen, "collection %s: index %zu names the undeclared field '%s'", d->name, i,
                         x->fields[k]);
                return BNB_EINVAL;
            }
            for (int j = 0; j < k; j++)
                if (strcmp(x->fields[j], x->fields[k]) == 0) {
                    snprintf(errbuf, errlen, "collection %s: index %zu lists field %s twice", d->name, i, x->fields[k]);
                    return BNB_EINVAL;
                }
        }
        if (x->unique != 0 && x->unique != 1) {
            snprintf(errbuf, errlen, "collection %s: index %zu: unique must be 0 or 1", d->name, i);
            return BNB_EINVAL;
        }
    }
    return 0;
}

int bnb__colls_validate(const bnb_coll_def_t *defs, size_t n, char *errbuf, size_t errlen)
{
    char dummy[1];
    if (!errbuf || !errlen) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    if (n && !defs) {
        snprintf(errbuf, errlen, "no collection definitions");
        return BNB_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = check_one(&defs[i], errbuf, errlen);
        if (rc)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(defs[i].name, defs[j].name) == 0) {
                snprintf(errbuf, errlen, "collection %s declared twice in one call", defs[i].name);
                return BNB_EINVAL;
            }
    }
    return 0;
}

/* ---- copies ---------------------------------------------------------------- */

void bnb__coll_free(bnb__coll_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nfields; i++)
        free(c->fields[i].name);
    free(c->fields);
    free(c->indexes);
    free(c->name);
    free(c);
}

int bnb__coll_field(const bnb__coll_t *c, const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < c->nfields; i++)
        if (strcmp(c->fields[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void index_name(bnb__coll_t *c, bnb__index_t *x)
{
    uint32_t h = 2166136261u;
    for (int k = 0; k < x->nf; k++) {
        const char *nm = c->fields[x->f[k]].name;
        h = bnb__fnv1a(h, nm, strlen(nm) + 1);
    }
    snprintf(x->name, sizeof x->name, "%s_%08x", x->unique ? "ux" : "ix", h);
}

static int find_index(const bnb__coll_t *c, const bnb__index_t *x)
{
    for (size_t i = 0; i < c->nindexes; i++)
        if (strcmp(c->indexes[i].name, x->name) == 0)
            return (int)i;
    return -1;
}

/* Append d's fields and indexes to c (fields first). */
static int coll_add(bnb__coll_t *c, const bnb_coll_def_t *d, char *errbuf, size_t errlen)
{
    bnb__field_t *nf = realloc(c->fields, (c->nfields + d->nfields + 1) * sizeof *nf);
    if (!nf)
        return BNB_ENOMEM;
    c->fields = nf;
    for (size_t i = 0; i < d->nfields; i++) {
        int at = bnb__coll_field(c, d->fields[i].name);
        if (at >= 0) {
            if (c->fields[at].type != d->fields[i].type) {
                snprintf(errbuf, errlen, "collection %s: field %s cannot change its type", c->name, d->fields[i].name);
                return BNB_EINVAL;
            }
            continue;
        }
        if (c->nfields >= BNB__FIELDS_MAX) {
            snprintf(errbuf, errlen, "collection %s: more than %d fields", c->name, BNB__FIELDS_MAX);
            return BNB_EINVAL;
        }
        c->fields[c->nfields].name = strdup(d->fields[i].name);
        c->fields[c->nfields].type = d->fields[i].type;
        if (!c->fields[c->nfields].name)
            return BNB_ENOMEM;
        c->nfields++;
    }
    bnb__index_t *ni = realloc(c->indexes, (c->nindexes + d->nindexes + 1) * sizeof *ni);
    if (!ni)
        return BNB_ENOMEM;
    c->indexes = ni;
    for (size_t i = 0; i < d->nindexes; i++) {
        bnb__index_t x = {0};
        for (x.nf = 0; x.nf < BNB_INDEX_MAX_FIELDS && d->indexes[i].fields[x.nf]; x.nf++)
            x.f[x.nf] = bnb__coll_field(c, d->indexes[i].fields[x.nf]);
        x.unique = d->indexes[i].unique;
        index_name(c, &x);
        if (find_index(c, &x) >= 0)
            continue;
        if (c->nindexes >= BNB__INDEXES_MAX) {
            snprintf(errbuf, errlen, "collection %s: more than %d indexes", c->name, BNB__INDEXES_MAX);
            return BNB_EINVAL;
        }
        c->indexes[c->nindexes++] = x;
    }
    return 0;
}

bnb__coll_t *bnb__coll_copy(const bnb_coll_def_t *d)
{
    bnb__coll_t *c = calloc(1, sizeof *c);
    char err[8];
    if (!c || !(c->name = strdup(d->name)) || coll_add(c, d, err, sizeof err) != 0) {
        bnb__coll_free(c);
        return NULL;
    }
    return c;
}

int bnb__coll_merge(const bnb__coll_t *old, const bnb_coll_def_t *d, bnb__coll_t **out, char *errbuf, size_t errlen)
{
    char dummy[1];
    if (!errbuf || !errlen) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    *out = NULL;
    bnb__coll_t *c = calloc(1, sizeof *c);
    if (!c || !(c->name = strdup(old->name)))
        goto nomem;
    c->fields = calloc(old->nfields + 1, sizeof *c->fields);
    c->indexes = calloc(old->nindexes + 1, sizeof *c->indexes);
    if (!c->fields || !c->indexes)
        goto nomem;
    for (size_t i = 0; i < old->nfields; i++) {
        if (!(c->fields[i].name = strdup(old->fields[i].name)))
            goto nomem;
        c->fields[i].type = old->fields[i].type;
        c->nfields++;
    }
    memcpy(c->indexes, old->indexes, old->nindexes * sizeof *c->indexes);
    c->nindexes = old->nindexes;
    int rc = coll_add(c, d, errbuf, errlen);
    if (rc) {
        bnb__coll_free(c);
        return rc;
    }
    *out = c;
    return 0;
nomem:
    bnb__coll_free(c);
    return BNB_ENOMEM;
}

int bnb__coll_check_body(const bnb__coll_t *c, const json_t *body)
{
    for (size_t i = 0; body && i < c->nfields; i++) {
        const json_t *v = json_object_get(body, c->fields[i].name);
        if (c->fields[i].type == BNB_FIELD_STR && json_is_string(v) && json_string_length(v) > BNB__STR_MAX)
            return BNB_EINVAL;
    }
    return 0;
}

void bnb__coll_value(const bnb__coll_t *c, size_t i, const json_t *body, bnb__fval_t *out)
{
    const json_t *v = body ? json_object_get(body, c->fields[i].name) : NULL;
    memset(out, 0, sizeof *out);
    out->null = true;
    if (!v)
        return;
    if (c->fields[i].type == BNB_FIELD_STR && json_is_string(v)) {
        out->s = json_string_value(v);
        out->null = false;
    } else if (c->fields[i].type == BNB_FIELD_INT && json_is_integer(v)) {
        out->n = (int64_t)json_integer_value(v);
        out->null = false;
    }
}

char *bnb__coll_dump(const bnb__coll_t *c)
{
    json_t *j = json_object(), *fs = json_array(), *xs = json_array();
    char *out = NULL;
    if (!j || !fs || !xs)
        goto out;
    for (size_t i = 0; i < c->nfields; i++)
        json_array_append_new(fs, json_pack("[s, i]", c->fields[i].name, (int)c->fields[i].type));
    for (size_t i = 0; i < c->nindexes; i++) {
        json_t *names = json_array();
        for (int k = 0; names && k < c->indexes[i].nf; k++)
            json_array_append_new(names, json_string(c->fields[c->indexes[i].f[k]].name));
        json_array_append_new(xs, json_pack("{s:o, s:b}", "fields", names, "unique", c->indexes[i].unique));
    }
    json_object_set(j, "fields", fs);
    json_object_set(j, "indexes", xs);
    out = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
out:
    json_decref(fs);
    json_decref(xs);
    json_decref(j);
    return out;
}

bnb__coll_t *bnb__coll_load(const char *name, const char *json_text)
{
    json_error_t jerr;
    json_t *j = json_loads(json_text, 0, &jerr);
    json_t *fs = json_object_get(j, "fields"), *xs = json_object_get(j, "indexes");
    bnb__coll_t *c = NULL;
    size_t nf = json_array_size(fs), nx = json_array_size(xs);
    bnb_field_def_t *fields = calloc(nf + 1, sizeof *fields);
    bnb_index_def_t *idx = calloc(nx + 1, sizeof *idx);
    if (!j || !json_is_array(fs) || !json_is_array(xs) || !fields || !idx)
        goto out;
    for (size_t i = 0; i < nf; i++) {
        json_t *f = json_array_get(fs, i);
        fields[i].name = json_string_value(json_array_get(f, 0));
        fields[i].type = (bnb_field_type_t)json_integer_value(json_array_get(f, 1));
    }
    for (size_t i = 0; i < nx; i++) {
        json_t *x = json_array_get(xs, i), *names = json_object_get(x, "fields");
        for (size_t k = 0; k < json_array_size(names) && k < BNB_INDEX_MAX_FIELDS; k++)
            idx[i].fields[k] = json_string_value(json_array_get(names, k));
        idx[i].unique = json_is_true(json_object_get(x, "unique"));
    }
    bnb_coll_def_t d = {.name = name, .fields = fields, .nfields = nf, .indexes = idx, .nindexes = nx};
    char err[200];
    if (bnb__colls_validate(&d, 1, err, sizeof err) == 0)
        c = bnb__coll_copy(&d);
out:
    free(fields);
    free(idx);
    json_decref(j);
    return c;
}

/* ---- registry -------------------------------------------------------------- */

void bnb__colls_init(bnb__colls_t *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
}

void bnb__colls_destroy(bnb__colls_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        bnb__coll_free(r->v[i]);
    for (size_t i = 0; i < r->nretired; i++)
        bnb__coll_free(r->retired[i]);
    free(r->v);
    free(r->retired);
    pthread_mutex_destroy(&r->mu);
    memset(r, 0, sizeof *r);
}

const bnb__coll_t *bnb__colls_get(bnb__colls_t *r, const char *name)
{
    const bnb__coll_t *c = NULL;
    if (!name)
        return NULL;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n && !c; i++)
        if (strcmp(r->v[i]->name, name) == 0)
            c = r->v[i];
    pthread_mutex_unlock(&r->mu);
    return c;
}

int bnb__colls_put(bnb__colls_t *r, bnb__coll_t *c)
{
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->v[i]->name, c->name) != 0)
            continue;
        bnb__coll_t **nr = realloc(r->retired, (r->nretired + 1) * sizeof *nr);
        if (!nr) {
            rc = BNB_ENOMEM;
            goto out;
        }
        r->retired = nr;
        r->retired[r->nretired++] = r->v[i];
        r->v[i] = c;
        goto out;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        bnb__coll_t **nv = realloc(r->v, cap * sizeof *nv);
        if (!nv) {
            rc = BNB_ENOMEM;
            goto out;
        }
        r->v = nv;
        r->cap = cap;
    }
    r->v[r->n++] = c;
out:
    pthread_mutex_unlock(&r->mu);
    if (rc)
        bnb__coll_free(c);
    return rc;
}

/* ---- base64url ------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *bnb__st_b64url_encode(const unsigned char *in, size_t n)
{
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

static int b64val(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

unsigned char *bnb__st_b64url_decode(const char *in, size_t *n)
{
    size_t len = strlen(in);
    if (len % 4 == 1)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 3), *o = out;
    if (!out)
        return NULL;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val(in[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) { /* non-canonical trailing bits */
        free(out);
        return NULL;
    }
    *o = '\0';
    *n = (size_t)(o - out);
    return out;
}

/* ---- queries and cursors ---------------------------------------------------- */

static uint32_t shape_of(const bnb__coll_t *c, const bnb_query_t *q)
{
    uint32_t h = 2166136261u, conds = 0;
    h = bnb__fnv1a(h, c->name, strlen(c->name) + 1);
    /* conditions in any order are the same shape */
    for (size_t i = 0; i < q->nconds; i++) {
        uint32_t one = bnb__fnv1a(2166136261u, q->conds[i].field, strlen(q->conds[i].field) + 1);
        unsigned char op = (unsigned char)q->conds[i].op;
        conds += bnb__fnv1a(one, &op, 1);
    }
    h = bnb__fnv1a(h, &conds, sizeof conds);
    if (q->order_by)
        h = bnb__fnv1a(h, q->order_by, strlen(q->order_by) + 1);
    unsigned char d = q->descending ? 1 : 0;
    return bnb__fnv1a(h, &d, 1);
}

void bnb__plan_free(bnb__plan_t *p)
{
    free(p->cur_id);
    free(p->cur_s);
    p->cur_id = p->cur_s = NULL;
}

static int cursor_decode(bnb__plan_t *p, const char *cursor)
{
    size_t n = 0;
    unsigned char *raw = bnb__st_b64url_decode(cursor, &n);
    if (!raw)
        return BNB_EINVAL;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, &jerr);
    free(raw);
    int rc = BNB_EINVAL;
    char want[16];
    snprintf(want, sizeof want, "%08x", p->shape);
    if (!json_is_array(j) || json_array_size(j) != 3 || !json_is_string(json_array_get(j, 0)) ||
        strcmp(json_string_value(json_array_get(j, 0)), want) != 0 || !json_is_string(json_array_get(j, 2)))
        goto out;
    const char *id = json_string_value(json_array_get(j, 2));
    const json_t *o = json_array_get(j, 1);
    if (!id[0] || strlen(id) > BNB__ID_MAX)
        goto out;
    memset(&p->cur_ord, 0, sizeof p->cur_ord);
    p->cur_ord.null = true;
    if (p->order < 0) {
        if (!json_is_null(o))
            goto out;
    } else if (p->coll->fields[p->order].type == BNB_FIELD_STR) {
        if (!json_is_string(o))
            goto out;
        if (!(p->cur_s = strdup(json_string_value(o)))) {
            rc = BNB_ENOMEM;
            goto out;
        }
        p->cur_ord.s = p->cur_s;
        p->cur_ord.null = false;
    } else {
        if (!json_is_integer(o))
            goto out;
        p->cur_ord.n = (int64_t)json_integer_value(o);
        p->cur_ord.null = false;
    }
    if (!(p->cur_id = strdup(id))) {
        rc = BNB_ENOMEM;
        goto out;
    }
    p->has_cursor = true;
    rc = 0;
out:
    json_decref(j);
    return rc;
}

int bnb__plan_make(const bnb__coll_t *coll, const bnb_query_t *q, bnb__plan_t *p)
{
    memset(p, 0, sizeof *p);
    p->order = -1;
    if (!coll || !q || q->limit < 1 || q->limit > BNB__QUERY_LIMIT_MAX || q->nconds > BNB__CONDS_MAX ||
        (q->nconds && !q->conds))
        return BNB_EINVAL;
    p->coll = coll;
    p->q = q;
    for (size_t i = 0; i < q->nconds; i++) {
        const bnb_cond_t *c = &q->conds[i];
        int f = bnb__coll_field(coll, c->field);
        if (f < 0 || c->op < BNB_Q_EQ || c->op > BNB_Q_GE)
            return BNB_EINVAL;
        if ((coll->fields[f].type == BNB_FIELD_STR) != (c->str != NULL))
            return BNB_EINVAL; /* a string for a string field, a number otherwise */
        p->cf[i] = f;
    }
    if (q->order_by && (p->order = bnb__coll_field(coll, q->order_by)) < 0)
        return BNB_EINVAL;
    p->shape = shape_of(coll, q);
    if (q->cursor) {
        int rc = cursor_decode(p, q->cursor);
        if (rc) {
            bnb__plan_free(p);
            return rc;
        }
    }
    return 0;
}

int bnb__plan_index(const bnb__plan_t *p)
{
    bool eq[BNB__FIELDS_MAX] = {0};
    int neq = 0;
    for (size_t i = 0; i < p->q->nconds; i++)
        if (p->q->conds[i].op == BNB_Q_EQ && !eq[p->cf[i]]) {
            eq[p->cf[i]] = true;
            neq++;
        }
    int best = -1;
    for (size_t k = 0; k < p->coll->nindexes; k++) {
        const bnb__index_t *x = &p->coll->indexes[k];
        int j = 0;
        while (j < x->nf && eq[x->f[j]])
            j++;
        if (j != neq)
            continue;
        if (p->order >= 0 ? (j < x->nf && x->f[j] == p->order) : j == x->nf) {
            if (best < 0 || x->nf < p->coll->indexes[best].nf)
                best = (int)k;
        }
    }
    return best;
}

bool bnb__plan_implied(const bnb__plan_t *p, size_t i)
{
    const bnb_cond_t *c = &p->q->conds[i];
    if (!p->has_cursor || p->order < 0 || p->cf[i] != p->order || p->cur_ord.null)
        return false;
    int cmp; /* cursor value vs the condition's */
    if (p->coll->fields[p->order].type == BNB_FIELD_STR)
        cmp = strcmp(p->cur_ord.s, c->str);
    else
        cmp = p->cur_ord.n < c->num ? -1 : p->cur_ord.n > c->num;
    if (!p->q->descending)
        return (c->op == BNB_Q_GT && cmp > 0) || (c->op == BNB_Q_GE && cmp >= 0);
    return (c->op == BNB_Q_LT && cmp < 0) || (c->op == BNB_Q_LE && cmp <= 0);
}

char *bnb__cursor_make(const bnb__plan_t *p, const bnb__fval_t *ord, const char *id)
{
    char shape[16];
    snprintf(shape, sizeof shape, "%08x", p->shape);
    json_t *o;
    if (p->order < 0 || !ord || ord->null)
        o = json_null();
    else if (p->coll->fields[p->order].type == BNB_FIELD_STR)
        o = json_string(ord->s);
    else
        o = json_integer((json_int_t)ord->n);
    json_t *j = json_pack("[s, o, s]", shape, o, id);
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt)
        return NULL;
    char *out = bnb__st_b64url_encode((const unsigned char *)txt, strlen(txt));
    free(txt);
    return out;
}

/* ---- claims and commits ----------------------------------------------------- */

char *bnb__cursor_after(const bnb__plan_t *p, const json_t *item)
{
    bnb__fval_t ord = {.null = true};
    if (p->order >= 0)
        bnb__coll_value(p->coll, (size_t)p->order, json_object_get(item, "body"), &ord);
    return bnb__cursor_make(p, &ord, json_string_value(json_object_get(item, "id")));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int bnb__claims_norm(const char *const *claims, size_t n, const char ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    if (!claims || n > BNB__CLAIMS_MAX)
        return BNB_EINVAL;
    const char **v = malloc(n * sizeof *v);
    if (!v)
        return BNB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t l = claims[i] ? strlen(claims[i]) : 0;
        if (l == 0 || l > BNB__CLAIM_MAX) {
            free(v);
            return BNB_EINVAL;
        }
        v[i] = claims[i];
    }
    qsort(v, n, sizeof *v, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
            v[k++] = v[i];
    *out = v;
    *nout = k;
    return 0;
}

bool bnb__claims_has(const char *const *sorted, size_t n, const char *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(sorted[mid], key);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

int bnb__commit_check(const bnb_commit_t *c, const bnb_outbox_new_t *events, size_t nevents)
{
    if (!c || !c->coll || !c->id || !c->id[0] || (nevents && !events) || c->expect_version < -1)
        return BNB_EINVAL;
    if (c->op != BNB_WRITE_PUT && c->op != BNB_WRITE_DELETE && c->op != BNB_WRITE_TOUCH)
        return BNB_EINVAL;
    if (c->op == BNB_WRITE_PUT && !json_is_object(c->body))
        return BNB_EINVAL;
    if (c->set_claims && c->nclaims && !c->claims)
        return BNB_EINVAL;
    for (size_t i = 0; i < nevents; i++) {
        if (!events[i].event_id || !events[i].topic || !events[i].payload)
            return BNB_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(events[i].event_id, events[j].event_id) == 0)
                return BNB_EINVAL;
    }
    return 0;
}

void bnb__commit_from_write(bnb_commit_t *c, const bnb_write_t *w, const char *applied_event_id)
{
    *c = (bnb_commit_t){.op = w->op,
                        .coll = w->coll,
                        .id = w->id,
                        .expect_version = w->expect_version,
                        .body = w->body,
                        .applied_event_id = applied_event_id};
}

int bnb__commit_prepare(const bnb__coll_t *dc, const bnb_commit_t *c, const char ***claims, size_t *nclaims)
{
    *claims = NULL;
    *nclaims = 0;
    if (dc && (strlen(c->id) > BNB__ID_MAX || (c->op == BNB_WRITE_PUT && bnb__coll_check_body(dc, c->body) != 0)))
        return BNB_EINVAL;
    if (c->set_claims && c->op != BNB_WRITE_DELETE)
        return bnb__claims_norm(c->claims, c->nclaims, claims, nclaims);
    return 0;
}

int bnb__define_merge(bnb__colls_t *r, const bnb_coll_def_t *defs, size_t n, bnb__coll_t ***merged, bool **fresh,
                      char *errbuf, size_t errlen)
{
    int rc = bnb__colls_validate(defs, n, errbuf, errlen);
    *merged = NULL;
    if (fresh)
        *fresh = NULL;
    if (rc)
        return rc;
    *merged = calloc(n ? n : 1, sizeof **merged);
    if (fresh && !(*fresh = calloc(n ? n : 1, sizeof **fresh)))
        rc = BNB_ENOMEM;
    if (!*merged)
        rc = BNB_ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        const bnb__coll_t *old = bnb__colls_get(r, defs[i].name);
        if (fresh)
            (*fresh)[i] = old == NULL;
        if (old)
            rc = bnb__coll_merge(old, &defs[i], &(*merged)[i], errbuf, errlen);
        else if (!((*merged)[i] = bnb__coll_copy(&defs[i])))
            rc = BNB_ENOMEM;
    }
    return rc;
}

int bnb__define_register(bnb__colls_t *r, bnb__coll_t **merged, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = bnb__colls_put(r, merged[i]);
        merged[i] = NULL;
    }
    return rc;
}

void bnb__define_free(bnb__coll_t **merged, bool *fresh, size_t n)
{
    for (size_t i = 0; merged && i < n; i++)
        bnb__coll_free(merged[i]);
    free(merged);
    free(fresh);
}

/* ---- get_many -------------------------------------------------------------- */

int bnb__get_many_check(const char *coll, const char *const *ids, size_t n, json_t **items)
{
    if (items)
        *items = NULL;
    if (!coll || !ids || !items || n == 0 || n > BNB__GET_MANY_MAX)
        return BNB_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!ids[i])
            return BNB_EINVAL;
    return 0;
}

json_t *bnb__get_many_item(const char *id, int64_t version, json_t *body)
{
    if (!body)
        return NULL;
    return json_pack("{s:s, s:I, s:o}", "id", id, "version", (json_int_t)version, "body", body);
}

int bnb__get_many_order(const json_t *found, const char *const *ids, size_t n, json_t *arr)
{
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_object_get(found, ids[i]);
        json_t *e = !it ? json_null() : it->refcount > 1 ? json_deep_copy(it) : json_incref(it);
        if (!e || json_array_append_new(arr, e) != 0)
            return BNB_ENOMEM;
    }
    return 0;
}

/*
 * Storage v2 helpers shared by the backends (internal to storage/, not part of
 * any contract): validated copies of collection definitions, a registry of the
 * collections a store knows, declared-field extraction from a body, query
 * checking, the opaque keyset cursor, claim-set normalisation.
 *
 * Cursor: base64url (no padding) of the JSON array [shape, order value, id]
 * where shape is 8 hex digits hashing the query's shape (collection, each
 * condition's field and operator, order field, direction; not the values, not
 * the limit). A cursor that does not decode, or whose shape or order-value
 * type differs from the query's, is BNB_EINVAL.
 */
#ifndef BNB_STORAGE_V2_H
#define BNB_STORAGE_V2_H

#include "bnb_storage.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BNB__COLL_NAME_MAX   32 /* keeps "<store>_c_<coll>" within MySQL's 64 */
#define BNB__FIELD_NAME_MAX  48
#define BNB__FIELDS_MAX      32
#define BNB__INDEXES_MAX     16
#define BNB__CONDS_MAX       16
#define BNB__QUERY_LIMIT_MAX 1000
#define BNB__CLAIM_MAX       255 /* bytes of one claim key */
#define BNB__CLAIMS_MAX      512 /* claims of one document */
#define BNB__ID_MAX          255 /* bytes of a document id in a declared collection */
#define BNB__STR_MAX         255 /* bytes of a declared string field's value (it is indexed) */

typedef struct bnb__field {
    char *name;
    bnb_field_type_t type;
} bnb__field_t;

typedef struct bnb__index {
    int nf;
    int f[BNB_INDEX_MAX_FIELDS]; /* positions in bnb__coll_t.fields */
    int unique;
    char name[24]; /* "ix_<8 hex>" or "ux_<8 hex>": stable for the field list */
} bnb__index_t;

/* A validated deep copy of a bnb_coll_def_t. */
typedef struct bnb__coll {
    char *name;
    size_t nfields;
    bnb__field_t *fields;
    size_t nindexes;
    bnb__index_t *indexes;
} bnb__coll_t;

/* The value of one declared field of a body: NULL, or a string, or an int. */
typedef struct bnb__fval {
    bool null;
    const char *s; /* borrowed from the body (STR) */
    int64_t n;     /* INT */
} bnb__fval_t;

/* Check every definition (names, types, index fields declared, no
 * duplicates). errbuf gets a one-line reason. */
int bnb__colls_validate(const bnb_coll_def_t *defs, size_t n, char *errbuf, size_t errlen);
/* A copy of one (validated) definition; NULL on ENOMEM. */
bnb__coll_t *bnb__coll_copy(const bnb_coll_def_t *d);
void bnb__coll_free(bnb__coll_t *c);
/* `old` extended by `d` (its fields and indexes added): a new copy in *out.
 * BNB_EINVAL (errbuf says why) when a field changes its type. */
int bnb__coll_merge(const bnb__coll_t *old, const bnb_coll_def_t *d, bnb__coll_t **out, char *errbuf, size_t errlen);
int bnb__coll_field(const bnb__coll_t *c, const char *name); /* position or -1 */
/* The definition as compact JSON text (malloc'ed) and back: backends keep it
 * in their store so that a reopened store knows its collections before the
 * plugin declares them again. */
char *bnb__coll_dump(const bnb__coll_t *c);
bnb__coll_t *bnb__coll_load(const char *name, const char *json_text);
/* BNB_EINVAL when a declared string field of `body` is longer than
 * BNB__STR_MAX bytes (every backend refuses it: it could not be indexed). */
int bnb__coll_check_body(const bnb__coll_t *c, const json_t *body);
/* Declared field i of `body` (an object, or NULL for none). */
void bnb__coll_value(const bnb__coll_t *c, size_t i, const json_t *body, bnb__fval_t *out);

/* The collections a store knows. Entries stay valid until the registry is
 * destroyed (a redefinition retires the old copy instead of freeing it). */
typedef struct bnb__colls {
    pthread_mutex_t mu;
    size_t n, cap;
    bnb__coll_t **v;
    size_t nretired;
    bnb__coll_t **retired;
} bnb__colls_t;

void bnb__colls_init(bnb__colls_t *r);
void bnb__colls_destroy(bnb__colls_t *r);
const bnb__coll_t *bnb__colls_get(bnb__colls_t *r, const char *name);
/* Insert or replace (by name); takes ownership of c. */
int bnb__colls_put(bnb__colls_t *r, bnb__coll_t *c);

/* A checked query. */
typedef struct bnb__plan {
    const bnb__coll_t *coll;
    const bnb_query_t *q;
    int cf[BNB__CONDS_MAX]; /* field position of each condition */
    int order;              /* field position of order_by, -1 = by id */
    uint32_t shape;
    bool has_cursor;
    bnb__fval_t cur_ord; /* order value of the cursor (null when by id) */
    char *cur_id;        /* id of the cursor (owned) */
    char *cur_s;         /* string storage of cur_ord (owned) */
} bnb__plan_t;

/* Validate q against coll (NULL: not declared => BNB_EINVAL) and decode its
 * cursor. On success the caller frees with bnb__plan_free. */
int bnb__plan_make(const bnb__coll_t *coll, const bnb_query_t *q, bnb__plan_t *p);
void bnb__plan_free(bnb__plan_t *p);
/* Condition i is a bound on the order field that the cursor already implies
 * (a lower bound when ascending, an upper one when descending, and the
 * cursor's order value satisfies it): leave it out of the statement, so that
 * the index range starts at the cursor and a later page costs what the first
 * one does (a database uses one lower bound of a range, not the tighter of two). */
bool bnb__plan_implied(const bnb__plan_t *p, size_t i);
/* The declared index that serves the query best: its leading fields are
 * the equality fields, then the order field (ordered by id: nothing after
 * them, the id follows in every index). -1 when none fits. */
int bnb__plan_index(const bnb__plan_t *p);
/* The cursor after a row whose order value is `ord` (ignored when by id) and
 * whose id is `id`. malloc'ed, NULL on ENOMEM. */
char *bnb__cursor_make(const bnb__plan_t *p, const bnb__fval_t *ord, const char *id);
/* The cursor after `item`, the last row of a page ({"id", "body", ...}). */
char *bnb__cursor_after(const bnb__plan_t *p, const json_t *item);

/* Claims of a commit: checked (non-empty, <= BNB__CLAIM_MAX bytes, at most
 * BNB__CLAIMS_MAX), de-duplicated and sorted into a malloc'ed array of borrowed
 * pointers (*out, free() it; NULL when n is 0). */
int bnb__claims_norm(const char *const *claims, size_t n, const char ***out, size_t *nout);
bool bnb__claims_has(const char *const *sorted, size_t n, const char *key);

/* Common argument checks of a commit (op, ids, version, body, events). */
int bnb__commit_check(const bnb_commit_t *c, const bnb_outbox_new_t *events, size_t nevents);
/* The ABI 1.0 commit `w` as a commit2 without claims (*c borrows w's strings;
 * the backend then also sets key1/key2 from w). */
void bnb__commit_from_write(bnb_commit_t *c, const bnb_write_t *w, const char *applied_event_id);
/* What a commit to the declared collection dc (NULL: undeclared) must pass
 * before the database is asked: the id at most BNB__ID_MAX bytes and a PUT's
 * body acceptable (bnb__coll_check_body), else BNB_EINVAL; then its claims
 * normalised into *claims / *nclaims (bnb__claims_norm: only with set_claims,
 * none for a DELETE). The caller free()s *claims, whatever is returned. */
int bnb__commit_prepare(const bnb__coll_t *dc, const bnb_commit_t *c, const char ***claims, size_t *nclaims);

/* define() around the backend's own DDL, under its define lock:
 * bnb__define_merge checks the definitions (bnb__colls_validate), then gives
 * each merged with the one the registry knows, or a copy when the registry
 * has none: *merged, n entries, and *fresh (optional): whether each was new.
 * BNB_EINVAL when a definition is wrong or a field changes its type (errbuf
 * says why: the backend logs it), BNB_ENOMEM. bnb__define_register then moves
 * them into the registry (each entry moved becomes NULL); bnb__define_free
 * frees what is left, whatever happened. */
int bnb__define_merge(bnb__colls_t *r, const bnb_coll_def_t *defs, size_t n, bnb__coll_t ***merged, bool **fresh,
                      char *errbuf, size_t errlen);
int bnb__define_register(bnb__colls_t *r, bnb__coll_t **merged, size_t n);
void bnb__define_free(bnb__coll_t **merged, bool *fresh, size_t n);

/* base64url without padding; decode returns malloc'ed bytes + NUL, or NULL. */
/* get_many (ABI 1.4 store_get_many): the checks every backend makes (coll
 * and every id set, n 1..BNB__GET_MANY_MAX; BNB_EINVAL otherwise), and one
 * element of the answer ({"id","version","body"}, steals body). */
#define BNB__GET_MANY_MAX 1000
int bnb__get_many_check(const char *coll, const char *const *ids, size_t n, json_t **items);
json_t *bnb__get_many_item(const char *id, int64_t version, json_t *body);
/* Append to arr, in the order of ids, found's element for each id (null when
 * absent; an id listed twice gets a copy of its own). 0 or BNB_ENOMEM. */
int bnb__get_many_order(const json_t *found, const char *const *ids, size_t n, json_t *arr);

char *bnb__st_b64url_encode(const unsigned char *in, size_t n);
unsigned char *bnb__st_b64url_decode(const char *in, size_t *n);

/* "<a>/<b>" style FNV-1a 32 of a byte string, chained through h. */
uint32_t bnb__fnv1a(uint32_t h, const void *data, size_t n);

#endif

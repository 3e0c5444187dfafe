/* bench/idle.sh's seeder for MongoDB (FerretDB): N copies of the first
 * document of the collection whose name ends with SUFFIX, inserted 1,000 at
 * a time (insert_many: minutes instead of the hours that N commits through
 * the API would take). Every string (_id and nested ones too) gets "-s<i>"
 * appended, so unique indexes stay satisfied. Not part of the build: the
 * script compiles it (pkg-config libmongoc-1.0).
 *   seed_copies MONGO_URL DB SUFFIX N
 *   seed_copies MONGO_URL DB --drop 0     drops the database */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int copy_doc(const bson_t *src, bson_t *dst, long i)
{
    bson_iter_t it;
    char buf[1024];
    if (!bson_iter_init(&it, src))
        return -1;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (BSON_ITER_HOLDS_UTF8(&it)) {
            uint32_t len = 0;
            const char *v = bson_iter_utf8(&it, &len);
            snprintf(buf, sizeof buf, "%.*s-s%ld", (int)(len < 900 ? len : 900), v, i);
            BSON_APPEND_UTF8(dst, k, buf);
        } else if (BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
            /* unique indexes may be on nested fields ("f.reservationId") */
            uint32_t len = 0;
            const uint8_t *data = NULL;
            bson_t sub, out;
            int arr = BSON_ITER_HOLDS_ARRAY(&it);
            if (arr)
                bson_iter_array(&it, &len, &data);
            else
                bson_iter_document(&it, &len, &data);
            if (!bson_init_static(&sub, data, len))
                return -1;
            if (arr ? !bson_append_array_begin(dst, k, -1, &out) : !bson_append_document_begin(dst, k, -1, &out))
                return -1;
            int rc = copy_doc(&sub, &out, i);
            if (arr ? !bson_append_array_end(dst, &out) : !bson_append_document_end(dst, &out))
                return -1;
            if (rc != 0)
                return rc;
        } else if (!bson_append_iter(dst, k, -1, &it)) {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: seed_copies MONGO_URL DB SUFFIX N\n");
        return 2;
    }
    long n = atol(argv[4]);
    int rc = 1;
    bson_error_t err;
    mongoc_init();
    mongoc_log_set_handler(NULL, NULL); /* FerretDB has no endSessions: a warning at exit */
    mongoc_client_t *cl = mongoc_client_new(argv[1]);
    mongoc_database_t *db = cl ? mongoc_client_get_database(cl, argv[2]) : NULL;
    if (db && strcmp(argv[3], "--drop") == 0) {
        rc = mongoc_database_drop(db, &err) ? 0 : 1;
        mongoc_database_destroy(db);
        mongoc_client_destroy(cl);
        mongoc_cleanup();
        return rc;
    }
    char **names = db ? mongoc_database_get_collection_names_with_opts(db, NULL, &err) : NULL;
    const char *coll = NULL;
    size_t sl = strlen(argv[3]);
    for (size_t i = 0; names && names[i]; i++) {
        size_t l = strlen(names[i]);
        if (l >= sl && strcmp(names[i] + l - sl, argv[3]) == 0)
            coll = names[i];
    }
    if (!coll) {
        fprintf(stderr, "seed_copies: no collection ending with %s in %s\n", argv[3], argv[2]);
        goto out;
    }
    mongoc_collection_t *c = mongoc_database_get_collection(db, coll);
    bson_t q = BSON_INITIALIZER;
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &q, NULL, NULL);
    const bson_t *first = NULL;
    bson_t *tmpl = NULL;
    if (mongoc_cursor_next(cur, &first))
        tmpl = bson_copy(first);
    mongoc_cursor_destroy(cur);
    if (!tmpl) {
        fprintf(stderr, "seed_copies: %s is empty\n", coll);
        mongoc_collection_destroy(c);
        goto out;
    }
    enum { BATCH = 1000 };
    bson_t *docs[BATCH];
    rc = 0;
    for (long done = 0; done < n && rc == 0;) {
        size_t k = 0;
        for (; k < BATCH && done + (long)k < n; k++) {
            docs[k] = bson_new();
            if (copy_doc(tmpl, docs[k], done + (long)k) != 0)
                rc = 1;
        }
        if (rc == 0 && !mongoc_collection_insert_many(c, (const bson_t **)docs, k, NULL, NULL, &err)) {
            fprintf(stderr, "seed_copies: insert_many: %s\n", err.message);
            rc = 1;
        }
        for (size_t j = 0; j < k; j++)
            bson_destroy(docs[j]);
        done += (long)k;
    }
    if (rc == 0)
        printf("%ld copies in %s.%s\n", n, argv[2], coll);
    bson_destroy(tmpl);
    mongoc_collection_destroy(c);
out:
    bson_strfreev(names);
    if (db)
        mongoc_database_destroy(db);
    if (cl)
        mongoc_client_destroy(cl);
    mongoc_cleanup();
    return rc;
}

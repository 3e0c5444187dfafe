/* The part of klib's khash.h (version 0.2.8, MIT) that h2o 2.2.5's
 * <h2o/http2_internal.h> needs: Debian's libh2o-dev ships that header but not
 * the khash.h it includes (h2o bundles klib in deps/). Only the table layout
 * and read-only look-ups are here, exactly as klib 0.2.8 defines them, because
 * they must match the tables libh2o was built with; nothing here inserts,
 * resizes or frees (h2o does that). Used by host/http/http.c alone. */
#ifndef BNB_H2O225_KHASH_H
#define BNB_H2O225_KHASH_H

#include <limits.h>
#include <stdint.h>

typedef uint32_t khint32_t;
typedef uint64_t khint64_t;
typedef khint32_t khint_t;
typedef khint_t khiter_t;

#define __ac_isempty(flag, i)  ((flag[i >> 4] >> ((i & 0xfU) << 1)) & 2)
#define __ac_isdel(flag, i)    ((flag[i >> 4] >> ((i & 0xfU) << 1)) & 1)
#define __ac_iseither(flag, i) ((flag[i >> 4] >> ((i & 0xfU) << 1)) & 3)

#define kh_int64_hash_func(key)   (khint32_t)((key) >> 33 ^ (key) ^ (key) << 11)
#define kh_int64_hash_equal(a, b) ((a) == (b))

#define KHASH_MAP_INIT_INT64(name, khval_t)                                                                            \
    typedef struct kh_##name##_s {                                                                                     \
        khint_t n_buckets, size, n_occupied, upper_bound;                                                              \
        khint32_t *flags;                                                                                              \
        khint64_t *keys;                                                                                               \
        khval_t *vals;                                                                                                 \
    } kh_##name##_t;                                                                                                   \
    static inline __attribute__((unused)) khint_t kh_get_##name(const kh_##name##_t *h, khint64_t key)                 \
    {                                                                                                                  \
        if (h->n_buckets) {                                                                                            \
            khint_t k, i, last, mask, step = 0;                                                                        \
            mask = h->n_buckets - 1;                                                                                   \
            k = kh_int64_hash_func(key);                                                                               \
            i = k & mask;                                                                                              \
            last = i;                                                                                                  \
            while (!__ac_isempty(h->flags, i) && (__ac_isdel(h->flags, i) || !kh_int64_hash_equal(h->keys[i], key))) { \
                i = (i + (++step)) & mask;                                                                             \
                if (i == last)                                                                                         \
                    return h->n_buckets;                                                                               \
            }                                                                                                          \
            return __ac_iseither(h->flags, i) ? h->n_buckets : i;                                                      \
        }                                                                                                              \
        return 0;                                                                                                      \
    }

#define khash_t(name)      kh_##name##_t
#define kh_get(name, h, k) kh_get_##name(h, k)
#define kh_exist(h, x)     (!__ac_iseither((h)->flags, (x)))
#define kh_val(h, x)       ((h)->vals[x])
#define kh_begin(h)        (khint_t)(0)
#define kh_end(h)          ((h)->n_buckets)

#define kh_foreach_value(h, vvar, code)                                                                                \
    {                                                                                                                  \
        khint_t __i;                                                                                                   \
        for (__i = kh_begin(h); __i != kh_end(h); ++__i) {                                                             \
            if (!kh_exist(h, __i))                                                                                     \
                continue;                                                                                              \
            (vvar) = kh_val(h, __i);                                                                                   \
            code;                                                                                                      \
        }                                                                                                              \
    }

#endif

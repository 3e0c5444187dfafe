/* Helpers shared by the storage tests (test_contract.c, test_sqlite.c).
 * Include after <cmocka.h>. */
#ifndef STORAGE_TEST_H
#define STORAGE_TEST_H

#include "bnb_storage.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static inline const char *rc_name(int rc)
{
    switch (rc) {
    case BNB_OK:
        return "OK";
    case BNB_EPERM:
        return "EPERM";
    case BNB_ENOENT:
        return "ENOENT";
    case BNB_EIO:
        return "EIO";
    case BNB_EAGAIN:
        return "EAGAIN";
    case BNB_ENOMEM:
        return "ENOMEM";
    case BNB_EEXIST:
        return "EEXIST";
    case BNB_EINVAL:
        return "EINVAL";
    case BNB_EALREADY:
        return "EALREADY";
    case BNB_ETIMEDOUT:
        return "ETIMEDOUT";
    case BNB_ETAKEN:
        return "ETAKEN";
    default:
        return "?";
    }
}

/* Like assert_int_equal for BNB return codes, with readable names. */
#define assert_rc(expr, want)                                                                                          \
    do {                                                                                                               \
        int rc_ = (expr), want_ = (want);                                                                              \
        if (rc_ != want_)                                                                                              \
            fail_msg("%s returned %d (%s), expected %d (%s)", #expr, rc_, rc_name(rc_), want_, rc_name(want_));        \
    } while (0)

/* Remove `dir` and the files directly in it. */
static inline void rm_tree(const char *dir)
{
    DIR *dh = opendir(dir);
    struct dirent *de;
    char p[PATH_MAX + 300];

    if (!dh)
        return;
    while ((de = readdir(dh))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(dh);
    rmdir(dir);
}

#endif

/*
 * The Rust notification plugin declares bnb_plugin.h by hand
 * (plugins/notification/src/ffi.rs). Its exported bnb_notification_ffi_layout
 * reports, for each declared struct, its size then the offset of each member
 * in declaration order (and finally BNB_ABI_VERSION); this test computes the
 * same numbers from the header with the C compiler and compares them one by
 * one, naming the first member that differs. A member added to the header
 * (or reordered) without the same change in ffi.rs fails here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#define SO BNB_BUILD_ROOT "/plugins/notification/notification.so"

typedef struct item {
    const char *what;
    size_t value;
} item_t;

#define SZ(T)                                                                                                          \
    {                                                                                                                  \
#T, sizeof(T)                                                                                                  \
    }
#define OFF(T, m)                                                                                                      \
    {                                                                                                                  \
#T "." #m, offsetof(T, m)                                                                                      \
    }

static const item_t want[] = {
    SZ(json_t),
    OFF(json_t, type),
    OFF(json_t, refcount),
    SZ(bnb_cfg_item_t),
    OFF(bnb_cfg_item_t, name),
    OFF(bnb_cfg_item_t, type),
    OFF(bnb_cfg_item_t, default_value),
    OFF(bnb_cfg_item_t, help),
    SZ(bnb_write_t),
    OFF(bnb_write_t, op),
    OFF(bnb_write_t, coll),
    OFF(bnb_write_t, id),
    OFF(bnb_write_t, expect_version),
    OFF(bnb_write_t, body),
    OFF(bnb_write_t, key1),
    OFF(bnb_write_t, key2),
    SZ(bnb_event_out_t),
    OFF(bnb_event_out_t, topic),
    OFF(bnb_event_out_t, type),
    OFF(bnb_event_out_t, subject),
    OFF(bnb_event_out_t, correlation_id),
    OFF(bnb_event_out_t, data),
    SZ(bnb_field_def_t),
    OFF(bnb_field_def_t, name),
    OFF(bnb_field_def_t, type),
    SZ(bnb_index_def_t),
    OFF(bnb_index_def_t, fields),
    OFF(bnb_index_def_t, unique),
    SZ(bnb_coll_def_t),
    OFF(bnb_coll_def_t, name),
    OFF(bnb_coll_def_t, fields),
    OFF(bnb_coll_def_t, nfields),
    OFF(bnb_coll_def_t, indexes),
    OFF(bnb_coll_def_t, nindexes),
    SZ(bnb_cond_t),
    OFF(bnb_cond_t, field),
    OFF(bnb_cond_t, op),
    OFF(bnb_cond_t, str),
    OFF(bnb_cond_t, num),
    SZ(bnb_query_t),
    OFF(bnb_query_t, coll),
    OFF(bnb_query_t, conds),
    OFF(bnb_query_t, nconds),
    OFF(bnb_query_t, order_by),
    OFF(bnb_query_t, descending),
    OFF(bnb_query_t, limit),
    OFF(bnb_query_t, cursor),
    SZ(bnb_commit_t),
    OFF(bnb_commit_t, op),
    OFF(bnb_commit_t, coll),
    OFF(bnb_commit_t, id),
    OFF(bnb_commit_t, expect_version),
    OFF(bnb_commit_t, body),
    OFF(bnb_commit_t, events),
    OFF(bnb_commit_t, nevents),
    OFF(bnb_commit_t, applied_event_id),
    OFF(bnb_commit_t, set_claims),
    OFF(bnb_commit_t, claims),
    OFF(bnb_commit_t, nclaims),
    SZ(bnb_plugin_t),
    OFF(bnb_plugin_t, abi_version),
    OFF(bnb_plugin_t, name),
    OFF(bnb_plugin_t, version),
    OFF(bnb_plugin_t, config),
    OFF(bnb_plugin_t, init),
    OFF(bnb_plugin_t, start),
    OFF(bnb_plugin_t, stop),
    OFF(bnb_plugin_t, fini),
    SZ(bnb_host_api_t),
    OFF(bnb_host_api_t, abi_version),
    OFF(bnb_host_api_t, size),
    OFF(bnb_host_api_t, route),
    OFF(bnb_host_api_t, subscribe),
    OFF(bnb_host_api_t, set_userdata),
    OFF(bnb_host_api_t, userdata),
    OFF(bnb_host_api_t, config),
    OFF(bnb_host_api_t, name),
    OFF(bnb_host_api_t, req_method),
    OFF(bnb_host_api_t, req_param),
    OFF(bnb_host_api_t, req_query),
    OFF(bnb_host_api_t, req_body),
    OFF(bnb_host_api_t, req_user),
    OFF(bnb_host_api_t, req_role),
    OFF(bnb_host_api_t, req_header),
    OFF(bnb_host_api_t, respond_json),
    OFF(bnb_host_api_t, respond_problem),
    OFF(bnb_host_api_t, respond_empty),
    OFF(bnb_host_api_t, respond_header),
    OFF(bnb_host_api_t, store),
    OFF(bnb_host_api_t, store_get),
    OFF(bnb_host_api_t, store_list),
    OFF(bnb_host_api_t, store_commit),
    OFF(bnb_host_api_t, event_reject),
    OFF(bnb_host_api_t, call),
    OFF(bnb_host_api_t, log),
    OFF(bnb_host_api_t, count),
    OFF(bnb_host_api_t, set_correlation),
    OFF(bnb_host_api_t, uuid),
    OFF(bnb_host_api_t, now_ms),
    OFF(bnb_host_api_t, store_define),
    OFF(bnb_host_api_t, store_query),
    OFF(bnb_host_api_t, store_commit2),
    OFF(bnb_host_api_t, req_query_string),
    OFF(bnb_host_api_t, stream_open),
    OFF(bnb_host_api_t, stream_write),
    OFF(bnb_host_api_t, stream_close),
    OFF(bnb_host_api_t, store_get_many),
    {"BNB_ABI_VERSION", BNB_ABI_VERSION},
};

#define NWANT (sizeof(want) / sizeof(want[0]))

static void test_layout_matches_header(void **state)
{
    (void)state;
    void *so = dlopen(SO, RTLD_NOW | RTLD_LOCAL);
    if (so == NULL)
        fail_msg("dlopen %s: %s", SO, dlerror());
    size_t (*layout)(size_t *, size_t) = (size_t(*)(size_t *, size_t))dlsym(so, "bnb_notification_ffi_layout");
    assert_non_null(layout);
    size_t got[NWANT + 8];
    memset(got, 0, sizeof(got));
    size_t n = layout(got, NWANT + 8);
    int bad = 0;
    for (size_t i = 0; i < NWANT && i < n; i++) {
        if (got[i] != want[i].value) {
            fprintf(stderr, "ffi.rs: %s is %zu, the header says %zu\n", want[i].what, got[i], want[i].value);
            bad++;
        }
    }
    if (n != NWANT)
        fprintf(stderr, "ffi.rs reports %zu numbers, the header check has %zu\n", n, (size_t)NWANT);
    assert_int_equal(n, NWANT);
    assert_int_equal(bad, 0);
    /* the exported descriptor too */
    const bnb_plugin_t *p = dlsym(so, BNB_PLUGIN_SYMBOL);
    assert_non_null(p);
    assert_int_equal(p->abi_version, BNB_ABI_VERSION);
    assert_string_equal(p->name, "notification");
    assert_non_null(p->init);
    dlclose(so);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_matches_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

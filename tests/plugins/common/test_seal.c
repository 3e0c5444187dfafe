/*
 * Unit tests of plugins/common's card sealing (bnb_seal.h): a sealed card
 * opens with the right private key and reservation id only, any change to it
 * is refused, and it never contains the number in clear.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bnb_plugin.h"
#include "bnb_seal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CARD "4111111111111111"

static void test_round_trip(void **state)
{
    (void)state;
    char *priv = NULL, *pub = NULL, *sealed = NULL, *plain = NULL, *pub2 = NULL;
    assert_int_equal(bnb_seal_keygen(&priv, &pub), 0);
    assert_int_equal(bnb_seal_public_of(priv, &pub2), 0);
    assert_string_equal(pub, pub2);
    assert_int_equal(bnb_seal(pub, CARD, "res-1", &sealed), 0);
    assert_int_equal(strncmp(sealed, "v1.", 3), 0);
    assert_null(strstr(sealed, CARD));
    assert_null(strstr(sealed, "1111"));
    assert_int_equal(bnb_unseal(priv, sealed, "res-1", &plain), 0);
    assert_string_equal(plain, CARD);
    bnb_seal_free_secret(plain);
    /* sealing twice gives two different values (fresh ephemeral key, nonce) */
    char *again = NULL;
    assert_int_equal(bnb_seal(pub, CARD, "res-1", &again), 0);
    assert_string_not_equal(again, sealed);
    free(again);
    char kid[17], kid2[17];
    assert_int_equal(bnb_seal_kid(pub, kid), 0);
    assert_int_equal(strlen(kid), 16);
    assert_int_equal(bnb_seal_kid(pub2, kid2), 0);
    assert_string_equal(kid, kid2);
    free(sealed);
    free(pub);
    free(pub2);
    bnb_seal_free_secret(priv);
}

static void test_refused(void **state)
{
    (void)state;
    char *priv = NULL, *pub = NULL, *priv2 = NULL, *pub2 = NULL, *sealed = NULL, *plain = NULL;
    assert_int_equal(bnb_seal_keygen(&priv, &pub), 0);
    assert_int_equal(bnb_seal_keygen(&priv2, &pub2), 0);
    assert_int_equal(bnb_seal(pub, CARD, "res-1", &sealed), 0);
    /* another reservation id, another key */
    assert_int_equal(bnb_unseal(priv, sealed, "res-2", &plain), BNB_EINVAL);
    assert_null(plain);
    assert_int_equal(bnb_unseal(priv2, sealed, "res-1", &plain), BNB_EINVAL);
    /* every single-character change of the sealed value is refused (also
     * those that only flip unused bits of a base64 symbol) */
    size_t n = strlen(sealed);
    for (size_t i = 0; i < n; i++) {
        /* the neighbour symbol (differs in the lowest bit only) and a few others */
        char alt[] = {(char)(sealed[i] ^ 1), 'A', 'B', '/', '=', '.', 0};
        for (size_t a = 0; alt[a]; a++) {
            if (alt[a] == sealed[i])
                continue;
            char *t = strdup(sealed);
            t[i] = alt[a];
            int rc = bnb_unseal(priv, t, "res-1", &plain);
            if (rc == 0) {
                fprintf(stderr, "changed at %zu to %c still opens\n", i, alt[a]);
                fail();
            }
            free(t);
        }
    }
    /* malformed values and keys */
    const char *bad[] = {"", "v1.", "v1.a.b", "v2.AAAA.AAAA.AAAA", "v1.AAAA.AAAA.AAAA", "v1...", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(bnb_unseal(priv, bad[i], "res-1", &plain), BNB_EINVAL);
    assert_int_equal(bnb_unseal(priv, NULL, "res-1", &plain), BNB_EINVAL);
    char *out = NULL;
    assert_int_equal(bnb_seal("not a key", CARD, "res-1", &out), BNB_EINVAL);
    assert_int_equal(bnb_seal("AAAA", CARD, "res-1", &out), BNB_EINVAL);
    assert_null(out);
    free(sealed);
    free(pub);
    free(pub2);
    bnb_seal_free_secret(priv);
    bnb_seal_free_secret(priv2);
}

static void test_pem_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/bnb-seal-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char kf[256], pf[256], cmd[1024];
    snprintf(kf, sizeof kf, "%s/card.key", dir);
    snprintf(pf, sizeof pf, "%s/card.pub", dir);
    snprintf(cmd, sizeof cmd,
             "openssl genpkey -algorithm X25519 -out %s 2>/dev/null && openssl pkey -in %s -pubout -out %s", kf, kf,
             pf);
    if (system(cmd) != 0) {
        rmdir(dir);
        skip();
    }
    char *priv = NULL, *pub = NULL, *pub2 = NULL, *sealed = NULL, *plain = NULL;
    assert_int_equal(bnb_seal_read_private_pem(kf, &priv), 0);
    assert_int_equal(bnb_seal_read_public_pem(pf, &pub), 0);
    assert_int_equal(bnb_seal_public_of(priv, &pub2), 0);
    assert_string_equal(pub, pub2);
    assert_int_equal(bnb_seal(pub, CARD, "r", &sealed), 0);
    assert_int_equal(bnb_unseal(priv, sealed, "r", &plain), 0);
    assert_string_equal(plain, CARD);
    /* a public key is not a private key; a missing file is ENOENT */
    char *x = NULL;
    assert_int_equal(bnb_seal_read_private_pem(pf, &x), BNB_EINVAL);
    assert_int_equal(bnb_seal_read_public_pem("/nonexistent/x.pem", &x), BNB_ENOENT);
    assert_null(x);
    bnb_seal_free_secret(plain);
    bnb_seal_free_secret(priv);
    free(pub);
    free(pub2);
    free(sealed);
    unlink(kf);
    unlink(pf);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_pem_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

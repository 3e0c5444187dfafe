/* Helpers shared by the JWT/JWKS tests (test_auth.c, test_jwks.c).
 * Include after <cmocka.h>. */
#ifndef JWK_TEST_H
#define JWK_TEST_H

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

/* Unpadded base64url of n raw bytes (malloc'ed). */
static inline char *b64url_raw(const unsigned char *raw, int n)
{
    char *out = malloc((size_t)n * 4 / 3 + 8);
    assert_non_null(out);
    int len = EVP_EncodeBlock((unsigned char *)out, raw, n), j = 0;
    for (int i = 0; i < len && out[i] != '='; i++)
        out[j++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[j] = '\0';
    return out;
}

/* Unpadded base64url of a big number, big-endian, left-padded with zeros to
 * pad_to bytes (malloc'ed). */
static inline char *b64url_bn(const BIGNUM *bn, int pad_to)
{
    int n = BN_num_bytes(bn);
    if (pad_to > n)
        n = pad_to;
    unsigned char *raw = malloc((size_t)n);
    assert_non_null(raw);
    assert_int_equal(BN_bn2binpad(bn, raw, n), n);
    char *s = b64url_raw(raw, n);
    free(raw);
    return s;
}

static inline void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(s, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

#endif

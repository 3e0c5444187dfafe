/*
 * plugins/common: X25519 + HKDF-SHA256 + AES-256-GCM sealing (bnb_seal.h).
 */
#include "bnb_seal.h"
#include "bnb_plugin.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYLEN   32
#define NONCELEN 12
#define TAGLEN   16
#define INFO     "bearbnb card v1"

static char *b64_encode(const unsigned char *in, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    return out;
}

/* Decode canonical standard base64 of at most `max` bytes into out; *n its length. */
static int b64_decode(const char *in, size_t inlen, unsigned char *out, size_t max, size_t *n)
{
    if (inlen == 0 || inlen % 4 != 0 || inlen / 4 * 3 > max + 2)
        return BNB_EINVAL;
    unsigned char *tmp = malloc(inlen / 4 * 3 + 1);
    if (!tmp)
        return BNB_ENOMEM;
    int len = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)inlen);
    if (len < 0) {
        free(tmp);
        return BNB_EINVAL;
    }
    size_t pad = (in[inlen - 1] == '=') + (in[inlen - 2] == '=');
    size_t real = (size_t)len - pad;
    if (real > max) {
        OPENSSL_cleanse(tmp, (size_t)len);
        free(tmp);
        return BNB_EINVAL;
    }
    /* canonical only: the unused low bits of the last symbol must be zero,
     * so one sealed value has exactly one spelling */
    char *again = b64_encode(tmp, real);
    int same = again && strlen(again) == inlen && !memcmp(again, in, inlen);
    free(again);
    if (same)
        memcpy(out, tmp, real);
    OPENSSL_cleanse(tmp, (size_t)len);
    free(tmp);
    if (!same)
        return BNB_EINVAL;
    *n = real;
    return 0;
}

static int raw32(const char *b64, unsigned char out[KEYLEN])
{
    size_t n = 0;
    if (!b64 || b64_decode(b64, strlen(b64), out, KEYLEN, &n) != 0 || n != KEYLEN)
        return BNB_EINVAL;
    return 0;
}

int bnb_seal_keygen(char **priv_b64, char **pub_b64)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    unsigned char priv[KEYLEN], pub[KEYLEN];
    size_t pl = KEYLEN, ql = KEYLEN;
    int rc = BNB_EIO;
    *priv_b64 = *pub_b64 = NULL;
    if (k && EVP_PKEY_get_raw_private_key(k, priv, &pl) == 1 && EVP_PKEY_get_raw_public_key(k, pub, &ql) == 1 &&
        pl == KEYLEN && ql == KEYLEN) {
        *priv_b64 = b64_encode(priv, KEYLEN);
        *pub_b64 = b64_encode(pub, KEYLEN);
        rc = *priv_b64 && *pub_b64 ? 0 : BNB_ENOMEM;
    }
    OPENSSL_cleanse(priv, sizeof priv);
    EVP_PKEY_free(k);
    if (rc != 0) {
        bnb_seal_free_secret(*priv_b64);
        free(*pub_b64);
        *priv_b64 = *pub_b64 = NULL;
    }
    return rc;
}

int bnb_seal_public_of(const char *priv_b64, char **pub_b64)
{
    unsigned char priv[KEYLEN], pub[KEYLEN];
    size_t ql = KEYLEN;
    *pub_b64 = NULL;
    if (raw32(priv_b64, priv) != 0)
        return BNB_EINVAL;
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, KEYLEN);
    OPENSSL_cleanse(priv, sizeof priv);
    int rc = k && EVP_PKEY_get_raw_public_key(k, pub, &ql) == 1 && ql == KEYLEN ? 0 : BNB_EINVAL;
    EVP_PKEY_free(k);
    if (rc == 0 && !(*pub_b64 = b64_encode(pub, KEYLEN)))
        rc = BNB_ENOMEM;
    return rc;
}

int bnb_seal_kid(const char *pub_b64, char out[17])
{
    unsigned char pub[KEYLEN], md[32];
    unsigned int mdlen = 0;
    if (raw32(pub_b64, pub) != 0 || EVP_Digest(pub, KEYLEN, md, &mdlen, EVP_sha256(), NULL) != 1)
        return BNB_EINVAL;
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int read_pem(const char *path, int private, char **b64)
{
    *b64 = NULL;
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return BNB_ENOENT;
    EVP_PKEY *k = private ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    unsigned char raw[KEYLEN];
    size_t n = KEYLEN;
    int rc = BNB_EINVAL;
    if (k && EVP_PKEY_is_a(k, "X25519") &&
        (private ? EVP_PKEY_get_raw_private_key(k, raw, &n) : EVP_PKEY_get_raw_public_key(k, raw, &n)) == 1 &&
        n == KEYLEN)
        rc = (*b64 = b64_encode(raw, KEYLEN)) ? 0 : BNB_ENOMEM;
    OPENSSL_cleanse(raw, sizeof raw);
    EVP_PKEY_free(k);
    return rc;
}

int bnb_seal_read_private_pem(const char *path, char **priv_b64)
{
    return read_pem(path, 1, priv_b64);
}

int bnb_seal_read_public_pem(const char *path, char **pub_b64)
{
    return read_pem(path, 0, pub_b64);
}

/* shared = X25519(priv, peer); key = HKDF(shared, salt = eph_pub || rcpt_pub). */
static int derive(EVP_PKEY *priv, const unsigned char peer[KEYLEN], const unsigned char eph_pub[KEYLEN],
                  const unsigned char rcpt_pub[KEYLEN], unsigned char key[KEYLEN])
{
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, KEYLEN);
    EVP_PKEY_CTX *dc = pk ? EVP_PKEY_CTX_new(priv, NULL) : NULL;
    EVP_PKEY_CTX *hc = NULL;
    unsigned char shared[KEYLEN], salt[2 * KEYLEN];
    size_t sl = KEYLEN, kl = KEYLEN;
    int rc = BNB_EINVAL;
    if (!dc || EVP_PKEY_derive_init(dc) != 1 || EVP_PKEY_derive_set_peer(dc, pk) != 1 ||
        EVP_PKEY_derive(dc, shared, &sl) != 1 || sl != KEYLEN)
        goto out;
    memcpy(salt, eph_pub, KEYLEN);
    memcpy(salt + KEYLEN, rcpt_pub, KEYLEN);
    hc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    if (hc && EVP_PKEY_derive_init(hc) == 1 && EVP_PKEY_CTX_set_hkdf_md(hc, EVP_sha256()) == 1 &&
        EVP_PKEY_CTX_set1_hkdf_salt(hc, salt, sizeof salt) == 1 &&
        EVP_PKEY_CTX_set1_hkdf_key(hc, shared, KEYLEN) == 1 &&
        EVP_PKEY_CTX_add1_hkdf_info(hc, (const unsigned char *)INFO, (int)strlen(INFO)) == 1 &&
        EVP_PKEY_derive(hc, key, &kl) == 1 && kl == KEYLEN)
        rc = 0;
out:
    OPENSSL_cleanse(shared, sizeof shared);
    EVP_PKEY_CTX_free(hc);
    EVP_PKEY_CTX_free(dc);
    EVP_PKEY_free(pk);
    return rc;
}

/* AES-256-GCM; enc: out = ct || tag, else in = ct || tag, out = plaintext. */
static int gcm(int enc, const unsigned char key[KEYLEN], const unsigned char nonce[NONCELEN], const char *aad,
               const unsigned char *in, size_t inlen, unsigned char *out, size_t *outlen)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, f = 0, rc = BNB_EINVAL;
    size_t body = enc ? inlen : inlen - TAGLEN;
    if (!c || (!enc && inlen < TAGLEN))
        goto out;
    if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCELEN, NULL) != 1 ||
        EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) != 1)
        goto out;
    if (aad && *aad && EVP_CipherUpdate(c, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1)
        goto out;
    if (EVP_CipherUpdate(c, out, &n, in, (int)body) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAGLEN, (void *)(in + body)) != 1)
        goto out;
    if (EVP_CipherFinal_ex(c, out + n, &f) != 1)
        goto out;
    *outlen = (size_t)(n + f);
    if (enc) {
        if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAGLEN, out + *outlen) != 1)
            goto out;
        *outlen += TAGLEN;
    }
    rc = 0;
out:
    EVP_CIPHER_CTX_free(c);
    return rc;
}

int bnb_seal(const char *pub_b64, const char *plain, const char *aad, char **sealed)
{
    unsigned char rcpt[KEYLEN], eph_pub[KEYLEN], key[KEYLEN], nonce[NONCELEN];
    size_t el = KEYLEN, plen = plain ? strlen(plain) : 0, ctlen = 0;
    unsigned char *ct = NULL;
    char *a = NULL, *b = NULL, *c = NULL;
    EVP_PKEY *eph = NULL;
    int rc = BNB_EINVAL;
    *sealed = NULL;
    if (!plain || raw32(pub_b64, rcpt) != 0 || plen > 4096)
        goto out;
    rc = BNB_EIO;
    if (!(eph = EVP_PKEY_Q_keygen(NULL, NULL, "X25519")) || EVP_PKEY_get_raw_public_key(eph, eph_pub, &el) != 1 ||
        RAND_bytes(nonce, NONCELEN) != 1)
        goto out;
    if ((rc = derive(eph, rcpt, eph_pub, rcpt, key)) != 0)
        goto out;
    rc = BNB_ENOMEM;
    if (!(ct = malloc(plen + TAGLEN)))
        goto out;
    if ((rc = gcm(1, key, nonce, aad, (const unsigned char *)plain, plen, ct, &ctlen)) != 0)
        goto out;
    rc = BNB_ENOMEM;
    a = b64_encode(eph_pub, KEYLEN);
    b = b64_encode(nonce, NONCELEN);
    c = b64_encode(ct, ctlen);
    if (!a || !b || !c)
        goto out;
    size_t len = 3 + strlen(a) + 1 + strlen(b) + 1 + strlen(c) + 1;
    if (!(*sealed = malloc(len)))
        goto out;
    snprintf(*sealed, len, "v1.%s.%s.%s", a, b, c);
    rc = 0;
out:
    OPENSSL_cleanse(key, sizeof key);
    EVP_PKEY_free(eph);
    free(ct);
    free(a);
    free(b);
    free(c);
    return rc;
}

int bnb_unseal(const char *priv_b64, const char *sealed, const char *aad, char **plain)
{
    unsigned char priv[KEYLEN], rcpt[KEYLEN], eph_pub[KEYLEN], key[KEYLEN], nonce[NONCELEN];
    size_t n = 0, ql = KEYLEN, ctlen = 0, outlen = 0;
    unsigned char *ct = NULL;
    char *out = NULL;
    EVP_PKEY *k = NULL;
    int rc = BNB_EINVAL;
    *plain = NULL;
    const char *p1 = sealed && !strncmp(sealed, "v1.", 3) ? sealed + 3 : NULL;
    const char *p2 = p1 ? strchr(p1, '.') : NULL;
    const char *p3 = p2 ? strchr(p2 + 1, '.') : NULL;
    if (!p3 || strchr(p3 + 1, '.') || strlen(p3 + 1) > 8192)
        goto out;
    if (b64_decode(p1, (size_t)(p2 - p1), eph_pub, KEYLEN, &n) != 0 || n != KEYLEN)
        goto out;
    if (b64_decode(p2 + 1, (size_t)(p3 - p2 - 1), nonce, NONCELEN, &n) != 0 || n != NONCELEN)
        goto out;
    size_t clen = strlen(p3 + 1);
    if (!(ct = malloc(clen / 4 * 3 + 1)) || !(out = malloc(clen / 4 * 3 + 1))) {
        rc = BNB_ENOMEM;
        goto out;
    }
    if (b64_decode(p3 + 1, clen, ct, clen / 4 * 3, &ctlen) != 0 || ctlen < TAGLEN)
        goto out;
    if (raw32(priv_b64, priv) != 0)
        goto out;
    k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, KEYLEN);
    if (!k || EVP_PKEY_get_raw_public_key(k, rcpt, &ql) != 1)
        goto out;
    if ((rc = derive(k, eph_pub, eph_pub, rcpt, key)) != 0)
        goto out;
    if ((rc = gcm(0, key, nonce, aad, ct, ctlen, (unsigned char *)out, &outlen)) != 0)
        goto out;
    out[outlen] = '\0';
    if (strlen(out) != outlen) {
        rc = BNB_EINVAL;
        goto out;
    }
    *plain = out;
    out = NULL;
    rc = 0;
out:
    OPENSSL_cleanse(priv, sizeof priv);
    OPENSSL_cleanse(key, sizeof key);
    EVP_PKEY_free(k);
    free(ct);
    if (out) {
        OPENSSL_cleanse(out, clen / 4 * 3 + 1);
        free(out);
    }
    return rc;
}

void bnb_seal_free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

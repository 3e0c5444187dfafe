/*
 * plugins/common: sealing a card number for the payment service alone.
 *
 * The payment service owns an X25519 key pair; anyone holding its public key
 * can seal, only the private key opens. A sealed value is
 *
 *     "v1." b64(ephemeral public key, 32 bytes) "." b64(nonce, 12) "." b64(ciphertext || tag16)
 *
 * with key = HKDF-SHA256(ikm = X25519(ephemeral, recipient), salt =
 * ephemeral public || recipient public, info = "bearbnb card v1") and
 * AES-256-GCM over the plaintext with `aad` (the reservation id) as associated
 * data, so a sealed card only opens for the reservation it was sealed for.
 * Keys travel and are stored as base64 of the raw 32 bytes; key files are PEM
 * (`openssl genpkey -algorithm X25519`, `openssl pkey -pubout`).
 *
 * Uses OpenSSL's libcrypto (EVP). Every function returns 0 or a negative
 * BNB_E* code; strings it returns are malloc'ed, caller frees (the plaintext
 * with bnb_seal_free_secret, which wipes it).
 */
#ifndef BNB_SEAL_H
#define BNB_SEAL_H

#include <stddef.h>

#define BNB_SEAL_ALG "X25519-HKDF-SHA256-A256GCM"

/* A new key pair (base64 raw keys). */
int bnb_seal_keygen(char **priv_b64, char **pub_b64);
/* The public key of a private one. */
int bnb_seal_public_of(const char *priv_b64, char **pub_b64);
/* A short id of a public key (16 hex digits of its SHA-256), out: 17 bytes. */
int bnb_seal_kid(const char *pub_b64, char out[17]);
/* Read a PEM X25519 private key file / public key file as base64 raw. */
int bnb_seal_read_private_pem(const char *path, char **priv_b64);
int bnb_seal_read_public_pem(const char *path, char **pub_b64);

/* Seal `plain` for the holder of `pub_b64`, bound to `aad` (may be ""). */
int bnb_seal(const char *pub_b64, const char *plain, const char *aad, char **sealed);
/* Open `sealed` with `priv_b64` and the same `aad`: BNB_EINVAL when it is
 * malformed, was sealed for another key or aad, or was tampered with. */
int bnb_unseal(const char *priv_b64, const char *sealed, const char *aad, char **plain);
/* Wipe and free a secret string (NULL is fine). */
void bnb_seal_free_secret(char *s);

#endif

/* base64url (RFC 4648 §5) decoding shared by auth.c and jwks.c (host-internal). */
#ifndef BNB_B64_H
#define BNB_B64_H

#include <stddef.h>

/* The value 0..63 of a base64url character, -1 for any other. */
int bnb__b64url_val(int c);

/* Decode exactly `n` characters of strict unpadded base64url (no '=', no
 * white space; n == 0 gives an empty result). Returns a malloc'ed buffer,
 * NUL-terminated after its *outlen bytes, or NULL when invalid or out of memory. */
unsigned char *bnb__b64url_decode(const char *s, size_t n, size_t *outlen);

#endif

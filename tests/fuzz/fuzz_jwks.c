/* libFuzzer: a JWKS document as a refresh parses it (RSA and EC JWKs to
 * OpenSSL keys), and one JWK alone. */
#include "jwks.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    char err[256];
    (void)bnb__jwks_parse_text((const char *)data, size, &n, err, sizeof(err));
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char *pem = NULL;
    const char *alg = NULL;
    if (bnb__jwk_to_pem(s, &pem, &alg, err, sizeof(err)) == 0)
        free(pem);
    free(s);
    return 0;
}

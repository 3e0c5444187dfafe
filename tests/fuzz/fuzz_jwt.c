/* libFuzzer: JWT verification with the host's HS256 dev key (header and
 * claims parsing, base64url, signature, iss/aud/exp/nbf/role checks). */
#include "auth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bnb_auth_t *g_auth;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/bnb-fuzz-jwt-XXXXXX";
    if (mkdtemp(dir) == NULL)
        abort();
    char key[64];
    snprintf(key, sizeof(key), "%s/jwt.key", dir);
    FILE *f = fopen(key, "w");
    if (f == NULL)
        abort();
    fputs("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", f);
    fclose(f);
    bnb_auth_config_t cfg = {.hs256_key_file = key};
    char err[256];
    if (bnb__auth_new(&cfg, &g_auth, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_jwt: %s\n", err);
        abort();
    }
    unlink(key);
    rmdir(dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *tok = malloc(size + 1);
    if (tok == NULL)
        return 0;
    memcpy(tok, data, size);
    tok[size] = '\0';
    bnb_identity_t id;
    char why[160];
    (void)bnb__auth_verify(g_auth, tok, &id, why, sizeof(why));
    free(tok);
    return 0;
}

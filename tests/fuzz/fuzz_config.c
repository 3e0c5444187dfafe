/* libFuzzer: the YAML config loader (the host's declared keys, types and
 * the unknown-key check). The input is written to a file and loaded. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(g_path, sizeof(g_path), "/tmp/bnb-fuzz-config-%d.yaml", (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(g_path, "wb");
    if (f == NULL)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    bnb_config_t *c = bnb__config_new();
    if (c == NULL)
        return 0;
    char err[512];
    char *const envp[] = {NULL};
    if (bnb__config_declare_host(c) == 0 && bnb__config_load_file(c, g_path, err, sizeof(err)) == 0 &&
        bnb__config_finish(c, envp, NULL, err, sizeof(err)) == 0) {
        (void)bnb__config_str(c, "listen");
        (void)bnb__config_int(c, "http.max_body");
        (void)bnb__config_bool(c, "gateway.enforce");
    }
    bnb__config_free(c);
    unlink(g_path);
    return 0;
}

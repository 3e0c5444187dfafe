/* libFuzzer: the router with the service's real route patterns; the input
 * is "METHOD path[?query]". Also percent-decoding, the query check, and the
 * edge's forwardable copy of a path (only URL-safe bytes; decodes to what the
 * original decodes to). */
#include "reqcheck.h"
#include "router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bnb_router_t *g_router;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const routes[][2] = {
        {"POST", "/rooms"},
        {"GET", "/rooms"},
        {"GET", "/rooms/{id}"},
        {"PATCH", "/rooms/{id}"},
        {"DELETE", "/rooms/{id}"},
        {"POST", "/rooms/{id}/reviews"},
        {"GET", "/rooms/{id}/reviews"},
        {"DELETE", "/reviews/{id}"},
        {"POST", "/reservations"},
        {"GET", "/reservations"},
        {"GET", "/reservations/{id}"},
        {"DELETE", "/reservations/{id}"},
        {"GET", "/payments/{id}"},
        {"GET", "/payments"},
        {"GET", "/dashboard/rooms"},
        {"GET", "/dashboard/rooms/{id}"},
        {"GET", "/dashboard/rooms/{id}/reservations"},
    };
    g_router = bnb__router_new();
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (bnb__router_add(g_router, routes[i][0], routes[i][1], NULL, (void *)routes[i][1]) != 0)
            abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    const char *sp = memchr(d, ' ', size < 16 ? size : 16);
    if (sp == NULL)
        return 0;
    char method[16];
    memcpy(method, d, (size_t)(sp - d));
    method[sp - d] = '\0';
    const char *path = sp + 1;
    size_t plen = size - (size_t)(path - d);
    const char *q = memchr(path, '?', plen);
    size_t pathlen = q ? (size_t)(q - path) : plen;
    bnb_route_match_t m;
    char allow[128];
    if (bnb__router_match(g_router, method, path, pathlen, &m, allow, sizeof(allow)) == 200)
        bnb__route_match_clear(&m);
    if (q != NULL) {
        char name[64];
        (void)bnb__query_check(q + 1, plen - pathlen - 1, name, sizeof(name));
    }
    char *dec = bnb__url_decode(path, pathlen, 1);
    free(dec);
    char *fw = bnb__uri_forwardable(path, pathlen);
    if (fw == NULL)
        abort();
    for (const char *c = fw; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || strchr("\"#<>\\^`{|}", *c) != NULL)
            abort(); /* a byte a URL may not carry raw */
    char *d_in = bnb__url_decode(path, pathlen, 0), *d_fw = bnb__url_decode(fw, strlen(fw), 0);
    if ((d_in == NULL) != (d_fw == NULL) || (d_in != NULL && strcmp(d_in, d_fw) != 0))
        abort(); /* the service would see another path than this host */
    free(d_in);
    free(d_fw);
    free(fw);
    (void)bnb__correlation_id_ok(path, pathlen);
    return 0;
}

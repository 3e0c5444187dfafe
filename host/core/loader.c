/* Plugin loader: dlopen, ABI and export checks, init with undo on failure. */
#include "host.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int valid_name(const char *n)
{
    if (n == NULL || n[0] == '\0' || strlen(n) > 24)
        return 0;
    for (const char *p = n; *p; p++)
        if (*p < 'a' || *p > 'z')
            return 0;
    return 1;
}

bnb_inst_t *bnb__plugin_open(bnb_host_t *h, const char *path, char *err, size_t errlen)
{
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        snprintf(err, errlen, "plugin %s: cannot load: %s", path, dlerror());
        return NULL;
    }
    const bnb_plugin_t *p = dlsym(dl, BNB_PLUGIN_SYMBOL);
    if (p == NULL) {
        snprintf(err, errlen, "plugin %s: missing export '%s' (is it a BearBnB plugin?)", path, BNB_PLUGIN_SYMBOL);
        goto fail;
    }
    /* A plugin built before the ABI had a minor number says 1: that is 1.0. */
    uint32_t abi = p->abi_version == 1u ? BNB_ABI_MAKE(1, 0) : p->abi_version;
    if (BNB_ABI_MAJOR_OF(abi) != BNB_ABI_MAJOR || BNB_ABI_MINOR_OF(abi) > BNB_ABI_MINOR) {
        snprintf(err, errlen,
                 "plugin %s: built for plugin ABI %u.%u, this host speaks ABI %u.%u (%s); rebuild it against this "
                 "host's plugin-api/bnb_plugin.h",
                 path, BNB_ABI_MAJOR_OF(abi), BNB_ABI_MINOR_OF(abi), BNB_ABI_MAJOR, BNB_ABI_MINOR,
                 BNB_ABI_MAJOR_OF(abi) != BNB_ABI_MAJOR ? "another major version is incompatible"
                                                        : "a newer minor version than the host's");
        goto fail;
    }
    if (!valid_name(p->name)) {
        snprintf(err, errlen, "plugin %s: invalid plugin name (want 1-24 lower-case letters)", path);
        goto fail;
    }
    if (p->init == NULL) {
        snprintf(err, errlen, "plugin %s (%s): missing init hook", path, p->name);
        goto fail;
    }
    for (const bnb_cfg_item_t *ci = p->config; ci && ci->name; ci++) {
        if (ci->type < BNB_CFG_STRING || ci->type > BNB_CFG_BOOL || strcmp(ci->name, "storage") == 0) {
            snprintf(err, errlen, "plugin %s (%s): bad config item '%s'", path, p->name, ci->name);
            goto fail;
        }
    }
    bnb_inst_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL || (ctx->path = strdup(path)) == NULL) {
        free(ctx);
        snprintf(err, errlen, "plugin %s: out of memory", path);
        goto fail;
    }
    ctx->self.inst = ctx;
    ctx->host = h;
    ctx->plugin = p;
    ctx->name = p->name;
    ctx->dl = dl;
    ctx->abi = abi;
    bnb__colls_init(&ctx->colls);
    return ctx;
fail:
    dlclose(dl);
    return NULL;
}

void bnb__plugin_unregister(bnb_inst_t *ctx)
{
    if (ctx->host && ctx->host->router)
        bnb__router_remove_owner(ctx->host->router, ctx);
    for (size_t i = 0; i < ctx->nroutes; i++) {
        free(ctx->routes[i]->pattern);
        free(ctx->routes[i]->method);
        free(ctx->routes[i]);
    }
    free(ctx->routes);
    ctx->routes = NULL;
    ctx->nroutes = 0;
    for (size_t i = 0; i < ctx->nsubs; i++)
        free(ctx->subs[i].topic);
    free(ctx->subs);
    ctx->subs = NULL;
    ctx->nsubs = 0;
}

int bnb__plugin_init(bnb_inst_t *ctx, char *err, size_t errlen)
{
    bnb_exec_t ex = {0};
    ex.plugin = ctx->name;
    bnb_exec_t *saved = bnb__exec;
    bnb__exec = &ex;
    int rc = ctx->plugin->init(&ctx->self, &bnb__host_api);
    bnb__exec = saved;
    if (rc != 0) {
        snprintf(err, errlen, "plugin %s (%s): init failed with code %d; nothing of it stays registered", ctx->path,
                 ctx->name, rc);
        /* a failed init may have allocated userdata: give it the chance to free it */
        if (ctx->plugin->fini && ctx->userdata)
            ctx->plugin->fini(&ctx->self);
        ctx->userdata = NULL;
        bnb__plugin_unregister(ctx);
        return rc < 0 ? rc : BNB_EINVAL;
    }
    ctx->inited = 1;
    return 0;
}

void bnb__plugin_close(bnb_inst_t *ctx)
{
    if (ctx == NULL)
        return;
    if (ctx->inited && ctx->plugin->fini)
        ctx->plugin->fini(&ctx->self);
    bnb__plugin_unregister(ctx);
    if (ctx->store)
        bnb_storage_close(ctx->store);
    bnb__colls_destroy(&ctx->colls);
    /* leave the code mapped under ASan so leak reports still symbolize */
#ifndef __SANITIZE_ADDRESS__
    dlclose(ctx->dl);
#endif
    free(ctx->path);
    free(ctx);
}

static int ends_with_so(const char *n)
{
    size_t l = strlen(n);
    return l > 3 && strcmp(n + l - 3, ".so") == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int push(char ***v, size_t *n, size_t *cap, const char *dir, const char *sub, const char *file)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **nv = realloc(*v, nc * sizeof(char *));
        if (nv == NULL)
            return -ENOMEM;
        *v = nv;
        *cap = nc;
    }
    char buf[4096];
    if (sub)
        snprintf(buf, sizeof(buf), "%s/%s/%s", dir, sub, file);
    else
        snprintf(buf, sizeof(buf), "%s/%s", dir, file);
    (*v)[*n] = strdup(buf);
    if ((*v)[*n] == NULL)
        return -ENOMEM;
    (*n)++;
    return 0;
}

int bnb__plugin_scan(const char *dir, char ***paths, size_t *n)
{
    *paths = NULL;
    *n = 0;
    size_t cap = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
        struct stat stt;
        if (stat(sub, &stt) != 0)
            continue;
        if (S_ISREG(stt.st_mode) && ends_with_so(de->d_name)) {
            push(paths, n, &cap, dir, NULL, de->d_name);
        } else if (S_ISDIR(stt.st_mode)) {
            DIR *d2 = opendir(sub);
            if (d2 == NULL)
                continue;
            struct dirent *de2;
            while ((de2 = readdir(d2)) != NULL) {
                if (de2->d_name[0] != '.' && ends_with_so(de2->d_name))
                    push(paths, n, &cap, dir, de->d_name, de2->d_name);
            }
            closedir(d2);
        }
    }
    closedir(d);
    if (*n > 1)
        qsort(*paths, *n, sizeof(char *), cmp_str);
    return 0;
}

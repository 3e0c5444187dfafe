/* The web app's static files (issue 14): a directory served at `/` once no
 * API route matched. What a client can do here and what it cannot:
 *
 *   - only GET and HEAD; only the directory's files: the path h2o hands us is
 *     already percent-decoded with its dot segments resolved, a segment that
 *     starts with '.' (dot files, "..") or holds a NUL or backslash is refused,
 *     and the file's realpath must lie inside the root's (a symbolic link
 *     pointing out of the root is a 404);
 *   - ETag (inode, size, mtime) and If-None-Match -> 304; Cache-Control
 *     `public, max-age=31536000, immutable` for hashed asset names
 *     (name.<8+ hex>.ext or name-<8+ hex>.ext), `no-cache` for everything else
 *     (index.html always revalidates);
 *   - a precompressed `<file>.gz` beside the file is sent (Content-Encoding:
 *     gzip, Vary: Accept-Encoding) to a client that accepts gzip;
 *   - a browser's navigation (Accept: text/html) to an app path (no
 *     extension in its last segment, first segment not an API route's)
 *     answers index.html, so the app's own routes survive a reload; a
 *     missing asset (with an extension), or an unknown path asked for by an
 *     API client, is a 404 problem;
 *   - the body goes out through h2o's file generator: read in bounded chunks
 *     as the socket drains, never a whole big file at once.
 *
 * The app's own scripts and styles (long cache for hashed assets): at
 * start-up every `.js`/`.mjs`/`.css` under the root (not a dot name, not a
 * symbolic link, not already hashed; at most ASSETS_MAX of ASSET_MAX bytes)
 * is read into memory with a gzip copy and its content hash (SHA-256, the
 * first 12 hex digits), and the root's index.html is rewritten in memory:
 * its `src`/`href` references to those files name `/<dir>/<name>.<hash>.<ext>`
 * (absolute: the app's paths stay right below an app path), and an import map
 * before its first script maps every module's plain path to its hashed one,
 * so an `import './api.js'` inside a module loads `api.<hash>.js` (a changed
 * file changes its own name only; the modules importing it stay the same),
 * with a `modulepreload` link per module (fetched at once, not one import
 * level after another). A hashed name is answered from memory with
 * `immutable`, only while its hash is the file's current one (else 404);
 * index.html from memory, `no-cache`, its ETag the hash of what is sent, 304
 * when it matches. A request for index.html first compares every file's
 * inode, size and mtime with what was read (a dozen stat calls) and reads the
 * set again when one changed, so an edited file is served at the next load.
 * The plain names stay served from the directory (a browser without import
 * maps still loads the modules, revalidating). */
#include "webapp.h"

#include "host.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char g_root[PATH_MAX]; /* realpath of the directory, "" when off */
static size_t g_rootlen;

/* First path segments of the API (the router's and the host's own): an app
 * path never starts with one of them, so an unknown API path stays a 404. */
#define RESERVED_MAX 64
static char g_reserved[RESERVED_MAX][48];
static size_t g_nreserved;
static int g_reserved_done;

/* ---- the app's assets in memory, under content-hashed names ------------ */

#define ASSETS_MAX  256
#define ASSET_MAX   (4u << 20)
#define INDEX_MAX   (1u << 20)
#define HASH_HEX    12
#define ASSET_DEPTH 4

typedef struct {
    char *rel;    /* "/js/api.js" */
    char *hashed; /* "/js/api.0123456789ab.js" */
    char hash[HASH_HEX + 1];
    char *body, *gz; /* gz NULL when gzip saves nothing */
    size_t len, gzlen;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} asset_t;

typedef struct {
    asset_t *a;
    size_t n;
    asset_t index; /* the rewritten index.html (hashed: unused) */
    int has_index;
} assets_t;

static assets_t g_assets;

const char *bnb__web_root(void)
{
    return g_root[0] ? g_root : NULL;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The default: the source tree's web/ when this program is the one in the
 * build tree (plugins/ beside it), else <exe>/../share/bearbnb/web (an
 * install, the image), else the configured prefix's datadir. */
static void default_root(char *out, size_t outlen)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL)
            *slash = '\0';
        char cand[PATH_MAX + 64];
        snprintf(cand, sizeof(cand), "%s/build.ninja", exe);
        if (access(cand, F_OK) == 0) {
            snprintf(out, outlen, "%s", BNB_SOURCE_WEB_DIR);
            return;
        }
        snprintf(cand, sizeof(cand), "%s/../share/bearbnb/web", exe);
        if (is_dir(cand)) {
            snprintf(out, outlen, "%s", cand);
            return;
        }
    }
    snprintf(out, outlen, "%s/bearbnb/web", BNB_INSTALL_DATADIR);
}

static void asset_free(asset_t *a)
{
    free(a->rel);
    free(a->hashed);
    free(a->body);
    free(a->gz);
    memset(a, 0, sizeof(*a));
}

static void assets_free(assets_t *as)
{
    for (size_t i = 0; i < as->n; i++)
        asset_free(&as->a[i]);
    free(as->a);
    asset_free(&as->index);
    memset(as, 0, sizeof(*as));
}

/* SHA-256 of the bytes, its first n hex digits */
static int hash_hex(const char *b, size_t len, char *out, size_t n)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(b, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 < n)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = "0123456789abcdef"[(md[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n] = '\0';
    return 0;
}

/* gzip (level 9) of the bytes; NULL when it saves nothing or fails */
static char *gzip_of(const char *b, size_t len, size_t *outlen)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, (uLong)len) + 32;
    char *out = malloc(cap);
    if (out == NULL)
        goto fail;
    z.next_in = (Bytef *)(uintptr_t)b;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END || z.total_out >= len)
        goto fail;
    *outlen = z.total_out;
    deflateEnd(&z);
    return out;
fail:
    free(out);
    deflateEnd(&z);
    return NULL;
}

/* The whole of a regular file (not a symbolic link) of at most max bytes. */
static int read_small(const char *path, size_t max, char **out, size_t *len, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    char *b = NULL;
    if (fd < 0)
        return -1;
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || (size_t)st->st_size > max)
        goto fail;
    b = malloc((size_t)st->st_size + 1);
    if (b == NULL)
        goto fail;
    size_t got = 0;
    while (got < (size_t)st->st_size) {
        ssize_t r = read(fd, b + got, (size_t)st->st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto fail;
        got += (size_t)r;
    }
    b[got] = '\0';
    close(fd);
    *out = b;
    *len = got;
    return 0;
fail:
    free(b);
    close(fd);
    return -1;
}

static int is_hashed(const char *name);

/* A name the rewritten HTML and the import map can carry as is. */
static int plain_name(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

static int asset_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot != NULL && (strcmp(dot, ".js") == 0 || strcmp(dot, ".mjs") == 0 || strcmp(dot, ".css") == 0);
}

static int asset_load(asset_t *a, const char *root, const char *rel)
{
    char path[PATH_MAX + 300];
    struct stat st;
    snprintf(path, sizeof(path), "%s%s", root, rel);
    if (read_small(path, ASSET_MAX, &a->body, &a->len, &st) != 0 || hash_hex(a->body, a->len, a->hash, HASH_HEX) != 0)
        return -1;
    a->gz = gzip_of(a->body, a->len, &a->gzlen);
    a->dev = st.st_dev, a->ino = st.st_ino, a->size = st.st_size, a->mtime = st.st_mtim;
    const char *dot = strrchr(rel, '.');
    size_t hl = strlen(rel) + HASH_HEX + 2;
    a->rel = strdup(rel);
    a->hashed = malloc(hl);
    if (a->rel == NULL || a->hashed == NULL)
        return -1;
    snprintf(a->hashed, hl, "%.*s.%s%s", (int)(dot - rel), rel, a->hash, dot);
    return 0;
}

static int assets_walk(assets_t *as, const char *root, const char *rel, int depth)
{
    char dir[PATH_MAX + 300];
    snprintf(dir, sizeof(dir), "%s%s", root, rel);
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !plain_name(e->d_name) || strlen(rel) + strlen(e->d_name) + 2 > 256)
            continue;
        char sub[300], path[PATH_MAX + 600];
        snprintf(sub, sizeof(sub), "%s/%s", rel, e->d_name);
        snprintf(path, sizeof(path), "%s%s", root, sub);
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < ASSET_DEPTH) {
            rc = assets_walk(as, root, sub, depth + 1);
        } else if (S_ISREG(st.st_mode) && asset_ext(e->d_name) && !is_hashed(e->d_name) && as->n < ASSETS_MAX) {
            if (as->a == NULL && (as->a = calloc(ASSETS_MAX, sizeof(*as->a))) == NULL)
                rc = -1;
            else if (asset_load(&as->a[as->n], root, sub) == 0)
                as->n++;
            else
                asset_free(&as->a[as->n]);
        }
    }
    closedir(d);
    return rc;
}

static asset_t *asset_by_rel(assets_t *as, const char *rel, size_t len)
{
    for (size_t i = 0; i < as->n; i++)
        if (strlen(as->a[i].rel) == len && memcmp(as->a[i].rel, rel, len) == 0)
            return &as->a[i];
    return NULL;
}

typedef struct {
    char *b;
    size_t len, cap;
    int oom;
} buf_t;

static void put_n(buf_t *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t c = (o->len + n + 1) * 2;
        char *nb = realloc(o->b, c);
        if (nb == NULL) {
            o->oom = 1;
            return;
        }
        o->b = nb, o->cap = c;
    }
    memcpy(o->b + o->len, s, n);
    o->len += n;
    o->b[o->len] = '\0';
}

static void put_s(buf_t *o, const char *s)
{
    put_n(o, s, strlen(s));
}

/* The import map and a modulepreload link per module. */
static void put_importmap(buf_t *o, assets_t *as)
{
    const char *sep = "";
    put_s(o, "<script type=\"importmap\">{\"imports\":{");
    for (size_t i = 0; i < as->n; i++) {
        if (strcmp(strrchr(as->a[i].rel, '.'), ".css") == 0)
            continue;
        put_s(o, sep), put_s(o, "\""), put_s(o, as->a[i].rel), put_s(o, "\":\""), put_s(o, as->a[i].hashed);
        put_s(o, "\"");
        sep = ",";
    }
    put_s(o, "}}</script>\n");
    for (size_t i = 0; i < as->n; i++)
        if (strcmp(strrchr(as->a[i].rel, '.'), ".css") != 0)
            put_s(o, "<link rel=\"modulepreload\" href=\""), put_s(o, as->a[i].hashed), put_s(o, "\">\n");
}

/* index.html with its references to the assets hashed, the import map
 * before its first <script> (none without a script). */
static void rewrite_index(buf_t *o, const char *in, size_t len, assets_t *as)
{
    int mapped = 0;
    size_t i = 0;
    while (i < len) {
        if (!mapped && in[i] == '<' && i + 7 <= len && strncasecmp(in + i, "<script", 7) == 0) {
            put_importmap(o, as);
            mapped = 1;
        }
        size_t al = 0;
        if ((i + 5 <= len && strncasecmp(in + i, "src=\"", 5) == 0 && (al = 5)) ||
            (i + 6 <= len && strncasecmp(in + i, "href=\"", 6) == 0 && (al = 6))) {
            const char *v = in + i + al, *q = memchr(v, '"', len - i - al);
            if (q != NULL && i > 0 && (in[i - 1] == ' ' || in[i - 1] == '\n' || in[i - 1] == '\t')) {
                char ref[300];
                size_t vl = (size_t)(q - v);
                const char *r = v;
                if (vl >= 2 && r[0] == '.' && r[1] == '/')
                    r += 2, vl -= 2;
                asset_t *a = NULL;
                if (vl > 0 && vl < sizeof(ref) - 1) {
                    snprintf(ref, sizeof(ref), "%s%.*s", r[0] == '/' ? "" : "/", (int)vl, r);
                    a = asset_by_rel(as, ref, strlen(ref));
                }
                if (a != NULL) {
                    put_n(o, in + i, al);
                    put_s(o, a->hashed);
                    i = (size_t)(q - in);
                    continue;
                }
            }
        }
        put_n(o, in + i, 1);
        i++;
    }
}

static int asset_cmp(const void *x, const void *y)
{
    return strcmp(((const asset_t *)x)->rel, ((const asset_t *)y)->rel);
}

/* Read the root's assets and index.html again: 0, or -1 (nothing changed). */
static int assets_build(assets_t *as)
{
    assets_t n;
    memset(&n, 0, sizeof(n));
    if (assets_walk(&n, g_root, "", 0) != 0)
        goto fail;
    if (n.n > 1) /* by name: the same files give the same index.html (and ETag) on every replica */
        qsort(n.a, n.n, sizeof(*n.a), asset_cmp);
    char path[PATH_MAX + 16];
    char *html = NULL;
    size_t hl = 0;
    struct stat st;
    snprintf(path, sizeof(path), "%s/index.html", g_root);
    if (read_small(path, INDEX_MAX, &html, &hl, &st) == 0) {
        buf_t o = {0};
        rewrite_index(&o, html, hl, &n);
        free(html);
        if (o.oom || o.b == NULL) {
            free(o.b);
            goto fail;
        }
        asset_t *x = &n.index;
        x->body = o.b, x->len = o.len;
        x->dev = st.st_dev, x->ino = st.st_ino, x->size = st.st_size, x->mtime = st.st_mtim;
        if (hash_hex(x->body, x->len, x->hash, HASH_HEX) != 0)
            goto fail;
        x->gz = gzip_of(x->body, x->len, &x->gzlen);
        n.has_index = 1;
    }
    assets_free(as);
    *as = n;
    return 0;
fail:
    assets_free(&n);
    return -1;
}

static int same_file(const asset_t *a, const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino && st.st_size == a->size &&
           st.st_mtim.tv_sec == a->mtime.tv_sec && st.st_mtim.tv_nsec == a->mtime.tv_nsec;
}

/* Before index.html goes out: read everything again when a file changed. */
static void assets_check(void)
{
    char path[PATH_MAX + 300];
    int changed = !g_assets.has_index;
    snprintf(path, sizeof(path), "%s/index.html", g_root);
    changed = changed || !same_file(&g_assets.index, path);
    for (size_t i = 0; !changed && i < g_assets.n; i++) {
        snprintf(path, sizeof(path), "%s%s", g_root, g_assets.a[i].rel);
        changed = !same_file(&g_assets.a[i], path);
    }
    if (changed && assets_build(&g_assets) == 0)
        bnb__log(BNB_LOG_INFO, "web app: %zu scripts and styles (re)read under hashed names", g_assets.n);
}

void bnb__web_fini(void)
{
    assets_free(&g_assets);
}

void bnb__web_init(bnb_host_t *h)
{
    const char *cfg = bnb__config_str(h->cfg, "http.web_root");
    char want[PATH_MAX];
    g_root[0] = '\0';
    g_rootlen = 0;
    if (cfg != NULL && strcmp(cfg, "none") == 0) {
        bnb__log(BNB_LOG_INFO, "web app: off (http.web_root: none)");
        return;
    }
    if (cfg != NULL && cfg[0])
        snprintf(want, sizeof(want), "%s", cfg);
    else
        default_root(want, sizeof(want));
    char idx[PATH_MAX + 16];
    snprintf(idx, sizeof(idx), "%s/index.html", want);
    if (realpath(want, g_root) == NULL || !is_dir(g_root) || access(idx, R_OK) != 0) {
        bnb__log(BNB_LOG_WARN, "web app: not served: %s is missing or has no index.html (http.web_root)", want);
        g_root[0] = '\0';
        return;
    }
    g_rootlen = strlen(g_root);
    assets_free(&g_assets);
    if (assets_build(&g_assets) != 0)
        bnb__log(BNB_LOG_WARN, "web app: cannot read its scripts and styles; served under their plain names only");
    bnb__log(BNB_LOG_INFO, "web app: serving %s at / (%zu scripts and styles under hashed names)", g_root, g_assets.n);
}

static void on_route_seg(const char *method, const char *pattern, void *data, void *ud)
{
    (void)method, (void)data, (void)ud;
    const char *s = pattern[0] == '/' ? pattern + 1 : pattern;
    size_t l = strcspn(s, "/");
    if (l == 0 || l >= sizeof(g_reserved[0]) || s[0] == '{')
        return;
    for (size_t i = 0; i < g_nreserved; i++)
        if (strlen(g_reserved[i]) == l && memcmp(g_reserved[i], s, l) == 0)
            return;
    if (g_nreserved < RESERVED_MAX) {
        memcpy(g_reserved[g_nreserved], s, l);
        g_reserved[g_nreserved++][l] = '\0';
    }
}

static int reserved_first_segment(bnb_host_t *h, const char *path, size_t plen)
{
    if (!g_reserved_done) {
        /* routes are registered before the server starts and never change after */
        static const char *const own[] = {"admin", "healthz", "readyz", "metrics", "openapi.json", "auth", "dev"};
        for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
            snprintf(g_reserved[g_nreserved++], sizeof(g_reserved[0]), "%s", own[i]);
        bnb__router_each(h->router, NULL, on_route_seg, NULL);
        g_reserved_done = 1;
    }
    const char *s = path + 1;
    size_t l = 0;
    while (1 + l < plen && s[l] != '/')
        l++;
    for (size_t i = 0; i < g_nreserved; i++)
        if (strlen(g_reserved[i]) == l && memcmp(g_reserved[i], s, l) == 0)
            return 1;
    return 0;
}

/* Every segment: no leading '.', no NUL, no backslash. */
static int path_ok(const char *p, size_t n)
{
    if (n == 0 || p[0] != '/' || n > 1024)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\0' || p[i] == '\\')
            return 0;
        if (p[i] == '/' && i + 1 < n && p[i + 1] == '.')
            return 0;
    }
    return 1;
}

static const struct {
    const char *ext, *type;
} mime[] = {
    {"html", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"ico", "image/x-icon"},
    {"woff2", "font/woff2"},
    {"woff", "font/woff"},
    {"txt", "text/plain; charset=utf-8"},
    {"wasm", "application/wasm"},
};

static const char *mime_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot != NULL)
        for (size_t i = 0; i < sizeof(mime) / sizeof(mime[0]); i++)
            if (strcasecmp(dot + 1, mime[i].ext) == 0)
                return mime[i].type;
    return "application/octet-stream";
}

/* name.<8+ hex>.ext or name-<8+ hex>.ext: content-addressed, never changes */
static int is_hashed(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot == NULL)
        return 0;
    const char *p = dot;
    size_t hex = 0;
    while (p > name && strchr("0123456789abcdefABCDEF", p[-1]) != NULL)
        p--, hex++;
    return hex >= 8 && p > name && (p[-1] == '.' || p[-1] == '-');
}

static int accepts_gzip(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT_ENCODING, -1);
    if (i == -1)
        return 0;
    char v[512];
    snprintf(v, sizeof(v), "%.*s", (int)req->headers.entries[i].value.len, req->headers.entries[i].value.base);
    /* "gzip" as a list member, not with q=0 */
    for (char *save = NULL, *m = strtok_r(v, ",", &save); m != NULL; m = strtok_r(NULL, ",", &save)) {
        while (*m == ' ' || *m == '\t')
            m++;
        if (strncasecmp(m, "gzip", 4) != 0 || (m[4] != '\0' && m[4] != ';' && m[4] != ' '))
            continue;
        const char *q = strstr(m, "q=");
        return q == NULL || strtod(q + 2, NULL) > 0;
    }
    return 0;
}

/* A browser navigating (Accept names text/html); an API client (curl, a
 * test, fetch() of JSON) keeps its 404 problem for an unknown path. */
static int wants_html(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, -1);
    if (i == -1)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    for (size_t k = 0; k + 9 <= v.len; k++)
        if (strncasecmp(v.base + k, "text/html", 9) == 0)
            return 1;
    return 0;
}

/* If-None-Match lists `etag` (weak comparison, or "*"). */
static int etag_matches(h2o_req_t *req, const char *etag)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i == -1)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t el = strlen(etag), k = 0;
    while (k < v.len) {
        while (k < v.len && (v.base[k] == ' ' || v.base[k] == ','))
            k++;
        if (k < v.len && v.base[k] == '*')
            return 1;
        if (k + 2 <= v.len && v.base[k] == 'W' && v.base[k + 1] == '/')
            k += 2;
        size_t s = k;
        while (k < v.len && v.base[k] != ',')
            k++;
        size_t e = k;
        while (e > s && v.base[e - 1] == ' ')
            e--;
        if (e - s == el && memcmp(v.base + s, etag, el) == 0)
            return 1;
    }
    return 0;
}

static void hdr(h2o_req_t *req, const h2o_token_t *t, const char *v)
{
    h2o_add_header(&req->pool, &req->res.headers, t, NULL, h2o_strdup(&req->pool, v, SIZE_MAX).base, strlen(v));
}

static void hdr_str(h2o_req_t *req, const char *name, const char *v)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL,
                          h2o_strdup(&req->pool, v, SIZE_MAX).base, strlen(v));
}

static void log_metrics(bnb_host_t *h, h2o_req_t *req, int status, int64_t t0)
{
    char m[8];
    snprintf(m, sizeof(m), "%.*s", (int)(req->method.len < 7 ? req->method.len : 7), req->method.base);
    bnb__metrics_http(h->metrics, "/ (web app)", m, status, (double)((int64_t)uv_hrtime() - t0) / 1e9);
}

/* The validators and caching headers of a static answer; 1 when the client's
 * copy is current and 304 went out (nothing more to send), else 0. */
static int send_validators(bnb_host_t *h, h2o_req_t *req, const char *etag, const char *cc, int vary, int64_t t0)
{
    hdr(req, H2O_TOKEN_ETAG, etag);
    hdr(req, H2O_TOKEN_CACHE_CONTROL, cc);
    if (vary)
        hdr(req, H2O_TOKEN_VARY, "accept-encoding");
    hdr_str(req, "x-content-type-options", "nosniff");
    if (!etag_matches(req, etag))
        return 0;
    req->res.status = 304;
    req->res.reason = "Not Modified";
    h2o_send_inline(req, "", 0);
    log_metrics(h, req, 304, t0);
    return 1;
}

/* Send `file` (inside the root, a regular file) as `name`'s type: 1 when
 * answered, 0 when it cannot be opened (nothing sent, the caller's 404). */
static int send_file(bnb_host_t *h, h2o_req_t *req, const char *file, const char *name, int64_t t0)
{
    struct stat st;
    char gz[PATH_MAX + 8];
    const char *send = file;
    int gzipped = 0;
    if (stat(file, &st) != 0)
        return 0;
    snprintf(gz, sizeof(gz), "%s.gz", file);
    struct stat gst;
    int has_gz = stat(gz, &gst) == 0 && S_ISREG(gst.st_mode);
    if (has_gz && accepts_gzip(req)) {
        char rgz[PATH_MAX];
        /* the variant must lie in the root as well */
        if (realpath(gz, rgz) != NULL && strncmp(rgz, g_root, g_rootlen) == 0 && rgz[g_rootlen] == '/') {
            send = gz;
            gzipped = 1;
            st = gst;
        }
    }
    char etag[96];
    snprintf(etag, sizeof(etag), "\"%llx-%llx-%llx%s\"", (unsigned long long)st.st_ino, (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec,
             gzipped ? "-gz" : "");
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    const char *cc = is_hashed(base) ? "public, max-age=31536000, immutable" : "no-cache";
    if (send_validators(h, req, etag, cc, has_gz, t0))
        return 1;
    const char *type = mime_of(base);
    if (gzipped)
        hdr(req, H2O_TOKEN_CONTENT_ENCODING, "gzip");
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        /* h2o's file sender always sends the body: answer HEAD here */
        hdr(req, H2O_TOKEN_CONTENT_TYPE, type);
        req->res.status = 200;
        req->res.reason = "OK";
        req->res.content_length = (size_t)st.st_size;
        h2o_send_inline(req, "", 0);
        log_metrics(h, req, 200, t0);
        return 1;
    }
    if (h2o_file_send(req, 200, "OK", send, h2o_iovec_init(type, strlen(type)), H2O_FILE_FLAG_NO_ETAG) != 0) {
        memset(&req->res.headers, 0, sizeof(req->res.headers)); /* nothing went out */
        return 0;
    }
    log_metrics(h, req, 200, t0);
    return 1;
}

/* An asset or the rewritten index.html from memory (gzip when accepted). */
static int send_mem(bnb_host_t *h, h2o_req_t *req, const asset_t *a, const char *name, const char *cc, int64_t t0)
{
    int gz = a->gz != NULL && accepts_gzip(req);
    char etag[HASH_HEX + 8];
    snprintf(etag, sizeof(etag), "\"%s%s\"", a->hash, gz ? "-gz" : "");
    if (send_validators(h, req, etag, cc, a->gz != NULL, t0))
        return 1;
    if (gz)
        hdr(req, H2O_TOKEN_CONTENT_ENCODING, "gzip");
    hdr(req, H2O_TOKEN_CONTENT_TYPE, mime_of(name));
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = gz ? a->gzlen : a->len;
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        h2o_send_inline(req, "", 0);
    else
        h2o_send_inline(req, gz ? a->gz : a->body, gz ? a->gzlen : a->len); /* copied into the request's pool */
    log_metrics(h, req, 200, t0);
    return 1;
}

/* The root's index.html: rewritten, from memory (after reading the app's
 * files again if one changed); from the directory when that failed. */
static int send_index(bnb_host_t *h, h2o_req_t *req, const char *real, int64_t t0)
{
    assets_check();
    if (g_assets.has_index)
        return send_mem(h, req, &g_assets.index, "index.html", "no-cache", t0);
    return send_file(h, req, real, "index.html", t0);
}

static int is_root_index(const char *real)
{
    return strncmp(real, g_root, g_rootlen) == 0 && strcmp(real + g_rootlen, "/index.html") == 0;
}

int bnb__web_serve(bnb_host_t *h, h2o_req_t *req, const char *path, size_t plen)
{
    if (!g_root[0])
        return 0;
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    if (!get && !head)
        return 0;
    if (plen > 1 && reserved_first_segment(h, path, plen))
        return 0;
    int64_t t0 = (int64_t)uv_hrtime();
    if (!path_ok(path, plen))
        return 0;
    char want[PATH_MAX + 1100], real[PATH_MAX], copy[1100];
    /* h2o's path is not NUL-terminated */
    snprintf(copy, sizeof(copy), "%.*s", (int)plen, path);
    path = copy;
    const char *name = path;
    int dir = path[plen - 1] == '/';
    snprintf(want, sizeof(want), "%s%s%s", g_root, path, dir ? "index.html" : "");
    if (dir)
        name = "index.html";
    /* a hashed name of one of the app's scripts or styles: from memory while
     * that is its file's content (the hash names the bytes), else 404 */
    const char *lastseg = strrchr(path, '/') + 1;
    if (!dir && is_hashed(lastseg)) {
        for (size_t i = 0; i < g_assets.n; i++)
            if (strcmp(g_assets.a[i].hashed, path) == 0)
                return send_mem(h, req, &g_assets.a[i], path, "public, max-age=31536000, immutable", t0);
    }
    struct stat st;
    if (realpath(want, real) != NULL) {
        /* out of the root (a symbolic link), or not a file: the usual 404 */
        if (strncmp(real, g_root, g_rootlen) != 0 || real[g_rootlen] != '/' || stat(real, &st) != 0 ||
            !S_ISREG(st.st_mode))
            return 0;
        if (is_root_index(real))
            return send_index(h, req, real, t0);
        return send_file(h, req, real, name, t0);
    }
    /* no such file: a browser's navigation to an app path gets the app */
    const char *last = strrchr(path, '/') + 1;
    if (strchr(last, '.') != NULL || !wants_html(req))
        return 0;
    snprintf(want, sizeof(want), "%s/index.html", g_root);
    if (realpath(want, real) == NULL || strncmp(real, g_root, g_rootlen) != 0 || real[g_rootlen] != '/')
        return 0;
    return send_index(h, req, real, t0);
}

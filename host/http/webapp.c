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
 *     as the socket drains, never a whole big file at once. */
#include "webapp.h"

#include "host.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[PATH_MAX]; /* realpath of the directory, "" when off */
static size_t g_rootlen;

/* First path segments of the API (the router's and the host's own): an app
 * path never starts with one of them, so an unknown API path stays a 404. */
#define RESERVED_MAX 64
static char g_reserved[RESERVED_MAX][48];
static size_t g_nreserved;
static int g_reserved_done;

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
    bnb__log(BNB_LOG_INFO, "web app: serving %s at /", g_root);
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
    hdr(req, H2O_TOKEN_ETAG, etag);
    hdr(req, H2O_TOKEN_CACHE_CONTROL, cc);
    if (has_gz)
        hdr(req, H2O_TOKEN_VARY, "accept-encoding");
    hdr_str(req, "x-content-type-options", "nosniff");
    const char *type = mime_of(base);
    if (etag_matches(req, etag)) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        h2o_send_inline(req, "", 0);
        log_metrics(h, req, 304, t0);
        return 1;
    }
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
    struct stat st;
    if (realpath(want, real) != NULL) {
        /* out of the root (a symbolic link), or not a file: the usual 404 */
        if (strncmp(real, g_root, g_rootlen) != 0 || real[g_rootlen] != '/' || stat(real, &st) != 0 ||
            !S_ISREG(st.st_mode))
            return 0;
        return send_file(h, req, real, name, t0);
    }
    /* no such file: a browser's navigation to an app path gets the app */
    const char *last = strrchr(path, '/') + 1;
    if (strchr(last, '.') != NULL || !wants_html(req))
        return 0;
    snprintf(want, sizeof(want), "%s/index.html", g_root);
    if (realpath(want, real) == NULL || strncmp(real, g_root, g_rootlen) != 0 || real[g_rootlen] != '/')
        return 0;
    return send_file(h, req, real, "index.html", t0);
}

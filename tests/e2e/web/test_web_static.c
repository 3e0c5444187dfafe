/* The web app's static files at `/` (issue 14), over real sockets: content
 * types, ETag and 304, cache headers (hashed assets immutable, index.html
 * no-cache), HEAD, a precompressed .gz, the app-path fallback to index.html,
 * API routes first, 404 for a missing asset, and every way out of the root
 * refused (.., %2e%2e, %2f, dot files, symbolic links); a missing root is
 * simply not served; through a gateway edge the edge serves the app itself.
 * The app's scripts and styles under content-hashed names (test_hashed_assets):
 * index.html rewritten with an import map, the hashed names immutable and
 * gzip-compressed, a stale hash a 404, an edited file a new name at once. */
#include "harness.h"
#include "rawhttp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <zlib.h>

static char g_tmp[256], g_root[300], g_env[400];
static e2e_host_t *g_host;

static void put(const char *rel, const char *text, size_t len)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", g_tmp, rel);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static const char INDEX[] = "<!doctype html><title>BearBnB test app</title><p>INDEX-MARKER</p>\n";
static const char APPJS[] = "export const x = 'APPJS-MARKER';\n";
static const char SECRET[] = "TOPSECRET-OUTSIDE-THE-ROOT\n";
static const char HIDDEN[] = "HIDDEN-DOTFILE\n";
static const char CSS[] = "body { color: #123 }\n";
/* gzip of nothing in particular: the test only checks that these bytes come back */
static const char CSSGZ[] = "\x1f\x8b\x08\x00GZ-VARIANT-MARKER";

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/bnb-web-XXXXXX");
    if (mkdtemp(g_tmp) == NULL)
        return -1;
    snprintf(g_root, sizeof(g_root), "%s/root", g_tmp);
    char p[512];
    mkdir(g_root, 0755);
    snprintf(p, sizeof(p), "%s/root/assets", g_tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/outside", g_tmp);
    mkdir(p, 0755);
    put("root/index.html", INDEX, sizeof(INDEX) - 1);
    put("root/assets/app.0123abcd.js", APPJS, sizeof(APPJS) - 1);
    put("root/app.js", APPJS, sizeof(APPJS) - 1);
    put("root/style.css", CSS, sizeof(CSS) - 1);
    put("root/style.css.gz", CSSGZ, sizeof(CSSGZ) - 1);
    put("root/.hidden", HIDDEN, sizeof(HIDDEN) - 1);
    put("outside/secret.txt", SECRET, sizeof(SECRET) - 1);
    /* a big file: sent in chunks, must arrive whole */
    size_t big = 3 * 1024 * 1024 + 17;
    char *b = malloc(big);
    for (size_t i = 0; i < big; i++)
        b[i] = (char)('a' + (i * 7) % 26);
    put("root/big.bin", b, big);
    free(b);
    char t[512];
    snprintf(p, sizeof(p), "%s/root/leak.txt", g_tmp);
    snprintf(t, sizeof(t), "%s/outside/secret.txt", g_tmp);
    if (symlink(t, p) != 0)
        return -1;
    snprintf(p, sizeof(p), "%s/root/out", g_tmp);
    snprintf(t, sizeof(t), "%s/outside", g_tmp);
    if (symlink(t, p) != 0)
        return -1;
    snprintf(g_env, sizeof(g_env), "BEARBNB_HTTP_WEB_ROOT=%s", g_root);
    const char *env[] = {g_env, NULL};
    e2e_host_opts_t o = {.env = env};
    return e2e_host_start(&g_host, &o);
}

static int teardown(void **state)
{
    (void)state;
    int rc = g_host ? e2e_host_stop(g_host) : 0;
    e2e_host_free(g_host);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        rc = -1;
    return rc;
}

static int port(void)
{
    return e2e_host_port(g_host);
}

static void expect_header(const raw_resp_t *r, const char *name, const char *want)
{
    char v[256] = "";
    if (raw_header(r, name, v, sizeof(v)) != 0 || strcmp(v, want) != 0)
        fail_msg("%s: want '%s', got '%s'\n%s", name, want, v, r->head);
}

static void test_index_and_304(void **state)
{
    (void)state;
    raw_resp_t r;
    assert_int_equal(raw_get(port(), "GET", "/", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-type", "text/html; charset=utf-8");
    expect_header(&r, "cache-control", "no-cache");
    assert_string_equal(r.body, INDEX);
    char etag[128] = "", line[200];
    assert_int_equal(raw_header(&r, "etag", etag, sizeof(etag)), 0);
    assert_true(etag[0] == '"');
    raw_resp_free(&r);

    /* the same file by name: the same validator */
    assert_int_equal(raw_get(port(), "GET", "/index.html", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "etag", etag);
    raw_resp_free(&r);

    snprintf(line, sizeof(line), "If-None-Match: %s\r\n", etag);
    assert_int_equal(raw_get(port(), "GET", "/", line, &r), 0);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    expect_header(&r, "etag", etag);
    expect_header(&r, "cache-control", "no-cache");
    raw_resp_free(&r);
    /* weak comparison, in a list */
    snprintf(line, sizeof(line), "If-None-Match: \"nope\", W/%s\r\n", etag);
    assert_int_equal(raw_get(port(), "GET", "/index.html", line, &r), 0);
    assert_int_equal(r.status, 304);
    raw_resp_free(&r);
    /* another validator: the whole file */
    assert_int_equal(raw_get(port(), "GET", "/", "If-None-Match: \"0-0-0\"\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, INDEX);
    raw_resp_free(&r);
}

static void test_types_and_cache(void **state)
{
    (void)state;
    raw_resp_t r;
    assert_int_equal(raw_get(port(), "GET", "/assets/app.0123abcd.js", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-type", "text/javascript; charset=utf-8");
    expect_header(&r, "cache-control", "public, max-age=31536000, immutable");
    expect_header(&r, "x-content-type-options", "nosniff");
    assert_string_equal(r.body, APPJS);
    raw_resp_free(&r);
    /* not hashed: revalidated */
    assert_int_equal(raw_get(port(), "GET", "/app.js", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "cache-control", "no-cache");
    raw_resp_free(&r);
    assert_int_equal(raw_get(port(), "GET", "/style.css", NULL, &r), 0);
    expect_header(&r, "content-type", "text/css; charset=utf-8");
    expect_header(&r, "vary", "accept-encoding");
    assert_string_equal(r.body, CSS);
    char v[64];
    assert_int_not_equal(raw_header(&r, "content-encoding", v, sizeof(v)), 0);
    raw_resp_free(&r);
}

static void test_head(void **state)
{
    (void)state;
    raw_resp_t r;
    assert_int_equal(raw_get(port(), "HEAD", "/assets/app.0123abcd.js", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    char v[64];
    snprintf(v, sizeof(v), "%zu", sizeof(APPJS) - 1);
    expect_header(&r, "content-length", v);
    expect_header(&r, "content-type", "text/javascript; charset=utf-8");
    expect_header(&r, "cache-control", "public, max-age=31536000, immutable");
    raw_resp_free(&r);
    assert_int_equal(raw_get(port(), "HEAD", "/", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    expect_header(&r, "content-type", "text/html; charset=utf-8");
    raw_resp_free(&r);
}

static void test_gzip(void **state)
{
    (void)state;
    raw_resp_t r;
    assert_int_equal(raw_get(port(), "GET", "/style.css", "Accept-Encoding: br, gzip;q=0.8\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-encoding", "gzip");
    expect_header(&r, "content-type", "text/css; charset=utf-8");
    expect_header(&r, "vary", "accept-encoding");
    assert_int_equal(r.body_len, sizeof(CSSGZ) - 1);
    assert_memory_equal(r.body, CSSGZ, sizeof(CSSGZ) - 1);
    char etag[128], plain[128];
    assert_int_equal(raw_header(&r, "etag", etag, sizeof(etag)), 0);
    raw_resp_free(&r);
    /* q=0 refuses it */
    assert_int_equal(raw_get(port(), "GET", "/style.css", "Accept-Encoding: gzip;q=0\r\n", &r), 0);
    assert_string_equal(r.body, CSS);
    assert_int_equal(raw_header(&r, "etag", plain, sizeof(plain)), 0);
    assert_string_not_equal(etag, plain); /* two representations, two validators */
    raw_resp_free(&r);
}

static void test_app_fallback_and_404(void **state)
{
    (void)state;
    raw_resp_t r;
    /* a browser's navigation to an app path: the app itself, revalidated */
    static const char nav[] = "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n";
    assert_int_equal(raw_get(port(), "GET", "/trips/42", nav, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-type", "text/html; charset=utf-8");
    expect_header(&r, "cache-control", "no-cache");
    assert_string_equal(r.body, INDEX);
    raw_resp_free(&r);
    /* an API client asking for an unknown path: still a 404 problem */
    assert_int_equal(raw_get(port(), "GET", "/trips/42", "Accept: application/json\r\n", &r), 0);
    assert_int_equal(r.status, 404);
    expect_header(&r, "content-type", "application/problem+json");
    raw_resp_free(&r);
    assert_int_equal(raw_get(port(), "GET", "/trips/42", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    raw_resp_free(&r);
    /* a missing asset: 404 problem, never the app */
    assert_int_equal(raw_get(port(), "GET", "/assets/missing.0123abcd.js", nav, &r), 0);
    assert_int_equal(r.status, 404);
    expect_header(&r, "content-type", "application/problem+json");
    assert_null(strstr(r.body, "INDEX-MARKER"));
    raw_resp_free(&r);
    /* API routes keep priority; an unknown API path stays an API 404 */
    assert_int_equal(raw_get(port(), "GET", "/rooms", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-type", "application/json");
    raw_resp_free(&r);
    assert_int_equal(raw_get(port(), "GET", "/rooms/abc/nothing/here", nav, &r), 0);
    assert_int_equal(r.status, 404);
    expect_header(&r, "content-type", "application/problem+json");
    assert_null(strstr(r.body, "INDEX-MARKER"));
    raw_resp_free(&r);
    assert_int_equal(raw_get(port(), "GET", "/healthz", NULL, &r), 0);
    expect_header(&r, "content-type", "application/json");
    raw_resp_free(&r);
    /* only GET and HEAD */
    assert_int_equal(raw_get(port(), "DELETE", "/index.html", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    raw_resp_free(&r);
}

static void test_big_file(void **state)
{
    (void)state;
    raw_resp_t r;
    assert_int_equal(raw_get(port(), "GET", "/big.bin", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-type", "application/octet-stream");
    assert_int_equal(r.body_len, 3 * 1024 * 1024 + 17);
    for (size_t i = 0; i < r.body_len; i += 4093)
        assert_int_equal(r.body[i], (char)('a' + (i * 7) % 26));
    raw_resp_free(&r);
}

static void test_traversal(void **state)
{
    (void)state;
    static const char *const attempts[] = {
        "/../outside/secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/..%2foutside%2fsecret.txt",
        "/%2e%2e%2foutside%2fsecret.txt",
        "/assets/../../outside/secret.txt",
        "/.%2e/outside/secret.txt",
        "/leak.txt",       /* a symbolic link out of the root */
        "/out/secret.txt", /* through a linked directory */
        "/.hidden",        /* dot files */
        "/%2ehidden",
        "/assets/%2e%2e/.hidden",
        "/index.html%00.js",
        "/..\\outside\\secret.txt",
        "//outside/secret.txt",
    };
    for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
        raw_resp_t r;
        assert_int_equal(raw_get(port(), "GET", attempts[i], "Accept: text/html\r\n", &r), 0);
        if (strstr(r.body, "TOPSECRET") != NULL || strstr(r.body, "HIDDEN-DOTFILE") != NULL ||
            strstr(r.body, "root:") != NULL)
            fail_msg("%s leaked a file: %d\n%s", attempts[i], r.status, r.body);
        /* either refused, or the app's own index (a normalised app path) */
        if (r.status != 404 && r.status != 400 && !(r.status == 200 && strcmp(r.body, INDEX) == 0))
            fail_msg("%s: unexpected %d\n%s", attempts[i], r.status, r.head);
        raw_resp_free(&r);
    }
}

/* No directory: the route is absent (404 problem), the log says why. */
static void test_missing_root(void **state)
{
    (void)state;
    e2e_host_t *h = NULL;
    const char *env[] = {"BEARBNB_HTTP_WEB_ROOT=/nonexistent/bearbnb-web", "BEARBNB_PLUGINS=room", NULL};
    e2e_host_opts_t o = {.env = env};
    assert_int_equal(e2e_host_start(&h, &o), 0);
    raw_resp_t r;
    assert_int_equal(raw_get(e2e_host_port(h), "GET", "/", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    expect_header(&r, "content-type", "application/problem+json");
    raw_resp_free(&r);
    char *log = e2e_host_log_tail(h, 1 << 16);
    assert_non_null(log);
    assert_non_null(strstr(log, "web app: not served"));
    free(log);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
}

/* An edge (no plugin, gateway routes to a service): it serves the app
 * itself, and proxies the API. */
static void test_through_edge(void **state)
{
    (void)state;
    char routes[200], sf[400], secret[400];
    snprintf(secret, sizeof(secret), "%s/gw.secret", g_tmp);
    FILE *f = fopen(secret, "w");
    assert_non_null(f);
    fputs("0123456789abcdef0123456789abcdef\n", f);
    fclose(f);
    snprintf(sf, sizeof(sf), "BEARBNB_GATEWAY_SECRET_FILE=%s", secret);
    snprintf(routes, sizeof(routes), "BEARBNB_GATEWAY_ROUTES=/rooms=http://127.0.0.1:%d", port());
    const char *env[] = {"BEARBNB_PLUGINS=", routes, sf, g_env, NULL};
    e2e_host_opts_t o = {.env = env};
    e2e_host_t *edge = NULL;
    assert_int_equal(e2e_host_start(&edge, &o), 0);
    raw_resp_t r;
    assert_int_equal(raw_get(e2e_host_port(edge), "GET", "/", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, INDEX);
    raw_resp_free(&r);
    assert_int_equal(raw_get(e2e_host_port(edge), "GET", "/assets/app.0123abcd.js", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "cache-control", "public, max-age=31536000, immutable");
    raw_resp_free(&r);
    assert_int_equal(raw_get(e2e_host_port(edge), "GET", "/rooms", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-type", "application/json");
    raw_resp_free(&r);
    assert_int_equal(raw_get(e2e_host_port(edge), "GET", "/rooms/a/b/c", NULL, &r), 0);
    assert_null(strstr(r.body, "INDEX-MARKER"));
    raw_resp_free(&r);
    assert_int_equal(e2e_host_stop(edge), 0);
    e2e_host_free(edge);
}

/* ---- hashed assets ------------------------------------------------------- */

static const char APP_INDEX[] =
    "<!doctype html>\n<html><head><title>app</title>\n"
    "<link rel=\"stylesheet\" href=\"app.css\">\n"
    "<script type=\"module\" src=\"./js/main.js\"></script>\n"
    "</head><body><a href=\"#/x\">x</a><img src=\"https://example.invalid/js/main.js\"></body></html>\n";

/* SHA-256 of the text, its first 12 hex digits */
static void hash12(const char *text, size_t len, char out[13])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(text, len, md, &n, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 6; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* a module of some size (so that gzip saves something): `tag` in it */
static char *module_text(const char *tag, int lines)
{
    size_t cap = 64 + (size_t)lines * 80;
    char *b = malloc(cap);
    size_t n = (size_t)snprintf(b, cap, "export const dep = '%s';\n", tag);
    for (int i = 0; i < lines; i++)
        n += (size_t)snprintf(b + n, cap - n, "// line %d of a module that compresses well, %s\n", i, tag);
    return b;
}

static void gunzip_equals(const raw_resp_t *r, const char *want, size_t wlen)
{
    char *out = malloc(wlen + 64);
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)r->body;
    z.avail_in = (uInt)r->body_len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)(wlen + 64);
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.total_out, wlen);
    assert_memory_equal(out, want, wlen);
    inflateEnd(&z);
    free(out);
}

static void test_hashed_assets(void **state)
{
    (void)state;
    char p[600], env[700], hm[13], hd[13], hd2[13], hc[13], want[200], etag[64], line[200];
    snprintf(p, sizeof(p), "%s/app", g_tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/app/js", g_tmp);
    mkdir(p, 0755);
    static const char MAIN[] = "import { dep } from './dep.js';\ndocument.title = dep;\n";
    char *dep = module_text("first", 40), *dep2 = module_text("second, longer", 41);
    char *css = module_text("css", 30);
    put("app/index.html", APP_INDEX, sizeof(APP_INDEX) - 1);
    put("app/js/main.js", MAIN, sizeof(MAIN) - 1);
    put("app/js/dep.js", dep, strlen(dep));
    put("app/js/.hidden.js", "HIDDEN", 6);
    put("app/app.css", css, strlen(css));
    hash12(MAIN, sizeof(MAIN) - 1, hm);
    hash12(dep, strlen(dep), hd);
    hash12(dep2, strlen(dep2), hd2);
    hash12(css, strlen(css), hc);
    snprintf(env, sizeof(env), "BEARBNB_HTTP_WEB_ROOT=%s/app", g_tmp);
    const char *envs[] = {env, "BEARBNB_PLUGINS=room", NULL};
    e2e_host_opts_t o = {.env = envs};
    e2e_host_t *h = NULL;
    assert_int_equal(e2e_host_start(&h, &o), 0);
    int hp = e2e_host_port(h);
    raw_resp_t r;

    /* index.html: references hashed, absolute; an import map before the first script */
    assert_int_equal(raw_get(hp, "GET", "/", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "cache-control", "no-cache");
    expect_header(&r, "content-type", "text/html; charset=utf-8");
    assert_int_equal(raw_header(&r, "etag", etag, sizeof(etag)), 0);
    snprintf(want, sizeof(want), "href=\"/app.%s.css\"", hc);
    assert_non_null(strstr(r.body, want));
    snprintf(want, sizeof(want), "<script type=\"module\" src=\"/js/main.%s.js\">", hm);
    assert_non_null(strstr(r.body, want));
    snprintf(want, sizeof(want), "\"/js/dep.js\":\"/js/dep.%s.js\"", hd);
    const char *map = strstr(r.body, "<script type=\"importmap\">");
    assert_non_null(map);
    assert_true(map < strstr(r.body, "<script type=\"module\""));
    assert_non_null(strstr(map, want));
    snprintf(want, sizeof(want), "<link rel=\"modulepreload\" href=\"/js/dep.%s.js\">", hd);
    assert_non_null(strstr(r.body, want));
    assert_null(strstr(r.body, "hidden"));
    assert_non_null(strstr(r.body, "src=\"https://example.invalid/js/main.js\"")); /* not ours: as it was */
    raw_resp_free(&r);
    snprintf(line, sizeof(line), "If-None-Match: %s\r\n", etag);
    assert_int_equal(raw_get(hp, "GET", "/", line, &r), 0);
    assert_int_equal(r.status, 304);
    raw_resp_free(&r);
    /* the same rewritten app for a browser's navigation to an app path */
    assert_int_equal(raw_get(hp, "GET", "/trips/42", "Accept: text/html\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "etag", etag);
    raw_resp_free(&r);

    /* a hashed name: its bytes, immutable; gzip when accepted */
    char path[100];
    snprintf(path, sizeof(path), "/js/dep.%s.js", hd);
    assert_int_equal(raw_get(hp, "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "cache-control", "public, max-age=31536000, immutable");
    expect_header(&r, "content-type", "text/javascript; charset=utf-8");
    expect_header(&r, "vary", "accept-encoding");
    assert_int_equal(r.body_len, strlen(dep));
    assert_memory_equal(r.body, dep, strlen(dep));
    char etag_js[64], etag_gz[64];
    assert_int_equal(raw_header(&r, "etag", etag_js, sizeof(etag_js)), 0);
    raw_resp_free(&r);
    assert_int_equal(raw_get(hp, "GET", path, "Accept-Encoding: gzip, deflate\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-encoding", "gzip");
    assert_true(r.body_len < strlen(dep) / 2);
    gunzip_equals(&r, dep, strlen(dep));
    assert_int_equal(raw_header(&r, "etag", etag_gz, sizeof(etag_gz)), 0);
    assert_string_not_equal(etag_js, etag_gz);
    raw_resp_free(&r);
    snprintf(line, sizeof(line), "If-None-Match: %s\r\n", etag_js);
    assert_int_equal(raw_get(hp, "GET", path, line, &r), 0);
    assert_int_equal(r.status, 304);
    raw_resp_free(&r);
    assert_int_equal(raw_get(hp, "HEAD", path, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    snprintf(want, sizeof(want), "%zu", strlen(dep));
    expect_header(&r, "content-length", want);
    raw_resp_free(&r);
    snprintf(want, sizeof(want), "/app.%s.css", hc);
    assert_int_equal(raw_get(hp, "GET", want, "Accept-Encoding: gzip\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "content-type", "text/css; charset=utf-8");
    gunzip_equals(&r, css, strlen(css));
    raw_resp_free(&r);
    /* a hash that is not the file's: 404, never other bytes under that name */
    assert_int_equal(raw_get(hp, "GET", "/js/dep.0123456789ab.js", "Accept: text/html\r\n", &r), 0);
    assert_int_equal(r.status, 404);
    raw_resp_free(&r);
    /* the plain name: from the directory, revalidated */
    assert_int_equal(raw_get(hp, "GET", "/js/dep.js", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "cache-control", "no-cache");
    raw_resp_free(&r);

    /* an edited module: the next index.html names its new hash (and only its:
     * main.js, which imports it, keeps its name); the old name is gone */
    put("app/js/dep.js", dep2, strlen(dep2));
    assert_int_equal(raw_get(hp, "GET", "/", line, &r), 0); /* the old index's validator */
    assert_int_equal(r.status, 200);
    snprintf(want, sizeof(want), "\"/js/dep.js\":\"/js/dep.%s.js\"", hd2);
    assert_non_null(strstr(r.body, want));
    snprintf(want, sizeof(want), "src=\"/js/main.%s.js\"", hm);
    assert_non_null(strstr(r.body, want));
    raw_resp_free(&r);
    assert_int_equal(raw_get(hp, "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    raw_resp_free(&r);
    snprintf(path, sizeof(path), "/js/dep.%s.js", hd2);
    assert_int_equal(raw_get(hp, "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, dep2, strlen(dep2));
    raw_resp_free(&r);
    char *log = e2e_host_log_tail(h, 1 << 16);
    assert_non_null(log);
    assert_non_null(strstr(log, "(3 scripts and styles under hashed names)")); /* not the dot file */
    assert_non_null(strstr(log, "3 scripts and styles (re)read under hashed names"));
    free(log);
    assert_int_equal(e2e_host_stop(h), 0);
    e2e_host_free(h);
    free(dep);
    free(dep2);
    free(css);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_and_304),
        cmocka_unit_test(test_types_and_cache),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_gzip),
        cmocka_unit_test(test_app_fallback_and_404),
        cmocka_unit_test(test_big_file),
        cmocka_unit_test(test_traversal),
        cmocka_unit_test(test_missing_root),
        cmocka_unit_test(test_through_edge),
        cmocka_unit_test(test_hashed_assets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

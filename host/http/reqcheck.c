#include "reqcheck.h"

#include <stdlib.h>
#include <string.h>

static int is_tchar(unsigned char c)
{
    /* RFC 9110 §5.6.2 token characters */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int eq_ci(const char *a, size_t n, const char *b)
{
    size_t l = strlen(b);
    if (n != l)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

int bnb__media_type_is_json(const char *v, size_t n)
{
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    size_t t0 = i;
    while (i < n && is_tchar((unsigned char)v[i]))
        i++;
    size_t tl = i - t0;
    if (tl == 0 || i >= n || v[i] != '/')
        return 0;
    i++;
    size_t s0 = i;
    while (i < n && is_tchar((unsigned char)v[i]))
        i++;
    size_t sl = i - s0;
    if (sl == 0)
        return 0;
    /* what follows the subtype may only be whitespace and parameters */
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (i < n && v[i] != ';')
        return 0;
    if (!eq_ci(v + t0, tl, "application"))
        return 0;
    return eq_ci(v + s0, sl, "json") || (sl > 5 && eq_ci(v + s0 + sl - 5, 5, "+json"));
}

int bnb__correlation_id_ok(const char *v, size_t n)
{
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '_' ||
              c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int pct_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%')
            continue;
        int h, l;
        if (i + 2 >= n)
            return 0;
        if ((h = hexval((unsigned char)s[i + 1])) < 0 || (l = hexval((unsigned char)s[i + 2])) < 0 || h * 16 + l == 0)
            return 0;
        i += 2;
    }
    return 1;
}

int bnb__query_check(const char *q, size_t n, char *name, size_t namelen)
{
    size_t p = 0;
    while (p < n) {
        const char *amp = memchr(q + p, '&', n - p);
        size_t seg = amp ? (size_t)(amp - (q + p)) : n - p;
        const char *s = q + p;
        const char *eq = memchr(s, '=', seg);
        size_t kl = eq ? (size_t)(eq - s) : seg;
        if (!pct_ok(s, kl) || (eq && !pct_ok(eq + 1, seg - kl - 1))) {
            size_t o = 0;
            for (size_t i = 0; i < kl && o + 1 < namelen; i++) {
                unsigned char c = (unsigned char)s[i];
                name[o++] = c < 0x20 || c >= 0x7f || c == '"' || c == '\\' ? '?' : (char)c;
            }
            if (namelen > 0)
                name[o] = '\0';
            return -1;
        }
        p += seg + 1;
    }
    return 0;
}

char *bnb__uri_forwardable(const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(n * 3 + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || strchr("\"#<>\\^`{|}", c) != NULL) {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    return out;
}

/*
 * Request-target helpers (see gateway/http_path.h): strict percent-decoding, path splitting and
 * query-string lookup. Every loop walks its input once; nothing allocates.
 */
#include "gateway/http_path.h"

#include <string.h>

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long spool_http_pct_decode(const char *in, size_t len, bool plus_is_space, char *out, size_t out_size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (len - i < 3) return -1;
            int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi << 4 | lo);
            if (c == '\0') return -1;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '\0') {
            return -1;
        }
        if (o + 1 >= out_size) return -1;
        out[o++] = c;
    }
    if (out_size == 0) return -1;
    out[o] = '\0';
    return (long)o;
}

long spool_http_path_split(const char *path, size_t len, struct spool_slice *segs, size_t max)
{
    if (len == 0 || path[0] != '/') return -1;
    size_t n = 0, start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if (n == max) return -1;
            segs[n].p = path + start;
            segs[n].len = i - start;
            n++;
            start = i + 1;
        }
    }
    return (long)n;
}

bool spool_http_query_next(const char *query, size_t len, size_t *pos, struct spool_slice *key,
                           struct spool_slice *value)
{
    while (*pos < len) {
        size_t start = *pos, end = start;
        while (end < len && query[end] != '&') end++;
        *pos = end < len ? end + 1 : len;
        if (end == start) continue;
        const char *eq = memchr(query + start, '=', end - start);
        key->p = query + start;
        if (eq == NULL) {
            key->len = end - start;
            value->p = query + end;
            value->len = 0;
        } else {
            key->len = (size_t)(eq - (query + start));
            value->p = eq + 1;
            value->len = (size_t)(query + end - (eq + 1));
        }
        return true;
    }
    return false;
}

long spool_http_query_get(const char *query, const char *name, char *out, size_t out_size)
{
    size_t len = strlen(query), pos = 0, name_len = strlen(name);
    struct spool_slice k, v;
    char kbuf[128];
    while (spool_http_query_next(query, len, &pos, &k, &v)) {
        long kl = spool_http_pct_decode(k.p, k.len, true, kbuf, sizeof kbuf);
        if (kl < 0) {
            if (k.len < sizeof kbuf) return -2; /* badly encoded key */
            continue;                           /* too long to be any name we look up */
        }
        if ((size_t)kl != name_len || memcmp(kbuf, name, name_len) != 0) continue;
        long vl = spool_http_pct_decode(v.p, v.len, true, out, out_size);
        return vl < 0 ? -2 : vl;
    }
    return -1;
}

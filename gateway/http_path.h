/*
 * Pure functions over the pieces of a request target: percent-decoding, splitting a path into
 * segments, and reading a query string. No allocation, no I/O, no state, so they are easy to
 * fuzz (tests/fuzz/fuzz_http_path.c) and to reason about.
 *
 * Decoding is strict: '%' must be followed by two hex digits, and a decoded NUL byte is refused
 * (names and values become C strings later). In query strings '+' decodes to a space; in paths
 * it stays '+'. Routing splits the *raw* path at '/' and decodes each segment separately, so a
 * channel name may contain an encoded slash ("a%2Fb" is the one segment "a/b").
 */
#ifndef SPOOL_GATEWAY_HTTP_PATH_H
#define SPOOL_GATEWAY_HTTP_PATH_H

#include <stdbool.h>
#include <stddef.h>

struct spool_slice {
    const char *p;
    size_t len;
};

/* Decodes in[0..len) into out (at most out_size - 1 bytes, NUL-terminated). Returns the decoded
 * length, or -1 on a bad escape, a decoded NUL, or when out is too small. `out` may be `in`
 * (decoding never grows). */
long spool_http_pct_decode(const char *in, size_t len, bool plus_is_space, char *out, size_t out_size);

/* Splits an absolute raw path ("/a/b/") at '/': fills up to `max` segments (the empty segment
 * after a trailing '/' is kept, so "/a/" is {"a", ""}) and returns the count, or -1 when the path
 * does not start with '/' or has more than `max` segments. */
long spool_http_path_split(const char *path, size_t len, struct spool_slice *segs, size_t max);

/* Iterates "k=v&k2=v2" pairs (raw, not decoded). `*pos` starts at 0. Returns true and fills
 * key/value (value empty when there is no '='), false at the end. Empty pairs ("a=1&&b") are
 * skipped. */
bool spool_http_query_next(const char *query, size_t len, size_t *pos, struct spool_slice *key,
                           struct spool_slice *value);

/* Finds the first parameter named `name` (compared after decoding) and decodes its value into
 * out. Returns the value's length, -1 when absent, -2 when it (or a key) is badly encoded or
 * does not fit. */
long spool_http_query_get(const char *query, const char *name, char *out, size_t out_size);

#endif

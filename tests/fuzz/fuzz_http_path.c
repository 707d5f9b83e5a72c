/*
 * Fuzzes the hand-written request-target helpers (gateway/http_path.h) and the channel name rule
 * (gateway/channel_name.h): strict percent-decoding in both modes (checked against properties:
 * never longer than the input, no NUL inside, decoding in place gives the same bytes), path
 * splitting (segments tile the input), query iteration (pairs stay inside the input) and lookup.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/channel_name.h"
#include "gateway/http_path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    const char *in = (const char *)data;
    char *out = malloc(size + 1), *inplace = malloc(size + 1);
    for (int plus = 0; plus < 2; plus++) {
        long n = spool_http_pct_decode(in, size, plus, out, size + 1);
        if (n >= 0) {
            if ((size_t)n > size || strlen(out) != (size_t)n) abort();
            memcpy(inplace, in, size);
            if (spool_http_pct_decode(inplace, size, plus, inplace, size + 1) != n) abort();
            if (memcmp(inplace, out, (size_t)n + 1) != 0) abort();
        }
        /* a too-small buffer never overflows */
        if (size > 0) (void)spool_http_pct_decode(in, size, plus, out, size / 2 + 1);
    }
    struct spool_slice segs[16];
    long ns = spool_http_path_split(in, size, segs, 16);
    if (ns > 0) {
        size_t covered = 0;
        for (long i = 0; i < ns; i++) {
            if (segs[i].p < in || segs[i].p + segs[i].len > in + size) abort();
            covered += segs[i].len + 1; /* + the '/' before it */
        }
        if (covered != size) abort();
    }
    char *q = malloc(size + 1);
    memcpy(q, in, size);
    q[size] = '\0';
    size_t qlen = strlen(q), pos = 0;
    struct spool_slice k, v;
    for (int i = 0; i < 4096 && spool_http_query_next(q, qlen, &pos, &k, &v); i++)
        if (k.p < q || v.p + v.len > q + qlen || pos > qlen) abort();
    char val[64];
    (void)spool_http_query_get(q, "from", val, sizeof val);
    (void)spool_http_query_get(q, "key", val, sizeof val);
    const char *why;
    if (!spool_channel_name_valid(in, size, 256, &why) && why == NULL) abort();
    free(q);
    free(inplace);
    free(out);
    return 0;
}

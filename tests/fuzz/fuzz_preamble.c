/*
 * Fuzzes the cluster-port preamble parser (cluster/preamble.h), exactly as the accepting side
 * drives it: fed a growing prefix of the bytes received, it must only ever say "need more"
 * with a size within bounds and larger than what it has, "bad", or "complete" with a size
 * it was given. Checked on every prefix:
 *   - a prefix of a complete preamble never answers "bad", and asks for no more than the
 *     full preamble;
 *   - once "bad", every longer prefix is "bad" (the connection was closed on the first);
 *   - a complete preamble re-encodes to exactly the bytes it was parsed from.
 * ASan checks the parser never reads past the prefix it was given (each prefix is copied into
 * an exactly-sized heap buffer).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/preamble.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * SPOOL_PREAMBLE_MAX) size = 2 * SPOOL_PREAMBLE_MAX;
    int first = -1;       /* result for the first prefix that was not "need more" */
    size_t complete = 0;  /* size of the complete preamble, once found */
    for (size_t len = 0; len <= size; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        if (copy == NULL) abort();
        memcpy(copy, data, len);
        struct spool_preamble p;
        struct spool_err err;
        size_t need = 0;
        int rv = spool_preamble_parse(copy, len, &p, &need, &err);
        switch (rv) {
            case SPOOL_PREAMBLE_MORE:
                if (first != -1) abort(); /* went back to "need more" */
                if (need <= len || need > SPOOL_PREAMBLE_MAX) abort();
                break;
            case SPOOL_PREAMBLE_BAD:
                if (first == SPOOL_PREAMBLE_OK) abort(); /* extra bytes made it bad */
                if (err.code != SPOOL_ECORRUPT) abort();
                first = rv;
                break;
            case SPOOL_PREAMBLE_OK: {
                if (first == SPOOL_PREAMBLE_BAD) abort();
                if (need > len || need < SPOOL_PREAMBLE_FIXED) abort();
                if (complete != 0 && need != complete) abort();
                complete = need;
                first = rv;
                uint8_t again[SPOOL_PREAMBLE_MAX];
                size_t n = spool_preamble_encode(&p, again);
                if (n != need || memcmp(again, copy, n) != 0) abort();
                break;
            }
            default:
                abort();
        }
        free(copy);
    }
    return 0;
}

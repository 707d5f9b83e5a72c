/*
 * Fuzzes the REST publish body reader (gateway/http_publish_body.h) differentially: the scanner's
 * reading of a body must give exactly what jansson's gives, answers of failures included
 * (tests/fuzz/http_publish_body_diff.h). The first byte picks the credentials' client id and the
 * limits (field, message and batch sizes), so the verdict paths (too long, forbidden, too large,
 * too many messages) are compared too; the rest is the body.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz/http_publish_body_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65536)
        return 0;
    static const char *const ids[4] = {"", "alice", "bob", "al"};
    static const uint64_t field[4] = {4, 16, 256, 65536};
    static const uint64_t message[4] = {0, 8, 100, 65536};
    static const uint64_t batch[4] = {1000, 1, 2, 16};
    unsigned k = data[0];
    const struct spool_publish_limits lim = {batch[(k >> 6) & 3], field[(k >> 2) & 3],
                                             message[(k >> 4) & 3]};
    publish_body_diff((const char *)data + 1, size - 1, ids[k & 3], &lim);
    return 0;
}

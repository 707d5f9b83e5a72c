/* ForwardPublishBatch splitter (see fwd_scan.h). */
#include "cluster/fwd_scan.h"

/* A varint of at most 10 bytes starting at buf[*i] (< len); -1 if cut short or too long. */
static int get_varint(const uint8_t *buf, size_t len, size_t *i, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0, k = 0; k < 10; k++, shift += 7) {
        if (*i >= len)
            return -1;
        uint8_t b = buf[(*i)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

long spool_fwd_scan(const uint8_t *buf, size_t len, struct spool_fwd_slice *out, size_t max)
{
    size_t i = 0, k = 0;
    while (i < len) {
        if (buf[i++] != 0x0a) /* field 1, length-delimited, as protobuf-c writes it */
            return -1;
        uint64_t n;
        if (get_varint(buf, len, &i, &n) != 0 || n > len - i || k == max)
            return -1;
        out[k].buf = buf + i;
        out[k].len = (size_t)n;
        k++;
        i += (size_t)n;
    }
    return (long)k;
}

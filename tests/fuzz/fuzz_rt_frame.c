/*
 * Fuzzes the realtime publish frame scanner (gateway/rt_frame.h) differentially against jansson:
 * whenever the scanner accepts a frame, jansson + spool_message_from_json must read it to the
 * same serial, channel, messages and records (tests/fuzz/rt_frame_diff.h). The first byte picks
 * the credentials' client id and the limits, so the verdict paths (too long, forbidden, too
 * large) are compared too; the rest is the frame.
 */
#include <stdint.h>
#include <stddef.h>

#include "fuzz/rt_frame_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65536)
        return 0;
    static const char *const ids[4] = {"", "alice", "bob", "al"};
    static const uint64_t field[4] = {4, 16, 256, 65536};
    static const uint64_t message[4] = {0, 8, 100, 65536};
    unsigned k = data[0];
    const struct spool_message_limits lim = {field[(k >> 2) & 3], message[(k >> 4) & 3]};
    rt_frame_diff((const char *)data + 1, size - 1, ids[k & 3], &lim);
    return 0;
}

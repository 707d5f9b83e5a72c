/*
 * Differential fuzzing of the WebSocket direct read path (gateway/websocket.h "Reading") against
 * wslay: the same client byte stream, cut into reads the same way, is fed to one struct spool_ws
 * reading directly where it can and to one reading everything through wslay
 * (spool_ws_config.wslay_only), each on its own loop and socketpair (tests/gateway/ws_pair.h,
 * shared with test_ws_fastread.c). Both must deliver the same messages (opcode, bytes, order),
 * write back the same bytes (echoes, pongs, close frames), and end the same way (ended by itself
 * or not, close code, closing and peer-closed states); any difference aborts, naming it.
 *
 * Input layout:
 *   byte 0   the limits: bits 0-1 max_frame_bytes {125, 260, 1024, 65535}, bits 2-3
 *            max_message_bytes {400, 200, 4096, 1 MiB}, bit 4 a send buffer of 300 bytes (echoes
 *            soon overflow it: close 1008) instead of 1 MiB;
 *   byte 1   how the stream is cut into reads: n = byte & 31 cut bytes follow, each moving the
 *            next cut 1 + byte further (cuts past the end are ignored); when byte >> 5 is 7, every
 *            byte is a read of its own instead (the direct path then never runs: wslay alone);
 *   the rest the client's bytes (frames as a client writes them: masked).
 * Inputs over 16 KiB are ignored (the logs in ws_result are sized for them).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/ws_pair.h"

#define WS_FUZZ_MAX_INPUT (16 * 1024)

static struct ws_result direct, reference;
static size_t cuts[WS_FUZZ_MAX_INPUT];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        spool_log_set_level(SPOOL_LOG_ERROR); /* one line per refused frame otherwise */
        init = true;
    }
    if (size < 2 || size > WS_FUZZ_MAX_INPUT)
        return 0;
    static const uint64_t frame_max[] = {125, 260, 1024, 65535};
    static const uint64_t msg_max[] = {400, 200, 4096, 1 << 20};
    struct spool_ws_config cfg = {.max_frame_bytes = frame_max[data[0] & 3],
                                  .max_message_bytes = msg_max[(data[0] >> 2) & 3],
                                  .send_buffer_bytes = (data[0] & 0x10) ? 300 : 1 << 20,
                                  .heartbeat_ms = 0,
                                  .close_timeout_ms = 5000};
    size_t pos = 2, n_cuts = 0;
    const uint8_t *stream;
    size_t len;
    if ((data[1] >> 5) == 7) {
        stream = data + 2;
        len = size - 2;
        for (size_t i = 1; i < len; i++)
            cuts[n_cuts++] = i;
    } else {
        size_t want = data[1] & 31, at = 0;
        if (size - pos < want)
            want = size - pos;
        stream = data + pos + want;
        len = size - pos - want;
        for (size_t i = 0; i < want; i++) {
            at += 1 + (size_t)data[pos + i];
            if (at < len)
                cuts[n_cuts++] = at;
        }
    }
    ws_pair_run(stream, len, cuts, n_cuts, &cfg, 0, &direct);
    cfg.wslay_only = true;
    ws_pair_run(stream, len, cuts, n_cuts, &cfg, 0, &reference);
    const char *diff = ws_result_compare(&direct, &reference);
    if (diff != NULL) {
        fprintf(stderr,
                "fuzz_ws_read: direct path vs wslay: %s\n"
                "  messages %zu vs %zu bytes, written %zu vs %zu bytes, ended %d vs %d, code %u vs "
                "%u, closing %d vs %d, peer_closed %d vs %d\n",
                diff, direct.log_len, reference.log_len, direct.out_len, reference.out_len,
                direct.ended, reference.ended, direct.code, reference.code, direct.closing,
                reference.closing, direct.peer_closed, reference.peer_closed);
        abort();
    }
    return 0;
}

/*
 * ws_client: RFC 6455 client framing shared by the WebSocket load generators; see ws_client.h.
 */
#include "ws_client.h"

#include <string.h>

size_t ws_client_head(uint8_t opcode, size_t n, char *out)
{
    size_t h = 0;
    out[h++] = (char)(0x80 | opcode);
    if (n < 126) {
        out[h++] = (char)(0x80 | n);
    } else if (n <= 0xFFFF) {
        out[h++] = (char)(0x80 | 126);
        out[h++] = (char)(n >> 8);
        out[h++] = (char)n;
    } else {
        out[h++] = (char)(0x80 | 127);
        for (int i = 0; i < 8; i++)
            out[h++] = (char)((uint64_t)n >> (56 - 8 * i));
    }
    memset(out + h, 0, 4);
    return h + 4;
}

int ws_frame_parse(const char *b, size_t n, struct ws_frame *f)
{
    if (n < 2)
        return 0;
    uint8_t b0 = (uint8_t)b[0], b1 = (uint8_t)b[1];
    uint64_t len = b1 & 0x7F;
    size_t h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)(uint8_t)b[2] << 8) | (uint8_t)b[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | (uint8_t)b[2 + i];
        h = 10;
    }
    f->op = b0 & 0x0F;
    f->fin = (b0 & 0x80) != 0;
    f->masked = (b1 & 0x80) != 0;
    f->head = h + (f->masked ? 4 : 0);
    f->len = len;
    return 1;
}

/*
 * The WebSocket direct read path (gateway/websocket.h "Reading") against wslay: the same client
 * byte streams, cut into reads in many ways (whole, at every single point, random pieces), are
 * fed to a connection reading directly where it can and to one reading everything through wslay
 * (cfg.wslay_only). Both must deliver the same messages in the same order, write the same bytes
 * back (each message is echoed, pings answered, the close frame) and end with the same close
 * code. The streams mix pipelined text and binary frames (7- and 16-bit lengths, UTF-8), pings,
 * fragmented messages with a ping inside, empty frames, and end with a close or with something
 * wslay refuses (non-minimal length, RSV bit, unmasked, invalid UTF-8, over the limits).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WS_PAIR_REQUIRE(cond, msg) cr_assert(cond, "%s", msg)
#include "gateway/ws_pair.h"

/* ---- client byte streams -------------------------------------------------------------------- */

static uint64_t rnd_state;
static uint32_t rnd(void)
{
    rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rnd_state >> 33);
}

struct stream {
    uint8_t b[1 << 15];
    size_t n;
};

/* A frame as a client writes it; `len_form` 0 = minimal, 126 or 127 = that length form. */
static void frame(struct stream *s, uint8_t first, bool masked, int len_form, const void *payload,
                  size_t len)
{
    cr_assert_lt(s->n + len + 14, sizeof s->b);
    s->b[s->n++] = first;
    uint8_t m = masked ? 0x80 : 0;
    if ((len_form == 0 && len < 126) || (len_form != 0 && len_form < 126)) {
        s->b[s->n++] = (uint8_t)(m | len);
    } else if (len_form == 127) {
        s->b[s->n++] = m | 127;
        for (int i = 0; i < 8; i++)
            s->b[s->n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    } else {
        s->b[s->n++] = m | 126;
        s->b[s->n++] = (uint8_t)(len >> 8);
        s->b[s->n++] = (uint8_t)len;
    }
    uint8_t mask[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd()};
    if (masked) {
        memcpy(s->b + s->n, mask, 4);
        s->n += 4;
    }
    for (size_t i = 0; i < len; i++)
        s->b[s->n++] = ((const uint8_t *)payload)[i] ^ (masked ? mask[i % 4] : 0);
}

static size_t text(char *out, size_t max)
{
    static const char *pieces[] = {"abc", " ", "{\"type\":\"publish\"}", "\xc3\xa9", "\xe2\x82\xac",
                                   "\xf0\x9f\x98\x80", "0123456789"};
    size_t n = 0, want = 1 + rnd() % max;
    while (n < want) {
        const char *p = pieces[rnd() % 7];
        size_t l = strlen(p);
        if (n + l > max)
            break;
        memcpy(out + n, p, l);
        n += l;
    }
    if (n == 0)
        out[n++] = 'x';
    return n;
}

/* The ends: a clean close, or something wslay refuses. */
static void ending(struct stream *s, int kind)
{
    char t[400];
    size_t n = text(t, 100);
    switch (kind) {
    case 0: frame(s, 0x88, true, 0, "\x03\xe8", 2); break;                  /* close 1000 */
    case 1: frame(s, 0x81, true, 126, t, n < 126 ? n : 100); break;        /* non-minimal 16-bit */
    case 2: frame(s, 0x81, true, 127, t, n); break;                        /* non-minimal 64-bit */
    case 3: frame(s, 0xC1, true, 0, t, n); break;                          /* RSV1 */
    case 4: frame(s, 0x81, false, 0, t, n); break;                         /* unmasked */
    case 5: frame(s, 0x81, true, 0, "a\xff" "b", 3); break;                /* invalid UTF-8 */
    case 6: memset(t, 'z', 300); frame(s, 0x81, true, 0, t, 300); break;   /* over max_frame */
    case 7: frame(s, 0x89, true, 126, t, 130 < sizeof t ? 130 : n); break; /* control > 125 */
    default: frame(s, 0x80, true, 0, t, n); break;                          /* stray continuation */
    }
}

static void make_stream(struct stream *s, int frames, int end)
{
    s->n = 0;
    char t[400];
    for (int i = 0; i < frames; i++) {
        size_t n;
        switch (rnd() % 8) {
        case 0: n = text(t, 250); frame(s, 0x81, true, 0, t, n); break; /* maybe 16-bit */
        case 1: n = 1 + rnd() % 200;
            for (size_t k = 0; k < n; k++) t[k] = (char)rnd();
            frame(s, 0x82, true, 0, t, n); break;
        case 2: frame(s, 0x89, true, 0, "hb", 2); break;
        case 3: /* fragmented, a ping inside */
            n = text(t, 60); frame(s, 0x01, true, 0, t, n);
            frame(s, 0x89, true, 0, "in", 2);
            n = text(t, 60); frame(s, 0x00, true, 0, t, n);
            n = text(t, 60); frame(s, 0x80, true, 0, t, n); break;
        case 4: frame(s, 0x81, true, 0, "", 0); break;
        default: n = text(t, 90); frame(s, 0x81, true, 0, t, n); break;
        }
    }
    ending(s, end);
}

/* ---- one run each way ---------------------------------------------------------------------- */

static struct ws_result direct, reference;

static void compare(const struct stream *s, const size_t *cuts, size_t n_cuts, const char *what)
{
    struct spool_ws_config cfg = {.max_frame_bytes = 260, .max_message_bytes = 400,
                                  .send_buffer_bytes = 1 << 20, .heartbeat_ms = 0,
                                  .close_timeout_ms = 5000};
    ws_pair_run(s->b, s->n, cuts, n_cuts, &cfg, 3000, &direct);
    cfg.wslay_only = true;
    ws_pair_run(s->b, s->n, cuts, n_cuts, &cfg, 3000, &reference);
    const char *diff = ws_result_compare(&direct, &reference);
    cr_assert(diff == NULL, "%s: %s (close code %u vs wslay %u; %zu vs %zu message bytes, %zu vs %zu "
              "bytes written)", what, diff, direct.code, reference.code, direct.log_len,
              reference.log_len, direct.out_len, reference.out_len);
}

Test(ws_fastread, same_as_wslay_however_the_reads_fall, .timeout = 120)
{
    static struct stream s;
    int delivered = 0;
    for (int k = 0; k < 27; k++) {
        rnd_state = 0x5eed + (uint64_t)k;
        make_stream(&s, k < 9 ? 3 : 12, k % 9);
        char what[64];
        snprintf(what, sizeof what, "stream %d whole", k);
        compare(&s, NULL, 0, what);
        delivered += reference.log_len > 0;
        /* cut once at (nearly) every point of the short streams, at some of the long ones */
        size_t step = k < 9 ? 1 + s.n / 150 : 1 + s.n / 30;
        for (size_t cut = 1; cut < s.n; cut += step) {
            snprintf(what, sizeof what, "stream %d cut at %zu", k, cut);
            compare(&s, &cut, 1, what);
        }
        for (int r = 0; r < 3; r++) {
            size_t cuts[512], n = 0, at = 0;
            while (n < 512 && (at += 1 + rnd() % 40) < s.n)
                cuts[n++] = at;
            snprintf(what, sizeof what, "stream %d random pieces %d", k, r);
            compare(&s, cuts, n, what);
        }
    }
    cr_assert_gt(delivered, 20, "the streams deliver messages before they end");
}

/* The direct path's own promise: pipelined frames in one read are all delivered, in order. */
Test(ws_fastread, pipelined_frames_in_one_read)
{
    static struct stream s;
    rnd_state = 7;
    s.n = 0;
    for (int i = 0; i < 200; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "m%d", i);
        frame(&s, 0x81, true, 0, m, (size_t)n);
    }
    frame(&s, 0x88, true, 0, "\x03\xe8", 2);
    compare(&s, NULL, 0, "pipelined");
    cr_assert_eq(direct.code, 1000);
    cr_assert(direct.log_len > 0 && memcmp(direct.log, "1 2 m0", 6) == 0);
}

/* The shared publish-message scanner; see msg_scan.h for what it accepts and why. */
#include "gateway/msg_scan.h"

#include <stdint.h>
#include <string.h>

#include "gateway/websocket.h"

static bool hex4(const char *p, const char *end, uint32_t *out)
{
    if (end - p < 4)
        return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

static char *put_utf8(char *w, uint32_t cp)
{
    if (cp < 0x80) {
        *w++ = (char)cp;
    } else if (cp < 0x800) {
        *w++ = (char)(0xC0 | cp >> 6);
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xE0 | cp >> 12);
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *w++ = (char)(0xF0 | cp >> 18);
        *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    }
    return w;
}

/* Eight bytes that need no attention inside a string: no quote, backslash, control character
 * or byte >= 0x80. (The zero-byte tests may report a byte that is fine; never miss one.) */
static bool plain8(const char *p)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t x, q, b;
    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    b = x ^ (ones * '\\');
    uint64_t flag = (x & highs) | ((x - ones * 0x20) & ~x & highs) | ((q - ones) & ~q & highs) |
                    ((b - ones) & ~b & highs);
    return flag == 0;
}

/* One escape at s->p (the backslash), decoded to w (never past s->p: a decoded escape is
 * shorter than its text). NULL for what jansson refuses (unknown escape, \u0000 without
 * JSON_ALLOW_NUL, a lone or reversed surrogate) and for truncation. */
static char *take_escape(struct spool_msg_scan *s, char *w)
{
    if (s->end - s->p < 2)
        return NULL;
    char e = s->p[1];
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *k = e != '\0' ? strchr(from, e) : NULL;
    if (k != NULL) {
        *w++ = to[k - from];
        s->p += 2;
        return w;
    }
    uint32_t cp, lo;
    if (e != 'u' || !hex4(s->p + 2, s->end, &cp))
        return NULL;
    s->p += 6;
    if (cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
        return NULL;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
            !hex4(s->p + 2, s->end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return NULL;
        s->p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return put_utf8(w, cp);
}

/* A string without control characters, escapes decoded in place, NUL-terminated in place (the
 * decoded text never outgrows the quoted one). */
bool spool_msg_scan_string(struct spool_msg_scan *s, struct spool_rt_str *out)
{
    spool_msg_scan_ws(s);
    if (s->p >= s->end || *s->p != '"')
        return false;
    char *start = ++s->p, *w = NULL; /* w: where decoded bytes go, once there was an escape */
    bool high = false;
    for (;;) {
        while (w == NULL && s->end - s->p >= 8 && plain8(s->p))
            s->p += 8;
        if (s->p >= s->end)
            return false;
        unsigned char c = (unsigned char)*s->p;
        if (c == '"')
            break;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if ((w = take_escape(s, w != NULL ? w : s->p)) == NULL)
                return false;
            continue;
        }
        high |= c >= 0x80;
        if (w != NULL)
            *w++ = *s->p;
        s->p++;
    }
    if (w == NULL)
        w = s->p;
    size_t len = (size_t)(w - start);
    /* Decoded escapes are well-formed UTF-8 and never continue a raw sequence, so checking the
     * whole decoded text is checking the raw bytes, as jansson does. */
    if (high && !spool_utf8_valid((const uint8_t *)start, len))
        return false;
    *w = '\0';
    s->p++;
    *out = (struct spool_rt_str){start, len};
    return true;
}

/* "key": the key, then the colon. */
bool spool_msg_scan_key(struct spool_msg_scan *s, struct spool_rt_str *key)
{
    return spool_msg_scan_string(s, key) && spool_msg_scan_take(s, ':');
}

#define IS(k, lit) SPOOL_MSG_SCAN_IS(k, lit)

/* A value once: false when `slot` already holds one (jansson keeps the last; we leave it). */
static bool take_once(struct spool_msg_scan *s, struct spool_rt_str *slot)
{
    return slot->s == NULL && spool_msg_scan_string(s, slot);
}

bool spool_msg_scan_message(struct spool_msg_scan *s, struct spool_rt_frame_msg *m)
{
    *m = (struct spool_rt_frame_msg){{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}};
    if (!spool_msg_scan_take(s, '{'))
        return false;
    if (spool_msg_scan_take(s, '}'))
        return true;
    do {
        struct spool_rt_str k;
        if (!spool_msg_scan_key(s, &k))
            return false;
        struct spool_rt_str *slot = IS(&k, "id")         ? &m->id
                                    : IS(&k, "data")     ? &m->data
                                    : IS(&k, "name")     ? &m->name
                                    : IS(&k, "clientId") ? &m->client_id
                                                         : NULL;
        if (slot == NULL || !take_once(s, slot))
            return false;
    } while (spool_msg_scan_take(s, ','));
    return spool_msg_scan_take(s, '}');
}


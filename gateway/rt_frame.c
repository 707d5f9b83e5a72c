/* The publish frame scanner; see rt_frame.h for what it accepts and why. */
#include "gateway/rt_frame.h"

#include <string.h>

#include "gateway/auth.h"
#include "gateway/websocket.h"

struct scan {
    char *p, *end;
};

/* JSON whitespace, as jansson skips it. */
static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool take(struct scan *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

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
static char *take_escape(struct scan *s, char *w)
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
static bool take_string(struct scan *s, struct spool_rt_str *out)
{
    skip_ws(s);
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
static bool take_key(struct scan *s, struct spool_rt_str *key)
{
    return take_string(s, key) && take(s, ':');
}

static bool is(const struct spool_rt_str *k, const char *name, size_t len)
{
    return k->len == len && memcmp(k->s, name, len) == 0;
}

#define IS(k, lit) is((k), lit, sizeof lit - 1)

/* 0 or [1-9][0-9]{0,17}: what fits json_int_t for sure; anything else is left to jansson. */
static bool take_serial(struct scan *s, int64_t *out)
{
    skip_ws(s);
    char *start = s->p;
    int64_t v = 0;
    size_t digits = 0;
    for (; s->p < s->end && *s->p >= '0' && *s->p <= '9'; s->p++)
        if (++digits <= 18)
            v = v * 10 + (*s->p - '0');
    if (digits == 0 || digits > 18 || (digits > 1 && start[0] == '0'))
        return false;
    if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E'))
        return false;
    *out = v;
    return true;
}

/* A value once: false when `slot` already holds one (jansson keeps the last; we leave it). */
static bool take_once(struct scan *s, struct spool_rt_str *slot)
{
    return slot->s == NULL && take_string(s, slot);
}

static bool take_message(struct scan *s, struct spool_rt_frame_msg *m)
{
    *m = (struct spool_rt_frame_msg){{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}};
    if (!take(s, '{'))
        return false;
    if (take(s, '}'))
        return true;
    do {
        struct spool_rt_str k;
        if (!take_key(s, &k))
            return false;
        struct spool_rt_str *slot = IS(&k, "id")         ? &m->id
                                    : IS(&k, "data")     ? &m->data
                                    : IS(&k, "name")     ? &m->name
                                    : IS(&k, "clientId") ? &m->client_id
                                                         : NULL;
        if (slot == NULL || !take_once(s, slot))
            return false;
    } while (take(s, ','));
    return take(s, '}');
}

static bool take_messages(struct scan *s, struct spool_rt_frame *f)
{
    if (!take(s, '['))
        return false;
    do {
        if (f->n == SPOOL_RT_FRAME_MAX_MESSAGES || !take_message(s, &f->msgs[f->n]))
            return false;
        f->n++;
    } while (take(s, ','));
    return take(s, ']');
}

bool spool_rt_frame_parse(char *buf, size_t len, struct spool_rt_frame *f)
{
    enum { TYPE = 1, SERIAL = 2, CHANNEL = 4, MESSAGES = 8 };
    struct scan s = {buf, buf + len};
    unsigned seen = 0;
    f->n = 0;
    f->channel = (struct spool_rt_str){NULL, 0};
    if (!take(&s, '{'))
        return false;
    do {
        struct spool_rt_str k, v;
        unsigned bit;
        if (!take_key(&s, &k))
            return false;
        bool ok;
        if (IS(&k, "type")) {
            bit = TYPE;
            ok = take_string(&s, &v) && IS(&v, "publish");
        } else if (IS(&k, "msgSerial")) {
            bit = SERIAL;
            ok = take_serial(&s, &f->msg_serial);
        } else if (IS(&k, "channel")) {
            bit = CHANNEL;
            ok = take_string(&s, &f->channel);
        } else if (IS(&k, "messages")) {
            bit = MESSAGES;
            ok = (seen & MESSAGES) == 0 && take_messages(&s, f);
        } else {
            return false;
        }
        if (!ok || (seen & bit) != 0)
            return false;
        seen |= bit;
    } while (take(&s, ','));
    if (!take(&s, '}'))
        return false;
    skip_ws(&s);
    return s.p == s.end && seen == (TYPE | SERIAL | CHANNEL | MESSAGES);
}

enum spool_message_verdict spool_rt_frame_record(const struct spool_rt_frame_msg *m,
                                                 const char *client_id,
                                                 const struct spool_message_limits *lim,
                                                 Spool__Record *rec, const char **why)
{
    spool__record__init(rec);
    rec->action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    rec->version = 1;
    if (m->id.s != NULL) {
        if (m->id.len > lim->max_field_bytes) {
            *why = "id is longer than --max-field-bytes";
            return SPOOL_MESSAGE_BAD;
        }
        rec->id = (char *)m->id.s;
    }
    if (m->name.s != NULL) {
        if (m->name.len > lim->max_field_bytes) {
            *why = "name is longer than --max-field-bytes";
            return SPOOL_MESSAGE_BAD;
        }
        rec->name = (char *)m->name.s;
    }
    if (m->client_id.s != NULL) {
        if (m->client_id.len > SPOOL_CLIENT_ID_MAX) {
            *why = "clientId is too long";
            return SPOOL_MESSAGE_BAD;
        }
        if (client_id[0] != '\0' && strcmp(client_id, m->client_id.s) != 0) {
            *why = "clientId does not match the credentials' client id";
            return SPOOL_MESSAGE_FORBIDDEN;
        }
        rec->client_id = (char *)m->client_id.s;
    } else if (client_id[0] != '\0') {
        rec->client_id = (char *)client_id;
    }
    if (m->data.s != NULL) {
        rec->data.data = (uint8_t *)m->data.s;
        rec->data.len = m->data.len;
        rec->content_type = "text/plain";
    }
    if (rec->data.len > lim->max_message_bytes) {
        *why = "message data and extras exceed --max-message-bytes";
        return SPOOL_MESSAGE_TOO_LARGE;
    }
    return SPOOL_MESSAGE_OK;
}

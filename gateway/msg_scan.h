/*
 * The strict JSON scanner shared by the two hot publish paths: the realtime publish frame
 * (gateway/rt_frame.h) and the REST publish body (gateway/http_publish_body.h). Both read the same
 * message object,
 *
 *   {"id":"...","name":"...","clientId":"...","data":"..."}      (each key optional, at most once)
 *
 * over and over, and parsing it with json_loadb built a tree with a malloc per key and string.
 * The scanner allocates nothing: it works on the caller's private copy of the bytes, decodes
 * escapes in place (decoded text is never longer), NUL-terminates each string and points into
 * the copy.
 *
 * The contract is the one rt_frame.h states: accept only what is fully understood, byte for byte
 * as jansson reads it, and return false for everything else (other keys or value types,
 * duplicate keys, truncation, control characters, invalid UTF-8, escapes jansson refuses: \u0000,
 * lone or reversed surrogates) so that the caller parses with jansson instead and clients get the
 * same answers either way. Whitespace is JSON's (space, tab, CR, LF).
 *
 * The names spool_rt_str / spool_rt_frame_msg come from the realtime frame, where this scanner
 * began; a REST message is the same object.
 */
#ifndef SPOOL_GATEWAY_MSG_SCAN_H
#define SPOOL_GATEWAY_MSG_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct spool_rt_str {
    const char *s; /* NUL-terminated inside the scanned copy; NULL = key absent */
    size_t len;    /* bytes, excluding the NUL */
};

/* One message object; a key that was absent has s == NULL. */
struct spool_rt_frame_msg {
    struct spool_rt_str id, name, client_id, data;
};

/* A position in the caller's writable copy: p walks towards end. */
struct spool_msg_scan {
    char *p, *end;
};

/* Skips JSON whitespace, as jansson skips it. */
static inline void spool_msg_scan_ws(struct spool_msg_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* After whitespace, the byte `c`: true and consumed, or false. */
static inline bool spool_msg_scan_take(struct spool_msg_scan *s, char c)
{
    spool_msg_scan_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}
/* After whitespace, a string as jansson would accept it, decoded and NUL-terminated in place. */
bool spool_msg_scan_string(struct spool_msg_scan *s, struct spool_rt_str *out);
/* "key": a string, then the colon. */
bool spool_msg_scan_key(struct spool_msg_scan *s, struct spool_rt_str *key);
/* A message object of the shape above into *m (which is cleared first). */
bool spool_msg_scan_message(struct spool_msg_scan *s, struct spool_rt_frame_msg *m);
/* True when str is exactly the `len` bytes of `name`. */
static inline bool spool_msg_scan_is(const struct spool_rt_str *str, const char *name, size_t len)
{
    return str->len == len && memcmp(str->s, name, len) == 0;
}

#define SPOOL_MSG_SCAN_IS(str, lit) spool_msg_scan_is((str), lit, sizeof lit - 1)

#endif

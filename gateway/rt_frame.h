/*
 * The realtime protocol's hot frame read without jansson: a strict scanner for the one shape a
 * publishing client sends over and over,
 *
 *   {"type":"publish","msgSerial":N,"channel":"...","messages":[{"id":"...","data":"..."}, ...]}
 *
 * Why: parsing every frame with json_loadb built a tree of objects, a malloc per key and string,
 * and was a tenth of a node's CPU under publish load (bench/README.md). The scanner allocates
 * nothing: it works on a private copy of the frame, decodes escapes in place (the decoded text is
 * never longer), NUL-terminates each string and points into the copy. The string and message
 * object scanning is gateway/msg_scan.h, shared with the REST publish body
 * (gateway/http_publish_body.h); this file adds the frame around the messages.
 *
 * The contract is "accept only what it fully understands, byte for byte as jansson would read
 * it": it accepts exactly
 *   - one object (JSON whitespace around tokens allowed) holding the keys "type", "msgSerial",
 *     "channel" and "messages", each once, in any order, and nothing else;
 *   - "type" the string "publish"; "msgSerial" an integer 0..10^18-1 written without sign,
 *     fraction, exponent or leading zero; "channel" a string;
 *   - "messages" an array of 1..SPOOL_RT_FRAME_MAX_MESSAGES objects, each holding only the keys
 *     "id", "name", "clientId" and "data" (each at most once), all strings;
 *   - strings without control characters, valid UTF-8, with the escapes JSON has decoded as
 *     jansson decodes them (surrogate pairs joined; \u0000 and lone surrogates refused).
 * Anything else (other keys or types, duplicate keys, numbers it does not read, more
 * messages, trailing bytes, truncation) returns false and the caller parses the frame with
 * jansson as before, so what a client sees (acks, nacks, errors and their texts) is the same
 * either way. tests/fuzz/fuzz_rt_frame.c checks that differentially against jansson and
 * spool_message_from_json; tests/gateway/test_rt_frame.c holds the edge cases.
 *
 * spool_rt_frame_record() is spool_message_from_json() for a scanned message: the same checks in
 * the same order with the same verdicts and texts (there is no extras and data is a string).
 */
#ifndef SPOOL_GATEWAY_RT_FRAME_H
#define SPOOL_GATEWAY_RT_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/message_json.h"
#include "gateway/msg_scan.h"

#define SPOOL_RT_FRAME_MAX_MESSAGES 16

struct spool_rt_frame {
    int64_t msg_serial;
    struct spool_rt_str channel;
    size_t n;
    struct spool_rt_frame_msg msgs[SPOOL_RT_FRAME_MAX_MESSAGES];
};

/* Scans buf[0..len) in place (it writes NULs into it); true when it is a publish frame of the
 * shape above, *f then points into buf. On false, buf's contents are unspecified. */
bool spool_rt_frame_parse(char *buf, size_t len, struct spool_rt_frame *f);

/* As spool_message_from_json() for message `m`: fills `rec` (initialised here), borrowing from
 * `m` and `client_id`; on anything but OK, *why says what was wrong. */
enum spool_message_verdict spool_rt_frame_record(const struct spool_rt_frame_msg *m,
                                                 const char *client_id,
                                                 const struct spool_message_limits *lim,
                                                 Spool__Record *rec, const char **why);

#endif

/*
 * The body of POST /v1/channels/{channel}/messages into records, and the 201 answer's body.
 *
 * A body is one message object or an array of them (docs/http-api.md "Publish"); each becomes a
 * record by gateway/message_json.h's rules plus the AI fields of gateway/ai_message.h. Two
 * readers give the same result:
 *
 *   - the scanner (gateway/msg_scan.h): a body that is one message object holding only the
 *     string keys "id", "name", "clientId" and "data", or an array of 1..SPOOL_PUBLISH_BODY_STACK
 *     such objects, is read without jansson, on a private copy, with records in the struct
 *     itself: no allocation for the common publish (a malloc per key and string before);
 *   - jansson (json_loadb with JSON_REJECT_DUPLICATES) for everything else: other keys (extras,
 *     action, refSerial, turnEpoch), non-string data, duplicate keys, bad JSON, empty or long
 *     arrays. Every error answer comes from the checks both share, so a client sees the same
 *     status, code and message whichever reader took its body.
 * tests/fuzz/fuzz_http_publish_body.c checks that differentially (scan on against scan off);
 * tests/gateway/test_http_publish_body.c holds the edge cases.
 *
 * spool_publish_answer() writes {"channel":"c","serials":[..],"duplicates":[..]} byte for byte as
 * jansson's compact dump of the same object would, without building the object.
 */
#ifndef SPOOL_GATEWAY_HTTP_PUBLISH_BODY_H
#define SPOOL_GATEWAY_HTTP_PUBLISH_BODY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/auth.h"
#include "gateway/msg_scan.h"
#include "proto/record.pb-c.h"

#define SPOOL_PUBLISH_BODY_STACK 16  /* messages the scanner reads; records held in the struct */
#define SPOOL_PUBLISH_BODY_COPY 4096 /* bodies up to this size are scanned in the struct */

struct spool_publish_limits {
    uint64_t max_batch;         /* --max-publish-batch */
    uint64_t max_field_bytes;   /* --max-field-bytes */
    uint64_t max_message_bytes; /* --max-message-bytes */
};

struct spool_publish_body {
    /* after a successful parse */
    size_t n;                             /* messages, >= 1 */
    const Spool__Record *const *records; /* n records, valid until _close */
    size_t bytes;                         /* data bytes of all messages */
    bool scanned;                         /* read by the scanner, not jansson */
    /* after a failed parse: the error answer */
    int status, code;
    char message[512];
    /* private */
    json_t *json;
    char *copy;
    Spool__Record *recs;
    const Spool__Record **ptrs;
    char **owned;
    Spool__Record rec_stack[SPOOL_PUBLISH_BODY_STACK];
    const Spool__Record *ptr_stack[SPOOL_PUBLISH_BODY_STACK];
    char *owned_stack[2 * SPOOL_PUBLISH_BODY_STACK];
    struct spool_rt_frame_msg msgs[SPOOL_PUBLISH_BODY_STACK];
    char copy_stack[SPOOL_PUBLISH_BODY_COPY];
};

/* Reads body[0..len) for `channel` as principal `p` (records borrow its client id, which must
 * outlive them). With `scan` false only jansson reads it (the reference, for tests). True with
 * the records; false with status, code and message set. Either way call _close afterwards. */
bool spool_publish_body_parse(struct spool_publish_body *b, const char *body, size_t len,
                              const struct spool_publish_limits *lim,
                              const struct spool_principal *p, const char *channel, bool scan);
void spool_publish_body_close(struct spool_publish_body *b);

/* The 201 body for `n` serials, duplicates[i] marking those already published: malloc'd, length
 * in *len. NULL when the channel name holds a byte jansson would escape (a valid channel name
 * never does) or when out of memory; the caller then builds it with jansson. */
char *spool_publish_answer(const char *channel, const uint64_t *seqs, const bool *duplicate,
                           size_t n, size_t *len);

#endif

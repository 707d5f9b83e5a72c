/*
 * One published message object (REST body or realtime "publish") into a record: the single copy
 * of the storage rules both transports share (docs/http-api.md "Publish", docs/protocol.md).
 *
 *   data     a JSON string is stored as its UTF-8 bytes with content type text/plain and comes
 *            back as the same string; any other JSON value is stored as its compact
 *            serialisation with application/json; no data is stored with no content type
 *   extras   must be a JSON object; stored compact
 *   id, name strings of at most --max-field-bytes
 *   clientId a string of at most SPOOL_CLIENT_ID_MAX; when the credentials carry a client id it
 *            must equal it (and is used when the message gives none)
 *   data + extras at most --max-message-bytes
 *
 * The record borrows strings from `m` and from the principal's client id, so both must outlive
 * the publish call; the two serialised buffers go to owned[0] (data) and owned[1] (extras), which
 * the caller frees after the call. Each transport maps the verdict to its own error codes.
 */
#ifndef SPOOL_GATEWAY_MESSAGE_JSON_H
#define SPOOL_GATEWAY_MESSAGE_JSON_H

#include <jansson.h>
#include <stdint.h>

#include "proto/record.pb-c.h"

enum spool_message_verdict {
    SPOOL_MESSAGE_OK,
    SPOOL_MESSAGE_BAD,       /* not the expected shape (400 / realtime bad message) */
    SPOOL_MESSAGE_FORBIDDEN, /* clientId differs from the credentials' */
    SPOOL_MESSAGE_TOO_LARGE, /* data + extras over max_message_bytes */
    SPOOL_MESSAGE_NOMEM,
};

struct spool_message_limits {
    uint64_t max_field_bytes;
    uint64_t max_message_bytes;
};

/* Fills `rec` (initialised here) from message object `m`; `client_id` is the credentials' client
 * id ("" = none). Returns the verdict; on anything but OK, *why says what was wrong. */
enum spool_message_verdict spool_message_from_json(json_t *m, const char *client_id,
                                                   const struct spool_message_limits *lim,
                                                   Spool__Record *rec, char *owned[2],
                                                   const char **why);

#endif

/*
 * The AI fields of a published message object, shared by every publish path (REST and the
 * realtime protocol), and their place in the record JSON clients see (docs/ai-semantics.md):
 *
 *   "action":     "create" (default) | "append" | "update" | "delete"
 *   "refSerial":  the message an append / update / delete refers to (required for those)
 *   "turnEpoch":  publish as the holder of the channel's turn at this epoch (fenced)
 *   extras {"final": true} on an append or update ends the message's stream
 *
 * The gateway also sets the record's flags from the publisher's capabilities on the channel
 * (edit-any, delete-any), which the state machine honours for other clients' messages. The
 * checks that need the channel's state (exists, deleted, final, author, epoch) are the state
 * machine's (cluster/conversation.h).
 */
#ifndef SPOOL_GATEWAY_AI_MESSAGE_H
#define SPOOL_GATEWAY_AI_MESSAGE_H

#include <jansson.h>

#include "gateway/auth.h"
#include "proto/record.pb-c.h"

/* Fills rec's action, ref_seq, turn_epoch and flags from message object m. Returns NULL or a
 * message for a 400 / bad-message error. */
const char *spool_ai_message_fields(const json_t *m, Spool__Record *rec,
                                    const struct spool_principal *p, const char *channel);
/* Adds the AI fields of rec (turnEpoch, rollup markers) to its client JSON object o. */
void spool_ai_record_json(json_t *o, const Spool__Record *rec);

#endif

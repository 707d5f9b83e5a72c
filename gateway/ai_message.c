/*
 * AI fields of published messages and of the record JSON (see ai_message.h).
 */
#include "gateway/ai_message.h"

#include <string.h>

#include "cluster/conversation.h"
#include "gateway/ai_rollup.h"

static int action_of(const char *s)
{
    if (strcmp(s, "create") == 0) return SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    if (strcmp(s, "append") == 0) return SPOOL__ACTION__ACTION_MESSAGE_APPEND;
    if (strcmp(s, "update") == 0) return SPOOL__ACTION__ACTION_MESSAGE_UPDATE;
    if (strcmp(s, "delete") == 0) return SPOOL__ACTION__ACTION_MESSAGE_DELETE;
    return -1;
}

const char *spool_ai_message_fields(const json_t *m, Spool__Record *rec,
                                    const struct spool_principal *p, const char *channel)
{
    const json_t *v;
    if ((v = json_object_get(m, "action")) != NULL) {
        int a = json_is_string(v) ? action_of(json_string_value(v)) : -1;
        if (a < 0) return "action must be \"create\", \"append\", \"update\" or \"delete\"";
        rec->action = (Spool__Action)a;
    }
    if ((v = json_object_get(m, "refSerial")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0)
            return "refSerial must be a positive integer (the serial of the message)";
        rec->ref_seq = (uint64_t)json_integer_value(v);
    }
    bool refers = rec->action != SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    if (refers && rec->ref_seq == 0) return "an append, update or delete needs refSerial";
    if (!refers && rec->ref_seq != 0) return "refSerial is only for append, update and delete";
    if ((v = json_object_get(m, "turnEpoch")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0)
            return "turnEpoch must be a positive integer";
        rec->turn_epoch = (uint64_t)json_integer_value(v);
    }
    unsigned caps = spool_principal_caps(p, channel);
    rec->flags = 0;
    if (caps & SPOOL_CAP_EDIT_ANY) rec->flags |= SPOOL_CONV_FLAG_EDIT_ANY;
    if (caps & SPOOL_CAP_DELETE_ANY) rec->flags |= SPOOL_CONV_FLAG_DELETE_ANY;
    return NULL;
}

void spool_ai_record_json(json_t *o, const Spool__Record *rec)
{
    if (rec->turn_epoch != 0)
        json_object_set_new(o, "turnEpoch", json_integer((json_int_t)rec->turn_epoch));
    if (rec->role != NULL && rec->role[0] != '\0')
        json_object_set_new(o, "role", json_string(rec->role));
    if (spool_ai_rollup_is_rolled(rec))
        json_object_set_new(o, "rollup", json_true());
}

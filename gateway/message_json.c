/* Published message object -> record; see message_json.h for the rules. */
#include "gateway/message_json.h"

#include <string.h>

#include "gateway/auth.h"
#include "gateway/json_body.h"

/* A string field of at most `max` bytes, borrowed into *out; NULL when fine. */
static const char *string_field(json_t *m, const char *key, uint64_t max,
                                const char *not_string, const char *too_long, char **out)
{
    json_t *v = json_object_get(m, key);
    if (v == NULL)
        return NULL;
    if (!json_is_string(v))
        return not_string;
    if (json_string_length(v) > max)
        return too_long;
    *out = (char *)json_string_value(v);
    return NULL;
}

enum spool_message_verdict spool_message_from_json(json_t *m, const char *client_id,
                                                   const struct spool_message_limits *lim,
                                                   Spool__Record *rec, char *owned[2],
                                                   const char **why)
{
    spool__record__init(rec);
    if (!json_is_object(m)) {
        *why = "each message must be a JSON object";
        return SPOOL_MESSAGE_BAD;
    }
    rec->action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    rec->version = 1;
    if ((*why = string_field(m, "id", lim->max_field_bytes, "id must be a string",
                             "id is longer than --max-field-bytes", &rec->id)) != NULL ||
        (*why = string_field(m, "name", lim->max_field_bytes, "name must be a string",
                             "name is longer than --max-field-bytes", &rec->name)) != NULL)
        return SPOOL_MESSAGE_BAD;
    json_t *v;
    if ((v = json_object_get(m, "clientId")) != NULL) {
        if (!json_is_string(v)) {
            *why = "clientId must be a string";
            return SPOOL_MESSAGE_BAD;
        }
        if (json_string_length(v) > SPOOL_CLIENT_ID_MAX) {
            *why = "clientId is too long";
            return SPOOL_MESSAGE_BAD;
        }
        if (client_id[0] != '\0' && strcmp(client_id, json_string_value(v)) != 0) {
            *why = "clientId does not match the credentials' client id";
            return SPOOL_MESSAGE_FORBIDDEN;
        }
        rec->client_id = (char *)json_string_value(v);
    } else if (client_id[0] != '\0') {
        rec->client_id = (char *)client_id;
    }
    if ((v = json_object_get(m, "data")) != NULL) {
        size_t len = 0;
        if (json_is_string(v)) {
            rec->data.data = (uint8_t *)json_string_value(v);
            rec->data.len = json_string_length(v);
            rec->content_type = "text/plain";
        } else if ((owned[0] = spool_json_dump(v, &len)) != NULL) {
            rec->data.data = (uint8_t *)owned[0];
            rec->data.len = len;
            rec->content_type = "application/json";
        } else {
            *why = "out of memory";
            return SPOOL_MESSAGE_NOMEM;
        }
    }
    if ((v = json_object_get(m, "extras")) != NULL) {
        size_t len = 0;
        if (!json_is_object(v)) {
            *why = "extras must be a JSON object";
            return SPOOL_MESSAGE_BAD;
        }
        if ((owned[1] = spool_json_dump(v, &len)) == NULL) {
            *why = "out of memory";
            return SPOOL_MESSAGE_NOMEM;
        }
        rec->extras.data = (uint8_t *)owned[1];
        rec->extras.len = len;
    }
    if (rec->data.len + rec->extras.len > lim->max_message_bytes) {
        *why = "message data and extras exceed --max-message-bytes";
        return SPOOL_MESSAGE_TOO_LARGE;
    }
    return SPOOL_MESSAGE_OK;
}

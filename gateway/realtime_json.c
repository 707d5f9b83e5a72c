/*
 * Records as realtime clients (and SSE, and REST history) see them, and the "from" of an attach.
 * See docs/protocol.md for the message object.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/ai_message.h"
#include "gateway/channel_name.h"
#include "gateway/json_body.h"
#include "gateway/jwt.h"
#include "gateway/metrics.h"
#include "gateway/realtime_int.h"

static const char *action_name(int action)
{
    switch (action) {
    case SPOOL__ACTION__ACTION_MESSAGE_CREATE: return "message.create";
    case SPOOL__ACTION__ACTION_MESSAGE_APPEND: return "message.append";
    case SPOOL__ACTION__ACTION_MESSAGE_UPDATE: return "message.update";
    case SPOOL__ACTION__ACTION_MESSAGE_DELETE: return "message.delete";
    case SPOOL__ACTION__ACTION_PRESENCE: return "presence";
    case SPOOL__ACTION__ACTION_OBJECT_OP: return "object";
    case SPOOL__ACTION__ACTION_CHANNEL_META: return "meta";
    default: return "message.create";
    }
}

/* The stored data as a JSON value: JSON content as itself, text as a string, anything else
 * base64 (and *encoding set to "base64"). */
static json_t *data_json(const Spool__Record *rec, const char **encoding)
{
    const char *ct = rec->content_type != NULL ? rec->content_type : "";
    const char *p = (const char *)rec->data.data;
    size_t n = rec->data.len;
    *encoding = NULL;
    if (n == 0)
        return ct[0] == '\0' ? json_null() : json_string("");
    if (ct[0] == '\0' || strstr(ct, "json") != NULL) {
        json_t *v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        if (v != NULL)
            return v;
    }
    if (spool_utf8_valid(rec->data.data, n) && memchr(p, '\0', n) == NULL)
        return json_stringn(p, n);
    size_t size = spool_base64_encoded_size(n);
    char *b = malloc(size);
    if (b == NULL)
        return NULL;
    spool_base64_encode(p, n, b, size);
    json_t *v = json_string(b);
    free(b);
    *encoding = "base64";
    return v;
}

static json_t *opt_string(const char *s)
{
    return s != NULL && s[0] != '\0' ? json_string(s) : json_null();
}

json_t *spool_rt_record_json(const Spool__Record *rec)
{
    const char *encoding;
    json_t *data = data_json(rec, &encoding);
    json_t *o = json_object();
    if (o == NULL || data == NULL) {
        json_decref(o);
        json_decref(data);
        return NULL;
    }
    bool presence = rec->action == SPOOL__ACTION__ACTION_PRESENCE;
    json_object_set_new(o, "type", json_string(presence ? "presence" : "message"));
    json_object_set_new(o, "channel", json_string(rec->channel));
    json_object_set_new(o, "serial", json_integer((json_int_t)rec->seq));
    /* Messages always carry id, name and clientId (null when unset) so clients can rely on
     * one shape; presence events name their action in "action" instead of "name". */
    json_object_set_new(o, "id", opt_string(rec->id));
    if (!presence)
        json_object_set_new(o, "name", opt_string(rec->name));
    json_object_set_new(o, "data", data);
    if (encoding != NULL)
        json_object_set_new(o, "encoding", json_string(encoding));
    json_object_set_new(o, "clientId", opt_string(rec->client_id));
    if (rec->connection_id != NULL && rec->connection_id[0] != '\0')
        json_object_set_new(o, "connectionId", json_string(rec->connection_id));
    json_object_set_new(o, "timestamp", json_integer((json_int_t)rec->timestamp_ms));
    json_object_set_new(o, "action", json_string(presence && rec->name != NULL && rec->name[0]
                                                     ? rec->name
                                                     : action_name(rec->action)));
    if (rec->ref_seq != 0)
        json_object_set_new(o, "refSerial", json_integer((json_int_t)rec->ref_seq));
    if (rec->version > 1)
        json_object_set_new(o, "version", json_integer(rec->version));
    if (rec->extras.len > 0) {
        json_t *x = json_loadb((const char *)rec->extras.data, rec->extras.len, 0, NULL);
        if (x != NULL)
            json_object_set_new(o, "extras", x);
    }
    spool_ai_record_json(o, rec); /* turnEpoch, rollup (docs/ai-semantics.md) */
    return o;
}

int spool_rt_parse_from(const json_t *v, struct spool_from *out)
{
    if (v == NULL || json_is_null(v) ||
        (json_is_string(v) && strcmp(json_string_value(v), "live") == 0)) {
        *out = (struct spool_from){SPOOL_FROM_LIVE, 0};
        return 0;
    }
    if (json_is_string(v) && strcmp(json_string_value(v), "start") == 0) {
        *out = (struct spool_from){SPOOL_FROM_START, 0};
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (struct spool_from){SPOOL_FROM_SERIAL, (uint64_t)json_integer_value(v)};
        return 0;
    }
    json_t *last = json_is_object(v) ? json_object_get(v, "last") : NULL;
    if (last != NULL && json_is_integer(last) && json_integer_value(last) >= 0 &&
        json_object_size(v) == 1) {
        *out = (struct spool_from){SPOOL_FROM_LAST, (uint64_t)json_integer_value(last)};
        return 0;
    }
    return -1;
}

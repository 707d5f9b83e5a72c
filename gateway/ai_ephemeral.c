/*
 * Ephemeral messages and interrupts (see ai_ephemeral.h). The message becomes a Record that is
 * never stored (id "ephemeral" | "interrupt", name, data as JSON, client id, timestamp): the
 * event is built once and sent to each connection of this node attached to the channel, except
 * the sender, through its send buffer like any event; the node sends the record to the other
 * storage nodes (spool_node_ephemeral), whose realtime servers get it through
 * spool_ai_ephemeral_arrived and do the same for their connections.
 */
#include "gateway/ai_ephemeral.h"

#include <stdlib.h>
#include <string.h>

#include "gateway/auth.h"
#include "gateway/channel_name.h"
#include "gateway/json_body.h"
#include "gateway/realtime_int.h"

static bool attached(const struct rt_conn *c, const char *channel)
{
    for (const struct rt_att *t = c->atts; t != NULL; t = t->next)
        if (strcmp(t->channel, channel) == 0)
            return true;
    return false;
}

/* The event clients see for an ephemeral record (see the header); new reference or NULL. */
static json_t *event_of(const Spool__Record *rec)
{
    bool interrupt = rec->id != NULL && strcmp(rec->id, "interrupt") == 0;
    json_t *data = rec->data.len ? json_loadb((const char *)rec->data.data, rec->data.len,
                                              JSON_DECODE_ANY, NULL)
                                 : json_null();
    json_t *ev = json_pack("{s:s,s:s,s:o,s:I}", "type", interrupt ? "interrupt" : "ephemeral",
                           "channel", rec->channel, "data", data ? data : json_null(), "timestamp",
                           (json_int_t)rec->timestamp_ms);
    if (ev == NULL)
        return NULL;
    if (rec->name != NULL && rec->name[0] != '\0')
        json_object_set_new(ev, "name", json_string(rec->name));
    if (rec->client_id != NULL && rec->client_id[0] != '\0')
        json_object_set_new(ev, "clientId", json_string(rec->client_id));
    if (interrupt)
        json_object_set_new(ev, "to", json_string("turn"));
    return ev;
}

/* Sends the event to every connection of this node attached to the channel but `except`. */
static size_t fanout(struct spool_realtime *rt, const Spool__Record *rec, const struct rt_conn *except)
{
    json_t *ev = event_of(rec);
    size_t n = 0;
    for (struct rt_conn *o = rt->conns; ev != NULL && o != NULL; o = o->next) {
        if (o == except || !o->open || !attached(o, rec->channel))
            continue;
        spool_rt_send_json(o, json_incref(ev));
        n++;
    }
    json_decref(ev);
    return n;
}

void spool_ai_ephemeral_arrived(void *arg, const Spool__Record *rec)
{
    struct spool_realtime *rt = arg;
    if (!rt->closing)
        fanout(rt, rec, NULL);
}

void spool_ai_ephemeral(struct rt_conn *c, json_t *msg, bool interrupt)
{
    json_t *jserial = json_object_get(msg, "msgSerial");
    json_int_t msg_serial = json_is_integer(jserial) ? json_integer_value(jserial) : -1;
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    const char *why = "channel missing";
    if (channel == NULL || !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why, NULL);
        return;
    }
    json_t *name = json_object_get(msg, "name"), *data = json_object_get(msg, "data");
    json_t *cid = json_object_get(msg, "clientId");
    if ((name != NULL && (!json_is_string(name) || json_string_length(name) > c->rt->cfg.max_field_bytes)) ||
        (cid != NULL && (!json_is_string(cid) || json_string_length(cid) > SPOOL_CLIENT_ID_MAX))) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "name and clientId must be short strings",
                            json_pack("{s:s}", "channel", channel));
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_PUBLISH, &err) != SPOOL_AUTH_OK) {
        spool_rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg, json_pack("{s:s}", "channel", channel));
        return;
    }
    if (!spool_rt_take_tokens(c, 1)) {
        spool_rt_send_error(c, SPOOL_RT_ERATE, "publish rate limit exceeded", json_pack("{s:s}", "channel", channel));
        return;
    }
    size_t len = 0;
    char *bytes = data != NULL ? spool_json_dump(data, &len) : NULL;
    if (data != NULL && bytes == NULL) {
        spool_rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return;
    }
    if (len > c->rt->cfg.max_message_bytes) {
        free(bytes);
        spool_rt_send_error(c, SPOOL_RT_ETOO_LARGE, "data exceeds max-message-bytes", json_pack("{s:s}", "channel", channel));
        return;
    }
    Spool__Record rec = SPOOL__RECORD__INIT;
    rec.channel = (char *)channel;
    rec.action = SPOOL__ACTION__ACTION_CHANNEL_META;
    rec.id = interrupt ? "interrupt" : "ephemeral";
    rec.name = name != NULL ? (char *)json_string_value(name) : "";
    rec.client_id = c->principal.client_id[0] != '\0' ? c->principal.client_id
                    : cid != NULL                      ? (char *)json_string_value(cid)
                                                       : "";
    rec.data.data = (uint8_t *)bytes;
    rec.data.len = len;
    rec.content_type = "application/json";
    rec.timestamp_ms = spool_auth_now_ms();
    size_t n = fanout(c->rt, &rec, c);
    int rv = spool_node_ephemeral(c->rt->node, &rec); /* the other nodes' connections */
    free(bytes);
    if (msg_serial >= 0 && rv == 0)
        spool_rt_send_json(c, json_pack("{s:s,s:I,s:[],s:I}", "type", "ack", "msgSerial", msg_serial,
                                        "serials", "delivered", (json_int_t)n));
    else if (msg_serial >= 0)
        spool_rt_nack(c, msg_serial, spool_rt_code_of(rv), "ephemeral message not sent to the cluster");
}

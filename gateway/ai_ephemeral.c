/*
 * Ephemeral messages and interrupts: node-local fan-out to attached connections (see
 * ai_ephemeral.h). The event is encoded once and sent to each connection attached to the
 * channel, except the sender, through the connection's send buffer like any event (a
 * connection over its send buffer is closed by the WebSocket layer as for messages).
 */
#include "gateway/ai_ephemeral.h"

#include <string.h>

#include "gateway/auth.h"
#include "gateway/channel_name.h"
#include "gateway/realtime_int.h"

static bool attached(const struct rt_conn *c, const char *channel)
{
    for (const struct rt_att *t = c->atts; t != NULL; t = t->next)
        if (strcmp(t->channel, channel) == 0)
            return true;
    return false;
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
    if ((name != NULL && (!json_is_string(name) || json_string_length(name) > c->rt->cfg.max_field_bytes))) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "name must be a string of at most max-field-bytes",
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
    json_t *ev = json_pack("{s:s,s:s,s:O,s:I}", "type", interrupt ? "interrupt" : "ephemeral",
                           "channel", channel, "data", data != NULL ? data : json_null(),
                           "timestamp", (json_int_t)spool_auth_now_ms());
    if (ev == NULL) {
        spool_rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return;
    }
    if (name != NULL) json_object_set(ev, "name", name);
    if (c->principal.client_id[0] != '\0') json_object_set_new(ev, "clientId", json_string(c->principal.client_id));
    else if (json_is_string(json_object_get(msg, "clientId"))) json_object_set(ev, "clientId", json_object_get(msg, "clientId"));
    if (interrupt) json_object_set_new(ev, "to", json_string("turn"));
    size_t n = 0;
    for (struct rt_conn *o = c->rt->conns; o != NULL; o = o->next) {
        if (o == c || !o->open || !attached(o, channel))
            continue;
        spool_rt_send_json(o, json_incref(ev));
        n++;
    }
    json_decref(ev);
    if (msg_serial >= 0)
        spool_rt_send_json(c, json_pack("{s:s,s:I,s:[],s:I}", "type", "ack", "msgSerial", msg_serial,
                                        "serials", "delivered", (json_int_t)n));
}

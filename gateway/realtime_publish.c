/*
 * Publishing over the realtime protocol: {"type":"publish"} into records with the REST API's
 * storage rules, the per-connection rate bucket, and the ack/nack that completes each publish
 * (the node's callback is the one completion path; it holds a connection reference).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/ai_message.h"
#include "gateway/channel_name.h"
#include "gateway/json_body.h"
#include "gateway/message_json.h"
#include "gateway/metrics.h"
#include "gateway/realtime_int.h"
#include "gateway/rt_frame.h"

/* v in decimal at p (at most 20 bytes); returns the end. snprintf was visible per ack. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

void spool_rt_on_published(void *arg, int status, const struct spool_err *err, const uint64_t *seqs,
                         const bool *duplicate, size_t n)
{
    struct rt_pub *p = arg;
    struct rt_conn *c = p->c;
    if (status == 0 && c->open) {
        /* c->rt outlives every open connection */
        if (c->rt->counters.messages_in != NULL)
            spool_counter_add(c->rt->counters.messages_in, (double)n);
        if (c->rt->counters.bytes_in != NULL)
            spool_counter_add(c->rt->counters.bytes_in, (double)p->bytes);
    }
    if (c->open && status == 0 && p->channel != NULL && n == 1) {
        struct rt_entered *e = *spool_rt_entered_find(&c->entered, p->channel, p->client_id);
        if (e != NULL && seqs[0] > e->serial)
            e->serial = seqs[0];
    }
    if (c->open && p->msg_serial < 0) {
        if (status != 0)
            spool_rt_send_error(c, spool_rt_code_of(status),
                                err != NULL && err->msg[0] ? err->msg : spool_err_name(status),
                                json_pack("{s:s}", "channel", p->channel ? p->channel : ""));
    } else if (c->open) {
        bool any_dup = false;
        for (size_t i = 0; status == 0 && i < n; i++)
            any_dup = any_dup || duplicate[i];
        if (status == 0 && !any_dup && n <= 64) {
            /* The common ack, formatted directly (the same bytes jansson's compact dump gives):
             * building and dumping a JSON object per publish was a visible share of the CPU. */
            static const char head[] = "{\"type\":\"ack\",\"msgSerial\":";
            char buf[128 + 64 * 21];
            char *q = buf;
            memcpy(q, head, sizeof head - 1);
            q = put_u64(q + sizeof head - 1, (uint64_t)p->msg_serial);
            memcpy(q, ",\"serials\":[", 12);
            q += 12;
            for (size_t i = 0; i < n; i++) {
                if (i > 0)
                    *q++ = ',';
                q = put_u64(q, seqs[i]);
            }
            memcpy(q, "]}", 2);
            q += 2;
            spool_ws_send_text(&c->ws, buf, (size_t)(q - buf));
        } else if (status == 0) {
            json_t *serials = json_array(), *dups = json_array();
            for (size_t i = 0; i < n; i++) {
                json_array_append_new(serials, json_integer((json_int_t)seqs[i]));
                json_array_append_new(dups, json_boolean(duplicate[i]));
            }
            json_t *o = json_pack("{s:s,s:I,s:o}", "type", "ack", "msgSerial", p->msg_serial,
                                  "serials", serials);
            if (any_dup && o != NULL)
                json_object_set_new(o, "duplicates", dups);
            else
                json_decref(dups);
            spool_rt_send_json(c, o);
        } else {
            const char *msg = err != NULL && err->msg[0] ? err->msg : spool_err_name(status);
            spool_rt_send_json(c, json_pack("{s:s,s:I,s:{s:i,s:s}}", "type", "nack", "msgSerial",
                                      p->msg_serial, "error", "code", spool_rt_code_of(status),
                                      "message", msg));
        }
    }
    free(p->channel);
    free(p->client_id);
    free(p);
    spool_rt_conn_unref(c);
}

void spool_rt_nack(struct rt_conn *c, json_int_t msg_serial, int code, const char *message)
{
    spool_rt_send_json(c, json_pack("{s:s,s:I,s:{s:i,s:s}}", "type", "nack", "msgSerial",
                                    msg_serial, "error", "code", code, "message", message));
}

bool spool_rt_take_tokens(struct rt_conn *c, size_t n)
{
    uint64_t rate = c->rt->cfg.rate_per_second;
    if (rate == 0)
        return true;
    uint64_t now = uv_now(c->rt->loop);
    c->tokens += (double)(now - c->tokens_at) * (double)rate / 1000.0;
    if (c->tokens > (double)rate)
        c->tokens = (double)rate;
    c->tokens_at = now;
    if (c->tokens < (double)n)
        return false;
    c->tokens -= (double)n;
    return true;
}

/* One message object into `rec` by the rules shared with REST (gateway/message_json.h), stamped
 * with this connection's id. Buffers to free go to owned[0..1]. Returns NULL, or a message with
 * *code set. */
const char *spool_rt_message_from_json(struct rt_conn *c, json_t *m, Spool__Record *rec,
                                        char **owned, int *code)
{
    const struct spool_message_limits lim = {c->rt->cfg.max_field_bytes,
                                             c->rt->cfg.max_message_bytes};
    const char *why = NULL;
    switch (spool_message_from_json(m, c->principal.client_id, &lim, rec, owned, &why)) {
    case SPOOL_MESSAGE_OK:
        rec->connection_id = c->id;
        return NULL;
    case SPOOL_MESSAGE_FORBIDDEN: *code = SPOOL_RT_EFORBIDDEN; break;
    case SPOOL_MESSAGE_TOO_LARGE: *code = SPOOL_RT_ETOO_LARGE; break;
    case SPOOL_MESSAGE_NOMEM: *code = SPOOL_RT_EINTERNAL; break;
    default: *code = SPOOL_RT_EBAD_MESSAGE; break;
    }
    return why;
}

/* Where a publish's message objects come from: jansson's array, or the scanned frame. */
typedef const char *(*rt_fill_fn)(struct rt_conn *c, const void *src, size_t i,
                                  const char *channel, Spool__Record *rec, char **owned, int *code);

static const char *fill_from_json(struct rt_conn *c, const void *src, size_t i,
                                  const char *channel, Spool__Record *rec, char **owned, int *code)
{
    json_t *m = json_array_get((const json_t *)src, i);
    const char *message = spool_rt_message_from_json(c, m, rec, owned, code);
    if (message == NULL)
        message = spool_ai_message_fields(m, rec, &c->principal, channel);
    return message;
}

static const char *fill_from_frame(struct rt_conn *c, const void *src, size_t i,
                                   const char *channel, Spool__Record *rec, char **owned, int *code)
{
    (void)owned; /* a scanned message's data is a string: nothing is serialised */
    const struct spool_rt_frame *f = src;
    const struct spool_message_limits lim = {c->rt->cfg.max_field_bytes,
                                             c->rt->cfg.max_message_bytes};
    const char *why = NULL;
    switch (spool_rt_frame_record(&f->msgs[i], c->principal.client_id, &lim, rec, &why)) {
    case SPOOL_MESSAGE_OK:
        rec->connection_id = c->id;
        /* No AI field in a scanned message: this only sets the principal's edit/delete flags. */
        return spool_ai_message_fields(NULL, rec, &c->principal, channel);
    case SPOOL_MESSAGE_FORBIDDEN: *code = SPOOL_RT_EFORBIDDEN; break;
    case SPOOL_MESSAGE_TOO_LARGE: *code = SPOOL_RT_ETOO_LARGE; break;
    case SPOOL_MESSAGE_NOMEM: *code = SPOOL_RT_EINTERNAL; break;
    default: *code = SPOOL_RT_EBAD_MESSAGE; break;
    }
    return why;
}

/* Records on the stack up to this many messages (the usual publish has one). */
#define RT_PUB_STACK 16

/* The publish once its serial, channel and non-empty message list are known: the batch limit,
 * the principal, the rate bucket, the records, then the node. */
static void publish_messages(struct rt_conn *c, json_int_t msg_serial, const char *channel,
                             size_t n, rt_fill_fn fill, const void *src)
{
    if (n > c->rt->cfg.max_batch) {
        spool_rt_nack(c, msg_serial, SPOOL_RT_ETOO_LARGE + 2, "too many messages in one publish");
        return;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_PUBLISH, &err) != SPOOL_AUTH_OK) {
        spool_rt_nack(c, msg_serial, SPOOL_RT_EFORBIDDEN, err.msg);
        return;
    }
    if (!spool_rt_take_tokens(c, n)) {
        spool_rt_nack(c, msg_serial, SPOOL_RT_ERATE, "publish rate limit exceeded");
        return;
    }
    /* spool_node_publish copies what it keeps, so the records and what they borrow need only
     * outlive the call: small publishes keep them on the stack (a calloc per publish showed in
     * profiles). */
    Spool__Record recs_s[RT_PUB_STACK];
    const Spool__Record *ptrs_s[RT_PUB_STACK];
    char *owned_s[2 * RT_PUB_STACK];
    bool heap = n > RT_PUB_STACK;
    Spool__Record *recs = heap ? calloc(n, sizeof *recs) : recs_s;
    const Spool__Record **ptrs = heap ? calloc(n, sizeof *ptrs) : ptrs_s;
    char **owned = heap ? calloc(2 * n, sizeof *owned) : owned_s;
    struct rt_pub *p = malloc(sizeof *p);
    int code = 0;
    const char *message = NULL;
    if (recs == NULL || ptrs == NULL || owned == NULL || p == NULL) {
        code = SPOOL_RT_EINTERNAL;
        message = "out of memory";
    }
    size_t filled = 0;
    for (size_t i = 0; i < n && code == 0; i++) {
        owned[2 * i] = owned[2 * i + 1] = NULL;
        filled = i + 1;
        message = fill(c, src, i, channel, &recs[i], &owned[2 * i], &code);
        if (message == NULL)
            code = 0;
        else if (code == 0)
            code = SPOOL_RT_EBAD_MESSAGE;
        ptrs[i] = &recs[i];
    }
    if (code == 0) {
        p->c = c;
        p->msg_serial = msg_serial;
        p->channel = p->client_id = NULL;
        p->bytes = 0;
        for (size_t i = 0; i < n; i++)
            p->bytes += recs[i].data.len;
        c->refs++;
        int rv = spool_node_publish(c->rt->node, channel, (const Spool__Record *const *)ptrs, n,
                                    spool_rt_on_published, p);
        if (rv != 0) {
            c->refs--;
            code = spool_rt_code_of(rv);
            message = "publish could not start";
        } else {
            p = NULL; /* owned by the completion */
        }
    }
    if (code != 0)
        spool_rt_nack(c, msg_serial, code, message);
    for (size_t i = 0; owned != NULL && i < 2 * filled; i++)
        free(owned[i]);
    if (heap) {
        free(owned);
        free(ptrs);
        free(recs);
    }
    free(p);
}

void spool_rt_publish(struct rt_conn *c, json_t *msg)
{
    json_t *jserial = json_object_get(msg, "msgSerial");
    json_int_t msg_serial = json_is_integer(jserial) ? json_integer_value(jserial) : -1;
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    json_t *messages = json_object_get(msg, "messages");
    if (msg_serial < 0) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "publish needs an integer msgSerial >= 0",
                            NULL);
        return;
    }
    const char *why = "channel missing";
    if (channel == NULL ||
        !spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        spool_rt_nack(c, msg_serial, SPOOL_RT_EBAD_CHANNEL, why);
        return;
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        spool_rt_nack(c, msg_serial, SPOOL_RT_EBAD_MESSAGE, "messages must be a non-empty array");
        return;
    }
    publish_messages(c, msg_serial, channel, json_array_size(messages), fill_from_json, messages);
}

void spool_rt_publish_frame(struct rt_conn *c, const struct spool_rt_frame *f)
{
    /* The scanner guarantees a serial >= 0 and at least one message; the rest as above. */
    const char *why = "channel missing";
    if (!spool_channel_name_valid(f->channel.s, f->channel.len, RT_CHANNEL_MAX, &why)) {
        spool_rt_nack(c, f->msg_serial, SPOOL_RT_EBAD_CHANNEL, why);
        return;
    }
    publish_messages(c, f->msg_serial, f->channel.s, f->n, fill_from_frame, f);
}

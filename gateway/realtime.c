/*
 * The realtime protocol server; see realtime.h for the design, realtime_int.h for how its files
 * divide the work, and docs/protocol.md for the messages. This file: the realtime object and its
 * encode-once frame cache, connections (life cycle and reference count), attachments, the
 * message dispatcher, the resume-key refresh, shutdown, the HTTP upgrade handler and the wiring.
 */
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/channel_name.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/jwt.h"
#include "gateway/metrics.h"
#include "gateway/ai_ephemeral.h"
#include "gateway/ai_rollup.h"
#include "gateway/realtime_int.h"
#include "gateway/rt_frame.h"

/* ---- the realtime object and its frame cache ------------------------------------------------ */

/* The shared frame for `rec`, encoded on first use; a borrowed reference (the cache keeps one). */
struct spool_wsframe *spool_realtime_frame(struct spool_realtime *rt, const Spool__Record *rec)
{
    for (unsigned i = 0; i < RT_FRAME_CACHE; i++) {
        struct rt_cached *c = &rt->cache[i];
        if (c->frame != NULL && c->seq == rec->seq && strcmp(c->channel, rec->channel) == 0 &&
            !spool_ai_rollup_is_rolled(rec))
            return c->frame;
    }
    json_t *o = spool_rt_record_json(rec);
    size_t len;
    char *s = o != NULL ? spool_json_dump(o, &len) : NULL;
    json_decref(o);
    if (s == NULL)
        return NULL;
    struct spool_wsframe *f = spool_wsframe_new(1, s, len);
    free(s);
    char *channel = strdup(rec->channel);
    if (f == NULL || channel == NULL) {
        spool_wsframe_unref(f);
        free(channel);
        return NULL;
    }
    struct rt_cached *c = &rt->cache[rt->cache_next++ % RT_FRAME_CACHE];
    spool_wsframe_unref(c->frame);
    free(c->channel);
    /* A rolled-up record (gateway/ai_rollup.h) ends at a raw record's serial: never found again. */
    *c = (struct rt_cached){channel, spool_ai_rollup_is_rolled(rec) ? 0 : rec->seq, f};
    return f;
}

static void rt_cache_clear(struct spool_realtime *rt)
{
    for (unsigned i = 0; i < RT_FRAME_CACHE; i++) {
        spool_wsframe_unref(rt->cache[i].frame);
        free(rt->cache[i].channel);
        rt->cache[i] = (struct rt_cached){0};
    }
}
/* ---- connections ----------------------------------------------------------------------------- */

void spool_rt_conn_unref(struct rt_conn *c)
{
    if (--c->refs > 0)
        return;
    spool_rt_entered_free(c->entered);
    spool_principal_close(&c->principal);
    free(c->tcp);
    free(c);
}

void spool_rt_send_json(struct rt_conn *c, json_t *o)
{
    if (o == NULL)
        return;
    size_t len;
    char *s = c->open ? spool_json_dump(o, &len) : NULL;
    json_decref(o);
    if (s == NULL)
        return;
    spool_ws_send_text(&c->ws, s, len);
    free(s);
}

void spool_rt_send_error(struct rt_conn *c, int code, const char *message, json_t *extra)
{
    json_t *e = json_pack("{s:i,s:s}", "code", code, "message", message);
    json_t *o = json_pack("{s:s,s:o}", "type", "error", "error", e);
    if (extra != NULL && o != NULL)
        json_object_update_new(o, extra);
    else
        json_decref(extra);
    spool_rt_send_json(c, o);
}

int spool_rt_code_of(int spool_code)
{
    int status, code;
    spool_json_status_of(spool_code, &status, &code);
    return code;
}

static struct rt_att *rt_att_find(struct rt_conn *c, const char *channel)
{
    for (struct rt_att *t = c->atts; t != NULL; t = t->next)
        if (strcmp(t->channel, channel) == 0)
            return t;
    return NULL;
}

static void rt_att_remove(struct rt_conn *c, struct rt_att *t)
{
    for (struct rt_att **p = &c->atts; *p != NULL; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    c->n_atts--;
    spool_attach_close(t->a);
    free(t->channel);
    free(t);
}

static void rt_maybe_finish_close(struct spool_realtime *rt);

static void on_ws_close(struct spool_ws *ws, uint16_t code)
{
    struct rt_conn *c = ws->data;
    struct spool_realtime *rt = c->rt;
    c->open = false;
    while (c->atts != NULL)
        rt_att_remove(c, c->atts);
    for (struct rt_sync *y = c->syncs; y != NULL;) {
        struct rt_sync *next = y->next;
        spool_presence_sync_cancel(y->sync);
        free(y->channel);
        free(y);
        y = next;
    }
    c->syncs = NULL;
    /* A connection replaced by its own resume (4000) hands its members over; others leave. */
    if (code == 4000) {
        spool_rt_entered_free(c->entered);
        c->entered = NULL;
    } else {
        spool_rt_schedule_leave(c);
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        rt->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    rt->n_conns--;
    SPOOL_DEBUG("rt.closed", "conn=%s code=%u", c->id, code);
    spool_rt_conn_unref(c);
    rt_maybe_finish_close(rt);
}

static void on_ws_drain(struct spool_ws *ws)
{
    struct rt_conn *c = ws->data;
    /* Attachments reading history paused on a full buffer: let them go on. Continue may close
     * an attachment (error), so walk with care. */
    struct rt_att *t = c->atts;
    while (t != NULL) {
        struct rt_att *next = t->next;
        spool_attach_continue(t->a);
        t = next;
    }
}

static void on_ws_message(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len);

static const struct spool_ws_events rt_ws_events = {on_ws_message, on_ws_drain, on_ws_close};

/* ---- attachments ----------------------------------------------------------------------------- */

static void on_att_attached(void *arg, uint64_t serial)
{
    struct rt_att *t = arg;
    spool_rt_send_json(t->c, json_pack("{s:s,s:s,s:I}", "type", "attached", "channel", t->channel,
                                 "serial", (json_int_t)serial));
}

static void on_att_record(void *arg, const Spool__Record *rec)
{
    struct rt_att *t = arg;
    struct rt_conn *c = t->c;
    if (!c->open)
        return;
    struct spool_wsframe *f = spool_realtime_frame(c->rt, rec);
    if (f == NULL) {
        spool_ws_close(&c->ws, 1011, "out of memory");
        return;
    }
    /* Over the send buffer the connection closes (1008) and the client resumes. */
    if (spool_ws_send_frame(&c->ws, f) != 0)
        return;
    if (c->rt->counters.ws_out != NULL)
        spool_counter_inc(c->rt->counters.ws_out);
    if (c->rt->counters.ws_bytes_out != NULL)
        spool_counter_add(c->rt->counters.ws_bytes_out, (double)rec->data.len);
}

static void on_att_error(void *arg, const struct spool_err *err)
{
    struct rt_att *t = arg;
    struct rt_conn *c = t->c;
    json_t *extra = json_pack("{s:s,s:I}", "channel", t->channel, "serial",
                              (json_int_t)spool_attach_serial(t->a));
    spool_rt_send_error(c, spool_rt_code_of(err->code), err->msg, extra);
    spool_rt_send_json(c, json_pack("{s:s,s:s}", "type", "detached", "channel", t->channel));
    rt_att_remove(c, t);
}

static bool on_att_can_send(void *arg)
{
    struct rt_att *t = arg;
    return spool_ws_buffered(&t->c->ws) <= t->c->rt->cfg.send_buffer_bytes / 2;
}

static const struct spool_attach_events rt_att_events = {on_att_attached, on_att_record,
                                                         on_att_error, on_att_can_send};

/* Attaches (or re-attaches) `channel` from `from`; reports problems to the client. */
int spool_rt_attach(struct rt_conn *c, const char *channel, struct spool_from from)
{
    const char *why = NULL;
    if (!spool_channel_name_valid(channel, strlen(channel), RT_CHANNEL_MAX, &why)) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, why ? why : "invalid channel name",
                            json_pack("{s:s}", "channel", channel));
        return -1;
    }
    struct spool_err err;
    if (spool_principal_check(&c->principal, channel, SPOOL_CAP_SUBSCRIBE, &err) != SPOOL_AUTH_OK) {
        spool_rt_send_error(c, SPOOL_RT_EFORBIDDEN, err.msg,
                            json_pack("{s:s}", "channel", channel));
        return -1;
    }
    struct rt_att *old = rt_att_find(c, channel);
    if (old != NULL)
        rt_att_remove(c, old); /* attach again = start over from the new point */
    if (c->n_atts >= c->rt->cfg.max_channels) {
        spool_rt_send_error(c, SPOOL_RT_ETOO_MANY_CHANNELS, "too many channels on this connection",
                            json_pack("{s:s,s:I}", "channel", channel, "max",
                                (json_int_t)c->rt->cfg.max_channels));
        return -1;
    }
    struct rt_att *t = calloc(1, sizeof *t);
    if (t == NULL || (t->channel = strdup(channel)) == NULL) {
        free(t);
        spool_rt_send_error(c, SPOOL_RT_EINTERNAL, "out of memory", NULL);
        return -1;
    }
    t->c = c;
    struct spool_attach_config acfg = {.max_buffer_bytes = c->rt->cfg.send_buffer_bytes};
    if (spool_attach_start(&t->a, c->rt->node, channel, from, &acfg, &rt_att_events, t, &err) !=
        0) {
        spool_rt_send_error(c, spool_rt_code_of(err.code), err.msg,
                            json_pack("{s:s}", "channel", channel));
        free(t->channel);
        free(t);
        return -1;
    }
    t->next = c->atts;
    c->atts = t;
    c->n_atts++;
    return 0;
}
/* ---- messages -------------------------------------------------------------------------------- */

/* {"type":"auth","token":JWT}: a fresh token for the same identity (signing key and client id)
 * replaces the connection's, so a connection outlives its first token (the expiry check on the
 * refresh cadence then uses the new exp). A token for another identity, or one that does not
 * verify, is refused with an error and changes nothing. */
static void rt_reauth(struct rt_conn *c, json_t *msg)
{
    const char *token = json_string_value(json_object_get(msg, "token"));
    if (token == NULL) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "auth needs a token", NULL);
        return;
    }
    struct spool_principal p;
    spool_principal_init(&p);
    struct spool_err err;
    int code = spool_auth_token(c->rt->keys, token, strlen(token), spool_auth_now_ms(), &p, &err);
    if (code != SPOOL_AUTH_OK) {
        spool_rt_send_error(c, code, spool_auth_message(code), NULL);
    } else if (c->principal.anonymous || strcmp(p.key_name, c->principal.key_name) != 0 ||
               strcmp(p.client_id, c->principal.client_id) != 0) {
        spool_rt_send_error(c, SPOOL_RT_EAUTH_IDENTITY,
                            "a new token must be for the same key and client id", NULL);
    } else {
        spool_principal_close(&c->principal);
        c->principal = p; /* the connection owns it now */
        spool_rt_send_json(c, json_pack("{s:s,s:I}", "type", "authed", "expiresAt",
                                        (json_int_t)c->principal.expires_at_ms));
        return;
    }
    spool_principal_close(&p);
}

/* A publish frame of the usual shape goes through the scanner (gateway/rt_frame.h) on a copy
 * (it NUL-terminates in place), not jansson: same answers, no allocation per key and string.
 * False when the frame is anything else; the caller then parses it with jansson. */
#define RT_SCAN_STACK 8192
static bool rt_try_publish_frame(struct rt_conn *c, const uint8_t *data, size_t len)
{
    char stack[RT_SCAN_STACK];
    char *buf = len <= sizeof stack ? stack : malloc(len);
    if (buf == NULL)
        return false;
    memcpy(buf, data, len);
    struct spool_rt_frame f;
    bool ok = spool_rt_frame_parse(buf, len, &f);
    if (ok)
        spool_rt_publish_frame(c, &f);
    if (buf != stack)
        free(buf);
    return ok;
}

static void on_ws_message(struct spool_ws *ws, uint8_t opcode, const uint8_t *data, size_t len)
{
    struct rt_conn *c = ws->data;
    bool first = c->resumable;
    c->resumable = false;
    if (rt_try_publish_frame(c, data, len))
        return;
    json_error_t jerr;
    json_t *msg = json_loadb((const char *)data, len, 0, &jerr);
    if (msg == NULL || !json_is_object(msg)) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_JSON,
                            msg == NULL ? jerr.text : "expected a JSON object", NULL);
        json_decref(msg);
        return;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (type == NULL) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "type missing", NULL);
    } else if (strcmp(type, "attach") == 0) {
        const char *channel = json_string_value(json_object_get(msg, "channel"));
        struct spool_from from;
        if (channel == NULL)
            spool_rt_send_error(c, SPOOL_RT_EBAD_CHANNEL, "channel missing", NULL);
        else if (spool_rt_parse_from(json_object_get(msg, "from"), &from) != 0)
            spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE,
                                "from must be \"live\", \"start\", a serial or {\"last\":N}",
                                json_pack("{s:s}", "channel", channel));
        else if (spool_rt_attach(c, channel, from) == 0)
            spool_rt_send_resume_key(c);
    } else if (strcmp(type, "detach") == 0) {
        const char *channel = json_string_value(json_object_get(msg, "channel"));
        struct rt_att *t = channel != NULL ? rt_att_find(c, channel) : NULL;
        if (t == NULL) {
            spool_rt_send_error(c, SPOOL_RT_ENOT_ATTACHED, "not attached",
                                channel ? json_pack("{s:s}", "channel", channel) : NULL);
        } else {
            rt_att_remove(c, t);
            spool_rt_send_json(c, json_pack("{s:s,s:s}", "type", "detached", "channel", channel));
            spool_rt_send_resume_key(c);
        }
    } else if (strcmp(type, "publish") == 0) {
        spool_rt_publish(c, msg);
    } else if (strcmp(type, "resume") == 0) {
        const char *key = json_string_value(json_object_get(msg, "resumeKey"));
        json_t *serials = json_object_get(msg, "serials");
        if (!first || c->n_atts > 0)
            spool_rt_send_error(c, SPOOL_RT_EBAD_RESUME, "resume must be the first message", NULL);
        else if (key == NULL || (serials != NULL && !json_is_object(serials)))
            spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE,
                                "resume needs resumeKey and an optional serials object", NULL);
        else
            spool_rt_resume(c, key, serials);
    } else if (strcmp(type, "presence") == 0) {
        spool_rt_presence(c, msg);
    } else if (strcmp(type, "presence.get") == 0) {
        spool_rt_presence_get(c, msg);
    } else if (strcmp(type, "auth") == 0) {
        rt_reauth(c, msg);
    } else if (strcmp(type, "ping") == 0) {
        spool_rt_send_json(c, json_pack("{s:s}", "type", "pong"));
    } else if (strcmp(type, "ephemeral") == 0 || strcmp(type, "interrupt") == 0) {
        spool_ai_ephemeral(c, msg, type[0] == 'i'); /* live only, never stored (ai_ephemeral.h) */
    } else {
        spool_rt_send_error(c, SPOOL_RT_EBAD_MESSAGE, "unknown message type",
                            json_pack("{s:s}", "received", type));
    }
    json_decref(msg);
}

/* ---- refresh, shutdown ----------------------------------------------------------------------- */

/* On the refresh cadence: connections whose JWT has expired are closed (the client reconnects
 * with a fresh token and resumes); the others get a fresh resume key. */
static void on_refresh(uv_timer_t *t)
{
    struct spool_realtime *rt = t->data;
    int64_t now = spool_auth_now_ms();
    for (struct rt_conn *c = rt->conns; c != NULL; c = c->next) {
        if (!c->open || spool_ws_is_closing(&c->ws))
            continue;
        if (c->principal.expires_at_ms != 0 && now >= c->principal.expires_at_ms) {
            spool_rt_send_resume_key(c); /* so the client can resume once it has a new token */
            spool_rt_send_error(c, SPOOL_AUTH_EXPIRED, spool_auth_message(SPOOL_AUTH_EXPIRED),
                                NULL);
            spool_ws_close(&c->ws, 1008, "token expired");
            continue;
        }
        spool_rt_send_resume_key(c);
    }
}

int spool_realtime_init(struct spool_realtime **out, uv_loop_t *loop, struct spool_node *node,
                        const struct spool_keyring *keys, const struct spool_realtime_config *cfg,
                        const uint8_t secret[SPOOL_RESUME_SECRET_BYTES], struct spool_err *err)
{
    struct spool_realtime *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "realtime: out of memory");
    rt->loop = loop;
    rt->node = node;
    if (node != NULL) /* ephemeral records from peer nodes (gateway/ai_ephemeral.h) */
        spool_node_set_ephemeral_cb(node, spool_ai_ephemeral_arrived, rt);
    rt->keys = keys;
    rt->cfg = *cfg;
    memcpy(rt->secret, secret, SPOOL_RESUME_SECRET_BYTES);
    uv_timer_init(loop, &rt->refresh);
    rt->refresh.data = rt;
    uint64_t every = cfg->resume_window_ms / 4;
    if (cfg->heartbeat_ms != 0 && cfg->heartbeat_ms < every)
        every = cfg->heartbeat_ms;
    if (every > 0)
        uv_timer_start(&rt->refresh, on_refresh, every, every);
    uv_unref((uv_handle_t *)&rt->refresh);
    *out = rt;
    return 0;
}

size_t spool_realtime_connections(const struct spool_realtime *rt)
{
    return rt->n_conns;
}

static void on_refresh_closed(uv_handle_t *h)
{
    struct spool_realtime *rt = h->data;
    rt_cache_clear(rt);
    void (*cb)(void *) = rt->close_cb;
    void *arg = rt->close_arg;
    free(rt);
    if (cb != NULL)
        cb(arg);
}

static void rt_maybe_finish_close(struct spool_realtime *rt)
{
    if (rt->closing && rt->n_conns == 0 && !uv_is_closing((uv_handle_t *)&rt->refresh))
        uv_close((uv_handle_t *)&rt->refresh, on_refresh_closed);
}

void spool_realtime_close(struct spool_realtime *rt, void (*cb)(void *arg), void *arg)
{
    rt->closing = true;
    if (rt->node != NULL)
        spool_node_set_ephemeral_cb(rt->node, NULL, NULL);
    rt->close_cb = cb;
    rt->close_arg = arg;
    /* Members of dropped connections leave now: no resume will come to this node any more. */
    while (rt->leaves != NULL) {
        struct rt_leave *l = rt->leaves;
        uv_timer_stop(&l->timer);
        spool_rt_leave_all(rt, l->id, l->entered, l->died_at_ms);
        l->entered = NULL;
        spool_rt_leave_unlink(rt, l);
    }
    for (struct rt_conn *c = rt->conns; c != NULL; c = c->next)
        spool_ws_close(&c->ws, 1001, "server shutting down");
    rt_maybe_finish_close(rt);
}

/* ---- the upgrade ----------------------------------------------------------------------------- */

static void on_tcp_closed(uv_handle_t *h)
{
    free(h);
}

static void on_handshake_written(uv_write_t *req, int status)
{
    free(req);
}

int spool_rt_authenticate(const struct spool_keyring *keys, struct spool_http_req *req,
                          struct spool_principal *p, struct spool_err *err)
{
    char cred[4096];
    long n = spool_http_query_get(req->query, "key", cred, sizeof cred);
    if (n == -1)
        n = spool_http_query_get(req->query, "token", cred, sizeof cred);
    if (n == -2) {
        spool_err_set(err, SPOOL_EDENIED, "credential in the query does not decode");
        return SPOOL_AUTH_MALFORMED;
    }
    int64_t now = spool_auth_now_ms();
    if (n >= 0)
        return spool_auth_credential(keys, cred, now, p, err);
    return spool_auth_header(keys, spool_http_req_header(req, "Authorization"), now, p, err);
}

static void rt_conn_id(char out[SPOOL_CONNECTION_ID_MAX + 1])
{
    uint8_t raw[12];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        static uint64_t counter;
        uint64_t v = uv_hrtime() ^ ++counter;
        memcpy(raw, &v, 8);
        memset(raw + 8, 0, 4);
    }
    spool_base64url_encode(raw, sizeof raw, out, SPOOL_CONNECTION_ID_MAX + 1);
}

void spool_realtime_handle(void *arg, struct spool_http_req *req)
{
    struct spool_realtime *rt = arg;
    const char *upgrade = spool_http_req_header(req, "Upgrade");
    const char *key = spool_http_req_header(req, "Sec-WebSocket-Key");
    const char *version = spool_http_req_header(req, "Sec-WebSocket-Version");
    if (!req->upgrade || upgrade == NULL || strcasecmp(upgrade, "websocket") != 0 || key == NULL) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_REQUEST,
                                 "GET /v1/realtime needs a WebSocket upgrade");
        return;
    }
    if (version == NULL || strcmp(version, "13") != 0) {
        static const struct spool_http_header h[] = {{"Sec-WebSocket-Version", "13"}};
        spool_http_respond(req, 426, h, 1, "", 0);
        return;
    }
    char response[256];
    int rlen = spool_ws_handshake_response(key, strlen(key), response, sizeof response);
    if (rlen < 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_REQUEST, "bad Sec-WebSocket-Key");
        return;
    }
    if (rt->closing || (rt->cfg.max_connections != 0 && rt->n_conns >= rt->cfg.max_connections)) {
        spool_http_respond_error(req, 503, SPOOL_HTTP_EUNAVAILABLE,
                                 "too many realtime connections");
        return;
    }
    struct rt_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    spool_principal_init(&c->principal);
    struct spool_err err;
    int auth = spool_rt_authenticate(rt->keys, req, &c->principal, &err);
    if (auth != SPOOL_AUTH_OK) {
        spool_principal_close(&c->principal);
        free(c);
        spool_http_respond_error(req, spool_auth_status(auth), auth, "%s",
                                 spool_auth_message(auth));
        return;
    }
    /* Credentials without a client id (anonymous, API keys) may name one for the connection
     * (as they may on each message): it is then the connection's identity, e.g. for the
     * interrupts addressed to a turn holder (gateway/ai_ephemeral.h). */
    if (spool_ai_query_client_id(req, &c->principal) != 0) {
        spool_principal_close(&c->principal);
        free(c);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "clientId must be 1..%d bytes", SPOOL_CLIENT_ID_MAX);
        return;
    }
    char resume_key[RT_QUERY_MAX], serials_text[RT_QUERY_MAX];
    long rk = spool_http_query_get(req->query, "resume", resume_key, sizeof resume_key);
    long sl = spool_http_query_get(req->query, "serials", serials_text, sizeof serials_text);
    json_t *serials = sl >= 0 ? json_loads(serials_text, 0, NULL) : NULL;
    if (rk == -2 || sl == -2 || (sl >= 0 && !json_is_object(serials))) {
        json_decref(serials);
        spool_principal_close(&c->principal);
        free(c);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "resume must be a key and serials a JSON object");
        return;
    }
    char *leftover = NULL;
    size_t leftover_len = 0;
    if (spool_http_upgrade(req, &c->tcp, &leftover, &leftover_len, &err) != 0) {
        json_decref(serials);
        spool_principal_close(&c->principal);
        free(c);
        return;
    }
    uv_write_t *w = malloc(sizeof *w + (size_t)rlen);
    uv_buf_t buf = uv_buf_init((char *)(w + 1), (unsigned)rlen);
    if (w != NULL) {
        memcpy(w + 1, response, (size_t)rlen);
        if (uv_write(w, (uv_stream_t *)c->tcp, &buf, 1, on_handshake_written) != 0)
            free(w);
    }
    c->rt = rt;
    c->refs = 1;
    c->open = true;
    c->resumable = true;
    c->tokens = (double)rt->cfg.rate_per_second;
    c->tokens_at = uv_now(rt->loop);
    rt_conn_id(c->id);
    c->ws.data = c;
    struct spool_ws_config wcfg = {
        .max_frame_bytes = rt->cfg.max_frame_bytes,
        .max_message_bytes = rt->cfg.max_frame_bytes,
        .send_buffer_bytes = rt->cfg.send_buffer_bytes,
        .heartbeat_ms = rt->cfg.heartbeat_ms,
    };
    /* Linked first: leftover frames are parsed inside spool_ws_start. */
    c->next = rt->conns;
    if (rt->conns != NULL)
        rt->conns->prev = c;
    rt->conns = c;
    rt->n_conns++;
    json_t *hello = json_pack(
        "{s:s,s:s,s:s,s:{s:I,s:I,s:I,s:I,s:I}}", "type", "connected", "connectionId", c->id,
        "clientId", c->principal.client_id, "limits", "maxMessageBytes",
        (json_int_t)rt->cfg.max_message_bytes, "maxFrameBytes", (json_int_t)rt->cfg.max_frame_bytes,
        "maxChannels", (json_int_t)rt->cfg.max_channels, "resumeWindowMs",
        (json_int_t)rt->cfg.resume_window_ms, "heartbeatMs", (json_int_t)rt->cfg.heartbeat_ms);
    /* The WebSocket needs to be started to send; buffered frames wait in `leftover`. */
    if (spool_ws_start(&c->ws, (uv_stream_t *)c->tcp, NULL, 0, &wcfg, &rt_ws_events, &err) != 0) {
        SPOOL_WARN("rt.start_failed", "err=%s", err.msg);
        json_decref(hello);
        json_decref(serials);
        free(leftover);
        c->open = false;
        rt->conns = c->next;
        if (c->next != NULL)
            c->next->prev = NULL;
        rt->n_conns--;
        uv_close((uv_handle_t *)c->tcp, on_tcp_closed);
        c->tcp = NULL;
        spool_rt_conn_unref(c);
        return;
    }
    if (rk >= 0) {
        /* Connected with ?resume=: "connected" then the outcome of the resume. */
        c->resumable = false;
        spool_rt_send_json(c, hello);
        spool_rt_resume(c, resume_key, serials);
    } else {
        spool_rt_send_json(c, hello);
        spool_rt_send_resume_key(c);
    }
    json_decref(serials);
    SPOOL_DEBUG("rt.connected", "conn=%s", c->id);
    if (leftover_len > 0)
        spool_ws_feed(&c->ws, (const uint8_t *)leftover, leftover_len);
    free(leftover);
}

/* ---- wiring ---------------------------------------------------------------------------------- */

int spool_realtime_mount(struct spool_realtime_mount *m, uv_loop_t *loop,
                         const struct spool_options *o, struct spool_node *node,
                         const struct spool_keyring *keys, struct spool_http_router *router,
                         struct spool_err *err)
{
    memset(m, 0, sizeof *m);
    uint8_t secret[SPOOL_RESUME_SECRET_BYTES];
    int rv = spool_resume_secret(o->resume_secret, o->data, secret, err);
    if (rv != 0)
        return rv;
    struct spool_realtime_config cfg = {
        .max_message_bytes = o->max_message_bytes,
        .max_frame_bytes = o->max_frame_bytes,
        .max_channels = o->max_channels_per_connection,
        .send_buffer_bytes = o->send_buffer_bytes,
        .heartbeat_ms = o->heartbeat_interval_ms,
        .resume_window_ms = o->resume_window_ms,
        .rate_per_second = o->rate_per_connection,
        .max_connections = o->max_connections,
        .max_batch = o->max_publish_batch,
        .max_field_bytes = o->max_field_bytes,
        .presence_timeout_ms = o->presence_timeout_ms,
    };
    if ((rv = spool_realtime_init(&m->rt, loop, node, keys, &cfg, secret, err)) != 0)
        return rv;
    struct spool_sse_config scfg = {
        .heartbeat_ms = o->heartbeat_interval_ms,
        .retry_ms = 1000,
        .send_buffer_bytes = o->send_buffer_bytes,
    };
    spool_sse_init(&m->sse, loop, node, keys, &scfg);
    m->sse.rt = m->rt; /* SSE streams share the encode-once cache */
    m->rt->sse = &m->sse; /* and get the ephemerals of this loop (ai_ephemeral.c) */
    if ((rv = spool_http_router_add(router, "GET", "/v1/realtime", spool_realtime_handle, m->rt,
                                    err)) != 0 ||
        (rv = spool_http_router_add(router, "GET", "/v1/channels/{channel}/events",
                                    spool_sse_handle, &m->sse, err)) != 0)
        return rv;
    return 0;
}

/* spool_record_cb for spool_node_set_fanout_observer: arg is the deliver histogram. A record
 * stamped in the future (clock skew between leader and this node) counts as 0. */
static void observe_fanout(void *arg, const Spool__Record *rec)
{
    double s = (double)(spool_auth_now_ms() - rec->timestamp_ms) / 1e3;
    spool_histogram_observe(arg, s > 0 ? s : 0);
}

void spool_realtime_set_counters(struct spool_realtime_mount *m,
                                 const struct spool_realtime_counters *c)
{
    if (m->rt != NULL)
        m->rt->counters = *c;
    m->sse.messages_out = c->sse_out;
    m->sse.bytes_out = c->sse_bytes_out;
    if (m->sse.node != NULL)
        spool_node_set_fanout_observer(m->sse.node, c->deliver != NULL ? observe_fanout : NULL,
                                       c->deliver);
}

void spool_realtime_unmount(struct spool_realtime_mount *m, void (*cb)(void *arg), void *arg)
{
    struct spool_realtime *rt = m->rt;
    m->rt = NULL;
    if (rt != NULL)
        spool_realtime_close(rt, cb, arg);
    else if (cb != NULL)
        cb(arg);
}

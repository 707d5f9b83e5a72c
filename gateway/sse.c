/*
 * SSE streams; see sse.h. One struct sse_stream per request: it owns the attachment and the
 * heartbeat timer, and sse_finish() is the only way out.
 */
#include "gateway/sse.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "gateway/ai_ephemeral.h"
#include "gateway/attach.h"
#include "gateway/channel_name.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/metrics.h"
#include "gateway/realtime.h"
#include "gateway/websocket.h"

#define SSE_CHANNEL_MAX 256

struct sse_stream {
    struct spool_sse *sse;
    struct sse_stream *prev, *next; /* in sse->streams while open */
    struct spool_http_req *req;
    struct spool_attach *att;
    uv_timer_t timer;
    bool finishing;
    char channel[SSE_CHANNEL_MAX + 1];
    char client_id[SPOOL_CLIENT_ID_MAX + 1]; /* "" = none: gets no interrupt */
};

static void sse_link(struct sse_stream *st)
{
    st->next = st->sse->streams;
    if (st->next != NULL)
        st->next->prev = st;
    st->sse->streams = st;
}

static void sse_unlink(struct sse_stream *st)
{
    if (st->prev != NULL)
        st->prev->next = st->next;
    else if (st->sse->streams == st)
        st->sse->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct sse_stream *st = h->data;
    spool_http_stream_end(st->req);
    free(st);
}

static void sse_finish(struct sse_stream *st)
{
    if (st->finishing)
        return;
    st->finishing = true;
    sse_unlink(st);
    if (st->att != NULL) {
        spool_attach_close(st->att);
        st->att = NULL;
    }
    uv_close((uv_handle_t *)&st->timer, on_timer_closed);
}

static void sse_write(struct sse_stream *st, const char *s, size_t len)
{
    if (st->finishing)
        return;
    if (spool_http_stream_write(st->req, s, len) != 0)
        sse_finish(st);
}

static void on_attached(void *arg, uint64_t serial)
{
    char line[64];
    int n = snprintf(line, sizeof line, ": attached %" PRIu64 "\n\n", serial);
    sse_write(arg, line, (size_t)n);
}

static void on_record(void *arg, const Spool__Record *rec)
{
    struct sse_stream *st = arg;
    if (st->finishing)
        return;
    if (spool_http_req_queued(st->req) > st->sse->cfg.send_buffer_bytes) {
        SPOOL_INFO("sse.slow_client", "queued=%zu", spool_http_req_queued(st->req));
        sse_finish(st); /* the client reconnects with Last-Event-ID */
        return;
    }
    /* The JSON object, from the realtime cache when there is one (encoded once for every
     * WebSocket connection and SSE stream delivering this record). */
    struct spool_wsframe *f = st->sse->rt != NULL ? spool_realtime_frame(st->sse->rt, rec) : NULL;
    char *json = NULL;
    size_t len = 0;
    if (f != NULL) {
        spool_wsframe_ref(f);
    } else {
        json_t *o = spool_rt_record_json(rec);
        json = o != NULL ? spool_json_dump(o, &len) : NULL;
        json_decref(o);
        if (json == NULL) {
            sse_finish(st);
            return;
        }
    }
    char head[80];
    int h = snprintf(head, sizeof head, "id: %" PRIu64 "\nevent: %s\ndata: ", rec->seq,
                     rec->action == SPOOL__ACTION__ACTION_PRESENCE ? "presence" : "message");
    uv_buf_t bufs[3] = {
        uv_buf_init(head, (unsigned)h),
        f != NULL ? uv_buf_init((char *)f->bytes + f->header, (unsigned)(f->len - f->header))
                  : uv_buf_init(json, (unsigned)len),
        uv_buf_init("\n\n", 2)};
    if (spool_http_stream_writev(st->req, bufs, 3) != 0) {
        sse_finish(st);
    } else {
        if (st->sse->messages_out != NULL)
            spool_counter_inc(st->sse->messages_out);
        if (st->sse->bytes_out != NULL)
            spool_counter_add(st->sse->bytes_out, (double)rec->data.len);
    }
    spool_wsframe_unref(f);
    free(json);
}

bool spool_sse_has_streams(const struct spool_sse *s, const char *channel)
{
    for (const struct sse_stream *st = s->streams; st != NULL; st = st->next)
        if (strcmp(st->channel, channel) == 0)
            return true;
    return false;
}

size_t spool_sse_ephemeral(struct spool_sse *s, const char *channel, const char *type,
                           const char *to, const char *json, size_t len)
{
    char head[48];
    int h = snprintf(head, sizeof head, "event: %s\ndata: ", type);
    size_t n = 0;
    struct sse_stream *next;
    for (struct sse_stream *st = s->streams; st != NULL; st = next) {
        next = st->next; /* a failed write finishes (unlinks) st */
        if (st->finishing || strcmp(st->channel, channel) != 0)
            continue;
        if (to != NULL && (to[0] == '\0' || strcmp(st->client_id, to) != 0))
            continue;
        if (spool_http_req_queued(st->req) > s->cfg.send_buffer_bytes) {
            SPOOL_DEBUG("sse.ephemeral_dropped", "channel=%s queued=%zu", channel,
                        spool_http_req_queued(st->req));
            continue; /* best effort: a slow stream skips it rather than growing */
        }
        uv_buf_t bufs[3] = {uv_buf_init(head, (unsigned)h), uv_buf_init((char *)json, (unsigned)len),
                            uv_buf_init("\n\n", 2)};
        if (spool_http_stream_writev(st->req, bufs, 3) != 0) {
            sse_finish(st);
            continue;
        }
        n++;
    }
    return n;
}

static void on_error(void *arg, const struct spool_err *err)
{
    struct sse_stream *st = arg;
    int status, code;
    spool_json_status_of(err->code, &status, &code);
    json_t *o = json_pack("{s:i,s:s}", "code", code, "message", err->msg);
    size_t len;
    char *json = o != NULL ? spool_json_dump(o, &len) : NULL;
    json_decref(o);
    if (json != NULL) {
        sse_write(st, "event: error\ndata: ", 19);
        sse_write(st, json, len);
        sse_write(st, "\n\n", 2);
        free(json);
    }
    sse_finish(st);
}

static bool can_send(void *arg)
{
    struct sse_stream *st = arg;
    return spool_http_req_queued(st->req) <= st->sse->cfg.send_buffer_bytes / 2;
}

static const struct spool_attach_events sse_events = {on_attached, on_record, on_error, can_send};

static void on_req_close(void *arg, struct spool_http_req *req, int reason)
{
    sse_finish(arg);
}

static void on_req_drain(void *arg, struct spool_http_req *req)
{
    struct sse_stream *st = arg;
    if (!st->finishing && st->att != NULL)
        spool_attach_continue(st->att);
}

static void on_heartbeat(uv_timer_t *t)
{
    sse_write(t->data, ": hb\n\n", 6);
}

/* Where to start: Last-Event-ID, else ?from= / ?last=. Returns 0 or -1 (bad value). */
static int sse_from(struct spool_http_req *req, struct spool_from *out)
{
    *out = (struct spool_from){SPOOL_FROM_LIVE, 0};
    const char *last_id = spool_http_req_header(req, "Last-Event-ID");
    uint64_t n;
    if (last_id != NULL && last_id[0] != '\0') {
        if (strspn(last_id, "0123456789") != strlen(last_id) || spool_parse_uint(last_id, &n) != 0)
            return -1;
        *out = (struct spool_from){SPOOL_FROM_SERIAL, n};
        return 0;
    }
    char v[32];
    long len = spool_http_query_get(req->query, "from", v, sizeof v);
    if (len == -2)
        return -1;
    if (len >= 0) {
        if (strcmp(v, "start") == 0)
            out->kind = SPOOL_FROM_START;
        else if (strcmp(v, "live") == 0)
            out->kind = SPOOL_FROM_LIVE;
        else if (strspn(v, "0123456789") == (size_t)len && spool_parse_uint(v, &n) == 0)
            *out = (struct spool_from){SPOOL_FROM_SERIAL, n};
        else
            return -1;
        return 0;
    }
    len = spool_http_query_get(req->query, "last", v, sizeof v);
    if (len == -2)
        return -1;
    if (len >= 0) {
        if (strspn(v, "0123456789") != (size_t)len || spool_parse_uint(v, &n) != 0)
            return -1;
        *out = (struct spool_from){SPOOL_FROM_LAST, n};
    }
    return 0;
}

void spool_sse_init(struct spool_sse *s, uv_loop_t *loop, struct spool_node *node,
                    const struct spool_keyring *keys, const struct spool_sse_config *cfg)
{
    s->loop = loop;
    s->node = node;
    s->keys = keys;
    s->cfg = *cfg;
    s->messages_out = NULL;
    s->bytes_out = NULL;
    s->rt = NULL;
    s->streams = NULL;
}

void spool_sse_handle(void *arg, struct spool_http_req *req)
{
    struct spool_sse *sse = arg;
    const char *channel = req->n_params > 0 ? req->params[0] : "";
    const char *why = NULL;
    if (!spool_channel_name_valid(channel, strlen(channel), SSE_CHANNEL_MAX, &why)) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_CHANNEL, "%s",
                                 why ? why : "invalid channel name");
        return;
    }
    struct spool_from from;
    if (sse_from(req, &from) != 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "from must be start, live or a serial; last a count; "
                                 "Last-Event-ID a serial");
        return;
    }
    struct spool_principal p;
    spool_principal_init(&p);
    struct spool_err err;
    int auth = spool_rt_authenticate(sse->keys, req, &p, &err);
    if (auth == SPOOL_AUTH_OK)
        auth = spool_principal_check(&p, channel, SPOOL_CAP_SUBSCRIBE, &err);
    if (auth != SPOOL_AUTH_OK) {
        spool_principal_close(&p);
        spool_http_respond_error(req, spool_auth_status(auth), auth, "%s",
                                 auth == SPOOL_AUTH_FORBIDDEN ? err.msg : spool_auth_message(auth));
        return;
    }
    /* The stream's client id, for interrupts addressed to a turn holder. */
    if (spool_ai_query_client_id(req, &p) != 0) {
        spool_principal_close(&p);
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM, "clientId must be 1..%d bytes",
                                 SPOOL_CLIENT_ID_MAX);
        return;
    }
    struct sse_stream *st = calloc(1, sizeof *st);
    if (st == NULL) {
        spool_principal_close(&p);
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    memcpy(st->client_id, p.client_id, sizeof st->client_id);
    spool_principal_close(&p);
    snprintf(st->channel, sizeof st->channel, "%s", channel);
    st->sse = sse;
    st->req = req;
    struct spool_attach_config acfg = {.max_buffer_bytes = sse->cfg.send_buffer_bytes};
    if (spool_attach_start(&st->att, sse->node, channel, from, &acfg, &sse_events, st, &err) != 0) {
        free(st);
        int status, code;
        spool_json_status_of(err.code, &status, &code);
        spool_http_respond_error(req, status, code, "%s", err.msg);
        return;
    }
    static const struct spool_http_header headers[] = {
        {"Content-Type", "text/event-stream"},
        {"Cache-Control", "no-cache"},
        {"X-Accel-Buffering", "no"},
    };
    uv_timer_init(sse->loop, &st->timer);
    st->timer.data = st;
    spool_http_req_on_close(req, on_req_close, st);
    spool_http_req_on_drain(req, on_req_drain, st);
    if (spool_http_stream_start(req, 200, headers, 3) != 0) {
        sse_finish(st);
        return;
    }
    sse_link(st);
    char retry[48];
    int n = snprintf(retry, sizeof retry, "retry: %" PRIu64 "\n\n", sse->cfg.retry_ms);
    sse_write(st, retry, (size_t)n);
    if (sse->cfg.heartbeat_ms > 0 && !st->finishing)
        uv_timer_start(&st->timer, on_heartbeat, sse->cfg.heartbeat_ms, sse->cfg.heartbeat_ms);
}

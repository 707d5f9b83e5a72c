/*
 * Internals of the realtime protocol server, shared by its files (not for other modules):
 *
 *   realtime.c           the realtime object, the encode-once frame cache, connection life cycle,
 *                        attachments, the message dispatcher, refresh and shutdown, the upgrade
 *                        handler and the spoold wiring
 *   realtime_json.c      records as clients see them; parsing "from"
 *   realtime_publish.c   publish: message objects into records, rate limit, ack/nack
 *   rt_frame.c           the publish frame scanned without jansson (the hot path; rt_frame.h)
 *   realtime_presence.c  presence messages, members a connection entered, leaves on death
 *   realtime_resume.c    resume keys issued to connections and resuming from one
 *
 * A struct rt_conn lives until its WebSocket reports on_close AND every publish it started has
 * completed (refs); the struct spool_realtime outlives every open connection.
 */
#ifndef SPOOL_GATEWAY_REALTIME_INT_H
#define SPOOL_GATEWAY_REALTIME_INT_H

#include "gateway/presence.h"
#include "gateway/realtime.h"
#include "gateway/websocket.h"

#define RT_CHANNEL_MAX 256
#define RT_FRAME_CACHE 8
#define RT_QUERY_MAX 8192
#define RT_PRESENCE_SCAN_MAX SPOOL_PRESENCE_SCAN_MAX /* records read to compute members or check a leave */

struct rt_conn;

struct rt_cached {
    char *channel;
    uint64_t seq;
    struct spool_wsframe *frame;
};

struct spool_realtime {
    uv_loop_t *loop;
    struct spool_node *node;
    const struct spool_keyring *keys;
    struct spool_realtime_config cfg;
    uint8_t secret[SPOOL_RESUME_SECRET_BYTES];
    struct rt_conn *conns; /* doubly linked */
    struct rt_leave *leaves; /* dropped connections' members, waiting for a resume */
    size_t n_conns;
    uv_timer_t refresh;    /* resume key refresh cadence */
    struct rt_cached cache[RT_FRAME_CACHE];
    unsigned cache_next;
    bool closing;
    struct spool_realtime_counters counters;
    struct spool_sse *sse; /* this loop's SSE streams, which get ephemerals too (ai_ephemeral.c) */
    void (*close_cb)(void *arg);
    void *close_arg;
};

struct rt_att {
    struct rt_att *next;
    struct rt_conn *c;
    struct spool_attach *a;
    char *channel;
};

/* A presence member this connection entered (optimistically, at send time). */
struct rt_entered {
    struct rt_entered *next;
    char *channel;
    char *client_id;
    uint64_t serial; /* of its last acknowledged presence record, 0 until acked */
};

/* A presence.get in flight. */
struct rt_sync {
    struct rt_sync *next;
    struct rt_conn *c;
    struct spool_presence_sync *sync;
    char *channel;
};

/* The members of a connection that dropped, waiting presence_timeout_ms for a resume. */
struct rt_leave {
    uv_timer_t timer;
    struct spool_realtime *rt;
    struct rt_leave *next;
    char id[SPOOL_CONNECTION_ID_MAX + 1];
    int64_t died_at_ms;
    struct rt_entered *entered;
};

struct rt_conn {
    struct spool_ws ws;
    struct spool_realtime *rt;
    struct rt_conn *prev, *next;
    uv_tcp_t *tcp;
    unsigned refs; /* 1 for the open WebSocket + 1 per publish in flight */
    bool open;
    char id[SPOOL_CONNECTION_ID_MAX + 1];
    struct spool_principal principal;
    struct rt_att *atts;
    size_t n_atts;
    double tokens;     /* publish rate bucket */
    uint64_t tokens_at; /* uv_now of the last refill */
    bool resumable;    /* no message yet: a "resume" message is still allowed */
    struct rt_entered *entered;
    struct rt_claim *claim;   /* while it claims members left on another loop (realtime_presence.c) */
    struct rt_sync *syncs;
};

struct rt_pub {
    struct rt_conn *c;
    json_int_t msg_serial; /* -1: presence without msgSerial (no ack; errors as "error") */
    uint64_t bytes;        /* data bytes published, for the metrics */
    char *channel;         /* presence: the member this publish enters/updates */
    char *client_id;
};

/* realtime.c */
void spool_rt_conn_unref(struct rt_conn *c);
void spool_rt_send_json(struct rt_conn *c, json_t *o); /* steals o */
/* {"type":"error"}; `extra` (stolen, may be NULL) is merged into the message. */
void spool_rt_send_error(struct rt_conn *c, int code, const char *message, json_t *extra);
int spool_rt_code_of(int spool_code);
int spool_rt_attach(struct rt_conn *c, const char *channel, struct spool_from from);

/* realtime_publish.c */
void spool_rt_publish(struct rt_conn *c, json_t *msg);
struct spool_rt_frame;
/* The same for a frame gateway/rt_frame.h scanned (no jansson). */
void spool_rt_publish_frame(struct rt_conn *c, const struct spool_rt_frame *f);
void spool_rt_on_published(void *arg, int status, const struct spool_err *err,
                           const uint64_t *seqs, const bool *duplicate, size_t n);
void spool_rt_nack(struct rt_conn *c, json_int_t msg_serial, int code, const char *message);
bool spool_rt_take_tokens(struct rt_conn *c, size_t n);
const char *spool_rt_message_from_json(struct rt_conn *c, json_t *m, Spool__Record *rec,
                                       char **owned, int *code);

/* realtime_presence.c */
void spool_rt_presence(struct rt_conn *c, json_t *msg);
void spool_rt_presence_get(struct rt_conn *c, json_t *msg);
void spool_rt_entered_free(struct rt_entered *e);
struct rt_entered **spool_rt_entered_find(struct rt_entered **list, const char *channel,
                                          const char *client_id);
void spool_rt_schedule_leave(struct rt_conn *c);
void spool_rt_adopt_leave(struct rt_conn *c);
void spool_rt_claim_end(struct rt_conn *c);
void spool_rt_leave_all(struct spool_realtime *rt, const char *conn_id, struct rt_entered *entered,
                        int64_t died_at_ms);
void spool_rt_leave_unlink(struct spool_realtime *rt, struct rt_leave *l);

/* realtime_resume.c */
void spool_rt_send_resume_key(struct rt_conn *c);
void spool_rt_resume(struct rt_conn *c, const char *key, json_t *serials);

#endif

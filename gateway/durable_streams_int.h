/*
 * Shared internals of the Durable Streams handlers (see durable_streams.h for the split).
 */
#ifndef SPOOL_GATEWAY_DURABLE_STREAMS_INT_H
#define SPOOL_GATEWAY_DURABLE_STREAMS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/node.h"
#include "cluster/streams.h"
#include "gateway/durable_streams.h"
#include "gateway/http_server.h"

#define DS_PREFIX "/v1/stream/"
#define DS_NAME_MAX 1024
#define DS_PAGE_BYTES (1u << 20)
#define DS_OFFSET_LEN 34
#define DS_MAX_FORK_DEPTH 16
#define DS_OFFSET_START UINT64_MAX      /* "-1" or absent */
#define DS_OFFSET_NOW (UINT64_MAX - 1)  /* "now" */

/* What the gateway remembers per stream it served: read-your-writes floor and sliding TTL. */
struct ds_entry {
    struct ds_entry *next;
    char *name;
    uint64_t min_seq;        /* highest state seq this node was told about */
    uint64_t base_seq;       /* incarnation the TTL fields describe */
    uint64_t ttl_s;          /* 0 = none */
    int64_t expires_at_ms;   /* 0 = none */
    int64_t last_access_ms;
    char *fork_source;       /* to release its reference when it expires */
    bool swept;
    int64_t touched_ms;      /* last use: idle entries without a lifetime to watch are dropped */
};

#define DS_BUCKETS 4096

struct spool_ds {
    uv_loop_t *loop;
    const struct spool_options *opts;
    struct spool_node *node;
    struct spool_http_api *api;
    struct spool_http_router *router;
    struct ds_entry *buckets[DS_BUCKETS];
    uv_timer_t sweep;
    bool stopped;
    struct ds_live *lives; /* long-polls and SSE streams waiting (for shutdown) */
    struct ds_subs *subs;  /* reserved subscription APIs (durable_streams_subs.c) */
};

/* Response headers: the CORS + security set, then per-response ones (values copied). */
struct ds_hdrs {
    struct spool_http_header h[40];
    size_t n;
    char store[6144];
    size_t used;
};
void ds_hdrs_init(struct ds_hdrs *h);
void ds_hdr(struct ds_hdrs *h, const char *name, const char *value);
void ds_hdr_offset(struct ds_hdrs *h, const char *name, uint64_t l);
void ds_hdr_u64(struct ds_hdrs *h, const char *name, uint64_t v);
/* Plain-text error with the CORS/security headers. */
void ds_fail(struct spool_http_req *req, int status, const char *msg);
void ds_format_offset(char out[DS_OFFSET_LEN], uint64_t l);
/* "-1"/absent -> DS_OFFSET_START, "now" -> DS_OFFSET_NOW, 16_16 digits -> L; -1 if malformed. */
int ds_parse_offset(const char *s, uint64_t *l);
const char *ds_cursor(char out[24], const char *client_cursor);
int64_t ds_now_ms(void);
bool ds_is_json(const char *content_type);
/* text/... or JSON: SSE without base64 */
bool ds_is_text(const char *content_type);

/* Per-stream memory. */
struct ds_entry *ds_entry_get(struct spool_ds *ds, const char *name, bool create);
void ds_entry_seen(struct spool_ds *ds, const char *name, uint64_t seq);
/* Records the stream's TTL config from its state; renew = an access that extends the TTL. */
void ds_entry_track(struct spool_ds *ds, const char *name, const Spool__StreamState *st, bool renew);
/* True when the stream described by `st` has expired as this node sees it. */
bool ds_expired(struct spool_ds *ds, const char *name, const Spool__StreamState *st);
/* The incarnation (base_seq + 1) whose sliding TTL this node knows ran out, 0 if none (commands
 * carry it as ttl_expired + incarnation, so they never expire a newer incarnation). */
uint64_t ds_entry_ttl_expired(struct spool_ds *ds, const char *name);

/* Loads the stream's current state (newest "ds.state" record), reading at least what this node
 * has been acknowledged. st is NULL when the channel has none; owned by the callback. */
typedef void (*ds_state_cb)(void *arg, int status, Spool__StreamState *st, uint64_t state_seq);
int ds_state_load(struct spool_ds *ds, const char *channel, ds_state_cb cb, void *arg);
/* True when st describes a stream that exists (soft-deleted ones included). */
bool ds_state_live(const Spool__StreamState *st);

/* Runs one command (cluster/streams.h) with data records; cb gets the decoded result. */
typedef void (*ds_cmd_cb)(void *arg, int status, const struct spool_stream_result *res);
int ds_command(struct spool_ds *ds, const char *channel, const Spool__StreamCommand *cmd,
               Spool__Record *const *data, size_t n, ds_cmd_cb cb, void *arg);
/* Fire-and-forget release of fork `fork` on `source`, cascading up soft-deleted chains. */
void ds_release(struct spool_ds *ds, const char *source, const char *fork);

/* Handlers. `name` is the decoded stream name (owned by the caller during the call only). */
void ds_handle_put(struct spool_ds *ds, struct spool_http_req *req, const char *name);
void ds_handle_post(struct spool_ds *ds, struct spool_http_req *req, const char *name);
void ds_handle_delete(struct spool_ds *ds, struct spool_http_req *req, const char *name);
void ds_handle_get(struct spool_ds *ds, struct spool_http_req *req, const char *name, bool head);

/* --- the reader (durable_streams_read.c) ----------------------------------------------- */

struct ds_read;
/* Result of a read of a stream from offset `from` (exclusive): data records in stream order. */
struct ds_page {
    Spool__StreamState *st; /* the stream's state (owned by the read) */
    uint64_t state_seq;
    Spool__Record **recs;   /* data records (owned by the read) */
    uint64_t *ls;           /* L of each */
    size_t n;
    uint64_t from;          /* the resolved start */
    uint64_t next;          /* Stream-Next-Offset */
    bool up_to_date;
};
typedef void (*ds_read_cb)(void *arg, int status, struct ds_page *page);
/* status: 200, 404 (no stream), 410, 400 (offset beyond the tail), 503. The page is valid during
 * the callback only. With st given (already loaded), the state load is skipped. */
int ds_read(struct spool_ds *ds, const char *name, uint64_t from, ds_read_cb cb, void *arg);
/* Body of a page: raw concatenation, or a JSON array for JSON streams. */
char *ds_page_body(const struct ds_page *p, size_t from_i, size_t to_i, bool json, size_t *len);

/* Live (long-poll and SSE) registrations, for shutdown. */
struct ds_live {
    struct ds_live *next, *prev;
    void (*stop)(struct ds_live *l);
};
void ds_live_add(struct spool_ds *ds, struct ds_live *l);
void ds_live_del(struct spool_ds *ds, struct ds_live *l);

void ds_handle_longpoll(struct spool_ds *ds, struct spool_http_req *req, const char *name,
                        uint64_t from, const char *cursor);
void ds_handle_sse(struct spool_ds *ds, struct spool_http_req *req, const char *name,
                   uint64_t from, const char *cursor);

/* --- reserved subscription APIs (durable_streams_subs.c) --------------------------------- */

int ds_subs_init(struct spool_ds *ds);
void ds_subs_stop(struct spool_ds *ds);
void ds_subs_free(struct spool_ds *ds);
/* name starts with "__ds". */
void ds_subs_handle(struct spool_ds *ds, struct spool_http_req *req, const char *name);
/* callback / ack / release: authenticated by the wake token, not by Spool credentials. */
bool ds_subs_is_token_route(const char *name);
/* A write through this node reached `path` with tail L (wakes subscriptions). */
void ds_subs_on_append(struct spool_ds *ds, const char *path, uint64_t tail);

#endif

/*
 * Every spoold option in one struct, with defaults and the flag table built from it. Adding an
 * option means a field, a default and one row in options.c; --help and SPOOL_* follow.
 */
#ifndef SPOOL_GATEWAY_OPTIONS_H
#define SPOOL_GATEWAY_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"

#define SPOOL_OPTIONS_MAX 64

struct spool_options {
    /* node */
    uint64_t id;
    const char *role;        /* "node" (replicas + clients) or "gateway" (clients only) */
    const char *data;
    const char *listen;
    const char *cluster_listen;
    const char *peers;       /* id@host:port,... */
    bool join;               /* a new storage node joining a running cluster (docs/cluster.md) */
    uint64_t shards;
    uint64_t replicas;
    const char *log_level;
    uint64_t workers;        /* event loops serving clients (gateway/workers.h); 0 = one per CPU */
    /* raft */
    uint64_t snapshot_threshold;
    uint64_t snapshot_trailing;
    uint64_t election_timeout_ms;
    uint64_t heartbeat_ms;
    /* storage */
    uint64_t segment_bytes;
    uint64_t tail_cache_bytes;
    uint64_t retention_max_age_ms;
    uint64_t retention_max_count;
    uint64_t retention_max_bytes;
    /* gateway limits */
    uint64_t max_connections;
    uint64_t max_channels_per_connection;
    uint64_t max_message_bytes;
    uint64_t max_frame_bytes;
    uint64_t max_request_bytes;
    uint64_t max_header_bytes;
    uint64_t rate_per_connection;
    uint64_t send_buffer_bytes;
    uint64_t idle_timeout_ms;
    uint64_t request_timeout_ms;
    uint64_t resume_window_ms;
    const char *resume_secret; /* "" = per-node random secret in <data>/resume.secret */
    const char *cors_origins;  /* origins allowed on /v1/channels (gateway/cors.h); "" = none */
    uint64_t presence_timeout_ms;
    uint64_t presence_node_timeout_ms; /* cluster/presence_reaper.h; 0 = never */
    uint64_t long_poll_timeout_ms;
    uint64_t heartbeat_interval_ms;
    uint64_t dedup_window_ms;
    uint64_t forward_timeout_ms;
    uint64_t rebalance_interval_ms; /* leader-spreading passes (cluster/admin.h); 0 = off */
    uint64_t drain_timeout_ms;
    uint64_t max_channel_name_bytes;
    uint64_t max_publish_batch;
    uint64_t max_field_bytes;
    uint64_t history_page_default;
    uint64_t history_page_max;
    uint64_t history_page_bytes;
    uint64_t ai_turn_max_ttl_ms; /* longest turn lease (docs/ai-semantics.md) */
    uint64_t ai_rollup_bytes;    /* largest rolled-up message a catching-up reader gets at once */
    uint64_t ai_state_entries;   /* AI message/turn states cached per shard */
    uint64_t ai_state_scan;      /* records read to rebuild one such state */
    /* auth */
    const char *api_keys;      /* name:secret=caps;... */
    const char *api_keys_file;
    bool anonymous;
};

void spool_options_defaults(struct spool_options *o);
/* Fills `table` (SPOOL_OPTIONS_MAX rows) pointing into `o`; returns the row count. */
size_t spool_options_table(struct spool_options *o, struct spool_opt *table);
/* Runs the node until SIGTERM/SIGINT; returns the process exit code. */
int spool_run(const struct spool_options *o);

#endif

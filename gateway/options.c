#include "gateway/options.h"

#include <string.h>

void spool_options_defaults(struct spool_options *o)
{
    memset(o, 0, sizeof *o);
    o->id = 1;
    o->role = "node";
    o->data = "./data";
    o->listen = "127.0.0.1:8080";
    o->cluster_listen = "127.0.0.1:7080";
    o->peers = "";
    o->shards = 4;
    o->replicas = 3;
    o->log_level = "info";
    o->workers = 0; /* one loop per CPU: docs/gateway.md */
    o->snapshot_threshold = 65536;
    o->snapshot_trailing = 8192;
    o->election_timeout_ms = 1000;
    o->heartbeat_ms = 100;
    o->segment_bytes = 64ULL << 20;
    o->tail_cache_bytes = 64ULL << 20;
    o->retention_max_age_ms = 0;
    o->retention_max_count = 0;
    o->retention_max_bytes = 0;
    o->max_connections = 100000;
    o->max_channels_per_connection = 200;
    o->max_message_bytes = 1 << 20;
    o->max_frame_bytes = 1 << 20;
    o->max_request_bytes = 8 << 20;
    o->max_header_bytes = 16 << 10;
    o->rate_per_connection = 1000;
    o->send_buffer_bytes = 4 << 20;
    o->idle_timeout_ms = 60000;
    o->request_timeout_ms = 30000;
    o->resume_window_ms = 120000;
    o->resume_secret = "";
    o->cors_origins = "";
    o->presence_timeout_ms = 15000;
    o->presence_node_timeout_ms = 15000;
    o->long_poll_timeout_ms = 30000;
    o->heartbeat_interval_ms = 15000;
    o->dedup_window_ms = 120000;
    o->forward_timeout_ms = 5000;
    o->rebalance_interval_ms = 10000;
    o->drain_timeout_ms = 10000;
    o->max_channel_name_bytes = 256;
    o->max_publish_batch = 1000;
    o->max_field_bytes = 256;
    o->history_page_default = 100;
    o->history_page_max = 1000;
    o->history_page_bytes = 4 << 20;
    o->ai_turn_max_ttl_ms = 3600000;
    o->ai_rollup_bytes = 1 << 20;
    o->ai_state_entries = 65536;
    o->ai_state_scan = 100000;
    o->api_keys = "";
    o->api_keys_file = "";
    o->anonymous = false;
}

size_t spool_options_table(struct spool_options *o, struct spool_opt *t)
{
    size_t n = 0;
#define OPT(name_, type_, field_, help_) t[n++] = (struct spool_opt){name_, type_, &o->field_, help_}
    OPT("id", SPOOL_OPT_UINT, id, "this node's id (unique, > 0)");
    OPT("role", SPOOL_OPT_STRING, role, "node (replicas + clients) or gateway (clients only)");
    OPT("data", SPOOL_OPT_STRING, data, "data directory");
    OPT("listen", SPOOL_OPT_STRING, listen, "client address host:port (HTTP, WebSocket, SSE)");
    OPT("cluster-listen", SPOOL_OPT_STRING, cluster_listen, "cluster address host:port (Raft + RPC)");
    OPT("peers", SPOOL_OPT_STRING, peers, "storage nodes as id@host:port,... (gateway-only nodes are not listed; empty = single node)");
    OPT("join", SPOOL_OPT_BOOL, join, "start as a new storage node of a running cluster: never bootstrap, wait for `spoolctl node add` (--peers lists running nodes to contact; same --shards and --replicas as they have)");
    OPT("shards", SPOOL_OPT_UINT, shards, "number of channel shards (Raft groups) at bootstrap");
    OPT("replicas", SPOOL_OPT_UINT, replicas, "replicas per shard (capped at the node count)");
    OPT("log-level", SPOOL_OPT_STRING, log_level, "debug, info, warn or error");
    OPT("workers", SPOOL_OPT_UINT, workers, "event loops (threads) serving clients on --listen, sharing its port; 0 = one per CPU");
    OPT("snapshot-threshold", SPOOL_OPT_UINT, snapshot_threshold, "Raft entries between snapshots (>= 64)");
    OPT("snapshot-trailing", SPOOL_OPT_UINT, snapshot_trailing, "Raft entries kept after a snapshot");
    OPT("election-timeout", SPOOL_OPT_MS, election_timeout_ms, "Raft election timeout");
    OPT("heartbeat", SPOOL_OPT_MS, heartbeat_ms, "Raft heartbeat interval");
    OPT("segment-bytes", SPOOL_OPT_UINT, segment_bytes, "storage segment size before it is sealed");
    OPT("tail-cache-bytes", SPOOL_OPT_UINT, tail_cache_bytes, "memory for recent entries, per node (divided among its local shards)");
    OPT("retention-max-age", SPOOL_OPT_MS, retention_max_age_ms, "default channel retention by age (0 = forever)");
    OPT("retention-max-count", SPOOL_OPT_UINT, retention_max_count, "default channel retention by count (0 = unlimited)");
    OPT("retention-max-bytes", SPOOL_OPT_UINT, retention_max_bytes, "default channel retention by bytes (0 = unlimited)");
    OPT("max-connections", SPOOL_OPT_UINT, max_connections, "client connections per node");
    OPT("max-channels-per-connection", SPOOL_OPT_UINT, max_channels_per_connection, "attachments per connection");
    OPT("max-message-bytes", SPOOL_OPT_UINT, max_message_bytes, "largest message payload");
    OPT("max-frame-bytes", SPOOL_OPT_UINT, max_frame_bytes, "largest WebSocket frame or message");
    OPT("max-request-bytes", SPOOL_OPT_UINT, max_request_bytes, "largest HTTP request body");
    OPT("max-header-bytes", SPOOL_OPT_UINT, max_header_bytes, "largest HTTP request head");
    OPT("rate-per-connection", SPOOL_OPT_UINT, rate_per_connection, "publishes per second per connection");
    OPT("send-buffer-bytes", SPOOL_OPT_UINT, send_buffer_bytes, "queued output per connection before coalescing/dropping");
    OPT("idle-timeout", SPOOL_OPT_MS, idle_timeout_ms, "close idle HTTP keep-alive connections after");
    OPT("request-timeout", SPOOL_OPT_MS, request_timeout_ms, "slow-client limit for receiving one request");
    OPT("resume-window", SPOOL_OPT_MS, resume_window_ms, "how long a dropped connection can be resumed");
    OPT("resume-secret", SPOOL_OPT_STRING, resume_secret, "resume key secret; every node of a cluster must share it (empty = per-node file in the data dir)");
    OPT("presence-timeout", SPOOL_OPT_MS, presence_timeout_ms, "a dead connection's members leave after");
    OPT("presence-node-timeout", SPOOL_OPT_MS, presence_node_timeout_ms, "the presence members of a node not heard from leave after (same on every node; docs/cluster.md); 0 = never");
    OPT("long-poll-timeout", SPOOL_OPT_MS, long_poll_timeout_ms, "Durable Streams long-poll wait");
    OPT("heartbeat-interval", SPOOL_OPT_MS, heartbeat_interval_ms, "SSE comments / WebSocket pings every");
    OPT("dedup-window", SPOOL_OPT_MS, dedup_window_ms, "publishes with a repeated client message id are dropped within");
    OPT("forward-timeout", SPOOL_OPT_MS, forward_timeout_ms, "how long a request waits for a shard leader");
    OPT("rebalance-interval", SPOOL_OPT_MS, rebalance_interval_ms, "how often a node gives away a shard leadership beyond its fair share (docs/admin.md); 0 = never");
    OPT("drain-timeout", SPOOL_OPT_MS, drain_timeout_ms, "on SIGTERM, how long in-flight HTTP requests may take before connections are cut");
    OPT("max-channel-name-bytes", SPOOL_OPT_UINT, max_channel_name_bytes, "longest channel name");
    OPT("max-publish-batch", SPOOL_OPT_UINT, max_publish_batch, "messages in one REST publish");
    OPT("max-field-bytes", SPOOL_OPT_UINT, max_field_bytes, "longest message id or name");
    OPT("history-page-default", SPOOL_OPT_UINT, history_page_default, "history items per page when no limit is given");
    OPT("history-page-max", SPOOL_OPT_UINT, history_page_max, "largest history limit a request may ask for");
    OPT("history-page-bytes", SPOOL_OPT_UINT, history_page_bytes, "a history page ends early (with a next URL) once its data reaches");
    OPT("ai-turn-max-ttl", SPOOL_OPT_MS, ai_turn_max_ttl_ms, "longest lease a turn claim may ask for");
    OPT("ai-rollup-bytes", SPOOL_OPT_UINT, ai_rollup_bytes, "largest rolled-up message (token stream) sent to a catching-up reader at once");
    OPT("cors-origins", SPOOL_OPT_STRING, cors_origins, "browser origins allowed on /v1/channels (REST, SSE): comma list or *; empty = no CORS headers");
    OPT("ai-state-entries", SPOOL_OPT_UINT, ai_state_entries, "AI message and turn states cached per shard (appends, edits, turns)");
    OPT("ai-state-scan", SPOOL_OPT_UINT, ai_state_scan, "records read to rebuild one AI message or turn state from the store");
    OPT("api-keys", SPOOL_OPT_STRING, api_keys, "API keys: name:secret=capabilities;... (see README)");
    OPT("api-keys-file", SPOOL_OPT_STRING, api_keys_file, "file with one API key per line, same syntax");
    OPT("anonymous", SPOOL_OPT_BOOL, anonymous, "allow clients without credentials (development only)");
#undef OPT
    return n;
}

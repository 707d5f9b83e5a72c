/*
 * Metrics served by the HTTP layer. GET /metrics renders the registry. Registered here:
 *
 *   spool_http_requests_total{method,status}, spool_http_request_duration_seconds
 *       every finished HTTP request (plus an access log line at debug)
 *   spool_messages_in_total{transport}, spool_bytes_in_total{transport}
 *                                  messages and data bytes published: "http" (REST, counted
 *                                  here) and "ws" (realtime, counted by gateway/realtime*)
 *   spool_publish_ack_seconds      REST publish: time from request to commit acknowledgement
 *   spool_messages_out_total{transport}, spool_bytes_out_total{transport}
 *                                  messages and data bytes delivered to "ws" and "sse" clients
 *   spool_publish_deliver_seconds  now - record timestamp when the node fans a record out to its
 *                                  local subscribers (once per record per node, any subscriber)
 *   spool_resumes_total{result}    resume keys presented: resumed, expired, refused
 *   (the realtime children are handed to gateway/realtime via spool_realtime_set_counters)
 *   spool_auth_failures_total{reason}   REST authentication/capability refusals
 *   spool_connections{transport}   collector: "http" (the HTTP server's, SSE streams included)
 *                                  and "ws" (realtime WebSocket connections, when mounted)
 *   spool_disk_free_bytes, spool_disk_total_bytes   collector: statvfs of --data
 *   spool_raft_* and spool_store_* {shard}          collectors over spool_node_shard_status
 *
 * The names are the ones deploy/kubernetes' dashboard and alert rules query.
 */
#include <inttypes.h>
#include <sys/statvfs.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/http_api_int.h"
#include "gateway/json_body.h"
#include "gateway/realtime.h"

void spool_http_api_metrics(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    char *text = NULL;
    size_t len = 0;
    struct spool_err err;
    if (api->metrics == NULL) {
        spool_http_respond_error(req, 404, SPOOL_HTTP_ENOT_FOUND, "metrics are off");
        return;
    }
    if (spool_metrics_render(api->metrics, &text, &len, &err) != 0) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "%s", err.msg);
        return;
    }
    static const struct spool_http_header h[] = {{"Content-Type", SPOOL_METRICS_CONTENT_TYPE}};
    spool_http_respond_owned(req, 200, h, 1, text, len);
}

static void collect_connections(struct spool_metric_writer *w, void *arg)
{
    struct spool_http_api *api = arg;
    spool_metric_write(w, (const char *[]){"http"},
                       api->server != NULL ? (double)spool_http_server_connections(api->server) : 0);
    if (api->realtime != NULL)
        spool_metric_write(w, (const char *[]){"ws"}, (double)spool_realtime_connections(api->realtime));
}

static void collect_disk(struct spool_metric_writer *w, void *arg)
{
    struct spool_http_api_fig *f = arg;
    struct statvfs st;
    if (statvfs(f->api->opts->data, &st) != 0) return;
    double v = f->fig ? (double)st.f_blocks * (double)st.f_frsize : (double)st.f_bavail * (double)st.f_frsize;
    spool_metric_write(w, NULL, v);
}

enum shard_figure { FIG_TERM, FIG_COMMIT, FIG_APPLIED, FIG_LAST, FIG_LEADER, FIG_STATE, FIG_PROPOSALS,
                    FIG_PROPOSED, FIG_BYTES, FIG_FSYNCS, FIG_FSYNC_SECONDS, FIG_RECORDS, FIG_COUNT };

_Static_assert(FIG_COUNT == SPOOL_HTTP_API_FIGS, "one collector per shard figure");

static void collect_shard(struct spool_metric_writer *w, void *arg)
{
    struct spool_http_api_fig *sc = arg;
    struct spool_node *node = sc->api->node;
    if (node == NULL) return;
    uint32_t n = spool_node_shard_count(node);
    for (uint32_t i = 0; i < n; i++) {
        struct spool_shard_status st;
        spool_node_shard_status(node, i, &st);
        if (!st.local_replica && sc->fig != FIG_LEADER) continue;
        char shard[16];
        snprintf(shard, sizeof shard, "%" PRIu32, i);
        const char *labels[] = {shard};
        double v = 0;
        switch (sc->fig) {
        case FIG_TERM: v = (double)st.term; break;
        case FIG_COMMIT: v = (double)st.commit_index; break;
        case FIG_APPLIED: v = (double)st.applied_index; break;
        case FIG_LAST: v = (double)st.last_index; break;
        case FIG_PROPOSALS: v = (double)st.proposals; break;
        case FIG_PROPOSED: v = (double)st.proposed_publishes; break;
        case FIG_LEADER: v = (double)st.leader_id; break;
        case FIG_STATE: v = (double)st.raft_state; break;
        case FIG_BYTES: v = (double)st.store.bytes_on_disk; break;
        case FIG_FSYNCS: v = (double)st.store.fsyncs; break;
        case FIG_FSYNC_SECONDS: v = (double)st.store.fsync_ns_total / 1e9; break;
        case FIG_RECORDS: v = (double)st.store.records; break;
        default: break;
        }
        spool_metric_write(w, labels, v);
    }
}

/* The realtime families (and the "ws" children of the publish families), every child created
 * now so each series reads 0 before its first event. */
static int realtime_metrics_init(struct spool_http_api *api, struct spool_metric_family *in,
                                 struct spool_metric_family *bytes, struct spool_err *err)
{
    struct spool_metrics *m = api->metrics;
    struct spool_realtime_counters *rc = &api->rt_counters;
    static const char *transport[] = {"transport"};
    static const char *result[] = {"result"};
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    struct spool_metric_family *out, *bytes_out, *resumes, *deliver;
    if ((out = spool_metrics_counter(m, "spool_messages_out_total",
                                     "messages delivered to clients, by transport (ws, sse)",
                                     transport, 1, err)) == NULL ||
        (bytes_out = spool_metrics_counter(m, "spool_bytes_out_total",
                                           "message data bytes delivered to clients, by transport (ws, sse)",
                                           transport, 1, err)) == NULL ||
        (deliver = spool_metrics_histogram(m, "spool_publish_deliver_seconds",
                                           "record timestamp (leader's clock at proposal) to this node's "
                                           "fan-out to its subscribers, once per record",
                                           NULL, 0, bounds, sizeof bounds / sizeof bounds[0], err)) == NULL ||
        (resumes = spool_metrics_counter(m, "spool_resumes_total",
                                         "resume keys presented, by result (resumed, expired, refused)",
                                         result, 1, err)) == NULL)
        return err->code;
    if ((rc->messages_in = spool_counter_of(in, (const char *[]){"ws"})) == NULL ||
        (rc->bytes_in = spool_counter_of(bytes, (const char *[]){"ws"})) == NULL ||
        (rc->ws_out = spool_counter_of(out, (const char *[]){"ws"})) == NULL ||
        (rc->ws_bytes_out = spool_counter_of(bytes_out, (const char *[]){"ws"})) == NULL ||
        (rc->sse_out = spool_counter_of(out, (const char *[]){"sse"})) == NULL ||
        (rc->sse_bytes_out = spool_counter_of(bytes_out, (const char *[]){"sse"})) == NULL ||
        (rc->resumed = spool_counter_of(resumes, (const char *[]){"resumed"})) == NULL ||
        (rc->resume_expired = spool_counter_of(resumes, (const char *[]){"expired"})) == NULL ||
        (rc->resume_refused = spool_counter_of(resumes, (const char *[]){"refused"})) == NULL ||
        (rc->deliver = spool_histogram_of(deliver, NULL)) == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    return 0;
}

const struct spool_realtime_counters *spool_http_api_realtime_counters(const struct spool_http_api *api)
{
    return &api->rt_counters;
}

int spool_http_api_metrics_init(struct spool_http_api *api, struct spool_err *err)
{
    struct spool_metrics *m = api->metrics;
    static const char *req_labels[] = {"method", "status"};
    api->requests = spool_metrics_counter(m, "spool_http_requests_total",
                                          "HTTP requests answered, by method and status",
                                          req_labels, 2, err);
    if (api->requests == NULL) return err->code;
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    struct spool_metric_family *d = spool_metrics_histogram(
        m, "spool_http_request_duration_seconds", "HTTP request time from first byte to response written",
        NULL, 0, bounds, sizeof bounds / sizeof bounds[0], err);
    if (d == NULL || (api->duration = spool_histogram_of(d, NULL)) == NULL)
        return d == NULL ? err->code : spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    static const char *transport[] = {"transport"};
    static const char *reason[] = {"reason"};
    static const double ack_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
    struct spool_metric_family *in, *bytes, *ack;
    if ((in = spool_metrics_counter(m, "spool_messages_in_total", "messages published, by transport",
                                    transport, 1, err)) == NULL ||
        (bytes = spool_metrics_counter(m, "spool_bytes_in_total", "message data bytes published, by transport",
                                       transport, 1, err)) == NULL ||
        (ack = spool_metrics_histogram(m, "spool_publish_ack_seconds",
                                       "REST publish: request received to commit acknowledged", NULL, 0,
                                       ack_bounds, sizeof ack_bounds / sizeof ack_bounds[0], err)) == NULL ||
        (api->auth_failures = spool_metrics_counter(m, "spool_auth_failures_total",
                                                    "requests refused by authentication or capability, by reason",
                                                    reason, 1, err)) == NULL)
        return err->code;
    if ((api->messages_in = spool_counter_of(in, (const char *[]){"http"})) == NULL ||
        (api->bytes_in = spool_counter_of(bytes, (const char *[]){"http"})) == NULL ||
        (api->publish_ack = spool_histogram_of(ack, NULL)) == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    int rv = realtime_metrics_init(api, in, bytes, err);
    if (rv != 0)
        return rv;
    if (spool_metrics_collector(m, "spool_connections", "open client connections, by transport",
                                SPOOL_METRIC_GAUGE, transport, 1, collect_connections, api, err) == NULL)
        return err->code;
    api->disk[0] = (struct spool_http_api_fig){api, 0};
    api->disk[1] = (struct spool_http_api_fig){api, 1};
    if (spool_metrics_collector(m, "spool_disk_free_bytes", "bytes available to spoold on the --data file system",
                                SPOOL_METRIC_GAUGE, NULL, 0, collect_disk, &api->disk[0], err) == NULL ||
        spool_metrics_collector(m, "spool_disk_total_bytes", "size of the --data file system",
                                SPOOL_METRIC_GAUGE, NULL, 0, collect_disk, &api->disk[1], err) == NULL)
        return err->code;
    static const struct {
        const char *name, *help;
        enum spool_metric_type type;
    } figs[FIG_COUNT] = {
        [FIG_TERM] = {"spool_raft_term", "current Raft term of the local replica", SPOOL_METRIC_GAUGE},
        [FIG_COMMIT] = {"spool_raft_commit_index", "Raft commit index of the local replica", SPOOL_METRIC_GAUGE},
        [FIG_APPLIED] = {"spool_raft_applied_index", "last Raft index applied by the local replica", SPOOL_METRIC_GAUGE},
        [FIG_LAST] = {"spool_raft_last_index", "last Raft index in the local replica's log", SPOOL_METRIC_GAUGE},
        [FIG_LEADER] = {"spool_raft_leader_id", "node id of the shard's leader as this node knows it (0 = unknown)", SPOOL_METRIC_GAUGE},
        [FIG_STATE] = {"spool_raft_state", "Raft state of the local replica (libraft's RAFT_FOLLOWER/CANDIDATE/LEADER number)", SPOOL_METRIC_GAUGE},
        [FIG_PROPOSALS] = {"spool_raft_proposals_total", "Raft entries the local replica proposed as leader", SPOOL_METRIC_COUNTER},
        [FIG_PROPOSED] = {"spool_raft_proposed_publishes_total", "publish calls carried by those entries (group commit)", SPOOL_METRIC_COUNTER},
        [FIG_BYTES] = {"spool_store_bytes", "bytes of segment files in the shard's store", SPOOL_METRIC_GAUGE},
        [FIG_FSYNCS] = {"spool_store_fsyncs_total", "fsyncs done by the shard's store", SPOOL_METRIC_COUNTER},
        [FIG_FSYNC_SECONDS] = {"spool_store_fsync_seconds_total", "time spent in the shard's store fsyncs", SPOOL_METRIC_COUNTER},
        [FIG_RECORDS] = {"spool_store_records", "records retained in the shard's store", SPOOL_METRIC_GAUGE},
    };
    static const char *shard_label[] = {"shard"};
    for (int i = 0; i < FIG_COUNT; i++) {
        api->figs[i] = (struct spool_http_api_fig){api, i};
        if (spool_metrics_collector(m, figs[i].name, figs[i].help, figs[i].type, shard_label, 1,
                                    collect_shard, &api->figs[i], err) == NULL)
            return err->code;
    }
    return 0;
}

void spool_http_api_count_published(const struct spool_http_api *api, size_t messages, size_t bytes,
                                    uint64_t start_ns)
{
    if (api->messages_in == NULL) return;
    spool_counter_add(api->messages_in, (double)messages);
    spool_counter_add(api->bytes_in, (double)bytes);
    spool_histogram_observe(api->publish_ack, (double)(uv_hrtime() - start_ns) / 1e9);
}

void spool_http_api_count_auth_failure(const struct spool_http_api *api, int code)
{
    if (api->auth_failures == NULL) return;
    const char *reason;
    switch (code) {
    case SPOOL_AUTH_MISSING: reason = "missing"; break;
    case SPOOL_AUTH_UNKNOWN_KEY: reason = "unknown_key"; break;
    case SPOOL_AUTH_BAD_SIGNATURE: reason = "bad_signature"; break;
    case SPOOL_AUTH_EXPIRED: reason = "expired"; break;
    case SPOOL_AUTH_MALFORMED: reason = "malformed"; break;
    case SPOOL_AUTH_UNSUPPORTED_ALG: reason = "unsupported_alg"; break;
    case SPOOL_AUTH_NOT_YET_VALID: reason = "not_yet_valid"; break;
    case SPOOL_AUTH_FORBIDDEN: reason = "forbidden"; break;
    default: reason = "internal"; break;
    }
    struct spool_counter *c = spool_counter_of(api->auth_failures, (const char *[]){reason});
    if (c != NULL) spool_counter_inc(c);
}

void spool_http_api_on_done(void *arg, const struct spool_http_req *req, int status,
                            uint64_t duration_us)
{
    struct spool_http_api *api = arg;
    char path[256];
    SPOOL_DEBUG("http.request", "conn=%llu seq=%llu remote=%s method=%s path=%s status=%d us=%llu",
                (unsigned long long)req->conn_id, (unsigned long long)req->seq, req->remote,
                req->method, spool_log_quote(path, sizeof path, req->decoded_path), status,
                (unsigned long long)duration_us);
    if (api->requests == NULL) return;
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    const char *labels[] = {req->method, code};
    struct spool_counter *c = spool_counter_of(api->requests, labels);
    if (c != NULL) spool_counter_inc(c);
    spool_histogram_observe(api->duration, (double)duration_us / 1e6);
}


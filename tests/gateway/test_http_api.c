/*
 * REST API tests against a real single-node spool_node (1 shard, temp dir) with the HTTP server,
 * router and API on one loop, plus the pure helpers underneath (path/query decoding, channel
 * names). Requests go through the raw client of http_test_client.h.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/node.h"
#include "gateway/auth.h"
#include "gateway/channel_name.h"
#include "gateway/http_api.h"
#include "gateway/http_path.h"
#include "gateway/jwt.h"
#include "gateway/metrics.h"
#include "http_test_client.h"
#include "scratch_dir.h"

static char root[64];
static struct spool_options opts;
static struct spool_node *node;
static struct spool_keyring keyring;
static struct spool_metrics metrics;
static struct spool_http_router router;
static struct spool_http_api api;
static struct spool_http_server *srv;
static bool srv_closed, node_closed;

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static bool node_ready(void *arg) { return spool_node_ready(node); }

static void start(const char *keys, bool anonymous)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(root, sizeof root, "/tmp/spool-api-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    cr_assert_eq(uv_loop_init(&loop), 0);
    spool_options_defaults(&opts);
    opts.max_message_bytes = 64;
    opts.max_publish_batch = 3;
    opts.max_channel_name_bytes = 16;
    opts.history_page_max = 5;
    opts.history_page_bytes = 600; /* two small items: each counts its data + 256 */
    struct spool_err err;
    spool_keyring_init(&keyring);
    cr_assert_eq(spool_keyring_configure(&keyring, keys, NULL, anonymous, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_metrics_init(&metrics), 0);

    static char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", free_port());
    struct spool_node_config cfg;
    spool_node_config_defaults(&cfg);
    cfg.id = 1;
    cfg.data_dir = root;
    cfg.cluster_listen = listen;
    cfg.peers = "";
    cfg.shards = 1;
    cfg.replicas = 1;
    cfg.election_timeout_ms = 200;
    cfg.heartbeat_ms = 50;
    cfg.forward_timeout_ms = 5000;
    cfg.store.segment_bytes = 1 << 20;
    cfg.store.tail_cache_bytes = 1 << 20;
    cr_assert_eq(spool_node_init(&node, &loop, &cfg, &err), 0, "%s", err.msg);

    spool_http_router_init(&router);
    cr_assert_eq(spool_http_api_init(&api, &opts, node, &keyring, &metrics, &err), 0, "%s", err.msg);
    cr_assert_eq(spool_http_api_routes(&api, &router, &err), 0, "%s", err.msg);
    struct spool_http_config hc;
    spool_http_config_defaults(&hc);
    hc.handler = spool_http_router_dispatch;
    hc.handler_arg = &router;
    hc.on_done = spool_http_api_on_done;
    hc.on_done_arg = &api;
    cr_assert_eq(spool_http_server_init(&srv, &loop, &hc, &err), 0, "%s", err.msg);
    api.server = srv;
    cr_assert_eq(spool_http_server_listen(srv, "127.0.0.1:0", &err), 0, "%s", err.msg);
    port = spool_http_server_port(srv);
    srv_closed = node_closed = false;
    cr_assert(run_until(node_ready, NULL, 10000), "node not ready");
}

static void on_srv_closed(void *arg) { srv_closed = true; }
static void on_node_closed(void *arg) { node_closed = true; }

static void stop(void)
{
    spool_http_server_close(srv, on_srv_closed, NULL);
    cr_assert(run_until(flag_set, &srv_closed, 5000));
    spool_node_close(node, on_node_closed, NULL);
    cr_assert(run_until(flag_set, &node_closed, 10000));
    spool_http_api_close(&api);
    spool_http_router_close(&router);
    spool_metrics_close(&metrics);
    spool_keyring_close(&keyring);
    for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; i++)
        ;
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left open");
    scratch_dir_remove(root);
}

static const char *json_hdr = "Content-Type: application/json\r\n";

/* The "error"."code" of a JSON error body (0 when there is none). */
static long error_code(const char *body)
{
    json_t *j = json_loads(body, 0, NULL);
    long code = j != NULL ? (long)json_integer_value(json_object_get(json_object_get(j, "error"), "code")) : 0;
    json_decref(j);
    return code;
}

static char body[1 << 16];

Test(http_api, publish_history_pages_and_status)
{
    start("", true);
    int st = http_call("POST", "/v1/channels/c1/messages", json_hdr,
                       "[{\"id\":\"a\",\"data\":\"x\"},{\"data\":[1,{\"k\":null}]},{\"data\":true}]", body,
                       sizeof body);
    cr_assert_eq(st, 201, "%s", body);
    cr_expect_str_eq(body, "{\"channel\":\"c1\",\"serials\":[1,2,3],\"duplicates\":[]}");
    st = http_call("POST", "/v1/channels/c1/messages", json_hdr, "{\"id\":\"a\",\"data\":\"y\"}", body,
                   sizeof body);
    cr_expect_str_eq(body, "{\"channel\":\"c1\",\"serials\":[1],\"duplicates\":[1]}");

    st = http_call("GET", "/v1/channels/c1/messages?limit=2", NULL, NULL, body, sizeof body);
    cr_assert_eq(st, 200, "%s", body);
    json_t *j = json_loads(body, 0, NULL);
    cr_assert_not_null(j, "%s", body);
    json_t *items = json_object_get(j, "items");
    cr_assert_eq(json_array_size(items), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "data")), "x");
    char *d1 = json_dumps(json_object_get(json_array_get(items, 1), "data"), JSON_COMPACT);
    cr_expect_str_eq(d1, "[1,{\"k\":null}]");
    free(d1);
    const char *next = json_string_value(json_object_get(j, "next"));
    cr_assert_not_null(next, "%s", body);
    cr_expect_str_eq(next, "/v1/channels/c1/messages?direction=forwards&limit=2&from=3");
    char next_url[256];
    snprintf(next_url, sizeof next_url, "%s", next);
    json_decref(j);

    st = http_call("GET", next_url, NULL, NULL, body, sizeof body);
    cr_assert_eq(st, 200, "%s", body);
    j = json_loads(body, 0, NULL);
    items = json_object_get(j, "items");
    cr_assert_eq(json_array_size(items), 1, "%s", body);
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(items, 0), "serial")), 3);
    cr_expect(json_is_true(json_object_get(json_array_get(items, 0), "data")));
    cr_expect(json_is_null(json_object_get(j, "next")), "%s", body);
    json_decref(j);

    /* the byte budget ends a page early, with a next URL right after its last item */
    st = http_call("GET", "/v1/channels/c1/messages?limit=5", NULL, NULL, body, sizeof body);
    cr_assert_eq(st, 200, "%s", body);
    j = json_loads(body, 0, NULL);
    cr_expect_eq(json_array_size(json_object_get(j, "items")), 2, "%s", body);
    cr_expect_str_eq(json_string_value(json_object_get(j, "next")),
                     "/v1/channels/c1/messages?direction=forwards&limit=5&from=3");
    json_decref(j);

    st = http_call("GET", "/v1/channels/c1?x=1", NULL, NULL, body, sizeof body);
    cr_assert_eq(st, 200, "%s", body);
    cr_expect(strstr(body, "\"firstSerial\":1,\"lastSerial\":3,\"shard\":0,\"leader\":1") != NULL, "%s", body);

    st = http_call("GET", "/readyz", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 200, "%s", body);
    st = http_call("GET", "/metrics", NULL, NULL, body, sizeof body);
    cr_assert_eq(st, 200);
    cr_expect(strstr(body, "spool_http_requests_total{method=\"POST\",status=\"201\"} 2") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_raft_term{shard=\"0\"} ") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_raft_leader_id{shard=\"0\"} 1") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_raft_proposals_total{shard=\"0\"} ") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_store_fsyncs_total{shard=\"0\"} ") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_connections{transport=\"http\"} 1") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_messages_in_total{transport=\"http\"} 3") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_bytes_in_total{transport=\"http\"} 20") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_publish_ack_seconds_count 2") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_disk_free_bytes ") != NULL, "%s", body);
    stop();
}

Test(http_api, limits_and_validation)
{
    start("", true);
    char big[200];
    snprintf(big, sizeof big, "{\"data\":\"%070d\"}", 0);
    int st = http_call("POST", "/v1/channels/c1/messages", json_hdr, big, body, sizeof body);
    cr_expect_eq(st, 413, "%s", body);
    cr_expect_eq(error_code(body), 41301, "%s", body);
    st = http_call("POST", "/v1/channels/c1/messages", json_hdr, "[{},{},{},{}]", body, sizeof body);
    cr_expect_eq(st, 413);
    cr_expect_eq(error_code(body), 41302, "%s", body);
    st = http_call("POST", "/v1/channels/c1/messages", json_hdr, "[{\"data\":1},{\"name\":5}]", body,
                   sizeof body);
    cr_expect_eq(st, 400);
    cr_expect(strstr(body, "message 1: name must be a string") != NULL, "%s", body);
    st = http_call("POST", "/v1/channels/0123456789abcdefg/messages", json_hdr, "{}", body, sizeof body);
    cr_expect_eq(st, 400);
    cr_expect_eq(error_code(body), 40002, "%s", body);
    st = http_call("POST", "/v1/channels/a*b/messages", json_hdr, "{}", body, sizeof body);
    cr_expect_eq(error_code(body), 40002, "%s", body);
    st = http_call("GET", "/v1/channels/c1/messages?limit=6", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 400);
    cr_expect_eq(error_code(body), 40003, "%s", body);
    st = http_call("GET", "/v1/channels/c1/messages?direction=up", NULL, NULL, body, sizeof body);
    cr_expect_eq(error_code(body), 40003, "%s", body);
    st = http_call("PUT", "/v1/channels/c1/messages", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 405);
    st = http_call("GET", "/v1/channels/c1/messages?from=5&until=2", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 200);
    cr_expect_str_eq(body, "{\"items\":[],\"next\":null}");
    stop();
}

Test(http_api, capabilities_are_enforced)
{
    /* "pub" may only publish on chat-*; "all" may do everything. */
    start("pub:p1=chat-*:publish;all:p2", false);
    char auth[128];
    int st = http_call("GET", "/v1/channels/chat-1/messages", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 401);
    cr_expect_eq(error_code(body), SPOOL_AUTH_MISSING, "%s", body);
    snprintf(auth, sizeof auth, "%sAuthorization: Basic cHViOnAx\r\n", json_hdr); /* pub:p1 */
    st = http_call("POST", "/v1/channels/chat-1/messages", auth, "{\"data\":1}", body, sizeof body);
    cr_expect_eq(st, 201, "%s", body);
    st = http_call("POST", "/v1/channels/other/messages", auth, "{\"data\":1}", body, sizeof body);
    cr_expect_eq(st, 403, "%s", body);
    cr_expect_eq(error_code(body), SPOOL_AUTH_FORBIDDEN, "%s", body);
    st = http_call("GET", "/v1/channels/chat-1/messages", auth, NULL, body, sizeof body);
    cr_expect_eq(st, 403, "%s", body);
    st = http_call("GET", "/v1/channels/chat-1/messages?key=all:p2", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 200, "%s", body);
    st = http_call("GET", "/v1/channels/chat-1/messages?key=all:nope", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 401, "%s", body);
    cr_expect_eq(error_code(body), SPOOL_AUTH_BAD_SIGNATURE, "%s", body);
    /* probes need no credentials; the refusals were counted by reason */
    st = http_call("GET", "/healthz", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 200);
    st = http_call("GET", "/metrics", NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 200);
    cr_expect(strstr(body, "spool_auth_failures_total{reason=\"missing\"} 1\n") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_auth_failures_total{reason=\"forbidden\"} 2\n") != NULL, "%s", body);
    cr_expect(strstr(body, "spool_auth_failures_total{reason=\"bad_signature\"} 1\n") != NULL, "%s", body);
    stop();
}

Test(http_api, token_client_id_is_the_publisher)
{
    start("app:sekret", false);
    json_t *claims = json_pack("{s:s,s:I}", "clientId", "user-9", "exp",
                               (json_int_t)(spool_auth_now_ms() / 1000 + 600));
    char *token = NULL;
    struct spool_err err;
    cr_assert_eq(spool_jwt_sign("app", "sekret", 6, claims, &token, &err), 0, "%s", err.msg);
    json_decref(claims);
    char auth[2048];
    snprintf(auth, sizeof auth, "%sAuthorization: Bearer %s\r\n", json_hdr, token);
    int st = http_call("POST", "/v1/channels/c1/messages", auth, "{\"data\":\"hi\"}", body, sizeof body);
    cr_expect_eq(st, 201, "%s", body);
    st = http_call("POST", "/v1/channels/c1/messages", auth, "{\"data\":1,\"clientId\":\"other\"}", body,
                   sizeof body);
    cr_expect_eq(st, 403, "%s", body);
    cr_expect_eq(error_code(body), SPOOL_AUTH_FORBIDDEN, "%s", body);
    char target[2048];
    snprintf(target, sizeof target, "/v1/channels/c1/messages?token=%s", token);
    st = http_call("GET", target, NULL, NULL, body, sizeof body);
    cr_expect_eq(st, 200, "%s", body);
    cr_expect(strstr(body, "\"clientId\":\"user-9\"") != NULL, "%s", body);
    cr_expect(strstr(body, "other") == NULL, "%s", body);
    free(token);
    stop();
}

/* ---- pure helpers ---- */

Test(http_path, percent_decoding_is_strict)
{
    char out[32];
    cr_expect_eq(spool_http_pct_decode("a%2Fb+c", 7, false, out, sizeof out), 5);
    cr_expect_str_eq(out, "a/b+c");
    cr_expect_eq(spool_http_pct_decode("a+b%41", 6, true, out, sizeof out), 4);
    cr_expect_str_eq(out, "a bA");
    cr_expect_eq(spool_http_pct_decode("%4", 2, false, out, sizeof out), -1);
    cr_expect_eq(spool_http_pct_decode("%zz", 3, false, out, sizeof out), -1);
    cr_expect_eq(spool_http_pct_decode("%00", 3, false, out, sizeof out), -1);
    cr_expect_eq(spool_http_pct_decode("abcd", 4, false, out, 4), -1); /* no room for NUL */
    cr_expect_eq(spool_http_pct_decode("", 0, false, out, 1), 0);
}

Test(http_path, split_and_query)
{
    struct spool_slice s[4];
    cr_expect_eq(spool_http_path_split("/a/b/", 5, s, 4), 3);
    cr_expect(s[2].len == 0 && s[1].len == 1 && s[1].p[0] == 'b');
    cr_expect_eq(spool_http_path_split("a/b", 3, s, 4), -1);
    cr_expect_eq(spool_http_path_split("/1/2/3/4/5", 10, s, 4), -1);
    char v[16];
    cr_expect_eq(spool_http_query_get("a=1&&b=x%20y&b=2&c", "b", v, sizeof v), 3);
    cr_expect_str_eq(v, "x y");
    cr_expect_eq(spool_http_query_get("a=1&c", "c", v, sizeof v), 0);
    cr_expect_eq(spool_http_query_get("a=1", "b", v, sizeof v), -1);
    cr_expect_eq(spool_http_query_get("a=%zz", "a", v, sizeof v), -2);
    cr_expect_eq(spool_http_query_get("a=0123456789abcdefgh", "a", v, sizeof v), -2);
}

Test(channel_name, rule)
{
    const char *why;
    cr_expect(spool_channel_name_valid("chat:room-1/a_b.c@x", 19, 64, &why));
    cr_expect_null(why);
    cr_expect_not(spool_channel_name_valid("", 0, 64, &why));
    cr_expect_not(spool_channel_name_valid("a b", 3, 64, NULL));
    cr_expect_not(spool_channel_name_valid("a*", 2, 64, NULL));
    cr_expect_not(spool_channel_name_valid("caf\xc3\xa9", 5, 64, NULL));
    cr_expect_not(spool_channel_name_valid("abcdef", 6, 5, &why));
    cr_expect_str_eq(why, "channel name is too long");
}

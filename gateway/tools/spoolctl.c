/*
 * spoolctl: the command-line client of the admin API (docs/admin.md).
 *
 *   spoolctl [--server host:port] [--key name:secret] [--json] COMMAND
 *     status          nodes, then every shard with its leader, term and replica lag
 *     nodes           the storage nodes: reachable, shards led
 *     rebalance       spread shard leaderships (POST /v1/admin/rebalance)
 *     channel NAME    a channel's shard, slot, leader, serials and latest records
 *     node add ID@HOST:PORT   add a storage node (started with --join) and wait until its
 *                             replicas have moved (POST /v1/admin/nodes, then polls status)
 *     node remove ID          move every replica off node ID and take it out of the cluster
 *                             (DELETE /v1/admin/nodes/ID), waiting the same way
 *     shards add N [--wait]   grow the cluster to N shards: new Raft groups, slots move to them
 *                             (POST /v1/admin/shards, docs/resharding.md), waiting the same way
 *                             until every slot reached its shard (--wait is the default)
 *
 * --server / SPOOL_SERVER (default 127.0.0.1:8080), --key / SPOOL_KEY (sent as HTTP Basic; none
 * = anonymous), --timeout SECONDS / SPOOL_TIMEOUT (node add/remove: how long to wait for the
 * change to complete, default 300; 0 = do not wait). Exit codes: 0 ok, 1 server or connection
 * error (the JSON error's message is printed) or the change did not complete in time, 2 usage.
 *
 * The HTTP client is deliberately tiny: one blocking HTTP/1.1 request per connection
 * ("Connection: close"), answers framed by Content-Length or by the end of the stream, every
 * socket operation bounded by a 10 s timeout.
 */
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 10
#define MAX_RESPONSE (64u << 20)

static const char *usage_text =
    "usage: spoolctl [--server host:port] [--key name:secret] [--json] COMMAND\n"
    "  status | nodes | rebalance | channel NAME | node add ID@HOST:PORT | node remove ID\n"
    "  | shards add N [--wait]\n"
    "  [--timeout SECONDS] (node add/remove, shards add: wait at most this long for the change;\n"
    "   0 = no wait)\n"
    "  env: SPOOL_SERVER, SPOOL_KEY, SPOOL_TIMEOUT\n";

static bool quiet; /* while polling (node add/remove): connection errors are expected */

static int usage(const char *why)
{
    if (why != NULL) fprintf(stderr, "spoolctl: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

static void base64(const char *in, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Percent-encodes a path segment. */
static void encode_segment(const char *in, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *in; in++) {
        unsigned char c = (unsigned char)*in;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-_.~", c) != NULL) {
            *out++ = (char)c;
        } else {
            *out++ = '%';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out = '\0';
}

static int dial(const char *server)
{
    char host[256];
    const char *colon = strrchr(server, ':');
    if (colon == NULL || (size_t)(colon - server) >= sizeof host) return -1;
    memcpy(host, server, (size_t)(colon - server));
    host[colon - server] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) return -1;
    int fd = -1;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* One request; returns the HTTP status (and the body, NUL-terminated, to free) or -1. */
static int http(const char *server, const char *key, const char *method, const char *path,
                const char *req_body, char **body_out)
{
    *body_out = NULL;
    int fd = dial(server);
    if (fd < 0) {
        if (!quiet) fprintf(stderr, "spoolctl: cannot connect to %s: %s\n", server, strerror(errno));
        return -1;
    }
    char auth[1024] = "";
    if (key != NULL && key[0] != '\0') {
        char b64[700];
        if (strlen(key) > 500) {
            close(fd);
            fprintf(stderr, "spoolctl: --key is too long\n");
            return -1;
        }
        base64(key, b64);
        snprintf(auth, sizeof auth, "Authorization: Basic %s\r\n", b64);
    }
    char head[4096];
    size_t blen0 = req_body ? strlen(req_body) : 0;
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\n%s%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
                      method, path, server, auth, blen0 ? "Content-Type: application/json\r\n" : "", blen0);
    if (hn < 0 || (size_t)hn >= sizeof head || write(fd, head, (size_t)hn) != hn ||
        (blen0 > 0 && write(fd, req_body, blen0) != (ssize_t)blen0)) {
        close(fd);
        fprintf(stderr, "spoolctl: cannot send the request to %s\n", server);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t r = 1;
    while (buf != NULL && r > 0 && len < MAX_RESPONSE) {
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) break;
            buf = nb, cap *= 2;
        }
        r = read(fd, buf + len, cap - len - 1);
        if (r > 0) len += (size_t)r;
    }
    close(fd);
    if (buf == NULL) return -1;
    buf[len] = '\0';
    int status = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || body == NULL) {
        if (!quiet)
            fprintf(stderr, "spoolctl: no valid HTTP answer from %s%s\n", server,
                    r < 0 ? " (timed out)" : "");
        free(buf);
        return -1;
    }
    *body = '\0';
    body += 4;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t blen = strlen(body);
    if (cl != NULL) {
        size_t want = strtoul(cl + 17, NULL, 10);
        if (want < blen) body[want] = '\0';
    }
    *body_out = strdup(body);
    free(buf);
    return *body_out != NULL ? status : -1;
}

static json_int_t int_of(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static void print_nodes(json_t *v)
{
    printf("%-6s %-24s %-10s %s\n", "NODE", "ADDRESS", "REACHABLE", "LEADS");
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(v, "nodes"), i, n)
        printf("%-6" JSON_INTEGER_FORMAT " %-24s %-10s %" JSON_INTEGER_FORMAT "%s\n",
               int_of(n, "id"), json_string_value(json_object_get(n, "address")),
               json_is_true(json_object_get(n, "reachable")) ? "yes" : "NO", int_of(n, "leads"),
               json_is_true(json_object_get(n, "self")) ? "  (answering)" : "");
}

static void print_status(json_t *v)
{
    printf("node %" JSON_INTEGER_FORMAT ", slot map epoch %" JSON_INTEGER_FORMAT
           ", fair share %" JSON_INTEGER_FORMAT " leaders per node\n",
           int_of(v, "node"), int_of(v, "slotMapEpoch"), int_of(v, "fairShare"));
    json_t *ms = json_object_get(v, "membership");
    const char *state = json_string_value(json_object_get(ms, "state"));
    if (state != NULL && strcmp(state, "idle") != 0)
        printf("membership: %s node %" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
               " shard(s) still moving\n", state, int_of(ms, "node"), int_of(ms, "shardsLeft"));
    else
        printf("membership: idle\n");
    json_t *rs = json_object_get(v, "resharding");
    const char *rstate = json_string_value(json_object_get(rs, "state"));
    json_t *mv = json_object_get(rs, "move");
    if (rstate != NULL && strcmp(rstate, "idle") != 0) {
        printf("resharding: %" JSON_INTEGER_FORMAT " -> %" JSON_INTEGER_FORMAT " shards, %"
               JSON_INTEGER_FORMAT " slot(s) left", int_of(rs, "shardsBefore"), int_of(rs, "shards"),
               int_of(rs, "slotsLeft"));
        if (json_is_object(mv))
            printf("; moving %" JSON_INTEGER_FORMAT " slot(s) %" JSON_INTEGER_FORMAT " -> %"
                   JSON_INTEGER_FORMAT " (%s)", int_of(mv, "slots"), int_of(mv, "from"),
                   int_of(mv, "to"), json_string_value(json_object_get(mv, "phase")));
        printf("\n");
    } else if (rs != NULL) {
        printf("resharding: idle (%" JSON_INTEGER_FORMAT " shards)\n", int_of(rs, "shards"));
    }
    printf("\n");
    print_nodes(v);
    printf("\n%-6s %-7s %-8s %-10s %-6s %s\n", "SHARD", "LEADER", "TERM", "COMMIT", "SLOTS",
           "REPLICAS (id:lag)");
    size_t i, j;
    json_t *s, *r;
    json_array_foreach(json_object_get(v, "shards"), i, s) {
        json_t *leader = json_object_get(s, "leader");
        char lead[24] = "-", term[24] = "?", commit[24] = "?";
        if (json_is_integer(leader)) snprintf(lead, sizeof lead, "%" JSON_INTEGER_FORMAT, json_integer_value(leader));
        if (json_object_get(s, "term")) snprintf(term, sizeof term, "%" JSON_INTEGER_FORMAT, int_of(s, "term"));
        if (json_object_get(s, "commitIndex")) snprintf(commit, sizeof commit, "%" JSON_INTEGER_FORMAT, int_of(s, "commitIndex"));
        printf("%-6" JSON_INTEGER_FORMAT " %-7s %-8s %-10s %-6" JSON_INTEGER_FORMAT, int_of(s, "id"),
               lead, term, commit, int_of(s, "slots"));
        json_array_foreach(json_object_get(s, "progress"), j, r) {
            json_t *lag = json_object_get(r, "lag");
            if (json_is_integer(lag))
                printf(" %" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT, int_of(r, "id"), json_integer_value(lag));
            else
                printf(" %" JSON_INTEGER_FORMAT ":?", int_of(r, "id"));
        }
        json_t *to = json_object_get(s, "movingTo");
        if (json_array_size(to) > 0) {
            printf("  -> ");
            json_array_foreach(to, j, r)
                printf("%s%" JSON_INTEGER_FORMAT, j ? "," : "", json_integer_value(r));
        }
        printf("\n");
    }
}

/* node add / node remove: wait (bounded) until the cluster map shows the change complete. */
static bool membership_done(json_t *v, bool add, long long id)
{
    json_t *ms = json_object_get(v, "membership");
    const char *state = json_string_value(json_object_get(ms, "state"));
    if (state == NULL || strcmp(state, "idle") != 0)
        return false;
    bool listed = false;
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(v, "nodes"), i, n) listed |= int_of(n, "id") == id;
    return listed == add;
}

static int wait_membership(const char *server, const char *key, bool add, long long id,
                           long timeout_s)
{
    struct timeval start, now;
    gettimeofday(&start, NULL);
    quiet = true;
    for (;;) {
        char *body = NULL;
        int status = http(server, key, "GET", "/v1/admin/cluster", NULL, &body);
        json_t *v = status == 200 ? json_loads(body, 0, NULL) : NULL;
        free(body);
        if (v != NULL && membership_done(v, add, id)) {
            size_t i, held = 0;
            json_t *s, *r;
            json_array_foreach(json_object_get(v, "shards"), i, s) {
                size_t j;
                json_array_foreach(json_object_get(s, "replicas"), j, r)
                    held += json_integer_value(r) == id;
            }
            printf("node %lld %s: epoch %" JSON_INTEGER_FORMAT ", it holds %zu replica(s)\n", id,
                   add ? "added" : "removed", int_of(v, "slotMapEpoch"), held);
            json_decref(v);
            return 0;
        }
        json_decref(v);
        gettimeofday(&now, NULL);
        if (now.tv_sec - start.tv_sec >= timeout_s) {
            fprintf(stderr, "spoolctl: node %s %lld: not complete after %ld s (see spoolctl status)\n",
                    add ? "add" : "remove", id, timeout_s);
            return 1;
        }
        usleep(250 * 1000);
    }
}

/* shards add: wait (bounded) until the map has `shards` shards and no resharding runs. */
static int wait_shards(const char *server, const char *key, long long shards, long timeout_s)
{
    struct timeval start, now;
    gettimeofday(&start, NULL);
    quiet = true;
    for (;;) {
        char *body = NULL;
        int status = http(server, key, "GET", "/v1/admin/cluster", NULL, &body);
        json_t *v = status == 200 ? json_loads(body, 0, NULL) : NULL;
        free(body);
        json_t *rs = json_object_get(v, "resharding");
        const char *state = json_string_value(json_object_get(rs, "state"));
        if (state != NULL && strcmp(state, "idle") == 0 && int_of(rs, "shards") == shards) {
            printf("resharding done: %lld shards, epoch %" JSON_INTEGER_FORMAT "\n", shards,
                   int_of(v, "slotMapEpoch"));
            json_decref(v);
            return 0;
        }
        json_decref(v);
        gettimeofday(&now, NULL);
        if (now.tv_sec - start.tv_sec >= timeout_s) {
            fprintf(stderr, "spoolctl: shards add %lld: not complete after %ld s (see spoolctl "
                    "status)\n", shards, timeout_s);
            return 1;
        }
        usleep(250 * 1000);
    }
}

static void print_reshard(json_t *v)
{
    printf("accepted: %" JSON_INTEGER_FORMAT " -> %" JSON_INTEGER_FORMAT " shards at epoch %"
           JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT " slot(s) to move\n",
           int_of(v, "shardsBefore"), int_of(v, "shards"), int_of(v, "epoch"),
           int_of(v, "slotsToMove"));
    size_t i, j;
    json_t *s, *r;
    json_array_foreach(json_object_get(v, "newShards"), i, s) {
        printf("  new shard %" JSON_INTEGER_FORMAT " on nodes", int_of(s, "id"));
        json_array_foreach(json_object_get(s, "replicas"), j, r)
            printf("%s%" JSON_INTEGER_FORMAT, j ? "," : " ", json_integer_value(r));
        printf("\n");
    }
}

static void print_accepted(json_t *v)
{
    printf("accepted: membership change started at epoch %" JSON_INTEGER_FORMAT "\n",
           int_of(v, "epoch"));
}

static void print_rebalance(json_t *v)
{
    json_t *t = json_object_get(v, "transfers");
    printf("asked every storage node to spread its leaderships; node %" JSON_INTEGER_FORMAT
           " started %zu transfer(s)\n", int_of(v, "node"), json_array_size(t));
    size_t i;
    json_t *m;
    json_array_foreach(t, i, m)
        printf("  shard %" JSON_INTEGER_FORMAT ": node %" JSON_INTEGER_FORMAT " -> node %" JSON_INTEGER_FORMAT "\n",
               int_of(m, "shard"), int_of(m, "from"), int_of(m, "to"));
}

static void print_channel(json_t *v)
{
    json_t *leader = json_object_get(v, "leader");
    printf("channel  %s\nshard    %" JSON_INTEGER_FORMAT "\nslot     %" JSON_INTEGER_FORMAT "\n",
           json_string_value(json_object_get(v, "channel")), int_of(v, "shard"), int_of(v, "slot"));
    if (json_is_integer(leader)) printf("leader   %" JSON_INTEGER_FORMAT "\n", json_integer_value(leader));
    else printf("leader   unknown\n");
    printf("serials  %" JSON_INTEGER_FORMAT "..%" JSON_INTEGER_FORMAT " (%" JSON_INTEGER_FORMAT " records)\nlatest:\n",
           int_of(v, "firstSerial"), int_of(v, "lastSerial"), int_of(v, "records"));
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(v, "latest"), i, r) {
        char *line = json_dumps(r, JSON_COMPACT);
        printf("  %s\n", line ? line : "?");
        free(line);
    }
}

int main(int argc, char **argv)
{
    const char *server = getenv("SPOOL_SERVER"), *key = getenv("SPOOL_KEY");
    if (server == NULL || server[0] == '\0') server = "127.0.0.1:8080";
    const char *tenv = getenv("SPOOL_TIMEOUT");
    long timeout_s = tenv != NULL && tenv[0] != '\0' ? strtol(tenv, NULL, 10) : 300;
    bool raw = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) raw = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) server = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) key = argv[++i];
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            timeout_s = strtol(argv[++i], &end, 10);
            if (*end != '\0' || timeout_s < 0) return usage("--timeout wants seconds");
        }
        else return usage("unknown or incomplete option");
    }
    if (i >= argc) return usage("missing command");
    const char *cmd = argv[i++];
    int rest = argc - i;
    const char *method = "GET";
    char path[3 * 1024 + 64], req_body[512] = "";
    void (*print)(json_t *) = NULL;
    int wait_kind = 0; /* 1 add, 2 remove, 3 shards */
    long long node_id = 0;
    if (strcmp(cmd, "status") == 0 && rest == 0) {
        snprintf(path, sizeof path, "/v1/admin/cluster");
        print = print_status;
    } else if (strcmp(cmd, "nodes") == 0 && rest == 0) {
        snprintf(path, sizeof path, "/v1/admin/cluster");
        print = print_nodes;
    } else if (strcmp(cmd, "rebalance") == 0 && rest == 0) {
        method = "POST";
        snprintf(path, sizeof path, "/v1/admin/rebalance");
        print = print_rebalance;
    } else if (strcmp(cmd, "channel") == 0 && rest == 1) {
        if (argv[i][0] == '\0' || strlen(argv[i]) > 1024) return usage("bad channel name");
        char enc[3 * 1024 + 1];
        encode_segment(argv[i], enc);
        snprintf(path, sizeof path, "/v1/admin/channels/%s", enc);
        print = print_channel;
    } else if (strcmp(cmd, "node") == 0 && rest == 2 && strcmp(argv[i], "add") == 0) {
        const char *spec = argv[i + 1], *at = strchr(spec, '@');
        char *end;
        node_id = strtoll(spec, &end, 10);
        if (at == NULL || end != at || node_id <= 0 || strchr(at + 1, ':') == NULL ||
            strlen(at + 1) > 255 || strpbrk(at + 1, "\"\\") != NULL)
            return usage("node add wants ID@HOST:PORT (the new node's --id and --cluster-listen)");
        method = "POST";
        snprintf(path, sizeof path, "/v1/admin/nodes");
        snprintf(req_body, sizeof req_body, "{\"id\":%lld,\"address\":\"%s\"}", node_id, at + 1);
        print = print_accepted;
        wait_kind = 1;
    } else if (strcmp(cmd, "node") == 0 && rest == 2 && strcmp(argv[i], "remove") == 0) {
        char *end;
        node_id = strtoll(argv[i + 1], &end, 10);
        if (*end != '\0' || node_id <= 0) return usage("node remove wants a node id");
        method = "DELETE";
        snprintf(path, sizeof path, "/v1/admin/nodes/%lld", node_id);
        print = print_accepted;
        wait_kind = 2;
    } else if (strcmp(cmd, "shards") == 0 && (rest == 2 || (rest == 3 && strcmp(argv[i + 2], "--wait") == 0)) &&
               strcmp(argv[i], "add") == 0) {
        char *end;
        node_id = strtoll(argv[i + 1], &end, 10);
        if (*end != '\0' || node_id <= 0 || node_id > 1024)
            return usage("shards add wants the new shard count (1..1024)");
        method = "POST";
        snprintf(path, sizeof path, "/v1/admin/shards");
        snprintf(req_body, sizeof req_body, "{\"shards\":%lld}", node_id);
        print = print_reshard;
        wait_kind = 3;
    } else {
        return usage("unknown command or wrong arguments");
    }
    char *body = NULL;
    int status = http(server, key, method, path, req_body, &body);
    if (status < 0) return 1;
    json_error_t jerr;
    json_t *v = json_loads(body, 0, &jerr);
    int rc = 0;
    if (status >= 400 || v == NULL || !json_is_object(v)) {
        const char *msg = json_string_value(json_object_get(json_object_get(v, "error"), "message"));
        fprintf(stderr, "spoolctl: server error %d: %s\n", status, msg ? msg : "(no JSON error body)");
        rc = 1;
    } else if (raw) {
        printf("%s\n", body);
    } else {
        print(v);
    }
    json_decref(v);
    free(body);
    if (rc == 0 && wait_kind == 3 && timeout_s > 0)
        rc = wait_shards(server, key, node_id, timeout_s);
    else if (rc == 0 && wait_kind != 0 && timeout_s > 0)
        rc = wait_membership(server, key, wait_kind == 1, node_id, timeout_s);
    return rc;
}

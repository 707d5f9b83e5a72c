/*
 * Durable Streams reserved subscription APIs (docs/durable-streams.md section 17) under
 * /v1/stream/__ds/: webhook and pull-wake subscriptions over stream names (glob pattern and/or
 * explicit streams), wakes with generations and leases, Ed25519-signed webhook notifications
 * (JWKS at __ds/jwks.json), HMAC-signed wake tokens for callback / ack / release.
 *
 * Scope of this first version: subscriptions live in the memory of the node that serves them
 * (not replicated, lost on restart) and see the appends made through this node's Durable
 * Streams endpoint; glob links are made when a matching stream is written (streams existing
 * before the subscription are not linked); leases expire lazily (checked on the next request or
 * append); a failed webhook delivery marks the subscription failed and is retried by the next
 * wake. Webhook URLs: http:// to localhost / 127.x only (no TLS client yet).
 */
#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/durable_streams_int.h"
#include "gateway/jwt.h"

#define OFF_LEN 40
#define TOKEN_TTL_MS 3600000

struct link {
    char *path;
    bool explicit_, glob;
    char acked[OFF_LEN];
    char tail[OFF_LEN];
};

struct sub {
    struct sub *next;
    char *id, *type, *pattern, *url, *wake_stream, *description, *canon;
    char origin[300];
    uint64_t lease_ttl_ms;
    int64_t created_ms;
    bool failed;
    struct link *links;
    size_t n_links;
    uint64_t generation;
    bool wake_open;
    char wake_id[32];
    char *holder;
    int64_t lease_deadline; /* 0 = none */
    char **snap_path;
    char (*snap_tail)[OFF_LEN];
    size_t n_snap;
};

struct hook; /* a webhook delivery in flight */

struct ds_subs {
    struct spool_ds *ds;
    struct sub *subs;
    EVP_PKEY *key;
    char x[64];   /* base64url raw public key */
    char kid[64];
    unsigned char hmac_key[32];
    struct hook *hooks;
};

/* --- helpers ------------------------------------------------------------------------------ */

static void respond_json(struct spool_http_req *req, int status, json_t *v, const char *ct)
{
    struct ds_hdrs h;
    ds_hdrs_init(&h);
    ds_hdr(&h, "Content-Type", ct ? ct : "application/json");
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    if (v)
        json_decref(v);
    if (s == NULL && v != NULL) {
        ds_fail(req, 503, "out of memory");
        return;
    }
    spool_http_respond_owned(req, status, h.h, h.n, s, s ? strlen(s) : 0);
}

static void respond_error(struct spool_http_req *req, int status, const char *code, const char *msg)
{
    respond_json(req, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg), NULL);
}

static bool glob_match(const char *pat, const char *path)
{
    if (*pat == '\0')
        return *path == '\0';
    const char *pe = strchr(pat, '/');
    size_t pl = pe ? (size_t)(pe - pat) : strlen(pat);
    if (pl == 2 && strncmp(pat, "**", 2) == 0) {
        const char *rest = pe ? pe + 1 : "";
        for (const char *p = path;;) {
            if (glob_match(rest, p))
                return true;
            const char *slash = strchr(p, '/');
            if (*p == '\0')
                return false;
            p = slash ? slash + 1 : p + strlen(p);
        }
    }
    if (*path == '\0')
        return false;
    const char *se = strchr(path, '/');
    size_t sl = se ? (size_t)(se - path) : strlen(path);
    if (!(pl == 1 && pat[0] == '*') && (pl != sl || strncmp(pat, path, pl) != 0))
        return false;
    if (pe == NULL || se == NULL)
        return pe == NULL && se == NULL;
    return glob_match(pe + 1, se + 1);
}

static char *trim_slashes(const char *s)
{
    while (*s == '/')
        s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    return strndup(s, n);
}

static struct link *link_find(struct sub *s, const char *path)
{
    for (size_t i = 0; i < s->n_links; i++)
        if (strcmp(s->links[i].path, path) == 0)
            return &s->links[i];
    return NULL;
}

static struct link *link_add(struct sub *s, const char *path, const char *acked)
{
    struct link *l = link_find(s, path);
    if (l != NULL)
        return l;
    struct link *v = realloc(s->links, (s->n_links + 1) * sizeof *v);
    if (v == NULL)
        return NULL;
    s->links = v;
    l = &v[s->n_links];
    memset(l, 0, sizeof *l);
    if ((l->path = strdup(path)) == NULL)
        return NULL;
    snprintf(l->acked, OFF_LEN, "%s", acked);
    snprintf(l->tail, OFF_LEN, "%s", acked);
    s->n_links++;
    return l;
}

/* A stream the subscription names itself (at creation or by a "streams" update): acked from the
 * start of the stream. */
static void link_add_explicit(struct sub *s, const char *path)
{
    struct link *l = link_add(s, path, "0000000000000000_0000000000000000");
    if (l)
        l->explicit_ = true;
}

static void link_del(struct sub *s, struct link *l)
{
    free(l->path);
    size_t i = (size_t)(l - s->links);
    memmove(l, l + 1, (s->n_links - i - 1) * sizeof *l);
    s->n_links--;
}

static bool pending(const struct link *l) { return strcmp(l->tail, l->acked) > 0; }

static bool any_pending(const struct sub *s)
{
    for (size_t i = 0; i < s->n_links; i++)
        if (pending(&s->links[i]))
            return true;
    return false;
}

static json_t *link_info(const struct link *l, bool with_tail)
{
    json_t *o = json_pack("{s:s,s:s,s:s}", "path", l->path, "link_type",
                          l->explicit_ ? "explicit" : "glob", "acked_offset", l->acked);
    if (o && with_tail) {
        json_object_set_new(o, "tail_offset", json_string(l->tail));
        json_object_set_new(o, "has_pending", json_boolean(pending(l)));
    }
    return o;
}

static json_t *links_json(const struct sub *s, bool with_tail)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->n_links; i++)
        json_array_append_new(a, link_info(&s->links[i], with_tail));
    return a;
}

static json_t *sub_json(struct ds_subs *x, const struct sub *s)
{
    char iso[40];
    time_t t = (time_t)(s->created_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(iso + strlen(iso), sizeof iso - strlen(iso), ".%03dZ", (int)(s->created_ms % 1000));
    json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:I,s:s,s:s}", "id", s->id, "subscription_id", s->id,
                          "type", s->type, "streams", links_json(s, false), "lease_ttl_ms",
                          (json_int_t)s->lease_ttl_ms, "created_at", iso, "status",
                          s->failed ? "failed" : "active");
    if (o == NULL)
        return NULL;
    if (s->pattern)
        json_object_set_new(o, "pattern", json_string(s->pattern));
    if (s->description)
        json_object_set_new(o, "description", json_string(s->description));
    if (s->wake_stream)
        json_object_set_new(o, "wake_stream", json_string(s->wake_stream));
    if (s->url) {
        char jwks[400];
        snprintf(jwks, sizeof jwks, "%s/v1/stream/__ds/jwks.json", s->origin);
        json_object_set_new(o, "webhook",
                            json_pack("{s:s,s:{s:s,s:s,s:s}}", "url", s->url, "signing", "alg",
                                      "ed25519", "kid", x->kid, "jwks_url", jwks));
    }
    return o;
}

static void sub_free(struct sub *s)
{
    for (size_t i = 0; i < s->n_links; i++)
        free(s->links[i].path);
    for (size_t i = 0; i < s->n_snap; i++)
        free(s->snap_path[i]);
    free(s->snap_path);
    free(s->snap_tail);
    free(s->links);
    free(s->id);
    free(s->type);
    free(s->pattern);
    free(s->url);
    free(s->wake_stream);
    free(s->description);
    free(s->canon);
    free(s->holder);
    free(s);
}

static struct sub *sub_find(struct ds_subs *x, const char *id)
{
    for (struct sub *s = x->subs; s; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

/* --- tokens and signatures ---------------------------------------------------------------- */

static char *token_mint(struct ds_subs *x, const struct sub *s)
{
    char payload[300], mac_b64[64], pay_b64[420];
    unsigned char mac[32];
    unsigned int mac_len = 0;
    snprintf(payload, sizeof payload, "%s|%" PRIu64 "|%" PRId64, s->id, s->generation,
             ds_now_ms() + TOKEN_TTL_MS);
    HMAC(EVP_sha256(), x->hmac_key, sizeof x->hmac_key, (unsigned char *)payload, strlen(payload),
         mac, &mac_len);
    spool_base64url_encode(payload, strlen(payload), pay_b64, sizeof pay_b64);
    spool_base64url_encode(mac, mac_len, mac_b64, sizeof mac_b64);
    char *t = malloc(strlen(pay_b64) + strlen(mac_b64) + 2);
    if (t)
        sprintf(t, "%s.%s", pay_b64, mac_b64);
    return t;
}

/* 0 ok (generation out), 1 invalid, 2 expired. */
static int token_check(struct ds_subs *x, const struct sub *s, const char *auth, uint64_t *gen)
{
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return 1;
    const char *t = auth + 7;
    const char *dot = strchr(t, '.');
    if (dot == NULL)
        return 1;
    char payload[300];
    long n = spool_base64url_decode(t, (size_t)(dot - t), payload, sizeof payload - 1);
    if (n <= 0)
        return 1;
    payload[n] = '\0';
    unsigned char mac[32], want[32];
    unsigned int wl = 0;
    long ml = spool_base64url_decode(dot + 1, strlen(dot + 1), mac, sizeof mac);
    HMAC(EVP_sha256(), x->hmac_key, sizeof x->hmac_key, (unsigned char *)payload, (size_t)n, want,
         &wl);
    if (ml != 32 || CRYPTO_memcmp(mac, want, 32) != 0)
        return 1;
    char *bar1 = strchr(payload, '|');
    char *bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
    if (bar2 == NULL)
        return 1;
    *bar1 = '\0';
    if (strcmp(payload, s->id) != 0)
        return 1;
    *gen = strtoull(bar1 + 1, NULL, 10);
    if (strtoll(bar2 + 1, NULL, 10) < ds_now_ms())
        return 2;
    return 0;
}

static int sign(struct ds_subs *x, const char *msg, size_t len, char *out, size_t out_size)
{
    unsigned char sig[64];
    size_t sl = sizeof sig;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && EVP_DigestSignInit(c, NULL, NULL, NULL, x->key) == 1 &&
             EVP_DigestSign(c, sig, &sl, (const unsigned char *)msg, len) == 1;
    EVP_MD_CTX_free(c);
    if (!ok)
        return -1;
    spool_base64url_encode(sig, sl, out, out_size);
    return 0;
}

/* --- webhook delivery (HTTP/1.0 POST over libuv) ------------------------------------------ */

struct hook {
    struct hook *next;
    struct ds_subs *x;
    char *sub_id;
    uint64_t generation;
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    uv_timer_t timer;
    char *req;
    char *resp;
    size_t resp_len;
    int closing; /* handles still to close */
    bool done;
};

static void hook_free_cb(uv_handle_t *h)
{
    struct hook *k = h->data;
    if (--k->closing > 0)
        return;
    free(k->sub_id);
    free(k->req);
    free(k->resp);
    free(k);
}

static void hook_finish(struct hook *k, bool ok)
{
    if (k->done)
        return;
    k->done = true;
    struct ds_subs *x = k->x;
    for (struct hook **p = &x->hooks; *p; p = &(*p)->next)
        if (*p == k) {
            *p = k->next;
            break;
        }
    struct sub *s = k->sub_id ? sub_find(x, k->sub_id) : NULL;
    int status = 0;
    if (ok && k->resp_len > 12)
        sscanf(k->resp, "HTTP/%*d.%*d %d", &status);
    if (s != NULL) {
        s->failed = !(status >= 200 && status < 300);
        const char *body = k->resp ? strstr(k->resp, "\r\n\r\n") : NULL;
        json_t *v = body ? json_loads(body + 4, JSON_DECODE_ANY, NULL) : NULL;
        bool done = v && json_is_true(json_object_get(v, "done"));
        json_decref(v);
        if (!s->failed && done && s->wake_open && s->generation == k->generation) {
            for (size_t i = 0; i < s->n_snap; i++) {
                struct link *l = link_find(s, s->snap_path[i]);
                if (l && strcmp(s->snap_tail[i], l->acked) > 0)
                    snprintf(l->acked, OFF_LEN, "%s", s->snap_tail[i]);
            }
            s->wake_open = false;
            s->lease_deadline = 0;
        }
    }
    uv_timer_stop(&k->timer);
    uv_close((uv_handle_t *)&k->timer, hook_free_cb);
    uv_close((uv_handle_t *)&k->tcp, hook_free_cb);
}

static void hook_alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    buf->base = malloc(4096);
    buf->len = buf->base ? 4096 : 0;
}

static void hook_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct hook *k = st->data;
    if (n > 0 && k->resp_len + (size_t)n < 65536) {
        char *r = realloc(k->resp, k->resp_len + (size_t)n + 1);
        if (r) {
            memcpy(r + k->resp_len, buf->base, (size_t)n);
            k->resp = r;
            k->resp_len += (size_t)n;
            r[k->resp_len] = '\0';
        }
    }
    free(buf->base);
    if (n < 0)
        hook_finish(k, true);
}

static void hook_write_cb(uv_write_t *w, int status)
{
    struct hook *k = w->data;
    if (status != 0 || uv_read_start((uv_stream_t *)&k->tcp, hook_alloc_cb, hook_read_cb) != 0)
        hook_finish(k, false);
}

static void hook_connect_cb(uv_connect_t *c, int status)
{
    struct hook *k = c->data;
    if (k->done)
        return;
    if (status != 0) {
        hook_finish(k, false);
        return;
    }
    uv_buf_t b = uv_buf_init(k->req, (unsigned)strlen(k->req));
    k->wr.data = k;
    if (uv_write(&k->wr, (uv_stream_t *)&k->tcp, &b, 1, hook_write_cb) != 0)
        hook_finish(k, false);
}

static void hook_timer_cb(uv_timer_t *t) { hook_finish(t->data, false); }

/* Host and port of an http:// URL to localhost / 127.x, and its path. */
static bool url_parse(const char *url, char *host, size_t hs, int *port, const char **path)
{
    if (strncmp(url, "http://", 7) != 0)
        return false;
    const char *h = url + 7;
    const char *end = h + strcspn(h, ":/?#");
    if ((size_t)(end - h) >= hs || end == h)
        return false;
    memcpy(host, h, (size_t)(end - h));
    host[end - h] = '\0';
    *port = 80;
    if (*end == ':') {
        *port = atoi(end + 1);
        end += 1 + strspn(end + 1, "0123456789");
    }
    *path = *end == '/' ? end : "/";
    if (*port <= 0 || *port > 65535)
        return false;
    if (strcmp(host, "localhost") == 0) {
        strcpy(host, "127.0.0.1");
        return true;
    }
    int a, b, c, d;
    char tail;
    return sscanf(host, "%d.%d.%d.%d%c", &a, &b, &c, &d, &tail) == 4 && a == 127 && b >= 0 &&
           b < 256 && c >= 0 && c < 256 && d >= 0 && d < 256;
}

static void webhook_deliver(struct ds_subs *x, struct sub *s, const char *token)
{
    char host[64];
    int port;
    const char *path;
    if (!url_parse(s->url, host, sizeof host, &port, &path)) {
        s->failed = true;
        return;
    }
    char cb[600];
    snprintf(cb, sizeof cb, "%s/v1/stream/__ds/subscriptions/%s/callback", s->origin, s->id);
    json_t *streams = json_array();
    for (size_t i = 0; i < s->n_links; i++)
        json_array_append_new(streams, link_info(&s->links[i], true));
    json_t *body = json_pack("{s:s,s:s,s:I,s:o,s:s,s:s}", "subscription_id", s->id, "wake_id",
                             s->wake_id, "generation", (json_int_t)s->generation, "streams",
                             streams, "callback_url", cb, "callback_token", token);
    char *raw = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct hook *k = calloc(1, sizeof *k);
    char t[24], sig[128], hdr[1400];
    snprintf(t, sizeof t, "%" PRId64, ds_now_ms() / 1000);
    size_t ml = strlen(t) + 1 + (raw ? strlen(raw) : 0);
    char *msg = raw ? malloc(ml + 1) : NULL;
    if (msg)
        sprintf(msg, "%s.%s", t, raw);
    if (k == NULL || msg == NULL || sign(x, msg, ml, sig, sizeof sig) != 0) {
        free(k);
        free(raw);
        free(msg);
        return;
    }
    free(msg);
    int hl = snprintf(hdr, sizeof hdr,
                      "POST %s HTTP/1.0\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nwebhook-signature: t=%s,kid=%s,ed25519=%s\r\n\r\n",
                      path, host, port, strlen(raw), t, x->kid, sig);
    k->req = malloc((size_t)hl + strlen(raw) + 1);
    k->sub_id = strdup(s->id);
    if (k->req == NULL || k->sub_id == NULL) {
        free(k->req);
        free(k->sub_id);
        free(k);
        free(raw);
        return;
    }
    sprintf(k->req, "%s%s", hdr, raw);
    free(raw);
    k->x = x;
    k->generation = s->generation;
    struct sockaddr_in addr;
    uv_ip4_addr(host, port, &addr);
    uv_tcp_init(x->ds->loop, &k->tcp);
    uv_timer_init(x->ds->loop, &k->timer);
    k->tcp.data = k->timer.data = k->conn.data = k;
    k->closing = 2;
    k->next = x->hooks;
    x->hooks = k;
    uv_timer_start(&k->timer, hook_timer_cb, 5000, 0);
    if (uv_tcp_connect(&k->conn, &k->tcp, (const struct sockaddr *)&addr, hook_connect_cb) != 0)
        hook_finish(k, false);
}

/* --- wakes -------------------------------------------------------------------------------- */

static void lease_check(struct sub *s)
{
    if (s->wake_open && s->lease_deadline != 0 && ds_now_ms() > s->lease_deadline) {
        s->wake_open = false;
        s->lease_deadline = 0;
        free(s->holder);
        s->holder = NULL;
    }
}

static void wake_event_cb(void *arg, int status, const struct spool_stream_result *res) {}

/* Opens a wake when work is pending and none is open; true when one was opened. */
static bool maybe_wake(struct ds_subs *x, struct sub *s, const char *trigger)
{
    lease_check(s);
    if (s->wake_open || s->holder != NULL || !any_pending(s))
        return false;
    s->generation++;
    unsigned char r[12];
    RAND_bytes(r, sizeof r);
    strcpy(s->wake_id, "w_");
    for (size_t i = 0; i < sizeof r; i++)
        sprintf(s->wake_id + 2 + 2 * i, "%02x", r[i]);
    for (size_t i = 0; i < s->n_snap; i++)
        free(s->snap_path[i]);
    free(s->snap_path);
    free(s->snap_tail);
    s->n_snap = 0;
    s->snap_path = calloc(s->n_links + 1, sizeof *s->snap_path);
    s->snap_tail = calloc(s->n_links + 1, sizeof *s->snap_tail);
    for (size_t i = 0; s->snap_path && s->snap_tail && i < s->n_links; i++) {
        s->snap_path[i] = strdup(s->links[i].path);
        memcpy(s->snap_tail[i], s->links[i].tail, OFF_LEN);
        s->n_snap++;
    }
    s->wake_open = true;
    if (strcmp(s->type, "webhook") == 0) {
        s->lease_deadline = ds_now_ms() + (int64_t)s->lease_ttl_ms;
        char *token = token_mint(x, s);
        if (token)
            webhook_deliver(x, s, token);
        free(token);
    } else if (s->wake_stream != NULL) {
        s->lease_deadline = 0;
        json_t *ev = json_pack("{s:s,s:s,s:s,s:I,s:I}", "type", "wake", "subscription_id", s->id,
                               "stream", trigger ? trigger : "", "generation",
                               (json_int_t)s->generation, "ts", (json_int_t)ds_now_ms());
        char *raw = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
        json_decref(ev);
        if (raw != NULL) {
            Spool__Record rec, *rp = &rec;
            spool__record__init(&rec);
            rec.action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
            rec.content_type = "application/json";
            rec.data.data = (uint8_t *)raw;
            rec.data.len = strlen(raw);
            Spool__StreamCommand cmd;
            spool__stream_command__init(&cmd);
            cmd.op = SPOOL__STREAM_OP__STREAM_OP_APPEND;
            cmd.content_type = "application/json";
            ds_command(x->ds, s->wake_stream, &cmd, &rp, 1, wake_event_cb, NULL);
            free(raw);
        }
    }
    return true;
}

void ds_subs_on_append(struct spool_ds *ds, const char *path, uint64_t tail)
{
    struct ds_subs *x = ds->subs;
    if (x == NULL || strncmp(path, "__ds", 4) == 0)
        return;
    char off[DS_OFFSET_LEN];
    ds_format_offset(off, tail);
    for (struct sub *s = x->subs; s; s = s->next) {
        if (s->wake_stream != NULL && strcmp(s->wake_stream, path) == 0)
            continue;
        struct link *l = link_find(s, path);
        if (l == NULL && s->pattern != NULL && glob_match(s->pattern, path)) {
            l = link_add(s, path, "-1");
            if (l)
                l->glob = true;
        }
        if (l == NULL)
            continue;
        if (strcmp(off, l->tail) > 0)
            snprintf(l->tail, OFF_LEN, "%s", off);
        maybe_wake(x, s, path);
    }
}

/* --- requests ----------------------------------------------------------------------------- */

static char *canon_of(json_t *v)
{
    json_t *c = json_object();
    const char *keys[] = {"type", "pattern", "webhook", "wake_stream", "lease_ttl_ms", "description"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_t *f = json_object_get(v, keys[i]);
        if (f)
            json_object_set(c, keys[i], f);
    }
    json_t *st = json_object_get(v, "streams");
    if (json_is_array(st)) {
        /* sorted, unique */
        json_t *sorted = json_array();
        size_t n = json_array_size(st);
        const char **names = calloc(n + 1, sizeof *names);
        for (size_t i = 0; names && i < n; i++)
            names[i] = json_string_value(json_array_get(st, i));
        for (size_t i = 0; names && i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (names[i] && names[j] && strcmp(names[j], names[i]) < 0) {
                    const char *t = names[i];
                    names[i] = names[j];
                    names[j] = t;
                }
        for (size_t i = 0; names && i < n; i++)
            if (names[i] && (i == 0 || !names[i - 1] || strcmp(names[i], names[i - 1]) != 0))
                json_array_append_new(sorted, json_string(names[i]));
        free(names);
        json_object_set_new(c, "streams", sorted);
    }
    char *s = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(c);
    return s;
}

static bool url_rejected(const char *url)
{
    char host[64];
    int port;
    const char *path;
    return !url_parse(url, host, sizeof host, &port, &path);
}

static void sub_put(struct ds_subs *x, struct spool_http_req *req, const char *id)
{
    json_t *v = json_loadb(req->body, req->body_len, 0, NULL);
    const char *why = NULL;
    const char *type = v ? json_string_value(json_object_get(v, "type")) : NULL;
    json_t *pattern = v ? json_object_get(v, "pattern") : NULL;
    json_t *streams = v ? json_object_get(v, "streams") : NULL;
    json_t *lease = v ? json_object_get(v, "lease_ttl_ms") : NULL;
    const char *url = v ? json_string_value(json_object_get(json_object_get(v, "webhook"), "url"))
                        : NULL;
    const char *wake = v ? json_string_value(json_object_get(v, "wake_stream")) : NULL;
    if (!json_is_object(v))
        why = "body must be a JSON object";
    else if (type == NULL || (strcmp(type, "webhook") != 0 && strcmp(type, "pull-wake") != 0))
        why = "type must be webhook or pull-wake";
    else if (pattern == NULL && streams == NULL)
        why = "pattern or streams required";
    else if ((pattern && !json_is_string(pattern)) || (streams && !json_is_array(streams)))
        why = "bad pattern or streams";
    else if (lease && (!json_is_integer(lease) || json_integer_value(lease) < 1000 ||
                       json_integer_value(lease) > 600000))
        why = "lease_ttl_ms must be 1000..600000";
    else if (strcmp(type, "webhook") == 0 && url == NULL)
        why = "webhook.url required";
    else if (strcmp(type, "pull-wake") == 0 && wake == NULL)
        why = "wake_stream required";
    for (size_t i = 0; why == NULL && streams && i < json_array_size(streams); i++) {
        const char *sn = json_string_value(json_array_get(streams, i));
        if (sn == NULL || sn[0] == '\0')
            why = "streams must be non-empty strings";
    }
    if (why != NULL) {
        json_decref(v);
        respond_error(req, 400, "INVALID_REQUEST", why);
        return;
    }
    if (strcmp(type, "webhook") == 0 && url_rejected(url)) {
        json_decref(v);
        respond_error(req, 400, "WEBHOOK_URL_REJECTED",
                      "webhook URLs must be http:// to localhost or 127.x (no TLS client yet)");
        return;
    }
    char *canon = canon_of(v);
    struct sub *s = sub_find(x, id);
    if (s != NULL) {
        bool same = canon && strcmp(canon, s->canon) == 0;
        free(canon);
        json_decref(v);
        if (!same)
            respond_error(req, 409, "SUBSCRIPTION_ALREADY_EXISTS", "different configuration");
        else
            respond_json(req, 200, sub_json(x, s), NULL);
        return;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL || canon == NULL) {
        free(canon);
        free(s);
        json_decref(v);
        respond_error(req, 503, "INTERNAL", "out of memory");
        return;
    }
    s->canon = canon;
    s->id = strdup(id);
    s->type = strdup(type);
    s->pattern = pattern ? trim_slashes(json_string_value(pattern)) : NULL;
    s->url = url ? strdup(url) : NULL;
    s->wake_stream = wake ? strdup(wake) : NULL;
    const char *desc = json_string_value(json_object_get(v, "description"));
    s->description = desc ? strdup(desc) : NULL;
    s->lease_ttl_ms = lease ? (uint64_t)json_integer_value(lease) : 30000;
    s->created_ms = ds_now_ms();
    const char *host = spool_http_req_header(req, "Host");
    snprintf(s->origin, sizeof s->origin, "http://%s", host ? host : "localhost");
    for (size_t i = 0; streams && i < json_array_size(streams); i++)
        link_add_explicit(s, json_string_value(json_array_get(streams, i)));
    json_decref(v);
    s->next = x->subs;
    x->subs = s;
    respond_json(req, 201, sub_json(x, s), NULL);
}

/* Validates token + fence + acks, applies them; -1 when it already answered. */
static int apply_acks(struct ds_subs *x, struct sub *s, struct spool_http_req *req, json_t *v,
                      bool need_acks)
{
    uint64_t gen = 0;
    int tc = token_check(x, s, spool_http_req_header(req, "Authorization"), &gen);
    if (tc != 0) {
        respond_error(req, 401, tc == 2 ? "TOKEN_EXPIRED" : "TOKEN_INVALID", "bad wake token");
        return -1;
    }
    lease_check(s);
    json_t *g = json_object_get(v, "generation");
    const char *wid = json_string_value(json_object_get(v, "wake_id"));
    if (gen != s->generation || !s->wake_open || (g && (!json_is_integer(g) ||
        (uint64_t)json_integer_value(g) != s->generation)) || (wid && strcmp(wid, s->wake_id) != 0)) {
        respond_error(req, 409, "FENCED", "stale wake generation");
        return -1;
    }
    json_t *acks = json_object_get(v, "acks");
    for (size_t pass = 0; need_acks && pass < 2; pass++)
        for (size_t i = 0; i < json_array_size(acks); i++) {
            json_t *a = json_array_get(acks, i);
            const char *p = json_string_value(json_object_get(a, "stream"));
            if (p == NULL)
                p = json_string_value(json_object_get(a, "path"));
            const char *o = json_string_value(json_object_get(a, "offset"));
            struct link *l = p ? link_find(s, p) : NULL;
            if (pass == 0 && (l == NULL || o == NULL || strcmp(o, "-1") == 0 ||
                              strcmp(o, l->acked) < 0 || strcmp(o, l->tail) > 0)) {
                respond_error(req, 409, "INVALID_OFFSET", "ack outside (acked, tail]");
                return -1;
            }
            if (pass == 1)
                snprintf(l->acked, OFF_LEN, "%s", o);
        }
    return 0;
}

static void sub_post(struct ds_subs *x, struct spool_http_req *req, struct sub *s, const char *op)
{
    json_t *v = json_loadb(req->body, req->body_len, 0, NULL);
    if (v == NULL)
        v = json_object();
    if (strcmp(op, "streams") == 0) {
        json_t *st = json_object_get(v, "streams");
        bool ok = json_is_array(st) && json_array_size(st) > 0;
        for (size_t i = 0; ok && i < json_array_size(st); i++) {
            const char *n = json_string_value(json_array_get(st, i));
            ok = n != NULL && n[0] != '\0';
        }
        for (size_t i = 0; ok && i < json_array_size(st); i++)
            link_add_explicit(s, json_string_value(json_array_get(st, i)));
        json_decref(v);
        if (!ok)
            respond_error(req, 400, "INVALID_REQUEST", "streams must be non-empty strings");
        else
            respond_json(req, 204, NULL, NULL);
        return;
    }
    if (strcmp(op, "claim") == 0) {
        const char *w = json_string_value(json_object_get(v, "worker"));
        lease_check(s);
        if (w == NULL || w[0] == '\0' || strcmp(s->type, "pull-wake") != 0) {
            json_decref(v);
            respond_error(req, 400, "INVALID_REQUEST", "worker required on a pull-wake subscription");
            return;
        }
        if (s->holder != NULL) {
            json_decref(v);
            respond_json(req, 409, json_pack("{s:{s:s,s:s,s:s,s:I}}", "error", "code",
                                             "ALREADY_CLAIMED", "message", "wake already claimed",
                                             "current_holder", s->holder, "generation",
                                             (json_int_t)s->generation), NULL);
            return;
        }
        if (!s->wake_open && !any_pending(s)) {
            json_decref(v);
            respond_error(req, 409, "NO_PENDING_WORK", "nothing pending");
            return;
        }
        if (!s->wake_open)
            maybe_wake(x, s, NULL);
        s->holder = strdup(w);
        s->lease_deadline = ds_now_ms() + (int64_t)s->lease_ttl_ms;
        char *token = token_mint(x, s);
        json_decref(v);
        json_t *streams = json_array();
        for (size_t i = 0; i < s->n_links; i++)
            json_array_append_new(streams, link_info(&s->links[i], true));
        respond_json(req, 200, json_pack("{s:s,s:I,s:s,s:o,s:I}", "wake_id", s->wake_id,
                                         "generation", (json_int_t)s->generation, "token",
                                         token ? token : "", "streams", streams, "lease_ttl_ms",
                                         (json_int_t)s->lease_ttl_ms), NULL);
        free(token);
        return;
    }
    bool release = strcmp(op, "release") == 0;
    if (!release && strcmp(op, "callback") != 0 && strcmp(op, "ack") != 0) {
        json_decref(v);
        respond_error(req, 404, "SUBSCRIPTION_NOT_FOUND", "no such route");
        return;
    }
    if (apply_acks(x, s, req, v, !release) != 0) {
        json_decref(v);
        return;
    }
    bool done = release || json_is_true(json_object_get(v, "done"));
    json_decref(v);
    bool next = false;
    if (done) {
        s->wake_open = false;
        s->lease_deadline = 0;
        free(s->holder);
        s->holder = NULL;
        next = maybe_wake(x, s, NULL);
    } else {
        s->lease_deadline = ds_now_ms() + (int64_t)s->lease_ttl_ms;
    }
    if (release)
        respond_json(req, 204, NULL, NULL);
    else
        respond_json(req, 200, json_pack("{s:b,s:b}", "ok", 1, "next_wake", next), NULL);
}

void ds_subs_handle(struct spool_ds *ds, struct spool_http_req *req, const char *name)
{
    struct ds_subs *x = ds->subs;
    const char *m = req->method;
    if (strcmp(name, "__ds/jwks.json") == 0 && strcmp(m, "GET") == 0) {
        respond_json(req, 200, json_pack("{s:[{s:s,s:s,s:s,s:s,s:s,s:s}]}", "keys", "kty", "OKP",
                                         "crv", "Ed25519", "x", x->x, "kid", x->kid, "use", "sig",
                                         "alg", "EdDSA"), "application/jwk-set+json");
        return;
    }
    const char *pre = "__ds/subscriptions/";
    if (strncmp(name, pre, strlen(pre)) != 0) {
        respond_error(req, 404, "SUBSCRIPTION_NOT_FOUND", "no such route");
        return;
    }
    const char *rest = name + strlen(pre);
    size_t il = strcspn(rest, "/");
    char id[256];
    if (il == 0 || il >= sizeof id) {
        respond_error(req, 404, "SUBSCRIPTION_NOT_FOUND", "no such subscription");
        return;
    }
    memcpy(id, rest, il);
    id[il] = '\0';
    const char *sub_path = rest[il] == '/' ? rest + il + 1 : NULL;
    struct sub *s = sub_find(x, id);
    if (sub_path == NULL) {
        if (strcmp(m, "PUT") == 0) {
            sub_put(x, req, id);
        } else if (strcmp(m, "GET") == 0) {
            if (s)
                respond_json(req, 200, sub_json(x, s), NULL);
            else
                respond_error(req, 404, "SUBSCRIPTION_NOT_FOUND", "no such subscription");
        } else if (strcmp(m, "DELETE") == 0) {
            for (struct sub **p = &x->subs; *p; p = &(*p)->next)
                if (*p == s) {
                    *p = s->next;
                    sub_free(s);
                    break;
                }
            respond_json(req, 204, NULL, NULL);
        } else {
            respond_error(req, 405, "INVALID_REQUEST", "method not allowed");
        }
        return;
    }
    if (s == NULL) {
        respond_error(req, 404, "SUBSCRIPTION_NOT_FOUND", "no such subscription");
        return;
    }
    if (strncmp(sub_path, "streams/", 8) == 0 && strcmp(m, "DELETE") == 0) {
        struct link *l = link_find(s, sub_path + 8);
        if (l != NULL) {
            l->explicit_ = false;
            if (!l->glob)
                link_del(s, l);
        }
        respond_json(req, 204, NULL, NULL);
        return;
    }
    if (strcmp(m, "POST") != 0) {
        respond_error(req, 405, "INVALID_REQUEST", "method not allowed");
        return;
    }
    sub_post(x, req, s, sub_path);
}

bool ds_subs_is_token_route(const char *name)
{
    size_t n = strlen(name);
    const char *ends[] = {"/callback", "/ack", "/release"};
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(ends[i]);
        if (n > l && strcmp(name + n - l, ends[i]) == 0)
            return true;
    }
    return false;
}

/* --- life cycle --------------------------------------------------------------------------- */

int ds_subs_init(struct spool_ds *ds)
{
    struct ds_subs *x = calloc(1, sizeof *x);
    if (x == NULL)
        return SPOOL_ENOMEM;
    x->ds = ds;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    unsigned char raw[32];
    size_t rl = sizeof raw;
    if (c == NULL || EVP_PKEY_keygen_init(c) != 1 || EVP_PKEY_keygen(c, &x->key) != 1 ||
        EVP_PKEY_get_raw_public_key(x->key, raw, &rl) != 1 ||
        RAND_bytes(x->hmac_key, sizeof x->hmac_key) != 1) {
        EVP_PKEY_CTX_free(c);
        EVP_PKEY_free(x->key);
        free(x);
        return SPOOL_ENOMEM;
    }
    EVP_PKEY_CTX_free(c);
    spool_base64url_encode(raw, rl, x->x, sizeof x->x);
    char thumb[160];
    unsigned char h[32];
    unsigned int hl = 0;
    snprintf(thumb, sizeof thumb, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x->x);
    EVP_Digest(thumb, strlen(thumb), h, &hl, EVP_sha256(), NULL);
    strcpy(x->kid, "ds_");
    spool_base64url_encode(h, hl, x->kid + 3, sizeof x->kid - 3);
    ds->subs = x;
    return 0;
}

void ds_subs_stop(struct spool_ds *ds)
{
    struct ds_subs *x = ds->subs;
    while (x != NULL && x->hooks != NULL)
        hook_finish(x->hooks, false);
}

void ds_subs_free(struct spool_ds *ds)
{
    struct ds_subs *x = ds->subs;
    if (x == NULL)
        return;
    while (x->subs) {
        struct sub *s = x->subs;
        x->subs = s->next;
        sub_free(s);
    }
    EVP_PKEY_free(x->key);
    free(x);
    ds->subs = NULL;
}

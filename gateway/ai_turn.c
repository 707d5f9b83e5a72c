/*
 * POST /v1/channels/{channel}/turn: claim, renew, take over or release the channel's turn
 * (docs/ai-semantics.md). The request becomes an ACTION_CHANNEL_META "ai.turn" record
 * published like any message, so the state machine decides it at apply time against the
 * channel's turn (cluster/conversation.h) and the outcome is a record every subscriber sees.
 * The answer reads that record back (read-your-writes on its serial) for the epoch and lease
 * end the state machine wrote into it.
 *
 * Body: {"action":"claim"|"release", "ttlMs": N (claim), "takeover": true (claim, operators:
 * role operator, or edit-any / admin on the channel), "epoch": N (release, optional)}.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/conversation.h"
#include "gateway/ai_turn.h"
#include "gateway/http_api_int.h"
#include "gateway/json_body.h"

struct turn_op {
    struct spool_http_api *api;
    struct spool_http_req *req;
    char *channel;
    uint64_t seq;
};

static void turn_op_free(struct turn_op *op)
{
    free(op->channel);
    free(op);
}

static void on_read_back(void *arg, int status, const struct spool_err *err,
                         const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                         uint64_t last_seq)
{
    struct turn_op *op = arg;
    (void)first_seq, (void)last_seq;
    if (status != 0 || n == 0 || recs[0]->seq != op->seq) {
        spool_http_api_respond_err(op->req, status ? status : SPOOL_EIO,
                                   status && err ? err->msg : "turn record not readable");
        turn_op_free(op);
        return;
    }
    const Spool__Record *r = recs[0];
    json_t *v = json_loadb((const char *)r->data.data, r->data.len, 0, NULL);
    if (v == NULL) v = json_object();
    json_object_set_new(v, "channel", json_string(op->channel));
    json_object_set_new(v, "serial", json_integer((json_int_t)r->seq));
    spool_http_respond_json(op->req, 200, v);
    turn_op_free(op);
}

static void on_turn_published(void *arg, int status, const struct spool_err *err,
                              const uint64_t *seqs, const bool *duplicate, size_t n)
{
    struct turn_op *op = arg;
    (void)duplicate;
    if (status != 0 || n != 1) {
        spool_http_api_respond_err(op->req, status ? status : SPOOL_EIO,
                                   err != NULL && err->msg[0] ? err->msg : "turn refused");
        turn_op_free(op);
        return;
    }
    op->seq = seqs[0];
    struct spool_read_req rr = {.channel = op->channel, .after_seq = seqs[0] - 1, .limit = 1,
                                .min_seq = seqs[0]};
    int rv = spool_node_read(op->api->node, &rr, on_read_back, op);
    if (rv != 0) {
        spool_http_api_respond_err(op->req, rv, "reading the turn back failed");
        turn_op_free(op);
    }
}

void spool_ai_turn_handle(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    json_t *body = NULL;
    if (!spool_http_api_admit(api, req, SPOOL_CAP_PUBLISH, &channel, &p)) goto out;
    json_error_t jerr;
    body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body)) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "body must be a JSON object");
        goto out;
    }
    const char *action = json_string_value(json_object_get(body, "action"));
    json_t *ttl = json_object_get(body, "ttlMs"), *epoch = json_object_get(body, "epoch");
    json_t *takeover = json_object_get(body, "takeover");
    const char *client = p.client_id;
    json_t *cid = json_object_get(body, "clientId");
    if (cid != NULL) {
        if (!json_is_string(cid) || json_string_length(cid) == 0 ||
            json_string_length(cid) > SPOOL_CLIENT_ID_MAX) {
            spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "clientId must be a non-empty string");
            goto out;
        }
        if (p.client_id[0] != '\0' && strcmp(p.client_id, json_string_value(cid)) != 0) {
            spool_http_respond_error(req, 403, SPOOL_AUTH_FORBIDDEN,
                                     "clientId does not match the credentials' client id");
            goto out;
        }
        client = json_string_value(cid);
    }
    if (client[0] == '\0') {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON,
                                 "a turn needs a client id (token clientId or body clientId)");
        goto out;
    }
    Spool__Record rec = SPOOL__RECORD__INIT;
    rec.action = SPOOL__ACTION__ACTION_CHANNEL_META;
    rec.name = SPOOL_CONV_TURN;
    rec.client_id = (char *)client;
    if (action != NULL && strcmp(action, "claim") == 0) {
        uint64_t max = api->opts->ai_turn_max_ttl_ms;
        if (!json_is_integer(ttl) || json_integer_value(ttl) <= 0 ||
            (uint64_t)json_integer_value(ttl) > max) {
            spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                     "ttlMs must be an integer in 1..%" PRIu64 " (--ai-turn-max-ttl-ms)", max);
            goto out;
        }
        rec.expires_ms = (int64_t)json_integer_value(ttl);
        if (json_is_true(takeover)) {
            unsigned caps = spool_principal_caps(&p, channel);
            if (p.role != SPOOL_ROLE_OPERATOR && !(caps & (SPOOL_CAP_EDIT_ANY | SPOOL_CAP_ADMIN))) {
                spool_http_respond_error(req, 403, SPOOL_AUTH_FORBIDDEN,
                                         "taking over the turn needs role operator, edit-any or admin");
                goto out;
            }
            rec.flags = SPOOL_CONV_FLAG_TAKEOVER;
        }
    } else if (action == NULL || strcmp(action, "release") != 0) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "action must be \"claim\" or \"release\"");
        goto out;
    }
    if (epoch != NULL) {
        if (!json_is_integer(epoch) || json_integer_value(epoch) <= 0) {
            spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_JSON, "epoch must be a positive integer");
            goto out;
        }
        rec.turn_epoch = (uint64_t)json_integer_value(epoch);
    }
    rec.data.data = (uint8_t *)action;
    rec.data.len = strlen(action);
    rec.content_type = "text/plain";
    struct turn_op *op = calloc(1, sizeof *op);
    if (op == NULL || (op->channel = strdup(channel)) == NULL) {
        if (op != NULL) turn_op_free(op);
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto out;
    }
    op->api = api, op->req = req;
    const Spool__Record *ptr = &rec;
    int rv = spool_node_publish(api->node, channel, &ptr, 1, on_turn_published, op);
    if (rv != 0) {
        turn_op_free(op);
        spool_http_api_respond_err(req, rv, "turn request refused");
    }
out:
    json_decref(body);
    spool_principal_close(&p);
}

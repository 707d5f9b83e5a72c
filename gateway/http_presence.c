/*
 * GET /v1/channels/{channel}/presence: the channel's presence members over REST
 * (docs/http-api.md), the same list the realtime protocol's presence.get answers.
 *
 * The members are computed exactly as for presence.get (gateway/presence.h): a sync reads the
 * channel's history at its shard's leader in pages and folds the presence records, bounded by
 * SPOOL_PRESENCE_SCAN_MAX records read; the answer carries the serial the set is valid at, so a
 * client that follows the channel (SSE, WebSocket) can apply later presence events on top. The
 * items are encoded by spool_presence_set_json_of, the one member encoder, so REST and realtime
 * members look the same. `?clientId=` keeps only one client's members (it may be present through
 * several connections).
 *
 * Capability: `subscribe`, like presence.get (anyone who may follow the channel sees its
 * presence events anyway). Errors are presence.get's, mapped like every other SPOOL_E* failure
 * of the REST API (spool_json_status_of): a channel whose history is too long to fold answers
 * 413 with code 41300 (the code presence.get sends), no reachable leader 503, a slow one 504.
 *
 * One owner and one completion path: the heap `struct presence_op` holds the request from the
 * sync's start to its callback, which fires exactly once (also when the node closes) and answers.
 * The sync is never cancelled: an HTTP request stays valid until it is answered, even when its
 * client went away (gateway/http_server.h). Every loop (--workers) has its own node and API, so
 * the sync runs on the loop that took the request, on storage and gateway-only nodes alike.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/http_api_int.h"
#include "gateway/http_path.h"
#include "gateway/json_body.h"
#include "gateway/presence.h"

#define CLIENT_ID_MAX 128 /* like a publish's clientId (docs/http-api.md) */

struct presence_op {
    struct spool_http_req *req;
    bool filtered;
    char client_id[CLIENT_ID_MAX + 1];
};

static void on_presence_synced(void *arg, int status, const struct spool_err *err,
                               const struct spool_presence_set *set)
{
    struct presence_op *op = arg;
    if (status != 0) {
        spool_http_api_respond_err(op->req, status,
                                   err != NULL && err->msg[0] != '\0' ? err->msg : "presence failed");
    } else {
        json_t *items = spool_presence_set_json_of(set, op->filtered ? op->client_id : NULL);
        spool_http_respond_json(op->req, 200,
                                items == NULL ? NULL
                                              : json_pack("{s:I,s:o}", "serial",
                                                          (json_int_t)set->serial, "items", items));
    }
    free(op);
}

/* Reads ?clientId= into op; false after answering 400. */
static bool client_filter(struct spool_http_req *req, struct presence_op *op)
{
    long n = spool_http_query_get(req->query, "clientId", op->client_id, sizeof op->client_id);
    if (n == -1) return true;
    if (n <= 0 || (size_t)n != strlen(op->client_id)) {
        spool_http_respond_error(req, 400, SPOOL_HTTP_EBAD_PARAM,
                                 "clientId must be 1 to %d bytes (no NUL)", CLIENT_ID_MAX);
        return false;
    }
    op->filtered = true;
    return true;
}

void spool_http_api_presence(void *arg, struct spool_http_req *req)
{
    struct spool_http_api *api = arg;
    const char *channel;
    struct spool_principal p;
    spool_principal_init(&p);
    struct presence_op *op = NULL;
    if (!spool_http_api_admit(api, req, SPOOL_CAP_SUBSCRIBE, &channel, &p)) goto out;
    op = calloc(1, sizeof *op);
    if (op == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        goto out;
    }
    op->req = req;
    if (!client_filter(req, op)) goto out;
    struct spool_err err;
    struct spool_presence_sync *sync; /* not kept: never cancelled (see the top) */
    if (spool_presence_sync(&sync, api->node, channel, SPOOL_PRESENCE_SCAN_MAX,
                            on_presence_synced, op, &err) != 0) {
        spool_http_api_respond_err(req, err.code, err.msg);
        goto out;
    }
    op = NULL; /* on_presence_synced answers and frees it */
out:
    free(op);
    spool_principal_close(&p);
}

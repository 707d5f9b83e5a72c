/*
 * The cluster side of turns (docs/ai-semantics.md, cluster/conversation.h): lease expiry as an
 * event of the channel, and reading the current turn.
 *
 * Expiry. "Releasing, expiry and take-over are events on the channel": when a lease ends, its
 * shard's leader proposes an "ai.turn" record with data "expire" and the lease's epoch, like any
 * publish (group commit, Raft). The state machine decides it with the entry's timestamp: it is
 * stored only if the turn is still at that epoch and its lease has ended at that time, and it
 * ends the lease (a later renewal cannot revive it), so it is written exactly once whoever
 * proposes it and however often (a proposal that loses to a renewal, a release, a take-over or
 * an earlier expire is refused and stores nothing). Every replica applies every claim, so after
 * a leader change the new leader's state machine knows the lease and proposes it in turn.
 *
 * Noticing: one timer per storage node (every SPOOL_EXPIRY_TICK_MS) asks the state machine of
 * each shard this node leads for leases that ended (spool_conv_due, which reports one at most
 * every SPOOL_EXPIRY_RETRY_MS, so a proposal lost with a leader change is made again). So the
 * event follows the lease end by about one tick plus a commit; until it is applied the lease is
 * already over for every check (they compare the lease end with the entry time). A lease the
 * cache does not know (every replica restarted and rebuilt it from a snapshot) gets no event
 * until the next claim, which still says previousExpired: true.
 *
 * Turn read (ReadRequest.turn): the turn a local replica's state machine holds now, as one
 * synthetic "ai.turn" record (client_id = holder, turn_epoch, expires_ms), used by interrupts to
 * find the holder (gateway/ai_ephemeral.c). Served at the leader like a leader read.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/conversation.h"
#include "cluster/node_int.h"
#include "common/log.h"

#define SPOOL_EXPIRY_TICK_MS 100
#define SPOOL_EXPIRY_RETRY_MS 1000

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct expiry_ctx {
    struct spool_node *n;
};

static void expire_published_cb(void *arg, int status, const struct spool_err *err,
                                const uint64_t *seqs, const bool *duplicate, size_t count)
{
    char *channel = arg;
    (void)duplicate;
    if (status == 0 && count == 1)
        SPOOL_INFO("turn.expired", "channel=%s serial=%" PRIu64, channel, seqs[0]);
    else if (status != SPOOL_ECONFLICT && status != SPOOL_ECLOSED)
        SPOOL_WARN("turn.expire_failed", "channel=%s code=%s msg=\"%s\"", channel,
                   spool_err_name(status), err != NULL ? err->msg : "");
    free(channel);
}

static void due_cb(void *arg, const char *channel, uint64_t epoch, const char *holder)
{
    struct expiry_ctx *x = arg;
    Spool__Record rec = SPOOL__RECORD__INIT;
    rec.action = SPOOL__ACTION__ACTION_CHANNEL_META;
    rec.name = SPOOL_CONV_TURN;
    rec.client_id = (char *)holder;
    rec.data.data = (uint8_t *)"expire";
    rec.data.len = 6;
    rec.turn_epoch = epoch;
    const Spool__Record *msgs[1] = {&rec};
    char *copy = strdup(channel);
    if (copy == NULL)
        return;
    int rc = spool_node_publish(x->n, channel, msgs, 1, expire_published_cb, copy);
    if (rc != 0) {
        free(copy);
        SPOOL_WARN("turn.expire_failed", "channel=%s code=%s", channel, spool_err_name(rc));
    }
}

static void expiry_timer_cb(uv_timer_t *t)
{
    struct spool_node *n = t->data;
    if (n->closing)
        return;
    struct expiry_ctx x = {.n = n};
    int64_t now = wall_ms();
    for (uint32_t i = 0; i < n->placement.shards; i++) {
        struct spool_shard *sh = n->shards[i];
        if (sh != NULL && sh->fsm.conv != NULL && spool_shard_is_leader(sh))
            spool_conv_due(sh->fsm.conv, now, SPOOL_EXPIRY_RETRY_MS, due_cb, &x);
    }
}

int spool_expiry_start(struct spool_node *n, struct spool_err *err)
{
    if (n->cfg.gateway_only)
        return 0;
    if (uv_timer_init(n->loop, &n->expiry_timer) != 0)
        return spool_err_set(err, SPOOL_EIO, "turn expiry timer");
    n->expiry_timer.data = n;
    n->expiry_started = true;
    uv_timer_start(&n->expiry_timer, expiry_timer_cb, SPOOL_EXPIRY_TICK_MS, SPOOL_EXPIRY_TICK_MS);
    return 0;
}

static void expiry_timer_closed_cb(uv_handle_t *h)
{
    struct spool_node *n = h->data;
    n->pending_close--;
    spool_node_finish_close(n);
}

void spool_expiry_close(struct spool_node *n)
{
    if (!n->expiry_started)
        return;
    n->expiry_started = false;
    n->pending_close++;
    uv_close((uv_handle_t *)&n->expiry_timer, expiry_timer_closed_cb);
}

int spool_turn_read_local(struct spool_node *n, struct spool_shard *sh, const char *channel,
                          Spool__Record ***recs, size_t *count)
{
    (void)n;
    *recs = NULL;
    *count = 0;
    const char *holder;
    uint64_t epoch;
    int64_t expires;
    if (sh->fsm.conv == NULL ||
        spool_conv_turn(sh->fsm.conv, channel, wall_ms(), &holder, &epoch, &expires) != 0)
        return SPOOL_ENOMEM;
    if (holder[0] == '\0')
        return 0;
    Spool__Record **v = malloc(sizeof *v);
    Spool__Record *r = malloc(sizeof *r);
    char *c = strdup(channel), *h = strdup(holder), *name = strdup(SPOOL_CONV_TURN);
    if (v == NULL || r == NULL || c == NULL || h == NULL || name == NULL) {
        free(v), free(r), free(c), free(h), free(name);
        return SPOOL_ENOMEM;
    }
    /* Owned like an unpacked record (spool_records_free frees it that way). */
    spool__record__init(r);
    r->channel = c;
    r->client_id = h;
    r->name = name;
    r->action = SPOOL__ACTION__ACTION_CHANNEL_META;
    r->turn_epoch = epoch;
    r->expires_ms = expires;
    v[0] = r;
    *recs = v;
    *count = 1;
    return 0;
}

/*
 * Ephemeral records across nodes (docs/ai-semantics.md, gateway/ai_ephemeral.h): typing,
 * progress and interrupts are never stored and never go through Raft. The node that receives one
 * delivers it to its own clients (the gateway does that) and sends it, packed as a Record, as a
 * one-way cluster RPC message (SPOOL_METHOD_EPHEMERAL) to every other storage node it knows;
 * each of those hands it to its gateway (spool_node_set_ephemeral_cb), which delivers it to the
 * connections attached to the channel. Best effort like any live-only signal: a peer that is
 * unreachable misses it (spool_rpc_send drops it), nothing is retried or replayed.
 *
 * Gateway-only nodes are not reached (storage nodes do not know their addresses): their own
 * clients get what they publish; see the doc for the planned path (piggybacking on the parked
 * long-poll reads that feed their subscriptions).
 */
#include <stdlib.h>

#include "cluster/node_int.h"
#include "common/log.h"

void spool_node_set_ephemeral_cb(struct spool_node *n, spool_record_cb cb, void *arg)
{
    n->ephemeral_cb = cb;
    n->ephemeral_arg = arg;
}

int spool_node_ephemeral(struct spool_node *n, const Spool__Record *rec)
{
    if (n->closing)
        return SPOOL_ECLOSED;
    size_t len = spool__record__get_packed_size(rec);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return SPOOL_ENOMEM;
    spool__record__pack(rec, buf);
    for (size_t i = 0; i < n->placement.n_nodes; i++) {
        uint64_t id = n->placement.nodes[i].id;
        if (id != n->cfg.id)
            spool_rpc_send(n->rpc, id, SPOOL_METHOD_EPHEMERAL, buf, len); /* best effort */
    }
    free(buf);
    return 0;
}

void spool_node_ephemeral_arrived(struct spool_node *n, uint64_t from, const void *body, size_t len)
{
    Spool__Record *rec = spool__record__unpack(NULL, len, body);
    if (rec == NULL || rec->channel == NULL || rec->channel[0] == '\0') {
        SPOOL_WARN("node.ephemeral_bad", "from=%llu len=%zu", (unsigned long long)from, len);
    } else if (n->ephemeral_cb != NULL && !n->closing) {
        n->ephemeral_cb(n->ephemeral_arg, rec);
    }
    if (rec != NULL)
        spool__record__free_unpacked(rec, NULL);
}

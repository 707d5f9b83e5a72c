/*
 * Worker loops: the extra event loops (threads) of `spoold --workers N`, so that serving clients
 * (HTTP, WebSocket, SSE and the fan-out to them) is not capped by one thread.
 *
 * Loop 0 is the process's own: the node (Raft shards, stores, the cluster port) and a frontend
 * (gateway/frontend.h). Each of loops 1..N-1 runs on its own thread a complete gateway-only
 * instance with nothing shared but read-only options, the metric registry (atomics, see
 * gateway/metrics.h) and the loop set (atomic readiness flags):
 *
 *   its own uv_loop, a copy of the keyring, a metrics view of loop 0's registry,
 *   a gateway-only node (cluster/node.h) with a derived id, and a frontend listening on the
 *   same client port as loop 0 (SO_REUSEPORT: the kernel spreads new connections over the loops)
 *
 * A worker's node reaches the storage nodes over the cluster RPC exactly like a `--role gateway`
 * node does (routing to shard leaders, long-poll feeding of its subscriptions, the remote view
 * of slot map and leaders), so every loop runs the whole of its connections and their fan-out,
 * and a message published through one loop reaches subscribers on every other loop through the
 * log, with the same serials, in order, exactly once.
 *
 * Its storage peers: the user's --peers when there are any (it then talks to each shard leader
 * directly, like loop 0 does); in single-node mode (--peers "") loop 0's node alone, at its
 * cluster port on loopback. Its id is 2^62 + (--id) * 1024 + loop, so it can never be a
 * configured node id and never collides with another process's workers; its own cluster port is
 * an ephemeral one on loopback (a gateway-only node only dials out). The user's flags keep their
 * meaning: the frontends all see the same options (--id, --role), only the worker nodes'
 * configuration is derived.
 *
 * Start: spool_workers_start() starts the threads one after the other and waits for each to
 * listen (or fail), so a bad configuration fails spoold's start as before.
 * Stop: spool_workers_stop() asks every worker (uv_async) to drain its frontend (stop accepting,
 * finish requests, close WebSockets with 1001) and then close its node; `cb` runs on loop 0 once
 * every worker thread has finished its loop. Loop 0's own node is closed after that by the
 * caller, so workers' in-flight requests still reach it while they drain.
 */
#ifndef SPOOL_GATEWAY_WORKERS_H
#define SPOOL_GATEWAY_WORKERS_H

#include <uv.h>

#include "cluster/node.h"
#include "common/err.h"
#include "gateway/frontend.h"
#include "gateway/metrics.h"
#include "gateway/options.h"

struct spool_workers;

/* Starts loops 1..set->n-1. `listen` is "host:port" with loop 0's bound port; `storage_peers`
 * the peer list for the workers' nodes; `home` loop 0's node's cluster address as the workers
 * dial it: always used for that node id, whatever the slot map holds (a single node persists its
 * address in its metadata, and a previous run may have had another port). On failure *out may
 * still be set (stop and free it). */
int spool_workers_start(struct spool_workers **out, uv_loop_t *loop, const struct spool_options *o,
                        const char *listen, const char *storage_peers, const char *home,
                        struct spool_metrics *root,
                        struct spool_loop_set *set, struct spool_err *err);
/* Drains and ends every worker loop; cb runs once, on `loop`, when all have ended. */
void spool_workers_stop(struct spool_workers *ws, void (*cb)(void *arg), void *arg);
/* Joins the threads and frees everything; after the stop callback (NULL is fine). */
void spool_workers_free(struct spool_workers *ws);

/* The node configuration the options describe (--shards, --replicas, Raft, storage, ...). */
void spool_options_node_config(const struct spool_options *o, struct spool_node_config *cfg);

/* The number of loops --workers asks for (0 = one per CPU), capped at SPOOL_MAX_LOOPS. */
unsigned spool_workers_count(const struct spool_options *o);

#endif

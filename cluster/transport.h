/*
 * One cluster port per node, carrying every Raft group's traffic and the internal RPC.
 *
 * libraft's stock TCP transport listens on a port per Raft instance; with hundreds of shards per
 * node that is hundreds of ports. Here a node has one `spool_mux`, listening on --cluster-listen.
 * Every connection opens with a small preamble: magic, a kind (Raft or RPC), the Raft group id,
 * and the connecting server's id and address. The accepting side reads exactly the preamble
 * (never a byte more, so what follows belongs to libraft or to the RPC framing) and hands the
 * stream to the group's registered raft_uv_transport accept callback, or to the RPC layer.
 *
 * Each Raft group gets its own `struct raft_uv_transport` from spool_mux_transport(); libraft
 * uses it exactly like the stock one (connect/listen/close), unaware that the port is shared.
 */
#ifndef SPOOL_CLUSTER_TRANSPORT_H
#define SPOOL_CLUSTER_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"

struct spool_mux;

/* Called for each accepted RPC connection, after the preamble; the callee owns `stream`. */
typedef void (*spool_mux_rpc_accept_cb)(void *arg, uint64_t peer_id, const char *peer_address,
                                        uv_stream_t *stream);

/* Binds and listens on `address` (host:port; host may be a DNS name). */
int spool_mux_init(struct spool_mux **out, uv_loop_t *loop, uint64_t node_id, const char *address,
                   struct spool_err *err);
void spool_mux_set_rpc_accept(struct spool_mux *m, spool_mux_rpc_accept_cb cb, void *arg);
/* Closes the listener and every connection still in its preamble, then frees; cb may be NULL. */
void spool_mux_close(struct spool_mux *m, void (*cb)(void *arg), void *arg);

/* Initialises `t` (caller-owned, must outlive the raft_io using it) as the transport of Raft
 * group `group_id` on this mux. Release it with spool_mux_transport_close() after raft_close. */
int spool_mux_transport_init(struct spool_mux *m, uint32_t group_id, struct raft_uv_transport *t);
void spool_mux_transport_close(struct raft_uv_transport *t);

/* Opens an RPC connection to `address` and writes the preamble; cb gets the stream (owned by the
 * callee) or a negative libuv status. */
typedef void (*spool_mux_rpc_connect_cb)(void *arg, uv_stream_t *stream, int status);
int spool_mux_rpc_connect(struct spool_mux *m, const char *address, spool_mux_rpc_connect_cb cb,
                          void *arg);

#endif

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
 * Each Raft group gets its own `struct raft_uv_transport` from spool_mux_transport_init();
 * libraft uses it exactly like the stock one (connect/listen/close), unaware that the port is
 * shared. A connection for a group that is not registered (or not yet listening, or closing) is
 * closed: libraft's client simply retries later.
 *
 * Preamble layout and parser: cluster/preamble.h. An accepted connection that has not completed
 * its preamble within SPOOL_MUX_PREAMBLE_TIMEOUT_MS is closed.
 *
 * Streams handed over (accepted or connected) are `uv_tcp_t`s allocated with raft_malloc():
 * the new owner uv_close()s them and raft_free()s them in the close callback (libraft does
 * exactly that for Raft streams). Accepted ones are the first member of a larger block
 * (`struct spool_raft_stream`, cluster/raft_stream.h: a read buffer for libraft's receiver),
 * which the same raft_free() releases.
 *
 * Shutdown order: raft_close every Raft instance using a transport and wait for it, then
 * spool_mux_transport_close() each transport, then spool_rpc_close(), then spool_mux_close().
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

#define SPOOL_MUX_PREAMBLE_TIMEOUT_MS 10000

/* Binds and listens on `address` (host:port or [v6]:port; host may be a DNS name, resolved
 * once here; port 0 picks a free port, see spool_mux_address). On failure *out is NULL and any
 * memory already taken is released by the loop's next iteration. */
int spool_mux_init(struct spool_mux **out, uv_loop_t *loop, uint64_t node_id, const char *address,
                   struct spool_err *err);
/* The address as given to spool_mux_init, with a 0 port replaced by the bound one. Sent as the
 * sender address in RPC preambles. */
const char *spool_mux_address(const struct spool_mux *m);
void spool_mux_set_rpc_accept(struct spool_mux *m, spool_mux_rpc_accept_cb cb, void *arg);
/* How long an accepted connection may take to send its preamble (default
 * SPOOL_MUX_PREAMBLE_TIMEOUT_MS); checked every min(timeout / 2, 1 s). */
void spool_mux_set_preamble_timeout(struct spool_mux *m, uint64_t ms);
/* Closes the listener and every connection still in its preamble, then frees; cb may be NULL. */
void spool_mux_close(struct spool_mux *m, void (*cb)(void *arg), void *arg);

/* Initialises `t` (caller-owned, must outlive the raft_io using it) as the transport of Raft
 * group `group_id` on this mux. Release it with spool_mux_transport_close() after raft_close. */
int spool_mux_transport_init(struct spool_mux *m, uint32_t group_id, struct raft_uv_transport *t);
void spool_mux_transport_close(struct raft_uv_transport *t);

/* Opens an RPC connection to `address` (resolving it with uv_getaddrinfo, trying each address
 * in turn) and writes the preamble; cb is called exactly once, never from inside this call,
 * with the stream (owned by the callee) or NULL and a negative libuv status (UV_ECANCELED
 * after spool_mux_rpc_connect_cancel or spool_mux_close). If `handle` is not NULL it receives
 * the pending connect, valid until cb runs. Returns 0 or a SPOOL_E* code (bad address). */
struct spool_mux_connect;
typedef void (*spool_mux_rpc_connect_cb)(void *arg, uv_stream_t *stream, int status);
int spool_mux_rpc_connect(struct spool_mux *m, const char *address, spool_mux_rpc_connect_cb cb,
                          void *arg, struct spool_mux_connect **handle);
/* Aborts a pending connect: its cb runs soon with UV_ECANCELED (or already succeeded). */
void spool_mux_rpc_connect_cancel(struct spool_mux_connect *c);

/* Splits "host:port" / "[v6]:port" into its parts; returns 0 or SPOOL_EINVAL. */
int spool_mux_split_address(const char *address, char *host, size_t host_size, char *port,
                            size_t port_size);

#endif

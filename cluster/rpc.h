/*
 * Internal RPC between nodes over the cluster port: length-prefixed protobuf-c messages
 * (proto/rpc.proto), one persistent connection per peer (re-dialled on failure), requests
 * matched to replies by id, every call bounded by a timeout and completed exactly once.
 *
 * Frame: u32 length (big endian) | u32 crc32c(payload) | payload (an RpcFrame). A frame over the
 * configured maximum or with a bad checksum closes the connection: the peer is broken.
 * Parser and encoder: cluster/rpc_frame.h.
 *
 * Connections: calls and one-way messages to node N go over this node's own connection to N,
 * dialled lazily on first use (spool_mux_rpc_connect); N answers on that same connection. Frames
 * queue while the connection is being dialled. A failed dial fails the waiting calls with
 * SPOOL_EIO and holds the peer in backoff (50 ms doubling to 2 s): calls made meanwhile wait
 * for the next dial (bounded by their timeout), sends are refused with SPOOL_EIO. A lost
 * connection fails the calls sent on it with SPOOL_EIO; the next call re-dials at once.
 *
 * Callbacks (call completions, requests, messages) always run from the loop, never from inside
 * spool_rpc_call/spool_rpc_send, except spool_rpc_close which completes pending calls with
 * SPOOL_ECLOSED before it returns.
 */
#ifndef SPOOL_CLUSTER_RPC_H
#define SPOOL_CLUSTER_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/transport.h"
#include "common/err.h"

struct spool_rpc;
struct spool_rpc_reply; /* a pending request, to be answered once with spool_rpc_respond() */

/* A request arrived: `body` is valid during the callback only. Answer exactly once with
 * spool_rpc_respond (possibly later; even after spool_rpc_close, which then only frees it). */
typedef void (*spool_rpc_request_cb)(void *arg, uint64_t from_node, uint32_t method,
                                     const void *body, size_t len, struct spool_rpc_reply *reply);
/* A one-way message arrived (spool_rpc_send). */
typedef void (*spool_rpc_message_cb)(void *arg, uint64_t from_node, uint32_t method,
                                     const void *body, size_t len);
/* A call finished: status 0 with the reply body, or SPOOL_ETIMEOUT / SPOOL_EIO / the remote's
 * error code with err->msg set. */
typedef void (*spool_rpc_call_cb)(void *arg, int status, const struct spool_err *err,
                                  const void *body, size_t len);

int spool_rpc_init(struct spool_rpc **out, uv_loop_t *loop, struct spool_mux *mux, uint64_t node_id,
                   size_t max_frame_bytes, spool_rpc_request_cb on_request,
                   spool_rpc_message_cb on_message, void *arg, struct spool_err *err);
/* Fails every pending call with SPOOL_ECLOSED, closes connections, frees; cb may be NULL. */
void spool_rpc_close(struct spool_rpc *r, void (*cb)(void *arg), void *arg);

/* Tells the RPC layer where node `id` listens (from --peers, or learned later). */
int spool_rpc_set_peer(struct spool_rpc *r, uint64_t id, const char *address);

/* Returns 0 (cb will be called exactly once) or, without calling cb: SPOOL_ENOENT (unknown
 * peer), SPOOL_ELIMIT (frame over max_frame_bytes), SPOOL_EBUSY (too many frames queued for
 * the peer), SPOOL_ECLOSED, SPOOL_EIO, SPOOL_ENOMEM. */
int spool_rpc_call(struct spool_rpc *r, uint64_t node_id, uint32_t method, const void *body,
                   size_t len, uint64_t timeout_ms, spool_rpc_call_cb cb, void *arg);
/* Fire-and-forget, in order per peer; dropped (with SPOOL_EIO) if the peer is unreachable. */
int spool_rpc_send(struct spool_rpc *r, uint64_t node_id, uint32_t method, const void *body,
                   size_t len);
/* Answers a request and frees `reply`; status != 0 sends an error with `msg` (may be NULL).
 * Safe after the connection died (the answer is dropped). A body too large for the frame limit
 * is replaced by a SPOOL_ELIMIT error. */
void spool_rpc_respond(struct spool_rpc_reply *reply, int status, const char *msg,
                       const void *body, size_t len);

#endif

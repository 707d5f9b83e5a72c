/*
 * Internal RPC between nodes over the cluster port: length-prefixed protobuf-c messages
 * (proto/rpc.proto), one persistent connection per peer (re-dialled on failure), requests
 * matched to replies by id, every call bounded by a timeout and completed exactly once.
 *
 * Frame: u32 length (big endian) | u32 crc32c(payload) | payload (an RpcFrame). A frame over the
 * configured maximum or with a bad checksum closes the connection: the peer is broken.
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

/* A request arrived: `method` and `body` are the caller's. Answer exactly once (possibly later). */
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

int spool_rpc_call(struct spool_rpc *r, uint64_t node_id, uint32_t method, const void *body,
                   size_t len, uint64_t timeout_ms, spool_rpc_call_cb cb, void *arg);
/* Fire-and-forget, in order per peer; dropped (with SPOOL_EIO) if the peer is unreachable. */
int spool_rpc_send(struct spool_rpc *r, uint64_t node_id, uint32_t method, const void *body,
                   size_t len);
/* Answers a request; status != 0 sends an error with `msg`. Safe after the connection died. */
void spool_rpc_respond(struct spool_rpc_reply *reply, int status, const char *msg,
                       const void *body, size_t len);

#endif

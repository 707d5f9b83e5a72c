/*
 * Ephemeral messages and interrupts over the realtime protocol (docs/ai-semantics.md): typing,
 * progress and "stop" signals that must arrive live but are never stored, so they take no serial
 * and no Raft entry:
 *
 *   > {"type":"ephemeral","channel":"chat:42","name":"typing","data":{...},"msgSerial":7}
 *   > {"type":"interrupt","channel":"chat:42","data":{"reason":"stop"},"msgSerial":8}
 *   < {"type":"ephemeral"|"interrupt","channel":"chat:42","name":..,"data":..,"clientId":..,
 *      "timestamp":..}                         to every other connection attached to the channel
 *   < {"type":"ack","msgSerial":7,"serials":[],"delivered":N}   to the sender
 *
 *   < {"type":"ack","msgSerial":8,"serials":[],"delivered":N,"holder":"agent","epoch":88}
 *   < {"type":"interrupt","channel":..,"to":"turn","holder":"agent","epoch":88,"data":..,...}
 *                                   to the turn holder's connections only, on every node
 *
 * An interrupt is addressed to the channel's turn holder: the node reads the turn at the shard
 * leader, then delivers it only to connections attached to the channel whose client id is the
 * holder (credentials, or ?clientId= on a connection whose credentials carry none); nack 40901
 * when nobody holds the turn.
 *
 * Across nodes: the receiving node also sends the record to every storage node with a one-way
 * cluster RPC (cluster/conversation_ephemeral.c), whose connections get it the same way;
 * gateway-only nodes get it on the long polls that follow the channel for them.
 * Part of the realtime protocol server (uses its internals, gateway/realtime_int.h).
 */
#ifndef SPOOL_GATEWAY_AI_EPHEMERAL_H
#define SPOOL_GATEWAY_AI_EPHEMERAL_H

#include <jansson.h>
#include <stdbool.h>

#include "proto/record.pb-c.h"

struct rt_conn;
struct spool_http_req;
struct spool_principal;

/* nack code of an interrupt when nobody holds the channel's turn (nothing is sent) */
#define SPOOL_RT_ENO_TURN 40901

/* The client id interrupts are addressed to, for a WebSocket connection or an SSE stream: the
 * credentials' own (JWT clientId/sub), else the request's ?clientId= when the credentials carry
 * none (anonymous, API keys), written into p->client_id. 0, or -1 when ?clientId= is empty or
 * longer than SPOOL_CLIENT_ID_MAX (answer 400). */
int spool_ai_query_client_id(const struct spool_http_req *req, struct spool_principal *p);
/* Handles a realtime message of type "ephemeral" or "interrupt" (`interrupt` says which). */
void spool_ai_ephemeral(struct rt_conn *c, json_t *msg, bool interrupt);
/* spool_record_cb for spool_node_set_ephemeral_cb (arg = the struct spool_realtime): an
 * ephemeral record a peer node sent, delivered to this node's attached connections. */
void spool_ai_ephemeral_arrived(void *arg, const Spool__Record *rec);

#endif

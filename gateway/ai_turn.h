/*
 * The turn hand-off endpoint, POST /v1/channels/{channel}/turn (see ai_turn.c and
 * docs/ai-semantics.md). `arg` is the struct spool_http_api.
 */
#ifndef SPOOL_GATEWAY_AI_TURN_H
#define SPOOL_GATEWAY_AI_TURN_H

#include "gateway/http_server.h"

void spool_ai_turn_handle(void *arg, struct spool_http_req *req);

#endif

/*
 * A frontend: everything one event loop needs to serve clients, in front of a node.
 *
 *   REST API (gateway/http_api.h) + realtime WebSocket/SSE (gateway/realtime.h) + Durable
 *   Streams (gateway/durable_streams.h, in front of the router) + CORS (in front of that) + the
 *   HTTP server on --listen
 *
 * spoold runs one frontend per event loop (gateway/workers.h): loop 0's is in front of the
 * process's node, each worker loop's in front of that loop's own gateway-only node. Every
 * frontend of a process listens on the same port (SO_REUSEPORT), registers its metrics in the
 * one registry (gateway/metrics.h: loop 0 the root, workers views of it) and shares a
 * `struct spool_loop_set`, which is what makes the process look like one server:
 *
 *   - /readyz answers 200 only when every loop's node can route (each loop stores its own
 *     node's readiness in the set on a 250 ms tick; a loop's own /readyz handler also checks its
 *     node live), so a load balancer never sends a client to a loop that cannot serve it;
 *   - the same tick refreshes the loop's collector samples (spool_metrics_refresh) so a scrape
 *     answered by any loop covers all of them; a scrape also asks every other loop for a fresh
 *     refresh (uv_async) and waits for it, briefly (gateway/metrics.h), so what it shows is
 *     current, not up to a tick old;
 *   - spool_loop_connections_total{loop} counts the connections each loop served (the first
 *     request of a connection counts it), which shows how the kernel spreads them.
 *
 * Requests that need one place to hold their state go to loop 0: Durable Streams (/v1/stream/...,
 * whose frontend keeps per-stream state in memory: TTL windows, subscription leases) and the
 * admin API (/v1/admin/..., which describes and acts on the process's node). A worker that
 * receives one hands the connection over: it rebuilds the request's bytes (method, target,
 * headers, the body with a Content-Length), takes the socket back from its HTTP server
 * (spool_http_upgrade), and queues descriptor and bytes for loop 0 (uv_async), which adopts them
 * (spool_http_server_adopt_bytes) and serves that connection from then on.
 *
 * With one loop there is no set, no tick and no gate: the frontend is exactly the single-loop
 * gateway spoold always had.
 *
 * Drain (SIGTERM): the HTTP server stops accepting, finishes in-flight requests and ends SSE
 * streams (bounded by --drain-timeout) -> Durable Streams stops -> the realtime WebSocket
 * connections close with 1001 -> cb. The node is the caller's to close afterwards.
 */
#ifndef SPOOL_GATEWAY_FRONTEND_H
#define SPOOL_GATEWAY_FRONTEND_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "cluster/node.h"
#include "common/err.h"
#include "gateway/auth.h"
#include "gateway/cors.h"
#include "gateway/durable_streams.h"
#include "gateway/http_api.h"
#include "gateway/http_router.h"
#include "gateway/http_server.h"
#include "gateway/metrics.h"
#include "gateway/options.h"
#include "gateway/realtime.h"

#define SPOOL_MAX_LOOPS 256

struct spool_handoff; /* a connection on its way to loop 0 */

/* What the loops of one process share across threads. */
struct spool_loop_set {
    unsigned n;                           /* loops, 1..SPOOL_MAX_LOOPS */
    _Atomic bool ready[SPOOL_MAX_LOOPS];  /* each loop's node could route at its last tick */
    _Atomic uint64_t connections;         /* open HTTP connections of all loops, against
                                           * --max-connections (one budget per process) */
    pthread_mutex_t lock;                 /* guards the two below */
    struct spool_handoff *handoffs;       /* queued for loop 0 */
    uv_async_t *to_loop0;                 /* loop 0's handle while it takes them, else NULL */
};
void spool_loop_set_init(struct spool_loop_set *set, unsigned n);
void spool_loop_set_close(struct spool_loop_set *set);

struct spool_frontend {
    uv_loop_t *loop;
    const struct spool_options *opts;
    unsigned index; /* 0: the loop of the process's node; 1..: worker loops */
    struct spool_node *node;
    struct spool_metrics *metrics;
    struct spool_loop_set *set; /* NULL with one loop */
    struct spool_http_router router;
    struct spool_http_api api;
    struct spool_realtime_mount realtime;
    struct spool_ds *ds;
    struct spool_cors cors;
    struct spool_http_server *http;
    spool_http_handler next; /* behind the frontend's own first step */
    void *next_arg;
    struct spool_counter *served; /* spool_loop_connections_total{loop} */
    uv_timer_t tick;
    uv_async_t fresh; /* a scrape on another loop asks for fresh collector samples */
    uv_async_t handoff; /* loop 0: connections handed over by the workers */
    bool ticking, draining;
    void (*drained_cb)(void *arg);
    void *drained_arg;
};

/* Builds the stack on `loop` and listens on `listen` ("host:port"; with a set, SO_REUSEPORT:
 * `join` false for the first loop, which also checks that the port is free, true for the
 * others). On failure the frontend is left for spool_frontend_drain + spool_frontend_free. */
int spool_frontend_start(struct spool_frontend *fe, uv_loop_t *loop, const struct spool_options *o,
                         unsigned index, struct spool_node *node, const struct spool_keyring *keys,
                         struct spool_metrics *metrics, struct spool_loop_set *set,
                         const char *listen, bool join, struct spool_err *err);
/* The port the HTTP server listens on (0 before it does). */
int spool_frontend_port(const struct spool_frontend *fe);
/* Drains as described above; cb runs once, on the loop. Safe after a failed start. */
void spool_frontend_drain(struct spool_frontend *fe, void (*cb)(void *arg), void *arg);
/* Releases what is left once the loop has stopped running. */
void spool_frontend_free(struct spool_frontend *fe);

#endif

/*
 * Presence across node deaths: the members whose connection is on a node that died (kill -9,
 * crash, cut off) leave, written to the channel's log like any leave, while the members on live
 * nodes stay.
 *
 * Who hosts a member: every presence enter/update a gateway publishes is stamped with its node
 * id and its incarnation ("boot": the wall clock in microseconds when the process started), see
 * spool_node_presence_stamp; the shard state machines index the present members by host
 * (cluster/presence_index.h).
 *
 * Liveness: every node (storage or gateway-only) sends a one-way SPOOL_METHOD_PRESENCE_HEARTBEAT
 * (PresenceHeartbeat{boot}) to every storage node every `interval` = presence_node_timeout / 4
 * (50 ms .. 1 s; the first one at start); storage nodes remember, per sender, the boot it last
 * sent and when (their own loop clock). A host (node, boot) is dead for a storage node when
 *   - it is this node with another boot (an earlier incarnation of this process), or
 *   - the node's last heard boot is greater (it restarted: its connections died with it), or
 *   - nothing was heard from the node for presence_node_timeout (a host never heard of is given
 *     the timeout from when the reaper first saw it).
 * A tick that comes late (the loop itself stalled for more than timeout / 2) first treats every
 * peer as heard now: a node that was slow must not declare everybody else dead.
 *
 * Reaping: on every tick, for each shard this node leads, each dead host with members in the
 * shard's index gets its members' leaves proposed (one publish per channel, 256 records at
 * most): conditional leaves (ref_seq = the member's newest presence record, see
 * presence_index.h), so a member that left or re-entered meanwhile stays as it is and no member
 * is left twice even if a leave is proposed again (after a leadership change, or 5 s later
 * when the first attempt's outcome is not in the index yet). presence_node_timeout 0 turns
 * reaping off on this node (heartbeats are still sent, every second).
 *
 * Choosing the timeout: a node is declared dead after presence_node_timeout of silence on the
 * leader's side, so it must exceed the longest loop stall of a healthy node (a slow fsync, a
 * swap storm) plus the network's worst delay; the default equals --presence-timeout (15 s). A
 * node that is alive but cut off from a shard's leader for that long loses its members on that
 * shard; when it comes back they stay removed (its clients re-enter, as after a resume on
 * another node). Every node should use the same value. (A host whose boot is above the last
 * heard one counts as a newer incarnation not heard yet, alive while the node is: so if the wall
 * clock stepped back across a restart, the earlier incarnation's members are only removed once
 * the node is silent.)
 */
#ifndef SPOOL_CLUSTER_PRESENCE_REAPER_H
#define SPOOL_CLUSTER_PRESENCE_REAPER_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/node.h"
#include "common/err.h"
#include "proto/record.pb-c.h"

/* Sets rec->presence_node / presence_boot to this node's (for presence enter and update). */
void spool_node_presence_stamp(const struct spool_node *n, Spool__Record *rec);

/* The liveness state a reaper decides with, separated from the node for unit tests. */
struct spool_presence_peer {
    uint64_t node, boot;
    uint64_t heard_at; /* loop clock, ms */
};

struct spool_presence_liveness {
    uint64_t self, self_boot;
    uint64_t timeout_ms;
    struct spool_presence_peer *peers;
    size_t n, cap;
};

void spool_presence_liveness_init(struct spool_presence_liveness *l, uint64_t self,
                                  uint64_t self_boot, uint64_t timeout_ms);
void spool_presence_liveness_close(struct spool_presence_liveness *l);
/* A heartbeat from `node` (incarnation `boot`) arrived at `now`. 0 or SPOOL_ENOMEM. */
int spool_presence_liveness_heard(struct spool_presence_liveness *l, uint64_t node, uint64_t boot,
                                  uint64_t now);
/* Treats every known peer as heard at `now` (after this node's own loop stalled). */
void spool_presence_liveness_grace(struct spool_presence_liveness *l, uint64_t now);
/* Is host (node, boot) dead at `now`? A node never heard of starts its timeout now. */
bool spool_presence_liveness_dead(struct spool_presence_liveness *l, uint64_t node, uint64_t boot,
                                  uint64_t now);

#endif

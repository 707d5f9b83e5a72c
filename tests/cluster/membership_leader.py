#!/usr/bin/env python3
"""
Removing a node that leads a shard while leader spreading runs (test_membership_leader.sh;
docs/cluster.md "Membership changes", cluster/admin.c).

The driver hands a leaving replica's leadership to a remaining voter before removing it. That
voter then leads one shard more than its fair share, and the leaving node (the shard's home,
leading nothing any more) is exactly where a leader-spreading pass would send it back -- which
undid every hand-over of a CI run whose new leader could not remove the old one within one
--rebalance-interval (ASan, a loaded machine): `node remove` never finished. Here the interval
is 20 ms, shorter than the driver's 200 ms tick, so without the rule "never to a replica a
running change takes out of the shard" the leadership goes back on nearly every hand-over.

  1. three nodes, 3 shards x 2 replicas (epoch-1 homes: shard s on node s+1), leaders spread
     so node 2 leads shard 1 (replicas [2, 3]) and node 3 leads shard 2;
  2. `spoolctl node remove 2` completes within its 30 s timeout; no node.rebalance line names
     node 2 as a target after it was accepted; node 2 is gone from the map and every shard has
     2 replicas; publishes to every shard are acknowledged through nodes 1 and 3.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import log, with_cluster  # noqa: E402
from membership import (MNode, QUIET, REPLICAS, SHARDS, cluster_status, print_events,  # noqa: E402
                        publish_quiet, replicas_of, spoolctl)

GONE = 2


class FastRebalanceNode(MNode):
    rebalance = "20ms"


def leaders(cluster):
    """Each shard's leader as its home node (a replica) sees it."""
    return {s: next(x.get("leader") for x in cluster_status(cluster.nodes[s + 1])["shards"]
                    if x["id"] == s) for s in range(SHARDS)}


def run(cluster):
    t0 = time.time()
    cluster.nodes = {i: FastRebalanceNode(cluster, i) for i in (1, 2, 3)}
    cluster.peers = ",".join("%d@%s:%d" % (n.id, n.host, n.cport) for n in cluster.nodes.values())
    cluster.start()
    homes = {s: s + 1 for s in range(SHARDS)}
    deadline = time.time() + 30
    while leaders(cluster) != homes and time.time() < deadline:
        time.sleep(0.05)
    assert leaders(cluster) == homes, "leaders not spread: %r" % leaders(cluster)
    publish_quiet(cluster, "before", via=(1, 3))
    offsets = {n.id: os.path.getsize(n.stderr_path) for n in cluster.nodes.values()}

    t1 = time.time()
    r = spoolctl(cluster.nodes[1], "--timeout", "30", "node", "remove", str(GONE), timeout=60)
    took = time.time() - t1
    back = []
    for n in cluster.nodes.values():
        with open(n.stderr_path, errors="replace") as f:
            f.seek(offsets[n.id])
            back += [ln.strip() for ln in f
                     if "event=node.rebalance " in ln and (" to=%d " % GONE) in ln]
    assert not back, "leadership given back to the leaving node %d: %s" % (GONE, back[:5])
    assert r.returncode == 0, "node remove failed"
    body = cluster_status(cluster.nodes[1])
    placement = replicas_of(body)
    assert GONE not in [n["id"] for n in body["nodes"]], "node %d still listed" % GONE
    assert all(GONE not in ids and len(ids) == REPLICAS for ids in placement.values()), placement
    log("remove of node %d (leading shard 1) took %.1fs; placement %r" % (GONE, took, placement))
    publish_quiet(cluster, "after", via=(1, 3))
    for n in cluster.nodes.values():
        assert n.stop() == 0, "node %d did not stop cleanly" % n.id
    log("ok: %.1fs in all" % (time.time() - t0))


def run_reporting(cluster):
    try:
        run(cluster)
    except BaseException:
        print_events(cluster)
        raise


if __name__ == "__main__":
    with_cluster("spool-membership-leader-", run_reporting)
    print("membership_leader: 1 passed, 0 failed")

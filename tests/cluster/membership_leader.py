#!/usr/bin/env python3
"""
Removing a node that leads a shard while leader spreading runs (test_membership_leader.sh;
docs/cluster.md "Membership changes", cluster/admin.c).

The driver hands a leaving replica's leadership to a remaining voter before removing it. That
voter then leads one shard more than its fair share, and the leaving node (often the home,
leading nothing any more) is exactly where a leader-spreading pass would send it back -- which
undid every hand-over of a CI run whose new leader could not remove the old one within one
--rebalance-interval (ASan, a loaded machine): `node remove` never finished. Here the interval
is 20 ms, shorter than the driver's 200 ms tick, so without the rule "never to a replica a
running change takes out of the shard" the leadership goes back on nearly every hand-over.

The node removed is the one after the metadata leader M (gone = M % 3 + 1); the one shard M does
not hold is on the two others, gone included, so M (the driver) is its incoming replica.
M opens that replica empty and learns no leader from it until the leader adds it; the driver
must still find the leader (it asks the map's replicas; it used to wait for an election that
was not running, forever).

  1. three nodes, 3 shards x 2 replicas (epoch-1: shard s on [s+1, (s+1) % 3 + 1], its home
     first), leaders spread so every node leads one shard (its home or not: either way a pass
     on the voter that receives the leaving node's leadership would pick the leaving node, which
     then leads the fewest);
  2. `spoolctl node remove <gone>` completes within its 30 s timeout; no node.rebalance line
     names the leaving node as a target after it was accepted; it is gone from the map and every
     shard has 2 replicas; publishes to every shard are acknowledged (through the third node,
     before and after: the metadata leader gets no leader hint from forwarding them).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import log, with_cluster  # noqa: E402
from membership import (MNode, REPLICAS, SHARDS, cluster_status, print_events,  # noqa: E402
                        publish_quiet, replicas_of, spoolctl)


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
    deadline = time.time() + 30
    while sorted(leaders(cluster).values(), key=str) != [1, 2, 3] and time.time() < deadline:
        time.sleep(0.05)
    led = leaders(cluster)
    assert sorted(led.values(), key=str) == [1, 2, 3], "leaders not spread: %r" % led
    meta = cluster_status(cluster.nodes[1])["membership"]["metaLeader"]
    assert meta in (1, 2, 3), "metadata leader: %r" % meta
    gone = meta % 3 + 1
    third = 6 - meta - gone
    publish_quiet(cluster, "before", via=(third,))
    offsets = {n.id: os.path.getsize(n.stderr_path) for n in cluster.nodes.values()}

    t1 = time.time()
    log("removing node %d (leaders %r; metadata leader %d)" % (gone, led, meta))
    r = spoolctl(cluster.nodes[third], "--timeout", "30", "node", "remove", str(gone), timeout=60)
    took = time.time() - t1
    back = []
    for n in cluster.nodes.values():
        with open(n.stderr_path, errors="replace") as f:
            f.seek(offsets[n.id])
            back += [ln.strip() for ln in f
                     if "event=node.rebalance " in ln and (" to=%d " % gone) in ln]
    assert not back, "leadership given back to the leaving node %d: %s" % (gone, back[:5])
    assert r.returncode == 0, "node remove failed"
    body = cluster_status(cluster.nodes[third])
    placement = replicas_of(body)
    assert gone not in [n["id"] for n in body["nodes"]], "node %d still listed" % gone
    assert all(gone not in ids and len(ids) == REPLICAS for ids in placement.values()), placement
    log("remove took %.1fs; placement %r" % (took, placement))
    publish_quiet(cluster, "after", via=(third,))
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

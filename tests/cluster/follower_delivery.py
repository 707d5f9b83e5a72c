#!/usr/bin/env python3
"""
Live delivery on follower replica nodes while the shard leadership moves.

A subscriber on a node whose replica of the channel's shard FOLLOWS is fed twice (see
cluster/subscription.c): by its local state machine and by a long-poll chain parked on the
leader, which stops while that node leads and starts again when it no longer does. This drives
exactly the moves that switch those feeders on and off, under a steady publish load:

  1. two SSE subscribers, each pinned to one of the two follower nodes of the channel's shard
     (one stream each from the start: never reconnected, never resumed);
  2. kill -9 of the shard's leader: one follower becomes leader (its chain stops), the other
     follows the new leader;
  3. the killed node restarts; leader spreading (every 2 s here) may hand shards back to it;
  4. SIGSTOP of the leader of the moment until the others elect, then SIGCONT: when that was a
     subscriber's node, it comes back as a follower and must start its chain again (its
     subscriber's stream simply stalls during the pause);
  5. a graceful restart of the first killed node (SIGTERM hands over what it leads by then).

The check (not timed): each subscriber's single stream holds exactly the channel's log as
every replica stores it on disk - every record once, in order, dense serials - and the channel
holds every acknowledged publish. Since the SSE layer itself drops a repeated serial and fills a
gap from history, the topic below it is checked too: on each subscriber node it fanned out
exactly as many records as the log holds, and no attach.live_gap was logged.
"""
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402
import sse  # noqa: E402

CHANNEL = faults.CHANNELS[0]
STEP_ACKS = 120


class PinnedSubscriber(sse.Stream):
    """One SSE stream of CHANNEL on one node, from the start, never reconnected."""

    def __init__(self, node):
        # A hang guard, not part of the check: the stream of a SIGSTOPped node is silent for the
        # whole pause, which lasts until 30 more publishes are acknowledged (bounded at 30 s;
        # over 10 s seen when publishes routed through gateway loops wait out the stopped
        # leader).
        super().__init__(node, CHANNEL, timeout=45)


class Publisher(threading.Thread):
    """Publishes CHANNEL one message at a time through any live node; same id on every retry."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acked = {}
        self.sent = set()
        self.stop_flag = threading.Event()
        self.rng = random.Random(7)

    def run(self):
        i = 0
        end = time.time() + 120
        avoid = {}  # like a client with failover: a node that just timed out, for a while
        while not self.stop_flag.is_set() and time.time() < end:
            mid = "fd-%d" % i
            self.sent.add(mid)
            while not self.stop_flag.is_set() and time.time() < end:
                live = [n for n in self.cluster.any_live() if avoid.get(n.id, 0) < time.time()]
                node = self.rng.choice(live) if live else None
                try:
                    st, body = faults.http("POST", "%s/v1/channels/%s/messages" % (node.url, CHANNEL),
                                           {"id": mid, "data": i}, timeout=2.0) if node else (0, None)
                except OSError:
                    st, body = 0, None
                    avoid[node.id] = time.time() + 3.0
                if st in (200, 201) and isinstance(body, dict):
                    self.acked[mid] = int(body["serials"][0])
                    break
                time.sleep(0.02)
            i += 1
            # Light load: gaps of a few ms up to a heartbeat, where a follower is slowest.
            time.sleep(self.rng.uniform(0, 0.02))

    def wait(self, n, bound, what):
        deadline = time.time() + bound
        while time.time() < deadline and len(self.acked) < n:
            time.sleep(0.02)
        assert len(self.acked) >= n, "%s: %d of %d publishes acknowledged within %ds" % (
            what, len(self.acked), n, bound)


def fanout_count(node):
    """How many records the node's topics handed to their subscribers (the fan-out observer's
    spool_publish_deliver_seconds histogram counts one per record per node)."""
    st, body = faults.http("GET", node.url + "/metrics", timeout=5.0)
    assert st == 200, "metrics of node %d: HTTP %d" % (node.id, st)
    text = body.decode() if isinstance(body, bytes) else str(body)
    for line in text.splitlines():
        if line.startswith("spool_publish_deliver_seconds_count"):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def wait_leader(cluster, bound=20.0):
    """The node leading CHANNEL's shard, once a live node reports one (bounded)."""
    deadline = time.time() + bound
    while time.time() < deadline:
        leader, _ = cluster.leader_of(CHANNEL)
        if leader and cluster.nodes[leader].alive():
            return leader
        time.sleep(0.05)
    raise AssertionError("no leader of %s reported within %.0fs" % (CHANNEL, bound))


def check(cluster):
    cluster.start()
    leader = wait_leader(cluster)
    shard = cluster.leader_of(CHANNEL)[1]
    followers = [n for n in cluster.nodes.values() if n.id != leader]
    subs = [PinnedSubscriber(n) for n in followers]
    for s in subs:
        s.start()
        assert s.opened.wait(10) and s.ended is None, "subscribe on node %d: %s" % (s.node.id, s.ended)
    faults.log("follower-delivery: %s on shard %d led by node %d; subscribers on nodes %s" % (
        CHANNEL, shard, leader, [n.id for n in followers]))
    pub = Publisher(cluster)
    pub.start()
    moves = []
    try:
        pub.wait(STEP_ACKS, 30, "before the faults")
        faults.log("follower-delivery: kill -9 node %d (the leader)" % leader)
        cluster.nodes[leader].kill9()
        pub.wait(2 * STEP_ACKS, 30, "after killing the leader")
        moves.append(wait_leader(cluster))
        cluster.nodes[leader].start()
        cluster.wait_ready()
        pub.wait(3 * STEP_ACKS, 30, "after restarting node %d" % leader)
        current = wait_leader(cluster)
        moves.append(current)
        # The pause is the fault (the others must elect), not synchronisation: it lasts until
        # publishes are acknowledged again, bounded.
        faults.log("follower-delivery: SIGSTOP node %d (the leader now) until the others elect"
                   % current)
        cluster.nodes[current].signal(signal.SIGSTOP)
        try:
            pub.wait(3 * STEP_ACKS + 30, 30, "while node %d was stopped" % current)
        finally:
            cluster.nodes[current].signal(signal.SIGCONT)
        pub.wait(4 * STEP_ACKS, 30, "after SIGCONT")
        moves.append(wait_leader(cluster))
        faults.log("follower-delivery: graceful restart of node %d again (hands over what it leads)"
                   % leader)
        assert cluster.nodes[leader].stop() == 0
        cluster.nodes[leader].start()
        cluster.wait_ready()
        pub.wait(5 * STEP_ACKS, 30, "after restarting node %d again" % leader)
        moves.append(wait_leader(cluster))
    finally:
        pub.stop_flag.set()
        pub.join(30)
    cluster.wait_converged()
    want = faults.last_serials(cluster).get(CHANNEL, 0)
    deadline = time.time() + 20
    while time.time() < deadline and any(s.last < want for s in subs if s.ended is None):
        time.sleep(0.05)
    for s in subs:
        s.stop_flag.set()
    for s in subs:
        s.join(15)
    faults.log("follower-delivery: leaders after each move %s; subscribers at %s; %d acknowledged" % (
        moves, [s.last for s in subs], len(pub.acked)))
    fanned = {s.node.id: fanout_count(s.node) for s in subs}
    cluster.stop_all()

    stored = cluster.dump()
    logs = [recs.get(CHANNEL, []) for recs in stored.values()]
    ref = logs[0]
    assert all(x == ref for x in logs), "replicas differ on %s" % CHANNEL
    assert [s for s, _ in ref] == list(range(1, len(ref) + 1)), "serials not dense"
    by_id = dict((i, s) for s, i in ref)
    assert len(by_id) == len(ref), "a message stored twice"
    for mid, serial in pub.acked.items():
        assert by_id.get(mid) == serial, "acknowledged %s (serial %d) stored as %r" % (
            mid, serial, by_id.get(mid))
    for s in subs:
        assert s.ended is None, "node %d: %s" % (s.node.id, s.ended)
        assert not s.errors, "node %d: %s" % (s.node.id, s.errors[:3])
        first_diff = next((k for k, (a, b) in enumerate(zip(s.got, ref)) if a != b),
                          min(len(s.got), len(ref)))
        assert s.got == ref, "node %d: the subscriber got %d events, the log has %d (first difference at %d)" % (
            s.node.id, len(s.got), len(ref), first_diff)
        # Below the SSE layer (gateway/attach.c drops a repeated serial and fills a gap from
        # history, which would hide either): the node's topic handed each record to its fan-out
        # exactly once (the observer counts each record the topic delivers), and never skipped one.
        assert fanned[s.node.id] == len(ref), \
            "node %d: its topic fanned out %r records, the log has %d" % (
                s.node.id, fanned[s.node.id], len(ref))
        with open(s.node.stderr_path, errors="replace") as f:
            gaps = [line for line in f if "attach.live_gap" in line]
        assert not gaps, "node %d: the live feed skipped records: %s" % (s.node.id, gaps[:2])
    faults.log("follower-delivery: ok: both follower-node subscribers received the %d records of "
               "%s exactly once, in order, on one stream each" % (len(ref), CHANNEL))


if __name__ == "__main__":
    faults.with_cluster("spool-followers-", check)
    print("1 passed, 0 failed")

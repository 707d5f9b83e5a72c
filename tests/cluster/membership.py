#!/usr/bin/env python3
"""
Membership changes under publish load (docs/cluster.md "Membership changes"), driven by
test_membership.sh. Reuses faults.py's Cluster / Node / Load / verify.

  1. three nodes, 3 shards x 2 replicas, publishers with unique ids on several channels;
  2. a fourth node starts with --join; `spoolctl node add 4@...` returns once the change is
     complete; node 4 then holds replicas (status) and has applied what its shards' leaders have;
  3. `spoolctl node remove 1` under the same load: every replica leaves node 1, which ends up
     holding none (its shard directories are deleted) and is no longer listed;
  4. publishes are accepted again; node 4 is restarted on its data directory and rejoins;
  5. stop everything, read every store with spool-dump: every acknowledged message is present
     exactly once, in the same order, on every replica of its shard (faults.verify), and each
     channel is on exactly `replicas` nodes -- the ones the final map names.
  Meanwhile (steps 2-3) SSE subscribers on nodes 1-3, one stream each per channel, never
  reconnected, to a loaded and to a quiet channel of every shard (the quiet ones get a few
  messages only between the steps, so a replica -- maybe the leader's -- leaves while idle):
  after each step every stream (on the remaining members) reaches the last acknowledged serial
  within a bounded wait (a topic left without a feeder stalls: cluster/subscription.c), each
  holds exactly a prefix of its channel's log, and no attach.live_gap was logged (the SSE layer
  would hide a skipped record by filling it from history).

Third scenario (run_grow): a single node (--peers ""), a second one added (every shard goes
from 1 to 2 replicas: add-only moves; a second change while it runs is refused with 409), then
the first removed (2 to 1): all data moved to a new machine under load, checked the same way.

Second scenario (run_dead): 3 nodes x 3 replicas, node 3 killed with -9 under load, then
`spoolctl node remove 3` (a dead node: its shards keep a majority, so they shrink to the two
live replicas), publishes accepted, the same final checks on the two remaining nodes.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402
from faults import Cluster, Load, Node, http, log, recovered_within, verify, with_cluster  # noqa: E402
from sse import Stream  # noqa: E402  (one stream per channel per node, never reconnected)

SHARDS, REPLICAS = 3, 2
SPOOLCTL = os.path.join(faults.BUILD, "spoolctl")


def shard_of(channel):
    """cluster/placement.c: FNV-1a 64 -> slot of 4096 -> slot % shards (the epoch-1 map)."""
    h = 0xcbf29ce484222325
    for b in channel.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h % 4096 % SHARDS


def channels_on_every_shard(per_shard=2):
    got, i = {s: [] for s in range(SHARDS)}, 0
    while min(len(v) for v in got.values()) < per_shard:
        c = "mem-%d" % i
        if len(got[shard_of(c)]) < per_shard:
            got[shard_of(c)].append(c)
        i += 1
    return sorted(c for v in got.values() for c in v)


# Load and verify read faults.CHANNELS: publish to every shard, so every move is under load.
faults.CHANNELS = channels_on_every_shard()
# Live subscribers across the moves (run): one loaded channel per shard, and one quiet channel
# per shard (published to only between the steps, so a replica leaves while it is idle).
QUIET = sorted({shard_of("quiet-%d" % i): "quiet-%d" % i for i in range(64)}.values())
LOADED = [next(c for c in faults.CHANNELS if shard_of(c) == s) for s in range(SHARDS)]
assert len(QUIET) == SHARDS


class MNode(Node):
    """A faults.Node with this test's shape (3 shards x 2 replicas) and optionally --join."""

    join = False
    replicas = REPLICAS
    peers = None  # default: the cluster's --peers
    rebalance = "2s"  # --rebalance-interval (membership_leader.py: much shorter)

    def start(self):
        args = [faults.SPOOLD, "--id", str(self.id), "--listen", "%s:%d" % (self.host, self.port),
                "--cluster-listen", "%s:%d" % (self.host, self.cport), "--peers",
                self.cluster.peers if self.peers is None else self.peers,
                "--data", self.data, "--shards", str(SHARDS), "--replicas", str(self.replicas),
                "--anonymous", "--election-timeout", "1000", "--heartbeat-interval", "1s",
                "--rebalance-interval", self.rebalance, "--log-level", "info",
                # small snapshots: a replica added after the first few hundred entries is filled
                # by InstallSnapshot (the store's own stream), not only by AppendEntries
                "--snapshot-threshold", "64", "--snapshot-trailing", "64"]
        if self.join:
            args.append("--join")
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.stderr)


def publish_quiet(cluster, tag, via=(2, 3), count=3):
    """`count` messages to each quiet channel through the nodes `via`; {channel: last serial}."""
    out = {}
    for channel in QUIET:
        for i in range(count):
            for attempt in range(100):
                node = cluster.nodes[via[attempt % len(via)]]
                try:
                    st, body = http("POST", "%s/v1/channels/%s/messages" % (node.url, channel),
                                    {"id": "%s-%s-%d" % (channel, tag, i), "data": i}, timeout=2.0)
                except OSError:
                    st, body = None, None
                if st in (200, 201) and isinstance(body, dict):
                    out[channel] = int(body["serials"][0])
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("publish to %s not acknowledged (%s)" % (channel, tag))
    return out


def wait_streams(streams, want, what, bound=15.0):
    """Each stream reaches want[channel] within the bound: a topic left without a feeder stalls
    (the SSE layer fills gaps from history only when a later record arrives)."""
    deadline = time.time() + bound
    while time.time() < deadline and any(s.last < want[s.channel] for s in streams if s.ended is None):
        time.sleep(0.05)
    for s in streams:
        assert s.ended is None, "%s: node %d stream of %s: %s" % (what, s.node.id, s.channel, s.ended)
        assert s.last >= want[s.channel], "%s: node %d stream of %s stalled at %d (want %d)" % (
            what, s.node.id, s.channel, s.last, want[s.channel])


def acked_serials(load):
    with load.lock:
        vals = list(load.acked.values())
    out = {}
    for channel, serial in vals:
        out[channel] = max(out.get(channel, 0), serial)
    return out


def check_streams(streams, dump, nodes):
    """Every stream holds a prefix of its channel's log exactly (each record once, in order),
    and no topic below the SSE layer skipped a record (no attach.live_gap)."""
    for s in streams:
        ref = next((recs[s.channel] for recs in dump.values() if s.channel in recs), [])
        assert not s.errors, "node %d stream of %s: %s" % (s.node.id, s.channel, s.errors[:3])
        assert s.got == ref[:len(s.got)], "node %d stream of %s differs from the log" % (
            s.node.id, s.channel)
    for n in nodes:
        text = open(n.stderr_path, errors="replace").read()
        assert "attach.live_gap" not in text, "node %d: a live topic skipped records" % n.id


def spoolctl(node, *args, timeout=90):
    r = subprocess.run([SPOOLCTL, "--server", "%s:%d" % (node.host, node.port)] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    log("spoolctl %s -> %d: %s%s" % (" ".join(args), r.returncode, r.stdout.strip(),
                                     (" / " + r.stderr.strip()) if r.stderr.strip() else ""))
    return r


def cluster_status(node):
    status, body = http("GET", node.url + "/v1/admin/cluster", timeout=5.0)
    assert status == 200, "admin/cluster answered %s" % status
    return body


def replicas_of(body):
    return {s["id"]: list(s["replicas"]) for s in body["shards"]}


def wait_replicas_converged(cluster, placement, bound=30.0):
    """Every replica of every shard has applied the same index (node /metrics)."""
    deadline = time.time() + bound
    last = None
    while time.time() < deadline:
        views = {n.id: cluster.applied(n) for n in cluster.any_live()}
        ok = True
        last = {}
        for shard, ids in placement.items():
            got = [views.get(i, {}).get(shard) for i in ids]
            last[shard] = got
            ok &= None not in got and len(set(got)) == 1
        if ok:
            return last
        time.sleep(0.1)
    raise AssertionError("replicas did not converge within %.0fs: %r" % (bound, last))


def wait_healthy(node, bound=30.0):
    deadline = time.time() + bound
    while time.time() < deadline:
        try:
            if http("GET", node.url + "/healthz", timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        assert node.alive(), "node %d exited" % node.id
        time.sleep(0.05)
    raise AssertionError("node %d not up within %.0fs" % (node.id, bound))


def check_final(cluster, load, scenario, placement, replicas):
    """Stops the cluster; faults.verify; every channel on exactly the replicas the map names."""
    conv = wait_replicas_converged(cluster, placement)
    log("%s: converged: %r" % (scenario, conv))
    cluster.stop_all()
    verify(cluster, load, scenario)
    dump = cluster.dump()
    for channel in faults.CHANNELS:
        holders = sorted(nid for nid, recs in dump.items() if channel in recs)
        if not holders:
            continue
        assert len(holders) == replicas, "%s held by %r" % (channel, holders)
        assert any(sorted(ids) == holders for ids in placement.values()), \
            "%s held by %r, not a replica set of %r" % (channel, holders, placement)
    return dump


def run_dead(cluster):
    t0 = time.time()
    cluster.nodes = {i: MNode(cluster, i) for i in (1, 2, 3)}
    for n in cluster.nodes.values():
        n.replicas = 3
    cluster.peers = ",".join("%d@%s:%d" % (n.id, n.host, n.cport) for n in cluster.nodes.values())
    cluster.start()
    load = Load(cluster, publishers=4, per_publisher=100000, max_seconds=60.0)
    load.start()
    try:
        assert load.wait_acks(200, 30), "dead: no load before the fault"
        cluster.nodes[3].kill9()
        log("dead: node 3 killed with -9")
        ok, took = recovered_within(load, 10.0)
        assert ok, "dead: no progress with node 3 down"
        admin = cluster.nodes[1]
        r = spoolctl(admin, "--timeout", "60", "node", "remove", "3")
        assert r.returncode == 0, "dead: node remove 3 failed"
        body = cluster_status(admin)
        placement = replicas_of(body)
        assert [n["id"] for n in body["nodes"]] == [1, 2], body["nodes"]
        assert all(sorted(ids) == [1, 2] for ids in placement.values()), placement
        ok, took = recovered_within(load, 10.0)
        assert ok, "dead: publishes not accepted after the remove"
        log("dead: removed (%.1fs); publishes accepted %.2fs later" % (time.time() - t0, took))
    finally:
        load.finish()
    del cluster.nodes[3]  # dead, with an old copy of its shards: not a replica any more
    check_final(cluster, load, "dead-node-remove", placement, 2)
    log("dead: ok, %.1fs in all" % (time.time() - t0))


def run_grow(cluster):
    t0 = time.time()
    first = MNode(cluster, 1)
    first.peers = ""  # a single node: its own cluster address is the whole cluster
    cluster.nodes = {1: first}
    cluster.start()
    second = MNode(cluster, 2)
    second.join = True
    second.peers = "1@%s:%d" % (first.host, first.cport)
    second.start()
    cluster.nodes[2] = second
    wait_healthy(second)
    load = Load(cluster, publishers=3, per_publisher=100000, max_seconds=60.0)
    load.start()
    try:
        assert load.wait_acks(100, 30), "grow: no load"
        # Accepted without waiting; a second change meanwhile is refused (one at a time).
        r = spoolctl(first, "--timeout", "0", "node", "add", "2@%s:%d" % (second.host, second.cport))
        assert r.returncode == 0, "grow: node add failed"
        r = spoolctl(second, "node", "remove", "1")
        assert r.returncode == 1 and "in progress" in r.stderr, "grow: a second change was not refused"
        deadline, moving = time.time() + 60, set()
        while time.time() < deadline:
            body = cluster_status(first)
            moving |= {tuple(s["movingTo"]) for s in body["shards"] if "movingTo" in s}
            if body["membership"]["state"] == "idle" and 2 in [n["id"] for n in body["nodes"]]:
                break
            time.sleep(0.1)
        assert moving == {(1, 2)}, "grow: status showed targets %r while adding" % moving
        placement = replicas_of(cluster_status(first))
        assert all(sorted(ids) == [1, 2] for ids in placement.values()), placement
        assert load.wait_acks(load.acked_count() + 100, 20), "grow: no progress after the add"
        r = spoolctl(second, "--timeout", "60", "node", "remove", "1")
        assert r.returncode == 0, "grow: node remove failed"
        placement = replicas_of(cluster_status(second))
        assert all(ids == [2] for ids in placement.values()), placement
        ok, took = recovered_within(load, 10.0)
        assert ok, "grow: publishes not accepted after the remove"
    finally:
        load.finish()
    assert first.stop() == 0, "grow: node 1 did not stop cleanly"
    left = [d for d in os.listdir(first.data) if d.startswith("shard-")]
    assert not left, "grow: node 1 kept replica data: %r" % left
    check_final(cluster, load, "grow-then-move", placement, 1)
    log("grow: ok, %.1fs in all" % (time.time() - t0))


def run(cluster):
    t0 = time.time()
    cluster.nodes = {i: MNode(cluster, i) for i in (1, 2, 3)}
    cluster.peers = ",".join("%d@%s:%d" % (n.id, n.host, n.cport) for n in cluster.nodes.values())
    cluster.start()
    new = MNode(cluster, 4)
    new.join = True
    new.start()
    cluster.nodes[4] = new  # clean-up covers it; publishers may go through it (it forwards)
    wait_healthy(new)
    assert not new.ready(), "a joining node must not be ready before it is added"
    # Live SSE subscribers on the original nodes, kept through the add and the remove: each of
    # nodes 1-3 loses a replica to node 4 or gains one from the removed node meanwhile.
    streams = [Stream(cluster.nodes[i], c) for i in (1, 2, 3) for c in LOADED + QUIET]
    for st in streams:
        st.start()
        assert st.opened.wait(10) and st.ended is None, "subscribe: %s" % st.ended
    quiet = publish_quiet(cluster, "before")
    before = replicas_of(cluster_status(cluster.nodes[2]))
    leaders = {shard_of(c): cluster.leader_of(c)[0] for c in QUIET}

    load = Load(cluster, publishers=4, per_publisher=100000, max_seconds=70.0)
    load.start()
    try:
        assert load.wait_acks(200, 30), "no load before the change"
        wait_streams(streams, dict(quiet, **acked_serials(load)), "before the add")
        admin = cluster.nodes[2]

        # --- add node 4 under load ---
        r = spoolctl(admin, "--timeout", "60", "node", "add", "4@%s:%d" % (new.host, new.cport))
        assert r.returncode == 0, "node add failed"
        body = cluster_status(admin)
        placement = replicas_of(body)
        held = [s for s, ids in placement.items() if 4 in ids]
        assert 4 in [n["id"] for n in body["nodes"]], "node 4 not listed after add"
        assert held, "node 4 holds no replica after add: %r" % placement
        assert body["membership"]["state"] == "idle", body["membership"]
        assert all(len(ids) == REPLICAS for ids in placement.values()), placement
        log("add: node 4 holds shards %r; placement %r (%.1fs)" % (held, placement, time.time() - t0))
        assert load.wait_acks(load.acked_count() + 200, 20), "no progress after the add"
        wait_healthy(new)
        deadline = time.time() + 20
        while not new.ready() and time.time() < deadline:
            time.sleep(0.05)
        assert new.ready(), "node 4 not ready after being added"
        lost = [(i, sh) for sh, ids in before.items() for i in ids if i not in placement[sh]]
        log("add: replicas moved off %r (shard leaders before: %r)" % (lost, leaders))
        assert lost and all(i in (1, 2, 3) for i, _ in lost), lost
        quiet = publish_quiet(cluster, "added")
        wait_streams(streams, dict(quiet, **acked_serials(load)), "after the add")

        # --- remove an original node under load: the metadata group's leader, so its
        # leadership (and the rest of the change) moves on while it leaves ---
        gone = cluster_status(admin)["membership"]["metaLeader"]
        if gone not in (1, 2, 3):
            gone = 1
        admin = cluster.nodes[2 if gone != 2 else 3]
        log("removing node %d (metadata leader: %r)" % (gone, cluster_status(admin)["membership"]["metaLeader"]))
        log("shard leaders before the remove: %r" % {shard_of(c): cluster.leader_of(c)[0] for c in QUIET})
        r = spoolctl(admin, "--timeout", "60", "node", "remove", str(gone))
        assert r.returncode == 0, "node remove failed"
        body = cluster_status(admin)
        placement = replicas_of(body)
        assert gone not in [n["id"] for n in body["nodes"]], "node %d still listed" % gone
        assert all(gone not in ids for ids in placement.values()), placement
        deadline = time.time() + 10
        while cluster_status(admin)["membership"]["metaLeader"] in (None, gone) and time.time() < deadline:
            time.sleep(0.05)
        leader = cluster_status(admin)["membership"]["metaLeader"]
        assert leader not in (None, gone), "metadata leader after the remove: %r" % leader
        assert all(len(ids) == REPLICAS for ids in placement.values()), placement
        log("remove: placement %r (%.1fs)" % (placement, time.time() - t0))
        ok, took = recovered_within(load, 10.0)
        assert ok, "publishes not accepted after the remove"
        log("publishes accepted %.2fs after the remove" % took)
        # Including the streams on the removed node, which still runs (as a gateway): all its
        # replicas left, one of them while it led the shard.
        quiet = publish_quiet(cluster, "removed", [i for i in (1, 2, 3) if i != gone])
        wait_streams(streams, dict(quiet, **acked_serials(load)), "after the remove")
        for st in streams:
            st.stop()
        log("streams: %r" % sorted((st.node.id, st.channel, st.last) for st in streams))

        # --- restart the added node: it rejoins with its data ---
        assert new.stop() == 0, "node 4 did not stop cleanly"
        new.start()
        deadline = time.time() + 30
        while not new.ready() and time.time() < deadline:
            time.sleep(0.05)
        assert new.ready(), "node 4 did not rejoin after a restart"
        assert load.wait_acks(load.acked_count() + 100, 20), "no progress after node 4 rejoined"
        log("node 4 restarted and rejoined (%.1fs)" % (time.time() - t0))
        # An original node whose replicas are no longer what --peers implies restarts on its
        # data directory and follows the map, not its flags (cluster/replicas.c epoch mark).
        epoch1 = {s: [1 + (s + i) % 3 for i in range(REPLICAS)] for s in range(SHARDS)}
        moved = [i for i in (1, 2, 3) if i != gone and
                 sorted(s for s, ids in placement.items() if i in ids) !=
                 sorted(s for s, ids in epoch1.items() if i in ids)]
        if moved:
            node = cluster.nodes[moved[0]]
            assert node.stop() == 0, "node %d did not stop cleanly" % node.id
            node.start()
            deadline = time.time() + 30
            while not node.ready() and time.time() < deadline:
                time.sleep(0.05)
            assert node.ready(), "node %d did not come back" % node.id
            assert replicas_of(cluster_status(node)) == placement, "node %d sees another map" % node.id
            assert load.wait_acks(load.acked_count() + 100, 20), "no progress after the restart"
            log("node %d (replicas moved) restarted and follows the map (%.1fs)" % (node.id, time.time() - t0))
    finally:
        load.finish()

    removed = cluster.nodes[gone]
    assert removed.stop() == 0, "the removed node did not stop cleanly"
    left = [d for d in os.listdir(removed.data) if d.startswith("shard-")]
    assert not left, "the removed node kept replica data: %r" % left
    dump = check_final(cluster, load, "membership", placement, REPLICAS)
    check_streams(streams, dump, [cluster.nodes[i] for i in (1, 2, 3)])
    new_held = sum(len(recs) for recs in dump.get(4, {}).values())
    assert new_held > 0, "node 4 holds no record"
    log("ok: node 4 holds %d records; %.1fs in all" % (new_held, time.time() - t0))


# On a failure: every node's membership driver and shard reconfiguration lines (the metadata
# leader's membership.waiting names the stalled shard and the last answer), not only log tails.
EVENTS = ("event=membership.", "event=shard.reconfigure", "event=shard.moved",
          "event=shard.transferred", "event=shard.move_refused", "event=node.rebalance ",
          "event=meta.")


def print_events(cluster, last=60):
    for n in cluster.nodes.values():
        try:
            lines = [ln for ln in open(n.stderr_path, errors="replace") if any(e in ln for e in EVENTS)]
        except OSError:
            continue
        sys.stdout.write("--- node %d membership/reconfigure events (last %d of %d) ---\n" %
                         (n.id, min(last, len(lines)), len(lines)))
        sys.stdout.write("".join(lines[-last:]))


def run_reporting(cluster):
    try:
        run(cluster)
        if os.environ.get("SPOOL_TEST_EVENTS"):  # also on success (timings, busy answers)
            print_events(cluster, 400)
    except BaseException:
        print_events(cluster)
        raise


if __name__ == "__main__":
    with_cluster("spool-membership-", run_reporting)
    with_cluster("spool-membership-dead-", run_dead)
    with_cluster("spool-membership-grow-", run_grow)
    print("membership: 3 passed, 0 failed")

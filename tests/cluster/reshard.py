#!/usr/bin/env python3
"""
Adding shards under load (docs/resharding.md), driven by test_reshard.sh. Reuses faults.py's
Cluster / Node / Load and sse.py's Stream.

  1. three storage nodes, --shards 2 --replicas 3, plus a gateway-only node (it learns the map
     over RPC: cluster/remote_view.c);
  2. publishers with unique ids on 40 channels (spread over slots), through every node
     including the gateway; one SSE stream per watched channel on every node (never
     reconnected), all running during `spoolctl shards add 4 --wait`;
  3. checks, printed: every node's map has 4 shards of 1024 slots and no resharding left; some
     channels now live on shards 2 and 3 (GET /v1/channels/{c}); publishes are acknowledged
     afterwards; history read through every node holds every acknowledged message exactly once
     with dense serials (and the serial it was acknowledged with); every stream got every serial
     of its channel once, in order (and no attach.live_gap was logged: the SSE layer would hide a
     skipped record by filling it from history); then, with the cluster stopped, every store on
     disk (spool-dump): each channel is on exactly one shard per node -- the one the final map
     names -- and identical on the three replicas.
  Fault variant (run_kill): the same, but the metadata group's leader is killed with -9 while
  the first slot move is in flight; the move still completes (a new leader resumes the driver
  from the map; the export job restarts at the source shard's leader); the killed node is then
  restarted and catches up before the disk checks.
"""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402
from faults import Cluster, Load, Node, http, log, with_cluster  # noqa: E402
from sse import Stream  # noqa: E402

faults.SHARDS = 2
GROW_TO = 4
REPLICAS = 3  # run_quiet uses 2: nodes without a replica of a moved slot's new shard
SPOOLCTL = os.path.join(faults.BUILD, "spoolctl")
faults.CHANNELS = ["rs-%d" % i for i in range(40)]
WATCHED = faults.CHANNELS[:6]


def slot_of(channel):
    """cluster/placement.c: FNV-1a 64 -> slot of 4096."""
    h = 0xcbf29ce484222325
    for b in channel.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h % 4096


def quiet_channels():
    """Idle channels for run_quiet. The 2 -> 4 plan moves slots 0..1023 to shard 2 and
    1024..2047 to shard 3 (spool_placement_plan_shards: each new shard takes the lowest slots
    of shards 0 and 1 in turn; slot s starts on shard s % 2): mostly channels
    going 1 -> 2 (with R = 2 of 3, shard 1's home node 2 has no replica of shard 2), and some
    of each other kind."""
    kinds = {(1, 2): 4, (0, 2): 2, (1, 3): 1, (0, 3): 1}
    out, i = [], 0
    while any(kinds.values()):
        c = "quiet-%d" % i
        k = (slot_of(c) % 2, 2 if slot_of(c) < 1024 else 3 if slot_of(c) < 2048 else None)
        if kinds.get(k, 0) > 0:
            kinds[k] -= 1
            out.append(c)
        i += 1
    return out


QUIET = quiet_channels()


class RNode(Node):
    """faults.Node with this test's replica count."""

    def start(self):
        args = [faults.SPOOLD, "--id", str(self.id), "--listen", "%s:%d" % (self.host, self.port),
                "--cluster-listen", "%s:%d" % (self.host, self.cport), "--peers",
                self.cluster.peers, "--data", self.data, "--shards", str(faults.SHARDS),
                "--replicas", str(REPLICAS), "--anonymous", "--election-timeout", "1000",
                "--heartbeat-interval", "1s", "--rebalance-interval", "2s", "--log-level", "info"]
        if REPLICAS == 2:
            # One event loop: clients are served by the node that holds the replicas (with
            # worker loops they would mostly be on gateway-only loops, fed by long polls).
            args += ["--workers", "1"]
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.stderr)


faults.Node = RNode  # faults.Cluster builds its storage nodes with it

PUBLISH_ERRORS = []  # (status, body) of publishes not acknowledged (Load retries them)
_http = faults.http


def counting_http(method, url, body=None, timeout=5.0):
    st, resp = _http(method, url, body, timeout)
    if method == "POST" and "/messages" in url and st not in (200, 201):
        PUBLISH_ERRORS.append((st, resp))
    return st, resp


faults.http = counting_http  # what faults.Load publishes with


class GatewayNode(Node):
    """A --role gateway node (id 9): not in --peers, no replicas."""

    def start(self):
        args = [faults.SPOOLD, "--id", str(self.id), "--role", "gateway",
                "--listen", "%s:%d" % (self.host, self.port),
                "--cluster-listen", "%s:%d" % (self.host, self.cport),
                "--peers", self.cluster.peers, "--data", self.data, "--shards", str(faults.SHARDS),
                "--replicas", "3", "--anonymous", "--election-timeout", "1000",
                "--heartbeat-interval", "1s", "--log-level", "info"]
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.stderr)


class RCluster(Cluster):
    """faults.Cluster plus a gateway node that takes part in the load and the streams."""

    def __init__(self, root):
        super().__init__(root)
        self.gateway = GatewayNode(self, 9)

    def start(self):
        super().start()
        self.gateway.start()
        deadline = time.time() + 30
        while not self.gateway.ready():
            assert time.time() < deadline, "gateway not ready"
            time.sleep(0.05)

    def any_live(self):
        return super().any_live() + ([self.gateway] if self.gateway.alive() else [])

    def storage_live(self):
        return [n for n in self.nodes.values() if n.alive()]

    def converging_nodes(self):
        """The storage nodes only (the gateway applies nothing)."""
        return self.storage_live()

    def stop_all(self):
        if self.gateway.alive():
            assert self.gateway.stop() == 0, "gateway exited non-zero"
        super().stop_all()


def cluster_status(node):
    st, body = http("GET", node.url + "/v1/admin/cluster", timeout=5.0)
    assert st == 200, "status on node %d: %r" % (node.id, st)
    return body


def meta_leader(cluster):
    for n in cluster.storage_live():
        try:
            ml = cluster_status(n)["membership"].get("metaLeader")
        except (OSError, AssertionError):
            continue
        if ml:
            return int(ml)
    return None


def history(node, channel):
    """Every item of a channel read through `node` (leader reads, paged): [(serial, id)]."""
    out, path = [], "/v1/channels/%s/messages?limit=1000&rollup=false" % channel
    while path:
        for attempt in range(100):
            try:
                st, body = http("GET", node.url + path, timeout=5.0)
            except OSError:
                st, body = None, None
            if st == 200:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("history of %s via node %d: %r" % (channel, node.id, st))
        out += [(it["serial"], it.get("id")) for it in body["items"]]
        path = body.get("next")
    return out


def settle(cluster, load, what):
    """Publishes sent but never acknowledged (the client gave up on them: a timeout, a node
    killed) may still be stored: their operation lives on in the nodes (forwarded, waiting for a
    leader or a moved slot, bounded by --forward-timeout at each hop) and can commit at any time,
    also while the nodes are being stopped one by one for the disk check -- a record committed
    after the first node stopped is then on the others only, which is not a divergence. So each
    is published again with its id (faults.Load's ids and bodies) until acknowledged: the id is
    then stored, any late copy of it is a duplicate (the dedup window), and no publish of the
    test can add a record any more. Afterwards the acknowledged set is the whole content."""
    lost = sorted(set(load.sent) - set(load.acked))
    again = {}
    for mid in lost:
        p, i = (int(x) for x in mid[1:].split("-"))
        ch = faults.CHANNELS[(p + i) % len(faults.CHANNELS)]
        for attempt in range(100):
            live = cluster.storage_live()
            node = live[attempt % len(live)]
            try:
                st, body = http("POST", "%s/v1/channels/%s/messages" % (node.url, ch),
                                {"id": mid, "name": "token", "data": {"p": p, "i": i}},
                                timeout=10.0)
            except OSError:
                st, body = None, None
            if st in (200, 201) and isinstance(body, dict):
                with load.lock:
                    load.acked[mid] = (ch, int(body["serials"][0]))
                again[mid] = (ch, int(body["serials"][0]),
                              "stored before" if body.get("duplicates") else "new")
                break
            time.sleep(0.1)
        else:
            raise AssertionError("%s: %s (sent, not acknowledged) not acknowledged again" % (what, mid))
    log("%s: %d publishes the client gave up on, acknowledged with their ids now (stored "
        "before by their first operation, or new): %r" % (what, len(lost), sorted(again.items())[:4]))


def check_history(cluster, load, what):
    acked = dict(load.acked)
    by_channel = {}
    for mid, (ch, serial) in acked.items():
        by_channel.setdefault(ch, {})[mid] = serial
    for node in cluster.any_live():
        for ch in faults.CHANNELS:
            items = history(node, ch)
            serials = [s for s, _ in items]
            assert serials == list(range(1, len(serials) + 1)), \
                "%s: %s via node %d: serials not dense" % (what, ch, node.id)
            ids = [i for _, i in items]
            assert len(ids) == len(set(ids)), "%s: %s via node %d: duplicate" % (what, ch, node.id)
            got = dict((i, s) for s, i in items)
            for mid, serial in by_channel.get(ch, {}).items():
                assert got.get(mid) == serial, "%s: %s acked as %s:%d, via node %d: %r" % (
                    what, mid, ch, serial, node.id, got.get(mid))
    log("%s: history through %d nodes: %d acknowledged messages on %d channels, each exactly "
        "once with its serial, dense serials" % (what, len(cluster.any_live()), len(acked),
                                                 len(faults.CHANNELS)))


def check_map(cluster, what, bound=10.0):
    """Every node's map (storage nodes apply it at their own pace, the gateway fetches it) has
    GROW_TO shards of equal slot counts and no resharding left, within the bound."""
    deadline = time.time() + bound
    for n in cluster.any_live():
        while True:
            v = cluster_status(n)
            slots = [s["slots"] for s in v["shards"]]
            ok = slots == [4096 // GROW_TO] * GROW_TO and v["resharding"]["state"] == "idle"
            if ok or time.time() > deadline:
                break
            time.sleep(0.1)
        assert ok, "%s: node %d sees %d shards with slots %r, %r" % (
            what, n.id, len(slots), slots, v["resharding"])
    log("%s: every node (gateway included) sees %d shards of %r slots, resharding idle" % (
        what, GROW_TO, 4096 // GROW_TO))


def planned_shard(channel):
    """The 2 -> 4 plan (see quiet_channels): slots 0..1023 -> 2, 1024..2047 -> 3, else s % 2."""
    slot = slot_of(channel)
    return 2 if slot < 1024 else 3 if slot < 2048 else slot % 2


def channel_shards(cluster, want=None, bound=10.0):
    """{channel: shard} as GET /v1/channels/{c} reports it on every live node (a worker loop's
    map is fetched over RPC and may be a moment behind: with `want`, wait for it)."""
    deadline = time.time() + bound
    for node in cluster.any_live():
        while True:
            out = {}
            for ch in faults.CHANNELS:
                st, body = http("GET", "%s/v1/channels/%s" % (node.url, ch), timeout=5.0)
                assert st == 200, "channel %s: %r" % (ch, st)
                out[ch] = int(body["shard"])
            if want is None or out == want or time.time() > deadline:
                break
            time.sleep(0.1)
        if want is not None:
            assert out == want, "node %d places %r, the plan says %r" % (
                node.id, sorted(set(out.items()) - set(want.items())),
                sorted(set(want.items()) - set(out.items())))
    return out


def wait_streams(streams, want, what, bound=20.0):
    deadline = time.time() + bound
    while time.time() < deadline and any(s.last < want.get(s.channel, 0) for s in streams
                                         if s.ended is None):
        time.sleep(0.05)
    for s in streams:
        assert s.ended is None, "%s: node %d stream of %s: %s" % (what, s.node.id, s.channel, s.ended)
        assert s.last >= want.get(s.channel, 0), "%s: node %d stream of %s stalled at %d (want %d)" % (
            what, s.node.id, s.channel, s.last, want.get(s.channel, 0))


def disk_diff(ref, ref_id, recs, node_id, ch, stamps, acked_ids):
    """What differs between two replicas' records of a channel: the first differing position,
    the records only one of them holds (seq, id, timestamp, acknowledged or not), and when the
    test converged and began stopping the nodes (wall clock, ms) -- so a late write is told
    from a replica that diverged."""
    i = 0
    while i < min(len(ref), len(recs)) and ref[i] == recs[i]:
        i += 1

    def name(node):
        return "node %d" % node if node else "the acknowledged log"

    def show(node, items):
        return [(s, m, stamps.get((node, ch, s)), "acked" if m in acked_ids else "not acked")
                for s, m in items[:8]]
    return ("%d records in %s, %d on %s; first difference at position %d; only in %s: %r; "
            "only on %s: %r; converged at %s, stopping from %s" % (
                len(ref), name(ref_id), len(recs), name(node_id), i, name(ref_id),
                show(ref_id, [x for x in ref[i:] if x not in recs]), name(node_id),
                show(node_id, [x for x in recs[i:] if x not in ref]),
                CHECK_TIMES.get("converged"), CHECK_TIMES.get("stopping")))


CHECK_TIMES = {}  # wall clock (ms) of the last convergence and of stop_all, for disk_diff


def check_disk(cluster, streams, where, what, acked):
    """Each channel on exactly one shard per node (the map's), identical on every replica and
    exactly the acknowledged messages with their serials (settle made every sent message
    acknowledged); the streams hold exactly their channel's log."""
    logs, ref_node, stamps = {}, {}, {}
    acked_ids = set(acked)
    acked_log = {}
    for mid, (ch, serial) in acked.items():
        acked_log.setdefault(ch, []).append((serial, mid))
    for v in acked_log.values():
        v.sort()
    for n in cluster.nodes.values():
        per_shard = {}
        for d in sorted(os.listdir(n.data)):
            store = os.path.join(n.data, d, "store")
            if not re.match(r"^shard-\d+$", d) or not os.path.isdir(store):
                continue
            r = subprocess.run([faults.DUMP, store], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, "spool-dump %s: %s" % (store, r.stderr)
            for line in r.stdout.splitlines():
                rec = json.loads(line)
                per_shard.setdefault(rec["channel"], {}).setdefault(int(d[6:]), []).append(
                    (rec["seq"], rec["id"]))
                stamps[(n.id, rec["channel"], rec["seq"])] = rec["timestamp"]
        for ch in faults.CHANNELS:
            shards = per_shard.get(ch, {})
            assert list(shards) == [where[ch]], "%s: node %d holds %s on shards %r, the map says %d" % (
                what, n.id, ch, sorted(shards), where[ch])
            recs = shards[where[ch]]
            want = acked_log.get(ch, [])
            assert recs == want, "%s: %s on node %d (shard %d) is not its acknowledged log: %s" % (
                what, ch, n.id, where[ch], disk_diff(want, 0, recs, n.id, ch, stamps, acked_ids))
            if ch in logs:
                assert recs == logs[ch], "%s: %s differs on node %d (shard %d): %s" % (
                    what, ch, n.id, where[ch], disk_diff(logs[ch], ref_node[ch], recs, n.id, ch,
                                                        stamps, acked_ids))
            logs[ch] = recs
            ref_node[ch] = n.id
    for s in streams:
        ref = logs[s.channel]
        assert not s.errors, "%s: node %d stream of %s: %s" % (what, s.node.id, s.channel, s.errors[:3])
        assert s.got == ref, "%s: node %d stream of %s got %d events, the log has %d" % (
            what, s.node.id, s.channel, len(s.got), len(ref))
    gaps = [n.id for n in list(cluster.nodes.values()) + [cluster.gateway]
            if "attach.live_gap" in open(n.stderr_path, errors="replace").read()]
    assert not gaps, "%s: attach.live_gap logged on nodes %r" % (what, gaps)
    late = sorted(set((ch, seq) for (_, ch, seq), ts in stamps.items()
                      if ts > CHECK_TIMES.get("converged", 1 << 62)))
    log("%s: on disk: every channel on exactly its map's shard on all 3 nodes, identical; %d "
        "streams (%d events) got exactly their channel's log; %d records stamped after the "
        "replicas converged %r" % (what, len(streams), sum(len(s.got) for s in streams),
                                   len(late), late[:4]))


def run(cluster, kill_meta_leader=False):
    what = "reshard-kill" if kill_meta_leader else "reshard"
    cluster.start()
    nodes = cluster.any_live()
    streams = [Stream(n, ch, timeout=120) for ch in WATCHED for n in nodes]
    for s in streams:
        s.start()
    for s in streams:
        assert s.opened.wait(10) and s.ended is None, "stream of %s: %s" % (s.channel, s.ended)
    load = Load(cluster, publishers=4, per_publisher=100000, max_seconds=80)
    load.start()
    try:
        assert load.wait_acks(200, 30), "%s: no load before resharding" % what
        before = channel_shards(cluster, want=dict((ch, slot_of(ch) % 2) for ch in faults.CHANNELS))
        t0 = time.time()
        # Through the gateway node: the request is forwarded to the metadata leader, and the
        # gateway's status (its map, fetched over RPC) must show the end too.
        gw = cluster.gateway
        ctl = subprocess.Popen([SPOOLCTL, "--server", "%s:%d" % (gw.host, gw.port),
                                "--timeout", "60", "shards", "add", str(GROW_TO), "--wait"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # While it runs, another change is refused (409); a shard count that does not grow is
        # a 400 (checked once it is done, below).
        deadline = time.time() + 20
        while time.time() < deadline and \
                cluster_status(cluster.nodes[1])["resharding"]["state"] != "moving":
            time.sleep(0.02)
        st, body = http("POST", cluster.nodes[1].url + "/v1/admin/shards",
                        {"shards": GROW_TO + 1}, timeout=5.0)
        assert st == 409, "%s: a second change during the resharding answered %r %r" % (
            what, st, body)
        killed = None
        if kill_meta_leader:
            # Wait for the first move to be in flight, then kill the metadata leader.
            deadline = time.time() + 20
            rs = {}
            while time.time() < deadline:
                try:
                    rs = cluster_status(cluster.nodes[1])["resharding"]
                except (OSError, AssertionError):
                    rs = {}
                if rs.get("move"):
                    break
                time.sleep(0.02)
            killed = meta_leader(cluster)
            assert killed, "no metadata leader"
            cluster.nodes[killed].kill9()
            log("%s: killed the metadata leader (node %d) during a move (%r)" % (what, killed, rs))
            for s in streams:
                if s.node.id == killed:
                    s.stop()
            streams = [s for s in streams if s.node.id != killed]
        out, _ = ctl.communicate(timeout=90)
        assert ctl.returncode == 0, "%s: spoolctl shards add failed:\n%s" % (what, out)
        log("%s: spoolctl shards add %d --wait took %.1fs:\n%s" % (what, GROW_TO, time.time() - t0,
                                                                   out.strip()))
        check_map(cluster, what)
        for bad in ({"shards": GROW_TO}, {"shards": 1}, {"shards": 5000}, {"shard": 8}):
            st, body = http("POST", cluster.storage_live()[0].url + "/v1/admin/shards", bad,
                            timeout=5.0)
            assert st == 400, "%s: POST /v1/admin/shards %r answered %r %r" % (what, bad, st, body)
        log("%s: a second change while it ran: 409; bad shard counts / body: 400" % what)
        after = channel_shards(cluster, want=dict((ch, planned_shard(ch)) for ch in faults.CHANNELS))
        moved = {ch: (before[ch], after[ch]) for ch in faults.CHANNELS if after[ch] != before[ch]}
        on_new = sorted(set(after[ch] for ch in moved))
        assert on_new == [2, 3], "%s: channels moved to %r" % (what, on_new)
        assert all(b >= 2 for _, b in moved.values())
        log("%s: %d of %d channels moved (to shards %r), e.g. %r" % (
            what, len(moved), len(faults.CHANNELS), on_new, sorted(moved.items())[:4]))
        base = load.acked_count()
        assert load.wait_acks(base + 100, 15), "%s: publishes not acknowledged after" % what
        log("%s: publishes acknowledged after the resharding (%d -> %d)" % (
            what, base, load.acked_count()))
        if not kill_meta_leader:
            # Publishes to moving slots wait for the copy (bounded by --forward-timeout)
            # instead of failing: none was refused.
            assert not PUBLISH_ERRORS, "%s: %d publishes refused during the resharding: %r" % (
                what, len(PUBLISH_ERRORS), PUBLISH_ERRORS[:3])
            log("%s: no publish was refused during the resharding" % what)
    finally:
        load.finish()
    log("%s: load: %d acknowledged of %d sent" % (what, len(load.acked), len(load.sent)))
    settle(cluster, load, what)
    want = {}
    for ch, serial in list(load.acked.values()):
        want[ch] = max(want.get(ch, 0), serial)
    wait_streams(streams, want, what)
    check_history(cluster, load, what)
    if kill_meta_leader:
        cluster.nodes[killed].start()
        cluster.wait_ready()
    # Every replica applied the same prefix (nothing of the test can add a record: settle).
    cluster.wait_converged(30)
    CHECK_TIMES["converged"] = int(time.time() * 1000)
    for s in streams:
        s.stop()
    where = dict((ch, planned_shard(ch)) for ch in faults.CHANNELS)
    CHECK_TIMES["stopping"] = int(time.time() * 1000)
    cluster.stop_all()
    check_disk(cluster, streams, where, what, dict(load.acked))


def publish_quiet(cluster, tag, count=2):
    """`count` messages to each quiet channel; {channel: last serial}."""
    out = {}
    for ch in QUIET:
        for i in range(count):
            for attempt in range(100):
                node = cluster.storage_live()[attempt % len(cluster.storage_live())]
                try:
                    st, body = http("POST", "%s/v1/channels/%s/messages" % (node.url, ch),
                                    {"id": "%s-%s-%d" % (ch, tag, i), "data": i}, timeout=2.0)
                except OSError:
                    st, body = None, None
                if st in (200, 201) and isinstance(body, dict):
                    out[ch] = int(body["serials"][0])
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("publish to %s not acknowledged (%s)" % (ch, tag))
    return out


def run_quiet(cluster):
    """R = 2 of 3 nodes: a node may lead a channel's old shard (its topic then has no long-poll
    chain) and hold no replica of the new one; idle channels get no record that would restart a
    feeder. Every stream must still get the records published after the move."""
    what = "reshard-quiet"
    cluster.start()
    publish_quiet(cluster, "a")
    streams = [Stream(n, ch, timeout=120) for ch in QUIET for n in cluster.any_live()]
    for s in streams:
        s.start()
    for s in streams:
        assert s.opened.wait(10) and s.ended is None, "stream of %s: %s" % (s.channel, s.ended)
    before = dict((ch, int(http("GET", "%s/v1/channels/%s" % (cluster.nodes[1].url, ch))[1]["shard"]))
                  for ch in QUIET)
    gw = cluster.gateway
    r = subprocess.run([SPOOLCTL, "--server", "%s:%d" % (gw.host, gw.port), "--timeout", "60",
                        "shards", "add", str(GROW_TO), "--wait"], capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0, "%s: spoolctl: %s%s" % (what, r.stdout, r.stderr)
    check_map(cluster, what)
    want = publish_quiet(cluster, "b")
    moved = [ch for ch in QUIET
             if int(http("GET", "%s/v1/channels/%s" % (cluster.nodes[1].url, ch))[1]["shard"]) != before[ch]]
    assert len(moved) == len(QUIET), "%s: %d of %d quiet channels moved" % (
        what, len(moved), len(QUIET))
    wait_streams(streams, want, what, bound=15.0)
    for s in streams:
        assert not s.errors, "%s: %s" % (what, s.errors[:3])
        assert [x for x, _ in s.got] == list(range(1, want[s.channel] + 1)), \
            "%s: node %d stream of %s: %r" % (what, s.node.id, s.channel, s.got)
        s.stop()
    log("%s: R=2: %d idle channels (%d moved) on %d streams got every record after the move" % (
        what, len(QUIET), len(moved), len(streams)))
    cluster.stop_all()


def guarded(body):
    """body(cluster), killing the gateway node too on failure (with_cluster kills the others)."""
    def run_body(cluster):
        try:
            body(cluster)
        except BaseException:
            if cluster.gateway.alive():
                cluster.gateway.kill9()
            raise
    return run_body


def main():
    global REPLICAS
    with_cluster("spool-reshard-", guarded(run))
    if os.environ.get("SPOOL_RESHARD_FAULT", "1") == "1":
        with_cluster("spool-reshard-kill-", guarded(lambda c: run(c, kill_meta_leader=True)))
    REPLICAS = 2
    with_cluster("spool-reshard-quiet-", guarded(run_quiet))
    log("reshard: all ok")


faults.Cluster = RCluster  # with_cluster builds this one
if __name__ == "__main__":
    main()

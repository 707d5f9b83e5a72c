#!/usr/bin/env python3
"""
Multi-process fault tests for a 3-node Spool cluster on 127.0.0.1.

Each scenario runs the same way: start (or keep) three spoold processes, drive a bounded publish
load from several publisher threads (each message has a unique client id, retried blindly with
the same id on any error, as a real publisher would), inject one fault, check the cluster accepts
publishes again within a bound, then stop the load, wait for the replicas to converge, stop the
cluster and read every replica's store from disk with spool-dump. The checks:

  - every acknowledged message is present exactly once on every replica of its shard;
  - no message (acknowledged or not) is present twice;
  - every replica of a shard holds the same records in the same order with dense serials;
  - the serial the publisher was given is the serial stored;
  - every SSE subscriber (reconnecting to any live node with Last-Event-ID, as a browser's
    EventSource does) received exactly the stored sequence of its channel: no gap, no duplicate.

Faults: kill -9 of a shard leader, SIGSTOP/SIGCONT of a leader, graceful restart of a node, and
a partition: with SPOOL_NETNS set (see test_partition.sh, which creates the namespaces and runs
this driver inside a hub namespace), each node runs in its own network namespace behind a veth on
a bridge, and the leader's link is taken down, then brought back.

Everything is bounded: the load stops after a fixed count or time, every wait has a deadline.
"""
import atexit
import http.client as httpclient
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sse  # noqa: E402

SPOOLD = os.environ.get("SPOOLD", "build-asan/spoold")
BUILD = os.environ.get("SPOOL_BUILD", "build-asan")
DUMP = os.path.join(BUILD, "storage", "spool-dump")
SHARDS = 2
CHANNELS = ["conv-%d" % i for i in range(6)]
RECOVERY_BOUND_S = 10.0


def log(msg):
    print("faults: " + msg, flush=True)


PORT_CLAIMS = os.path.join(tempfile.gettempdir(), "spool-test-ports")


def claim_port(p):
    """Claims p for this process's lifetime across every test using this harness. ctest runs
    tests side by side, and a port is free to any prober while its node is down for a restart:
    without a claim another test's cluster could take it. A claim whose process is gone is stale."""
    os.makedirs(PORT_CLAIMS, exist_ok=True)
    path = os.path.join(PORT_CLAIMS, str(p))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    os.kill(int(f.read().strip() or 0), 0)
                return False  # held by a live process
            except (ProcessLookupError, ValueError, FileNotFoundError):
                try:
                    os.unlink(path)  # stale: its process is gone
                except FileNotFoundError:
                    pass
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        atexit.register(lambda: os.path.exists(path) and os.unlink(path))
        return True
    return False


def free_port(used):
    # Below the ephemeral range (32768+) so outgoing connections never take our listening ports.
    for _ in range(1000):
        p = random.randint(20000, 32000)
        if p in used or not claim_port(p):
            continue
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        used.add(p)
        return p
    raise RuntimeError("no free port")


def http(method, url, body=None, timeout=5.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw and r.headers.get_content_type() == "application/json" else raw)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw


NETNS = os.environ.get("SPOOL_NETNS")  # "<prefix>:<subnet prefix>", e.g. "spool123:10.213.7"


class Node:
    def __init__(self, cluster, node_id):
        self.cluster = cluster
        self.id = node_id
        if NETNS:
            prefix, subnet = NETNS.split(":")
            self.netns = "%s-n%d" % (prefix, node_id)
            self.host = "%s.%d" % (subnet, node_id)
            self.port, self.cport = 8080, 7080
        else:
            self.netns = None
            self.host = "127.0.0.1"
            self.port = free_port(cluster.used)
            self.cport = free_port(cluster.used)
        self.data = os.path.join(cluster.dir, "n%d" % node_id)
        self.proc = None
        self.stderr_path = os.path.join(cluster.dir, "n%d.log" % node_id)

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def link(self, up):
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "veth0",
                        "up" if up else "down"], check=True)

    def start(self):
        args = [SPOOLD, "--id", str(self.id), "--listen", "%s:%d" % (self.host, self.port),
                "--cluster-listen", "%s:%d" % (self.host, self.cport), "--peers", self.cluster.peers,
                "--data", self.data, "--shards", str(SHARDS), "--replicas", "3", "--anonymous",
                "--election-timeout", "1000", "--heartbeat-interval", "1s", "--rebalance-interval", "2s",
                "--log-level", "info"]
        if self.netns:
            args = ["ip", "netns", "exec", self.netns] + args
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.stderr)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        """Graceful stop; returns the exit code (0 expected)."""
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise AssertionError("node %d did not stop within %ds" % (self.id, timeout))
        finally:
            self.stderr.close()
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.stderr.close()

    def ready(self):
        try:
            return http("GET", self.url + "/readyz", timeout=1.0)[0] == 200
        except (OSError, urllib.error.URLError):
            return False


class Cluster:
    def __init__(self, root):
        self.dir = root
        self.used = set()
        self.nodes = {i: Node(self, i) for i in (1, 2, 3)}
        self.peers = ",".join("%d@%s:%d" % (n.id, n.host, n.cport) for n in self.nodes.values())

    def start(self):
        for n in self.nodes.values():
            n.start()
        self.wait_ready()

    def wait_ready(self, bound=30.0):
        deadline = time.time() + bound
        while time.time() < deadline:
            if all(n.ready() for n in self.nodes.values() if n.alive()):
                return
            time.sleep(0.05)
        raise AssertionError("cluster not ready within %.0fs" % bound)

    def any_live(self):
        return [n for n in self.nodes.values() if n.alive()]

    def leader_of(self, channel):
        """The node id leading the channel's shard, as a live node reports it."""
        for n in self.any_live():
            try:
                status, body = http("GET", "%s/v1/channels/%s" % (n.url, channel), timeout=2.0)
            except OSError:
                continue
            if status == 200 and isinstance(body, dict) and body.get("leader"):
                return int(body["leader"]), int(body.get("shard", 0))
        return None, None

    def applied(self, node):
        """{shard: applied index} scraped from a node's /metrics."""
        out = {}
        try:
            status, body = http("GET", node.url + "/metrics", timeout=2.0)
        except OSError:
            return out
        if status != 200:
            return out
        text = body.decode() if isinstance(body, bytes) else str(body)
        for line in text.splitlines():
            if line.startswith("spool_raft_applied_index{"):
                labels, value = line.rsplit(" ", 1)
                shard = labels.split('shard="', 1)[1].split('"', 1)[0]
                out[int(shard)] = int(float(value))
        return out

    def converging_nodes(self):
        """The nodes whose applied indexes must agree (every live one here)."""
        return self.any_live()

    def wait_converged(self, bound=20.0):
        deadline = time.time() + bound
        last = None
        while time.time() < deadline:
            views = [self.applied(n) for n in self.converging_nodes()]
            if views and all(views) and all(v == views[0] for v in views):
                return views[0]
            last = views
            time.sleep(0.1)
        raise AssertionError("replicas did not converge within %.0fs: %r" % (bound, last))

    def stop_all(self):
        codes = {n.id: n.stop() for n in self.nodes.values() if n.alive()}
        bad = {k: v for k, v in codes.items() if v != 0}
        if bad:
            for n in self.nodes.values():
                sys.stdout.write(open(n.stderr_path, errors="replace").read()[-3000:])
            raise AssertionError("nodes exited non-zero: %r" % bad)

    def dump(self):
        """{node id: {channel: [(seq, id)]}} read from disk."""
        out = {}
        for n in self.nodes.values():
            recs = {}
            for d in sorted(os.listdir(n.data)):
                store = os.path.join(n.data, d, "store")
                if not d.startswith("shard-") or not os.path.isdir(store):
                    continue
                r = subprocess.run([DUMP, store], capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    raise AssertionError("spool-dump %s: %s" % (store, r.stderr))
                for line in r.stdout.splitlines():
                    rec = json.loads(line)
                    recs.setdefault(rec["channel"], []).append((rec["seq"], rec["id"]))
            out[n.id] = recs
        return out


class Load:
    """Publisher threads: unique ids, blind retries with the same id, bounded count and time."""

    def __init__(self, cluster, publishers=4, per_publisher=5000, max_seconds=60.0):
        self.cluster = cluster
        self.acked = {}  # id -> (channel, serial)
        self.sent = set()
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(p, per_publisher, max_seconds))
                        for p in range(publishers)]
        self.last_ack = time.time()

    def start(self):
        for t in self.threads:
            t.start()

    def run(self, p, count, max_seconds):
        rng = random.Random(p)
        avoid = {}
        end = time.time() + max_seconds
        for i in range(count):
            if self.stop_flag.is_set() or time.time() > end:
                return
            mid = "p%d-%d" % (p, i)
            channel = CHANNELS[(p + i) % len(CHANNELS)]
            with self.lock:
                self.sent.add(mid)
            for attempt in range(200):
                if self.stop_flag.is_set() or time.time() > end:
                    return
                # Like a client with failover: avoid, for a while, a node that just timed out.
                live = [n for n in self.cluster.any_live() if avoid.get(n.id, 0) < time.time()]
                if not live:
                    time.sleep(0.05)
                    continue
                node = rng.choice(live)
                try:
                    status, body = http("POST", "%s/v1/channels/%s/messages" % (node.url, channel),
                                        {"id": mid, "name": "token", "data": {"p": p, "i": i}},
                                        timeout=2.0)
                except OSError:
                    status, body = None, None
                    avoid[node.id] = time.time() + 3.0
                if status in (200, 201) and isinstance(body, dict):
                    with self.lock:
                        self.acked[mid] = (channel, int(body["serials"][0]))
                        self.last_ack = time.time()
                    break
                time.sleep(0.02 * min(attempt + 1, 10))

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def wait_acks(self, n, bound):
        deadline = time.time() + bound
        while time.time() < deadline:
            if self.acked_count() >= n:
                return True
            time.sleep(0.02)
        return False

    def finish(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)


class Subscriber(threading.Thread):
    """An SSE subscriber of one channel that reconnects to any live node with Last-Event-ID."""

    def __init__(self, cluster, channel, seed):
        super().__init__()
        self.cluster = cluster
        self.channel = channel
        self.rng = random.Random(seed)
        self.got = []  # (serial, id) in arrival order
        self.errors = []
        self.reconnects = 0
        self.stop_flag = threading.Event()

    @property
    def last(self):
        return self.got[-1][0] if self.got else 0

    def run(self):
        end = time.time() + 180
        while not self.stop_flag.is_set() and time.time() < end:
            live = self.cluster.any_live()
            if live:
                self.stream(self.rng.choice(live))
                self.reconnects += 1
            self.stop_flag.wait(0.05)

    def stream(self, node):
        path = "/v1/channels/%s/events" % self.channel
        headers = {"Accept": "text/event-stream"}
        if self.got:
            headers["Last-Event-ID"] = str(self.last)
        else:
            path += "?from=start"
        try:
            conn = httpclient.HTTPConnection(node.host, node.port, timeout=3)
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                conn.close()
                return
            for event_id, data in sse.events(resp, self.stop_flag):
                if data.get("type") == "message":
                    serial = data["serial"]
                    if serial != self.last + 1:
                        self.errors.append("expected serial %d, got %d" % (self.last + 1, serial))
                    if event_id != serial:
                        self.errors.append("id: %r for serial %d" % (event_id, serial))
                    self.got.append((serial, data.get("id")))
            conn.close()
        except (OSError, httpclient.HTTPException, ValueError):
            pass


def verify(cluster, load, scenario, subscribers=()):
    replicas = cluster.dump()
    acked = load.acked
    checked = 0
    for channel in CHANNELS:
        views = {nid: recs.get(channel, []) for nid, recs in replicas.items() if channel in recs}
        if not views:
            continue
        ref_id, ref = next(iter(views.items()))
        for nid, recs in views.items():
            if recs != ref:
                first = next((k for k in range(min(len(recs), len(ref))) if recs[k] != ref[k]),
                             min(len(recs), len(ref)))
                raise AssertionError("%s: %s differs between node %d (%d records) and node %d (%d "
                                     "records), first at position %d: %r vs %r" % (
                                         scenario, channel, ref_id, len(ref), nid, len(recs), first,
                                         ref[first:first + 3], recs[first:first + 3]))
        seqs = [s for s, _ in ref]
        assert seqs == list(range(1, len(seqs) + 1)), "%s: %s serials not dense" % (scenario, channel)
        ids = [i for _, i in ref]
        assert len(ids) == len(set(ids)), "%s: %s holds a duplicate" % (scenario, channel)
        by_id = dict((i, s) for s, i in ref)
        for mid, (ch, serial) in acked.items():
            if ch != channel:
                continue
            assert mid in by_id, "%s: acknowledged %s missing from %s" % (scenario, mid, channel)
            assert by_id[mid] == serial, "%s: %s acked as %d, stored as %d" % (
                scenario, mid, serial, by_id[mid])
            checked += 1
    assert checked == len(acked), "%s: checked %d of %d acked" % (scenario, checked, len(acked))
    for sub in subscribers:
        ref = next(iter(replicas.values())).get(sub.channel, [])
        assert not sub.errors, "%s: subscriber of %s: %s" % (scenario, sub.channel, sub.errors[:3])
        assert sub.got == ref, "%s: subscriber of %s got %d events, the log has %d (first difference at %r)" % (
            scenario, sub.channel, len(sub.got), len(ref),
            next((i for i, (a, b) in enumerate(zip(sub.got, ref)) if a != b), min(len(sub.got), len(ref))))
    if subscribers:
        log("%s: %d SSE subscribers received exactly their channel's log (%d events, %d reconnects)"
            % (scenario, len(subscribers), sum(len(x.got) for x in subscribers),
               sum(x.reconnects for x in subscribers)))
    total = sum(len(r) for r in next(iter(replicas.values())).values())
    log("%s: ok: %d acknowledged of %d sent, %d stored, identical on %d replicas, no duplicate"
        % (scenario, len(acked), len(load.sent), total, len(replicas)))


def recovered_within(load, bound):
    """Publishing works again: an acknowledgment arrives after the fault, within bound."""
    t0 = time.time()
    base = load.acked_count()
    ok = load.wait_acks(base + 20, bound)
    return ok, time.time() - t0


def with_cluster(prefix, body):
    """Runs body(cluster) on a fresh 3-node cluster in a temporary directory (body starts and
    stops it). On any failure every node is resumed and killed and its log tail printed; the
    directory is removed on success and kept for inspection on failure."""
    root = tempfile.mkdtemp(prefix=prefix)
    cluster = Cluster(root)
    try:
        body(cluster)
    except BaseException:
        for n in cluster.nodes.values():
            if n.alive():
                n.signal(signal.SIGCONT)
                n.kill9()
            sys.stdout.write("--- node %d log (tail) ---\n" % n.id)
            sys.stdout.write(open(n.stderr_path, errors="replace").read()[-4000:])
        raise
    subprocess.run(["rm", "-rf", root])


def scenario(name, fault):
    with_cluster("spool-faults-", lambda cluster: run_scenario(name, fault, cluster))


def last_serials(cluster):
    """The highest serial of each channel any live node reports (a follower may lag a little)."""
    out = {}
    for channel in CHANNELS:
        for n in cluster.any_live():
            try:
                status, body = http("GET", "%s/v1/channels/%s" % (n.url, channel), timeout=2.0)
            except OSError:
                continue
            if status == 200 and isinstance(body, dict):
                out[channel] = max(out.get(channel, 0), int(body.get("lastSerial", 0)))
    return out


def run_scenario(name, fault, cluster):
    cluster.start()
    subscribers = [Subscriber(cluster, CHANNELS[i], i) for i in range(3)]
    for sub in subscribers:
        sub.start()
    load = Load(cluster)
    load.start()
    try:
        assert load.wait_acks(100, 30), "%s: no load before the fault" % name
        fault(cluster, load)
        ok, took = recovered_within(load, RECOVERY_BOUND_S)
        assert ok, "%s: publishes not accepted again within %.0fs" % (name, RECOVERY_BOUND_S)
        log("%s: publishes accepted again %.2fs after the fault" % (name, took))
        # Keep the load going past recovery so the checks cover traffic on both sides of it.
        load.wait_acks(load.acked_count() + 200, 20)
    finally:
        load.finish()
    for n in cluster.nodes.values():
        if not n.alive():
            n.start()
    cluster.wait_ready()
    cluster.wait_converged()
    # Subscribers catch up with the log's end (bounded), then stop before the cluster does.
    want = last_serials(cluster)
    deadline = time.time() + 20
    while time.time() < deadline and any(s.last < want.get(s.channel, 0) for s in subscribers):
        time.sleep(0.05)
    log("%s: subscribers at %s, channels at %s" % (
        name, {s.channel: s.last for s in subscribers}, {s.channel: want.get(s.channel) for s in subscribers}))
    for sub in subscribers:
        sub.stop_flag.set()
    for sub in subscribers:
        sub.join(10)
    cluster.stop_all()
    verify(cluster, load, name, subscribers)


def kill_leader(cluster, load):
    leader, shard = cluster.leader_of(CHANNELS[0])
    assert leader, "no leader reported"
    log("kill-leader: kill -9 node %d (leader of shard %d)" % (leader, shard))
    cluster.nodes[leader].kill9()


def pause_leader(cluster, load):
    leader, shard = cluster.leader_of(CHANNELS[1])
    assert leader, "no leader reported"
    node = cluster.nodes[leader]
    log("pause-leader: SIGSTOP node %d (leader of shard %d) until the others make progress" % (leader, shard))
    node.signal(signal.SIGSTOP)
    # The pause itself is the fault being injected, not synchronisation: others must elect.
    ok, took = recovered_within(load, RECOVERY_BOUND_S)
    node.signal(signal.SIGCONT)
    assert ok, "pause-leader: no progress while the leader was stopped"
    log("pause-leader: progress resumed %.2fs into the pause; SIGCONT" % took)


def restart_node(cluster, load):
    node = cluster.nodes[2]
    log("restart: graceful restart of node 2")
    assert node.stop() == 0
    node.start()


def partition_leader(cluster, load):
    leader, shard = cluster.leader_of(CHANNELS[2])
    assert leader, "no leader reported"
    node = cluster.nodes[leader]
    log("partition: cut node %d (leader of shard %d) off the network" % (leader, shard))
    node.link(False)
    ok, took = recovered_within(load, RECOVERY_BOUND_S)
    node.link(True)
    assert ok, "partition: no progress while the leader was cut off"
    log("partition: majority made progress %.2fs after the cut; link restored" % took)


def rolling_restart(cluster, load):
    """Each node in turn: SIGTERM (drain, hand over leaderships, flush, exit 0), start again,
    wait until it is ready, then the next, all under publish load with subscribers attached."""
    for node in cluster.nodes.values():
        before = load.acked_count()
        rc = node.stop()
        assert rc == 0, "rolling-restart: node %d exited %d" % (node.id, rc)
        node.start()
        cluster.wait_ready()
        assert load.wait_acks(before + 30, RECOVERY_BOUND_S), \
            "rolling-restart: no progress after restarting node %d" % node.id
        log("rolling-restart: node %d restarted; %d acknowledged so far" % (node.id, load.acked_count()))


SCENARIOS = {"kill-leader": kill_leader, "rolling-restart": rolling_restart, "pause-leader": pause_leader, "restart": restart_node,
             "partition": partition_leader}

if __name__ == "__main__":
    names = sys.argv[1:] or [n for n in SCENARIOS if n != "partition"]
    for n in names:
        scenario(n, SCENARIOS[n])
    print("%d passed, 0 failed" % len(names))

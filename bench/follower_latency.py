#!/usr/bin/env python3
"""
Publish -> live delivery latency on every kind of node: a 3-node cluster (3 shards x 3 replicas)
and one gateway-only node; for one channel, messages are published one at a time through the
node that leads the channel's shard (A), while SSE subscribers of the channel listen on A, on a
follower replica node (B) and on the gateway-only node (G). For each message the time from just
before the POST to the event's arrival on each subscriber is recorded; p50/p90/p99/max are
printed per subscriber.

Light load on purpose (one publish at a time, a random pause between them): that is where a
follower replica that waits for the leader's next AppendEntries to learn the commit index is
slowest (about one heartbeat, --heartbeat, default 100 ms).

    bench/follower_latency.py [--spoold build/spoold] [--messages 200] [--gap-ms 20]
                              [--heartbeat-ms 100] [--keep DIR]

Rebalancing is off (--rebalance-interval 0) so the leader stays put during the run. Benchmarks
measure; tests never time anything (tests/cluster/test_follower_delivery.sh checks exactly-once
delivery on followers without timing it).
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
import faults  # noqa: E402  (free_port, http)
import sse  # noqa: E402  (the SSE stream reader)
free_port = faults.free_port


def http(method, url, body=None, timeout=5.0):
    """faults.http, with a connection error or a non-JSON reply as status 0."""
    try:
        return faults.http(method, url, body, timeout)
    except (OSError, ValueError):
        return 0, None


class Subscriber(sse.Stream):
    """One live SSE stream of `channel` on `port`; records the arrival time of every event by id."""

    def __init__(self, name, port, channel):
        super().__init__(SimpleNamespace(host="127.0.0.1", port=port), channel, timeout=30,
                         from_start=False)
        self.name = name
        self.arrived = {}
        self.order = []

    def on_message(self, data):
        self.arrived[data.get("id")] = time.monotonic()
        self.order.append(data["serial"])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spoold", default=os.environ.get("SPOOLD", os.path.join(ROOT, "build/spoold")))
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--gap-ms", type=float, default=20.0, help="mean pause between publishes")
    ap.add_argument("--heartbeat-ms", type=int, default=100)
    ap.add_argument("--keep", help="data directory to use and keep")
    a = ap.parse_args()
    if not os.access(a.spoold, os.X_OK):
        sys.exit("no %s: scripts/build.sh release" % a.spoold)

    root = a.keep or tempfile.mkdtemp(prefix="spool-follat-")
    used = set()
    ports = {i: (free_port(used), free_port(used)) for i in (1, 2, 3)}
    gport, gcport = free_port(used), free_port(used)
    peers = ",".join("%d@127.0.0.1:%d" % (i, ports[i][1]) for i in (1, 2, 3))
    common = ["--shards", "3", "--anonymous", "--heartbeat", "%dms" % a.heartbeat_ms,
              "--rebalance-interval", "0", "--log-level", "warn"]
    procs = []
    try:
        for i in (1, 2, 3):
            os.makedirs("%s/n%d" % (root, i), exist_ok=True)
            procs.append(subprocess.Popen(
                [a.spoold, "--id", str(i), "--listen", "127.0.0.1:%d" % ports[i][0],
                 "--cluster-listen", "127.0.0.1:%d" % ports[i][1], "--peers", peers,
                 "--data", "%s/n%d" % (root, i), "--replicas", "3"] + common,
                stdout=subprocess.DEVNULL, stderr=open("%s/n%d.log" % (root, i), "ab")))
        procs.append(subprocess.Popen(
            [a.spoold, "--id", "9", "--role", "gateway", "--listen", "127.0.0.1:%d" % gport,
             "--cluster-listen", "127.0.0.1:%d" % gcport, "--data", "%s/g" % root,
             "--peers", peers] + common,
            stdout=subprocess.DEVNULL, stderr=open("%s/g.log" % root, "ab")))
        deadline = time.time() + 60
        for port in [ports[i][0] for i in (1, 2, 3)] + [gport]:
            while http("GET", "http://127.0.0.1:%d/readyz" % port, timeout=1)[0] != 200:
                if time.time() > deadline:
                    sys.exit("cluster not ready within 60 s (logs in %s)" % root)
                time.sleep(0.1)

        channel = "follat-%d" % random.randint(0, 1 << 30)
        leader = None
        while leader is None and time.time() < deadline:
            st, body = http("GET", "http://127.0.0.1:%d/v1/channels/%s" % (ports[1][0], channel))
            if st == 200 and body.get("leader"):
                leader = int(body["leader"])
            else:
                time.sleep(0.1)
        follower = next(i for i in (1, 2, 3) if i != leader)
        subs = [Subscriber("leader node %d" % leader, ports[leader][0], channel),
                Subscriber("follower node %d" % follower, ports[follower][0], channel),
                Subscriber("gateway-only node", gport, channel)]
        for s in subs:
            s.start()
            s.opened.wait(10)
        time.sleep(0.5)  # the subscriptions are set up server-side
        url = "http://127.0.0.1:%d/v1/channels/%s/messages" % (ports[leader][0], channel)
        sent, acks = {}, []
        for k in range(a.messages):
            mid = "m%d" % k
            sent[mid] = time.monotonic()
            st, _ = http("POST", url, {"id": mid, "data": k})
            acks.append((time.monotonic() - sent[mid]) * 1000.0)
            if st != 201:
                sys.exit("publish %d: HTTP %d" % (k, st))
            time.sleep(random.uniform(0, 2 * a.gap_ms) / 1000.0)
        end = time.time() + 10
        while time.time() < end and any(len(s.arrived) < a.messages for s in subs):
            time.sleep(0.05)

        print("date: %s UTC, commit %s" % (
            time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True).stdout.strip()))
        print("spoold: %s; %d messages, one at a time, mean gap %.0f ms, --heartbeat %d ms"
              % (a.spoold, a.messages, a.gap_ms, a.heartbeat_ms))
        print("%-22s %8s %8s %8s %8s %8s %s" % ("subscriber", "got", "p50 ms", "p90 ms",
                                              "p99 ms", "max ms", "in order"))
        print("%-22s %8d %8.1f %8.1f %8.1f %8.1f" % ("(publish -> 201 on A)", len(acks),
              pct(acks, 50), pct(acks, 90), pct(acks, 99), max(acks)))
        for s in subs:
            lat = [(s.arrived[m] - t) * 1000.0 for m, t in sent.items() if m in s.arrived]
            ok = s.order == list(range(s.order[0], s.order[0] + len(s.order))) if s.order else False
            if not lat:
                print("%-22s %8d" % (s.name, 0))
                continue
            print("%-22s %8d %8.1f %8.1f %8.1f %8.1f %s" % (
                s.name, len(lat), pct(lat, 50), pct(lat, 90), pct(lat, 99), max(lat),
                "yes" if ok else "NO"))
            s.stop()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

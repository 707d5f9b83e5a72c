#!/usr/bin/env python3
"""
Read-your-writes through any node: on a 3-node cluster, each message is published through one
node and, the moment that is acknowledged, read back through the other two (history from its
serial, and the channel status). Default reads go to the shard's leader, so neither may miss it.
`?consistency=replica` is the documented way to accept a possibly stale local read instead.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402

ROUNDS = 100
KILL_ROUNDS = 4


def reads_after_leader_kill(cluster):
    """A publish acknowledged by a shard leader that is killed at once: its followers stored the
    entry but may not know it is committed yet (they learn that from the leader's next message,
    up to a heartbeat later). The next leader must not answer a read before it has applied it."""
    misses = []
    for i in range(KILL_ROUNDS):
        channel = "ryw-kill-%d" % i
        leader, _ = cluster.leader_of(channel)
        assert leader, "no leader reported for %s" % channel
        victim = cluster.nodes[leader]
        st, body = faults.http("POST", "%s/v1/channels/%s/messages" % (victim.url, channel),
                               {"id": "k%d" % i, "data": i})
        assert st == 201, "publish via leader %d: %d %r" % (leader, st, body)
        serial = body["serials"][0]
        victim.kill9()
        # Readers on both survivors keep asking until each has an answer: the first answers come
        # from the next leader right after its election, where a stale leader read would show.
        readers = [n for n in cluster.nodes.values() if n.alive()]
        answers = []

        def read_until_answered(node):
            deadline = time.time() + 20.0
            while time.time() < deadline:
                try:
                    st, hist = faults.http("GET", "%s/v1/channels/%s/messages?from=%d" % (
                        node.url, channel, serial), timeout=20.0)
                except OSError:
                    continue
                if st == 200:
                    answers.append([x["serial"] for x in hist.get("items", [])])
                    return
        threads = [threading.Thread(target=read_until_answered, args=(readers[k % 2],))
                   for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(answers) != len(threads) or any(serial not in got for got in answers):
            misses.append((i, leader, serial, answers))
        victim.start()
        cluster.wait_ready()
    assert not misses, "%d of %d reads after the leader's kill missed its acknowledged publish: %r" % (
        len(misses), KILL_ROUNDS, misses)
    print("read_your_writes: %d publishes acknowledged by a leader killed at once were read through "
          "the next leader" % KILL_ROUNDS)


def check(cluster):
    cluster.start()
    nodes = list(cluster.nodes.values())
    misses = []
    for i in range(ROUNDS):
        a, b, c = nodes[i % 3], nodes[(i + 1) % 3], nodes[(i + 2) % 3]
        channel = "ryw-%d" % (i % 7)
        st, body = faults.http("POST", "%s/v1/channels/%s/messages" % (a.url, channel),
                               {"id": "m%d" % i, "data": i})
        assert st == 201, "publish via node %d: %d %r" % (a.id, st, body)
        serial = body["serials"][0]
        st, hist = faults.http("GET", "%s/v1/channels/%s/messages?from=%d" % (b.url, channel, serial))
        got = [x["serial"] for x in hist.get("items", [])] if st == 200 else []
        st2, status = faults.http("GET", "%s/v1/channels/%s" % (c.url, channel))
        last = status.get("lastSerial", 0) if st2 == 200 else 0
        if serial not in got or last < serial:
            misses.append((i, serial, got, last))
    assert not misses, "%d of %d reads on other nodes missed an acknowledged publish: %r" % (
        len(misses), ROUNDS, misses[:5])
    st, _ = faults.http("GET", "%s/v1/channels/x/messages?consistency=eventual" % nodes[0].url)
    assert st == 400, "a bad consistency value is refused (%d)" % st
    st, _ = faults.http("GET", "%s/v1/channels/x/messages?consistency=replica" % nodes[0].url)
    assert st == 200, "consistency=replica is accepted (%d)" % st
    print("read_your_writes: %d publishes acknowledged by one node were in history and status "
          "read through the other two at once" % ROUNDS)
    reads_after_leader_kill(cluster)
    cluster.stop_all()


if __name__ == "__main__":
    faults.with_cluster("spool-ryw-", check)
    print("1 passed, 0 failed")

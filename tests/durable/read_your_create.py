#!/usr/bin/env python3
"""
Read-your-writes across nodes for Durable Streams: on a 3-node cluster, each stream is created
(PUT) through one node and, the moment that answers, looked up (HEAD) and appended to (POST)
through the other two. A replica that has not applied the create yet must not answer 404: the
lookup then asks the shard's leader. Reuses the cluster harness of tests/cluster/faults.py.
"""
import os
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
import faults  # noqa: E402

STREAMS = 100


def request(method, url, body=None, ctype="text/plain"):
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def check(cluster):
    cluster.start()
    nodes = list(cluster.nodes.values())
    misses = 0
    for i in range(STREAMS):
        a, b, c = nodes[i % 3], nodes[(i + 1) % 3], nodes[(i + 2) % 3]
        name = "ryw-%d" % i
        st = request("PUT", "%s/v1/stream/%s" % (a.url, name))
        assert st in (200, 201), "PUT %s via node %d: %d" % (name, a.id, st)
        head = request("HEAD", "%s/v1/stream/%s" % (b.url, name))
        post = request("POST", "%s/v1/stream/%s" % (c.url, name), b"token")
        if head != 200 or post not in (200, 204):
            misses += 1
            print("read_your_create: %s created via node %d: HEAD via node %d -> %d, "
                  "POST via node %d -> %d" % (name, a.id, b.id, head, c.id, post))
    assert misses == 0, "%d of %d streams not visible on another node right after create" % (
        misses, STREAMS)
    print("read_your_create: %d streams created on one node were found and appended to on "
          "the other two at once" % STREAMS)
    cluster.stop_all()


if __name__ == "__main__":
    faults.with_cluster("spool-ryw-", check)
    print("1 passed, 0 failed")

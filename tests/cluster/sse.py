"""
Reading a channel's SSE stream (GET /v1/channels/<name>/events) from a test or bench driver.

Two pieces, shared by tests/cluster/faults.py, follower_delivery.py, membership.py and
bench/follower_latency.py:

  - events(resp, stop_flag): parses an open text/event-stream response into (id, data) pairs,
    one per event that carried a data: line (id is the int of its id: line, or None), until the
    server closes the stream or stop_flag is set. It owns no connection.
  - Stream: a thread holding ONE stream of one channel on one node, never reconnected, never
    resumed (faults.Subscriber is the reconnecting one). It records (serial, id) of every
    message event in `got`, every serial that is not last + 1 in `errors`, and why the stream
    ended early in `ended` (None while it runs or after stop()). `opened` is set once the
    response status is known. on_message(data) is the hook a driver overrides to record more.

The node is anything with .host and .port (faults.Node, or a SimpleNamespace in a bench).
"""
import http.client as httpclient
import json
import socket
import threading


def events(resp, stop_flag):
    event_id, data = None, None
    while not stop_flag.is_set():
        line = resp.fp.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("data:"):
            data = json.loads(line[5:].strip())
        elif line == "" and data is not None:
            yield event_id, data
            event_id, data = None, None


class Stream(threading.Thread):
    """One SSE stream of `channel` on `node` (from the channel's start unless from_start is
    False: live only), never reconnected."""

    def __init__(self, node, channel, timeout=60.0, from_start=True):
        super().__init__(daemon=True)
        self.node, self.channel = node, channel
        self.timeout, self.from_start = timeout, from_start
        self.got, self.errors, self.ended = [], [], None
        self.conn = None
        self.opened = threading.Event()
        self.stop_flag = threading.Event()

    @property
    def last(self):
        return self.got[-1][0] if self.got else 0

    def on_message(self, data):
        if data["serial"] != self.last + 1:
            self.errors.append("expected serial %d, got %d" % (self.last + 1, data["serial"]))
        self.got.append((data["serial"], data.get("id")))

    def run(self):
        path = "/v1/channels/%s/events" % self.channel
        if self.from_start:
            path += "?from=start"
        try:
            self.conn = httpclient.HTTPConnection(self.node.host, self.node.port,
                                                  timeout=self.timeout)
            self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
            resp = self.conn.getresponse()
            if resp.status != 200:
                self.ended = "HTTP %d" % resp.status
                return
            self.opened.set()
            for _, data in events(resp, self.stop_flag):
                if data.get("type") == "message":
                    self.on_message(data)
            if not self.stop_flag.is_set():
                self.ended = "stream closed by the server"
        except (OSError, httpclient.HTTPException, ValueError) as e:
            if not self.stop_flag.is_set():
                self.ended = "stream error: %r" % e
        finally:
            self.opened.set()
            if self.conn:
                self.conn.close()

    def stop(self):
        """Ends the stream now (does not wait for the next event) and joins the thread."""
        self.stop_flag.set()
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.join(10)

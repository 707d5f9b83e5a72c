// Helpers for the realtime tests: a WebSocket client that queues the server's JSON messages and
// lets a test await the next one matching a predicate (every wait bounded by a timeout), a
// checker that a channel's messages arrive exactly once, in order, with no gap, a JSON-over-HTTP
// request, and an EventSource that records a channel's SSE events and lets a test await one.
'use strict';
const http = require('http');
const WebSocket = require('ws');

const PORT = process.env.PORT;
if (!PORT) throw new Error('PORT is not set');
const BASE = `127.0.0.1:${PORT}`;

function fail(msg) {
  console.error('FAIL:', msg);
  process.exit(1);
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

class Client {
  constructor(query = '', base = BASE) {
    this.queue = [];
    this.waiters = [];
    this.closed = null; // {code, reason} once closed
    this.ws = new WebSocket(`ws://${base}/v1/realtime${query}`);
    this.ws.on('message', (data, isBinary) => {
      let m;
      try { m = JSON.parse(data.toString()); } catch (e) { fail(`server sent non-JSON: ${data}`); }
      if (this.onMessage) this.onMessage(m);
      this.queue.push(m);
      this._wake();
    });
    this.ws.on('close', (code, reason) => { this.closed = {code, reason: reason.toString()}; this._wake(); });
    this.ws.on('error', () => {}); // surfaced through close
  }
  _wake() {
    const ws = this.waiters;
    this.waiters = [];
    ws.forEach((w) => w());
  }
  send(obj) { this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); }
  // The next queued message satisfying pred (removed from the queue), waiting up to ms.
  next(pred = () => true, ms = 10000, what = 'message') {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + ms;
      const look = () => {
        const i = this.queue.findIndex(pred);
        if (i >= 0) return resolve(this.queue.splice(i, 1)[0]);
        if (this.closed) return reject(new Error(`closed (${this.closed.code}) waiting for ${what}`));
        if (Date.now() >= deadline) return reject(new Error(`timeout waiting for ${what}`));
        const t = setTimeout(look, deadline - Date.now());
        this.waiters.push(() => { clearTimeout(t); look(); });
      };
      look();
    });
  }
  type(t, ms, extra = () => true) { return this.next((m) => m.type === t && extra(m), ms, t); }
  waitClose(ms = 10000) {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + ms;
      const look = () => {
        if (this.closed) return resolve(this.closed);
        if (Date.now() >= deadline) return reject(new Error('timeout waiting for close'));
        const t = setTimeout(look, deadline - Date.now());
        this.waiters.push(() => { clearTimeout(t); look(); });
      };
      look();
    });
  }
  close() { this.ws.close(); }
  cut() { this.ws.terminate(); } // drop the TCP connection without a close frame
}

async function connect(query = '', base = BASE) {
  const c = new Client(query, base);
  c.connected = await c.type('connected', 10000);
  return c;
}

let nextMsgSerial = 1; // unique per process, so concurrent publishMany calls never collide

// Publishes `count` messages to channel, `batch` per publish, up to `window` publishes in flight.
// Returns Map serial -> data.i as acknowledged.
async function publishMany(c, channel, count, {batch = 1, window = 8, tag = 'p', start = 0, pad = null} = {}) {
  const bySerial = new Map();
  let next = start, inflight = [];
  while (next < start + count || inflight.length) {
    while (next < start + count && inflight.length < window) {
      const messages = [];
      for (let k = 0; k < batch && next < start + count; k++, next++)
        messages.push({id: `${tag}-${next}`, name: 'n', data: pad ? {i: next, pad} : {i: next}});
      const ms = nextMsgSerial++;
      c.send({type: 'publish', msgSerial: ms, channel, messages});
      inflight.push({ms, messages});
    }
    const f = inflight.shift();
    const ack = await c.next((m) => (m.type === 'ack' || m.type === 'nack') && m.msgSerial === f.ms,
                             15000, `ack ${f.ms}`);
    check(ack.type === 'ack', `publish nacked: ${JSON.stringify(ack)}`);
    ack.serials.forEach((s, k) => bySerial.set(s, f.messages[k].data.i));
  }
  return bySerial;
}

// Follows one channel: records every serial, failing on a gap or a duplicate; reach(serial)
// resolves once that serial has been seen (bounded by a timeout).
class Sequence {
  constructor(channel, name) {
    this.channel = channel; this.name = name; this.last = null; this.got = []; this.waiters = [];
  }
  expectAfter(serial) { if (this.last === null) this.last = serial; }
  add(m) {
    if (m.type !== 'message' || m.channel !== this.channel) return;
    check(this.last !== null, `${this.name}: message before attached`);
    check(m.serial === this.last + 1,
          `${this.name}: expected serial ${this.last + 1}, got ${m.serial} (gap or duplicate)`);
    this.last = m.serial;
    this.got.push(m);
    const ws = this.waiters;
    this.waiters = [];
    ws.forEach((w) => w());
  }
  reach(serial, ms = 15000) {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + ms;
      const look = () => {
        if (this.last !== null && this.last >= serial) return resolve();
        if (Date.now() >= deadline)
          return reject(new Error(`${this.name}: stuck at ${this.last}, waiting for ${serial}`));
        const t = setTimeout(look, deadline - Date.now());
        this.waiters.push(() => { clearTimeout(t); look(); });
      };
      look();
    });
  }
}

// One HTTP request to `base` (host:port, default this test's node) with an optional JSON body;
// resolves {status, body}, body parsed as JSON (null when empty); rejects on a connection error,
// a reply that is not JSON, or after `timeout` ms. `headers` are added to the request.
function request(method, p, body, {base = BASE, headers = {}, timeout = 15000} = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : JSON.stringify(body);
    const h = data ? {...headers, 'Content-Type': 'application/json'} : headers;
    const req = http.request(`http://${base}${p}`, {method, headers: h}, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => {
        try {
          resolve({status: res.statusCode, body: b ? JSON.parse(b) : null});
        } catch (e) {
          reject(new Error(`${method} ${p}: HTTP ${res.statusCode}, not JSON: ${b.slice(0, 200)}`));
        }
      });
    });
    req.setTimeout(timeout, () => req.destroy(new Error(`${method} ${p}: timeout`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// An EventSource on `url` recording every message / ephemeral / interrupt event (with its
// lastEventId) in s.got; s.wait(pred, what) resolves with the first recorded event matching
// pred, within `ms` (the timeout names `label` and what was recorded). s.es.close() ends it.
function followSse(url, {headers, label = 'sse', ms = 10000} = {}) {
  const EventSource = require('eventsource');
  const es = new EventSource(url, headers ? {headers} : undefined);
  const s = {es, got: [], waiters: []};
  const on = (type) => es.addEventListener(type, (ev) => {
    s.got.push({type, lastEventId: ev.lastEventId, data: JSON.parse(ev.data)});
    s.waiters = s.waiters.filter((w) => !w());
  });
  on('message'); on('ephemeral'); on('interrupt');
  s.wait = (pred, what, wms = ms) => new Promise((resolve, reject) => {
    const found = () => { const e = s.got.find(pred); if (e) { clearTimeout(t); resolve(e); return true; } return false; };
    const t = setTimeout(() => reject(new Error(`${label}: timeout waiting for ${what}; got ${JSON.stringify(s.got)}`)), wms);
    if (!found()) s.waiters.push(found);
  });
  return s;
}

function main(fn) {
  const guard = setTimeout(() => fail('test took longer than 100 s'), 100000);
  fn().then(() => { clearTimeout(guard); console.log('ok'); process.exit(0); },
            (e) => fail(e && e.stack ? e.stack : String(e)));
}

module.exports = {BASE, PORT, Client, connect, publishMany, Sequence, request, followSse, check, fail, main};

// Driver of test_presence_failover.sh (read its header). Nodes 1-3 store, node 4 is gateway-only;
// the shell kills / restarts / pauses / resumes nodes when this script prints "KILL <id>" /
// "RESTART <id>" / "STOP <id>" / "CONT <id>" on fd 3
// and answers "done" on stdin.
'use strict';
const fs = require('fs');
const readline = require('readline');
const path = require('path');
const WebSocket = require(path.join(process.env.SPOOL_SOURCE || '../..', 'tests/node/node_modules/ws'));

const PORTS = process.env.PORTS.split(',').map(Number); // index i -> node i + 1
const NODE_TIMEOUT_MS = Number(process.env.NODE_TIMEOUT_MS);
const url = (id) => `127.0.0.1:${PORTS[id - 1]}`;
const TAG = `${process.pid}-${Date.now()}`;

function fail(msg) { console.error('FAIL:', msg); process.exit(1); }
function check(cond, msg) { if (!cond) fail(msg); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- the shell ------------------------------------------------------------------------------
const lines = [];
let lineWaiter = null;
readline.createInterface({input: process.stdin}).on('line', (l) => {
  lines.push(l);
  if (lineWaiter) { const w = lineWaiter; lineWaiter = null; w(); }
});
async function shell(cmd) {
  fs.writeSync(3, cmd + '\n');
  while (!lines.length) await new Promise((r) => { lineWaiter = r; });
  check(lines.shift() === 'done', `shell did not answer ${cmd}`);
}

// --- WebSocket clients ------------------------------------------------------------------------
class Client {
  constructor(id) {
    this.node = id; this.queue = []; this.all = []; this.waiters = []; this.closed = false;
    this.ws = new WebSocket(`ws://${url(id)}/v1/realtime`);
    this.ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      this.queue.push(m); this.all.push(m); this._wake();
    });
    this.ws.on('close', () => { this.closed = true; this._wake(); });
    this.ws.on('error', () => {});
  }
  _wake() { const w = this.waiters; this.waiters = []; w.forEach((f) => f()); }
  send(o) { this.ws.send(JSON.stringify(o)); }
  next(pred, ms, what) {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + ms;
      const look = () => {
        const i = this.queue.findIndex(pred);
        if (i >= 0) return resolve(this.queue.splice(i, 1)[0]);
        if (this.closed) return reject(new Error(`node ${this.node}: closed waiting for ${what}`));
        if (Date.now() >= deadline) return reject(new Error(`node ${this.node}: timeout waiting for ${what}`));
        const t = setTimeout(look, deadline - Date.now());
        this.waiters.push(() => { clearTimeout(t); look(); });
      };
      look();
    });
  }
}
async function connect(id) {
  const c = new Client(id);
  c.connected = await c.next((m) => m.type === 'connected', 10000, 'connected');
  return c;
}
let msgSerial = 1;
async function enter(c, channel, clientId) {
  const ms = msgSerial++;
  c.send({type: 'presence', channel, action: 'enter', clientId, data: {on: c.node}, msgSerial: ms});
  const a = await c.next((m) => (m.type === 'ack' || m.type === 'nack') && m.msgSerial === ms, 15000, `ack ${ms}`);
  check(a.type === 'ack', `enter ${clientId} on ${channel}: ${JSON.stringify(a)}`);
  return a.serials[0];
}
async function members(c, channel) {
  c.send({type: 'presence.get', channel});
  const m = await c.next((x) => (x.type === 'presence.members' || x.type === 'error') && x.channel === channel,
                         15000, `presence.members ${channel}`);
  check(m.type === 'presence.members', `presence.get ${channel}: ${JSON.stringify(m)}`);
  return m.members.map((x) => x.clientId).sort();
}

// --- HTTP ------------------------------------------------------------------------------------
async function http(id, p) {
  const r = await fetch(`http://${url(id)}${p}`);
  return {status: r.status, body: await r.json()};
}
async function leaderOf(id, channel) {
  const r = await http(id, `/v1/channels/${encodeURIComponent(channel)}`);
  check(r.status === 200, `status of ${channel}: ${JSON.stringify(r)}`);
  return {leader: r.body.leader, shard: r.body.shard};
}
async function history(id, channel) {
  const items = [];
  let from = 1;
  for (;;) {
    const r = await http(id, `/v1/channels/${encodeURIComponent(channel)}/messages?from=${from}&limit=1000&rollup=false`);
    check(r.status === 200, `history ${channel}: ${JSON.stringify(r)}`);
    items.push(...r.body.items);
    if (r.body.next === null || !r.body.items.length) return items;
    from = r.body.items[r.body.items.length - 1].serial + 1;
  }
}
// History items are encoded like realtime messages without `type`: a presence record's
// `action` is its presence action.
const presenceItems = (items) => items.filter((x) => ['enter', 'update', 'leave'].includes(x.action));
// An SSE reader (GET /v1/channels/{c}/events?from=start): every event's JSON data, in order.
function sse(id, channel) {
  const s = {events: []};
  s.req = require('http').get({host: '127.0.0.1', port: PORTS[id - 1],
                               path: `/v1/channels/${encodeURIComponent(channel)}/events?from=start`}, (res) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (d) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n\n')) >= 0; buf = buf.slice(i + 2)) {
        const data = buf.slice(0, i).split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
        if (data.length) s.events.push(JSON.parse(data.join('\n')));
      }
    });
  });
  s.req.on('error', () => {});
  return s;
}
async function sseLeaves(s, want, ms) { // waits until the SSE stream holds `want` {clientId: count} leaves
  const count = () => {
    const got = {};
    for (const e of s.events)
      if (e.type === 'presence' && e.action === 'leave') got[e.clientId] = (got[e.clientId] || 0) + 1;
    return Object.fromEntries(Object.entries(got).sort()); // in name order, to compare as JSON
  };
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && JSON.stringify(count()) !== JSON.stringify(want)) await sleep(100);
  return count();
}

const leavesOf = (items, clientId) =>
  presenceItems(items).filter((x) => x.action === 'leave' && x.clientId === clientId);

// Waits until the watcher saw a leave of every name in `want` on `channel`; returns them.
async function awaitLeaves(w, channel, want, ms) {
  const got = {};
  for (const name of want)
    got[name] = await w.next((m) => m.type === 'presence' && m.channel === channel && m.action === 'leave' &&
                              m.clientId === name, ms, `leave of ${name} on ${channel}`);
  return got;
}

async function main() {
  // Channels: A led by the storage node we kill (the leader case), B led by another node if the
  // leaderships allow it (the follower case). Leaders move (rebalancing every 1 s): wait until
  // they stay put for a moment before picking.
  let X = 0, chA = null, chB = null;
  for (let attempt = 0; attempt < 60 && chB === null; attempt++) {
    const a = `pf-a-${TAG}-${attempt}`;
    const la = (await leaderOf(1, a)).leader;
    if (!la) { await sleep(250); continue; }
    for (let i = 0; i < 64; i++) {
      const b = `pf-b-${TAG}-${attempt}-${i}`;
      const lb = (await leaderOf(1, b)).leader;
      if (lb && lb !== la) { chB = b; break; }
    }
    X = la; chA = a;
    if (chB === null) await sleep(500);
  }
  check(chA !== null && X >= 1 && X <= 3, 'no shard leader found');
  const survivors = [1, 2, 3].filter((i) => i !== X);
  const [Y, Z] = survivors;
  const channels = chB ? [chA, chB] : [chA];
  console.log(`killing storage node ${X} (leads ${chA}) and gateway node 4; ` +
              `member stays on node ${Y}; watcher on node ${Z}; follower case: ${chB || 'none'}`);

  const watcher = await connect(Z);
  for (const ch of channels) {
    watcher.send({type: 'attach', channel: ch, from: 'start'});
    await watcher.next((m) => m.type === 'attached' && m.channel === ch, 15000, `attached ${ch}`);
  }
  const gw = await connect(4), onX = await connect(X), onY = await connect(Y);
  const sseA = sse(Y, chA);
  for (const ch of channels) {
    await enter(gw, ch, 'gw-user');
    await enter(onX, ch, 'x-user');
    await enter(onY, ch, 'y-user');
  }
  for (const ch of channels) {
    for (const name of ['gw-user', 'x-user', 'y-user'])
      await watcher.next((m) => m.type === 'presence' && m.channel === ch && m.action === 'enter' &&
                         m.clientId === name, 15000, `enter ${name} on ${ch}`);
    const before = JSON.stringify(await members(watcher, ch));
    check(before === '["gw-user","x-user","y-user"]', `members before on ${ch}: ${before}`);
  }

  // A node that is only slow keeps its members: pause the gateway node for 30% of the timeout.
  await shell('STOP 4');
  await sleep(NODE_TIMEOUT_MS * 0.3);
  await shell('CONT 4');
  await sleep(NODE_TIMEOUT_MS * 1.5);
  check(!watcher.queue.some((m) => m.type === 'presence' && m.action === 'leave'),
        `leaves after a pause: ${JSON.stringify(watcher.queue.filter((m) => m.type === 'presence'))}`);

  const killedAt = Date.now();
  await shell('KILL 4');
  await shell(`KILL ${X}`);
  const bound = NODE_TIMEOUT_MS + 10000; // election (leader case) + reaper tick + commit, with room
  for (const ch of channels) {
    const got = await awaitLeaves(watcher, ch, ['gw-user', 'x-user'], bound - (Date.now() - killedAt));
    check(got['gw-user'].connectionId === gw.connected.connectionId, 'leave names the gateway connection');
    check(got['x-user'].connectionId === onX.connected.connectionId, 'leave names the dead node\'s connection');
  }
  const took = Date.now() - killedAt;
  console.log(`dead members left ${took} ms after the kill (node timeout ${NODE_TIMEOUT_MS} ms)`);
  // The last heartbeat may precede the kill by one interval (timeout / 4).
  check(took >= NODE_TIMEOUT_MS * 0.6, `members left before the node timeout (${took} ms)`);

  // A few more reaper ticks: nothing else may leave (and no leave twice).
  await sleep(Math.max(2000, NODE_TIMEOUT_MS));
  check(!watcher.queue.some((m) => m.type === 'presence' && m.action === 'leave'),
        `unexpected leaves: ${JSON.stringify(watcher.queue.filter((m) => m.type === 'presence'))}`);
  for (const ch of channels) {
    const after = JSON.stringify(await members(watcher, ch));
    check(after === '["y-user"]', `members after on ${ch}: ${after}`);
    const h = await history(Y, ch);
    check(leavesOf(h, 'gw-user').length === 1 && leavesOf(h, 'x-user').length === 1 &&
          leavesOf(h, 'y-user').length === 0,
          `history of ${ch}: ${JSON.stringify(presenceItems(h))}`);
  }
  check(!onY.closed, 'the survivor\'s connection is still open');

  // Restart X on its data; a member enters through it; X is killed and restarted at once: the
  // earlier incarnation's member leaves without waiting for the timeout (X's new heartbeats tell
  // the leaders it restarted), the survivor stays.
  await shell(`RESTART ${X}`);
  const onX2 = await connect(X);
  await enter(onX2, chA, 'x2-user');
  await watcher.next((m) => m.type === 'presence' && m.channel === chA && m.action === 'enter' &&
                     m.clientId === 'x2-user', 15000, 'enter x2-user');
  await shell(`KILL ${X}`);
  const restartAt = Date.now();
  await shell(`RESTART ${X}`);
  await awaitLeaves(watcher, chA, ['x2-user'], bound);
  console.log(`the restarted node's earlier member left ${Date.now() - restartAt} ms after the restart began`);
  await sleep(1000);
  check(JSON.stringify(await members(watcher, chA)) === '["y-user"]', 'members after the restart');
  check(leavesOf(await history(Y, chA), 'x2-user').length === 1, 'x2-user left once');
  const sseGot = await sseLeaves(sseA, {'gw-user': 1, 'x-user': 1, 'x2-user': 1}, 10000);
  check(JSON.stringify(sseGot) === '{"gw-user":1,"x-user":1,"x2-user":1}', `SSE leaves on ${chA}: ${JSON.stringify(sseGot)}`);
  sseA.req.destroy();
  for (const c of [watcher, onY]) c.ws.close();
}

const guard = setTimeout(() => fail('test took longer than 140 s'), 140000);
main().then(() => { clearTimeout(guard); console.log('ok'); process.exit(0); },
            (e) => fail(e.stack || e.message));

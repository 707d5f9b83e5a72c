// spoold --workers 3 (driven by test_workers.sh): connections land on several loops; WebSocket
// subscribers on different loops get every message published over HTTP (new connection per
// publish, so through every loop) with exact serials; an SSE stream resumed with Last-Event-ID
// on another loop continues exactly; /metrics counts connections of every loop. Which loop a
// connection landed on is read from spool_loop_connections_total{loop} over one keep-alive
// scrape connection (its own loop counted once, at its first scrape).
'use strict';
const http = require('http');
const fs = require('fs');
const lib = require(process.env.SPOOL_SOURCE + '/tests/node/lib.js');
const {PORT, Client, check, fail, main} = lib;

const LOOPS = 3;
const CHANNEL = `wk-${process.pid}-${Date.now()}`;
const N = 60;
const scrapeAgent = new http.Agent({keepAlive: true, maxSockets: 1});

function request(method, path, {body = null, headers = {}, agent = false} = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({host: '127.0.0.1', port: PORT, method, path, agent,
                              headers: body ? {'content-type': 'application/json', ...headers} : headers},
      (res) => {
        let data = '';
        res.on('data', (d) => { data += d; });
        res.on('end', () => resolve({status: res.statusCode, body: data}));
      });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`${method} ${path} timed out`)));
    if (body) req.write(body);
    req.end();
  });
}

async function scrape() {
  const r = await request('GET', '/metrics', {agent: scrapeAgent});
  check(r.status === 200, `/metrics ${r.status}`);
  return r.body;
}

function series(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? null : Number(line.split(' ')[1]);
}

function perLoop(text) {
  const v = [];
  for (let i = 0; i < LOOPS; i++) v.push(series(text, `spool_loop_connections_total{loop="${i}"}`) || 0);
  return v;
}

// Runs open() (which must make exactly one new connection send its first request) and returns
// the loop that served it.
async function loopOf(open) {
  const before = perLoop(await scrape());
  const result = await open();
  const after = perLoop(await scrape());
  const moved = after.map((v, i) => v - before[i]);
  check(moved.reduce((a, b) => a + b, 0) === 1, `exactly one new connection counted: ${moved}`);
  return {loop: moved.indexOf(1), result};
}

// SSE over one raw connection: resolves with the events (id, data) until `count` arrived.
function sse(path, headers, count) {
  return new Promise((resolve, reject) => {
    const events = [];
    let buf = '';
    const req = http.get({host: '127.0.0.1', port: PORT, path, headers, agent: false}, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`SSE status ${res.statusCode}`));
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, k);
          buf = buf.slice(k + 2);
          const ev = {};
          for (const line of block.split('\n')) {
            if (line.startsWith('id:')) ev.id = Number(line.slice(3).trim());
            else if (line.startsWith('data:')) ev.data = line.slice(5).trim();
          }
          if (ev.id !== undefined) events.push(ev);
          if (events.length === count) {
            req.destroy();
            return resolve(events);
          }
        }
      });
    });
    req.on('error', (e) => { if (events.length < count) reject(e); });
    req.setTimeout(15000, () => req.destroy(new Error(`SSE: ${events.length}/${count} events`)));
  });
}

main(async () => {
  await scrape(); // the scrape connection's own loop is counted now, once

  // WebSocket subscribers until they sit on at least two loops (each new connection is hashed
  // by the kernel; 12 tries on 3 loops all landing on one has odds ~1e-5).
  const subs = [];
  const subLoops = new Set();
  for (let i = 0; i < 12 && (subs.length < 4 || subLoops.size < 2); i++) {
    const {loop, result: c} = await loopOf(async () => {
      const c = new Client();
      c.connected = await c.type('connected', 10000);
      return c;
    });
    c.loop = loop;
    c.seq = new lib.Sequence(CHANNEL, `sub@loop${loop}`);
    c.onMessage = (m) => {
      if (m.type === 'attached' && m.channel === CHANNEL) c.seq.expectAfter(0);
      c.seq.add(m);
    };
    c.send({type: 'attach', channel: CHANNEL, from: 'start'});
    await c.type('attached', 10000);
    subs.push(c);
    subLoops.add(loop);
  }
  check(subLoops.size >= 2, `WebSocket subscribers on one loop only: ${[...subLoops]}`);

  // /metrics (whichever loop answers) counts the WebSockets of every loop.
  let ws = null;
  for (let i = 0; i < 40; i++) {
    ws = series(await scrape(), 'spool_connections{transport="ws"}');
    if (ws === subs.length) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  check(ws === subs.length, `spool_connections{transport="ws"} is ${ws}, ${subs.length} open on loops ${[...subLoops]}`);

  // Publishes over HTTP, each on a new connection: through every loop.
  const pubLoops = new Set();
  for (let i = 1; i <= N; i++) {
    const {loop, result: r} = await loopOf(() => request('POST', `/v1/channels/${CHANNEL}/messages`,
      {body: JSON.stringify({id: `m${i}`, name: 'n', data: `d${i}`})}));
    check(r.status === 201, `publish ${i}: ${r.status} ${r.body}`);
    check(JSON.parse(r.body).serials[0] === i, `publish ${i} got serial ${r.body}`);
    pubLoops.add(loop);
  }
  check(pubLoops.size >= 2, `publishes all went through one loop: ${[...pubLoops]}`);
  for (const c of subs) {
    await c.seq.reach(N);
    c.seq.got.forEach((m, k) => check(m.serial === k + 1 && m.data === `d${k + 1}`,
                                      `${c.seq.name}: message ${k + 1} is ${JSON.stringify(m)}`));
  }

  // SSE: read 1..20 on one loop, resume with Last-Event-ID: 20 on another loop, read 21..N.
  const first = await loopOf(() => sse(`/v1/channels/${CHANNEL}/events?from=start`, {}, 20));
  check(first.result.map((e) => e.id).join() === Array.from({length: 20}, (_, k) => k + 1).join(),
        `SSE first part: ${first.result.map((e) => e.id)}`);
  let resumed = null;
  for (let i = 0; i < 12 && resumed === null; i++) {
    const r = await loopOf(() => sse(`/v1/channels/${CHANNEL}/events`, {'Last-Event-ID': '20'}, N - 20));
    if (r.loop !== first.loop) resumed = r;
  }
  check(resumed !== null, 'an SSE resume landed on another loop');
  check(resumed.result.map((e) => e.id).join() === Array.from({length: N - 20}, (_, k) => k + 21).join(),
        `SSE resumed on loop ${resumed.loop} after 20 (first part on loop ${first.loop}): ${resumed.result.map((e) => e.id)}`);
  check(resumed.result.every((e) => JSON.parse(e.data).data === `d${e.id}`), 'SSE data matches');

  // Presence across loops (test_workers.sh runs --presence-timeout 2s): a WebSocket that entered
  // a member, cut, and resumed on ANOTHER loop keeps the member past the timeout (no leave); its
  // clean close on the new loop then leaves at once (the new loop owns it). Three rounds: the
  // resume made while the old connection is still open and cut only then (the old loop hands
  // the members over when it sees the end: a claim), cut then resumed at once, and 300 ms later
  // (the old loop parked them first).
  const P = `${CHANNEL}-pres`;
  const watcher = await lib.connect();
  watcher.send({type: 'attach', channel: P, from: 'start'});
  await watcher.type('attached', 5000);
  const presEvent = (action, clientId, ms) =>
    watcher.next((m) => m.type === 'presence' && m.channel === P && m.action === action && m.clientId === clientId,
                 ms, `presence ${action} ${clientId}`);
  const presMoves = [];
  for (const delay of [-1, 0, 300]) {
    const clientId = `pw-${delay}`;
    let key = null;
    const track = (c) => { c.onMessage = (x) => { if (x.type === 'resumeKey') key = x.resumeKey; }; };
    let {loop: curLoop, result: cur} = await loopOf(() => lib.connect());
    track(cur);
    const k0 = await cur.type('resumeKey', 5000); // may have come before track()
    if (key === null) key = k0.resumeKey;
    cur.send({type: 'presence', channel: P, action: 'enter', clientId, data: {d: delay}, msgSerial: 1});
    const ack = await cur.next((m) => (m.type === 'ack' || m.type === 'nack') && m.msgSerial === 1, 5000);
    check(ack.type === 'ack', `presence enter: ${JSON.stringify(ack)}`);
    await presEvent('enter', clientId, 5000);
    let moved = null;
    for (let i = 0; i < 20 && moved === null; i++) { // 20 resumes all on one loop of 3: ~1e-9
      const old = cur;
      if (delay >= 0) old.cut();
      if (delay > 0) await new Promise((res) => setTimeout(res, delay));
      const r = await loopOf(async () => {
        const c = new Client(`?resume=${encodeURIComponent(key)}`);
        track(c);
        const got = await c.next((x) => x.type === 'resumed' || x.type === 'error', 5000, 'resumed');
        check(got.type === 'resumed', `resume (${clientId}): ${JSON.stringify(got)}`);
        await c.type('resumeKey', 5000);
        return c;
      });
      if (delay < 0) old.cut(); // resumed first: on its own loop it was replaced (4000) already
      if (r.loop !== curLoop) moved = `${curLoop}->${r.loop}`;
      curLoop = r.loop;
      cur = r.result;
    }
    check(moved !== null, `no presence resume landed on another loop (${clientId})`);
    presMoves.push(moved);
    await new Promise((res) => setTimeout(res, 2600)); // past the timeout: no leave is the check
    watcher.send({type: 'presence.get', channel: P});
    const m = await watcher.type('presence.members', 5000, (x) => x.channel === P);
    check(m.members.some((x) => x.clientId === clientId),
          `member kept after a resume on loop ${moved}: ${JSON.stringify(m)}`);
    check(!watcher.queue.some((x) => x.type === 'presence' && x.action === 'leave' && x.clientId === clientId),
          `no leave after a resume on loop ${moved} (${clientId})`);
    const closedAt = Date.now();
    cur.close();
    await presEvent('leave', clientId, 5000);
    check(Date.now() - closedAt < 1500, `a clean close on loop ${curLoop} leaves at once (${clientId})`);
  }
  watcher.close();

  // Admin and Durable Streams requests are served by loop 0 (a worker hands the connection
  // over): every answer is the storage node's own view, and a stream's life is seen whole.
  const before = perLoop(await scrape());
  for (let i = 0; i < 9; i++) {
    const r = await request('GET', '/v1/admin/cluster');
    check(r.status === 200, `admin ${r.status} ${r.body}`);
    const c = JSON.parse(r.body);
    check(c.nodes[0].self === true && c.shards.every((x) => x.localState === 'leader'),
          `admin answered by loop 0's node: ${r.body.slice(0, 300)}`);
  }
  const moved = perLoop(await scrape()).map((v, i) => v - before[i]);
  check(moved[1] + moved[2] > 0, `some admin requests arrived on a worker loop: ${moved}`);
  const S = `/v1/stream/${CHANNEL}-ds`;
  let r = await request('PUT', S, {headers: {'content-type': 'text/plain'}});
  check(r.status === 201, `DS create ${r.status} ${r.body}`);
  for (let i = 0; i < 6; i++) {
    r = await request('POST', S, {body: `p${i};`, headers: {'content-type': 'text/plain'}});
    check(r.status === 204 || r.status === 200, `DS append ${i}: ${r.status} ${r.body}`);
    r = await request('GET', `${S}?offset=-1`);
    check(r.status === 200 && r.body === Array.from({length: i + 1}, (_, k) => `p${k};`).join(''),
          `DS read after append ${i}: ${r.status} ${r.body}`);
  }
  r = await request('DELETE', S);
  check(r.status === 204 || r.status === 200, `DS delete ${r.status}`);
  for (let i = 0; i < 6; i++) {
    r = await request('GET', `${S}?offset=-1`);
    check(r.status === 404, `DS read after delete: ${r.status} ${r.body}`);
  }

  // Hand over to the shell for SIGTERM: every WebSocket must be closed with 1001 (going away).
  fs.writeFileSync(process.env.READY_FILE, `${[...subLoops].join(',')}\n`);
  for (const c of subs) {
    const closed = await c.waitClose(20000);
    check(closed.code === 1001, `${c.seq.name} closed with ${closed.code}, not 1001`);
  }
  console.log(`subscribers on loops ${[...subLoops].sort()}, publishes through loops ${[...pubLoops].sort()}, ` +
              `SSE ${first.loop} -> ${resumed.loop}, presence resumed ${presMoves.join(' ')}`);
});

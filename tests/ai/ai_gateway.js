// Ephemeral messages, interrupts and turn expiry across storage nodes and gateway-only nodes
// (docs/ai-semantics.md; run by tests/ai/test_ai_gateway.sh with PORTS = three storage nodes,
// one shard with three replicas, GW_PORTS = two `--role gateway` nodes, PIDS = the storage
// nodes' pids; the second gateway runs --workers 2):
//   1. an ephemeral published on a storage node reaches clients on both gateway-only nodes (every
//      client of the two-loop one, wherever the kernel placed its connection), one
//      published on a gateway-only node reaches storage nodes and the other gateway-only node,
//      once each (the sender's own node does not deliver it twice);
//   2. an interrupt reaches only the turn holder's connections (by client id), wherever they
//      are connected, and is acknowledged with the holder;
//   3. a lease that ends writes one "expire" ai.turn event, seen live, on SSE and in history, also
//      when the shard's leader is killed before the lease ends (the next leader writes it); an
//      ephemeral sent right after the kill still reaches the gateway-only nodes.
'use strict';
const http = require('http');
const path = require('path');
const lib = require(path.join(process.cwd(), 'lib'));
const {connect, check, main} = lib;

const PORTS = process.env.PORTS.split(',').map(Number);
const GW = process.env.GW_PORTS.split(',').map(Number);
const PIDS = process.env.PIDS.split(',').map(Number);
const CH = `ai-gw-${process.pid}-${Date.now()}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const request = (port, method, p, body) => lib.request(method, p, body, {base: `127.0.0.1:${port}`});
const at = (port, q = '') => connect(q, `127.0.0.1:${port}`);
// c.type with the step named in a timeout.
const want = (c, type, what, pred = () => true, ms = 10000) =>
  c.type(type, ms, pred).catch((e) => { throw new Error(`${what}: ${e.message}`); });

async function attached(c, channel) {
  c.send({type: 'attach', channel, from: 'live'});
  await c.type('attached', 10000, (m) => m.channel === channel);
  return c;
}

// Publishes a message and waits until every client has it live: their nodes follow the channel.
let mark = 0;
async function synced(clients, channel) {
  const id = `sync-${++mark}`;
  const r = await request(PORTS[2], 'POST', `/v1/channels/${channel}/messages`, {id, name: 'sync', data: mark});
  check(r.status === 201, `sync publish: ${JSON.stringify(r)}`);
  for (const c of clients) await c.type('message', 15000, (m) => m.channel === channel && m.id === id);
}

const turnEvents = (c, channel) => c.queue.filter((m) => m.type === 'message' && m.channel === channel && m.name === 'ai.turn');

main(async () => {
  // --- 1. ephemerals both ways ---------------------------------------------------------------
  const s1 = await attached(await at(PORTS[0]), CH), s2 = await attached(await at(PORTS[1]), CH);
  const g1 = await attached(await at(GW[0]), CH), g1b = await attached(await at(GW[0]), CH);
  const g2 = await attached(await at(GW[1]), CH);
  const g2more = [];
  for (let i = 0; i < 5; i++) g2more.push(await attached(await at(GW[1]), CH));
  await synced([s1, s2, g1, g1b, g2, ...g2more], CH);
  s1.send({type: 'ephemeral', channel: CH, name: 'typing', clientId: 'alice', data: {n: 1}, msgSerial: 1});
  await s1.type('ack', 10000, (m) => m.msgSerial === 1);
  for (const [c, where] of [[g1, 'gateway 1'], [g1b, 'gateway 1 (b)'], [g2, 'gateway 2'], [s2, 'storage 2'],
                            ...g2more.map((x, i) => [x, `gateway 2 (${i})`])]) {
    const e = await want(c, 'ephemeral', `n=1 on ${where}`, (m) => m.data && m.data.n === 1);
    check(e.name === 'typing' && e.clientId === 'alice' && e.serial === undefined, `${where}: ${JSON.stringify(e)}`);
  }
  g1.send({type: 'ephemeral', channel: CH, name: 'typing', clientId: 'bob', data: {n: 2}, msgSerial: 2});
  const a2 = await g1.type('ack', 10000, (m) => m.msgSerial === 2);
  check(a2.delivered === 1, `the gateway delivers to its own other connection: ${JSON.stringify(a2)}`);
  for (const [c, where] of [[s1, 'storage 1'], [s2, 'storage 2'], [g2, 'gateway 2'], [g1b, 'gateway 1 (b)'],
                            ...g2more.map((x, i) => [x, `gateway 2 (${i})`])]) {
    const e = await want(c, 'ephemeral', `n=2 on ${where}`, (m) => m.data && m.data.n === 2);
    check(e.clientId === 'bob', `${where}: ${JSON.stringify(e)}`);
  }
  // Once each: a marker published after it arrives, and no second copy came before it.
  s2.send({type: 'ephemeral', channel: CH, name: 'marker', data: {n: 3}});
  for (const c of [g1, g1b, g2]) await want(c, 'ephemeral', 'marker n=3', (m) => m.data && m.data.n === 3);
  check(!g1b.queue.some((m) => m.type === 'ephemeral' && m.data && m.data.n === 2), 'gateway 1 delivered its own ephemeral twice');
  check(!g1.queue.some((m) => m.type === 'ephemeral' && m.data && m.data.n === 2), 'the sender got its own ephemeral');

  // --- 2. interrupts reach the holder only -----------------------------------------------------
  const agentGw = await attached(await at(GW[1], '?clientId=agent'), CH);
  const agentSt = await attached(await at(PORTS[1], '?clientId=agent'), CH);
  const userGw = await attached(await at(GW[0], '?clientId=user'), CH);
  await synced([agentGw, agentSt, userGw, s1, g2], CH);
  const claim = await request(PORTS[0], 'POST', `/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'agent', ttlMs: 60000});
  check(claim.status === 200, `claim: ${JSON.stringify(claim)}`);
  const t0 = Date.now();
  userGw.send({type: 'interrupt', channel: CH, data: {reason: 'stop'}, msgSerial: 10});
  for (const [c, where] of [[agentGw, 'gateway 2'], [agentSt, 'storage 2']]) {
    const i = await want(c, 'interrupt', `interrupt on ${where}`);
    check(i.holder === 'agent' && i.epoch === claim.body.epoch && i.data.reason === 'stop' && i.clientId === 'user',
          `interrupt on ${where}: ${JSON.stringify(i)}`);
  }
  console.log(`interrupt from a gateway-only node reached the holder on both kinds of node in ${Date.now() - t0} ms`);
  const ia = await userGw.type('ack', 10000, (m) => m.msgSerial === 10);
  check(ia.holder === 'agent' && ia.epoch === claim.body.epoch, `interrupt ack: ${JSON.stringify(ia)}`);
  s1.send({type: 'interrupt', channel: CH, data: {reason: 'again'}});
  await want(agentGw, 'interrupt', 'second interrupt on gateway 2', (m) => m.data.reason === 'again');
  s2.send({type: 'ephemeral', channel: CH, name: 'marker', data: {n: 4}});
  for (const c of [s1, g1, g1b, g2, userGw]) {
    await want(c, 'ephemeral', 'marker n=4', (m) => m.data && m.data.n === 4);
    check(!c.queue.some((m) => m.type === 'interrupt'), `an observer got the interrupt: ${JSON.stringify(c.queue)}`);
  }
  const rel = await request(PORTS[1], 'POST', `/v1/channels/${CH}/turn`, {action: 'release', clientId: 'agent'});
  check(rel.status === 200, `release: ${JSON.stringify(rel)}`);
  g2.send({type: 'interrupt', channel: CH, data: {}, msgSerial: 11});
  const nack = await g2.next((m) => m.msgSerial === 11, 10000, 'interrupt answer');
  check(nack.type === 'nack' && nack.error.code === 40901, `interrupt without a holder: ${JSON.stringify(nack)}`);

  // --- 3. lease expiry is one event, live and in history --------------------------------------
  const c1 = await request(GW[0], 'POST', `/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'agent', ttlMs: 800});
  check(c1.status === 200, `short claim: ${JSON.stringify(c1)}`);
  const ev = await g2.type('message', 10000, (m) => m.name === 'ai.turn' && m.data.op === 'expire');
  check(ev.turnEpoch === c1.body.epoch && ev.data.previousHolder === 'agent' && ev.data.expiredAt === c1.body.expiresAt &&
        ev.timestamp >= c1.body.expiresAt, `expire event: ${JSON.stringify(ev)}`);
  const late = await request(PORTS[1], 'POST', `/v1/channels/${CH}/messages`,
                             {clientId: 'agent', data: 'late', turnEpoch: c1.body.epoch});
  check(late.status === 409 && /expired/.test(late.body.error.message), `publish after expiry: ${JSON.stringify(late)}`);

  // The leader dies while a lease runs: the next leader writes the expiry, once.
  const st = await request(PORTS[0], 'GET', `/v1/channels/${CH}`);
  check(st.status === 200 && st.body.leader >= 1 && st.body.leader <= 3, `status: ${JSON.stringify(st)}`);
  const leader = st.body.leader;
  const alive = [0, 1, 2].filter((i) => i !== leader - 1);
  const c2 = await request(PORTS[alive[0]], 'POST', `/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'agent2', ttlMs: 1500});
  check(c2.status === 200, `claim before the leader dies: ${JSON.stringify(c2)}`);
  process.kill(PIDS[leader - 1], 'SIGKILL');
  console.log(`killed the shard's leader, node ${leader}`);
  // An ephemeral sent while the gateway-only nodes' polls are stuck at the dead leader still
  // reaches them: the next leader replays the last seconds to a poll that moved there.
  const survivor = [s1, s2][alive[0]];
  survivor.send({type: 'ephemeral', channel: CH, name: 'typing', data: {n: 6}});
  for (const [c, where] of [[g1, 'gateway 1'], [g2, 'gateway 2']])
    await want(c, 'ephemeral', `n=6 on ${where} across the leader change`, (m) => m.data && m.data.n === 6, 20000);
  const ev2 = await g1.type('message', 20000, (m) => m.name === 'ai.turn' && m.data.op === 'expire' && m.turnEpoch === c2.body.epoch);
  check(ev2.data.previousHolder === 'agent2', `expire after the leader change: ${JSON.stringify(ev2)}`);
  await sleep(2500); // more than a retry interval: a second proposal would be written by now
  const h = await request(PORTS[alive[1]], 'GET', `/v1/channels/${CH}/messages?rollup=false&limit=1000`);
  check(h.status === 200, `history: ${JSON.stringify(h)}`);
  const expires = h.body.items.filter((m) => m.name === 'ai.turn' && m.data.op === 'expire');
  check(expires.length === 2 && expires[0].turnEpoch === c1.body.epoch && expires[1].turnEpoch === c2.body.epoch &&
        expires[1].serial === ev2.serial, `one expire per lease in history: ${JSON.stringify(expires)}`);
  const live = turnEvents(g1, CH).filter((m) => m.data.op === 'expire'); // ev2 was taken already
  check(live.length === 1 && live[0].turnEpoch === c1.body.epoch, `expire events live on gateway 1: ${JSON.stringify(live)}`);
  // SSE (through the gateway-only node) carries the same two expire events.
  const sse = await new Promise((resolve, reject) => {
    const req = http.get({host: '127.0.0.1', port: GW[0], path: `/v1/channels/${CH}/events?from=start`,
                          headers: {Accept: 'text/event-stream'}}, (res) => {
      let buf = '';
      const found = [];
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          let e = null;
          try { e = data ? JSON.parse(data) : null; } catch (_) { e = null; }
          if (e && e.name === 'ai.turn' && e.data && e.data.op === 'expire') found.push(e.serial);
          if (e && e.serial >= h.body.items[h.body.items.length - 1].serial) { req.destroy(); resolve(found); }
        }
      });
    });
    req.on('error', (err) => { if (!req.destroyed) reject(err); });
    req.setTimeout(15000, () => { req.destroy(); reject(new Error('SSE timeout')); });
  });
  check(sse.length === 2 && sse[0] === expires[0].serial && sse[1] === expires[1].serial, `expire events on SSE: ${JSON.stringify(sse)}`);
  // An ephemeral sent on the two-loop gateway reaches its other loop's clients too.
  g2more[0].send({type: 'ephemeral', channel: CH, name: 'typing', data: {n: 5}});
  for (const c of [g2, ...g2more.slice(1), g1]) await want(c, 'ephemeral', 'n=5 from the two-loop gateway', (m) => m.data && m.data.n === 5);
  for (const c of [s1, s2, g1, g1b, g2, agentGw, agentSt, userGw, ...g2more]) c.close();
});

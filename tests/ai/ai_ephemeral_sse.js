// Ephemeral messages and interrupts on SSE streams (gateway/sse.h, gateway/ai_ephemeral.h): an
// EventSource following the channel gets a typing ephemeral published over WebSocket as
// `event: ephemeral` with the same JSON a WebSocket client gets and no id: line (lastEventId stays
// the last stored serial); an interrupt reaches only the stream whose ?clientId= is the turn
// holder, as `event: interrupt`; reconnecting with Last-Event-ID continues exactly after the last
// stored serial and replays no ephemeral; a stream that does not read skips ephemerals past its
// send buffer instead of growing, and is not ended for them. A bad ?clientId= is a 400. Run by
// tests/ai/test_ai_semantics.sh.
'use strict';
const http = require('http');
const net = require('net');
const path = require('path');
const {BASE, connect, request, followSse, check, main} = require(path.join(process.cwd(), 'lib'));

const CH = `ai-eph-sse-${process.pid}-${Date.now()}`;
const URL_ = `http://${BASE}/v1/channels/${encodeURIComponent(CH)}/events`;

const post = (p, body) => request('POST', p, body);

// Raw stream data: `until` resolves when pred() holds, checked on every chunk that arrives.
let rawWaiters = [];
const rawArrived = () => { rawWaiters = rawWaiters.filter((w) => !w()); };
function until(pred, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${what}`)), ms);
    const w = () => { if (!pred()) return false; clearTimeout(t); resolve(); return true; };
    if (!w()) rawWaiters.push(w);
  });
}

function getStatus(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({status: res.statusCode, body: b}));
    }).on('error', reject);
  });
}

// An EventSource recording every event of the three types (with its lastEventId) in `got`.
const follow = (query, headers) => followSse(`${URL_}${query}`, {headers});

async function publish(ws, n, i) {
  ws.send({type: 'publish', channel: CH, msgSerial: n, messages: [{name: 'token', data: {i}}]});
  const a = await ws.type('ack', 10000, (m) => m.msgSerial === n);
  check(a.serials && a.serials.length === 1, `publish ack: ${JSON.stringify(a)}`);
  return a.serials[0];
}

main(async () => {
  const user = await connect();
  const s1 = await publish(user, 1, 1);
  const s2 = await publish(user, 2, 2);
  const agent = follow('?from=start&clientId=agent');
  const bob = follow('?from=start&clientId=bob');
  for (const s of [agent, bob])
    await s.wait((e) => e.type === 'message' && e.data.serial === s2, 'the stored messages');
  check(agent.got.filter((e) => e.type === 'message').map((e) => e.data.serial).join() === `${s1},${s2}`,
        `stored messages: ${JSON.stringify(agent.got)}`);

  // A typing ephemeral over WebSocket: both streams, event type ephemeral, no id (lastEventId kept).
  user.send({type: 'ephemeral', channel: CH, name: 'typing', data: {on: true}, clientId: 'alice', msgSerial: 3});
  const ack = await user.type('ack', 10000, (m) => m.msgSerial === 3);
  check(ack.delivered === 2 && ack.serials.length === 0, `ephemeral ack counts the SSE streams: ${JSON.stringify(ack)}`);
  for (const s of [agent, bob]) {
    const e = await s.wait((x) => x.type === 'ephemeral', 'the typing ephemeral');
    check(e.data.type === 'ephemeral' && e.data.channel === CH && e.data.name === 'typing' && e.data.data.on === true &&
          e.data.clientId === 'alice' && e.data.serial === undefined && typeof e.data.timestamp === 'number',
          `ephemeral data: ${JSON.stringify(e)}`);
    check(e.lastEventId === String(s2), `an ephemeral must not move lastEventId: ${JSON.stringify(e)}`);
  }

  // Interrupt: only the stream whose clientId is the turn holder.
  const claim = await post(`/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'agent', ttlMs: 60000});
  check(claim.status === 200, `claim: ${JSON.stringify(claim)}`);
  user.send({type: 'interrupt', channel: CH, data: {reason: 'stop'}, msgSerial: 4});
  const iack = await user.type('ack', 10000, (m) => m.msgSerial === 4);
  check(iack.delivered === 1 && iack.holder === 'agent', `interrupt ack: ${JSON.stringify(iack)}`);
  const intr = await agent.wait((x) => x.type === 'interrupt', 'the interrupt');
  check(intr.data.type === 'interrupt' && intr.data.to === 'turn' && intr.data.holder === 'agent' &&
        intr.data.epoch === claim.body.epoch && intr.data.data.reason === 'stop' && intr.data.channel === CH,
        `interrupt data: ${JSON.stringify(intr)}`);
  user.send({type: 'ephemeral', channel: CH, name: 'marker', msgSerial: 5});
  await user.type('ack', 10000, (m) => m.msgSerial === 5);
  await bob.wait((x) => x.type === 'ephemeral' && x.data.name === 'marker', 'the marker');
  await agent.wait((x) => x.type === 'ephemeral' && x.data.name === 'marker', 'the marker');
  check(!bob.got.some((x) => x.type === 'interrupt'), `a stream that is not the holder got the interrupt: ${JSON.stringify(bob.got)}`);
  const stored = agent.got.filter((e) => e.type === 'message').map((e) => e.data.serial);
  const last = stored[stored.length - 1];
  check(last === claim.body.serial, `the turn record is the last stored event: ${stored} vs ${claim.body.serial}`);
  check(agent.got.filter((e) => e.type !== 'message').every((e) => Number(e.lastEventId) <= last),
        'ephemeral events carry the last stored serial');
  agent.es.close();
  bob.es.close();

  // Reconnect with Last-Event-ID: exactly the stored messages after it, no ephemeral replayed.
  const s6 = await publish(user, 6, 6);
  const again = follow('?clientId=agent', {'Last-Event-ID': String(last)});
  await again.wait((e) => e.type === 'message' && e.data.serial === s6, 'the message after the reconnect');
  const s7 = await publish(user, 7, 7);
  await again.wait((e) => e.type === 'message' && e.data.serial === s7, 'a live message after the reconnect');
  check(again.got.map((e) => `${e.type}:${e.data.serial}:${e.lastEventId}`).join() === `message:${s6}:${s6},message:${s7}:${s7}`,
        `resume after Last-Event-ID ${last}: ${JSON.stringify(again.got)}`);
  user.send({type: 'ephemeral', channel: CH, name: 'typing', data: {on: false}, msgSerial: 8});
  const e2 = await again.wait((x) => x.type === 'ephemeral', 'an ephemeral after the reconnect');
  check(e2.data.data.on === false && e2.lastEventId === String(s7), `ephemeral after the reconnect: ${JSON.stringify(e2)}`);
  again.es.close();

  // Slow stream: one that does not read gets ephemerals until its queue passes --send-buffer-bytes,
  // then skips them (delivered 0) instead of growing, and is not ended: once it reads again it
  // gets the next ephemeral and the next stored message.
  const sock = net.connect(Number(BASE.split(':')[1]), '127.0.0.1');
  let body = '';
  sock.setEncoding('utf8');
  sock.on('data', (d) => { body += d; rawArrived(); });
  sock.write(`GET /v1/channels/${encodeURIComponent(CH)}/events HTTP/1.1\r\nHost: ${BASE}\r\n\r\n`);
  await until(() => /: attached \d+/.test(body), 'the raw stream attached');
  sock.pause();
  const PAD = 'e'.repeat(200000);
  const delivered = [];
  for (let i = 0; i < 150; i++) {
    user.send({type: 'ephemeral', channel: CH, name: 'bulk', data: {i, pad: PAD}, msgSerial: 100 + i});
    const a = await user.type('ack', 10000, (m) => m.msgSerial === 100 + i);
    delivered.push(a.delivered);
  }
  const lastSent = delivered.lastIndexOf(1);
  check(delivered[0] === 1 && delivered.filter((d) => d === 0).length > 0 && lastSent < 149,
        `a stream over its send buffer skips ephemerals: delivered ${delivered.join('')}`);
  sock.resume();
  await until(() => body.includes(`"i":${lastSent},`), 'the ephemerals queued before the bound', 30000);
  user.send({type: 'ephemeral', channel: CH, name: 'after', data: {n: 1}, msgSerial: 300});
  const after = await user.type('ack', 10000, (m) => m.msgSerial === 300);
  check(after.delivered === 1, `the stream gets ephemerals again once it reads: ${JSON.stringify(after)}`);
  const s9 = await publish(user, 301, 9);
  await until(() => body.includes(`id: ${s9}\n`) && body.includes('"name":"after"'), 'the stream still open after the skips');
  const got = (body.match(/^event: ephemeral$/gm) || []).length;
  check(got === delivered.filter((d) => d === 1).length + 1, `every ephemeral queued before the bound and the one after it, once: ${got}`);
  check(!/^id: /m.test(body.slice(0, body.indexOf(`id: ${s9}\n`))), 'an ephemeral came with an id: line');
  sock.destroy();

  // ?clientId= must be 1..N bytes.
  const bad = await getStatus(`${URL_}?clientId=`);
  check(bad.status === 400 && JSON.parse(bad.body).error.code === 40003, `empty clientId: ${bad.status} ${bad.body}`);
  user.close();
});

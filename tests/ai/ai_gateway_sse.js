// Ephemeral messages and interrupts on SSE streams across node kinds (run by
// tests/ai/test_ai_gateway.sh before ai_gateway.js, same PORTS / GW_PORTS; the second gateway-only
// node runs --workers 2): EventSource streams on a storage node and on both gateway-only nodes
// (several on the two-loop one, so both loops have some wherever the kernel placed them) get an
// ephemeral sent on a storage node and one sent on a gateway-only node, once each, as
// `event: ephemeral` with lastEventId unchanged; an interrupt reaches only the streams whose
// ?clientId= is the turn holder, on every node kind.
'use strict';
const http = require('http');
const path = require('path');
const {connect, request, followSse, check, main} = require(path.join(process.cwd(), 'lib'));

const PORTS = process.env.PORTS.split(',').map(Number);
const GW = process.env.GW_PORTS.split(',').map(Number);
const CH = `ai-gw-sse-${process.pid}-${Date.now()}`;

const post = (port, p, body) => request('POST', p, body, {base: `127.0.0.1:${port}`});

// An EventSource on `port` recording its message / ephemeral / interrupt events.
function follow(port, clientId, where) {
  const url = `http://127.0.0.1:${port}/v1/channels/${encodeURIComponent(CH)}/events?from=start&clientId=${clientId}`;
  return Object.assign(followSse(url, {label: where, ms: 15000}), {where, clientId});
}

// Publishes a stored message and waits until every stream has it (their nodes follow the channel).
// The streams read from the start of this fresh channel: a live stream whose request reached its
// node after the first publish would rightly miss it (an EventSource's open does not mean attached).
let mark = 0;
async function synced(streams) {
  const id = `sync-${++mark}`;
  const r = await post(PORTS[2], `/v1/channels/${CH}/messages`, {id, name: 'sync', data: mark});
  check(r.status === 201, `sync publish: ${JSON.stringify(r)}`);
  for (const s of streams) await s.wait((e) => e.type === 'message' && e.data.id === id, id);
  return r.body.serial !== undefined ? r.body.serial : r.body.serials[0];
}

const count = (s, pred) => s.got.filter(pred).length;

main(async () => {
  const streams = [follow(PORTS[0], 'bob', 'storage 1'), follow(PORTS[1], 'agent', 'storage 2'),
                   follow(GW[0], 'agent', 'gateway 1'), follow(GW[0], 'bob', 'gateway 1 (b)')];
  for (let i = 0; i < 6; i++) streams.push(follow(GW[1], i % 2 ? 'agent' : 'bob', `gateway 2 (${i})`));
  const last = await synced(streams);
  const wsStorage = await connect('', `127.0.0.1:${PORTS[1]}`), wsGw = await connect('', `127.0.0.1:${GW[0]}`);

  // An ephemeral sent on a storage node, then one on a gateway-only node: every stream, once.
  wsStorage.send({type: 'ephemeral', channel: CH, name: 'typing', clientId: 'alice', data: {n: 1}, msgSerial: 1});
  await wsStorage.type('ack', 10000, (m) => m.msgSerial === 1);
  wsGw.send({type: 'ephemeral', channel: CH, name: 'typing', clientId: 'carol', data: {n: 2}, msgSerial: 2});
  const a2 = await wsGw.type('ack', 10000, (m) => m.msgSerial === 2);
  check(a2.delivered === 2, `the gateway-only node counts its two SSE streams: ${JSON.stringify(a2)}`);
  for (const s of streams) {
    for (const n of [1, 2]) {
      const e = await s.wait((x) => x.type === 'ephemeral' && x.data.data.n === n, `ephemeral n=${n}`);
      check(e.data.type === 'ephemeral' && e.data.name === 'typing' && e.data.clientId === (n === 1 ? 'alice' : 'carol') &&
            e.lastEventId === String(last), `${s.where}: ephemeral n=${n}: ${JSON.stringify(e)}`);
    }
  }

  // An interrupt from the gateway-only node: the holder's streams only, on every node kind.
  const claim = await post(PORTS[0], `/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'agent', ttlMs: 60000});
  check(claim.status === 200, `claim: ${JSON.stringify(claim)}`);
  wsGw.send({type: 'interrupt', channel: CH, data: {reason: 'stop'}, msgSerial: 3});
  const ia = await wsGw.type('ack', 10000, (m) => m.msgSerial === 3);
  check(ia.holder === 'agent' && ia.delivered === 1, `interrupt ack: ${JSON.stringify(ia)}`);
  for (const s of streams.filter((x) => x.clientId === 'agent')) {
    const e = await s.wait((x) => x.type === 'interrupt', 'the interrupt');
    check(e.data.holder === 'agent' && e.data.epoch === claim.body.epoch && e.data.data.reason === 'stop',
          `${s.where}: interrupt: ${JSON.stringify(e)}`);
  }
  // A marker sent after it, and a stored message: then no stream has a duplicate, no observer
  // stream has the interrupt.
  wsStorage.send({type: 'ephemeral', channel: CH, name: 'marker', data: {n: 3}, msgSerial: 4});
  await wsStorage.type('ack', 10000, (m) => m.msgSerial === 4);
  for (const s of streams) await s.wait((x) => x.type === 'ephemeral' && x.data.data.n === 3, 'the marker');
  await synced(streams);
  for (const s of streams) {
    check(count(s, (x) => x.type === 'ephemeral') === 3, `${s.where}: ephemerals once each: ${JSON.stringify(s.got)}`);
    check(count(s, (x) => x.type === 'interrupt') === (s.clientId === 'agent' ? 1 : 0),
          `${s.where} (${s.clientId}): interrupts: ${JSON.stringify(s.got)}`);
  }
  for (const s of streams) s.es.close();
  wsStorage.close(); wsGw.close();
});

// AI semantics across a 3-node cluster (tests/ai/test_ai_cluster.sh): the response is created on
// node 1 and appended through nodes 2 and 3 (forwarded to the shard leader); refusals keep their
// status and reason through forwarding; a late reader on another node gets the rolled-up
// response; a turn claimed through one node fences publishes through another.
'use strict';
const path = require('path');
const lib = require(path.join(process.cwd(), 'lib'));
const {connect, check, main} = lib;

const PORTS = process.env.PORTS.split(',').map(Number);
const CH = `ai-cluster-${process.pid}-${Date.now()}`;

const request = (port, method, p, body) => lib.request(method, p, body, {base: `127.0.0.1:${port}`});
const post = (i, body) => request(PORTS[i], 'POST', `/v1/channels/${CH}/messages`, body);

main(async () => {
  const c = await post(0, {clientId: 'agent', data: 'A:'});
  check(c.status === 201, `create: ${JSON.stringify(c)}`);
  const M = c.body.serials[0];
  let full = 'A:', last = M;
  for (let i = 0; i < 30; i++) {
    const r = await post(i % 3, {clientId: 'agent', action: 'append', refSerial: M, data: ` ${i}`,
                                 extras: i === 29 ? {final: true} : undefined});
    check(r.status === 201, `append ${i} via node ${i % 3 + 1}: ${JSON.stringify(r)}`);
    full += ` ${i}`;
    last = r.body.serials[0];
  }
  for (let n = 0; n < 3; n++) {
    const r = await post(n, {clientId: 'agent', action: 'append', refSerial: M, data: 'x'});
    check(r.status === 409 && /is final/.test(r.body.error.message), `via node ${n + 1}: ${JSON.stringify(r)}`);
  }
  const late = await connect('?clientId=op', `127.0.0.1:${PORTS[2]}`); // the turn's holder below
  late.send({type: 'attach', channel: CH, from: 'start'});
  await late.type('attached', 10000);
  const m = await late.type('message', 10000);
  check(m.rollup && m.serial === last && m.data === full, `rolled up on node 3: ${JSON.stringify(m)}`);
  const claim = await request(PORTS[1], 'POST', `/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'agent', ttlMs: 60000});
  check(claim.status === 200 && claim.body.epoch === claim.body.serial, `claim via node 2: ${JSON.stringify(claim)}`);
  const take = await request(PORTS[0], 'POST', `/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'op', ttlMs: 60000, takeover: true});
  check(take.status === 200 && take.body.epoch > claim.body.epoch, `take-over via node 1: ${JSON.stringify(take)}`);
  const stale = await post(2, {clientId: 'agent', data: 'late', turnEpoch: claim.body.epoch});
  check(stale.status === 409 && new RegExp(`stale turn epoch ${claim.body.epoch}:`).test(stale.body.error.message), `stale via node 3: ${JSON.stringify(stale)}`);

  // Ephemeral messages and interrupts cross nodes without the log: sent on node 1, received by
  // connections on nodes 2 and 3 (the interrupt by the turn holder's, "op"), nothing stored.
  const before = (await request(PORTS[0], 'GET', `/v1/channels/${CH}`)).body.lastSerial;
  const on2 = await connect('', `127.0.0.1:${PORTS[1]}`);
  on2.send({type: 'attach', channel: CH, from: 'live'});
  await on2.type('attached', 10000);
  const sender = await connect('', `127.0.0.1:${PORTS[0]}`);
  sender.send({type: 'ephemeral', channel: CH, name: 'typing', clientId: 'alice', data: {on: true}, msgSerial: 1});
  await sender.type('ack', 10000, (m) => m.msgSerial === 1);
  const e2 = await on2.type('ephemeral', 10000);
  const e3 = await late.type('ephemeral', 10000);
  check(e2.name === 'typing' && e2.clientId === 'alice' && e2.data.on === true && e3.name === 'typing',
        `ephemeral across nodes: ${JSON.stringify(e2)} ${JSON.stringify(e3)}`);
  sender.send({type: 'interrupt', channel: CH, data: {reason: 'stop'}});
  const i3 = await late.type('interrupt', 10000);
  check(i3.to === 'turn' && i3.holder === 'op' && i3.data.reason === 'stop', `interrupt across nodes: ${JSON.stringify(i3)}`);
  const after = (await request(PORTS[2], 'GET', `/v1/channels/${CH}`)).body.lastSerial;
  check(after === before, `ephemeral messages were stored: ${before} -> ${after}`);
  late.close(); on2.close(); sender.close();
});

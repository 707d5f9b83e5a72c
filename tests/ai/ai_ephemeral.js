// Ephemeral messages and interrupts (gateway/ai_ephemeral.h): delivered live to the other
// connections attached to the channel, acknowledged with the count, never stored (no serial, no
// history), not sent to connections that are not attached; an interrupt reaches only the turn
// holder's connection (by client id), within one round trip, and is refused (40901) when nobody
// holds the turn. Run by tests/ai/test_ai_semantics.sh.
'use strict';
const path = require('path');
const {connect, request, check, main} = require(path.join(process.cwd(), 'lib'));

const CH = `ai-eph-${process.pid}-${Date.now()}`;

const post = (p, body) => request('POST', p, body);

const get = (p) => request('GET', p);

main(async () => {
  const user = await connect(), agent = await connect('?clientId=agent'), other = await connect();
  const observer = await connect('?clientId=bob');
  check(agent.connected.clientId === 'agent', `?clientId names the connection: ${JSON.stringify(agent.connected)}`);
  for (const c of [user, agent, observer]) {
    c.send({type: 'attach', channel: CH, from: 'live'});
    await c.type('attached', 10000);
  }
  user.send({type: 'ephemeral', channel: CH, name: 'typing', data: {on: true}, clientId: 'alice', msgSerial: 1});
  const ack = await user.type('ack', 10000, (m) => m.msgSerial === 1);
  check(ack.delivered === 2 && ack.serials.length === 0, `ack: ${JSON.stringify(ack)}`);
  const ev = await agent.type('ephemeral', 10000);
  check(ev.channel === CH && ev.name === 'typing' && ev.data.on === true && ev.clientId === 'alice' && ev.serial === undefined,
        `ephemeral event: ${JSON.stringify(ev)}`);
  other.send({type: 'ping'});
  await other.type('pong', 10000);
  check(!other.queue.some((m) => m.type === 'ephemeral'), 'a connection not attached got the ephemeral message');
  check(!user.queue.some((m) => m.type === 'ephemeral'), 'the sender got its own ephemeral message');

  // Nobody holds the turn: the interrupt is refused and nobody gets it.
  user.send({type: 'interrupt', channel: CH, data: {reason: 'stop'}, msgSerial: 2});
  const none = await user.next((m) => m.msgSerial === 2, 10000, 'interrupt answer');
  check(none.type === 'nack' && none.error.code === 40901, `interrupt without a holder: ${JSON.stringify(none)}`);
  const claim = await post(`/v1/channels/${CH}/turn`, {action: 'claim', clientId: 'agent', ttlMs: 60000});
  check(claim.status === 200, `claim: ${JSON.stringify(claim)}`);
  const t0 = Date.now();
  user.send({type: 'interrupt', channel: CH, data: {reason: 'stop'}, msgSerial: 3});
  const intr = await agent.type('interrupt', 10000);
  check(intr.to === 'turn' && intr.holder === 'agent' && intr.epoch === claim.body.epoch && intr.data.reason === 'stop',
        `interrupt: ${JSON.stringify(intr)}`);
  console.log(`interrupt delivered in ${Date.now() - t0} ms`);
  const iack = await user.type('ack', 10000, (m) => m.msgSerial === 3);
  check(iack.delivered === 1 && iack.holder === 'agent' && iack.epoch === claim.body.epoch, `interrupt ack: ${JSON.stringify(iack)}`);
  // Only the holder: the observer gets the next ephemeral but never the interrupt before it.
  user.send({type: 'ephemeral', channel: CH, name: 'marker', msgSerial: 4});
  await observer.type('ephemeral', 10000, (m) => m.name === 'marker');
  check(!observer.queue.some((m) => m.type === 'interrupt'), 'an observer got the interrupt');

  const h = await get(`/v1/channels/${CH}`);
  check(h.status === 200 && h.body.lastSerial === claim.body.serial, `ephemeral messages were stored: ${JSON.stringify(h.body)}`);
  user.send({type: 'ephemeral', data: 1});
  const err = await user.type('error', 10000);
  check(err.error.code === 40002, `no channel: ${JSON.stringify(err)}`);
  user.close(); agent.close(); other.close(); observer.close();
});

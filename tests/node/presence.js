// Presence: enter/update/leave are records in the channel (delivered in order with serials),
// presence.get folds them into members valid at a serial, a connection that drops leaves after
// --presence-timeout (2 s here) unless it resumes first, a clean close leaves at once, and a
// member needs a clientId.
'use strict';
const {Client, connect, check, main} = require('./lib');

const P = `pres-${process.pid}-${Date.now()}`;

async function enter(c, clientId, action, data, msgSerial) {
  c.send({type: 'presence', channel: P, action, clientId, data, msgSerial});
  const a = await c.next((m) => (m.type === 'ack' || m.type === 'nack') && m.msgSerial === msgSerial, 5000);
  check(a.type === 'ack', `presence ${action} acked: ${JSON.stringify(a)}`);
  return a.serials[0];
}

async function members(c) {
  c.send({type: 'presence.get', channel: P});
  const m = await c.type('presence.members', 5000, (x) => x.channel === P);
  return m;
}

const event = (c, action, clientId, ms = 5000) =>
  c.next((m) => m.type === 'presence' && m.channel === P && m.action === action && m.clientId === clientId,
         ms, `presence ${action} ${clientId}`);

main(async () => {
  const watcher = await connect();
  watcher.send({type: 'attach', channel: P, from: 'start'});
  await watcher.type('attached', 5000);

  const a = await connect();
  const s1 = await enter(a, 'alice', 'enter', {status: 'here'}, 1);
  const e1 = await event(watcher, 'enter', 'alice');
  check(e1.serial === s1 && e1.connectionId === a.connected.connectionId &&
        e1.data.status === 'here', `enter event: ${JSON.stringify(e1)}`);
  let m = await members(watcher);
  check(m.members.length === 1 && m.members[0].clientId === 'alice' && m.members[0].data.status === 'here' &&
        m.serial >= s1, `members after enter: ${JSON.stringify(m)}`);
  await enter(a, 'alice', 'update', {status: 'typing'}, 2);
  await event(watcher, 'update', 'alice');
  m = await members(watcher);
  check(m.members.length === 1 && m.members[0].data.status === 'typing', `update: ${JSON.stringify(m)}`);
  await enter(a, 'alice', 'leave', null, 3);
  await event(watcher, 'leave', 'alice');
  m = await members(watcher);
  check(m.members.length === 0, `leave: ${JSON.stringify(m)}`);

  // A member needs a clientId; the action must be known.
  a.send({type: 'presence', channel: P, action: 'enter', msgSerial: 4});
  const nack = await a.next((x) => x.type === 'nack' && x.msgSerial === 4, 5000);
  check(nack.error.code === 40010, `no clientId: ${JSON.stringify(nack)}`);
  a.send({type: 'presence', channel: P, action: 'wave', clientId: 'alice'});
  check((await a.type('error', 5000)).error.code === 40010, 'bad action');

  // A dropped connection's member leaves after the presence timeout.
  await enter(a, 'alice', 'enter', {status: 'back'}, 5);
  await event(watcher, 'enter', 'alice');
  const cutAt = Date.now();
  a.cut();
  const left = await event(watcher, 'leave', 'alice', 10000);
  check(Date.now() - cutAt >= 1500, `leave waited for the presence timeout (${Date.now() - cutAt} ms)`);
  check(left.connectionId === a.connected.connectionId, 'the leave names the dead connection');

  // A clean close leaves at once.
  const d = await connect();
  await enter(d, 'dave', 'enter', 1, 1);
  await event(watcher, 'enter', 'dave');
  const closedAt = Date.now();
  d.close();
  await event(watcher, 'leave', 'dave', 5000);
  check(Date.now() - closedAt < 1500, 'a clean close leaves without waiting');

  // A connection resumed within the timeout keeps its member: no leave.
  const r = await connect();
  let key = (await r.type('resumeKey', 5000)).resumeKey;
  r.onMessage = (x) => { if (x.type === 'resumeKey') key = x.resumeKey; };
  await enter(r, 'carol', 'enter', {status: 'on'}, 1);
  await event(watcher, 'enter', 'carol');
  r.onMessage = null;
  r.cut();
  const again = new Client(`?resume=${encodeURIComponent(key)}`);
  await again.type('resumed', 5000);
  // Wait past the timeout: the absence of a leave is what is tested.
  await new Promise((res) => setTimeout(res, 2600));
  m = await members(watcher);
  check(m.members.length === 1 && m.members[0].clientId === 'carol', `resumed member stays: ${JSON.stringify(m)}`);
  check(!watcher.queue.some((x) => x.type === 'presence' && x.action === 'leave' && x.clientId === 'carol'),
        'no leave for the resumed connection');
  again.close();
  await event(watcher, 'leave', 'carol', 5000);
  watcher.close();
});

// Subscribers attach (from start, from a serial, last N, live) while a publisher is publishing
// to the same channel; each must get every message after its starting point exactly once, in
// order, with the data the publisher's acks say belongs to that serial.
'use strict';
const {connect, publishMany, Sequence, check, main} = require('./lib');

const CHANNEL = `race-${process.pid}-${Date.now()}`;
// With PORTS (a cluster), subscribers are spread over every node; the publisher uses PORT.
const NODES = (process.env.PORTS || process.env.PORT).split(',').map((p) => `127.0.0.1:${p}`);
let nextNode = 0;
const HISTORY = 40;
const RACING = 260;

async function subscriber(kind, arg, name) {
  const c = await connect('', NODES[nextNode++ % NODES.length]);
  const seq = new Sequence(CHANNEL, name);
  c.onMessage = (m) => {
    if (m.type === 'attached' && m.channel === CHANNEL) {
      if (kind === 'start') seq.expectAfter(0);
      else if (kind === 'serial') seq.expectAfter(arg);
      else if (kind === 'last') seq.expectAfter(Math.max(m.serial - arg, 0));
      else seq.expectAfter(m.serial);
      seq.attachedAt = m.serial;
    }
    if (m.type === 'error') check(false, `${name}: ${JSON.stringify(m)}`);
    seq.add(m);
  };
  const from = kind === 'start' ? 'start' : kind === 'serial' ? arg : kind === 'last' ? {last: arg} : 'live';
  c.send({type: 'attach', channel: CHANNEL, from});
  return {c, seq, kind, arg};
}

main(async () => {
  const pub = await connect();
  const bySerial = await publishMany(pub, CHANNEL, HISTORY, {tag: 'h'});
  check(bySerial.size === HISTORY, 'history published');

  const subs = [];
  subs.push(await subscriber('start', 0, 'start-before'));
  let acked = HISTORY;
  const points = [HISTORY + 10, HISTORY + 80, HISTORY + 170]; // attach points, by acked serial
  const later = [];
  // Attach more subscribers at several points while the racing publishes are in flight.
  pub.onMessage = (m) => {
    if (m.type !== 'ack') return;
    acked = Math.max(acked, ...m.serials);
    while (points.length && acked >= points[0]) {
      points.shift();
      const at = acked;
      later.push(subscriber('start', 0, `start@${at}`), subscriber('serial', at - 5, `serial${at - 5}`),
                 subscriber('last', 7, `last7@${at}`), subscriber('live', 0, `live@${at}`));
    }
  };
  const racing = publishMany(pub, CHANNEL, RACING, {tag: 'r', start: HISTORY, batch: 3, window: 6});
  subs.push(await subscriber('serial', 12, 'serial12'), await subscriber('last', 5, 'last5'),
            await subscriber('live', 0, 'live'));
  const racedSerials = await racing;
  for (const [s, i] of racedSerials) bySerial.set(s, i);
  subs.push(...(await Promise.all(later)));
  check(points.length === 0, 'every attach point was reached');
  const final = Math.max(...bySerial.keys());
  check(final === HISTORY + RACING, `serials are dense: final ${final}`);
  check(subs.length === 16, `all subscribers attached (${subs.length})`);

  for (const s of subs) {
    await s.seq.reach(final);
    for (const m of s.seq.got)
      check(m.data.i === bySerial.get(m.serial), `${s.seq.name}: serial ${m.serial} has the wrong data`);
    const first = s.seq.got.length ? s.seq.got[0].serial : null;
    if (s.kind === 'start') check(first === 1, `${s.seq.name}: starts at 1 (got ${first})`);
    if (s.kind === 'serial') check(first === s.arg + 1, `${s.seq.name}: starts after ${s.arg}`);
    if (s.kind === 'last')
      check(s.seq.got.length === final - s.seq.attachedAt + Math.min(s.arg, s.seq.attachedAt),
            `${s.seq.name}: last ${s.arg} then live`);
    s.c.close();
  }
  // Nothing further arrives on any of them (no late duplicate): a ping round trip flushes.
  pub.send({type: 'ping'});
  await pub.type('pong', 5000);
  pub.close();
});

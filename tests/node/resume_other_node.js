// Resume on ANY gateway node: a subscriber attached on node 1 loses its connection and resumes on
// node 2 (both started with the same --resume-secret), then back on node 1, then on node 2 again, while a
// publisher on node 1 keeps publishing; every message arrives once, in order.
'use strict';
const {connect, publishMany, Sequence, check, main} = require('./lib');

const N1 = `127.0.0.1:${process.env.PORT}`;
const N2 = `127.0.0.1:${process.env.PORTS.split(',')[1]}`;
const CH = `other-${process.pid}-${Date.now()}`;
const TOTAL = 150;

main(async () => {
  const seq = new Sequence(CH, 'sub');
  seq.expectAfter(0);
  let key = null, count = 0;
  const track = (c) => {
    c.onMessage = (m) => {
      if (m.type === 'resumeKey') key = m.resumeKey;
      if (m.type === 'error') check(false, JSON.stringify(m));
      if (m.type === 'message') { seq.add(m); count++; }
    };
  };
  let sub = await connect('', N1);
  const id = sub.connected.connectionId;
  track(sub);
  sub.send({type: 'attach', channel: CH, from: 'start'});
  await sub.type('attached', 10000);
  const pub = await connect('', N1);
  const publishing = publishMany(pub, CH, TOTAL, {window: 2});
  for (const [i, base] of [[0, N2], [1, N1], [2, N2]]) {
    await seq.reach(30 * (i + 1), 20000);
    sub.onMessage = null;
    sub.cut();
    const q = `?resume=${encodeURIComponent(key)}&serials=${encodeURIComponent(JSON.stringify({[CH]: seq.last}))}`;
    sub = new (require('./lib').Client)(q, base);
    track(sub);
    const r = await sub.type('resumed', 10000);
    check(r.connectionId === id, `resumed on ${base} keeps the connection id`);
  }
  await publishing;
  await seq.reach(TOTAL, 20000);
  check(seq.last === TOTAL && seq.got.length === TOTAL, 'every message once, in order');
  sub.close();
  pub.close();
});

// A large history through a small send buffer: subscribers attaching from the start of a
// 2000-message channel get all of it, in order, without being closed for a full send buffer
// (history pages wait for the connection to drain), and then continue live.
'use strict';
const {connect, publishMany, Sequence, check, main} = require('./lib');

const CH = `hist-${process.pid}-${Date.now()}`;
const N = 2000;

main(async () => {
  const pub = await connect();
  await publishMany(pub, CH, N, {batch: 100, window: 4, tag: 'x'});
  const subs = [];
  for (let k = 0; k < 3; k++) {
    const c = await connect();
    const seq = new Sequence(CH, `sub${k}`);
    if (k < 2) seq.expectAfter(0);
    c.onMessage = (m) => {
      if (m.type === 'error') check(false, JSON.stringify(m));
      // {last: 1500} counts back from the channel's last serial when the attach is served, and
      // the live publishes below may already have added some by then (another event loop).
      if (m.type === 'attached' && k === 2) {
        check(m.serial >= N, `sub2 attached at ${m.serial}, before the history was complete`);
        seq.expectAfter(m.serial - 1500);
      }
      seq.add(m);
    };
    c.send({type: 'attach', channel: CH, from: k === 2 ? {last: 1500} : 'start'});
    subs.push({c, seq});
  }
  // Live messages published while the history is still streaming join without a gap.
  await publishMany(pub, CH, 50, {start: N, tag: 'y'});
  for (const {c, seq} of subs) {
    await seq.reach(N + 50, 60000);
    check(!c.closed, `${seq.name} was not closed (${JSON.stringify(c.closed)})`);
    c.close();
  }
  pub.close();
});

// Resume refusals: a key past its window gets error 41001 naming the channels and serials to
// re-attach from; a tampered key gets 40012; resume is only allowed as the first message.
'use strict';
const {connect, publishMany, check, main} = require('./lib');

const CH = `exp-${process.pid}-${Date.now()}`;

main(async () => {
  const c = await connect();
  c.send({type: 'attach', channel: CH, from: 'start'});
  await c.type('attached', 5000);
  await publishMany(c, CH, 3);
  await c.next((m) => m.type === 'message' && m.serial === 3, 5000, 'serial 3');
  // Wait for a key (refreshed on a cadence) that records serial 3 as written on the channel.
  const lists3 = (m) => JSON.parse(Buffer.from(m.resumeKey.split('.')[0], 'base64url')).a
    .some(([ch, serial]) => ch === CH && serial === 3);
  const k = await c.type('resumeKey', 10000, lists3);
  c.cut();

  // Tampered: flip one character of the signature.
  const bad = k.resumeKey.slice(0, -2) + (k.resumeKey.slice(-2, -1) === 'A' ? 'B' : 'A') + k.resumeKey.slice(-1);
  const t = await connect();
  t.send({type: 'resume', resumeKey: bad});
  const e1 = await t.type('error', 5000);
  check(e1.error.code === 40012, `tampered key: ${JSON.stringify(e1)}`);
  t.send({type: 'resume', resumeKey: k.resumeKey});
  const e2 = await t.type('error', 5000);
  check(e2.error.code === 40012, `resume after another message: ${JSON.stringify(e2)}`);
  t.close();

  // Past the window (the server was started with --resume-window 1500ms): waiting for the
  // key's own expiry time is the condition under test.
  await new Promise((r) => setTimeout(r, Math.max(0, k.expiresAt - Date.now()) + 100));
  const x = await connect(`?resume=${encodeURIComponent(k.resumeKey)}`);
  const e3 = await x.type('error', 5000);
  check(e3.error.code === 41001, `expired key: ${JSON.stringify(e3)}`);
  check(e3.channels && e3.channels[CH] === 3, `expired error names the channel and serial: ${JSON.stringify(e3)}`);
  // The client re-attaches from its serial: nothing is lost.
  x.send({type: 'attach', channel: CH, from: 0});
  const m = await x.type('message', 5000);
  check(m.serial === 1, 'history is still there');
  x.close();
});

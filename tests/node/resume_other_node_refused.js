// The negative of resume_other_node.js: nodes started WITHOUT a shared --resume-secret each sign
// with their own <data>/resume.secret, so a key issued by node 1 does not verify on node 2
// (error 40012) while it still resumes on node 1.
'use strict';
const {connect, Client, check, main} = require('./lib');

const N1 = `127.0.0.1:${process.env.PORT}`;
const N2 = `127.0.0.1:${process.env.PORTS.split(',')[1]}`;
const CH = `refused-${process.pid}-${Date.now()}`;

main(async () => {
  const sub = await connect('', N1);
  sub.send({type: 'attach', channel: CH, from: 'start'});
  await sub.type('attached', 10000);
  const key = (await sub.type('resumeKey', 10000)).resumeKey;
  sub.cut();
  const q = `?resume=${encodeURIComponent(key)}`;
  const other = new Client(q, N2);
  const e = await other.type('error', 10000);
  check(e.error && e.error.code === 40012, `node 2 refuses node 1's key: ${JSON.stringify(e)}`);
  other.close();
  const same = new Client(q, N1);
  const r = await same.type('resumed', 10000);
  check(r.connectionId === sub.connected.connectionId, 'node 1 still resumes its own key');
  same.close();
});

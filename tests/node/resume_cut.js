// Connection resume under fire: a subscriber attached to two channels has its TCP connection cut
// (no close frame) at random points while a publisher keeps publishing, and resumes each time
// with its resume key and the last serial it processed per channel, alternating the URL form
// (?resume=&serials=) and the message form ({"type":"resume"}). In the end every message of both
// channels has been processed exactly once, in order, and the connection id survived.
'use strict';
const {connect, publishMany, Sequence, check, main} = require('./lib');

const A = `cutA-${process.pid}-${Date.now()}`;
const B = `cutB-${process.pid}-${Date.now()}`;
const PER_CHANNEL = 300;
const CUTS = 8;

// Deterministic pseudo-random cut points so a failure can be reproduced (seed from the env).
let seed = Number(process.env.SPOOL_TEST_SEED || 12345);
const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };

main(async () => {
  const seqs = {[A]: new Sequence(A, 'A'), [B]: new Sequence(B, 'B')};
  seqs[A].expectAfter(0);
  seqs[B].expectAfter(0);
  let key = null;
  let sinceConnect = 0;
  let cutAfter = 0;
  const track = (c) => {
    c.onMessage = (m) => {
      if (m.type === 'resumeKey') key = m.resumeKey;
      if (m.type === 'error') check(false, `subscriber got ${JSON.stringify(m)}`);
      if (m.type === 'message') {
        seqs[m.channel].add(m);
        sinceConnect++;
      }
    };
  };

  let sub = await connect();
  const connectionId = sub.connected.connectionId;
  track(sub);
  sub.send({type: 'attach', channel: A, from: 'start'});
  sub.send({type: 'attach', channel: B, from: 'start'});
  await sub.type('attached', 5000, (m) => m.channel === A);
  await sub.type('attached', 5000, (m) => m.channel === B);

  const pub = await connect();
  const publishing = Promise.all([publishMany(pub, A, PER_CHANNEL, {window: 3}),
                                  publishMany(pub, B, PER_CHANNEL, {window: 2, batch: 2})]);
  let done = false;
  publishing.then(() => { done = true; });

  for (let cut = 0; cut < CUTS; cut++) {
    cutAfter = 5 + rand(40);
    // Wait (event-driven) until this connection has processed cutAfter more messages.
    await new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`cut ${cut}: no traffic`)), 20000);
      const prev = sub.onMessage;
      sub.onMessage = (m) => {
        prev(m);
        if (sinceConnect >= cutAfter) { clearTimeout(deadline); resolve(); }
      };
      if (sinceConnect >= cutAfter) { clearTimeout(deadline); resolve(); }
    });
    sub.onMessage = null; // whatever was not processed is lost with the connection
    sub.cut();
    check(key, 'a resume key was received');
    const serials = {[A]: seqs[A].last, [B]: seqs[B].last};
    sinceConnect = 0;
    let resumed;
    if (cut % 2 === 0) {
      sub = new (require('./lib').Client)(
        `?resume=${encodeURIComponent(key)}&serials=${encodeURIComponent(JSON.stringify(serials))}`);
      track(sub);
      await sub.type('connected', 10000);
      resumed = await sub.type('resumed', 10000);
    } else {
      sub = await connect();
      track(sub);
      sub.send({type: 'resume', resumeKey: key, serials});
      resumed = await sub.type('resumed', 10000);
    }
    check(resumed.connectionId === connectionId, 'the connection id survives a resume');
    check(resumed.channels[A] === serials[A] && resumed.channels[B] === serials[B],
          `resumed from the client's serials: ${JSON.stringify(resumed.channels)} vs ${JSON.stringify(serials)}`);
  }
  await publishing;
  check(done, 'publisher finished');
  await seqs[A].reach(PER_CHANNEL, 20000);
  await seqs[B].reach(PER_CHANNEL, 20000);
  check(seqs[A].last === PER_CHANNEL && seqs[B].last === PER_CHANNEL, 'every message, once, in order');
  sub.close();
  pub.close();
});

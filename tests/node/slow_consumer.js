// A subscriber that stops reading: once its queued output passes --send-buffer-bytes the server
// closes it with 1008 instead of buffering without bound; the client then resumes from the last
// serial it processed and still gets every message exactly once, in order.
'use strict';
const {Client, connect, publishMany, Sequence, check, main} = require('./lib');

const CH = `slow-${process.pid}-${Date.now()}`;
const N = 1500;
const PAD = 'z'.repeat(16000); // ~24 MB in total: more than the kernel's socket buffers hold

main(async () => {
  const seq = new Sequence(CH, 'slow');
  seq.expectAfter(0);
  let key = null;
  const track = (c) => {
    c.onMessage = (m) => {
      if (m.type === 'resumeKey') key = m.resumeKey;
      if (m.type === 'message') seq.add(m);
    };
  };
  const sub = await connect();
  track(sub);
  sub.send({type: 'attach', channel: CH, from: 'live'});
  await sub.type('attached', 5000);
  await sub.type('resumeKey', 5000); // the one issued after the attach
  sub.ws._socket.pause(); // stop reading: the server's queue for this client grows

  const pub = await connect();
  const bySerial = new Map();
  for (let start = 0; start < N; start += 100) {
    const acked = await publishMany(pub, CH, 100, {start, window: 4, batch: 5, tag: 's', pad: PAD});
    for (const [s, i] of acked) bySerial.set(s, i);
  }
  sub.ws._socket.resume();
  // The server queues a 1008 close behind the data the client does not read and, when the
  // client still does not read it within the close timeout, drops the TCP connection: so the
  // client sees 1008 or 1006. The script checks the server's log for the send buffer verdict.
  const closed = await sub.waitClose(30000);
  check(closed.code === 1008 || closed.code === 1006, `slow consumer closed (got ${closed.code})`);
  check(seq.last < N, `the close came before everything was delivered (${seq.last})`);

  const again = new Client(`?resume=${encodeURIComponent(key)}&serials=${encodeURIComponent(JSON.stringify({[CH]: seq.last}))}`);
  track(again);
  await again.type('resumed', 10000);
  await seq.reach(N, 60000);
  for (const m of seq.got) check(m.data.i === bySerial.get(m.serial), `serial ${m.serial} data`);
  again.close();
  pub.close();
});

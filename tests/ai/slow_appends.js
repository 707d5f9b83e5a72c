// A WebSocket consumer that stops reading while a response streams: consecutive appends of the
// message are coalesced for it (instead of one frame per token piling up until the connection
// is closed at --send-buffer-bytes); once it reads again it gets the text exactly, in fewer
// events than appends, with growing serials and no close. Run by tests/ai/test_ai_slow.sh.
'use strict';
const path = require('path');
const {connect, request, check, main} = require(path.join(process.cwd(), 'lib'));

const CH = `ai-slow-${process.pid}-${Date.now()}`;
const BATCHES = Number(process.env.AI_SLOW_BATCHES || 1000);
const PER = 100;

const post = (body) => request('POST', `/v1/channels/${encodeURIComponent(CH)}/messages`, body, {timeout: 10000});

main(async () => {
  const slow = await connect();
  const got = [];
  let last = 0, done = false;
  slow.onMessage = (m) => {
    if (m.type !== 'message' || m.channel !== CH) return;
    check(m.serial > last, `serial ${m.serial} after ${last}`);
    last = m.serial;
    got.push(m);
    if (m.extras && m.extras.final) done = true;
  };
  slow.send({type: 'attach', channel: CH, from: 'live'});
  await slow.type('attached', 10000);
  const c = await post({clientId: 'agent', data: ''});
  check(c.status === 201, `create: ${JSON.stringify(c)}`);
  const M = c.body.serials[0];
  slow.ws._socket.pause(); // stop reading: the server's send buffer backs up
  let full = '';
  for (let b = 0; b < BATCHES; b++) {
    const batch = [];
    for (let i = 0; i < PER; i++) {
      const tok = `${String(b * PER + i).padStart(6, '0')} `;
      full += tok;
      const m = {clientId: 'agent', action: 'append', refSerial: M, data: tok};
      if (b === BATCHES - 1 && i === PER - 1) m.extras = {final: true};
      batch.push(m);
    }
    const r = await post(batch);
    check(r.status === 201, `append batch ${b}: ${JSON.stringify(r)}`);
  }
  slow.ws._socket.resume();
  const deadline = Date.now() + 30000;
  while (!done) {
    check(!slow.closed, `the slow consumer was closed: ${JSON.stringify(slow.closed)}`);
    check(Date.now() < deadline, `timeout: ${got.length} events, last serial ${last}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  let text = '';
  for (const e of got) if (e.action === 'message.append' && e.refSerial === M) text += e.data;
  else if (e.action === 'message.create') text = e.data;
  check(text === full, `text differs: ${text.length} vs ${full.length} chars`);
  const appends = BATCHES * PER;
  const coalesced = got.filter((e) => e.rollup).length;
  check(coalesced > 0 && got.length < appends, `${got.length} events for ${appends} appends, ${coalesced} coalesced`);
  console.log(`ok: ${appends} appends reached the slow consumer as ${got.length} events (${coalesced} coalesced)`);
  slow.close();
});

// SSE: an EventSource client follows a channel from the start while a publisher races it; it is
// closed at random points and reopened with Last-Event-ID (what EventSource sends on reconnect),
// and must see every message exactly once, in order. Also: ?last=N, the retry hint and the
// heartbeat comments on the raw stream, a bad ?from= answered with a JSON error, and presence
// records as "event: presence".
'use strict';
const http = require('http');
const EventSource = require('eventsource');
const {BASE, connect, publishMany, Sequence, check, main} = require('./lib');

const CH = `sse-${process.pid}-${Date.now()}`;
const N = 200;
const REOPENS = 5;
let seed = Number(process.env.SPOOL_TEST_SEED || 777);
const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };

function open(query, headers) {
  return new EventSource(`http://${BASE}/v1/channels/${encodeURIComponent(CH)}/events${query}`, {headers});
}

// Raw GET: resolves with the status, headers and the body read until pred(body) or the timeout.
function raw(path, pred, ms = 5000) {
  return new Promise((resolve, reject) => {
    let body = '';
    const req = http.get(`http://${BASE}${path}`, (res) => {
      const t = setTimeout(() => { req.destroy(); reject(new Error(`raw ${path}: timeout; got ${body}`)); }, ms);
      const finish = () => { clearTimeout(t); req.destroy(); resolve({status: res.statusCode, headers: res.headers, body}); };
      res.on('data', (d) => { body += d; if (pred(body)) finish(); });
      res.on('end', finish);
    });
    req.on('error', () => {});
  });
}

main(async () => {
  const pub = await connect();
  const first = await publishMany(pub, CH, 20, {tag: 'a'});
  const seq = new Sequence(CH, 'sse');
  seq.expectAfter(0);
  const bySerial = new Map(first);
  const racing = publishMany(pub, CH, N - 20, {tag: 'b', start: 20, window: 4});

  for (let i = 0; i <= REOPENS; i++) {
    const es = i === 0 ? open('?from=start') : open('', {'Last-Event-ID': String(seq.last)});
    const stopAt = i === REOPENS ? N : seq.last + 10 + rand(30);
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sse pass ${i}: stuck at ${seq.last}`)), 20000);
      es.onerror = (e) => { if (es.readyState === EventSource.CLOSED) reject(new Error('sse closed')); };
      es.addEventListener('message', (ev) => {
        const m = JSON.parse(ev.data);
        check(String(m.serial) === ev.lastEventId, 'id: is the serial');
        seq.add(m);
        if (seq.last >= Math.min(stopAt, N)) { clearTimeout(t); es.close(); resolve(); }
      });
    });
  }
  for (const [s, i] of await racing) bySerial.set(s, i);
  check(seq.last === N && seq.got.length === N, `every message once: ${seq.got.length}`);
  for (const m of seq.got) check(m.data.i === bySerial.get(m.serial), `serial ${m.serial} data`);

  // ?last=3: exactly the last three, then live.
  const last = await raw(`/v1/channels/${CH}/events?last=3`, (b) => (b.match(/^id: /gm) || []).length >= 3);
  check(last.status === 200 && /text\/event-stream/.test(last.headers['content-type']), 'event-stream');
  check(/^retry: \d+$/m.test(last.body), 'retry hint');
  const ids = (last.body.match(/^id: (\d+)$/gm) || []).map((l) => Number(l.slice(4)));
  check(JSON.stringify(ids) === JSON.stringify([N - 2, N - 1, N]), `last 3: ${ids}`);
  // Heartbeat comments (the server runs with --heartbeat-interval 300ms).
  const hb = await raw(`/v1/channels/${CH}/events`, (b) => /^: hb$/m.test(b), 5000);
  check(/^: hb$/m.test(hb.body), 'heartbeat comment');
  const bad = await raw(`/v1/channels/${CH}/events?from=yesterday`, () => false);
  check(bad.status === 400 && JSON.parse(bad.body).error.code === 40003, `bad from: ${bad.body}`);
  // Presence records are "event: presence" (EventSource's onmessage only sees messages).
  pub.send({type: 'presence', channel: CH, action: 'enter', clientId: 'p1', msgSerial: 99});
  const pa = await pub.type('ack', 5000, (m) => m.msgSerial === 99);
  const pres = await raw(`/v1/channels/${CH}/events?last=1`, (b) => /^data: /m.test(b));
  check(new RegExp(`^id: ${pa.serials[0]}\nevent: presence\ndata: \\{"type":"presence"`, 'm').test(pres.body),
        `presence event: ${pres.body}`);
  pub.close();
});

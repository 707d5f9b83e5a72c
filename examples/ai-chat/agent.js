// The example's agent: follows a channel over SSE and answers every user message with a
// simulated token stream over HTTP appends (docs/ai-semantics.md):
//   claim the turn (lease) -> create the response with the turn's epoch -> one append per token
//   with that epoch -> the last append carries extras {"final": true} -> release the turn.
// When an operator takes the turn over, the next append is refused (stale turn epoch) and the
// agent stops that response. Interrupts (barge-in, docs/ai-semantics.md) arrive on the same SSE
// stream, opened as client id "agent" (?clientId=): the server sends "event: interrupt" only to
// the turn holder's streams. One for the turn it holds makes it end the response at once with a
// last append carrying extras {"final": true, "reason": "interrupted"} and release the turn.
// One JSON line per event on stdout (the end-to-end test reads them).
//
//   node agent.js --api http://127.0.0.1:8080 --channel chat-1 [--tokens 150] [--interval 20]
'use strict';
const http = require('http');

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) =>
  (i % 2 === 0 ? a.concat([[v.replace(/^--/, ''), all[i + 1]]]) : a), []));
const API = new URL(args.api || 'http://127.0.0.1:8080');
const CHANNEL = args.channel || 'chat-1';
const TOKENS = Number(args.tokens || 150);
const INTERVAL = Number(args.interval || 20);
const CLIENT = args.client || 'agent';
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? '' : JSON.stringify(body);
    const req = http.request({host: API.hostname, port: API.port, method, path, timeout: 10000,
                              headers: {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data)}},
      (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => resolve({status: res.statusCode, body: b ? JSON.parse(b) : null}));
      });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on('error', reject);
    req.end(data);
  });
}
const base = `/v1/channels/${encodeURIComponent(CHANNEL)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let busy = Promise.resolve();
let current = null; // {epoch, interrupted} of the response being streamed

async function answer(question) {
  const claim = await request('POST', `${base}/turn`, {action: 'claim', clientId: CLIENT, ttlMs: 60000});
  if (claim.status !== 200) return say({event: 'claim_refused', error: claim.body.error});
  const epoch = claim.body.epoch;
  const created = await request('POST', `${base}/messages`,
                                {clientId: CLIENT, name: 'agent', data: '', turnEpoch: epoch, extras: {question}});
  if (created.status !== 201) return say({event: 'create_refused', error: created.body.error});
  const M = created.body.serials[0];
  say({event: 'started', message: M, epoch});
  current = {epoch, interrupted: null};
  try {
    return await stream(M, epoch);
  } finally {
    current = null;
  }
}

async function stream(M, epoch) {
  for (let i = 0; i < TOKENS; i++) {
    await sleep(INTERVAL);
    if (current.interrupted) { // barge-in: end the message now, say why, give the turn back
      const r = await request('POST', `${base}/messages`, {clientId: CLIENT, action: 'append', refSerial: M, data: '',
                                                          turnEpoch: epoch, extras: {final: true, reason: 'interrupted'}});
      await request('POST', `${base}/turn`, {action: 'release', clientId: CLIENT, epoch});
      return say({event: 'interrupted', message: M, token: i, by: current.interrupted.clientId,
                  status: r.status, serial: r.body && r.body.serials ? r.body.serials[0] : null});
    }
    const m = {clientId: CLIENT, action: 'append', refSerial: M, data: `w${i} `, turnEpoch: epoch};
    if (i === TOKENS - 1) m.extras = {final: true};
    const r = await request('POST', `${base}/messages`, m);
    if (r.status !== 201) return say({event: 'refused', message: M, token: i, status: r.status, error: r.body.error});
    say({event: 'append', message: M, token: i, serial: r.body.serials[0]});
  }
  await request('POST', `${base}/turn`, {action: 'release', clientId: CLIENT, epoch});
  say({event: 'done', message: M});
}

// SSE: one "data:" line per event; reconnects from the last id it saw (interrupts and other
// ephemeral events carry no id: they are live only). Interrupts are acted on when they name the
// epoch of the response being streamed.
function follow(lastId) {
  const path = `${base}/events?from=${lastId === null ? 'live' : lastId}&clientId=${encodeURIComponent(CLIENT)}`;
  const req = http.get({host: API.hostname, port: API.port, path, headers: {Accept: 'text/event-stream'}}, (res) => {
    let buf = '';
    res.setEncoding('utf8');
    if (lastId === null) say({event: 'following', channel: CHANNEL});
    res.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (/^: attached /m.test(block)) say({event: 'listening', channel: CHANNEL});
        const id = /^id: ?(\d+)/m.exec(block);
        if (id) lastId = Number(id[1]);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (!data) continue;
        let e;
        try { e = JSON.parse(data); } catch (_) { continue; }
        if (e.type === 'interrupt' && current && e.epoch === current.epoch && !current.interrupted) {
          current.interrupted = e;
          say({event: 'interrupt', epoch: e.epoch, from: e.clientId, data: e.data});
        }
        if (e.action === 'message.create' && e.name === 'user' && !e.refSerial)
          busy = busy.then(() => answer(e.data)).catch((err) => say({event: 'error', error: String(err)}));
      }
    });
    res.on('end', () => setTimeout(() => follow(lastId ?? 0), 200));
  });
  req.on('error', () => setTimeout(() => follow(lastId), 500));
}

follow(null);
process.on('SIGTERM', () => process.exit(0));

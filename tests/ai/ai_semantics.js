// AI semantics end to end over one spoold (docs/ai-semantics.md): a token stream published as
// a create + appends; a reader attaching mid-response gets it rolled up (one event carrying the
// last append's serial) then the rest live, with no gap and no duplicate; a reader re-attaching
// from its last serial gets the missed appends as one event; SSE and history agree; appends to a
// final message, edits by others and stale turn epochs are refused with clear errors; turn
// claims and take-overs are events on the channel.
// Run from tests/node (its node_modules) by tests/ai/test_ai_semantics.sh.
'use strict';
const http = require('http');
const path = require('path');
const lib = require(path.join(process.cwd(), 'lib'));
const {BASE, connect, check, main} = lib;
const EventSource = require(path.join(process.cwd(), 'node_modules', 'eventsource'));

const CH = `ai-${process.pid}-${Date.now()}`;
let msgSerial = 1;

const request = (method, p, body) => lib.request(method, p, body, {timeout: 10000});
const post = (body, ch = CH) => request('POST', `/v1/channels/${encodeURIComponent(ch)}/messages`, body);
const turn = (body, ch = CH) => request('POST', `/v1/channels/${encodeURIComponent(ch)}/turn`, body);

async function publish(c, messages) {
  const ms = msgSerial++;
  c.send({type: 'publish', msgSerial: ms, channel: CH, messages});
  return c.next((m) => (m.type === 'ack' || m.type === 'nack') && m.msgSerial === ms, 10000, `ack ${ms}`);
}

// Collects a channel's message events on a connection, checking serials only grow.
function follow(c, name) {
  const got = [];
  let last = 0;
  c.onMessage = (m) => {
    if (m.type !== 'message' || m.channel !== CH) return;
    check(m.serial > last, `${name}: serial ${m.serial} after ${last} (duplicate or reorder)`);
    last = m.serial;
    got.push(m);
  };
  return got;
}

// The text of message `id` as a client assembles it from events.
function text(events, id) {
  let t = '';
  for (const e of events) {
    if (e.action === 'message.create' && (e.refSerial || e.serial) === id) t = e.data;
    else if (e.action === 'message.append' && e.refSerial === id) t += e.data;
    else if (e.action === 'message.update' && e.refSerial === id) t = e.data;
  }
  return t;
}

async function waitFor(pred, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

main(async () => {
  const agent = await connect();
  const created = await publish(agent, [{clientId: 'agent', data: 'Answer:'}]);
  check(created.type === 'ack', `create: ${JSON.stringify(created)}`);
  const M = created.serials[0];
  let full = 'Answer:';
  let lastSerial = M;
  for (let i = 0; i < 40; i++) {
    const a = await publish(agent, [{clientId: 'agent', action: 'append', refSerial: M, data: ` t${i}`}]);
    check(a.type === 'ack', `append ${i}: ${JSON.stringify(a)}`);
    full += ` t${i}`;
    lastSerial = a.serials[0];
  }

  // A reader attaching mid-response from the start: ONE rolled-up event, then live appends.
  const late = await connect();
  const lateGot = follow(late, 'late');
  late.send({type: 'attach', channel: CH, from: 'start'});
  await late.type('attached', 10000);
  await waitFor(() => lateGot.length >= 1, 'the rolled-up message');
  const first = lateGot[0];
  check(first.action === 'message.create' && first.serial === lastSerial && first.refSerial === M &&
        first.rollup === true && first.data === full,
        `rolled-up event: ${JSON.stringify(first)} (want serial ${lastSerial}, data ${full})`);

  // A "live" reader attaching while the response streams starts at its create: rolled up too.
  const liveReader = await connect();
  const liveGot = follow(liveReader, 'live');
  liveReader.send({type: 'attach', channel: CH, from: 'live'});
  await liveReader.type('attached', 10000);
  await waitFor(() => liveGot.length >= 1, 'the rolled-up message for a live attach');
  check(liveGot[0].action === 'message.create' && liveGot[0].rollup && liveGot[0].serial === lastSerial &&
        liveGot[0].data === full, `live attach mid-response: ${JSON.stringify(liveGot[0])}`);

  // A reader that had the response up to some serial: the missed appends as one event.
  const mid = M + 10;
  const resumer = await connect();
  const resGot = follow(resumer, 'resumer');
  resumer.send({type: 'attach', channel: CH, from: mid});
  await resumer.type('attached', 10000);
  await waitFor(() => resGot.length >= 1, 'the coalesced appends');
  const missed = [];
  for (let i = 10; i < 40; i++) missed.push(` t${i}`);
  check(resGot[0].action === 'message.append' && resGot[0].serial === lastSerial &&
        resGot[0].data === missed.join(''), `coalesced appends: ${JSON.stringify(resGot[0])}`);

  // Live appends reach both one by one, the last one final.
  for (let i = 40; i < 50; i++) {
    const extras = i === 49 ? {final: true} : undefined;
    const a = await publish(agent, [{clientId: 'agent', action: 'append', refSerial: M, data: ` t${i}`, extras}]);
    check(a.type === 'ack', `append ${i}: ${JSON.stringify(a)}`);
    full += ` t${i}`;
    lastSerial = a.serials[0];
  }
  await waitFor(() => lateGot.length >= 11 && resGot.length >= 11 && liveGot.length >= 11, 'live appends');
  check(text(liveGot, M) === full, `live reader text: ${text(liveGot, M)}`);
  check(lateGot.slice(1).every((e) => e.action === 'message.append' && !e.rollup), 'live appends are single events');
  check(text(lateGot, M) === full, `late reader text: ${text(lateGot, M)}`);
  check(lateGot[lateGot.length - 1].extras && lateGot[lateGot.length - 1].extras.final === true, 'final marker');

  // Refusals with clear errors.
  const after = await publish(agent, [{clientId: 'agent', action: 'append', refSerial: M, data: 'x'}]);
  check(after.type === 'nack' && /is final/.test(after.error.message) && after.error.code === 40900,
        `append after final: ${JSON.stringify(after)}`);
  const ghost = await post({clientId: 'agent', action: 'append', refSerial: 999999, data: 'x'});
  check(ghost.status === 404 && /does not exist/.test(ghost.body.error.message), `ghost: ${JSON.stringify(ghost)}`);
  const bad = await post({action: 'append', data: 'x'});
  check(bad.status === 400 && /refSerial/.test(bad.body.error.message), `no refSerial: ${JSON.stringify(bad)}`);

  // SSE from the start: the rolled-up message, the same text.
  const sseEvents = await new Promise((resolve, reject) => {
    const es = new EventSource(`http://${BASE}/v1/channels/${encodeURIComponent(CH)}/events?from=start`);
    const got = [];
    const t = setTimeout(() => { es.close(); reject(new Error('sse: timeout')); }, 10000);
    es.onmessage = (ev) => {
      got.push(JSON.parse(ev.data));
      if (Number(ev.lastEventId) >= lastSerial) { clearTimeout(t); es.close(); resolve(got); }
    };
  });
  check(sseEvents.length === 1 && text(sseEvents, M) === full && sseEvents[0].serial === lastSerial,
        `sse: ${sseEvents.length} events, text ${text(sseEvents, M)}`);

  // History: rolled up by default, every event on request.
  const h = await request('GET', `/v1/channels/${encodeURIComponent(CH)}/messages`);
  check(h.status === 200 && h.body.items.length === 1 && h.body.items[0].data === full,
        `history: ${JSON.stringify(h.body).slice(0, 300)}`);
  const raw = await request('GET', `/v1/channels/${encodeURIComponent(CH)}/messages?rollup=false&limit=1000`);
  check(raw.body.items.length === 51, `raw history: ${raw.body.items.length} items`);

  // Edits: the latest version wins in history; a delete leaves a tombstone.
  const upd = await post({clientId: 'agent', action: 'update', refSerial: M, data: 'Short answer.'});
  check(upd.status === 201, `update: ${JSON.stringify(upd)}`);
  const h2 = await request('GET', `/v1/channels/${encodeURIComponent(CH)}/messages`);
  const lastItem = h2.body.items[h2.body.items.length - 1];
  // (the update continues the run of the response: one item, the latest version)
  check(h2.body.items.length === 1 && lastItem.version === 2 && lastItem.data === 'Short answer.' &&
        lastItem.refSerial === M, `history after update: ${JSON.stringify(h2.body.items)}`);

  // Turns: claim, fenced publishes, take-over, stale epoch refused, all visible on the channel.
  const claim = await turn({action: 'claim', clientId: 'agent', ttlMs: 60000});
  check(claim.status === 200 && claim.body.epoch === claim.body.serial && claim.body.holder === 'agent', `claim: ${JSON.stringify(claim)}`);
  const r2 = await post({clientId: 'agent', data: 'Next answer', turnEpoch: claim.body.epoch});
  check(r2.status === 201, `fenced create: ${JSON.stringify(r2)}`);
  const R2 = r2.body.serials[0];
  const busy = await turn({action: 'claim', clientId: 'user', ttlMs: 60000});
  check(busy.status === 409 && /held by "agent"/.test(busy.body.error.message), `busy: ${JSON.stringify(busy)}`);
  const take = await turn({action: 'claim', clientId: 'operator', ttlMs: 60000, takeover: true});
  check(take.status === 200 && take.body.epoch === take.body.serial && take.body.epoch > claim.body.epoch && take.body.op === 'takeover' &&
        take.body.previousHolder === 'agent', `takeover: ${JSON.stringify(take)}`);
  const stale = await post({clientId: 'agent', action: 'append', refSerial: R2, data: ' more', turnEpoch: claim.body.epoch});
  check(stale.status === 409 && new RegExp(`stale turn epoch ${claim.body.epoch}:`).test(stale.body.error.message), `stale: ${JSON.stringify(stale)}`);
  await waitFor(() => lateGot.some((e) => e.action === 'meta' && e.name === 'ai.turn' && e.data.op === 'takeover'),
                'the take-over event live');
  const rel = await turn({action: 'release', clientId: 'operator'});
  check(rel.status === 200 && rel.body.op === 'release', `release: ${JSON.stringify(rel)}`);
  const badTurn = await turn({action: 'claim', clientId: 'x', ttlMs: 0});
  check(badTurn.status === 400, `ttl 0: ${JSON.stringify(badTurn)}`);

  // An edit made long after (other records in between): history still shows the message once,
  // in its latest version; every version on request.
  const late2 = await post({clientId: 'agent', action: 'update', refSerial: M, data: 'Edited later.'});
  check(late2.status === 201, `late update: ${JSON.stringify(late2)}`);
  const h3 = await request('GET', `/v1/channels/${encodeURIComponent(CH)}/messages?limit=1000`);
  const aboutM = h3.body.items.filter((x) => x.serial === M || x.refSerial === M);
  check(aboutM.length === 1 && aboutM[0].data === 'Edited later.' && aboutM[0].version === 3,
        `history after a late edit: ${JSON.stringify(aboutM)}`);
  const h4 = await request('GET', `/v1/channels/${encodeURIComponent(CH)}/messages?limit=1000&rollup=false`);
  const versions = h4.body.items.filter((x) => x.refSerial === M && x.action === 'message.update').map((x) => x.version);
  check(versions.join() === '2,3', `every version on request: ${versions}`);

  // Batching: 50 appends from one producer arriving together (one TCP write) are one Raft entry
  // or very few (group commit: everything queued in one loop turn), not 50.
  const metric = async (name) => {
    const r = await new Promise((resolve, reject) => {
      http.get(`http://${BASE}/metrics`, (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => resolve(b));
      }).on('error', reject);
    });
    return r.split('\n').filter((l) => l.startsWith(name + '{') || l.startsWith(name + ' '))
      .reduce((a, l) => a + Number(l.split(' ').pop()), 0);
  };
  const b3 = await publish(agent, [{clientId: 'agent', data: ''}]);
  const B = b3.serials[0];
  const pub0 = await metric('spool_raft_proposed_publishes_total');
  const ent0 = await metric('spool_raft_proposals_total');
  const serials = [];
  agent.ws._socket.cork();
  for (let i = 0; i < 50; i++) {
    serials.push(msgSerial);
    agent.send({type: 'publish', msgSerial: msgSerial++, channel: CH,
                messages: [{clientId: 'agent', action: 'append', refSerial: B, data: `b${i} `}]});
  }
  agent.ws._socket.uncork();
  for (const ms of serials) {
    const a = await agent.next((m) => (m.type === 'ack' || m.type === 'nack') && m.msgSerial === ms, 10000, `ack ${ms}`);
    check(a.type === 'ack', `batched append: ${JSON.stringify(a)}`);
  }
  const pubs = (await metric('spool_raft_proposed_publishes_total')) - pub0;
  const ents = (await metric('spool_raft_proposals_total')) - ent0;
  check(pubs >= 50 && ents >= 1 && ents <= 5, `group commit: ${pubs} publishes in ${ents} Raft entries`);
  console.log(`group commit: ${pubs} publishes in ${ents} Raft entries`);

  agent.close(); late.close(); resumer.close(); liveReader.close();
  console.log(`ok: ${full.length} chars streamed, rolled up for late readers, fenced turns`);
});

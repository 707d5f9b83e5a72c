// GET /v1/channels/{c}/presence (docs/http-api.md) on every node kind: PORTS are the client ports
// to check (a storage node and a gateway-only node, each with --workers 2, so fresh connections
// land on different event loops). Two members enter over WebSocket (through different nodes),
// the HTTP list on every port shows both with their data, exactly as presence.get's members;
// ?clientId= filters; one leaves and every port lists one. Errors: a key without `subscribe`
// (like presence.get) gets 403 with code 40301, a bad channel 400 40002, a bad clientId 400 40003;
// a channel longer than the fold's bound (100000 records) answers 413 with presence.get's 41300.
// Every HTTP request uses a new connection (agent: false).
'use strict';
const http = require('http');
const {connect, check, main} = require('./lib');

const PORTS = (process.env.PORTS || '').split(',').filter(Boolean).map(Number);
check(PORTS.length >= 2, `PORTS lists the nodes to check: "${process.env.PORTS}"`);
const P = `presh-${process.pid}-${Date.now()}`;
const enc = encodeURIComponent;
const TRIES = 4; // requests per port per check (spread over the port's loops)

function get(port, path, method = 'GET', body = null) {
  return new Promise((resolve, reject) => {
    const headers = body === null ? {} : {'content-type': 'application/json'};
    const req = http.request({host: '127.0.0.1', port, path, method, headers, agent: false, timeout: 15000}, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(body); } catch (e) { /* checked by the caller */ }
        resolve({status: res.statusCode, type: res.headers['content-type'], json, body});
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} :${port}${path} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function presence(port, query = '') {
  const r = await get(port, `/v1/channels/${enc(P)}/presence${query}`);
  check(r.status === 200 && r.type === 'application/json' && r.json && Array.isArray(r.json.items) &&
        Number.isInteger(r.json.serial), `presence on :${port}${query}: ${r.status} ${r.body}`);
  return r.json;
}

const byClient = (items) => [...items].sort((x, y) => (x.clientId < y.clientId ? -1 : 1));

async function enter(c, clientId, action, data, msgSerial) {
  c.send({type: 'presence', channel: P, action, clientId, data, msgSerial});
  const a = await c.next((m) => (m.type === 'ack' || m.type === 'nack') && m.msgSerial === msgSerial, 10000,
                         `ack of ${clientId} ${action}`);
  check(a.type === 'ack', `presence ${action} ${clientId}: ${JSON.stringify(a)}`);
  return a.serials[0];
}

async function expectError(port, path, status, code) {
  const r = await get(port, path);
  check(r.status === status && r.type === 'application/json' && r.json && r.json.error &&
        r.json.error.code === code && r.json.error.status === status && typeof r.json.error.message === 'string',
        `GET :${port}${path}: expected ${status} code ${code}, got ${r.status} ${r.body}`);
}

main(async () => {
  const a = await connect('', `127.0.0.1:${PORTS[0]}`);
  const b = await connect('', `127.0.0.1:${PORTS[1]}`);

  // Nobody yet: an empty list.
  for (const port of PORTS) {
    const e = await presence(port);
    check(e.items.length === 0, `empty channel on :${port}: ${JSON.stringify(e)}`);
  }

  const sa = await enter(a, 'alice', 'enter', {status: 'here', n: 1}, 1);
  const sb = await enter(b, 'bob', 'enter', 'typing', 1);

  // The members as presence.get sees them: the HTTP items must be the same objects.
  a.send({type: 'presence.get', channel: P});
  const ws = await a.type('presence.members', 10000, (m) => m.channel === P);
  check(ws.members.length === 2, `presence.get: ${JSON.stringify(ws)}`);

  for (const port of PORTS) {
    for (let t = 0; t < TRIES; t++) {
      const l = await presence(port);
      check(l.serial >= Math.max(sa, sb), `serial ${l.serial} covers both enters (${sa}, ${sb}) on :${port}`);
      check(l.items.length === 2, `two members on :${port}: ${JSON.stringify(l)}`);
      const [al, bo] = byClient(l.items);
      check(al.clientId === 'alice' && al.connectionId === a.connected.connectionId && al.serial === sa &&
            al.data && al.data.status === 'here' && al.data.n === 1 && Number.isInteger(al.timestamp),
            `alice on :${port}: ${JSON.stringify(al)}`);
      check(bo.clientId === 'bob' && bo.connectionId === b.connected.connectionId && bo.serial === sb &&
            bo.data === 'typing', `bob on :${port}: ${JSON.stringify(bo)}`);
      check(JSON.stringify(byClient(l.items)) === JSON.stringify(byClient(ws.members)),
            `same members as presence.get on :${port}: ${JSON.stringify(l.items)} vs ${JSON.stringify(ws.members)}`);
    }
    const only = await presence(port, '?clientId=alice');
    check(only.items.length === 1 && only.items[0].clientId === 'alice', `?clientId=alice: ${JSON.stringify(only)}`);
    const none = await presence(port, '?clientId=nobody');
    check(none.items.length === 0, `?clientId=nobody: ${JSON.stringify(none)}`);
  }

  // Bob leaves: every port lists alice only.
  const sl = await enter(b, 'bob', 'leave', null, 2);
  for (const port of PORTS) {
    for (let t = 0; t < TRIES; t++) {
      const l = await presence(port);
      check(l.serial >= sl && l.items.length === 1 && l.items[0].clientId === 'alice' &&
            l.items[0].data.status === 'here', `after bob left, on :${port}: ${JSON.stringify(l)}`);
    }
  }

  // Errors, JSON bodies with codes, on every node kind.
  for (const port of PORTS) {
    const path = `/v1/channels/${enc(P)}/presence`;
    await expectError(port, `${path}?key=${enc('reader:r3ad')}`, 403, 40301);    // history only
    await expectError(port, `${path}?key=${enc('present:pr3s')}`, 403, 40301);   // presence only
    await expectError(port, `${path}?key=${enc('reader:wrong')}`, 401, 40103);   // bad secret
    const ok = await get(port, `${path}?key=${enc('sub:s3b')}`);                 // subscribe suffices
    check(ok.status === 200 && ok.json.items.length === 1, `subscribe key: ${ok.status} ${ok.body}`);
    await expectError(port, `/v1/channels/${'x'.repeat(300)}/presence`, 400, 40002);
    await expectError(port, `/v1/channels/bad%20name/presence`, 400, 40002);
    await expectError(port, `${path}?clientId=`, 400, 40003);
    await expectError(port, `${path}?clientId=${'c'.repeat(200)}`, 400, 40003);
  }

  // Too long to fold: 101 batches of 1000 records, then the same error as presence.get.
  const L = `${P}-long`;
  const batch = JSON.stringify(Array.from({length: 1000}, (_, i) => ({data: i})));
  for (let k = 0; k < 101; k++) {
    const r = await get(PORTS[0], `/v1/channels/${enc(L)}/messages`, 'POST', batch);
    check(r.status === 201, `publish batch ${k}: ${r.status} ${r.body}`);
  }
  a.send({type: 'presence.get', channel: L});
  const werr = await a.type('error', 30000, (m) => m.channel === L);
  check(werr.error.code === 41300, `presence.get of a long channel: ${JSON.stringify(werr)}`);
  for (const port of PORTS)
    await expectError(port, `/v1/channels/${enc(L)}/presence`, 413, 41300);
  a.close();
  b.close();
});

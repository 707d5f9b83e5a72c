// Realtime with JWTs: the client id and capabilities come from the token (?token= or
// Authorization: Bearer), publishes and presence carry the client id, a different clientId is
// refused, a connection is closed when its token expires (after a last resume key), and resuming
// needs the same identity.
'use strict';
const crypto = require('crypto');
const WebSocket = require('ws');
const {BASE, Client, connect, check, main} = require('./lib');

const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
function jwt(claims, secret = 's3cr3t', kid = 'agent') {
  const head = `${b64({alg: 'HS256', typ: 'JWT', kid})}.${b64(claims)}`;
  return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
}
const now = () => Math.floor(Date.now() / 1000);
const caps = {'jwt-*': ['publish', 'subscribe', 'presence']};
const CH = `jwt-${process.pid}`;

main(async () => {
  const token = jwt({exp: now() + 6, clientId: 'alice', capability: caps});
  const c = await connect(`?token=${token}`);
  check(c.connected.clientId === 'alice', `clientId from the token: ${JSON.stringify(c.connected)}`);
  c.send({type: 'attach', channel: 'other'});
  check((await c.type('error', 5000)).error.code === 40301, 'capability narrowed by the token');
  c.send({type: 'attach', channel: CH});
  await c.type('attached', 5000);
  c.send({type: 'publish', msgSerial: 1, channel: CH, messages: [{data: 'hi'}]});
  const m = await c.type('message', 5000);
  check(m.clientId === 'alice', `published with the token's clientId: ${JSON.stringify(m)}`);
  c.send({type: 'publish', msgSerial: 2, channel: CH, messages: [{data: 'x', clientId: 'bob'}]});
  const n = await c.next((x) => x.msgSerial === 2 && (x.type === 'ack' || x.type === 'nack'), 5000);
  check(n.type === 'nack' && n.error.code === 40301, `another clientId: ${JSON.stringify(n)}`);
  c.send({type: 'presence', channel: CH, action: 'enter', data: {s: 1}});
  const p = await c.type('presence', 5000);
  check(p.clientId === 'alice' && p.action === 'enter', `presence as alice: ${JSON.stringify(p)}`);

  // Authorization: Bearer works the same.
  const bearer = await new Promise((resolve) => {
    const ws = new WebSocket(`ws://${BASE}/v1/realtime`, {headers: {Authorization: `Bearer ${token}`}});
    ws.on('message', (d) => { const x = JSON.parse(d); if (x.type === 'connected') { ws.close(); resolve(x); } });
    ws.on('error', () => resolve(null));
  });
  check(bearer && bearer.clientId === 'alice', 'Bearer header');

  // A fresh token on the same connection: another identity or a bad signature is refused and
  // changes nothing; the same identity is accepted and the connection outlives the first token.
  const k = await connect(`?token=${jwt({exp: now() + 3, clientId: 'alice', capability: caps})}`);
  k.send({type: 'auth'});
  check((await k.type('error', 5000)).error.code === 40010, 'auth without a token refused');
  k.send({type: 'auth', token: jwt({exp: now() + 60, clientId: 'mallory', capability: caps})});
  check((await k.type('error', 5000)).error.code === 40303, 'auth for another client id refused');
  k.send({type: 'auth', token: jwt({exp: now() + 60, clientId: 'alice', capability: caps}, 'wrong')});
  check((await k.type('error', 5000)).error.code === 40103, 'auth with a bad signature refused');
  k.send({type: 'auth', token: jwt({exp: now() + 60, clientId: 'alice', capability: caps})});
  const authed = await k.type('authed', 5000);
  check(authed.expiresAt > Date.now() + 30000, `authed with the new expiry: ${JSON.stringify(authed)}`);
  // The first token's exp passes (plus the 500 ms check cadence): still open and serving.
  await new Promise((res) => setTimeout(res, 4000 - (Date.now() % 1000)));
  k.send({type: 'ping'});
  check((await k.type('pong', 5000)).type === 'pong', 'connection outlived its first token');
  k.close();

  // Expiry: the server closes the connection (1008) with error 40104 after a last resume key.
  let key = null;
  c.onMessage = (x) => { if (x.type === 'resumeKey') key = x.resumeKey; };
  const e = await c.type('error', 10000, (x) => x.error.code === 40104);
  check(e.error.message, 'expiry error has a message');
  check((await c.waitClose(5000)).code === 1008, 'closed with 1008 on expiry');
  check(key, 'a resume key came before the close');

  // Resume with a fresh token for the same identity works; another identity is refused.
  const fresh = jwt({exp: now() + 60, clientId: 'alice', capability: caps});
  const r = new Client(`?token=${fresh}&resume=${encodeURIComponent(key)}`);
  const resumed = await r.type('resumed', 5000);
  check(resumed.connectionId === c.connected.connectionId, 'same connection after a new token');
  r.close();
  const other = jwt({exp: now() + 60, clientId: 'mallory', capability: caps});
  const x = new Client(`?token=${other}&resume=${encodeURIComponent(key)}`);
  check((await x.type('error', 5000)).error.code === 40302, 'resume by another identity refused');
  x.close();
});

// Roles and capabilities with JWTs (docs/ai-semantics.md): presence members and presence events
// carry each member's role from its token; only the author edits a message unless the token
// grants edit-any; taking over the turn needs role operator (or edit-any / admin).
// Run by tests/ai/test_ai_roles.sh (spoold with --api-keys 'k:s3cr3t').
'use strict';
const crypto = require('crypto');
const path = require('path');
const lib = require(path.join(process.cwd(), 'lib'));
const {connect, check, main} = lib;

const b64 = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
function jwt(claims) {
  const head = `${b64({alg: 'HS256', typ: 'JWT', kid: 'k'})}.${b64(claims)}`;
  return `${head}.${crypto.createHmac('sha256', 's3cr3t').update(head).digest('base64url')}`;
}
const exp = () => Math.floor(Date.now() / 1000) + 300;
const CH = `ai-roles-${process.pid}`;
const basic = ['publish', 'subscribe', 'presence', 'history'];
const tokens = {
  agent: jwt({exp: exp(), clientId: 'agent', role: 'agent', capability: {'*': basic}}),
  alice: jwt({exp: exp(), clientId: 'alice', role: 'user', capability: {'*': basic}}),
  bob: jwt({exp: exp(), clientId: 'bob', role: 'user', capability: {'*': basic}}),
  op: jwt({exp: exp(), clientId: 'op', role: 'operator', capability: {'*': [...basic, 'edit-any', 'delete-any']}}),
};

const request = (who, method, p, body) =>
  lib.request(method, p, body, {headers: {Authorization: `Bearer ${tokens[who]}`}, timeout: 10000});
const post = (who, body) => request(who, 'POST', `/v1/channels/${CH}/messages`, body);
const turn = (who, body) => request(who, 'POST', `/v1/channels/${CH}/turn`, body);

main(async () => {
  // Presence with roles.
  const conns = {};
  for (const who of ['agent', 'alice', 'op']) {
    conns[who] = await connect(`?token=${tokens[who]}`);
    conns[who].send({type: 'attach', channel: CH, from: 'live'});
    await conns[who].type('attached', 10000);
  }
  for (const who of ['agent', 'alice', 'op']) {
    conns[who].send({type: 'presence', channel: CH, action: 'enter', data: {who}, msgSerial: 1});
    const a = await conns[who].next((m) => m.type === 'ack' || m.type === 'nack', 10000, 'presence ack');
    check(a.type === 'ack', `enter ${who}: ${JSON.stringify(a)}`);
  }
  const ev = await conns.alice.next((m) => m.type === 'presence' && m.clientId === 'op', 10000, 'op enter event');
  check(ev.role === 'operator', `presence event role: ${JSON.stringify(ev)}`);
  conns.alice.send({type: 'presence.get', channel: CH});
  const mem = await conns.alice.type('presence.members', 10000);
  const roles = Object.fromEntries(mem.members.map((m) => [m.clientId, m.role]));
  check(roles.agent === 'agent' && roles.alice === 'user' && roles.op === 'operator',
        `members' roles: ${JSON.stringify(mem.members)}`);

  // Authorship: alice's message; bob may not edit it, the operator (edit-any) may.
  const m = await post('alice', {data: 'hello'});
  check(m.status === 201, `alice publishes: ${JSON.stringify(m)}`);
  const M = m.body.serials[0];
  const bob = await post('bob', {action: 'update', refSerial: M, data: 'hijacked'});
  check(bob.status === 403 && /only the author/.test(bob.body.error.message), `bob edits: ${JSON.stringify(bob)}`);
  const bobDel = await post('bob', {action: 'delete', refSerial: M});
  check(bobDel.status === 403, `bob deletes: ${JSON.stringify(bobDel)}`);
  const opEdit = await post('op', {action: 'update', refSerial: M, data: 'moderated'});
  check(opEdit.status === 201, `operator edits: ${JSON.stringify(opEdit)}`);
  const own = await post('alice', {action: 'delete', refSerial: M});
  check(own.status === 201, `alice deletes her own: ${JSON.stringify(own)}`);
  const upd = await conns.agent.next((x) => x.type === 'message' && x.action === 'message.delete', 10000, 'delete event');
  check(upd.refSerial === M && upd.version === 3, `delete event: ${JSON.stringify(upd)}`);

  // Turn: the agent claims; a user cannot take over; the operator can.
  const c = await turn('agent', {action: 'claim', ttlMs: 60000});
  check(c.status === 200 && c.body.holder === 'agent', `agent claims: ${JSON.stringify(c)}`);
  const u = await turn('alice', {action: 'claim', ttlMs: 60000, takeover: true});
  check(u.status === 403, `user takeover: ${JSON.stringify(u)}`);
  const o = await turn('op', {action: 'claim', ttlMs: 60000, takeover: true});
  check(o.status === 200 && o.body.epoch > c.body.epoch, `operator takeover: ${JSON.stringify(o)}`);
  const stale = await post('agent', {data: 'late token', turnEpoch: c.body.epoch});
  check(stale.status === 409, `stale agent: ${JSON.stringify(stale)}`);
  for (const k of Object.keys(conns)) conns[k].close();
});

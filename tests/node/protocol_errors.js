// Bad input never crashes the server and always gets the documented answer: error frames with
// codes for bad JSON / types / fields / channels, nacks for publish problems (size, rate,
// capability), 401 before the upgrade for bad credentials, and WebSocket close codes for frame
// limits (1009) and invalid UTF-8 (1007). Limits come from the flags in test_protocol_errors.sh.
'use strict';
const WebSocket = require('ws');
const {BASE, Client, connect, check, main} = require('./lib');

const CH = `err-${process.pid}`;

async function expectError(c, msg, code) {
  c.send(msg);
  const e = await c.type('error', 5000);
  check(e.error && e.error.code === code && typeof e.error.message === 'string' && e.error.message,
        `${typeof msg === 'string' ? msg : JSON.stringify(msg)} -> ${JSON.stringify(e)} (want ${code})`);
  return e;
}

async function expectNack(c, msg, code) {
  c.send(msg);
  const n = await c.next((m) => (m.type === 'nack' || m.type === 'ack') && m.msgSerial === msg.msgSerial, 5000);
  check(n.type === 'nack' && n.error.code === code, `${JSON.stringify(msg).slice(0, 80)} -> ${JSON.stringify(n)} (want ${code})`);
}

function refused(query, headers) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${BASE}/v1/realtime${query}`, {headers});
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({status: res.statusCode, body}));
    });
    ws.on('open', () => { ws.close(); resolve({status: 101}); });
    ws.on('error', () => {});
  });
}

main(async () => {
  const c = await connect();
  check(c.connected.limits.maxFrameBytes === 4096 && c.connected.limits.maxChannels === 2 &&
        c.connected.limits.maxMessageBytes === 200, `limits advertised: ${JSON.stringify(c.connected.limits)}`);
  await expectError(c, 'not json', 40001);
  await expectError(c, '[1,2]', 40001);
  await expectError(c, {channel: CH}, 40010);
  await expectError(c, {type: 'subscribe-please'}, 40010);
  await expectError(c, {type: 'attach'}, 40002);
  await expectError(c, {type: 'attach', channel: 'has space'}, 40002);
  await expectError(c, {type: 'attach', channel: CH, from: 'yesterday'}, 40010);
  await expectError(c, {type: 'attach', channel: CH, from: -4}, 40010);
  await expectError(c, {type: 'detach', channel: CH}, 40011);
  await expectError(c, {type: 'publish', channel: CH, messages: [{data: 1}]}, 40010);
  await expectNack(c, {type: 'publish', msgSerial: 1, channel: CH, messages: []}, 40010);
  await expectNack(c, {type: 'publish', msgSerial: 2, channel: CH, messages: [{name: 5, data: 1}]}, 40010);
  await expectNack(c, {type: 'publish', msgSerial: 3, channel: CH, messages: [{data: 'x'.repeat(300)}]}, 41300);
  await expectNack(c, {type: 'publish', msgSerial: 4, channel: 'bad name', messages: [{data: 1}]}, 40002);
  await expectNack(c, {type: 'publish', msgSerial: 5, channel: CH, messages: Array(6).fill({data: 1})}, 41302);
  await expectNack(c, {type: 'publish', msgSerial: 6, channel: CH, messages: [{id: 'i'.repeat(65), data: 1}]}, 40010);
  await expectNack(c, {type: 'publish', msgSerial: 7, channel: CH, messages: [{data: 1, extras: [1]}]}, 40010);
  await expectNack(c, {type: 'publish', msgSerial: 8, channel: CH, messages: [{data: 'x'.repeat(150), extras: {p: 'y'.repeat(60)}}]}, 41300);

  // Round trip: a string stays a string, objects and extras come back as published.
  const rt = `${CH}-rt`;
  c.send({type: 'attach', channel: rt});
  await c.type('attached', 5000, (m) => m.channel === rt);
  c.send({type: 'publish', msgSerial: 9, channel: rt,
          messages: [{id: 'a', name: 'n', data: 'plain text', extras: {final: true}}, {data: {k: [1, 'two']}}, {name: 'empty'}]});
  const ack = await c.type('ack', 5000, (m) => m.msgSerial === 9);
  check(ack.serials.length === 3, 'three serials');
  const m1 = await c.type('message', 5000, (m) => m.channel === rt && m.serial === ack.serials[0]);
  check(m1.data === 'plain text' && m1.extras.final === true && m1.id === 'a' && m1.name === 'n' &&
        m1.action === 'message.create' && typeof m1.timestamp === 'number', `string round trip: ${JSON.stringify(m1)}`);
  const m2 = await c.type('message', 5000, (m) => m.channel === rt && m.serial === ack.serials[1]);
  check(JSON.stringify(m2.data) === '{"k":[1,"two"]}', `object round trip: ${JSON.stringify(m2)}`);
  const m3 = await c.type('message', 5000, (m) => m.channel === rt && m.serial === ack.serials[2]);
  check(m3.data === null, `no data comes back as null: ${JSON.stringify(m3)}`);
  // The same client-supplied id again: deduplicated, the original serial comes back.
  c.send({type: 'publish', msgSerial: 10, channel: rt, messages: [{id: 'a', data: 'again'}]});
  const dup = await c.type('ack', 5000, (m) => m.msgSerial === 10);
  check(dup.serials[0] === ack.serials[0] && dup.duplicates && dup.duplicates[0] === true,
        `dedup by id: ${JSON.stringify(dup)}`);
  c.send({type: 'detach', channel: rt});
  await c.type('detached', 5000, (m) => m.channel === rt);
  check(!c.queue.some((m) => m.type === 'message' && m.channel === rt && m.data === 'again'),
        'the duplicate was not delivered');

  // Channel limit: the third attachment is refused; detach frees a slot.
  for (const ch of ['l1', 'l2']) {
    c.send({type: 'attach', channel: `${CH}-${ch}`});
    await c.type('attached', 5000, (m) => m.channel === `${CH}-${ch}`);
  }
  await expectError(c, {type: 'attach', channel: `${CH}-l3`}, 42901);
  c.send({type: 'detach', channel: `${CH}-l1`});
  await c.type('detached', 5000);
  c.send({type: 'attach', channel: `${CH}-l3`});
  await c.type('attached', 5000, (m) => m.channel === `${CH}-l3`);

  // Rate: 20 per second per connection; 30 single-message publishes at once get some 42900.
  const r = await connect();
  for (let i = 0; i < 30; i++) r.send({type: 'publish', msgSerial: 100 + i, channel: CH, messages: [{data: i}]});
  let acks = 0, limited = 0;
  for (let i = 0; i < 30; i++) {
    const m = await r.next((x) => (x.type === 'ack' || x.type === 'nack') && x.msgSerial === 100 + i, 10000);
    if (m.type === 'ack') acks++;
    else if (m.error.code === 42900) limited++;
  }
  check(acks >= 15 && acks <= 22 && limited === 30 - acks, `rate limit: ${acks} acked, ${limited} limited`);
  r.close();

  // Capabilities: the read-only key may attach but not publish.
  const ro = await connect('?key=reader:r3ad');
  ro.send({type: 'attach', channel: CH, from: 'start'});
  await ro.type('attached', 5000);
  await expectNack(ro, {type: 'publish', msgSerial: 1, channel: CH, messages: [{data: 1}]}, 40301);
  ro.close();
  const wrong = await refused('?key=reader:wrong');
  check(wrong.status === 401 && JSON.parse(wrong.body).error.code === 40103, `bad secret: ${JSON.stringify(wrong)}`);
  const plain = await new Promise((resolve) => {
    require('http').get(`http://${BASE}/v1/realtime`, (res) => { res.resume(); resolve(res.statusCode); });
  });
  check(plain === 400, `GET without upgrade: ${plain}`);

  // Frame over max-frame-bytes: close 1009. Invalid UTF-8 in a text frame: close 1007.
  const big = new Client();
  await big.type('connected', 5000);
  big.ws.send(JSON.stringify({type: 'ping', pad: 'y'.repeat(5000)}));
  check((await big.waitClose(5000)).code === 1009, 'oversized frame closes with 1009');
  const utf = new Client();
  await utf.type('connected', 5000);
  utf.ws.send(Buffer.from([0x7b, 0xed, 0xa0, 0x80, 0x7d]), {binary: false});
  check((await utf.waitClose(5000)).code === 1007, 'invalid UTF-8 closes with 1007');

  // Still serving.
  c.send({type: 'ping'});
  await c.type('pong', 5000);
  c.close();
});

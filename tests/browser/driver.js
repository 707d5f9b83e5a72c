// Browser test: Debian's chromium (driven by playwright-core) opens page/index.html, whose code
// follows one channel with the browser's own WebSocket (Spool realtime protocol, resume with the
// resume key) and EventSource (automatic reconnection with Last-Event-ID). A Node publisher
// POSTs messages 1..N at a steady pace; mid-stream the page's connections are killed twice:
//   1. cut: the server side drops both TCP connections (no close frame, no end of stream);
//   2. outage: both are cut again and the page's reconnect attempts are reset too until each
//      client has failed at least once (the WebSocket retries with backoff, the EventSource with
//      the server's retry hint), then connections go through again.
// Then both consumers must hold exactly serials 1..N in arrival order (no gap, no duplicate),
// the WebSocket must have resumed its original connection with the serial it had processed,
// and every EventSource reconnect must have carried Last-Event-ID = the last serial it had.
//
// The page's connections go through a small Node server that forwards /v1/* to spoold, so the
// server side of them can be cut here. It listens on two ports: the page's own origin (serves
// the page, and forwards) and an API origin (forwards). The WebSocket always connects to the API
// origin (cross-origin, as a browser app talking to a Spool cluster would). The EventSource does
// too when spoold answers a cross-origin SSE request with Access-Control-Allow-Origin; otherwise
// (spoold without CORS on SSE) it uses the page's own origin, and the log says so.
//
// Environment: SPOOLD (path), SPOOL_WORK (an empty temp dir, removed by the caller),
// CHROMIUM (default /usr/bin/chromium), BROWSER_MESSAGES (default 300).
'use strict';
const {chromium} = require('playwright-core');
const {spawn} = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');

const SPOOLD = process.env.SPOOLD;
const WORK = process.env.SPOOL_WORK;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const N = Number(process.env.BROWSER_MESSAGES || 300);
const PACE_MS = 20; // one publish every 20 ms: about 6 s for 300 messages
if (!SPOOLD || !WORK) throw new Error('SPOOLD and SPOOL_WORK must be set');

const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
const log = (...a) => console.log(`[${elapsed()}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class Fail extends Error {}
function check(cond, msg) { if (!cond) throw new Fail(msg); }

// Polls cond() (sync or async) every 25 ms until it is truthy, at most ms; what names it.
// describe() (optional) adds the current state to the failure message.
async function until(cond, ms, what, describe = null) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() >= deadline)
      throw new Fail(`timeout (${ms} ms) waiting for ${what}${describe ? `; now ${await describe()}` : ''}`);
    await sleep(25);
  }
}

// ---- spoold ----
let spoold = null, spooldExit = null;
const SPOOLD_LOG = path.join(WORK, 'spoold.log');

async function startSpoold() {
  const out = fs.openSync(SPOOLD_LOG, 'w');
  spoold = spawn(SPOOLD, ['--anonymous', '--data', path.join(WORK, 'data'),
                          '--listen', '127.0.0.1:0', '--cluster-listen', '127.0.0.1:0',
                          '--shards', '1', '--replicas', '1'],
                 {stdio: ['ignore', out, out],
                  env: {...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1'}});
  fs.closeSync(out);
  fs.writeFileSync(path.join(WORK, 'spoold.pid'), String(spoold.pid));
  spooldExit = new Promise((resolve) => spoold.on('exit', (code, signal) => resolve({code, signal})));
  let exited = null;
  spooldExit.then((e) => { exited = e; });
  const port = await until(() => {
    check(!exited, `spoold exited early (${JSON.stringify(exited)})`);
    const m = /event=http\.listening .*port=(\d+)/.exec(fs.readFileSync(SPOOLD_LOG, 'utf8'));
    return m && Number(m[1]);
  }, 30000, 'spoold to listen');
  await until(async () => {
    check(!exited, `spoold exited early (${JSON.stringify(exited)})`);
    return (await httpGetStatus(port, '/readyz')) === 200;
  }, 30000, 'spoold /readyz');
  return port;
}

function httpGetStatus(port, p) {
  return new Promise((resolve) => {
    const r = http.get({host: '127.0.0.1', port, path: p, timeout: 1000}, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    r.on('timeout', () => r.destroy());
    r.on('error', () => resolve(0));
  });
}

async function stopSpoold() {
  spoold.kill('SIGTERM');
  const ex = await Promise.race([spooldExit, sleep(30000).then(() => null)]);
  check(ex !== null, 'spoold did not exit within 30 s of SIGTERM');
  const text = fs.readFileSync(SPOOLD_LOG, 'utf8');
  check(ex.code === 0, `spoold exited with ${JSON.stringify(ex)} on SIGTERM`);
  check(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(text), 'sanitizer report in spoold log');
  spoold = null;
}

// The Access-Control-Allow-Origin spoold answers a cross-origin SSE request with (null if none).
function sseAllowOrigin(port, origin) {
  return new Promise((resolve, reject) => {
    const r = http.get({host: '127.0.0.1', port, path: '/v1/channels/cors-probe/events?from=live',
                        headers: {Origin: origin, Accept: 'text/event-stream'}, timeout: 10000}, (res) => {
      resolve(res.headers['access-control-allow-origin'] ?? null);
      r.destroy();
    });
    r.on('timeout', () => r.destroy(new Error('SSE CORS probe timed out')));
    r.on('error', (e) => reject(e));
  });
}

// ---- publisher: REST, straight to spoold ----
function post(port, channel, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const r = http.request({host: '127.0.0.1', port, method: 'POST', timeout: 10000,
                            path: `/v1/channels/${encodeURIComponent(channel)}/messages`,
                            headers: {'Content-Type': 'application/json',
                                      'Content-Length': Buffer.byteLength(data)}}, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({status: res.statusCode, text}));
    });
    r.on('timeout', () => r.destroy(new Error('publish timed out')));
    r.on('error', reject);
    r.end(data);
  });
}

// Publishes {i} for i = 1..N, one POST at a time, PACE_MS apart; progress.published counts acks.
async function publishAll(port, channel, progress) {
  for (let i = 1; i <= N; i++) {
    const r = await post(port, channel, {id: `b-${i}`, name: 'n', data: {i}});
    check(r.status === 201, `publish ${i}: HTTP ${r.status} ${r.text}`);
    const serials = JSON.parse(r.text).serials;
    check(serials.length === 1 && serials[0] === i, `publish ${i} got serials ${JSON.stringify(serials)}`);
    progress.published = i;
    if (i < N) await sleep(PACE_MS); // the steady pace of a token stream, not synchronisation
  }
}

// ---- the page's server: static page + /v1/* forwarded to spoold; the page's streams can be cut ----
function startFront(spoolPort) {
  const pageDir = path.join(__dirname, 'page');
  const files = {'/': ['index.html', 'text/html; charset=utf-8'],
                 '/index.html': ['index.html', 'text/html; charset=utf-8'],
                 '/page.js': ['page.js', 'text/javascript; charset=utf-8']};
  const live = new Set();     // {kind: 'ws'|'sse', down, up} for every open stream
  const sseRequests = [];     // {url, lastEventId, refused} of every EventSource request, in order
  let wsUpgrades = 0;
  const outage = {on: false, ws: 0, sse: 0}; // while on, the page's new connections are reset
  const reset = (sock) => (typeof sock.resetAndDestroy === 'function' ? sock.resetAndDestroy() : sock.destroy());
  const server = http.createServer((req, res) => {
    const p = req.url.split('?')[0];
    if (files[p]) {
      const [f, type] = files[p];
      res.writeHead(200, {'Content-Type': type, 'Cache-Control': 'no-store'});
      res.end(fs.readFileSync(path.join(pageDir, f)));
      return;
    }
    if (!p.startsWith('/v1/')) {
      res.writeHead(404).end();
      return;
    }
    const isSse = /^\/v1\/channels\/[^/]+\/events$/.test(p);
    const refused = outage.on && (isSse || p === '/v1/realtime');
    if (isSse) sseRequests.push({url: req.url, lastEventId: req.headers['last-event-id'] ?? null, refused});
    if (refused) {
      outage.sse += isSse ? 1 : 0;
      reset(req.socket);
      return;
    }
    const up = http.request({host: '127.0.0.1', port: spoolPort, method: req.method, path: req.url,
                             headers: req.headers, agent: false});
    const pair = {kind: 'sse', down: req.socket, up};
    if (isSse) live.add(pair);
    up.on('response', (upRes) => {
      res.writeHead(upRes.statusCode, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => { live.delete(pair); up.destroy(); });
    req.pipe(up);
  });
  server.on('upgrade', (req, down, head) => {
    if (req.url.split('?')[0] !== '/v1/realtime') { down.destroy(); return; }
    if (outage.on) {
      outage.ws++;
      reset(down);
      return;
    }
    wsUpgrades++;
    const up = net.connect(spoolPort, '127.0.0.1');
    const pair = {kind: 'ws', down, up};
    live.add(pair);
    up.on('connect', () => {
      let h = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) h += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(h + '\r\n');
      if (head.length) up.write(head);
      up.pipe(down);
      down.pipe(up);
    });
    const gone = () => { live.delete(pair); up.destroy(); down.destroy(); };
    up.on('error', gone);
    down.on('error', gone);
    up.on('close', () => { live.delete(pair); down.end(); });
    down.on('close', () => { live.delete(pair); up.end(); });
  });
  // Drops every open page stream abruptly: the browser's socket is reset (no close frame, no end
  // of the event stream) and spoold's side is closed, as when a network path dies.
  function cut() {
    const n = {ws: 0, sse: 0};
    for (const pair of [...live]) {
      n[pair.kind]++;
      live.delete(pair);
      reset(pair.down);
      pair.up.destroy();
    }
    return n;
  }
  const liveCount = (kind) => [...live].filter((x) => x.kind === kind).length;
  // The API origin: the same handlers on a second port.
  const api = http.createServer(server.listeners('request')[0]);
  api.on('upgrade', server.listeners('upgrade')[0]);
  const listen = (srv) => new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv.address().port)));
  return Promise.all([listen(server), listen(api)]).then(([port, apiPort]) => ({
    port, apiPort, cut, liveCount, sseRequests, outage,
    wsUpgrades: () => wsUpgrades,
    close: () => {
      cut();
      for (const srv of [server, api]) { srv.close(); srv.closeAllConnections(); }
    },
  }));
}

// ---- the test ----
async function main() {
  const spoolPort = await startSpoold();
  log(`spoold listening on 127.0.0.1:${spoolPort}`);
  const front = await startFront(spoolPort);
  const pageOrigin = `http://127.0.0.1:${front.port}`;
  const apiOrigin = `http://127.0.0.1:${front.apiPort}`;
  const acao = await sseAllowOrigin(spoolPort, pageOrigin);
  const sseCross = acao === '*' || acao === pageOrigin;
  log(`page on ${pageOrigin}; WebSocket to ws://127.0.0.1:${front.apiPort} (cross-origin); EventSource to ` +
      (sseCross ? `${apiOrigin} (cross-origin, spoold sends Access-Control-Allow-Origin: ${acao})`
                : `${pageOrigin} (same origin: spoold sends no Access-Control-Allow-Origin on SSE)`));

  const context = await chromium.launchPersistentContext(path.join(WORK, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  // The browser's pid, for test_browser.sh's trap: Chromium's profile lock names it (host-pid).
  try {
    const pid = /-(\d+)$/.exec(fs.readlinkSync(path.join(WORK, 'chromium-profile', 'SingletonLock')));
    if (pid) fs.writeFileSync(path.join(WORK, 'chromium.pid'), pid[1]);
  } catch (_) { /* no lock link: the trap cannot name the browser, playwright still closes it */ }
  try {
    const page = context.pages()[0] || await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    const channel = `browser-${process.pid}-${Date.now()}`;
    log(`chromium ${context.browser()?.version?.() ?? ''} opening the page on channel ${channel}`);
    const q = new URLSearchParams({channel, ws: `ws://127.0.0.1:${front.apiPort}`, sse: sseCross ? apiOrigin : ''});
    await page.goto(`${pageOrigin}/?${q}`, {timeout: 15000});
    const S = () => page.evaluate(() => JSON.parse(JSON.stringify(window.spool)));
    const progress = {published: 0};
    const summary = async () => {
      const x = await S();
      const pick = (c, keys) => Object.fromEntries(keys.map((k) => [k, c[k]]));
      return JSON.stringify({published: progress.published, open: {ws: front.liveCount('ws'), sse: front.liveCount('sse')},
        ws: pick(x.ws, ['last', 'open', 'connects', 'attempts', 'drops', 'closes', 'resumed', 'errors', 'bad']),
        sse: pick(x.sse, ['last', 'open', 'opens', 'drops', 'errors', 'bad']), sseRequests: front.sseRequests});
    };
    const waitPage = (cond, ms, what) => until(cond, ms, what, summary);
    await waitPage(async () => { const s = await S(); return s.ws.connects === 1 && s.sse.opens === 1; },
                15000, 'the page to connect its WebSocket and EventSource');
    check(front.liveCount('ws') === 1 && front.liveCount('sse') === 1,
          'the page\'s WebSocket and EventSource do not go through the page server');

    let pubErr = null;
    const publishing = publishAll(spoolPort, channel, progress).catch((e) => { pubErr = e; });
    const reached = (n) => async () => {
      check(!pubErr, `publisher failed: ${pubErr}`);
      const s = await S();
      return s.ws.last >= n && s.sse.last >= n;
    };

    // Drop 1: cut both connections from the server side.
    await waitPage(reached(Math.floor(N / 3)), 30000, `both consumers at serial ${Math.floor(N / 3)}`);
    let s = await S();
    const cut1 = front.cut();
    const cut1At = {published: progress.published, ws: s.ws.last, sse: s.sse.last};
    log(`cut 1: dropped ${cut1.ws} WebSocket + ${cut1.sse} EventSource connection(s); page at ws ${cut1At.ws},` +
        ` sse ${cut1At.sse}; publisher at ${cut1At.published}/${N}`);
    check(cut1.ws === 1 && cut1.sse === 1, `cut 1 found ${JSON.stringify(cut1)} open streams`);
    check(cut1At.published < N, 'the publisher finished before the cut: not mid-stream');
    await waitPage(async () => {
      const x = await S();
      return x.ws.connects >= 2 && x.sse.opens >= 2 && x.ws.last > cut1At.published && x.sse.last > cut1At.published;
    }, 20000, 'both consumers to reconnect and continue past the cut');
    s = await S();
    log(`after cut 1: ws reconnected (resumed ${JSON.stringify(s.ws.resumed[0])}), sse reopened; page at ws ${s.ws.last}, sse ${s.sse.last}`);

    // Drop 2: an outage. Cut both again and reset the page's reconnects until the WebSocket and
    // the EventSource have each failed at least once.
    await waitPage(reached(Math.floor((2 * N) / 3)), 30000, `both consumers at serial ${Math.floor((2 * N) / 3)}`);
    front.outage.on = true;
    const cut2 = front.cut();
    s = await S();
    const cut2At = {published: progress.published, ws: s.ws.last, sse: s.sse.last};
    log(`outage: dropped ${cut2.ws} WebSocket + ${cut2.sse} EventSource connection(s); page at ws ${cut2At.ws},` +
        ` sse ${cut2At.sse}; publisher at ${cut2At.published}/${N}`);
    check(cut2.ws === 1 && cut2.sse === 1, `the outage found ${JSON.stringify(cut2)} open streams`);
    check(cut2At.published < N, 'the publisher finished before the outage: not mid-stream');
    await waitPage(async () => {
      const x = await S();
      return x.ws.drops.length >= 2 && x.sse.drops.length >= 2 && front.outage.ws >= 2 && front.outage.sse >= 1;
    }, 15000, 'the page to see both drops and its reconnects to fail (2 WebSocket, 1 EventSource)');
    front.outage.on = false;
    const failed = {ws: front.outage.ws, sse: front.outage.sse};
    log(`outage over: ${failed.ws} WebSocket and ${failed.sse} EventSource reconnect(s) were reset`);

    await publishing;
    check(!pubErr, `publisher failed: ${pubErr}`);
    log(`publisher done: ${N} messages, every POST answered with serial i`);
    await waitPage(reached(N), 30000, `both consumers at serial ${N}`);
    s = await S();

    // ---- checks ----
    const expected = Array.from({length: N}, (_, k) => k + 1);
    const same = (a) => a.length === expected.length && a.every((v, k) => v === expected[k]);
    for (const name of ['ws', 'sse']) {
      const c = s[name];
      check(c.bad.length === 0, `${name}: ${c.bad.slice(0, 5).join('; ')}`);
      check(c.errors.length === 0, `${name} errors: ${c.errors.slice(0, 5).join('; ')}`);
      check(same(c.serials), `${name}: received ${c.serials.length} messages, not exactly 1..${N} in order`);
      check(c.drops.length === 2, `${name}: ${c.drops.length} drops seen by the page, expected 2`);
      check(c.drops[0].atSerial > 0 && c.drops[0].atSerial < N && c.drops[1].atSerial < N,
            `${name}: drops not mid-stream: ${JSON.stringify(c.drops)}`);
    }
    check(pageErrors.length === 0, `page errors: ${pageErrors.join('; ')}`);
    // WebSocket: two resumes of the one original connection, each from the serial it had.
    check(s.ws.connects === 3, `ws: ${s.ws.connects} connections, expected 3`);
    check(s.ws.resumed.length === 2, `ws: ${s.ws.resumed.length} resumes, expected 2`);
    s.ws.resumed.forEach((r, k) => {
      check(r.connectionId === s.ws.connectionIds[0], `ws resume ${k + 1}: connectionId ${r.connectionId} is not the original ${s.ws.connectionIds[0]}`);
      check(r.channels && r.channels[channel] === s.ws.drops[k].atSerial,
            `ws resume ${k + 1}: resumed ${JSON.stringify(r.channels)}, the page had processed ${s.ws.drops[k].atSerial}`);
    });
    check(s.ws.closes.every((c) => !c.wasClean), `ws: a drop closed cleanly: ${JSON.stringify(s.ws.closes)}`);
    // EventSource: three requests got through; every reconnect, including the ones reset in the
    // outage, carried Last-Event-ID = the last serial the page had.
    const served = front.sseRequests.filter((r) => !r.refused);
    const ids = served.map((r) => r.lastEventId);
    check(s.sse.opens === 3 && served.length === 3,
          `sse: ${s.sse.opens} opens, ${served.length} requests served, expected 3`);
    for (const r of front.sseRequests.filter((x) => x.refused))
      check(r.lastEventId === String(s.sse.drops[1].atSerial),
            `sse: a reconnect during the outage carried Last-Event-ID ${r.lastEventId}, the page had ${s.sse.drops[1].atSerial}`);
    check(ids[0] === null, `sse: the first request carried Last-Event-ID ${ids[0]}`);
    check(ids[1] === String(s.sse.drops[0].atSerial) && ids[2] === String(s.sse.drops[1].atSerial),
          `sse: reconnects carried Last-Event-ID ${JSON.stringify(ids.slice(1))}, the page had ${s.sse.drops.map((d) => d.atSerial)}`);

    log(`checked: WebSocket received exactly serials 1..${N} in order (data.i = serial), 3 connections, ` +
        `resumed twice (after serials ${s.ws.drops.map((d) => d.atSerial).join(', ')}) keeping connectionId ` +
        `${s.ws.connectionIds[0]}, after ${failed.ws} failed attempt(s) in the outage`);
    log(`checked: EventSource received exactly serials 1..${N} in order (id = serial), reconnected by itself twice ` +
        `with Last-Event-ID ${ids.slice(1).join(', ')} (and ${failed.sse} reset attempt(s) in the outage)`);
  } finally {
    await context.close().catch(() => {});
    front.close();
  }
  await stopSpoold();
  log('checked: spoold exited 0 on SIGTERM with no sanitizer report');
}

const guard = setTimeout(() => { console.error('FAIL: browser test took longer than 100 s'); process.exit(1); }, 100000);
main().then(() => {
  clearTimeout(guard);
  console.log(`ok (${elapsed()})`);
  process.exit(0);
}, (e) => {
  // (playwright's errors append the browser's whole log: keep the start, which says what failed)
  const text = e instanceof Fail ? e.message : (e && e.stack) || String(e);
  console.error('FAIL:', text.length > 4000 ? `${text.slice(0, 4000)}\n[... ${text.length - 4000} more characters]` : text);
  if (spoold) {
    try { console.error('--- spoold.log (tail) ---\n' + fs.readFileSync(SPOOLD_LOG, 'utf8').split('\n').slice(-40).join('\n')); } catch (_) {}
    spoold.kill('SIGKILL');
  }
  process.exit(1);
});

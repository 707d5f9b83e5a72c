// End-to-end test of the example in headless Debian chromium (playwright-core):
//   1. the user asks; the agent streams a response token by token (HTTP appends, turn epoch);
//   2. mid-response the user's tab is closed; reopened in a NEW browser context it must show the
//      whole response, first as one rolled-up event then live appends, and end with exactly the
//      agent's text: no gap, no duplicate (serials only grow), no replay of every token;
//   3. the user asks again and presses Stop mid-response (an interrupt, delivered only to the turn
//      holder's connection): the agent ends the response at once (a last append with extras
//      {"final": true, "reason": "interrupted"}), appends nothing more and releases the turn;
//   4. the user asks again; mid-response the operator page takes the turn over; the agent's next
//      append is refused (stale turn epoch) and the user's page shows the take-over event.
// Environment: SPOOLD, AI_CHAT_WORK (empty temp dir), CHROMIUM (default /usr/bin/chromium).
'use strict';
const {chromium} = require('playwright-core');
const {spawn} = require('child_process');
const fs = require('fs');
const http = require('http');
const path = require('path');
const serve = require('./serve');

const SPOOLD = process.env.SPOOLD;
const WORK = process.env.AI_CHAT_WORK;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TOKENS = 150;
if (!SPOOLD || !WORK) throw new Error('SPOOLD and AI_CHAT_WORK must be set');
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class Fail extends Error {}
function check(cond, msg) { if (!cond) throw new Fail(msg); }
async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() >= deadline) throw new Fail(`timeout (${ms} ms) waiting for ${what}`);
    await sleep(25);
  }
}

function spawnLogged(cmd, argv, logFile, env = process.env) {
  const out = fs.openSync(logFile, 'w');
  const p = spawn(cmd, argv, {stdio: ['ignore', out, out], env});
  fs.closeSync(out);
  p.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({code, signal})));
  fs.appendFileSync(path.join(WORK, 'pids'), `${p.pid}\n`);
  return p;
}

async function main() {
  const spoolLog = path.join(WORK, 'spoold.log');
  const spoold = spawnLogged(SPOOLD, ['--anonymous', '--cors-origins', '*', '--data', path.join(WORK, 'data'),
                                      '--listen', '127.0.0.1:0', '--cluster-listen', '127.0.0.1:0',
                                      '--shards', '1', '--replicas', '1'], spoolLog,
                             {...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1'});
  const port = await until(() => {
    const m = /event=http\.listening .*port=(\d+)/.exec(fs.readFileSync(spoolLog, 'utf8'));
    return m && Number(m[1]);
  }, 30000, 'spoold to listen');
  await until(() => new Promise((resolve) => http.get(`http://127.0.0.1:${port}/readyz`, (r) => { r.resume(); resolve(r.statusCode === 200); })
    .on('error', () => resolve(false))), 30000, 'spoold ready');
  const api = `http://127.0.0.1:${port}`;
  const pages = await serve.start(0);
  const origin = `http://127.0.0.1:${pages.address().port}`;
  const channel = `ai-chat-${process.pid}`;
  const agentLog = path.join(WORK, 'agent.log');
  const agent = spawnLogged(process.execPath, [path.join(__dirname, 'agent.js'), '--api', api, '--channel', channel,
                                               '--tokens', String(TOKENS), '--interval', '25'], agentLog);
  const agentEvents = () => fs.readFileSync(agentLog, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  await until(() => agentEvents().some((e) => e.event === 'following'), 15000, 'the agent to follow the channel');
  log(`spoold ${api}, pages ${origin}, channel ${channel}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const q = new URLSearchParams({api, channel}).toString();
    const open = async (file) => {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`${origin}/${file}?${q}`, {timeout: 15000});
      await until(() => page.evaluate(() => window.chat && window.chat.connected), 15000, `${file} to attach`);
      return {ctx, page, errors, S: () => page.evaluate(() => JSON.parse(JSON.stringify(window.chat)))};
    };

    // 1-2: ask, close the tab mid-response, reopen in a new context.
    const u1 = await open('user.html');
    await u1.page.evaluate(() => window.sendMessage('What is Spool?'));
    const started = await until(() => agentEvents().find((e) => e.event === 'started'), 15000, 'the agent to start');
    const M = started.message;
    await until(async () => { const s = await u1.S(); return s.msgs[M] && s.msgs[M].events >= 30; }, 20000, '30 tokens on the first page');
    const seenBefore = (await u1.S()).msgs[M].events;
    await u1.ctx.close();
    log(`closed the user's tab after ${seenBefore} events of message ${M}`);
    await until(() => agentEvents().filter((e) => e.event === 'append' && e.message === M).length >= seenBefore + 20,
                20000, 'the agent to stream on while the tab is closed');
    const u2 = await open('user.html');
    const expected = Array.from({length: TOKENS}, (_, i) => `w${i} `).join('');
    await until(async () => { const s = await u2.S(); return s.msgs[M] && s.msgs[M].final; }, 30000, 'the response to finish on the reopened page');
    let s = await u2.S();
    check(s.msgs[M].text === expected, `reopened page text differs:\n${s.msgs[M].text}\nvs\n${expected}`);
    check(s.bad.length === 0, `serials went backwards (duplicate): ${s.bad.join('; ')}`);
    const aboutM = s.events.filter((e) => e.serial >= M && (e.refSerial === M || e.serial === M));
    check(aboutM[0].rollup && aboutM[0].action === 'message.create', `first event was not the rolled-up message: ${JSON.stringify(aboutM[0])}`);
    check(s.msgs[M].events < TOKENS, `${s.msgs[M].events} events for ${TOKENS} tokens: no rollup`);
    log(`reopened page: full response (${expected.length} chars) in ${s.msgs[M].events} events, first rolled up`);
    await until(() => agentEvents().some((e) => e.event === 'done' && e.message === M), 10000, 'the agent to release the turn');

    // 3: barge-in: the user interrupts the next response; the agent stops it at once.
    await until(() => agentEvents().some((e) => e.event === 'listening'), 15000, 'the agent to listen for interrupts');
    await u2.page.evaluate(() => window.sendMessage('Tell me everything'));
    const started3 = await until(() => agentEvents().find((e) => e.event === 'started' && e.message !== M), 15000, 'the response to interrupt');
    const M3 = started3.message;
    await until(async () => { const x = await u2.S(); return x.msgs[M3] && x.msgs[M3].events >= 10; }, 20000, '10 tokens of the response to interrupt');
    const ack = await u2.page.evaluate(() => window.interrupt('stop'));
    check(ack.type === 'ack' && ack.holder === 'agent' && ack.epoch === started3.epoch, `interrupt ack: ${JSON.stringify(ack)}`);
    const intr = await until(() => agentEvents().find((e) => e.event === 'interrupted' && e.message === M3), 10000, 'the agent to stop');
    check(intr.status === 201 && intr.token < TOKENS, `interrupted: ${JSON.stringify(intr)}`);
    await until(async () => { const x = await u2.S(); return x.msgs[M3].final; }, 10000, 'the interrupted response to end on the page');
    const appended3 = agentEvents().filter((e) => e.event === 'append' && e.message === M3).length;
    await sleep(4 * 25 + 200); // several token intervals: an agent still streaming would have appended
    await until(async () => { const x = await u2.S(); return x.turn && x.turn.op === 'release'; }, 10000, 'the turn released after the interrupt');
    s = await u2.S();
    check(appended3 < TOKENS && agentEvents().filter((e) => e.event === 'append' && e.message === M3).length === appended3,
          `the agent appended after the interrupt (${appended3} before)`);
    check(s.msgs[M3].reason === 'interrupted' && s.msgs[M3].text === Array.from({length: appended3}, (_, i) => `w${i} `).join(''),
          `interrupted response on the page: ${JSON.stringify(s.msgs[M3])} (agent appended ${appended3})`);
    check(s.lastSerial === intr.serial + 1 && s.turn && s.turn.op === 'release',
          `after the interrupt: last serial ${s.lastSerial} (final append ${intr.serial}), turn ${JSON.stringify(s.turn)}`);
    log(`interrupted the response ${M3} after ${appended3} of ${TOKENS} tokens`);

    // 4: the operator takes over mid-response; the agent's next append is refused.
    const op = await open('operator.html');
    await u2.page.evaluate(() => window.sendMessage('And the turn?'));
    const started2 = await until(() => agentEvents().find((e) => e.event === 'started' && e.message !== M && e.message !== M3), 15000, 'the second response');
    const M2 = started2.message;
    await until(async () => { const x = await u2.S(); return x.msgs[M2] && x.msgs[M2].events >= 10; }, 20000, '10 tokens of the second response');
    const take = await op.page.evaluate(() => window.takeOver());
    check(take.status === 200 && take.body.op === 'takeover' && take.body.epoch > started2.epoch &&
          take.body.previousHolder === 'agent', `take-over: ${JSON.stringify(take)}`);
    const refused = await until(() => agentEvents().find((e) => e.event === 'refused' && e.message === M2), 10000, 'the agent to be refused');
    check(refused.status === 409 && /stale turn epoch/.test(refused.error.message), `agent refusal: ${JSON.stringify(refused)}`);
    await until(async () => { const x = await u2.S(); return x.turn && x.turn.op === 'takeover' && x.turn.holder === 'operator'; },
                10000, 'the take-over event on the user page');
    s = await u2.S();
    const appended = agentEvents().filter((e) => e.event === 'append' && e.message === M2).length;
    check(!s.msgs[M2].final && s.msgs[M2].text === Array.from({length: appended}, (_, i) => `w${i} `).join(''),
          `second response on the page: ${JSON.stringify(s.msgs[M2])} (agent appended ${appended})`);
    check(s.bad.length === 0 && u2.errors.length === 0 && op.errors.length === 0, `page errors: ${s.bad} ${u2.errors} ${op.errors}`);
    log(`operator took over at epoch ${take.body.epoch}; the agent's append ${refused.token} was refused: ${refused.error.message}`);
  } finally {
    await browser.close();
    pages.close();
    agent.kill('SIGTERM');
    await agent.exited;
  }
  spoold.kill('SIGTERM');
  const ex = await Promise.race([spoold.exited, sleep(30000).then(() => null)]);
  check(ex && ex.code === 0, `spoold did not exit 0 on SIGTERM: ${JSON.stringify(ex)}`);
  check(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(fs.readFileSync(spoolLog, 'utf8')), 'sanitizer report in the spoold log');
  log('ok');
}

main().then(() => process.exit(0), (e) => {
  console.error('FAIL:', e instanceof Fail ? e.message : e.stack);
  for (const f of ['agent.log', 'spoold.log']) {
    const p = path.join(WORK, f);
    if (fs.existsSync(p)) console.error(`--- ${f} (tail) ---\n${fs.readFileSync(p, 'utf8').split('\n').slice(-25).join('\n')}`);
  }
  process.exit(1);
});

// Browser-side consumers for tests/browser: everything here uses only the browser's own
// WebSocket and EventSource. The page URL carries ?channel=NAME and optionally ws=ws://host:port
// and sse=http://host:port (where to reach Spool; default this page's own origin, so a
// cross-origin EventSource needs CORS from the server). State for the driver:
//
//   window.spool.ws / window.spool.sse = {
//     serials: [every message serial in arrival order, duplicates and gaps included],
//     bad: [descriptions of anything unexpected: gap, duplicate, wrong data, wrong id],
//     last: the last serial processed, drops: [{atSerial, ...}] one per lost connection,
//     ... }
//
// Nothing is de-duplicated or re-ordered here: the driver checks that the raw arrival order is
// exactly 1..N.
'use strict';
(function () {
  const params = new URLSearchParams(location.search);
  const channel = params.get('channel');
  const wsBase = params.get('ws') || `ws://${location.host}`;
  const sseBase = params.get('sse') || '';
  const MAX_ATTEMPTS = 400; // bounded reconnecting (backoff up to 250 ms: about 100 s)

  function consumer() {
    return {serials: [], bad: [], last: 0, open: false, drops: [], errors: []};
  }
  const state = window.spool = {channel, ws: consumer(), sse: consumer()};
  state.ws.connects = 0;      // successful connections ('connected' received)
  state.ws.attempts = 0;      // WebSocket objects created
  state.ws.resumed = [];      // the 'resumed' answers
  state.ws.connectionIds = [];
  state.ws.closes = [];       // {code, wasClean} of every close
  state.sse.opens = 0;        // 'open' events
  state.sse.lastEventIds = []; // lastEventId of every message event

  // One message object of our channel: must be exactly the next serial, and carry data.i equal
  // to its serial (the publisher sends i = 1..N into a fresh channel).
  function record(c, m, name) {
    c.serials.push(m.serial);
    if (m.serial !== c.last + 1)
      c.bad.push(`${name}: expected serial ${c.last + 1}, got ${m.serial}`);
    if (!m.data || m.data.i !== m.serial)
      c.bad.push(`${name}: serial ${m.serial} carries ${JSON.stringify(m.data)}`);
    if (m.serial > c.last) c.last = m.serial;
  }

  // ---- WebSocket: the Spool realtime protocol ----
  let resumeKey = null;
  let attached = false;   // attached once; later connections resume
  let failures = 0;       // consecutive attempts that never got 'connected'
  function wsConnect() {
    const c = state.ws;
    if (c.attempts >= MAX_ATTEMPTS) { c.errors.push('gave up reconnecting'); return; }
    c.attempts++;
    const ws = new WebSocket(`${wsBase}/v1/realtime`);
    let connected = false;
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { c.bad.push(`ws: non-JSON frame ${ev.data}`); return; }
      switch (m.type) {
        case 'connected':
          connected = true;
          failures = 0;
          c.open = true;
          c.connects++;
          c.connectionIds.push(m.connectionId);
          if (!attached) {
            ws.send(JSON.stringify({type: 'attach', channel, from: 'start'}));
            attached = true;
          } else {
            // The first message after 'connected': the newest key of the lost connection and
            // the serial this page actually processed (which makes the resume exact).
            ws.send(JSON.stringify({type: 'resume', resumeKey, serials: {[channel]: c.last}}));
          }
          break;
        case 'resumeKey':
          resumeKey = m.resumeKey;
          break;
        case 'resumed':
          c.resumed.push({connectionId: m.connectionId, channels: m.channels, sentSerial: c.last});
          break;
        case 'message':
          if (m.channel === channel) record(c, m, 'ws');
          else c.bad.push(`ws: message of another channel ${m.channel}`);
          break;
        case 'attached':
        case 'pong':
          break;
        case 'error':
          c.errors.push(JSON.stringify(m));
          break;
        default:
          c.bad.push(`ws: unexpected ${ev.data.slice(0, 200)}`);
      }
    };
    ws.onclose = (ev) => {
      c.closes.push({code: ev.code, wasClean: ev.wasClean});
      if (connected) c.drops.push({atSerial: c.last, code: ev.code, at: Date.now()});
      c.open = false;
      if (!connected) failures++;
      setTimeout(wsConnect, Math.min(250, 25 * (1 << Math.min(failures, 4))) * (failures > 0 ? 1 : 0));
    };
    ws.onerror = () => {}; // followed by close
  }

  // ---- EventSource: reconnection and Last-Event-ID are the browser's own ----
  function sseStart() {
    const c = state.sse;
    const es = new EventSource(`${sseBase}/v1/channels/${encodeURIComponent(channel)}/events?from=start`);
    es.onopen = () => { c.open = true; c.opens++; };
    es.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { c.bad.push(`sse: non-JSON data ${ev.data}`); return; }
      c.lastEventIds.push(ev.lastEventId);
      if (ev.lastEventId !== String(m.serial))
        c.bad.push(`sse: id ${ev.lastEventId} for serial ${m.serial}`);
      if (m.type === 'message' && m.channel === channel) record(c, m, 'sse');
      else c.bad.push(`sse: unexpected ${ev.data.slice(0, 200)}`);
    };
    es.addEventListener('error', (ev) => {
      if (ev instanceof MessageEvent) { // the server's own `event: error`
        c.errors.push(`server error event: ${ev.data}`);
        return;
      }
      if (c.open) c.drops.push({atSerial: c.last, readyState: es.readyState, at: Date.now()});
      c.open = false;
      if (es.readyState === EventSource.CLOSED) c.errors.push('EventSource closed for good');
    });
  }

  if (!channel) {
    document.getElementById('status').textContent = 'no ?channel=';
    return;
  }
  wsConnect();
  sseStart();
  const status = document.getElementById('status');
  setInterval(() => {
    status.textContent = `ws last=${state.ws.last} drops=${state.ws.drops.length}\n` +
                         `sse last=${state.sse.last} drops=${state.sse.drops.length}`;
  }, 200);
})();

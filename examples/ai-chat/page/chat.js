// The example's browser side (user and operator pages): one WebSocket to spoold attached to the
// conversation's channel from the start. Messages are kept by id (a create's refSerial when it
// is a rolled-up event, else its serial; appends/updates/deletes by refSerial), so a page opened
// mid-response shows the text so far at once (one rolled-up event) and then grows it with the
// live appends. window.chat exposes the state to the end-to-end test.
'use strict';
(function () {
  const q = new URLSearchParams(location.search);
  const api = q.get('api') || 'http://127.0.0.1:8080';
  const channel = q.get('channel') || 'chat-1';
  const role = document.body.dataset.role || 'user';
  const clientId = q.get('client') || role;
  const state = window.chat = {
    channel, role, connected: false, lastSerial: 0, bad: [], events: [], msgs: {}, order: [], turn: null,
  };
  const list = document.getElementById('messages');
  const turnEl = document.getElementById('turn');

  function render() {
    list.textContent = '';
    for (const id of state.order) {
      const m = state.msgs[id];
      const li = document.createElement('li');
      li.className = m.name || 'message';
      li.textContent = `${m.from || '?'}: ${m.deleted ? '(deleted)' : m.text}${m.final ? '' : ' ▍'}${m.reason ? ` [${m.reason}]` : ''}`;
      list.appendChild(li);
    }
    if (turnEl) turnEl.textContent = state.turn ? `turn: ${state.turn.holder || 'nobody'} (epoch ${state.turn.epoch}, ${state.turn.op})` : 'turn: nobody';
  }

  function apply(e) {
    const final = !!(e.extras && e.extras.final);
    if (e.action === 'message.create') {
      const id = e.refSerial || e.serial;
      if (!state.msgs[id]) state.order.push(id);
      state.msgs[id] = {text: typeof e.data === 'string' ? e.data : JSON.stringify(e.data), from: e.clientId,
                        name: e.name, final: final || e.name === 'user', rolled: !!e.rollup, events: 1,
                        reason: e.extras && e.extras.reason};
    } else if (e.action === 'message.append' || e.action === 'message.update' || e.action === 'message.delete') {
      const m = state.msgs[e.refSerial];
      if (!m) return; // a message from before what this page read
      m.events++;
      if (e.action === 'message.append') m.text += e.data;
      else if (e.action === 'message.update') m.text = e.data;
      else m.deleted = true;
      m.final = m.final || final;
      if (final && e.extras.reason) m.reason = e.extras.reason;
    } else if (e.action === 'meta' && e.name === 'ai.turn') {
      state.turn = e.data;
    }
  }

  const ws = new WebSocket(api.replace(/^http/, 'ws') + '/v1/realtime');
  ws.onopen = () => ws.send(JSON.stringify({type: 'attach', channel, from: 'start'}));
  const answers = {}; // msgSerial -> resolve, for window.interrupt
  ws.onmessage = (ev) => {
    const e = JSON.parse(ev.data);
    if (e.type === 'attached') state.connected = true;
    if ((e.type === 'ack' || e.type === 'nack') && answers[e.msgSerial]) {
      answers[e.msgSerial](e);
      delete answers[e.msgSerial];
      return;
    }
    if (e.type !== 'message' || e.channel !== channel) return;
    if (e.serial <= state.lastSerial) state.bad.push(`serial ${e.serial} after ${state.lastSerial}`);
    state.lastSerial = e.serial;
    state.events.push({serial: e.serial, action: e.action, refSerial: e.refSerial, rollup: !!e.rollup});
    apply(e);
    render();
  };
  ws.onclose = () => { state.connected = false; };

  const base = `${api}/v1/channels/${encodeURIComponent(channel)}`;
  window.sendMessage = async (text) => {
    const r = await fetch(`${base}/messages`, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                               body: JSON.stringify({clientId, name: 'user', data: text})});
    return r.json();
  };
  // Barge-in: an interrupt goes live (never stored) to the turn holder's connection only; the
  // answer is the server's ack ({"holder","epoch"}) or nack (40901: nobody holds the turn).
  let interrupts = 0;
  window.interrupt = (reason = 'stop') => new Promise((resolve) => {
    const msgSerial = ++interrupts;
    answers[msgSerial] = resolve;
    ws.send(JSON.stringify({type: 'interrupt', channel, data: {reason}, msgSerial}));
  });
  window.takeOver = async () => {
    const r = await fetch(`${base}/turn`, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                           body: JSON.stringify({action: 'claim', clientId, ttlMs: 60000, takeover: true})});
    return {status: r.status, body: await r.json()};
  };
  const form = document.getElementById('send');
  if (form) form.onsubmit = (ev) => {
    ev.preventDefault();
    const input = form.querySelector('input');
    window.sendMessage(input.value);
    input.value = '';
  };
  const btn = document.getElementById('takeover');
  if (btn) btn.onclick = () => window.takeOver();
  const stop = document.getElementById('stop');
  if (stop) stop.onclick = () => window.interrupt('stop');
  render();
})();

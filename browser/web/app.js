// parley's local web app: a client of the daemon's control API (through
// /api, with the session's CSRF token) and of its event stream (on the
// WebSocket, which also carries the browser's call legs: rtc.js).
'use strict';
import {RTC} from './rtc.js';
import {Groups} from './groups.js';

const $ = id => document.getElementById(id);
const app = {csrf: '', me: '', page: '', ws: null, peer: localStorage.getItem('parley.peer') || '',
  contacts: JSON.parse(localStorage.getItem('parley.contacts') || '[]'), msgs: new Map(), msgsPeer: '', call: null, samples: [], ringing: null};
window.parley = app; // for the console and the tests

async function api(method, path, body) {
  const opt = {method, headers: {}};
  if (method !== 'GET') {
    opt.headers['X-CSRF-Token'] = app.csrf;
    opt.headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body || {});
  }
  const r = await fetch('/api' + path, opt);
  const j = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
app.api = api;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : String(k));
  return e;
}

// Screens: the hash names the one shown.
function show() {
  const name = (location.hash || '#contacts').slice(1);
  for (const s of document.querySelectorAll('.screen')) s.hidden = s.id !== name;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#' + name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const load = {contacts: renderContacts, chat: loadChat, groups: () => app.groups.load(), devices: loadDevices, network: loadNetwork, call: renderCall}[name];
  if (load) load();
}

// Contacts: handles looked up here, with their fingerprints.
function saveContacts() { localStorage.setItem('parley.contacts', JSON.stringify(app.contacts)); }
function renderContacts() {
  const ul = $('contact-list');
  ul.replaceChildren(...app.contacts.map(c => el('li', {},
    el('strong', {}, c.handle), ' ',
    el('span', {class: 'pill ' + (c.verified ? 'ok' : '')}, c.verified ? 'verified' : 'not verified'), ' ',
    el('span', {}, c.devices + ' device' + (c.devices === 1 ? '' : 's')),
    el('div', {class: 'fp'}, 'fingerprint ' + c.fingerprint),
    el('div', {class: 'row'},
      el('button', {onclick: () => openChat(c.handle)}, 'Chat'),
      el('button', {class: 'go', onclick: () => startCall(c.handle)}, 'Call')))));
}
$('lookup').addEventListener('submit', async e => {
  e.preventDefault();
  const h = $('lookup-handle').value.trim().toLowerCase();
  $('lookup-error').textContent = '';
  try {
    const w = await api('GET', '/v1/whois/' + encodeURIComponent(h));
    app.contacts = [{handle: w.handle, fingerprint: w.fingerprint, verified: w.verified, devices: (w.devices || []).length},
      ...app.contacts.filter(c => c.handle !== w.handle)].slice(0, 50);
    saveContacts();
    renderContacts();
  } catch (err) { $('lookup-error').textContent = err.message; }
});

// Chat: the history, then live messages from the event stream.
function openChat(h) {
  app.peer = h;
  localStorage.setItem('parley.peer', h);
  if (location.hash === '#chat') show(); else location.hash = '#chat';
}
function msgItem(m) {
  const t = new Date(m.sent_ms).toLocaleTimeString();
  const state = m.outgoing && m.devices ? ' · ' + [...new Set(m.devices.map(d => d.state))].join(', ') : '';
  return el('li', {class: m.outgoing ? 'out' : 'in', 'data-id': m.id}, m.body, el('span', {class: 'meta'}, (m.outgoing ? 'me' : m.from) + ' · ' + t + state));
}
// The shown conversation: its history merged with live messages, so a
// history load that crosses a message event loses neither.
function renderChat() {
  const ms = [...app.msgs.values()].sort((a, b) => a.lamport - b.lamport || a.sent_ms - b.sent_ms);
  $('history').replaceChildren(...ms.map(msgItem));
  $('history').scrollTop = 1e9;
}
async function loadChat() {
  $('chat-peer').textContent = app.peer || '(pick a contact)';
  if (app.msgsPeer !== app.peer) { app.msgs = new Map(); app.msgsPeer = app.peer; }
  renderChat();
  if (!app.peer) return;
  const peer = app.peer;
  try {
    const h = await api('GET', '/v1/chat/history/' + encodeURIComponent(peer) + '?limit=200');
    if (peer !== app.msgsPeer) return;
    for (const m of h) app.msgs.set(m.id, m);
    renderChat();
  } catch (err) { $('send-error').textContent = err.message; }
}
function addMessage(m) {
  app.msgs.set(m.id, m);
  renderChat();
}
$('send').addEventListener('submit', async e => {
  e.preventDefault();
  const text = $('text').value;
  if (!app.peer || !text) return;
  $('send-error').textContent = '';
  try {
    await api('POST', '/v1/chat/send', {to: app.peer, text});
    $('text').value = '';
    loadChat();
  } catch (err) { $('send-error').textContent = err.message; }
});
app.groups = new Groups(api, el, msgItem);
$('chat-call').addEventListener('click', () => app.peer && startCall(app.peer));

// Calls: placed and answered with this browser's microphone and speaker.
async function startCall(h) {
  location.hash = '#call';
  $('call-error').textContent = '';
  try { app.call = await api('POST', '/call', {to: h, page: app.page}); app.samples = []; renderCall(); }
  catch (err) { $('call-error').textContent = err.message; }
}
app.startCall = startCall;
$('answer').addEventListener('click', async () => {
  if (!app.ringing) return;
  try {
    app.call = await api('POST', '/answer', {id: app.ringing.id, page: app.page});
    app.samples = [];
    app.ringing = null; $('ringing').hidden = true;
    location.hash = '#call';
  } catch (err) { $('ring-text').textContent = err.message; }
});
$('reject').addEventListener('click', async () => {
  if (!app.ringing) return;
  try { await api('POST', '/v1/call/reject', {id: app.ringing.id}); } catch (err) { $('ring-text').textContent = err.message; return; }
  app.ringing = null; $('ringing').hidden = true;
});
$('hangup').addEventListener('click', async () => {
  if (!app.call) return;
  try { await api('POST', '/v1/call/hangup', {id: app.call.id}); } catch (err) { $('call-error').textContent = err.message; }
});
$('mute').addEventListener('click', () => {
  const on = $('mute').getAttribute('aria-pressed') !== 'true';
  $('mute').setAttribute('aria-pressed', String(on));
  $('mute').textContent = on ? 'Unmute' : 'Mute';
  app.rtc.setMuted(on);
});

function callEvent(c) {
  if (c.direction === 'incoming' && c.state === 'ringing') {
    app.ringing = c;
    $('ring-note').hidden = true;
    $('ring-text').textContent = callerLabel(c) + ' is calling…';
    $('ringing').hidden = false;
    $('answer').focus();
  } else if (app.ringing && app.ringing.id === c.id) {
    app.ringing = null; $('ringing').hidden = true;
    // Another device of this account took it, or the caller gave up.
    if (c.state === 'ended') {
      $('ring-note').textContent = 'Call from ' + callerLabel(c) + (c.answered_elsewhere ? ': answered elsewhere' : ': missed' + (c.reason ? ' (' + c.reason + ')' : ''));
      $('ring-note').hidden = false;
    }
  }
  if (app.call && app.call.id === c.id) { app.call = {...app.call, ...c}; renderCall(); }
}

function renderCall() {
  const c = app.call;
  $('call-peer').textContent = c ? callerLabel(c) : '';
  $('call-state').textContent = c ? c.state + (c.reason ? ' (' + c.reason + ')' : '') : 'no call';
  $('call-state').className = 'pill ' + (c && c.state === 'active' ? 'ok' : c && c.state === 'ended' ? 'bad' : '');
  const st = c && c.stats;
  const rows = st ? [['path', st.tier + ' · ' + st.path], ['route', st.path_detail], ['RTT', st.rtt_ms.toFixed(1) + ' ms'],
    ['loss', st.loss_pct.toFixed(1) + ' %'], ['jitter', st.jitter_ms.toFixed(1) + ' ms'], ['MOS', st.mos.toFixed(2)],
    ['kbit/s in/out', st.recv_kbps.toFixed(0) + ' / ' + st.send_kbps.toFixed(0)], ['ICE restarts', st.ice_restarts],
    ['signalling', st.signalling], ['setup', c.setup_ms ? c.setup_ms.toFixed(0) + ' ms' : '…']] : [];
  $('call-stats').replaceChildren(...rows.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v))));
  drawChart();
}

// Once a second: the active call's statistics, for the chart.
setInterval(async () => {
  const c = app.call;
  if (!c || c.state === 'ended') return;
  try {
    app.call = await api('GET', '/v1/calls/' + encodeURIComponent(c.id));
    const st = app.call.stats;
    if (st) app.samples = [...app.samples, {rtt: st.rtt_ms, loss: st.loss_pct, mos: st.mos, tier: st.tier}].slice(-120);
    if (!$('call').hidden) renderCall();
  } catch {}
}, 1000);

const tiers = {none: 0, cloud: 1, supernode: 2, direct: 3};
function drawChart() {
  const cv = $('chart'), g = cv.getContext('2d'), w = cv.width, h = cv.height, s = app.samples;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#eef0f3';
  for (let y = 0; y <= 4; y++) { g.beginPath(); g.moveTo(0, y * h / 4); g.lineTo(w, y * h / 4); g.stroke(); }
  const line = (color, f, max) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    const span = Math.max(30, s.length) - 1; // seconds across: 30 at first, up to 120
    s.forEach((p, i) => { const x = w - (s.length - 1 - i) * (w / span), y = h - 4 - Math.min(f(p) / max, 1) * (h - 8); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  };
  const rttMax = Math.max(50, ...s.map(p => p.rtt));
  line('#2456a6', p => p.rtt, rttMax);
  line('#b3261e', p => p.loss, 20);
  line('#117a3c', p => p.mos, 5);
  line('#8a5a00', p => tiers[p.tier] || 0, 3);
  g.fillStyle = '#5b636d'; g.font = '12px system-ui';
  g.fillText('last ' + s.length + ' s · top: RTT ' + Math.round(rttMax) + ' ms, loss 20 %, MOS 5, tier direct', 6, 14);
}

// Devices and network.
async function loadDevices() {
  try {
    const ds = await api('GET', '/v1/devices');
    $('device-list').replaceChildren(...ds.map(d => el('li', {},
      el('strong', {}, d.name || 'device'), ' ', d.peer === app.peerID ? el('span', {class: 'pill ok'}, 'this device') : '',
      el('div', {class: 'fp'}, d.peer),
      d.peer === app.peerID ? '' : el('button', {onclick: async () => {
        try { await api('POST', '/v1/devices/unlink', {peer: d.peer}); loadDevices(); } catch (err) { $('devices-error').textContent = err.message; }
      }}, 'Unlink'))));
  } catch (err) { $('devices-error').textContent = err.message; }
}
$('link').addEventListener('click', async () => {
  try { const r = await api('POST', '/v1/link'); $('link-code').textContent = 'on the new device: parley id link ' + r.code; }
  catch (err) { $('devices-error').textContent = err.message; }
});
function kvTable(obj) {
  return el('table', {class: 'kv'}, ...Object.entries(obj).map(([k, v]) => el('tr', {}, el('th', {}, k),
    el('td', {}, Array.isArray(v) ? v.map(x => typeof x === 'object' ? Object.entries(x).map(([a, b]) => a + ' ' + b).join(', ') : x).join(' | ') : String(v)))));
}
async function loadNetwork() {
  try {
    const s = await api('GET', '/v1/status');
    $('status').replaceChildren(...kvTable({handle: s.handle, state: s.state, supernodes: s.supernodes, peers: s.peers,
      'offline reason': s.offline_reason || '—', addresses: s.addrs || []}).children);
  } catch (err) { $('network-error').textContent = err.message; }
}
$('netcheck').addEventListener('click', async () => {
  $('netcheck-report').replaceChildren('checking…');
  try { $('netcheck-report').replaceChildren(kvTable(await api('GET', '/v1/netcheck'))); }
  catch (err) { $('netcheck-report').replaceChildren(); $('network-error').textContent = err.message; }
});

// The WebSocket: events and call legs. It reconnects when the daemon restarts.
function connect() {
  const ws = new WebSocket('ws://' + location.host + '/ws?csrf=' + encodeURIComponent(app.csrf));
  app.ws = ws;
  ws.onopen = () => { $('conn').textContent = 'online'; $('conn').className = 'pill ok'; };
  ws.onclose = () => {
    $('conn').textContent = 'disconnected'; $('conn').className = 'pill bad';
    app.page = ''; app.rtc.closeAll();
    setTimeout(connect, 2000);
  };
  ws.onmessage = e => {
    const m = JSON.parse(e.data);
    if (m.t === 'hello') { app.page = m.id; document.body.dataset.page = m.id; return; }
    if (m.t === 'event') { onEvent(m.event); return; }
    app.rtc.handle(m);
  };
}
function onEvent(e) {
  if (e.type === 'message' && e.message && app.peer && (e.peer === app.peer || e.message.conv === app.peer) && app.msgsPeer === app.peer) addMessage(e.message);
  if (e.type === 'message') app.groups.onMessage(e, location.hash === '#groups');
  if (e.type === 'call' && e.call) callEvent(e.call);
}

async function start() {
  const s = await api('GET', '/session');
  app.csrf = s.csrf; app.me = s.handle; app.peerID = s.peer_id;
  $('me').textContent = s.handle;
  $('me').title = 'fingerprint ' + s.fingerprint;
  app.rtc = new RTC(m => app.ws && app.ws.readyState === 1 && app.ws.send(JSON.stringify(m)));
  connect();
  window.addEventListener('hashchange', show);
  show();
}
start();

// callerLabel names a call's other side: a handle, or a guest (who has
// none) via the server whose page they used.
function callerLabel(c) {
  return c.guest ? 'a guest (no handle) via server …' + c.guest.slice(-8) : c.peer;
}

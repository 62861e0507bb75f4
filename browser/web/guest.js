// A guest's call page: one WebSocket to the server that serves it, which
// rings the handle's devices and drives this page's peer connections
// (rtc.js) with the same messages as the web app's daemon. The server
// tells how the call goes with {"t":"event","event":{"guest","reason"}}.
'use strict';
import {RTC} from './rtc.js';

const handle = decodeURIComponent(location.pathname.split('/')[2] || '');
const $ = id => document.getElementById(id);
let ws = null, rtc = null;

function show(state, text) {
  document.body.dataset.guest = state;
  $('status').textContent = text;
  const live = state === 'calling' || state === 'ringing' || state === 'answered';
  $('call').disabled = live;
  $('hangup').disabled = !live;
  $('mute').disabled = state !== 'answered';
}

function onEvent(e) {
  switch (e.guest) {
    case 'calling': show('calling', 'Calling ' + handle + '…'); break;
    case 'ringing': show('ringing', 'Ringing (' + e.reason + ')…'); break;
    case 'answered': show('answered', 'In a call with ' + handle + '.'); break;
    case 'ended': show('ended', 'Call ended: ' + e.reason + '.'); break;
    case 'notice': $('status').textContent += ' (' + e.reason + ')'; break;
  }
}

function call() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  ws = new WebSocket(scheme + '//' + location.host + '/call/' + encodeURIComponent(handle) + '/ws');
  const sock = ws;
  rtc = new RTC(m => { if (sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify(m)); });
  window.guestRTC = rtc; // for the tests
  show('calling', 'Connecting…');
  sock.onmessage = ev => {
    const m = JSON.parse(ev.data);
    if (m.t === 'event') onEvent(m.event || {});
    else rtc.handle(m);
  };
  let opened = false;
  sock.onopen = () => { opened = true; };
  sock.onclose = ev => {
    rtc.closeAll();
    if (document.body.dataset.guest !== 'ended') {
      // A socket that never opened was refused (the server's reason, a
      // 429's body, is not readable here); one that did was cut off.
      const why = ev.reason ? ev.reason
        : !opened ? 'refused by the server (too many calls from your address?)'
        : ev.code === 1006 ? 'the connection to the server was lost' : '';
      show('ended', 'Call ended' + (why ? ': ' + why : '') + '.');
    }
  };
}

function hangup() {
  if (ws) ws.close(1000, 'hung up');
  if (rtc) rtc.closeAll();
  show('ended', 'Call ended: you hung up.');
}

$('handle').textContent = handle;
document.title = 'Call ' + handle;
$('call').addEventListener('click', call);
$('hangup').addEventListener('click', hangup);
$('mute').addEventListener('click', () => {
  const on = $('mute').getAttribute('aria-pressed') !== 'true';
  $('mute').setAttribute('aria-pressed', String(on));
  $('mute').textContent = on ? 'Unmute' : 'Mute';
  if (rtc) rtc.setMuted(on);
});

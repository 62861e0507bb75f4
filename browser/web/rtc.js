// The browser leg of parley calls: the daemon drives RTCPeerConnections in
// this page over the app's WebSocket (see browser/protocol.go). The
// daemon keeps identity, signalling and ringing; the audio goes from this
// page straight to the other device.
'use strict';

export class RTC {
  constructor(send) {
    this.send = send;          // sends a message to the daemon
    this.pcs = new Map();      // id -> {pc, chain, audio, analyser, timer}
    this.muted = false;
    this.onchange = () => {};  // a peer connection came or went
    this.trace = [];           // what happened, for the console and the tests
  }

  note(id, what) {
    this.trace.push([Math.round(performance.now()), id, what]);
    if (this.trace.length > 500) this.trace.shift();
  }

  // handle applies one message of the daemon; false if it is not ours.
  handle(m) {
    this.note(m.id, m.t + (m.t === 'cand' ? ' ' + (m.cand || '').slice(0, 80) : ''));
    if (m.t === 'pc') { this.create(m); return true; }
    const s = this.pcs.get(m.id);
    if (!['offer', 'answer', 'remote', 'cand', 'ice', 'close'].includes(m.t)) return false;
    if (!s) {
      if (m.req) this.send({t: 'sdp', req: m.req, error: 'no such peer connection'});
      return true;
    }
    // One operation at a time per peer connection, in the daemon's order.
    s.chain = s.chain.then(() => this.op(s, m)).catch(e => {
      if (m.req) this.send({t: 'sdp', req: m.req, error: String(e)});
      else this.send({t: 'error', id: m.id, error: String(e)});
    });
    return true;
  }

  create(m) {
    const conf = {iceServers: (m.ice || []).map(iceServer), bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require'};
    if (m.relay_only) conf.iceTransportPolicy = 'relay';
    const pc = new RTCPeerConnection(conf);
    const s = {id: m.id, pc, chain: Promise.resolve(), remote: null};
    this.pcs.set(m.id, s);
    pc.onicecandidate = e => this.note(m.id, 'local ' + (e.candidate ? e.candidate.candidate.slice(0, 80) : 'end')) || this.send({t: 'cand', id: m.id, cand: e.candidate ? JSON.stringify(e.candidate.toJSON()) : ''});
    pc.oniceconnectionstatechange = () => this.note(m.id, 'ice ' + pc.iceConnectionState);
    pc.onconnectionstatechange = () => {
      this.note(m.id, 'state ' + pc.connectionState);
      this.send({t: 'state', id: m.id, state: pc.connectionState});
      this.onchange();
    };
    pc.ontrack = e => this.play(s, e.streams[0] || new MediaStream([e.track]));
    // The microphone opens while the offer or answer goes out (it takes a
    // second or more): its track joins the audio transceiver when ready,
    // long before anybody answers a ringing call.
    this.microphone()
      .then(stream => {
        this.note(m.id, 'microphone');
        s.track = stream.getAudioTracks()[0];
        this.attach(s);
      })
      .catch(e => this.send({t: 'error', id: m.id, error: 'microphone: ' + e})); // receive only
    s.timer = setInterval(() => this.report(s), 250);
    this.onchange();
  }

  async op(s, m) {
    const pc = s.pc;
    switch (m.t) {
      case 'offer': {
        if (!s.tx) s.tx = pc.addTransceiver('audio', {direction: 'sendrecv'});
        this.attach(s);
        const o = await pc.createOffer({iceRestart: !!m.restart});
        await pc.setLocalDescription(o);
        this.note(m.id, 'offer sent');
        this.send({t: 'sdp', req: m.req, sdp: pc.localDescription.sdp});
        break;
      }
      case 'answer': {
        await pc.setRemoteDescription({type: 'offer', sdp: m.sdp});
        if (!s.tx) {
          s.tx = pc.getTransceivers().find(t => t.receiver.track.kind === 'audio');
          if (s.tx) s.tx.direction = 'sendrecv';
        }
        this.attach(s);
        const a = await pc.createAnswer();
        await pc.setLocalDescription(a);
        this.send({t: 'sdp', req: m.req, sdp: pc.localDescription.sdp});
        break;
      }
      case 'remote':
        await pc.setRemoteDescription({type: 'answer', sdp: m.sdp});
        break;
      case 'cand':
        if (m.cand) await pc.addIceCandidate(JSON.parse(m.cand));
        break;
      case 'ice':
        pc.setConfiguration({...pc.getConfiguration(), iceServers: (m.ice || []).map(iceServer)});
        break;
      case 'close':
        this.close(s, false);
        break;
    }
  }

  // attach puts the microphone's track on the audio transceiver once both exist.
  attach(s) {
    if (s.tx && s.track && s.tx.sender.track !== s.track) {
      s.tx.sender.replaceTrack(s.track).catch(e => this.send({t: 'error', id: s.id, error: 'microphone track: ' + e}));
    }
  }

  // play sends the peer's audio to the speaker and to an analyser the
  // call screen (and the tests) read.
  play(s, stream) {
    s.remote = stream;
    if (!s.audio) {
      s.audio = document.createElement('audio');
      s.audio.autoplay = true;
      s.audio.hidden = true;
      document.body.append(s.audio);
    }
    s.audio.srcObject = stream;
    s.audio.play().catch(() => {});
    try {
      this.ctx = this.ctx || new AudioContext();
      this.ctx.resume().catch(() => {});
      const src = this.ctx.createMediaStreamSource(stream);
      s.analyser = this.ctx.createAnalyser();
      s.analyser.fftSize = 32768;
      s.analyser.smoothingTimeConstant = 0;
      src.connect(s.analyser);
    } catch (e) {
      this.send({t: 'error', id: s.id, error: 'audio analyser: ' + e});
    }
  }

  // dominantHz is the strongest frequency the page hears now (0 when none).
  dominantHz() {
    for (const s of this.pcs.values()) {
      if (!s.analyser) continue;
      const a = s.analyser, bins = new Float32Array(a.frequencyBinCount);
      a.getFloatFrequencyData(bins);
      let best = 1;
      for (let i = 2; i < bins.length - 1; i++) if (bins[i] > bins[best]) best = i;
      if (!isFinite(bins[best]) || bins[best] < -100) return 0;
      // Parabolic interpolation of the peak over its neighbours.
      const l = bins[best - 1], c = bins[best], r = bins[best + 1];
      const d = (l - 2 * c + r) === 0 ? 0 : 0.5 * (l - r) / (l - 2 * c + r);
      return (best + d) * this.ctx.sampleRate / a.fftSize;
    }
    return 0;
  }

  // microphone is the page's one microphone stream, shared by every peer
  // connection (ring-all makes one per callee device): one capture, one
  // mute, released when the last peer connection closes.
  microphone() {
    if (!this.mic) {
      this.mic = navigator.mediaDevices.getUserMedia({audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1}})
        .then(stream => {
          for (const t of stream.getAudioTracks()) t.enabled = !this.muted;
          return stream;
        });
      this.mic.catch(() => { this.mic = null; });
    }
    return this.mic;
  }

  setMuted(on) {
    this.muted = on;
    if (this.mic) this.mic.then(stream => { for (const t of stream.getAudioTracks()) t.enabled = !on; }).catch(() => {});
  }

  close(s, tell) {
    clearInterval(s.timer);
    s.pc.close();
    if (s.audio) { s.audio.srcObject = null; s.audio.remove(); }
    this.pcs.delete(s.id);
    if (this.pcs.size === 0 && this.mic) {
      const mic = this.mic;
      this.mic = null;
      mic.then(stream => { for (const t of stream.getTracks()) t.stop(); }).catch(() => {});
    }
    if (tell) this.send({t: 'closed', id: s.id});
    this.onchange();
  }

  closeAll() { for (const s of [...this.pcs.values()]) this.close(s, true); }

  async report(s) {
    if (s.pc.connectionState === 'new' || s.pc.connectionState === 'closed') return;
    let stats;
    try { stats = await s.pc.getStats(); } catch { return; }
    const out = {packets_in: 0, packets_out: 0, bytes_in: 0, bytes_out: 0, lost: 0, jitter_s: 0, rtt_s: 0,
      concealed_s: 0, received_s: 0, jitter_buffer_s: 0, local_type: '', remote_type: '', local: '', remote: '',
      protocol: '', relay_url: '', relay_protocol: '', level: 0};
    let pairID = '';
    stats.forEach(r => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        out.packets_in = r.packetsReceived || 0;
        out.bytes_in = r.bytesReceived || 0;
        out.lost = Math.max(0, r.packetsLost || 0);
        out.jitter_s = r.jitter || 0;
        // Silence made up while the peer sent none (DTX, before audio) is no loss.
        out.concealed_s = ((r.concealedSamples || 0) - (r.silentConcealedSamples || 0)) / 48000;
        out.received_s = (r.totalSamplesReceived || 0) / 48000;
        if (r.jitterBufferEmittedCount) out.jitter_buffer_s = r.jitterBufferDelay / r.jitterBufferEmittedCount;
        out.level = r.audioLevel || 0;
      } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
        out.packets_out = r.packetsSent || 0;
        out.bytes_out = r.bytesSent || 0;
      } else if (r.type === 'transport' && r.selectedCandidatePairId) {
        pairID = r.selectedCandidatePairId;
      }
    });
    const pair = pairID && stats.get(pairID);
    if (pair) {
      out.rtt_s = pair.currentRoundTripTime || 0;
      const l = stats.get(pair.localCandidateId), r = stats.get(pair.remoteCandidateId);
      if (l) {
        out.local_type = l.candidateType; out.local = hostPort(l.address, l.port); out.protocol = l.protocol || '';
        out.relay_url = l.url || ''; out.relay_protocol = l.relayProtocol || '';
      }
      if (r) { out.remote_type = r.candidateType; out.remote = hostPort(r.address, r.port); }
    }
    s.last = out;
    this.send({t: 'stats', id: s.id, stats: out});
  }
}

function hostPort(a, p) { return a ? (a.includes(':') ? '[' + a + ']:' + p : a + ':' + p) : ''; }

// iceServer turns pion's ICEServer JSON into an RTCIceServer.
function iceServer(s) {
  const o = {urls: s.urls};
  if (s.username) o.username = s.username;
  if (s.credential) o.credential = s.credential;
  return o;
}

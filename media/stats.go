package media

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// Path describes the ICE candidate pair carrying the call. All fields are
// empty before a pair is selected.
type Path struct {
	// LocalType and RemoteType are the candidate types: "host", "srflx",
	// "prflx" or "relay".
	LocalType, RemoteType string
	// Local and Remote are the candidates' transport addresses
	// ("ip:port"). For a relay candidate this is the address allocated on
	// the TURN server.
	Local, Remote string
	// Protocol is the transport between the candidates: "udp" or "tcp".
	Protocol string
	// RelayServer is the URL, as configured in ICEServers, of the TURN
	// server our relay candidate was allocated on, when LocalType is
	// "relay"; "" otherwise or when it cannot be told (see relayServerFor).
	// When only RemoteType is "relay", the peer's TURN server is at Remote.
	RelayServer string
	// RelayProtocol is how we reach that TURN server: "udp", "tcp" or "tls".
	RelayProtocol string
}

// Relayed reports whether either side of the path goes through a TURN relay.
func (p Path) Relayed() bool { return p.LocalType == "relay" || p.RemoteType == "relay" }

// Stats is a snapshot of a call's health.
type Stats struct {
	State State
	Path  Path

	// RTT is the round-trip time: from ICE consent checks on the selected
	// pair, or else from RTCP receiver reports. RTTSource says which
	// ("ice", "rtcp", or "" when none is known yet).
	RTT       time.Duration
	RTTSource string

	// Receive side, measured by us.
	Jitter       time.Duration // RFC 3550 interarrival jitter
	LossPercent  float64       // packets never received, of those expected (RFC 3550 §6.4.1)
	Concealed    time.Duration // audio produced by loss concealment (late or lost packets)
	FECRecovered time.Duration // audio rebuilt from in-band FEC
	// REDRecovered is audio decoded from frames the network lost but a
	// later packet repeated (RED, RFC 2198): heard as sent, not concealed.
	REDRecovered   time.Duration
	Comfort        time.Duration // comfort noise played during the peer's DTX pauses
	JitterBuffer   time.Duration // current target delay of the jitter buffer
	LatePackets    int64         // arrived after their playout time and were dropped
	Discarded      int64         // frames dropped to bring the delay down
	Malformed      int64         // RTP or Opus packets that did not parse, or would not decode
	ReceiveBitrate float64       // Opus payload bit/s over the last full second
	SendBitrate    float64       // Opus payload bit/s sent, over the second before the last Stats call
	// Missing is the audio that has not come since the last packet, once
	// that is longer than a DTX pause (also counted in Concealed): a path
	// that died shows here at once.
	Missing time.Duration

	PacketsSent, BytesSent uint64 // Opus payload bytes, excluding RTP/SRTP headers and RED's copies
	// REDFramesSent counts the earlier frames repeated in our RED packets.
	REDFramesSent                  uint64
	PacketsReceived, BytesReceived uint64
	// FramesSkipped and PlayoutSkipped count frames of sending and of
	// playout skipped because the process fell more than 200 ms behind
	// real time (an overloaded machine); normally both are 0.
	FramesSkipped, PlayoutSkipped uint64

	// How the peer hears us, from its RTCP receiver reports.
	RemoteLossPercent float64
	RemoteJitter      time.Duration

	// R and MOS are the E-model estimates (ITU-T G.107, see EModelR) for
	// what we hear: one-way delay RTT/2 + jitter buffer + codec delay, and
	// loss = the share of played audio that had to be concealed.
	R, MOS float64
}

// Stats returns a snapshot of the call's statistics. It queries the ICE
// agent, so it is meant for periodic polling (once a second), not per frame.
func (s *Session) Stats() Stats {
	st := Stats{
		State:          s.State(),
		PacketsSent:    s.sent.packets.Load(),
		BytesSent:      s.sent.bytes.Load(),
		FramesSkipped:  s.sent.skipped.Load(),
		PlayoutSkipped: s.rx.playoutSkipped.Load(),
		REDFramesSent:  s.sent.redundant.Load(),
	}

	s.rx.mu.Lock()
	js := s.rx.jb.stats()
	st.PacketsReceived = s.rx.packets
	st.BytesReceived = s.rx.bytes
	st.ReceiveBitrate = s.rx.bitrate
	decodeErrs := s.rx.decodeErrors
	st.Malformed = int64(s.rx.malformed+decodeErrs) + js.Malformed
	s.rx.mu.Unlock()

	st.Jitter = samplesDuration(js.JitterSamples)
	if js.Expected > 0 {
		lost := max(js.Expected-js.Received, 0)
		st.LossPercent = 100 * float64(lost) / float64(js.Expected)
	}
	concealed := js.ConcealedSamples + int64(decodeErrs)*FrameSamples
	st.Concealed = samplesDuration(concealed)
	st.Missing = samplesDuration(js.MissingSamples)
	st.SendBitrate = s.sendRate.update(s.cfg.Now(), st.BytesSent)
	st.FECRecovered = samplesDuration(js.FECSamples)
	st.REDRecovered = samplesDuration(js.REDSamples)
	st.Comfort = samplesDuration(js.ComfortSamples)
	st.JitterBuffer = samplesDuration(js.TargetSamples)
	st.LatePackets = js.Late
	st.Discarded = js.Discarded

	rtcpRTT, rtcpOK, remoteLoss, remoteJitter := s.rtt.get()
	st.RemoteLossPercent, st.RemoteJitter = remoteLoss, remoteJitter
	var iceRTT time.Duration
	st.Path, iceRTT = s.path()
	switch {
	case iceRTT > 0:
		st.RTT, st.RTTSource = iceRTT, "ice"
	case rtcpOK:
		st.RTT, st.RTTSource = rtcpRTT, "rtcp"
	}

	played := js.Played*FrameSamples + concealed + js.FECSamples
	var effLoss float64
	if played > 0 {
		effLoss = 100 * float64(concealed) / float64(played)
	}
	st.R = EModelR(st.RTT/2+st.JitterBuffer+codecDelay, effLoss)
	st.MOS = MOSFromR(st.R)
	return st
}

// path returns the selected candidate pair and its ICE round-trip time.
func (s *Session) path() (Path, time.Duration) {
	var p Path
	// pion's ICE transport sets itself up, unlocked, when the remote
	// description starts it; asking it for its pair before the first
	// connection races with that (go test -race). Until then there is no
	// pair to report anyway.
	s.mu.Lock()
	started := s.sendStarted
	s.mu.Unlock()
	if !started {
		return p, 0
	}
	dtls := s.rtps.Transport()
	if dtls == nil {
		return p, 0
	}
	iceT := dtls.ICETransport()
	if iceT == nil {
		return p, 0
	}
	pair, err := iceT.GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local == nil || pair.Remote == nil {
		return p, 0
	}
	p.LocalType = pair.Local.Typ.String()
	p.RemoteType = pair.Remote.Typ.String()
	p.Local = net.JoinHostPort(pair.Local.Address, strconv.Itoa(int(pair.Local.Port)))
	p.Remote = net.JoinHostPort(pair.Remote.Address, strconv.Itoa(int(pair.Remote.Port)))
	p.Protocol = pair.Local.Protocol.String()

	var rtt time.Duration
	pairStats, ok := iceT.GetSelectedCandidatePairStats()
	if ok {
		rtt = time.Duration(pairStats.CurrentRoundTripTime * float64(time.Second))
	}
	if pair.Local.Typ == webrtc.ICECandidateTypeRelay && ok {
		for _, v := range s.pc.GetStats() {
			if c, isCand := v.(webrtc.ICECandidateStats); isCand && c.ID == pairStats.LocalCandidateID {
				p.RelayProtocol = c.RelayProtocol
				p.RelayServer = c.URL
			}
		}
		if p.RelayServer == "" {
			s.mu.Lock()
			servers := s.cfg.ICEServers
			s.mu.Unlock()
			p.RelayServer = relayServerFor(pair.Local.Address, p.RelayProtocol, servers)
		}
	}
	return p, rtt
}

// relayServerFor names the configured TURN server a relay candidate came
// from, since pion does not report it: the only TURN URL reached over
// relayProto, or else the one whose host is the relayed address's IP (a
// TURN server usually relays from its own address). It returns "" when it
// cannot tell.
func relayServerFor(relayedIP, relayProto string, servers []webrtc.ICEServer) string {
	var matches, sameHost []string
	for _, srv := range servers {
		for _, u := range srv.URLs {
			host, proto, ok := parseTURNURL(u)
			if !ok || (relayProto != "" && proto != relayProto) {
				continue
			}
			matches = append(matches, u)
			if host == relayedIP {
				sameHost = append(sameHost, u)
			}
		}
	}
	switch {
	case len(matches) == 1:
		return matches[0]
	case len(sameHost) == 1:
		return sameHost[0]
	}
	return ""
}

// parseTURNURL returns the host of a turn: or turns: URL (RFC 7065) and the
// protocol used to reach it, as pion names it: "udp", "tcp", "tls" or
// "dtls".
func parseTURNURL(raw string) (host, proto string, ok bool) {
	scheme, rest, found := strings.Cut(raw, ":")
	if !found || (scheme != "turn" && scheme != "turns") {
		return "", "", false
	}
	hostport, query, _ := strings.Cut(rest, "?")
	transport := "udp"
	if scheme == "turns" {
		transport = "tcp"
	}
	if v, found := strings.CutPrefix(query, "transport="); found {
		transport = strings.ToLower(v)
	}
	host = hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	switch {
	case scheme == "turn":
		return host, transport, true
	case transport == "tcp":
		return host, "tls", true
	default:
		return host, "dtls", true
	}
}

// sendRate turns the sent-bytes counter into a bitrate: each Stats call at
// least a second after the window began closes the window.
type sendRate struct {
	mu    sync.Mutex
	start time.Time
	bytes uint64
	rate  float64
}

func (r *sendRate) update(now time.Time, total uint64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch el := now.Sub(r.start); {
	case r.start.IsZero():
		r.start, r.bytes = now, total
	case el >= time.Second:
		r.rate = float64(total-r.bytes) * 8 / el.Seconds()
		r.start, r.bytes = now, total
	}
	return r.rate
}

package media

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/webrtc/v4"
)

// Config configures a Session. The zero value is a usable desktop profile:
// host candidates only, silence out, audio discarded, 32 kbit/s Opus.
type Config struct {
	// ICEServers are the STUN and TURN servers ICE gathers server-reflexive
	// and relay candidates from. nil means host candidates only.
	ICEServers []webrtc.ICEServer
	// RelayOnly restricts ICE to relay candidates
	// (ICETransportPolicyRelay), for the mobile profile and for
	// "--path cloud|supernode" experiments. It needs a TURN server in
	// ICEServers. false means every candidate type is used.
	RelayOnly bool

	// Source is the audio to send. nil means silence.
	Source Source
	// Sink receives decoded audio. nil means it is discarded (it is still
	// decoded, for statistics and FirstAudio).
	Sink Sink
	// Recorder, if non-nil, receives the received Opus stream as Ogg Opus
	// (RFC 7845), in playout order, with lost or concealed frames written as
	// zero-length Opus frames so the timeline matches what was played. The
	// session writes the end-of-stream page when it closes but never closes
	// Recorder. nil means no recording.
	Recorder io.Writer

	// Bitrate is the Opus target bitrate in bit/s, 6000 to 510000.
	// 0 means 32000.
	Bitrate int
	// FEC makes the encoder add in-band forward error correction (Opus
	// LBRR, RFC 6716 §2.1.7) to what we send. Received FEC is always used.
	// false means none is sent.
	FEC bool
	// ExpectedLoss is the least packet loss, in percent (1 to 100), the
	// encoder provisions FEC for; Opus only spends bits on FEC when it
	// expects loss. When the peer's RTCP receiver reports show more loss,
	// the encoder provisions for that instead. 0 means 10 when FEC is on.
	// It must be 0 when FEC is off.
	ExpectedLoss int
	// NoRED leaves audio redundancy (RED, RFC 2198) out of the session
	// description: we then neither send nor accept it. false means RED for
	// Opus is offered after Opus, as browsers do, and when the peer takes
	// it every packet repeats the one or two frames before it (two until
	// the peer's receiver reports show less than 0.5 % loss for 5 s, and
	// again as soon as one shows 3 % or more), so a lost packet is rebuilt
	// from the next one instead of concealed.
	NoRED bool
	// DTX enables discontinuous transmission: during silence the encoder
	// sends a packet only every 400 ms (RFC 7587 §3.1.3). false means a
	// packet every 20 ms.
	DTX bool

	// JitterMin and JitterMax bound the adaptive jitter buffer's target
	// delay; they are rounded up to whole 20 ms frames. 0 means 20 ms and
	// 200 ms respectively. JitterMax may be at most 1 s.
	JitterMin, JitterMax time.Duration
	// JitterStart is the target delay before any jitter has been measured.
	// 0 means 40 ms (clamped into [JitterMin, JitterMax]).
	JitterStart time.Duration

	// IncludeLoopback gathers host candidates on loopback interfaces, for
	// calls between processes on one machine and for tests. false means
	// loopback addresses are skipped.
	IncludeLoopback bool
	// IPFilter, if non-nil, keeps only the local addresses for which it
	// returns true. nil means every address is used.
	IPFilter func(net.IP) bool
	// NetworkTypes lists the transports ICE may use. nil means UDP over
	// IPv4 and IPv6.
	NetworkTypes []webrtc.NetworkType
	// ResolveMDNS lets ICE resolve a peer's ".local" mDNS host candidates
	// (browsers hide their addresses this way). false means mDNS is off
	// entirely: no multicast socket is opened and such candidates are
	// ignored.
	ResolveMDNS bool
	// PortMin and PortMax limit local UDP ports to [PortMin, PortMax], for
	// firewalls. 0 and 0 mean ports the OS picks; setting only one is an
	// error.
	PortMin, PortMax uint16

	// DisconnectedTimeout is how long without traffic before ICE reports
	// Disconnected. 0 means 5 s.
	DisconnectedTimeout time.Duration
	// FailedTimeout is how long after Disconnected ICE reports Failed.
	// 0 means 25 s.
	FailedTimeout time.Duration
	// KeepaliveInterval is how often ICE sends consent checks when idle; the
	// mobile profile uses a longer one. 0 means 2 s.
	KeepaliveInterval time.Duration

	// Net is the network stack ICE uses (pion's transport.Net, e.g. vnet in
	// simulations). nil means the host's.
	Net transport.Net
	// Now is the clock used for pacing, playout, jitter and statistics. nil
	// means time.Now. RTT from RTCP compares it with the NTP times in
	// pion's sender reports, so it must keep wall-clock time for that.
	Now func() time.Time
	// Logger receives the session's logs, and pion's through an adapter.
	// nil means slog.Default().
	Logger *slog.Logger
}

// ErrInvalidConfig is returned by NewSession for a Config with an
// out-of-range or contradictory field.
var ErrInvalidConfig = errors.New("media: invalid config")

const (
	defaultBitrate      = 32000
	defaultExpectedLoss = 10
	defaultJitterMin    = 20 * time.Millisecond
	defaultJitterMax    = 200 * time.Millisecond
	defaultJitterStart  = 40 * time.Millisecond
	maxJitterMax        = time.Second
	defaultDisconnected = 5 * time.Second
	defaultFailed       = 25 * time.Second
	defaultKeepalive    = 2 * time.Second
	minBitrate          = 6000
	maxBitrate          = 510000
	maxICEServers       = 16
)

// normalized returns a copy of c with defaults filled in, or an error
// wrapping ErrInvalidConfig.
func (c Config) normalized() (Config, error) {
	for _, step := range []func(*Config) error{(*Config).normalizeCodec, (*Config).normalizeJitter, (*Config).normalizeICE} {
		if err := step(&c); err != nil {
			return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	if c.Source == nil {
		c.Source = SilenceSource()
	}
	if c.Sink == nil {
		c.Sink = DiscardSink()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if _, ok := c.Recorder.(*oggPager); c.Recorder != nil && !ok {
		c.Recorder = newOggPager(c.Recorder)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// normalizeCodec checks and fills in the Opus settings: bitrate and FEC.
func (c *Config) normalizeCodec() error {
	if c.Bitrate == 0 {
		c.Bitrate = defaultBitrate
	}
	if c.Bitrate < minBitrate || c.Bitrate > maxBitrate {
		return fmt.Errorf("bitrate %d bit/s outside [%d, %d]", c.Bitrate, minBitrate, maxBitrate)
	}
	switch {
	case !c.FEC && c.ExpectedLoss != 0:
		return fmt.Errorf("ExpectedLoss %d%% without FEC", c.ExpectedLoss)
	case c.ExpectedLoss < 0 || c.ExpectedLoss > 100:
		return fmt.Errorf("ExpectedLoss %d%% outside [0, 100]", c.ExpectedLoss)
	case c.FEC && c.ExpectedLoss == 0:
		c.ExpectedLoss = defaultExpectedLoss
	}
	return nil
}

// normalizeJitter checks and fills in the jitter buffer's delays, rounded
// up to whole frames.
func (c *Config) normalizeJitter() error {
	if c.JitterMin < 0 || c.JitterMax < 0 || c.JitterStart < 0 {
		return errors.New("negative jitter buffer delay")
	}
	if c.JitterMin == 0 {
		c.JitterMin = defaultJitterMin
	}
	if c.JitterMax == 0 {
		c.JitterMax = max(defaultJitterMax, c.JitterMin)
	}
	c.JitterMin = roundUpFrame(c.JitterMin)
	c.JitterMax = roundUpFrame(c.JitterMax)
	if c.JitterMax > maxJitterMax {
		return fmt.Errorf("JitterMax %v above %v", c.JitterMax, maxJitterMax)
	}
	if c.JitterMin > c.JitterMax {
		return fmt.Errorf("JitterMin %v above JitterMax %v", c.JitterMin, c.JitterMax)
	}
	if c.JitterStart == 0 {
		c.JitterStart = defaultJitterStart
	}
	c.JitterStart = min(max(roundUpFrame(c.JitterStart), c.JitterMin), c.JitterMax)
	return nil
}

// normalizeICE checks and fills in the ports, ICE timers, servers and
// network types.
func (c *Config) normalizeICE() error {
	if (c.PortMin == 0) != (c.PortMax == 0) || c.PortMin > c.PortMax {
		return fmt.Errorf("port range [%d, %d]", c.PortMin, c.PortMax)
	}
	for _, d := range []time.Duration{c.DisconnectedTimeout, c.FailedTimeout, c.KeepaliveInterval} {
		if d < 0 {
			return fmt.Errorf("negative ICE timeout %v", d)
		}
	}
	if c.DisconnectedTimeout == 0 {
		c.DisconnectedTimeout = defaultDisconnected
	}
	if c.FailedTimeout == 0 {
		c.FailedTimeout = defaultFailed
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = defaultKeepalive
	}
	if len(c.ICEServers) > maxICEServers {
		return fmt.Errorf("%d ICE servers (at most %d)", len(c.ICEServers), maxICEServers)
	}
	if c.RelayOnly && !hasTURN(c.ICEServers) {
		return errors.New("RelayOnly without a TURN server in ICEServers")
	}
	if len(c.NetworkTypes) == 0 {
		c.NetworkTypes = []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	}
	return nil
}

func hasTURN(servers []webrtc.ICEServer) bool {
	for _, s := range servers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
				return true
			}
		}
	}
	return false
}

func roundUpFrame(d time.Duration) time.Duration {
	return (d + FrameDuration - 1) / FrameDuration * FrameDuration
}

// durationSamples converts d to 48 kHz samples.
func durationSamples(d time.Duration) int {
	return int(d * SampleRate / time.Second)
}

// samplesDuration converts 48 kHz samples to a duration.
func samplesDuration[T int | int64 | float64](n T) time.Duration {
	return time.Duration(float64(n) * float64(time.Second) / SampleRate)
}

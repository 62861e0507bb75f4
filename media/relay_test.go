package media

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/pion/webrtc/v4"

	"github.com/parley-net/parley/internal/nodetest"
)

// startTURN runs a pion TURN server on 127.0.0.1 with one user and returns
// its ICE server entry and a function that stops it.
func startTURN(t *testing.T) (webrtc.ICEServer, func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const realm, user, pass = "parley.test", "alice", "secret"
	key := turn.GenerateAuthKey(user, realm, pass)
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			return ra.Username, key, ra.Username == user
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: net.IPv4(127, 0, 0, 1),
				Address:      "127.0.0.1",
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := func() {
		if err := srv.Close(); err != nil {
			t.Errorf("TURN server close: %v", err)
		}
	}
	return webrtc.ICEServer{
		URLs:       []string{"turn:" + pc.LocalAddr().String() + "?transport=udp"},
		Username:   user,
		Credential: pass,
	}, stop
}

// TestCallRelayOnly forces both sides through a TURN relay (the mobile
// profile, or --path cloud) and checks the path statistics say so.
func TestCallRelayOnly(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()
	server, stop := startTURN(t)
	defer stop()
	ice := []webrtc.ICEServer{server}
	capB := NewCaptureSink(0)
	c := newCall(t,
		Config{ICEServers: ice, RelayOnly: true, Source: SpeechLikeSource(13), Bitrate: 16000, FEC: true, DTX: true},
		Config{ICEServers: ice, RelayOnly: true, Sink: capB},
	)
	c.connect(t)
	waitClosed(t, c.b.FirstAudio(), 10*time.Second, "first audio at b over the relay")

	st := c.a.Stats()
	t.Logf("path %+v rtt %v (%s)", st.Path, st.RTT, st.RTTSource)
	if st.Path.LocalType != "relay" || st.Path.RemoteType != "relay" || !st.Path.Relayed() {
		t.Errorf("path %+v, want relay on both sides", st.Path)
	}
	if !strings.HasPrefix(st.Path.RelayServer, "turn:127.0.0.1:") || st.Path.RelayProtocol != "udp" {
		t.Errorf("relay server %q over %q, want the local TURN server over udp", st.Path.RelayServer, st.Path.RelayProtocol)
	}
	c.close(t, c.a)
}

func TestRelayServerFor(t *testing.T) {
	servers := []webrtc.ICEServer{
		{URLs: []string{"stun:192.0.2.1:3478"}},
		{URLs: []string{"turn:192.0.2.1:3478?transport=udp", "turn:192.0.2.1:3478?transport=tcp"}},
		{URLs: []string{"turns:relay.example.net:5349", "turn:[2001:db8::1]:3478"}},
	}
	tests := []struct {
		ip, proto, want string
	}{
		{"192.0.2.1", "tcp", "turn:192.0.2.1:3478?transport=tcp"},
		{"198.51.100.7", "tls", "turns:relay.example.net:5349"},
		{"192.0.2.1", "udp", "turn:192.0.2.1:3478?transport=udp"}, // same host
		{"2001:db8::1", "udp", "turn:[2001:db8::1]:3478"},
		{"198.51.100.7", "udp", ""}, // two UDP servers, neither at that address
		{"192.0.2.1", "dtls", ""},
	}
	for _, tc := range tests {
		if got := relayServerFor(tc.ip, tc.proto, servers); got != tc.want {
			t.Errorf("relayServerFor(%s, %s) = %q, want %q", tc.ip, tc.proto, got, tc.want)
		}
	}
}

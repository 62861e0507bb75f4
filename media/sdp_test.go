package media

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/parley-net/parley/internal/nodetest"
)

// offerSDP returns a real offer from a loopback session.
func offerSDP(t testing.TB) string {
	t.Helper()
	s, err := NewSession(loopback(t, Config{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	offer, err := s.CreateOffer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return offer
}

const fp = "sha-256 9A:6B:11:0F:3C:7E:85:21:D4:5A:00:FF:13:88:71:BC:2E:AD:6C:91:0B:47:3A:D2:55:C9:81:3E:F0:06:17:4D"

func sdpWith(sessionAttrs, mediaAttrs string) string {
	return "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + sessionAttrs +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n" + mediaAttrs
}

func TestFingerprintFromSDP(t *testing.T) {
	offer := offerSDP(t)
	got, err := FingerprintFromSDP(offer)
	if err != nil {
		t.Fatalf("real offer: %v", err)
	}
	if !strings.HasPrefix(got, "sha-256 ") || len(got) != len("sha-256 ")+32*3-1 {
		t.Errorf("real offer fingerprint %q", got)
	}

	tests := []struct {
		name    string
		sdp     string
		want    string
		wantErr bool
	}{
		{"session level", sdpWith("a=fingerprint:"+fp+"\r\n", ""), fp, false},
		{"media level", sdpWith("", "a=fingerprint:"+fp+"\r\n"), fp, false},
		{"both agree", sdpWith("a=fingerprint:"+fp+"\r\n", "a=fingerprint:"+fp+"\r\n"), fp, false},
		{"normalised case", sdpWith("a=fingerprint:SHA-256 "+strings.ToLower(fp[8:])+"\r\n", ""), fp, false},
		{"none", sdpWith("", ""), "", true},
		{"disagree", sdpWith("a=fingerprint:"+fp+"\r\n", "a=fingerprint:"+fp[:len(fp)-2]+"4E\r\n"), "", true},
		{"unknown hash", sdpWith("a=fingerprint:md5 "+fp[8:]+"\r\n", ""), "", true},
		{"short", sdpWith("a=fingerprint:sha-256 AB:CD\r\n", ""), "", true},
		{"not hex", sdpWith("a=fingerprint:sha-256 "+strings.ReplaceAll(fp[8:], "9A", "ZZ")+"\r\n", ""), "", true},
		{"no hash", sdpWith("a=fingerprint:"+fp[8:]+"\r\n", ""), "", true},
		{"garbage", "hello", "", true},
		{"empty", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FingerprintFromSDP(tc.sdp)
			if tc.wantErr {
				if !errors.Is(err, ErrBadSDP) {
					t.Errorf("got %q, %v; want ErrBadSDP", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestMalformedSignalling feeds bad descriptions and candidates to a live
// session: each must be an error, and the session must still work.
func TestMalformedSignalling(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()
	offer := offerSDP(t)
	ctx := context.Background()

	badSDP := []struct {
		name string
		sdp  string
	}{
		{"empty", ""},
		{"garbage", "this is not SDP"},
		{"binary", "\x00\x01\x02\xff\xfe"},
		{"too large", offer + strings.Repeat("a=x-pad:0123456789\r\n", 4000)},
		{"truncated", offer[:len(offer)/2]},
		{"no audio", strings.Replace(offer, "m=audio", "m=video", 1)},
		{"no opus", strings.ReplaceAll(offer, "opus/48000", "PCMA/8000")},
		{"payload type without rtpmap", removeLines(offer, "a=rtpmap:")},
		{"no mid", removeLines(offer, "a=mid:")},
		{"no ICE password", removeLines(offer, "a=ice-pwd:")},
		{"no fingerprint", removeLines(offer, "a=fingerprint:")},
		{"bad version", strings.Replace(offer, "v=0", "v=9", 1)},
		{"many media", sdpWith("a=fingerprint:"+fp+"\r\n", strings.Repeat("m=audio 9 RTP/AVP 0\r\n", 20))},
	}
	for _, tc := range badSDP {
		t.Run("answer/"+tc.name, func(t *testing.T) {
			s, err := NewSession(loopback(t, Config{}))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Answer(ctx, tc.sdp); err == nil {
				t.Errorf("Answer accepted a bad offer")
			} else if !errors.Is(err, ErrBadSDP) {
				t.Logf("Answer: %v (not ErrBadSDP, but an error)", err)
			}
			if err := s.SetAnswer(tc.sdp); err == nil {
				t.Errorf("SetAnswer accepted a bad answer")
			}
			// The session still answers a good offer.
			if _, err := s.Answer(ctx, offer); err != nil {
				t.Errorf("good offer after bad one: %v", err)
			}
		})
	}

	t.Run("answer without offer", func(t *testing.T) {
		s, err := NewSession(loopback(t, Config{}))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// A valid description of the wrong type for the signalling state.
		if err := s.SetAnswer(offer); err == nil {
			t.Errorf("SetAnswer before CreateOffer succeeded")
		}
	})

	badCandidates := []string{
		"{",
		"null x",
		`{"candidate": 5}`,
		`{"candidate": "candidate:garbage"}`,
		`{"candidate": "candidate:1 1 udp 2130706431 not-an-ip 5000 typ host"}`,
		`{"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 99999 typ host"}`,
		`{"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ bogus"}`,
		`{"candidate": "` + strings.Repeat("x", 2000) + `"}`,
		strings.Repeat(" ", maxCandidateJSON+1),
		"[1,2,3]",
	}
	s, err := NewSession(loopback(t, Config{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range badCandidates {
		if err := s.AddRemoteCandidate(c); !errors.Is(err, ErrBadCandidate) {
			t.Errorf("AddRemoteCandidate(%.40q): %v, want ErrBadCandidate", c, err)
		}
	}
	for _, c := range []string{"", `{"candidate": ""}`, `{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}`} {
		if err := s.AddRemoteCandidate(c); err != nil {
			t.Errorf("AddRemoteCandidate(%q): %v", c, err)
		}
	}
	// Candidates before the remote description are queued, but boundedly.
	var err2 error
	for range maxPendingRemote + 1 {
		err2 = s.AddRemoteCandidate(`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"}`)
	}
	if !errors.Is(err2, ErrBadCandidate) {
		t.Errorf("queueing %d candidates: %v, want ErrBadCandidate", maxPendingRemote+1, err2)
	}
}

func removeLines(sdp, prefix string) string {
	var keep []string
	for _, l := range strings.Split(sdp, "\r\n") {
		if !strings.HasPrefix(l, prefix) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\r\n")
}

// FuzzFingerprintFromSDP checks the SDP pre-parser and fingerprint
// extraction never panic, and that what they accept is normalised.
func FuzzFingerprintFromSDP(f *testing.F) {
	f.Add(offerSDP(f))
	f.Add(sdpWith("a=fingerprint:"+fp+"\r\n", ""))
	f.Add(sdpWith("", "a=fingerprint:sha-1 "+fp[8:8+20*3-1]+"\r\n"))
	f.Add("v=0\r\n")
	f.Fuzz(func(t *testing.T, sdp string) {
		got, err := FingerprintFromSDP(sdp)
		if err != nil {
			if !errors.Is(err, ErrBadSDP) {
				t.Fatalf("error %v does not wrap ErrBadSDP", err)
			}
			return
		}
		again, err := normalizeFingerprint(got)
		if err != nil || again != got {
			t.Fatalf("result %q not normalised (%q, %v)", got, again, err)
		}
		_ = validateRemoteSDP(sdp)
	})
}

// FuzzAnswer feeds arbitrary offers to a live session's Answer. The session
// only has loopback candidates, so nothing leaves the machine whatever
// addresses the offer names.
func FuzzAnswer(f *testing.F) {
	offer := offerSDP(f)
	f.Add(offer)
	f.Add(strings.Replace(offer, "UDP/TLS/RTP/SAVPF", "RTP/AVP", 1))
	f.Add(strings.Replace(offer, "a=setup:actpass", "a=setup:bogus", 1))
	f.Add(strings.Replace(offer, "a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus/0/0", 1))
	f.Add(strings.Replace(offer, "a=ice-ufrag:", "a=ice-ufrag:\x00", 1))
	f.Fuzz(func(t *testing.T, sdp string) {
		s, err := NewSession(loopback(t, Config{}))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, _ = s.Answer(ctx, sdp)
	})
}

// FuzzAddRemoteCandidate checks the candidate parser never panics. Parsed
// candidates go to a session without a remote description, where they are
// only queued: a fuzzer must not make ICE probe arbitrary addresses.
func FuzzAddRemoteCandidate(f *testing.F) {
	f.Add(`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}`)
	f.Add(`{"candidate":"candidate:2 1 udp 1694498815 192.0.2.7 6000 typ srflx raddr 10.0.0.2 rport 5000"}`)
	f.Add(`{"candidate":"candidate:3 1 udp 16777215 198.51.100.9 7000 typ relay raddr 192.0.2.7 rport 6000"}`)
	f.Add(`{"candidate":"candidate:4 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active"}`)
	f.Add(`{"candidate":"candidate:5 1 udp 2130706431 a1b2.local 5000 typ host generation 0 ufrag x"}`)
	f.Add(`{"candidate":""}`)
	f.Fuzz(func(t *testing.T, c string) {
		init, ok, err := parseCandidate(c)
		if err != nil {
			if !errors.Is(err, ErrBadCandidate) {
				t.Fatalf("error %v does not wrap ErrBadCandidate", err)
			}
			return
		}
		if ok && init.Candidate == "" {
			t.Fatalf("ok with an empty candidate")
		}
	})
}

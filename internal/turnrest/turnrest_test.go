package turnrest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

const testSecret = "parley-test-secret-0123456789"

// Expected values computed outside Go:
//
//	echo -n "1700000000:alice" | openssl dgst -sha1 -hmac "parley-test-secret-0123456789" -binary | base64
//	python3 -c 'import hashlib; print(hashlib.md5(b"1700000000:alice:parley:tB4RxQmOW/JrWMYl1cDv0ICYtdw=").hexdigest())'
const (
	alicePassword  = "tB4RxQmOW/JrWMYl1cDv0ICYtdw="
	aliceKeyHex    = "755f9b837a9a945444e3cfbbe20187dc"
	peerPassword   = "zsthpqLOWMTzyDoImrQ/zSE3YFE=" // for "1700003600:12D3KooWRelayTestPeer"
	aliceNowUnix   = 1699996400                     // one hour before alice's expiry
	aliceUsername  = "1700000000:alice"
	peerUsername   = "1700003600:12D3KooWRelayTestPeer"
	defaultMaxTTL  = 24 * time.Hour
	issueNowSecond = 1700000000
)

func TestIssueExact(t *testing.T) {
	now := time.Unix(issueNowSecond, 400e6) // sub-second part is dropped
	tests := []struct {
		name     string
		id       string
		ttl      time.Duration
		wantUser string
		wantPass string
	}{
		{"peer ID, one hour", "12D3KooWRelayTestPeer", time.Hour, peerUsername, peerPassword},
		{"ttl under a second", "alice", 999 * time.Millisecond, "", ""},
		{"short id, zero ttl", "alice", 0, "", ""},
		{"one second", "alice", time.Second, "1700000001:alice", Password(testSecret, "1700000001:alice")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Issue(testSecret, tc.id, tc.ttl, now)
			if tc.wantUser == "" {
				if err == nil {
					t.Fatalf("Issue(ttl=%v) = %+v, want error", tc.ttl, c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Username != tc.wantUser || c.Password != tc.wantPass {
				t.Fatalf("Issue = %q/%q, want %q/%q", c.Username, c.Password, tc.wantUser, tc.wantPass)
			}
			if got, _, _ := ParseUsername(c.Username); !got.Equal(c.Expires) {
				t.Fatalf("Expires %v, username says %v", c.Expires, got)
			}
		})
	}
}

func TestPasswordAndKeyExact(t *testing.T) {
	if got := Password(testSecret, aliceUsername); got != alicePassword {
		t.Fatalf("Password = %q, want %q (openssl)", got, alicePassword)
	}
	key := LongTermKey(aliceUsername, "parley", alicePassword)
	if hex.EncodeToString(key) != aliceKeyHex {
		t.Fatalf("LongTermKey = %x, want %s (python)", key, aliceKeyHex)
	}
	if pion := turn.GenerateAuthKey(aliceUsername, "parley", alicePassword); !bytes.Equal(pion, key) {
		t.Fatalf("pion GenerateAuthKey = %x, ours %x", pion, key)
	}
}

func TestIssueRefuses(t *testing.T) {
	now := time.Unix(issueNowSecond, 0)
	tests := []struct {
		name   string
		secret string
		id     string
		want   error
	}{
		{"empty secret", "", "alice", ErrNoSecret},
		{"empty id", testSecret, "", ErrMalformed},
		{"colon in id", testSecret, "a:b", ErrMalformed},
		{"space in id", testSecret, "a b", ErrMalformed},
		{"control byte", testSecret, "a\x00", ErrMalformed},
		{"non-ASCII", testSecret, "é", ErrMalformed},
		{"id too long", testSecret, strings.Repeat("x", MaxIDLen+1), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Issue(tc.secret, tc.id, time.Hour, now); !errors.Is(err, tc.want) {
				t.Fatalf("Issue err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Issue(testSecret, strings.Repeat("x", MaxIDLen), time.Hour, now); err != nil {
		t.Fatalf("id of MaxIDLen refused: %v", err)
	}
}

func TestCheck(t *testing.T) {
	now := time.Unix(aliceNowUnix, 0)
	tests := []struct {
		name     string
		username string
		now      time.Time
		maxTTL   time.Duration
		wantID   string
		want     error
	}{
		{"valid", aliceUsername, now, defaultMaxTTL, "alice", nil},
		{"valid at the expiry second", aliceUsername, time.Unix(1700000000, 999e6), defaultMaxTTL, "alice", nil},
		{"expired one second ago", aliceUsername, time.Unix(1700000001, 0), defaultMaxTTL, "", ErrExpired},
		{"expired long ago", aliceUsername, time.Unix(1800000000, 0), defaultMaxTTL, "", ErrExpired},
		{"exactly max TTL ahead", aliceUsername, now, time.Hour, "alice", nil},
		{"one second beyond max TTL", aliceUsername, now, time.Hour - time.Second, "", ErrTooFarAhead},
		{"far future", "99999999999:alice", now, defaultMaxTTL, "", ErrTooFarAhead},
		{"no colon", "1700000000", now, defaultMaxTTL, "", ErrMalformed},
		{"empty", "", now, defaultMaxTTL, "", ErrMalformed},
		{"empty expiry", ":alice", now, defaultMaxTTL, "", ErrMalformed},
		{"empty id", "1700000000:", now, defaultMaxTTL, "", ErrMalformed},
		{"id first (coturn accepts, we do not)", "alice:1700000000", now, defaultMaxTTL, "", ErrMalformed},
		{"signed expiry", "+1700000000:alice", now, defaultMaxTTL, "", ErrMalformed},
		{"negative expiry", "-1:alice", now, defaultMaxTTL, "", ErrMalformed},
		{"hex expiry", "0x65:alice", now, defaultMaxTTL, "", ErrMalformed},
		{"13 digits", "1700000000000:alice", now, defaultMaxTTL, "", ErrMalformed},
		{"second colon", "1700000000:al:ice", now, defaultMaxTTL, "", ErrMalformed},
		{"too long", "1700000000:" + strings.Repeat("a", MaxIDLen+1), now, defaultMaxTTL, "", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, pass, err := Check(testSecret, tc.username, tc.now, tc.maxTTL)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check err = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				return
			}
			if id != tc.wantID || pass != Password(testSecret, tc.username) {
				t.Fatalf("Check = %q, %q", id, pass)
			}
		})
	}
	if _, _, err := Check("", aliceUsername, now, time.Hour); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("empty secret: %v", err)
	}
	if _, _, err := Check(testSecret, aliceUsername, now, 0); err == nil {
		t.Fatal("zero maxTTL accepted")
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(aliceNowUnix, 0)
	tests := []struct {
		name, secret, password string
		want                   error
	}{
		{"right", testSecret, alicePassword, nil},
		{"wrong HMAC", testSecret, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", ErrBadPassword},
		{"other secret", testSecret + "x", alicePassword, ErrBadPassword},
		{"empty password", testSecret, "", ErrBadPassword},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Verify(tc.secret, aliceUsername, tc.password, now, time.Hour); !errors.Is(err, tc.want) {
				t.Fatalf("Verify err = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzParseUsername: the parser never panics, accepts only the documented
// format, and whatever it accepts re-encodes to the same username.
func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{aliceUsername, peerUsername, "", ":", "1:", ":a", "0:a", "999999999999:x",
		"1700000000:al:ice", "alice:1700000000", "\xff:\x00", "1700000000:" + strings.Repeat("z", MaxIDLen)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, id, err := ParseUsername(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseUsername(%q) error %v is not ErrMalformed", s, err)
			}
			return
		}
		if len(s) > MaxUsernameLen || len(id) == 0 || len(id) > MaxIDLen || strings.ContainsAny(id, ": ") {
			t.Fatalf("ParseUsername(%q) accepted id %q", s, id)
		}
		ts, _, _ := strings.Cut(s, ":")
		if got := strings.TrimLeft(ts, "0"); got != strings.TrimLeft(strconv.FormatInt(exp.Unix(), 10), "0") {
			t.Fatalf("ParseUsername(%q) expiry %d", s, exp.Unix())
		}
		if _, _, err := Check(testSecret, s, exp, time.Second); err != nil {
			t.Fatalf("Check(%q) at its own expiry: %v", s, err)
		}
	})
}

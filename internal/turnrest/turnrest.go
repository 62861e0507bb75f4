// Package turnrest implements the TURN REST ephemeral-credential scheme
// (draft-uberti-behave-turn-rest-00) exactly as coturn checks it with
// use-auth-secret / static-auth-secret, so that credentials parley issues
// work on parley's own relay and on a stock coturn alike.
//
// Wire format (the STUN USERNAME and the long-term password):
//
//	username = <expiry> ":" <id>
//	password = base64(HMAC-SHA1(secret, username))
//
// <expiry> is the Unix time in seconds after which the credential is
// refused: 1 to 12 ASCII digits, no sign. <id> names the holder (parley puts
// the libp2p peer ID there): 1 to MaxIDLen bytes of printable ASCII, no
// space and no ':'. The whole username is at most MaxUsernameLen bytes, far
// below STUN's 513-byte limit (RFC 8489 §14.3). The TURN long-term key is
// MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
//
// coturn also accepts "<id>:<expiry>" and a bare "<expiry>"; this package
// issues and accepts only "<expiry>:<id>", the one form both agree on.
//
// The package never logs, stores or prints a secret or a password, and it
// never reads the clock: every caller passes "now".
package turnrest

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // RFC 8489 §9.2.2 defines the key with MD5.
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limits of the username format.
const (
	// MaxIDLen is the longest <id>, in bytes.
	MaxIDLen = 128
	// MaxUsernameLen is the longest whole username, in bytes.
	MaxUsernameLen = 12 + 1 + MaxIDLen
	// maxExpiryDigits bounds <expiry> so it always fits an int64 (year 33658).
	maxExpiryDigits = 12
)

// Errors a check returns; wrapped with detail, so test with errors.Is.
var (
	// ErrMalformed: the username is not "<expiry>:<id>" within the limits.
	ErrMalformed = errors.New("malformed TURN REST username")
	// ErrExpired: the expiry is in the past.
	ErrExpired = errors.New("TURN REST credential expired")
	// ErrTooFarAhead: the expiry is further in the future than the checker
	// allows, so the credential was not issued under its policy.
	ErrTooFarAhead = errors.New("TURN REST credential expires too far in the future")
	// ErrBadPassword: the password is not the HMAC of the username.
	ErrBadPassword = errors.New("TURN REST password does not match")
	// ErrNoSecret: the shared secret is empty.
	ErrNoSecret = errors.New("TURN REST shared secret is empty")
)

// Credential is one issued username and password.
type Credential struct {
	Username string
	Password string
	// Expires is the expiry written into Username, to the second.
	Expires time.Time
}

// Issue makes a credential for id that expires ttl after now (rounded down
// to the second). ttl must be at least one second.
func Issue(secret, id string, ttl time.Duration, now time.Time) (Credential, error) {
	if secret == "" {
		return Credential{}, ErrNoSecret
	}
	if ttl < time.Second {
		return Credential{}, fmt.Errorf("issue TURN REST credential for %q: ttl %v is under 1s", id, ttl)
	}
	if err := checkID(id); err != nil {
		return Credential{}, err
	}
	exp := now.Add(ttl).Unix()
	if exp <= 0 {
		return Credential{}, fmt.Errorf("issue TURN REST credential for %q: expiry %d: %w", id, exp, ErrMalformed)
	}
	user := strconv.FormatInt(exp, 10) + ":" + id
	return Credential{Username: user, Password: Password(secret, user), Expires: time.Unix(exp, 0)}, nil
}

// Password is base64(HMAC-SHA1(secret, username)), what coturn computes.
func Password(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseUsername splits a username into its expiry and id, refusing anything
// outside the format in the package comment.
func ParseUsername(username string) (expires time.Time, id string, err error) {
	if len(username) > MaxUsernameLen {
		return time.Time{}, "", fmt.Errorf("%w: %d bytes (limit %d)", ErrMalformed, len(username), MaxUsernameLen)
	}
	ts, id, ok := strings.Cut(username, ":")
	if !ok {
		return time.Time{}, "", fmt.Errorf("%w: no ':'", ErrMalformed)
	}
	if len(ts) == 0 || len(ts) > maxExpiryDigits {
		return time.Time{}, "", fmt.Errorf("%w: expiry of %d digits", ErrMalformed, len(ts))
	}
	var sec int64
	for i := 0; i < len(ts); i++ {
		c := ts[i]
		if c < '0' || c > '9' {
			return time.Time{}, "", fmt.Errorf("%w: expiry is not decimal", ErrMalformed)
		}
		sec = sec*10 + int64(c-'0')
	}
	if err := checkID(id); err != nil {
		return time.Time{}, "", err
	}
	return time.Unix(sec, 0), id, nil
}

func checkID(id string) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("%w: id of %d bytes (want 1 to %d)", ErrMalformed, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == ':' {
			return fmt.Errorf("%w: id byte %#02x at %d", ErrMalformed, c, i)
		}
	}
	return nil
}

// Check validates username at now and returns its id and the password its
// holder must prove knowledge of. It refuses a malformed username, one that
// expired (expiry < now, to the second, as coturn does), and one whose
// expiry is more than maxTTL after now. maxTTL must be positive.
func Check(secret, username string, now time.Time, maxTTL time.Duration) (id, password string, err error) {
	if secret == "" {
		return "", "", ErrNoSecret
	}
	if maxTTL <= 0 {
		return "", "", fmt.Errorf("check TURN REST username: maxTTL %v is not positive", maxTTL)
	}
	exp, id, err := ParseUsername(username)
	if err != nil {
		return "", "", err
	}
	e, n := exp.Unix(), now.Unix()
	if e < n {
		return "", "", fmt.Errorf("%w: %ds ago", ErrExpired, n-e)
	}
	if ahead := e - n; ahead > int64(maxTTL/time.Second) {
		return "", "", fmt.Errorf("%w: in %ds (limit %v)", ErrTooFarAhead, ahead, maxTTL)
	}
	return id, Password(secret, username), nil
}

// Verify is Check followed by a constant-time comparison with password.
func Verify(secret, username, password string, now time.Time, maxTTL time.Duration) (id string, err error) {
	id, want, err := Check(secret, username, now, maxTTL)
	if err != nil {
		return "", err
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(password)) != 1 {
		return "", ErrBadPassword
	}
	return id, nil
}

// LongTermKey is the TURN long-term credential key MD5(username:realm:password)
// (RFC 8489 §9.2.2), the same bytes as pion's turn.GenerateAuthKey.
func LongTermKey(username, realm, password string) []byte {
	h := md5.New() //nolint:gosec
	h.Write([]byte(username + ":" + realm + ":" + password))
	return h.Sum(nil)
}

package media

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Limits on signalling input from the peer. A browser's offer with audio,
// video and data is about 6 KiB; a candidate line about 200 bytes.
const (
	maxSDPSize        = 64 << 10
	maxSDPMedia       = 16
	maxCandidateJSON  = 4 << 10
	maxCandidateLine  = 1 << 10
	maxPendingRemote  = 256 // remote candidates queued before the remote description
	maxFingerprintLen = 256
)

var (
	// ErrBadSDP is returned for a session description that is too large,
	// does not parse, or lacks what a call needs (Opus audio, ICE
	// credentials, a DTLS fingerprint).
	ErrBadSDP = errors.New("media: bad session description")
	// ErrBadCandidate is returned for a trickled ICE candidate that is too
	// large or does not parse.
	ErrBadCandidate = errors.New("media: bad ICE candidate")
)

// parseSDP checks the size and syntax of a remote session description and
// returns it parsed. It never panics on any input.
func parseSDP(raw string) (*sdp.SessionDescription, error) {
	if len(raw) > maxSDPSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrBadSDP, len(raw), maxSDPSize)
	}
	if !utf8.ValidString(raw) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrBadSDP)
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSDP, err)
	}
	if len(d.MediaDescriptions) > maxSDPMedia {
		return nil, fmt.Errorf("%w: %d media sections (limit %d)", ErrBadSDP, len(d.MediaDescriptions), maxSDPMedia)
	}
	return &d, nil
}

// validateRemoteSDP checks that raw is a description a call can use: it
// parses, every audio and video section has an a=mid and an rtpmap for each
// dynamic payload type, an audio section offers Opus at 48 kHz, and it has
// ICE credentials and a single DTLS fingerprint.
//
// pion moves its signalling state before it finds some of these problems,
// which would leave the session unable to take a corrected description;
// catching them here keeps a bad description from breaking the session.
func validateRemoteSDP(raw string) error {
	d, err := parseSDP(raw)
	if err != nil {
		return err
	}
	opus := false
	for i, m := range d.MediaDescriptions {
		kind := strings.ToLower(m.MediaName.Media)
		if kind != "audio" && kind != "video" {
			continue
		}
		if mid, ok := m.Attribute("mid"); !ok || mid == "" {
			return fmt.Errorf("%w: %s section %d has no a=mid", ErrBadSDP, kind, i)
		}
		one := &sdp.SessionDescription{MediaDescriptions: []*sdp.MediaDescription{m}}
		for _, f := range m.MediaName.Formats {
			pt, err := strconv.ParseUint(f, 10, 8)
			if err != nil {
				return fmt.Errorf("%w: %s section %d: payload type %q", ErrBadSDP, kind, i, f)
			}
			codec, err := one.GetCodecForPayloadType(uint8(pt))
			if err != nil {
				if pt == 0 { // PCMU may go without an rtpmap
					continue
				}
				return fmt.Errorf("%w: %s section %d: payload type %d has no rtpmap", ErrBadSDP, kind, i, pt)
			}
			if kind == "audio" && strings.EqualFold(codec.Name, "opus") && codec.ClockRate == SampleRate {
				opus = true
			}
		}
	}
	if !opus {
		return fmt.Errorf("%w: no audio section offers opus/48000", ErrBadSDP)
	}
	for _, attr := range []string{"ice-ufrag", "ice-pwd"} {
		if !hasAttribute(d, attr) {
			return fmt.Errorf("%w: no a=%s", ErrBadSDP, attr)
		}
	}
	_, err = fingerprint(d)
	return err
}

// hasAttribute reports whether key is set at session level or in any media
// section.
func hasAttribute(d *sdp.SessionDescription, key string) bool {
	if v, ok := d.Attribute(key); ok && v != "" {
		return true
	}
	for _, m := range d.MediaDescriptions {
		if v, ok := m.Attribute(key); ok && v != "" {
			return true
		}
	}
	return false
}

// FingerprintFromSDP returns the DTLS certificate fingerprint a session
// description commits to (RFC 8122 §5), as "<hash> <HEX:HEX:…>", e.g.
// "sha-256 AB:CD:…". Because the description travels over the
// authenticated signalling stream, comparing this value with what the peer
// presents in DTLS (pion does so) binds the media to the signalling
// identity. A description with no fingerprint, or with sections that
// disagree, is an error.
func FingerprintFromSDP(raw string) (string, error) {
	d, err := parseSDP(raw)
	if err != nil {
		return "", err
	}
	return fingerprint(d)
}

func fingerprint(d *sdp.SessionDescription) (string, error) {
	var values []string
	for _, a := range d.Attributes {
		if a.Key == "fingerprint" {
			values = append(values, a.Value)
		}
	}
	for _, m := range d.MediaDescriptions {
		for _, a := range m.Attributes {
			if a.Key == "fingerprint" {
				values = append(values, a.Value)
			}
		}
	}
	if len(values) == 0 {
		return "", fmt.Errorf("%w: no DTLS fingerprint", ErrBadSDP)
	}
	var fp string
	for _, v := range values {
		n, err := normalizeFingerprint(v)
		if err != nil {
			return "", err
		}
		if fp != "" && n != fp {
			return "", fmt.Errorf("%w: sections carry different DTLS fingerprints", ErrBadSDP)
		}
		fp = n
	}
	return fp, nil
}

// normalizeFingerprint checks "hash-func HEX:HEX:…" (RFC 8122 §5) and
// returns it with the hash name in lower case and the hex in upper case.
func normalizeFingerprint(v string) (string, error) {
	if len(v) > maxFingerprintLen {
		return "", fmt.Errorf("%w: fingerprint of %d bytes", ErrBadSDP, len(v))
	}
	hash, hexpart, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || hash == "" {
		return "", fmt.Errorf("%w: malformed fingerprint %q", ErrBadSDP, v)
	}
	switch hash = strings.ToLower(hash); hash {
	case "sha-1", "sha-224", "sha-256", "sha-384", "sha-512":
	default:
		return "", fmt.Errorf("%w: unsupported fingerprint hash %q", ErrBadSDP, hash)
	}
	hexpart = strings.ToUpper(strings.TrimSpace(hexpart))
	pairs := strings.Split(hexpart, ":")
	if len(pairs) < 16 {
		return "", fmt.Errorf("%w: fingerprint of %d bytes", ErrBadSDP, len(pairs))
	}
	for _, p := range pairs {
		if len(p) != 2 || !isHex(p[0]) || !isHex(p[1]) {
			return "", fmt.Errorf("%w: malformed fingerprint %q", ErrBadSDP, v)
		}
	}
	return hash + " " + hexpart, nil
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('A' <= c && c <= 'F')
}

// parseCandidate decodes a trickled candidate, as produced by
// OnLocalCandidate: the JSON of an RTCIceCandidateInit. ok is false for an
// end-of-candidates marker ("" or an empty candidate field).
func parseCandidate(raw string) (init webrtc.ICECandidateInit, ok bool, err error) {
	if raw == "" {
		return init, false, nil
	}
	if len(raw) > maxCandidateJSON {
		return init, false, fmt.Errorf("%w: %d bytes (limit %d)", ErrBadCandidate, len(raw), maxCandidateJSON)
	}
	if err := json.Unmarshal([]byte(raw), &init); err != nil {
		return init, false, fmt.Errorf("%w: %w", ErrBadCandidate, err)
	}
	if init.Candidate == "" {
		return init, false, nil
	}
	if len(init.Candidate) > maxCandidateLine {
		return init, false, fmt.Errorf("%w: candidate line of %d bytes", ErrBadCandidate, len(init.Candidate))
	}
	if !utf8.ValidString(init.Candidate) {
		return init, false, fmt.Errorf("%w: not UTF-8", ErrBadCandidate)
	}
	if _, err := ice.UnmarshalCandidate(init.Candidate); err != nil {
		return init, false, fmt.Errorf("%w: %w", ErrBadCandidate, err)
	}
	return init, true, nil
}

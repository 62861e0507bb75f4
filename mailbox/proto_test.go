package mailbox

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"
)

func TestDecodeFrame(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"end", `{"t":"end"}`, true},
		{"fetch", `{"t":"fetch","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}`, true},
		{"fetch bad device", `{"t":"fetch","device":"x"}`, false},
		{"ack", `{"t":"ack","ids":["0a"],"ts_ms":1,"sig":"` + sig64 + `"}`, true},
		{"ack unsigned", `{"t":"ack","ids":["0a"]}`, false},
		{"ack short sig", `{"t":"ack","ids":["0a"],"ts_ms":1,"sig":"AAAA"}`, false},
		{"del", `{"t":"del","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","ids":["0a"],"ts_ms":1,"sig":"` + sig64 + `"}`, true},
		{"del unsigned", `{"t":"del","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","ids":["0a"]}`, false},
		{"ack none", `{"t":"ack","ids":[]}`, false},
		{"put none", `{"t":"put","items":[]}`, false},
		{"put bad item", `{"t":"put","items":[{"id":"zz"}]}`, false},
		{"unknown", `{"t":"steal"}`, false},
		{"extra field", `{"t":"end","x":1}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeFrame([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeFrame = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("%v does not wrap ErrBadFrame", err)
			}
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"t":"put","items":[{"id":"0a","to":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","account":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","from":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","expires_ms":1,"env":"AA=="}]}`))
	f.Add([]byte(`{"t":"ack","ids":["0a"]}`))
	f.Add([]byte(`{"t":"ack","ids":["0a"],"ts_ms":1,"sig":"` + sig64 + `"}`))
	f.Add([]byte(`{"t":"del","device":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","ids":["0a","0b"],"ts_ms":1,"sig":"` + sig64 + `"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if fr.Type == "ack" || fr.Type == "del" {
			if len(fr.IDs) > MaxAckIDs || len(fr.Sig) != ackSigLen {
				t.Fatal("accepted an out-of-bounds proof")
			}
			// Checking a proof of any shape must not panic; a zero or
			// random signature never verifies.
			if VerifyAck(fr.Device, fr.TS, fr.IDs, fr.Sig, time.UnixMilli(fr.TS), DefaultTTL) == nil {
				t.Fatal("a fuzzed proof verified")
			}
		}
		for _, it := range fr.Items {
			if len(it.Env) > MaxEnvelope || len(it.Account) != 32 {
				t.Fatal("accepted an out-of-bounds item")
			}
		}
	})
}

// sig64 is 64 zero bytes in base64: a signature of the right length.
var sig64 = base64.StdEncoding.EncodeToString(make([]byte, 64))

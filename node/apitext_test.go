package node

import (
	"errors"
	"fmt"
	"testing"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestUserText(t *testing.T) {
	id, err := peer.Decode("12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("no such handle: bob"), "no such handle: bob"},
		{"peer ID", fmt.Errorf("%s refused m1: bad envelope", id.ShortString()), "…CVe2Xo refused m1: bad envelope"},
		{"two peer IDs", fmt.Errorf("%s and %s", id.ShortString(), id.ShortString()), "…CVe2Xo and …CVe2Xo"},
		{"empty routing table", fmt.Errorf("resolve handle bob: %w", kb.ErrLookupFailure),
			"resolve handle bob: no DHT peer to ask: this daemon is connected to no supernode (check its --bootstrap addresses and the network)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := userText(tc.err); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

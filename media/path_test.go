package media

import (
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
)

// Both sides hear of the pair ICE selected, with its candidates' types and
// addresses, also when they register after the selection.
func TestOnPathChange(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()
	c := newCall(t, Config{Source: SpeechLikeSource(3)}, Config{Source: SpeechLikeSource(4)})
	paths := make(chan Path, 8)
	c.a.OnPathChange(func(p Path) { paths <- p })
	c.connect(t)
	waitClosed(t, c.b.FirstAudio(), 10*time.Second, "first audio at b")
	late := make(chan Path, 8)
	c.b.OnPathChange(func(p Path) { late <- p }) // after the selection

	for name, ch := range map[string]chan Path{"a (registered before)": paths, "b (registered after)": late} {
		select {
		case p := <-ch:
			// The peer's first check can come before its trickled
			// candidate: then ICE knows it as peer-reflexive.
			if p.LocalType != "host" || (p.RemoteType != "host" && p.RemoteType != "prflx") || p.Protocol != "udp" ||
				!strings.HasPrefix(p.Local, "127.0.0.1:") || !strings.HasPrefix(p.Remote, "127.0.0.1:") {
				t.Errorf("%s: path %+v, want a direct pair over udp on loopback", name, p)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: no path event", name)
		}
	}
	c.close(t, c.b)
}

package media

import (
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
			if p.LocalType != "host" || p.RemoteType != "host" || p.Protocol != "udp" || p.Local == "" || p.Remote == "" {
				t.Errorf("%s: path %+v, want a host pair over udp on loopback", name, p)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: no path event", name)
		}
	}
	c.close(t, c.b)
}

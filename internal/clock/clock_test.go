package clock

import (
	"testing"
	"time"
)

func TestFakeRunsDueTimersInOrder(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	var got []string
	c.AfterFunc(2*time.Second, func() { got = append(got, "b") })
	c.AfterFunc(time.Second, func() {
		got = append(got, "a")
		// A timer set by a timer runs in the same Advance if it falls due.
		c.AfterFunc(500*time.Millisecond, func() { got = append(got, "a2") })
	})
	stopped := c.AfterFunc(1500*time.Millisecond, func() { got = append(got, "never") })
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	c.Advance(1999 * time.Millisecond)
	if want := "a a2"; join(got) != want {
		t.Fatalf("after 1.999 s ran %q, want %q", join(got), want)
	}
	c.Advance(time.Millisecond)
	if want := "a a2 b"; join(got) != want {
		t.Fatalf("after 2 s ran %q, want %q", join(got), want)
	}
	if c.Pending() != 0 {
		t.Fatalf("%d timers pending", c.Pending())
	}
	if !c.Now().Equal(time.Unix(2, 0)) {
		t.Fatalf("now = %v", c.Now())
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

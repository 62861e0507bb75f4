package node

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserGroups: the Groups screen of the web app. The page makes a group
// with bob (a pion node) by handle and sends to it; bob receives it as a
// group message. bob answers in the group and the page shows it live.
func (r *browserRig) browserGroups(t *testing.T) {
	ctx := context.Background()
	bobEv, stop := r.bob.Subscribe()
	defer stop()
	r.open(t, "groups")
	tctx, cancel := context.WithTimeout(r.tab, 20*time.Second)
	defer cancel()
	// The keyboard alone: type, Enter submits.
	if err := chromedp.Do(tctx,
		chromedp.WaitVisible("#group-name"),
		chromedp.SendKeys("#group-name", "team"),
		chromedp.SendKeys("#group-members", "bob\r"),
		chromedp.WaitVisible("#group-text"),
	); err != nil {
		t.Fatal(err)
	}
	r.waitJS(t, "the group is listed and open", `document.getElementById('group-list').textContent.includes('#team')
		&& document.getElementById('group-title').textContent === 'team'`, 10*time.Second)
	if err := chromedp.Do(tctx, chromedp.SendKeys("#group-text", "hello team, from the browser\r")); err != nil {
		t.Fatal(err)
	}
	// bob gets the group's first message ("alice created #team …") and ours.
	var got Message
	for deadline := time.Now().Add(20 * time.Second); got.Body != "hello team, from the browser"; {
		ms := waitMessages(t, bobEv, 1, time.Until(deadline))
		got = ms[0]
	}
	gs, err := r.bob.Groups(ctx)
	if err != nil || len(gs) != 1 || gs[0].Name != "team" || got.Conv != GroupConv(gs[0].ID) || got.From != "alice" {
		t.Fatalf("bob's groups %+v (%v); the message %+v", gs, err, got)
	}
	if _, err := r.bob.Send(ctx, "#team", "bob here, in the group"); err != nil {
		t.Fatal(err)
	}
	r.waitJS(t, "bob's group message shows live", `(() => { const t = document.getElementById('group-history').textContent;
		return t.includes('bob here, in the group') && t.includes('hello team, from the browser') })()`, 20*time.Second)
	r.shot(t, "groups")
}

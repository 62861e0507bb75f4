// Package headless starts Debian's Chromium without a window, driven over
// the DevTools protocol (chromedp), as a browser peer for parley's tests and
// demo: fake microphone from a WAV file, media permission granted, loopback
// ICE candidates allowed. It never reaches beyond the URLs it is given.
package headless

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

// ErrNoChromium is returned when no Chromium-family browser is installed.
var ErrNoChromium = errors.New("no chromium installed (apt-get install chromium)")

// Find returns the path of the browser to drive: $PARLEY_CHROMIUM, else
// chromium, chromium-browser or google-chrome on PATH.
func Find() (string, error) {
	if p := os.Getenv("PARLEY_CHROMIUM"); p != "" {
		return exec.LookPath(p)
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// Version is the browser's version line ("Chromium 156.0...").
func Version(path string) string {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// Options configure a browser.
type Options struct {
	// Path is the browser binary; "" means Find.
	Path string
	// MicWAV is a WAV file the fake microphone plays in a loop; "" means
	// Chromium's fake device (a beep).
	MicWAV string
	// DataDir is the profile directory; "" means a temporary one chromedp
	// removes at Close.
	DataDir string
}

// Browser is one headless Chromium process.
type Browser struct {
	Path    string
	Version string
	ctx     context.Context
	cancel  context.CancelFunc
}

// Start starts the browser (it lives until Close or ctx ends).
func Start(ctx context.Context, o Options) (*Browser, error) {
	path := o.Path
	if path == "" {
		var err error
		if path, err = Find(); err != nil {
			return nil, err
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// Calls on one machine: offer 127.0.0.1 as a host candidate.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "Translate,WebRtcHideLocalIpsWithMdns"),
		chromedp.WindowSize(1100, 900),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	if o.MicWAV != "" {
		opts = append(opts, chromedp.Flag("use-file-for-fake-audio-capture", o.MicWAV))
	}
	if o.DataDir != "" {
		opts = append(opts, chromedp.UserDataDir(o.DataDir))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// The first Run starts the process.
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return &Browser{Path: path, Version: Version(path), ctx: bctx, cancel: func() { cancelBrowser(); cancelAlloc() }}, nil
}

// Tab opens a new tab; cancel closes it.
func (b *Browser) Tab() (context.Context, context.CancelFunc) {
	return chromedp.NewContext(b.ctx)
}

// Context is the browser's first tab.
func (b *Browser) Context() context.Context { return b.ctx }

// Close stops the browser.
func (b *Browser) Close() { b.cancel() }

// Eval evaluates expr in tab (awaiting it if it is a promise), within 10 s.
func Eval[T any](tab context.Context, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// WaitTrue evaluates expr in tab until it is true, or fails after d. The
// page has no event to wait on from here, so it polls every 100 ms.
func WaitTrue(tab context.Context, what, expr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for {
		ok, err := Eval[bool](tab, expr)
		if err == nil && ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("page: %s: not within %v (%w)", what, d, last)
			}
			return fmt.Errorf("page: %s: not within %v", what, d)
		}
		select {
		case <-tab.Done():
			return tab.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

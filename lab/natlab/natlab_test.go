package natlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-net/parley/lab/netlab"
)

// parleyBin is the binary the lab runs: NATLAB_BINARY, or else built once
// by TestMain when the lab is available. NATLAB_DIR keeps the lab's homes,
// recordings and logs there.
var parleyBin string

func TestMain(m *testing.M) {
	if netlab.Available() != nil {
		os.Exit(m.Run()) // the lab tests skip, the others run
	}
	if parleyBin = os.Getenv("NATLAB_BINARY"); parleyBin != "" {
		os.Exit(m.Run()) // a binary built elsewhere
	}
	dir, err := os.MkdirTemp("", "parley-natlab-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	parleyBin = filepath.Join(dir, "parley")
	build := exec.Command("go", "build", "-o", parleyBin, "./cmd/parley")
	build.Dir = "../.." // the module root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build parley: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needLab(t *testing.T) {
	t.Helper()
	if err := netlab.Available(); err != nil {
		t.Skip(err)
	}
}

// expectRelayed lists the pairs whose NATs cannot punch: a symmetric NAT
// against a symmetric or port-restricted one (a port-restricted NAT
// filters on the exact port, and a symmetric one never sends from the
// port its peer learnt). Every other pair of this matrix without a
// udp-blocked end must be direct.
func expectRelayed(a, b netlab.NATType) bool {
	hard := func(x, y netlab.NATType) bool {
		return x == netlab.Symmetric && (y == netlab.Symmetric || y == netlab.PortRestricted)
	}
	return hard(a, b) || hard(b, a)
}

// TestMatrix runs the calls between public, port-restricted, symmetric and
// udp-blocked hosts, a mobile-profile call, and a cloud relay outage in
// one lab.
func TestMatrix(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	types := []netlab.NATType{netlab.Public, netlab.PortRestricted, netlab.Symmetric, netlab.UDPBlocked}
	opts := Options{Binary: parleyBin, Types: types, Audio: 3 * time.Second, Progress: testWriter{t}}
	if d := os.Getenv("NATLAB_DIR"); d != "" {
		opts.Dir = d // keep homes, recordings and logs
	}
	start := time.Now()
	l, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()

	m := &Matrix{Types: typeNames(types)}
	for _, spec := range AllPairs(types) {
		spec.Audio = opts.Audio
		p := l.Call(ctx, spec)
		m.Pairs = append(m.Pairs, p)
		checkPair(t, spec, p)
	}
	mobile := CallSpec{Caller: netlab.Public, Callee: netlab.Public, Profile: "mobile", Audio: opts.Audio}
	p := l.Call(ctx, mobile)
	m.Pairs = append(m.Pairs, p)
	checkPair(t, mobile, p)
	if p.OK && !relayed(p.Path) {
		t.Errorf("%s went %s: the mobile profile must be relayed", mobile, p.Path)
	}

	// The fault: the cloud relay dies in the middle of a call relayed
	// through it, whose policy (cloud,supernode) allows the supernode tier,
	// and of a direct call beside it.
	// Each call gets faultAudio (12 s): the kill comes 3 s after the later
	// of the two becomes active, and the moving call needs up to about 4 s
	// to be heard again.
	calls := l.FaultCalls(FaultCloud)
	f, err := l.Fault(ctx, FaultCloud, calls)
	if err != nil {
		t.Fatalf("fault: %v", err)
	}
	m.Fault = f
	if f.KilledAfterMS == 0 {
		t.Errorf("cloud fault: not every call became active: %+v", f.Calls)
	}
	for _, fc := range f.Calls {
		if !fc.Held(FaultCloud) {
			t.Errorf("cloud fault: %s\ncaller log (%s):\n%s", fc.summary(FaultCloud, f.KilledAfterMS), fc.Call.CallerLog, tailFile(fc.Call.CallerLog, 30))
		}
	}
	if len(f.Calls) != 2 {
		t.Errorf("cloud fault ran %d calls, want a relayed one and a direct one", len(f.Calls))
	}

	var table bytes.Buffer
	m.WriteTable(&table)
	js, _ := json.Marshal(m)
	t.Logf("matrix in %.0f s:\n%s\n%s", time.Since(start).Seconds(), table.String(), js)
}

// checkPair asserts what every call of the matrix must achieve and, on
// failure, shows both daemons' logs.
func checkPair(t *testing.T, spec CallSpec, p Pair) {
	t.Helper()
	switch {
	case !p.OK:
		t.Errorf("%s failed: %s\ncall output: %s\ncaller log (%s):\n%s\ncallee log (%s):\n%s", spec, p.Error,
			tailFile(p.CallOutput, 10), p.CallerLog, tailFile(p.CallerLog, 30), p.CalleeLog, tailFile(p.CalleeLog, 30))
		return
	case p.AudioCorrelation < 0.9:
		t.Errorf("%s: audio correlation %.3f, want ≥ 0.9", spec, p.AudioCorrelation)
	}
	if spec.Profile != "" || spec.Path != "" {
		return
	}
	switch {
	case spec.Caller == netlab.UDPBlocked:
		// Only TCP 80/443 leaves: its own relay, reached over TCP or TLS.
		if !relayed(p.Path) || !(strings.HasSuffix(p.PathDetail, " over tcp") || strings.HasSuffix(p.PathDetail, " over tls")) {
			t.Errorf("%s went %s (%s), want a relay reached over TCP or TLS", spec, p.Path, p.PathDetail)
		}
	case spec.Callee == netlab.UDPBlocked:
		if !relayed(p.Path) {
			t.Errorf("%s went %s (%s), want relayed: the callee sends no UDP", spec, p.Path, p.PathDetail)
		}
	case expectRelayed(spec.Caller, spec.Callee):
		if !relayed(p.Path) {
			t.Errorf("%s went %s (%s): these NATs cannot punch, want supernode or cloud\ncaller log (%s):\n%s\ncallee log (%s):\n%s",
				spec, p.Path, p.PathDetail, p.CallerLog, tailFile(p.CallerLog, 30), p.CalleeLog, tailFile(p.CalleeLog, 30))
		}
	case p.Path != "direct":
		t.Errorf("%s went %s (%s), want direct", spec, p.Path, p.PathDetail)
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func TestOptionsCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"unknown type", Options{Types: []netlab.NATType{"cone"}}, "cone"},
		{"repeated type", Options{Types: []netlab.NATType{netlab.Public, netlab.Public}}, "twice"},
		{"pair outside types", Options{Types: []netlab.NATType{netlab.Public}, Pairs: []CallSpec{{Caller: netlab.Public, Callee: netlab.Symmetric}}}, "among"},
		{"unknown fault", Options{Fault: "dns"}, "unknown fault"},
		{"negative audio", Options{Audio: -time.Second}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	var o Options
	if err := o.check(); err != nil || len(o.Types) != len(netlab.NATTypes()) {
		t.Fatalf("zero Options: %v, types %v", err, o.Types)
	}
}

func TestParseTypes(t *testing.T) {
	got, err := ParseTypes("public, symmetric")
	if err != nil || len(got) != 2 || got[0] != netlab.Public || got[1] != netlab.Symmetric {
		t.Fatalf("ParseTypes = %v, %v", got, err)
	}
	if _, err := ParseTypes("public,nat"); err == nil {
		t.Fatal("ParseTypes accepted an unknown type")
	}
}

func TestLongestSilence(t *testing.T) {
	s := make([]int16, 60*frame)
	for i := range s {
		if i/frame < 10 || i/frame >= 30 {
			s[i] = 1000 * int16(1-2*(i%2))
		}
	}
	start, n := longestSilence(s)
	if start != 10 || n != 20 {
		t.Fatalf("longestSilence = %d, %d; want 10, 20", start, n)
	}
	var r FaultCall
	r.analyse(s, s)
	if r.GapMS != 400 || r.GapStartMS != 200 || !r.Recovered || r.HeardAfterMS != 600 {
		t.Fatalf("analyse: %+v", r)
	}
}

func TestWriteTable(t *testing.T) {
	m := &Matrix{Types: []string{"public", "symmetric"}, Pairs: []Pair{
		{Caller: "public", Callee: "public", OK: true, Path: "direct", SetupMS: 210, AudioCorrelation: 0.99},
		{Caller: "public", Callee: "symmetric", OK: true, Path: "direct", SetupMS: 250, AudioCorrelation: 0.98},
		{Caller: "symmetric", Callee: "public", OK: true, Path: "direct", SetupMS: 260, AudioCorrelation: 0.97},
		{Caller: "symmetric", Callee: "symmetric", Error: "ice failed"},
		{Caller: "public", Callee: "public", Profile: "mobile", OK: true, Path: "cloud", SetupMS: 400, AudioCorrelation: 0.95},
	}}
	var b bytes.Buffer
	if err := m.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"caller \\ callee | public", "direct 210ms 0.99", "| FAIL", "public → public --profile mobile: cloud 400ms 0.95", "FAIL symmetric → symmetric: ice failed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestLastTier(t *testing.T) {
	lines := []string{"calling x (call 1)", "active: audio after 37 ms",
		"[  1s] supernode | path relay 203.0.113.10:58417 → host 198.51.100.11:40914 (udp) | rtt 0.7 ms",
		"[ 12s] cloud | path relay ...", "ended: hung up"}
	if got := lastTier(lines); got != "cloud" {
		t.Fatalf("lastTier = %q, want cloud", got)
	}
	if got := lastTier(lines[:2]); got != "" {
		t.Fatalf("lastTier without stats = %q", got)
	}
}

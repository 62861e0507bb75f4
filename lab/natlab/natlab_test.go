package natlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-net/parley/internal/nodetest"
	"github.com/parley-net/parley/lab/netlab"
	"github.com/parley-net/parley/node"
)

// parleyBin is the binary the lab runs: NATLAB_BINARY, or else built once
// by TestMain when the lab is available. NATLAB_DIR keeps the lab's homes,
// recordings and logs there.
var parleyBin string

func TestMain(m *testing.M) {
	// Without the lab the lab tests skip and the others run; NATLAB_BINARY
	// names a binary built elsewhere.
	nodetest.RunWithParley(m, "NATLAB_BINARY", netlab.Available, &parleyBin)
}

func needLab(t *testing.T) {
	t.Helper()
	if err := netlab.Available(); err != nil {
		t.Skip(err)
	}
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
		if Punchable(spec) && p.OK && relayed(p.Path) {
			// The call started relayed and had not moved to the direct
			// pair by the end of its 3 s (renomination runs every 2 s and
			// judges by the RTT it last measured, which a loaded 2-core
			// machine makes noisy). The pair must go direct when asked
			// again; the first try stays in the log as a finding.
			t.Logf("%s settled on %s (%s) once; calling again", spec, p.Path, p.PathDetail)
			p = l.Call(ctx, spec)
		}
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
	// and of a direct call beside it. The NATed fault calls are
	// TestFaults'; leaving them out here keeps this lab to its eight
	// daemons.
	// Each call gets faultAudio (12 s): the kill comes 3 s after the later
	// of the two becomes active, and the moving call needs up to about 4 s
	// to be heard again.
	var calls []FaultSpec
	for _, fc := range FaultCalls(types, FaultCloud) {
		if fc.Expect == ExpectUnaffected || fc.Spec.Caller == netlab.Public && fc.Spec.Callee == netlab.Public {
			calls = append(calls, fc)
		}
	}
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

// TestFaults runs, in a small lab of port-restricted and symmetric hosts,
// the two faults of issue 9 that hit NATed calls hardest: the caller's
// daemon of a direct port-restricted call SIGKILLed (the callee must end
// the call within 12 s and take a call from the restarted caller), then
// the supernode SIGKILLed under a symmetric ↔ symmetric call it relays,
// media and signalling (the call must go on through the cloud relay
// with at most 3 s of silence). The caller fault comes first: the
// supernode stays dead, and the restarted caller needs it to join.
func TestFaults(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	types := []netlab.NATType{netlab.PortRestricted, netlab.Symmetric}
	opts := Options{Binary: parleyBin, Types: types, Audio: 3 * time.Second, Progress: testWriter{t}}
	if d := os.Getenv("NATLAB_DIR"); d != "" {
		opts.Dir = filepath.Join(d, "faults")
	}
	l, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	report := &Matrix{Types: typeNames(types)}

	// No direct path for the first 1.5 s: the call starts relayed and
	// must move to the direct pair once it works, without a gap.
	t.Run("late direct path", func(t *testing.T) {
		spec := CallSpec{Caller: netlab.PortRestricted, Callee: netlab.PortRestricted, Audio: 5 * time.Second, DirectAfter: 1500 * time.Millisecond}
		p := l.Call(ctx, spec)
		js, _ := json.Marshal(p)
		t.Logf("late direct path: %s", js)
		if !p.OK {
			t.Fatalf("%s failed: %s\ncall output: %s", spec, p.Error, tailFile(p.CallOutput, 20))
		}
		if p.Path != "direct" || !relayed(p.FirstPath) {
			t.Errorf("%s: tier %s, first %q; want a relayed start and a direct end\ncall output: %s", spec, p.Path, p.FirstPath, tailFile(p.CallOutput, 20))
		}
		if p.AudioCorrelation < minCorrelation {
			t.Errorf("%s: audio correlation %.3f, want ≥ %.1f (longest gap beyond the audio's own: %.0f ms)", spec, p.AudioCorrelation, minCorrelation, p.SwitchGapMS)
		}
	})

	t.Run("caller", func(t *testing.T) {
		calls := FaultCalls(types, FaultCaller)
		if len(calls) != 1 || calls[0].Spec.Caller != netlab.PortRestricted {
			t.Fatalf("caller fault calls: %+v, want one port-restricted call", calls)
		}
		f, err := l.Fault(ctx, FaultCaller, calls)
		if err != nil {
			t.Fatalf("fault: %v", err)
		}
		report.Fault = f
		checkFault(t, f)
	})
	js, _ := json.Marshal(report)
	t.Logf("caller fault: %s", js)

	t.Run("supernode", func(t *testing.T) {
		var calls []FaultSpec
		for _, fc := range FaultCalls(types, FaultSupernode) {
			if fc.Spec.Caller == netlab.Symmetric && fc.Spec.Callee == netlab.Symmetric {
				calls = append(calls, fc)
			}
		}
		if len(calls) != 1 || calls[0].Expect != ExpectMoves || calls[0].Spec.Path != "" {
			t.Fatalf("supernode fault calls: %+v, want symmetric → symmetric, moving, path auto", calls)
		}
		f, err := l.Fault(ctx, FaultSupernode, calls)
		if err != nil {
			t.Fatalf("fault: %v", err)
		}
		report.Fault = f
		checkFault(t, f)
	})
	js, _ = json.Marshal(report)
	t.Logf("supernode fault: %s", js)
}

// checkFault asserts that a fault killed something and that every call
// held (FaultCall.Held), showing the two daemons' logs otherwise.
func checkFault(t *testing.T, f *FaultReport) {
	t.Helper()
	if f.KilledAfterMS == 0 {
		t.Errorf("%s fault: not every call became active, nothing killed: %+v", f.Killed, f.Calls)
		return
	}
	for _, fc := range f.Calls {
		if fc.Held(f.Killed) {
			continue
		}
		t.Errorf("%s fault: %s\ncaller log (%s):\n%s\ncallee log (%s):\n%s", f.Killed, fc.summary(f.Killed, f.KilledAfterMS),
			fc.Call.CallerLog, tailFile(fc.Call.CallerLog, 30), fc.Call.CalleeLog, tailFile(fc.Call.CalleeLog, 30))
	}
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
	case p.AudioCorrelation < minCorrelation:
		t.Errorf("%s: audio correlation %.3f, want ≥ %.1f", spec, p.AudioCorrelation, minCorrelation)
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
	case ExpectRelayed(spec.Caller, spec.Callee):
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
		{"loss out of range", Options{LossPct: 100}, "loss 100% outside"},
		{"caller fault without a direct pair", Options{Types: []netlab.NATType{netlab.Symmetric, netlab.UDPBlocked}, Fault: FaultCaller}, "needs one of port-restricted"},
		{"supernode fault without public or symmetric", Options{Types: []netlab.NATType{netlab.PortRestricted}, Fault: FaultSupernode}, "needs public or symmetric"},
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

// TestWriteTableLoss checks that under --loss every cell shows the audio
// the caller concealed, and the legend says how much loss there was.
func TestWriteTableLoss(t *testing.T) {
	m := &Matrix{Types: []string{"public"}, LossPct: 5, Pairs: []Pair{
		{Caller: "public", Callee: "public", OK: true, Path: "direct", SetupMS: 210, AudioCorrelation: 0.97, ConcealedMS: 20},
	}}
	var b bytes.Buffer
	if err := m.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"direct 210ms 0.97 c20ms", "audio concealed at the caller (5% UDP loss at each caller's NAT)"} {
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

func TestFaultCalls(t *testing.T) {
	const (
		pub = netlab.Public
		fc  = netlab.FullCone
		rs  = netlab.Restricted
		pr  = netlab.PortRestricted
		sym = netlab.Symmetric
		udp = netlab.UDPBlocked
	)
	for _, tc := range []struct {
		name  string
		types []netlab.NATType
		fault string
		want  []string // "expect caller→callee path"
	}{
		{"supernode, the issue's three types", []netlab.NATType{pub, pr, sym}, FaultSupernode, []string{
			"moves public→public supernode,cloud", "unaffected port-restricted→port-restricted ",
			"moves symmetric→symmetric ", "moves public→port-restricted supernode,cloud"}},
		{"cloud, the issue's three types", []netlab.NATType{pub, pr, sym}, FaultCloud, []string{
			"moves public→public cloud,supernode", "unaffected port-restricted→port-restricted ",
			"moves symmetric→symmetric cloud,supernode", "moves public→port-restricted cloud,supernode"}},
		{"public and port-restricted (the old pair)", []netlab.NATType{pub, pr}, FaultCloud, []string{
			"moves public→public cloud,supernode", "unaffected port-restricted→port-restricted ", "moves public→port-restricted cloud,supernode"}},
		{"direct call from restricted when no port-restricted", []netlab.NATType{sym, rs, fc}, FaultSupernode, []string{
			"unaffected restricted→restricted ", "moves symmetric→symmetric "}},
		{"symmetric alone", []netlab.NATType{sym}, FaultSupernode, []string{"moves symmetric→symmetric "}},
		{"only a direct call: none", []netlab.NATType{pr, udp}, FaultSupernode, nil},
		{"caller: port-restricted first", []netlab.NATType{pub, fc, pr}, FaultCaller, []string{"callee-ends port-restricted→port-restricted "}},
		{"caller: public when alone", []netlab.NATType{sym, pub}, FaultCaller, []string{"callee-ends public→public "}},
		{"caller: no direct pair", []netlab.NATType{sym, udp}, FaultCaller, nil},
		{"unknown fault", []netlab.NATType{pub, pr}, "dns", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, f := range FaultCalls(tc.types, tc.fault) {
				got = append(got, fmt.Sprintf("%s %s→%s %s", f.Expect, f.Spec.Caller, f.Spec.Callee, f.Spec.Path))
			}
			if strings.Join(got, "; ") != strings.Join(tc.want, "; ") {
				t.Errorf("FaultCalls(%v, %s) =\n  %q\nwant\n  %q", tc.types, tc.fault, got, tc.want)
			}
		})
	}
}

func TestFaultCallHeld(t *testing.T) {
	moved := FaultCall{Expect: ExpectMoves, TierAtKill: "supernode", TierAfter: "cloud", Recovered: true, GapMS: 2040}
	direct := FaultCall{Expect: ExpectUnaffected, Call: Pair{OK: true, Path: "direct"}, TierAtKill: "direct", TierAfter: "direct", GapMS: 160, NaturalGapMS: 160}
	ended := FaultCall{Expect: ExpectCalleeEnds, TierAtKill: "direct", TierAfter: "none",
		CalleeEnd: &CalleeEnd{CalleeEndedMS: 10400, CalleeEndReason: "lost", CalleeState: "ended", CalleeAcceptsNewCall: true}}
	with := func(fc FaultCall, f func(*FaultCall)) FaultCall {
		if fc.CalleeEnd != nil {
			ce := *fc.CalleeEnd
			fc.CalleeEnd = &ce
		}
		f(&fc)
		return fc
	}
	for _, tc := range []struct {
		name string
		fc   FaultCall
		want bool
	}{
		{"moved", moved, true},
		{"moved, degraded by the caller's verdict", with(moved, func(f *FaultCall) { f.Call.OK = false }), true},
		{"moved with a 3.0 s gap", with(moved, func(f *FaultCall) { f.GapMS = 3000 }), true},
		{"moved with a 3.02 s gap", with(moved, func(f *FaultCall) { f.GapMS = 3020 }), false},
		{"stayed on the dead tier", with(moved, func(f *FaultCall) { f.TierAfter = "supernode" }), false},
		{"no tier after", with(moved, func(f *FaultCall) { f.TierAfter = "none" }), false},
		{"not on the killed tier at the kill", with(moved, func(f *FaultCall) { f.TierAtKill = "cloud" }), false},
		{"never heard again", with(moved, func(f *FaultCall) { f.Recovered = false }), false},
		{"direct unaffected", direct, true},
		{"direct with a gap", with(direct, func(f *FaultCall) { f.GapMS = 900 }), false},
		{"callee ended, new call taken", ended, true},
		{"callee ended at 12.0 s", with(ended, func(f *FaultCall) { f.CalleeEndedMS = 12000 }), true},
		{"callee ended at 12.1 s", with(ended, func(f *FaultCall) { f.CalleeEndedMS = 12100 }), false},
		{"callee never ended", with(ended, func(f *FaultCall) { f.CalleeEndedMS = -1 }), false},
		{"callee busy for the new call", with(ended, func(f *FaultCall) { f.CalleeAcceptsNewCall = false }), false},
		{"callee-ends without a measurement", FaultCall{Expect: ExpectCalleeEnds}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.fc.Held(FaultSupernode); got != tc.want {
				t.Errorf("Held = %v, want %v: %s", got, tc.want, tc.fc.summary(FaultSupernode, 3000))
			}
		})
	}
}

// TestFaultJSON pins the fault object's keys: tier_after on every call,
// the callee's fields flat on a caller fault's calls and absent on the
// others.
func TestFaultJSON(t *testing.T) {
	rep := FaultReport{Killed: FaultCaller, KilledAfterMS: 3001, Calls: []FaultCall{
		{Expect: ExpectCalleeEnds, Call: Pair{Caller: "port-restricted", Callee: "port-restricted"}, TierAtKill: "direct", TierAfter: "none",
			CalleeEnd: &CalleeEnd{CalleeEndedMS: -1, CalleeState: "active", NewCall: &Pair{Error: "busy"}}},
		{Expect: ExpectMoves, Call: Pair{Caller: "symmetric", Callee: "symmetric"}, TierAtKill: "supernode", TierAfter: "cloud"},
	}}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Calls []map[string]json.RawMessage `json:"calls"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	common := []string{"expect", "call", "tier_at_kill", "tier_after", "gap_ms", "recovered"}
	callee := []string{"callee_ended_ms", "callee_end_reason", "callee_accepts_new_call", "new_call"}
	for i, keys := range [][]string{append(common, callee...), common} {
		for _, k := range keys {
			if _, ok := got.Calls[i][k]; !ok {
				t.Errorf("call %d lacks %q: %s", i, k, b)
			}
		}
	}
	for _, k := range callee {
		if _, ok := got.Calls[1][k]; ok {
			t.Errorf("a supernode fault call has %q: %s", k, b)
		}
	}
	if s := string(got.Calls[0]["callee_ended_ms"]); s != "-1" {
		t.Errorf("callee_ended_ms = %s, want -1", s)
	}
}

func TestIncomingFrom(t *testing.T) {
	calls := []daemonCall{
		{ID: "1", Peer: "port-restricted-a", Direction: "incoming", State: "ended", StartedMS: 100},
		{ID: "2", Peer: "port-restricted-a", Direction: "incoming", State: "active", StartedMS: 200},
		{ID: "3", Peer: "port-restricted-a", Direction: "outgoing", State: "active", StartedMS: 250},
		{ID: "4", Peer: "public-a", Direction: "incoming", State: "active", StartedMS: 260},
		{ID: "5", Peer: "port-restricted-a", Direction: "incoming", State: "ringing", StartedMS: 400},
	}
	if c, ok := incomingFrom(calls, "port-restricted-a", 300); !ok || c.ID != "2" {
		t.Errorf("incomingFrom before 300 = %+v, %v; want call 2", c, ok)
	}
	if _, ok := incomingFrom(calls, "symmetric-a", 1000); ok {
		t.Error("incomingFrom found a call from nobody")
	}
}

func TestReadUnclosedWAV(t *testing.T) {
	// The canonical header as a writer leaves it before Close: RIFF and
	// data sizes still placeholders.
	hdr := []byte("RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\xbb\x00\x00\x00\x77\x01\x00\x02\x00\x10\x00data\xff\xff\xff\xff")
	b := append(hdr, 0x01, 0x00, 0xff, 0xff, 0x00, 0x80, 0x07) // 1, -1, -32768 and half a sample
	path := filepath.Join(t.TempDir(), "heard.wav")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if raw, s := readUnclosedWAV(path, 10); len(raw) != len(b) || fmt.Sprint(s) != "[1 -1 -32768]" {
		t.Errorf("readUnclosedWAV = %d bytes, %v", len(raw), s)
	}
	if _, s := readUnclosedWAV(path, 2); fmt.Sprint(s) != "[1 -1]" {
		t.Errorf("readUnclosedWAV with limit 2 = %v", s)
	}
	if complete(path) {
		t.Error("complete() on an unclosed WAV")
	}
	os.WriteFile(path, []byte("not a wav"), 0o644)
	if raw, s := readUnclosedWAV(path, 10); raw != nil || s != nil {
		t.Errorf("readUnclosedWAV of a non-WAV = %v, %v", raw, s)
	}
}

// TestWaitCalleeEnd runs waitCalleeEnd against a stand-in for a callee's
// control API on a unix socket: a call that ends, timed by the daemon's
// ended_ms, and one that never does.
func TestWaitCalleeEnd(t *testing.T) {
	home := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(home, node.SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls []daemonCall
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/calls" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(calls)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	callee := &device{handle: "port-restricted-b", home: home}
	set := func(cs ...daemonCall) {
		mu.Lock()
		defer mu.Unlock()
		calls = cs
	}

	t.Run("ends", func(t *testing.T) {
		killedAt := time.Now()
		k := killedAt.UnixMilli()
		old := daemonCall{ID: "old", Peer: "port-restricted-a", Direction: "incoming", State: "ended", Reason: "hung up", StartedMS: k - 60000, EndedMS: k - 50000}
		live := daemonCall{ID: "live", Peer: "port-restricted-a", Direction: "incoming", State: "active", StartedMS: k - 5000}
		set(old, live)
		time.AfterFunc(300*time.Millisecond, func() {
			live.State, live.Reason, live.EndedMS = "ended", "lost", k+250
			set(old, live)
		})
		ce := waitCalleeEnd(context.Background(), "port-restricted-a", callee, killedAt)
		if ce.CalleeEndedMS != 250 || ce.CalleeEndReason != "lost" || ce.CalleeState != "ended" || ce.CalleeError != "" {
			t.Errorf("waitCalleeEnd = %+v, want ended after 250 ms, reason lost", ce)
		}
	})
	t.Run("never ends", func(t *testing.T) {
		// A kill so long ago that the wait is nearly over.
		killedAt := time.Now().Add(-calleeEndWait + 300*time.Millisecond)
		set(daemonCall{ID: "stuck", Peer: "port-restricted-a", Direction: "incoming", State: "active", StartedMS: killedAt.UnixMilli() - 5000})
		ce := waitCalleeEnd(context.Background(), "port-restricted-a", callee, killedAt)
		if ce.CalleeEndedMS != -1 || ce.CalleeState != "active" || ce.CalleeEndReason != "" {
			t.Errorf("waitCalleeEnd = %+v, want -1, still active", ce)
		}
		if !strings.Contains(ce.describe(), "had not ended") {
			t.Errorf("describe() = %q", ce.describe())
		}
	})
}

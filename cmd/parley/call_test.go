package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-net/parley/media"
	"github.com/parley-net/parley/node"
)

// TestCallByHandle is the README's call: two daemons, bob answering
// unattended, alice calling with a tone; bob's WAV and Ogg Opus recordings
// must hold that tone, the Ogg one as decoded by opusdec, a decoder nobody
// here wrote.
func TestCallByHandle(t *testing.T) {
	root := t.TempDir()
	sn := startProc(t, "--home", root+"/sn", "supernode", "--stun", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0")
	boot := strings.TrimSpace(sn.waitLine(t, "/p2p/", 30*time.Second))
	mustRun(t, "--home", root+"/alice", "id", "init", "--handle", "alice")
	mustRun(t, "--home", root+"/bob", "id", "init", "--handle", "bob")
	wav, ogg := filepath.Join(root, "heard.wav"), filepath.Join(root, "heard.opus")
	alice := startProc(t, "--home", root+"/alice", "daemon", "--media-loopback", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0")
	bob := startProc(t, "--home", root+"/bob", "daemon", "--media-loopback", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0",
		"--auto-answer", "--out", wav, "--record", ogg)
	alice.waitLine(t, "ready", 30*time.Second)
	bob.waitLine(t, "ready", 30*time.Second)

	out := mustRun(t, "--home", root+"/alice", "call", "bob", "--tone", "440", "--duration", "3s", "--json")
	for _, want := range []string{"ringing", "active: audio after", "direct | path host", "MOS", "ended: hung up"} {
		if !strings.Contains(out, want) {
			t.Fatalf("call output lacks %q:\n%s", want, out)
		}
	}
	if sum := callSummary(t, out); !sum.OK || sum.Tier != "direct" || sum.SetupMS <= 0 {
		t.Fatalf("call summary %+v:\n%s", sum, out)
	}
	// bob's side learns of the hangup over signalling: wait for it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		calls := mustRun(t, "--home", root+"/bob", "calls")
		if strings.Contains(calls, "incoming alice") && strings.Contains(calls, "remote hung up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's calls:\n%s", calls)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The daemon closes the files when the call ends; wait for that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := os.Stat(wav); err == nil && st.Size() > 44+2*media.SampleRate {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no WAV recording of at least a second")
		}
		time.Sleep(100 * time.Millisecond)
	}
	assertTone(t, "WAV sink", wav, 440)

	if _, err := exec.LookPath("opusdec"); err != nil {
		t.Skip("opusdec not installed (Debian: opus-tools); skipping the independent Ogg Opus decode")
	}
	dec := filepath.Join(root, "decoded.wav")
	if out, err := exec.Command("opusdec", "--quiet", ogg, dec).CombinedOutput(); err != nil {
		t.Fatalf("opusdec refused our recording: %v\n%s", err, out)
	}
	assertTone(t, "Ogg Opus decoded by opusdec", dec, 440)
}

// assertTone checks that hz dominates a WAV file's second half-second to
// 1.5 s: a Goertzel power at hz at least 100 times that at the other probes.
func assertTone(t *testing.T, what, path string, hz float64) {
	t.Helper()
	src, err := media.OpenWAVSource(path)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer src.Close()
	pcm, err := media.ReadAll(src, media.SampleRate*3/2)
	if err != nil || len(pcm) < media.SampleRate*3/2 {
		t.Fatalf("%s: %d samples, %v", what, len(pcm), err)
	}
	x := pcm[media.SampleRate/2:]
	target := goertzel(x, hz)
	for _, other := range []float64{hz / 2, hz * 0.75, hz * 1.25, hz * 2} {
		if p := goertzel(x, other); p*100 > target {
			t.Fatalf("%s: power at %.0f Hz (%.3g) is not far below %.0f Hz (%.3g)", what, other, p, hz, target)
		}
	}
}

func goertzel(x []int16, hz float64) float64 {
	k := 2 * math.Cos(2*math.Pi*hz/media.SampleRate)
	var s1, s2 float64
	for _, v := range x {
		s1, s2 = float64(v)+k*s1-s2, s1
	}
	return s1*s1 + s2*s2 - k*s1*s2
}

// TestCallerKilledCalleeEnds: the caller's daemon is SIGKILLed in the middle
// of a call; the callee hears neither media nor signalling, ends the call
// as "lost" within 12 s (10 s of silence, then a tick), is free for the next
// call at once, and the restarted caller's new call connects.
func TestCallerKilledCalleeEnds(t *testing.T) {
	root := t.TempDir()
	sn := startProc(t, "--home", root+"/sn", "supernode", "--stun", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0")
	boot := strings.TrimSpace(sn.waitLine(t, "/p2p/", 30*time.Second))
	mustRun(t, "--home", root+"/alice", "id", "init", "--handle", "alice")
	mustRun(t, "--home", root+"/bob", "id", "init", "--handle", "bob")
	aliceArgs := []string{"--home", root + "/alice", "daemon", "--media-loopback", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0"}
	alice := startProc(t, aliceArgs...)
	bob := startProc(t, "--home", root+"/bob", "daemon", "--media-loopback", "--bootstrap", boot, "--listen", "/ip4/127.0.0.1/tcp/0", "--auto-answer")
	alice.waitLine(t, "ready", 30*time.Second)
	bob.waitLine(t, "ready", 30*time.Second)

	call := startProc(t, "--home", root+"/alice", "call", "bob", "--tone", "440", "--duration", "60s")
	call.waitLine(t, "MOS", 20*time.Second)
	alice.cmd.Process.Signal(syscall.SIGKILL)
	<-alice.done
	killed := time.Now()
	for {
		calls := mustRun(t, "--home", root+"/bob", "calls")
		if strings.Contains(calls, "incoming alice") && strings.Contains(calls, "(lost)") {
			t.Logf("callee ended the call %s after the caller died", time.Since(killed).Round(10*time.Millisecond))
			break
		}
		if time.Since(killed) > 12*time.Second {
			t.Fatalf("callee's call not ended as lost 12 s after the caller died:\n%s", calls)
		}
		time.Sleep(100 * time.Millisecond)
	}
	alice = startProc(t, aliceArgs...)
	alice.waitLine(t, "ready", 30*time.Second)
	out := mustRun(t, "--home", root+"/alice", "call", "bob", "--tone", "440", "--duration", "2s", "--json")
	if sum := callSummary(t, out); !sum.OK {
		t.Fatalf("a new call to the callee whose last caller died:\n%s", out)
	}
}

// callSummary is the JSON line `parley call --json` ends out with.
func callSummary(t *testing.T, out string) node.CallSummary {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var sum node.CallSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatalf("the last line of parley call --json is not its summary: %v\n%s", err, out)
	}
	return sum
}

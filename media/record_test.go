package media

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/thesyncim/gopus/container/ogg"

	"github.com/parley-net/parley/internal/nodetest"
)

// TestRecordingOggOpus records a call and checks the Ogg Opus file: its
// structure with gopus's Ogg reader, and its audio by decoding it with
// opusdec (opus-tools), an Opus decoder nobody here wrote.
func TestRecordingOggOpus(t *testing.T) {
	check := nodetest.LeakCheck(t)
	defer check()

	const frames = 100 // 2 s
	path := filepath.Join(t.TempDir(), "call.opus")
	realTime(t, func() (struct{}, uint64) {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		c := newCall(t,
			Config{Source: LimitSource(SpeechLikeSource(11), frames)},
			Config{Recorder: f, JitterStart: 100 * time.Millisecond},
		)
		c.connect(t)
		waitClosed(t, c.b.FirstAudio(), 10*time.Second, "first audio at b")
		// Let the whole signal through, then hang up.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for c.b.Stats().PacketsReceived < frames+10 {
			select {
			case <-ctx.Done():
				t.Fatalf("only %d packets received", c.b.Stats().PacketsReceived)
			case <-time.After(20 * time.Millisecond):
			}
		}
		skipped := disturbances(c.a.Stats(), c.b.Stats())
		c.close(t, c.a)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return struct{}{}, skipped
	})

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ogg.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("ogg.NewReader: %v", err)
	}
	if r.Channels() != 1 || r.PreSkip() == 0 {
		t.Errorf("OpusHead: %d channels, pre-skip %d", r.Channels(), r.PreSkip())
	}
	var packets int
	var last uint64
	for {
		p, granule, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("packet %d: %v", packets, err)
		}
		if granule < last || packetSamples(p) == 0 {
			t.Fatalf("packet %d: granule %d after %d, %d samples", packets, granule, last, packetSamples(p))
		}
		last = granule
		packets++
	}
	if packets < frames || last < frames*FrameSamples {
		t.Errorf("%d packets, final granule %d; want >= %d frames", packets, last, frames)
	}

	opusdec, err := exec.LookPath("opusdec")
	if err != nil {
		t.Skip("opusdec not on PATH; install opus-tools (apt-get install -y opus-tools) to check the recording with an independent decoder")
	}
	wav := filepath.Join(t.TempDir(), "call.wav")
	out, err := exec.Command(opusdec, "--quiet", "--rate", "48000", "--no-dither", path, wav).CombinedOutput()
	if err != nil {
		t.Fatalf("opusdec: %v\n%s", err, out)
	}
	ws, err := OpenWAVSource(wav)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	decoded, err := ReadAll(ws, math.MaxInt32)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := ReadAll(LimitSource(SpeechLikeSource(11), frames), frames*FrameSamples)
	if err != nil {
		t.Fatal(err)
	}
	peak, lag := Correlation(sent, decoded, SampleRate/2)
	t.Logf("opusdec: %d samples; correlation %.3f at lag %v", len(decoded), peak, samplesDuration(lag))
	if peak < 0.9 {
		t.Errorf("opusdec output correlates %.3f with what was sent, want >= 0.9", peak)
	}
}

// TestRecordingKeepsTimeline checks that lost and concealed frames are
// recorded as 20 ms lost-frame packets, so the file's timeline matches
// playout.
func TestRecordingKeepsTimeline(t *testing.T) {
	tests := []struct {
		in   byte
		want byte
	}{
		{9<<3 | 0, 9 << 3},         // SILK WB 20 ms
		{11<<3 | 1, 9 << 3},        // SILK WB 60 ms, code 1 → 20 ms code 0
		{12 << 3, 13 << 3},         // Hybrid SWB 10 ms → 20 ms
		{16<<3 | 4 | 3, 19<<3 | 4}, // CELT NB 2.5 ms stereo code 3 → 20 ms stereo
		{31 << 3, 31 << 3},         // CELT FB 20 ms
	}
	for _, tc := range tests {
		got := lostFrame([]byte{tc.in, 1, 2})
		if len(got) != 1 || got[0] != tc.want || packetSamples(got) != FrameSamples {
			t.Errorf("lostFrame(%08b) = %08b (%d samples), want %08b", tc.in, got, packetSamples(got), tc.want)
		}
	}
	if got := lostFrame(nil); packetSamples(got) != FrameSamples {
		t.Errorf("lostFrame(nil) = %x: %d samples", got, packetSamples(got))
	}
}

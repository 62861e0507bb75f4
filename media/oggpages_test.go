package media

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thesyncim/gopus/container/ogg"
)

// readPages splits an Ogg stream into its pages.
func readPages(t *testing.T, b []byte) []*ogg.Page {
	t.Helper()
	var pages []*ogg.Page
	for len(b) > 0 {
		p, n, err := ogg.ParsePage(b)
		if err != nil {
			t.Fatalf("page %d: %v", len(pages), err)
		}
		pages, b = append(pages, p), b[n:]
	}
	return pages
}

func TestOggPagerPages(t *testing.T) {
	cases := []struct {
		name    string
		sizes   []int // packet sizes written
		wantAud int   // audio pages wanted
	}{
		{"no audio", nil, 1}, // just the end-of-stream page, with no packet and granule 0
		{"one packet", []int{80}, 1},
		{"a second", repeat(80, 50), 1},
		{"a second and one", repeat(80, 51), 2},
		{"three seconds", repeat(60, 150), 3},
		{"lacing limit", repeat(600, 120), 3}, // 3 lacing values each: 85 a page
		{"odd sizes", []int{0, 1, 254, 255, 256, 510, 511, 0, 7}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			pg := newOggPager(&out)
			// Pages arrive a byte at a time: the pager must not care.
			w, err := ogg.NewWriter(byteWriter{pg}, SampleRate, 1)
			if err != nil {
				t.Fatal(err)
			}
			var sent [][]byte
			for i, n := range tc.sizes {
				p := bytes.Repeat([]byte{byte(i)}, n)
				sent = append(sent, p)
				if err := w.WritePacket(p, FrameSamples); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			pages := readPages(t, out.Bytes())
			if len(pages) != 2+tc.wantAud {
				t.Fatalf("%d pages, want 2 header pages and %d audio pages", len(pages), tc.wantAud)
			}
			if !bytes.HasPrefix(pages[0].Payload, []byte("OpusHead")) || !pages[0].IsBOS() || !bytes.HasPrefix(pages[1].Payload, []byte("OpusTags")) {
				t.Fatal("header pages changed")
			}
			var got [][]byte
			for i, p := range pages {
				if p.PageSequence != uint32(i) || p.SerialNumber != pages[0].SerialNumber {
					t.Fatalf("page %d: sequence %d, serial %08x", i, p.PageSequence, p.SerialNumber)
				}
				if i < 2 {
					continue
				}
				pkts := p.Packets()
				got = append(got, pkts...)
				if len(pkts) > maxPacketsPerPage || len(p.Segments) > 255 {
					t.Fatalf("page %d: %d packets, %d lacing values", i, len(pkts), len(p.Segments))
				}
				// RFC 7845 §4: the granule position counts the samples of
				// every packet completed on this page and before it.
				if want := uint64(len(got) * FrameSamples); p.GranulePos != want {
					t.Fatalf("page %d: granule %d, want %d", i, p.GranulePos, want)
				}
				last := i == len(pages)-1
				if p.IsEOS() != last {
					t.Fatalf("page %d of %d: EOS %v", i, len(pages), p.IsEOS())
				}
				if last && len(tc.sizes) > 0 && len(pkts) == 0 {
					t.Fatal("the final page holds no packet")
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(sent) {
				t.Fatalf("packets changed on the way: %d in, %d out", len(sent), len(got))
			}
		})
	}
}

// byteWriter writes to w one byte at a time.
type byteWriter struct{ w io.Writer }

func (b byteWriter) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := b.w.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}

func TestOggPagerRefusesWhatItCannotRepage(t *testing.T) {
	var a, b bytes.Buffer
	for _, w := range []*bytes.Buffer{&a, &b} {
		ow, err := ogg.NewWriter(w, SampleRate, 1)
		if err != nil {
			t.Fatal(err)
		}
		ow.WritePacket([]byte{1, 2, 3}, FrameSamples)
	}
	pg := newOggPager(&bytes.Buffer{})
	if _, err := pg.Write(a.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Write(b.Bytes()); err == nil { // another serial number
		t.Fatal("a second logical stream was accepted")
	}
	if _, err := pg.Write([]byte("OggS")); err == nil {
		t.Fatal("a write after an error was accepted")
	}
}

// TestOggPagerOpusinfo has opusinfo (opus-tools), which checks Ogg Opus
// files against RFC 7845, read a repaged recording of real Opus and find
// nothing to warn about, and opusdec decode all of it.
func TestOggPagerOpusinfo(t *testing.T) {
	opusinfo, err := exec.LookPath("opusinfo")
	if err != nil {
		t.Skip("opusinfo not on PATH; install opus-tools (apt-get install -y opus-tools)")
	}
	enc, err := newEncoder(32000, false, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rec.opus")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ogg.NewWriter(newOggPager(f), SampleRate, 1)
	if err != nil {
		t.Fatal(err)
	}
	src := SpeechLikeSource(3)
	frame, pkt := make([]int16, FrameSamples), make([]byte, maxOpusPacket)
	const frames = 120 // 2.4 s: pages of 50, 50 and 20 packets
	for i := 0; i < frames; i++ {
		if err := src.ReadFrame(frame); err != nil {
			t.Fatal(err)
		}
		n, err := enc.encode(frame, pkt)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(pkt[:n], FrameSamples); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(opusinfo, path).CombinedOutput()
	if err != nil {
		t.Fatalf("opusinfo: %v\n%s", err, out)
	}
	for _, bad := range []string{"WARNING", "Warning", "ERROR", "Error"} {
		if strings.Contains(string(out), bad) {
			t.Fatalf("opusinfo finds fault with the recording:\n%s", out)
		}
	}
	if !strings.Contains(string(out), "Total data length") {
		t.Fatalf("opusinfo read no stream:\n%s", out)
	}
	t.Logf("opusinfo:\n%s", out)
}

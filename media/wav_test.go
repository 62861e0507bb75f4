package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// encodeWAV writes frames (each a slice of per-channel samples in [-1, 1])
// in the given format, optionally with a WAVE_FORMAT_EXTENSIBLE header and
// a LIST chunk before the data, as other programs write them.
func encodeWAV(f WAVFormat, extensible, listChunk bool, frames [][]float64) []byte {
	var data bytes.Buffer
	for _, fr := range frames {
		for _, v := range fr {
			switch {
			case f.Float && f.BitsPerSample == 32:
				_ = binary.Write(&data, binary.LittleEndian, float32(v))
			case f.Float:
				_ = binary.Write(&data, binary.LittleEndian, v)
			case f.BitsPerSample == 8:
				data.WriteByte(byte(math.Round(v*127) + 128))
			case f.BitsPerSample == 16:
				_ = binary.Write(&data, binary.LittleEndian, int16(math.Round(v*32767)))
			case f.BitsPerSample == 24:
				x := int32(math.Round(v * 8388607))
				data.Write([]byte{byte(x), byte(x >> 8), byte(x >> 16)})
			default:
				_ = binary.Write(&data, binary.LittleEndian, int32(math.Round(v*2147483647)))
			}
		}
	}
	tag := uint16(wavFormatPCM)
	if f.Float {
		tag = wavFormatIEEE
	}
	var fmtChunk bytes.Buffer
	le := func(v any) { _ = binary.Write(&fmtChunk, binary.LittleEndian, v) }
	block := f.Channels * f.BitsPerSample / 8
	if extensible {
		le(uint16(wavExtensibleTag))
	} else {
		le(tag)
	}
	le(uint16(f.Channels))
	le(uint32(f.SampleRate))
	le(uint32(f.SampleRate * block))
	le(uint16(block))
	le(uint16(f.BitsPerSample))
	if extensible {
		le(uint16(22))
		le(uint16(f.BitsPerSample))
		le(uint32(0))
		le(tag)
		fmtChunk.Write(wavGUIDSuffix)
	}
	var out bytes.Buffer
	chunk := func(id string, body []byte) {
		out.WriteString(id)
		_ = binary.Write(&out, binary.LittleEndian, uint32(len(body)))
		out.Write(body)
		if len(body)%2 == 1 {
			out.WriteByte(0)
		}
	}
	out.WriteString("RIFF\x00\x00\x00\x00WAVE")
	chunk("fmt ", fmtChunk.Bytes())
	if listChunk {
		chunk("LIST", []byte("INFOISFT\x05\x00\x00\x00test\x00"))
	}
	chunk("data", data.Bytes())
	b := out.Bytes()
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

// toneFrames returns seconds of a sine at hz, the same on every channel.
func toneFrames(rate, channels int, hz, amp, seconds float64) [][]float64 {
	n := int(float64(rate) * seconds)
	frames := make([][]float64, n)
	for i := range frames {
		v := amp * math.Sin(2*math.Pi*hz*float64(i)/float64(rate))
		fr := make([]float64, channels)
		for c := range fr {
			fr[c] = v
		}
		frames[i] = fr
	}
	return frames
}

func readAllWAV(t *testing.T, b []byte) []int16 {
	t.Helper()
	src, err := NewWAVSource(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("NewWAVSource: %v", err)
	}
	out, err := ReadAll(src, math.MaxInt32)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return out
}

func maxAbsDiff(a, b []int16) int {
	d := 0
	for i := range min(len(a), len(b)) {
		d = max(d, abs(int(a[i])-int(b[i])))
	}
	return d
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TestWAVFormats decodes a 48 kHz tone in every supported encoding.
func TestWAVFormats(t *testing.T) {
	want, err := ReadAll(mustTone(t, 1000, 0.5), SampleRate/2)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		f          WAVFormat
		extensible bool
		tolerance  int // in 16-bit steps
	}{
		{"8-bit unsigned", WAVFormat{SampleRate, 1, 8, false}, false, 300},
		{"16-bit", WAVFormat{SampleRate, 1, 16, false}, false, 2},
		{"16-bit stereo extensible", WAVFormat{SampleRate, 2, 16, false}, true, 2},
		{"24-bit", WAVFormat{SampleRate, 1, 24, false}, false, 1},
		{"32-bit", WAVFormat{SampleRate, 3, 32, false}, false, 1},
		{"float32", WAVFormat{SampleRate, 1, 32, true}, false, 1},
		{"float64 6 channels extensible", WAVFormat{SampleRate, 6, 64, true}, true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeWAV(tc.f, tc.extensible, true, toneFrames(SampleRate, tc.f.Channels, 1000, 0.5, 0.5))
			src, err := NewWAVSource(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if src.Format() != tc.f {
				t.Errorf("format %+v, want %+v", src.Format(), tc.f)
			}
			got, err := ReadAll(src, math.MaxInt32)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d samples, want %d", len(got), len(want))
			}
			if d := maxAbsDiff(got, want); d > tc.tolerance {
				t.Errorf("max difference %d, want <= %d", d, tc.tolerance)
			}
		})
	}
}

func mustTone(t testing.TB, hz, amp float64) Source {
	t.Helper()
	s, err := ToneSource(hz, amp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWAVResample reads other sample rates and checks the 48 kHz result
// against the ideal signal: same length, same level, same waveform.
func TestWAVResample(t *testing.T) {
	tests := []struct {
		name     string
		rate     int
		channels int
		hz       float64
	}{
		{"8 kHz mono", 8000, 1, 440},
		{"16 kHz mono", 16000, 1, 1500},
		{"44.1 kHz stereo", 44100, 2, 1000},
		{"96 kHz stereo", 96000, 2, 3000},
		{"odd 22050 Hz", 22050, 1, 700},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const seconds = 1.0
			b := encodeWAV(WAVFormat{tc.rate, tc.channels, 16, false}, false, false,
				toneFrames(tc.rate, tc.channels, tc.hz, 0.5, seconds))
			got := readAllWAV(t, b)
			want, err := ReadAll(mustTone(t, tc.hz, 0.5), SampleRate)
			if err != nil {
				t.Fatal(err)
			}
			wantLen := int(seconds * SampleRate)
			if len(got) < wantLen-FrameSamples || len(got) > wantLen+FrameSamples {
				t.Errorf("%d samples, want %d ± one frame", len(got), wantLen)
			}
			// Skip the edges, where the input starts and stops abruptly.
			mid := got[2400 : len(got)-2400]
			peak, lag := Correlation(want[2400:len(want)-2400], mid, 10)
			if peak < 0.999 || lag != 0 {
				t.Errorf("correlation %.5f at lag %d, want >= 0.999 at 0", peak, lag)
			}
			if r := frameRMS(mid) / frameRMS(want[2400:len(want)-2400]); math.Abs(r-1) > 0.01 {
				t.Errorf("level ratio %.4f, want 1 ± 1%%", r)
			}
		})
	}
}

// TestWAVResampleSpeechRoundTrip takes the speech-like signal down to
// 44.1 kHz stereo with the resampler, stores it, and reads it back up to
// 48 kHz.
func TestWAVResampleSpeechRoundTrip(t *testing.T) {
	orig, err := ReadAll(SpeechLikeSource(9), 2*SampleRate)
	if err != nil {
		t.Fatal(err)
	}
	rs := newResampler(SampleRate, 44100)
	in := make([]float64, len(orig))
	for i, v := range orig {
		in[i] = float64(v) / 32768
	}
	rs.push(in)
	rs.finish()
	down := make([]float64, len(orig))
	down = down[:rs.pull(down)]
	frames := make([][]float64, len(down))
	for i, v := range down {
		frames[i] = []float64{v, v}
	}
	got := readAllWAV(t, encodeWAV(WAVFormat{44100, 2, 16, false}, false, false, frames))
	peak, lag := Correlation(orig, got, 100)
	t.Logf("%d → %d → %d samples; correlation %.5f at lag %d", len(orig), len(down), len(got), peak, lag)
	if peak < 0.99 || lag != 0 {
		t.Errorf("correlation %.5f at lag %d, want >= 0.99 at 0", peak, lag)
	}
}

// TestWAVSinkRoundTrip writes with WAVSink and reads back with WAVSource.
func TestWAVSinkRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.wav")
	sink, err := CreateWAVSink(path)
	if err != nil {
		t.Fatal(err)
	}
	src := SpeechLikeSource(4)
	var want []int16
	frame := make([]int16, FrameSamples)
	for range 50 {
		if err := src.ReadFrame(frame); err != nil {
			t.Fatal(err)
		}
		want = append(want, frame...)
		if err := sink.WriteFrame(frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sink.WriteFrame(frame); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteFrame after Close: %v, want ErrClosed", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != wavHeaderSize+2*len(want) {
		t.Fatalf("file is %d bytes, want %d", len(b), wavHeaderSize+2*len(want))
	}
	if !bytes.Equal(b[:wavHeaderSize], wavHeader(uint32(2*len(want)))) {
		t.Errorf("header %x, want %x", b[:wavHeaderSize], wavHeader(uint32(2*len(want))))
	}
	ws, err := OpenWAVSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	got, err := ReadAll(ws, math.MaxInt32)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(got, want); len(got) != len(want) || d != 0 {
		t.Errorf("read back %d samples (max diff %d), want %d identical", len(got), d, len(want))
	}
}

func TestWAVRejects(t *testing.T) {
	good := encodeWAV(WAVFormat{SampleRate, 1, 16, false}, false, false, toneFrames(SampleRate, 1, 440, 0.5, 0.01))
	patch := func(off int, v ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short", good[:10]},
		{"not RIFF", patch(0, 'R', 'I', 'F', 'X')},
		{"not WAVE", patch(8, 'A', 'V', 'I', ' ')},
		{"ADPCM", patch(20, 2, 0)},
		{"0 channels", patch(22, 0, 0)},
		{"100 channels", patch(22, 100, 0)},
		{"rate 0", patch(24, 0, 0, 0, 0)},
		{"12-bit", patch(34, 12, 0)},
		{"block align", patch(32, 3, 0)},
		{"huge fmt", patch(16, 0xff, 0xff, 0, 0)},
		{"data before fmt", []byte("RIFF\x10\x00\x00\x00WAVEdata\x00\x00\x00\x00")},
		{"truncated chunk", good[:40]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewWAVSource(bytes.NewReader(tc.in)); !errors.Is(err, ErrWAVFormat) {
				t.Errorf("NewWAVSource: %v, want ErrWAVFormat", err)
			}
		})
	}
}

// FuzzWAVSource feeds arbitrary bytes to the WAV reader: it must return an
// error or samples, never panic or run away.
func FuzzWAVSource(f *testing.F) {
	tone := toneFrames(8000, 2, 440, 0.5, 0.05)
	f.Add(encodeWAV(WAVFormat{8000, 2, 16, false}, false, true, tone))
	f.Add(encodeWAV(WAVFormat{44100, 1, 24, false}, true, false, toneFrames(44100, 1, 440, 0.5, 0.02)))
	f.Add(encodeWAV(WAVFormat{SampleRate, 1, 32, true}, false, false, toneFrames(SampleRate, 1, 440, 0.5, 0.02)))
	f.Add(encodeWAV(WAVFormat{1000, 1, 8, false}, false, false, toneFrames(1000, 1, 100, 0.5, 0.1)))
	f.Add([]byte("RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\xbb\x00\x00\x00\x77\x01\x00\x02\x00\x10\x00data\xff\xff\xff\xff\x01\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := NewWAVSource(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrWAVFormat) {
				t.Fatalf("error %v does not wrap ErrWAVFormat", err)
			}
			return
		}
		// No more output than the input can produce at the lowest rate.
		limit := len(data)*SampleRate/wavMinRate + 2*FrameSamples
		frame := make([]int16, FrameSamples)
		n := 0
		for {
			err := src.ReadFrame(frame)
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("ReadFrame: %v", err)
			}
			if n += FrameSamples; n > limit {
				t.Fatalf("more than %d samples from %d bytes", limit, len(data))
			}
		}
	})
}

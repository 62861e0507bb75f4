package media

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
)

// WAV input limits. Anything outside them is rejected with ErrWAVFormat
// rather than guessed at.
const (
	wavMaxChannels    = 64
	wavMinRate        = 1000
	wavMaxRate        = 768000
	wavMaxFmtChunk    = 1024 // fmt is 16, 18 or 40 bytes in practice
	wavMaxChunksSkip  = 256  // LIST, fact, bext, … before "data"
	wavReadFrames     = 1024 // input frames decoded per read
	wavExtensibleTag  = 0xFFFE
	wavFormatPCM      = 1
	wavFormatIEEE     = 3
	wavStreamingSize  = 0xFFFFFFFF // data size of a stream written without seeking
	wavHeaderSize     = 44
	wavSinkBufferSize = 8 * FrameSamples * 2
)

// ErrWAVFormat is returned for WAV input this package cannot read: not
// RIFF/WAVE, an unsupported encoding, or a malformed header.
var ErrWAVFormat = errors.New("media: unsupported or malformed WAV")

// wavGUIDSuffix is the tail shared by the KSDATAFORMAT_SUBTYPE_PCM and
// _IEEE_FLOAT GUIDs of WAVE_FORMAT_EXTENSIBLE.
var wavGUIDSuffix = []byte{0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71}

// WAVFormat describes the encoding of a WAV file's samples.
type WAVFormat struct {
	SampleRate    int  // frames per second
	Channels      int  // interleaved channels per frame
	BitsPerSample int  // container size: 8, 16, 24, 32 (PCM) or 32, 64 (float)
	Float         bool // IEEE float samples rather than integer PCM
}

// WAVSource reads a RIFF/WAVE stream and yields it as a Source: channels are
// averaged to mono and the rate is converted to 48 kHz. PCM of 8 (unsigned),
// 16, 24 and 32 bits and IEEE float of 32 and 64 bits are accepted, including
// WAVE_FORMAT_EXTENSIBLE headers. The last partial frame is zero-padded; then
// ReadFrame returns io.EOF.
type WAVSource struct {
	format WAVFormat
	r      io.Reader
	closer io.Closer
	left   int64 // data bytes left; -1 = until EOF
	block  int   // bytes per input frame

	raw  []byte
	mono []float64
	rs   *resampler
	out  []float64 // resampled samples not yet returned
	eof  bool
}

// OpenWAVSource opens the WAV file at path. Close closes the file.
func OpenWAVSource(path string) (*WAVSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("media: open WAV source: %w", err)
	}
	s, err := NewWAVSource(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.closer = f
	return s, nil
}

// NewWAVSource parses the WAV header from r and returns a Source reading the
// samples that follow. r is read sequentially; it need not be seekable.
func NewWAVSource(r io.Reader) (*WAVSource, error) {
	br := bufio.NewReaderSize(r, 16<<10)
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w: reading RIFF header: %w", ErrWAVFormat, err)
	}
	if string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return nil, fmt.Errorf("%w: not a RIFF/WAVE stream", ErrWAVFormat)
	}
	s := &WAVSource{r: br}
	haveFmt := false
	for chunks := 0; ; chunks++ {
		if chunks > wavMaxChunksSkip {
			return nil, fmt.Errorf("%w: more than %d chunks before data", ErrWAVFormat, wavMaxChunksSkip)
		}
		var ch [8]byte
		if _, err := io.ReadFull(br, ch[:]); err != nil {
			return nil, fmt.Errorf("%w: reading chunk header: %w", ErrWAVFormat, err)
		}
		id := string(ch[0:4])
		size := binary.LittleEndian.Uint32(ch[4:8])
		switch id {
		case "fmt ":
			if haveFmt {
				return nil, fmt.Errorf("%w: duplicate fmt chunk", ErrWAVFormat)
			}
			if size < 16 || size > wavMaxFmtChunk {
				return nil, fmt.Errorf("%w: fmt chunk of %d bytes", ErrWAVFormat, size)
			}
			buf := make([]byte, size+size&1)
			if _, err := io.ReadFull(br, buf); err != nil {
				return nil, fmt.Errorf("%w: reading fmt chunk: %w", ErrWAVFormat, err)
			}
			f, err := parseWAVFmt(buf[:size])
			if err != nil {
				return nil, err
			}
			s.format = f
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, fmt.Errorf("%w: data chunk before fmt chunk", ErrWAVFormat)
			}
			s.left = int64(size)
			if size == wavStreamingSize || size == 0 {
				s.left = -1
			}
			s.block = s.format.Channels * s.format.BitsPerSample / 8
			s.raw = make([]byte, wavReadFrames*s.block)
			s.mono = make([]float64, wavReadFrames)
			if s.format.SampleRate != SampleRate {
				s.rs = newResampler(s.format.SampleRate, SampleRate)
			}
			return s, nil
		default:
			skip := int64(size) + int64(size&1)
			if n, err := io.CopyN(io.Discard, br, skip); err != nil {
				return nil, fmt.Errorf("%w: skipping %q chunk (%d of %d bytes): %w", ErrWAVFormat, id, n, skip, err)
			}
		}
	}
}

func parseWAVFmt(b []byte) (WAVFormat, error) {
	tag := binary.LittleEndian.Uint16(b[0:2])
	f := WAVFormat{
		Channels:      int(binary.LittleEndian.Uint16(b[2:4])),
		SampleRate:    int(binary.LittleEndian.Uint32(b[4:8])),
		BitsPerSample: int(binary.LittleEndian.Uint16(b[14:16])),
	}
	blockAlign := int(binary.LittleEndian.Uint16(b[12:14]))
	if tag == wavExtensibleTag {
		if len(b) < 40 {
			return f, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE fmt chunk of %d bytes", ErrWAVFormat, len(b))
		}
		if !bytes.Equal(b[26:40], wavGUIDSuffix) {
			return f, fmt.Errorf("%w: unknown extensible sub-format", ErrWAVFormat)
		}
		tag = binary.LittleEndian.Uint16(b[24:26])
	}
	switch tag {
	case wavFormatPCM:
		switch f.BitsPerSample {
		case 8, 16, 24, 32:
		default:
			return f, fmt.Errorf("%w: %d-bit PCM", ErrWAVFormat, f.BitsPerSample)
		}
	case wavFormatIEEE:
		f.Float = true
		if f.BitsPerSample != 32 && f.BitsPerSample != 64 {
			return f, fmt.Errorf("%w: %d-bit float", ErrWAVFormat, f.BitsPerSample)
		}
	default:
		return f, fmt.Errorf("%w: format tag %#x (only PCM and IEEE float)", ErrWAVFormat, tag)
	}
	if f.Channels < 1 || f.Channels > wavMaxChannels {
		return f, fmt.Errorf("%w: %d channels", ErrWAVFormat, f.Channels)
	}
	if f.SampleRate < wavMinRate || f.SampleRate > wavMaxRate {
		return f, fmt.Errorf("%w: sample rate %d Hz", ErrWAVFormat, f.SampleRate)
	}
	if blockAlign != f.Channels*f.BitsPerSample/8 {
		return f, fmt.Errorf("%w: block align %d for %d channels of %d bits", ErrWAVFormat, blockAlign, f.Channels, f.BitsPerSample)
	}
	return f, nil
}

// Format reports the encoding of the file being read.
func (s *WAVSource) Format() WAVFormat { return s.format }

// ReadFrame implements Source.
func (s *WAVSource) ReadFrame(frame []int16) error {
	if len(frame) != FrameSamples {
		return ErrFrameSize
	}
	for len(s.out) < FrameSamples {
		if s.eof {
			if len(s.out) == 0 {
				return io.EOF
			}
			break
		}
		if err := s.fill(); err != nil {
			return err
		}
	}
	n := min(len(s.out), FrameSamples)
	for i := range n {
		frame[i] = clamp16(s.out[i] * 32768)
	}
	clear(frame[n:])
	s.out = s.out[n:]
	return nil
}

// fill decodes one block of input into s.out.
func (s *WAVSource) fill() error {
	want := int64(len(s.raw))
	if s.left >= 0 {
		want = min(want, s.left-s.left%int64(s.block))
	}
	var n int
	var err error
	if want > 0 {
		n, err = io.ReadFull(s.r, s.raw[:want])
	}
	if s.left >= 0 {
		s.left -= int64(n)
	}
	frames := n / s.block
	ended := want == 0 || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	if err != nil && !ended {
		return fmt.Errorf("media: reading WAV data: %w", err)
	}
	mono := s.mono[:frames]
	s.decode(s.raw[:frames*s.block], mono)
	if s.rs == nil {
		s.out = append(s.out, mono...)
	} else {
		s.rs.push(mono)
		if ended {
			s.rs.finish()
		}
		var tmp [2048]float64
		for {
			k := s.rs.pull(tmp[:])
			s.out = append(s.out, tmp[:k]...)
			if k < len(tmp) {
				break
			}
		}
	}
	if ended {
		s.eof = true
	}
	return nil
}

// decode converts interleaved frames to mono floats in [-1, 1).
func (s *WAVSource) decode(raw []byte, mono []float64) {
	ch := s.format.Channels
	bps := s.format.BitsPerSample / 8
	scale := 1 / float64(ch)
	for i := range mono {
		var acc float64
		for c := range ch {
			p := raw[(i*ch+c)*bps:]
			var v float64
			switch {
			case s.format.Float && bps == 4:
				v = float64(math.Float32frombits(binary.LittleEndian.Uint32(p)))
			case s.format.Float:
				v = math.Float64frombits(binary.LittleEndian.Uint64(p))
			case bps == 1:
				v = (float64(p[0]) - 128) / 128
			case bps == 2:
				v = float64(int16(binary.LittleEndian.Uint16(p))) / (1 << 15)
			case bps == 3:
				x := int32(uint32(p[0])<<8|uint32(p[1])<<16|uint32(p[2])<<24) >> 8
				v = float64(x) / (1 << 23)
			default:
				v = float64(int32(binary.LittleEndian.Uint32(p))) / (1 << 31)
			}
			if math.IsNaN(v) {
				v = 0
			}
			acc += max(-1, min(1, v))
		}
		mono[i] = acc * scale
	}
}

// Close closes the file opened by OpenWAVSource; for NewWAVSource it does
// nothing.
func (s *WAVSource) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// WAVSink writes 16-bit 48 kHz mono WAV. The RIFF and data sizes are written
// as placeholders and fixed up by Close, which is why it needs a seekable
// writer. It is safe for concurrent use.
type WAVSink struct {
	mu     sync.Mutex
	w      io.WriteSeeker
	closer io.Closer
	bw     *bufio.Writer
	data   int64 // data bytes written
	buf    []byte
	closed bool
	err    error
}

// CreateWAVSink creates (or truncates) the file at path. Close fixes up the
// header and closes the file.
func CreateWAVSink(path string) (*WAVSink, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("media: create WAV sink: %w", err)
	}
	s, err := NewWAVSink(f)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	s.closer = f
	return s, nil
}

// NewWAVSink writes a WAV header to w, which must be positioned at the start
// of the file. Close fixes up the header but does not close w.
func NewWAVSink(w io.WriteSeeker) (*WAVSink, error) {
	s := &WAVSink{w: w, bw: bufio.NewWriterSize(w, wavSinkBufferSize)}
	if _, err := s.bw.Write(wavHeader(0)); err != nil {
		return nil, fmt.Errorf("media: writing WAV header: %w", err)
	}
	return s, nil
}

// wavHeader returns the canonical 44-byte header for dataBytes of 16-bit
// 48 kHz mono PCM.
func wavHeader(dataBytes uint32) []byte {
	h := make([]byte, wavHeaderSize)
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], 36+dataBytes)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], wavFormatPCM)
	binary.LittleEndian.PutUint16(h[22:], 1)
	binary.LittleEndian.PutUint32(h[24:], SampleRate)
	binary.LittleEndian.PutUint32(h[28:], SampleRate*2)
	binary.LittleEndian.PutUint16(h[32:], 2)
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], dataBytes)
	return h
}

// WriteFrame implements Sink. Any number of samples is accepted.
func (s *WAVSink) WriteFrame(frame []int16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.err != nil {
		return s.err
	}
	// Stay inside the 4 GiB RIFF limit.
	if s.data+int64(2*len(frame)) > math.MaxUint32-wavHeaderSize {
		s.err = fmt.Errorf("media: WAV sink full (4 GiB RIFF limit)")
		return s.err
	}
	s.buf = s.buf[:0]
	for _, v := range frame {
		s.buf = binary.LittleEndian.AppendUint16(s.buf, uint16(v))
	}
	if _, err := s.bw.Write(s.buf); err != nil {
		s.err = fmt.Errorf("media: writing WAV data: %w", err)
		return s.err
	}
	s.data += int64(len(s.buf))
	return nil
}

// Close flushes, fixes the header sizes, and closes the file if the sink
// created it.
func (s *WAVSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.bw.Flush()
	if err == nil {
		_, err = s.w.Seek(0, io.SeekStart)
	}
	if err == nil {
		_, err = s.w.Write(wavHeader(uint32(s.data)))
	}
	if err == nil {
		_, err = s.w.Seek(0, io.SeekEnd)
	}
	if s.closer != nil {
		err = errors.Join(err, s.closer.Close())
	}
	if err != nil {
		return fmt.Errorf("media: closing WAV sink: %w", err)
	}
	return nil
}

package media

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/thesyncim/gopus/container/ogg"
)

// maxPacketsPerPage is how many Opus packets a recording page holds at most:
// a second of 20 ms frames. A page also holds at most 255 lacing values
// (RFC 3533 §6).
const maxPacketsPerPage = 50

// oggPager repages the Ogg Opus stream that gopus's ogg.Writer writes. That
// writer puts one packet on each page (27 bytes of page header for every
// 20 ms packet, a quarter of a low-bitrate stream) and ends the stream with
// a page that holds no packet but a positive granule position, which RFC
// 7845 §4 does not allow (opusinfo: "page with no completed packets").
// oggPager passes the header pages through, gathers audio packets into pages
// of up to maxPacketsPerPage, and writes the last packet on the final page,
// flagged end-of-stream. So a recording lags by at most a second of audio,
// and a crash loses at most that second.
//
// It expects what ogg.Writer writes: one logical stream, no packet spanning
// pages. Write returns an error for anything else.
type oggPager struct {
	w       io.Writer
	in      []byte    // the start of a page not yet complete
	pending []oggUnit // audio not yet written
	audio   bool      // an audio (or the end) page has come
	seq     uint32    // the next page sequence number written
	serial  uint32
	err     error // sticky
}

// oggUnit is the packets of one page read, and the granule position after
// the last of them.
type oggUnit struct {
	packets [][]byte
	granule uint64
}

func (u oggUnit) segments() int {
	n := 0
	for _, p := range u.packets {
		n += len(p)/255 + 1
	}
	return n
}

// newOggPager repages an Ogg Opus stream on its way to w.
func newOggPager(w io.Writer) *oggPager { return &oggPager{w: w} }

var errOggStream = errors.New("ogg recording")

func (o *oggPager) Write(b []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	o.in = append(o.in, b...)
	for {
		n := completePage(o.in)
		if n == 0 {
			break
		}
		p, _, err := ogg.ParsePage(o.in[:n])
		if err == nil {
			err = o.page(p)
		}
		if err != nil {
			o.err = err
			return 0, err
		}
		o.in = append(o.in[:0], o.in[n:]...)
	}
	return len(b), nil
}

// completePage is the length of the page at the start of b, or 0 while b
// does not hold all of it.
func completePage(b []byte) int {
	const header = 27
	if len(b) < header || len(b) < header+int(b[26]) {
		return 0
	}
	n := header + int(b[26])
	for _, s := range b[header:n] {
		n += int(s)
	}
	if len(b) < n {
		return 0
	}
	return n
}

func (o *oggPager) page(p *ogg.Page) error {
	if o.seq == 0 {
		o.serial = p.SerialNumber
	}
	switch {
	case p.SerialNumber != o.serial:
		return fmt.Errorf("%w: a second logical stream (serial %08x)", errOggStream, p.SerialNumber)
	case p.IsContinuation() || (len(p.Segments) > 0 && p.Segments[len(p.Segments)-1] == 255):
		return fmt.Errorf("%w: a packet spans pages", errOggStream)
	case !o.audio && (bytes.HasPrefix(p.Payload, []byte("OpusHead")) || bytes.HasPrefix(p.Payload, []byte("OpusTags"))):
		// The header pages (RFC 7845 §5): as they are.
		p.PageSequence = o.seq
		return o.write(p)
	}
	o.audio = true
	u := oggUnit{packets: p.Packets(), granule: p.GranulePos}
	if len(u.packets) > 0 {
		if n, segs := o.pendingCounts(); n+len(u.packets) > maxPacketsPerPage || segs+u.segments() > 255 {
			if err := o.flush(0); err != nil {
				return err
			}
		}
		o.pending = append(o.pending, u)
	}
	if p.IsEOS() {
		return o.flush(ogg.PageFlagEOS)
	}
	return nil
}

func (o *oggPager) pendingCounts() (packets, segments int) {
	for _, u := range o.pending {
		packets += len(u.packets)
		segments += u.segments()
	}
	return packets, segments
}

// flush writes the pending packets on one page.
func (o *oggPager) flush(flags byte) error {
	p := &ogg.Page{HeaderType: flags, SerialNumber: o.serial, PageSequence: o.seq}
	for _, u := range o.pending {
		for _, pkt := range u.packets {
			p.Segments = append(p.Segments, ogg.BuildSegmentTable(len(pkt))...)
			p.Payload = append(p.Payload, pkt...)
		}
		p.GranulePos = u.granule
	}
	o.pending = o.pending[:0]
	return o.write(p)
}

func (o *oggPager) write(p *ogg.Page) error {
	if _, err := o.w.Write(p.Encode()); err != nil {
		return err
	}
	o.seq++
	return nil
}

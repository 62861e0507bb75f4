package turnrelay

import "encoding/binary"

// chanHeader is the ChannelData header: channel number and length, 16
// bits each (RFC 8656 §12.4).
const chanHeader = 4

// parseChannelData decodes a ChannelData message as it arrives over UDP:
// a channel number in 0x4000-0x7FFF (RFC 5766 §11's range, which pion
// binds and coturn's clients use; RFC 8656 §12 narrowed it to 0x4FFF) and
// a length that fits in the datagram; what follows the payload (padding) is ignored, as pion
// ignores it. payload aliases b.
func parseChannelData(b []byte) (num uint16, payload []byte, ok bool) {
	if len(b) < chanHeader {
		return 0, nil, false
	}
	num = binary.BigEndian.Uint16(b[0:2])
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if num < 0x4000 || num > 0x7FFF || n > len(b)-chanHeader {
		return 0, nil, false
	}
	return num, b[chanHeader : chanHeader+n], true
}

// appendChannelData frames payload as ChannelData on channel num, padded
// to a multiple of 4 bytes as pion pads it.
func appendChannelData(dst []byte, num uint16, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, num)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)))
	dst = append(dst, payload...)
	for len(dst)%4 != 0 {
		dst = append(dst, 0)
	}
	return dst
}

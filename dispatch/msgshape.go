package dispatch

import (
	"encoding/binary"
	"fmt"
)

// maxStateDepth bounds the nesting of a state blob: real ones nest a spec a
// few levels deep.
const maxStateDepth = 64

// checkShape walks a msgpack value without decoding it and refuses one whose
// declared lengths exceed the bytes that remain, or that nests deeper than
// maxStateDepth. The decoder trusts declared lengths (it makes a slice of
// the count a blob claims) and recurses per level, so a 60-byte blob could
// exhaust memory and a deep one the stack: both kill the process, which no
// recover catches. Walked first, a blob costs what its bytes do.
func checkShape(b []byte) error {
	pending := []int{1} // values still to read at each open level
	for i := 0; len(pending) > 0; {
		if pending[len(pending)-1] == 0 {
			pending = pending[:len(pending)-1]
			continue
		}
		pending[len(pending)-1]--
		if i >= len(b) {
			return fmt.Errorf("truncated at byte %d", i)
		}
		c := b[i]
		i++
		// n: bytes of payload that follow the header; items: values nested.
		var n, items int
		size := func(w int) (int, error) { // a big-endian length of w bytes
			if len(b)-i < w {
				return 0, fmt.Errorf("truncated at byte %d", i)
			}
			var v uint64
			switch w {
			case 1:
				v = uint64(b[i])
			case 2:
				v = uint64(binary.BigEndian.Uint16(b[i:]))
			case 4:
				v = uint64(binary.BigEndian.Uint32(b[i:]))
			}
			i += w
			if v > uint64(len(b)-i) {
				return 0, fmt.Errorf("a length of %d at byte %d, with %d bytes left", v, i-w-1, len(b)-i)
			}
			return int(v), nil
		}
		var err error
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3: // fixints, nil, bools
		case c >= 0x80 && c <= 0x8f:
			items = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			items = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			n = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9: // bin8, str8
			n, err = size(1)
		case c == 0xc5 || c == 0xda:
			n, err = size(2)
		case c == 0xc6 || c == 0xdb:
			n, err = size(4)
		case c == 0xc7, c == 0xc8, c == 0xc9: // ext: length, then a type byte
			if n, err = size(1 << (c - 0xc7)); err == nil {
				n++
			}
		case c == 0xca, c == 0xce, c == 0xd2:
			n = 4
		case c == 0xcb, c == 0xcf, c == 0xd3:
			n = 8
		case c == 0xcc, c == 0xd0:
			n = 1
		case c == 0xcd, c == 0xd1:
			n = 2
		case c >= 0xd4 && c <= 0xd8: // fixext 1..16, plus a type byte
			n = 1<<(c-0xd4) + 1
		case c == 0xdc:
			items, err = size(2)
		case c == 0xdd:
			items, err = size(4)
		case c == 0xde:
			if items, err = size(2); err == nil {
				items *= 2
			}
		case c == 0xdf:
			if items, err = size(4); err == nil {
				items *= 2
			}
		default:
			return fmt.Errorf("byte %d: 0x%02x starts no msgpack value", i-1, c)
		}
		if err != nil {
			return err
		}
		if len(b)-i < n {
			return fmt.Errorf("truncated at byte %d", i)
		}
		i += n
		if items > 0 {
			if items > len(b)-i { // each value takes at least a byte
				return fmt.Errorf("%d values declared at byte %d, with %d bytes left", items, i, len(b)-i)
			}
			if len(pending) >= maxStateDepth {
				return fmt.Errorf("nested deeper than %d levels", maxStateDepth)
			}
			pending = append(pending, items)
		}
	}
	return nil
}

package sidecar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/rewarm/rewarm/dispatch"
)

// DefaultMaxFrame caps a frame's payload unless the server is told otherwise:
// the dispatcher's own request limit, so both transports refuse alike.
const DefaultMaxFrame = dispatch.DefaultMaxRequest

// HeaderSize is the length prefix: a big-endian uint32 payload size.
const HeaderSize = 4

// ErrFrameTooLarge reports a length prefix above the configured maximum; the
// error is a *FrameTooLargeError.
var ErrFrameTooLarge = errors.New("frame too large")

// FrameTooLargeError carries the refused frame's declared size.
type FrameTooLargeError struct{ Size, Max uint32 }

func (e *FrameTooLargeError) Error() string {
	// Worded as the dispatcher's own refusal, so both transports say the same.
	return fmt.Sprintf("%v: %d bytes, the limit is %d", ErrFrameTooLarge, e.Size, e.Max)
}

func (e *FrameTooLargeError) Unwrap() error { return ErrFrameTooLarge }

// ReadHeader reads a length prefix and checks it against max.
func ReadHeader(r io.Reader, max uint32) (uint32, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > max {
		return n, &FrameTooLargeError{Size: n, Max: max}
	}
	return n, nil
}

// firstChunk is what ReadFrame sets aside for a body larger than the given
// buffer before any of it has arrived.
const firstChunk = 64 << 10

// ReadFrame reads one length-prefixed frame, reusing buf when it is large
// enough. A larger body is read into a buffer that at most doubles with the
// bytes received, so a prefix that declares the maximum and then stalls
// costs the server what was sent, not what was declared.
func ReadFrame(r io.Reader, max uint32, buf []byte) ([]byte, error) {
	n, err := ReadHeader(r, max)
	if err != nil {
		return nil, err
	}
	size := int(n)
	if cap(buf) >= size {
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, bodyError(n, err)
		}
		return buf, nil
	}
	buf = make([]byte, 0, min(size, firstChunk))
	for len(buf) < size {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(size-len(buf), len(buf)))
		}
		got, err := io.ReadFull(r, buf[len(buf):min(cap(buf), size)])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, bodyError(n, err)
		}
	}
	return buf, nil
}

func bodyError(n uint32, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("frame body (%d bytes): %w", n, err)
}

// AppendFrame appends the length prefix and payload to dst, so a frame goes
// out in one write.
func AppendFrame(dst, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// Package rewarmgo is the in-process face of rewarm's dispatcher, compiled
// into a CPython extension with gopy.
//
// It follows the measured gopy rules: every function returns (T, error),
// never a bare error (which leaks a C string per call), and bulk data never
// crosses as a Go slice (which copies one element per call). Requests and
// responses are serialized rewarm.v1 messages read from and written into
// buffers the Python caller owns, passed as address and length.
package rewarmgo

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/rewarm/rewarm/dispatch"
)

// ProtocolVersion returns the wire protocol version this extension speaks.
func ProtocolVersion() int { return int(dispatch.ProtocolVersion) }

// Handle is one in-process connection to a private dispatcher.
type Handle struct {
	mu      sync.Mutex
	conn    *dispatch.Conn
	pending []byte
}

// warmOnce runs dispatch.Warm once per process: loading the extension, not
// the first sampler or schedule, pays for the runtime's lazy set-up.
var warmOnce = sync.OnceValue(dispatch.Warm)

// NewHandle starts a dispatcher and a connection to it.
func NewHandle() (*Handle, error) {
	if err := warmOnce(); err != nil {
		return nil, err
	}
	d := dispatch.New(dispatch.Options{Server: "rewarm-inprocess"})
	return &Handle{conn: d.NewConn()}, nil
}

// bytesAt views caller-owned memory as a byte slice. The caller keeps the
// memory alive for the duration of the call; Go never retains the slice.
func bytesAt(addr uintptr, n int) []byte {
	if n == 0 {
		return nil
	}
	// Reinterpret the address without a uintptr-to-pointer conversion that
	// vet flags: this memory belongs to Python, not to the Go heap.
	p := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	return unsafe.Slice((*byte)(p), n)
}

// Call handles the serialized request at (reqAddr, reqLen) and writes the
// serialized response into (outAddr, outCap). It returns the response length.
// When the response does not fit, nothing is written, the response is kept,
// and the result is minus its length: fetch it with Take and a larger buffer.
func (h *Handle) Call(reqAddr uintptr, reqLen int, outAddr uintptr, outCap int) (int, error) {
	if reqLen < 0 || outCap < 0 {
		return 0, fmt.Errorf("rewarmgo: negative length (request %d, buffer %d)", reqLen, outCap)
	}
	if reqLen > 0 && reqAddr == 0 {
		return 0, errors.New("rewarmgo: null request buffer")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	resp := h.conn.HandleFrame(bytesAt(reqAddr, reqLen))
	return h.deliver(resp, outAddr, outCap)
}

// Take writes a response that did not fit the buffer given to Call.
func (h *Handle) Take(outAddr uintptr, outCap int) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending == nil {
		return 0, errors.New("rewarmgo: no pending response")
	}
	return h.deliver(h.pending, outAddr, outCap)
}

func (h *Handle) deliver(resp []byte, outAddr uintptr, outCap int) (int, error) {
	if len(resp) > outCap {
		h.pending = resp
		return -len(resp), nil
	}
	h.pending = nil
	if len(resp) > 0 {
		if outAddr == 0 {
			return 0, errors.New("rewarmgo: null output buffer")
		}
		copy(bytesAt(outAddr, len(resp)), resp)
	}
	return len(resp), nil
}

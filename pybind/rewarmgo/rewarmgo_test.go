package rewarmgo

import (
	"runtime"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// call mimics the Python side: request and response live in caller-owned buffers.
func call(t *testing.T, h *Handle, req *pb.Request, out []byte) (*pb.Response, int) {
	t.Helper()
	in, _ := proto.Marshal(req)
	n, err := h.Call(addr(in), len(in), addr(out), len(out))
	runtime.KeepAlive(in)
	if err != nil {
		t.Fatal(err)
	}
	if n < 0 {
		return nil, n
	}
	var r pb.Response
	if err := proto.Unmarshal(out[:n], &r); err != nil {
		t.Fatal(err)
	}
	return &r, n
}

func TestCallAndTake(t *testing.T) {
	if ProtocolVersion() != int(dispatch.ProtocolVersion) {
		t.Fatal("protocol version mismatch")
	}
	h, err := NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 1<<12)
	r, _ := call(t, h, &pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: dispatch.ProtocolVersion}}}, out)
	if r.GetHello() == nil {
		t.Fatalf("hello: %v", r)
	}
	// An empty request is answered, not crashed on.
	n, err := h.Call(0, 0, addr(out), len(out))
	if err != nil || n <= 0 {
		t.Fatalf("empty request: %d %v", n, err)
	}
	// A response larger than the buffer is kept for Take.
	small := make([]byte, 8)
	_, n = call(t, h, &pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: dispatch.ProtocolVersion}}}, small)
	if n >= 0 {
		t.Fatalf("expected a negative size, got %d", n)
	}
	big := make([]byte, -n)
	got, err := h.Take(addr(big), len(big))
	if err != nil || got != -n {
		t.Fatalf("take: %d %v", got, err)
	}
	var rr pb.Response
	if err := proto.Unmarshal(big[:got], &rr); err != nil || rr.GetHello() == nil {
		t.Fatalf("taken response: %v %v", &rr, err)
	}
	if _, err := h.Take(addr(big), len(big)); err == nil {
		t.Fatal("second Take should fail")
	}
	if _, err := h.Call(0, 5, addr(out), len(out)); err == nil {
		t.Fatal("null request buffer accepted")
	}
	if _, err := h.Call(addr(out), -1, addr(out), len(out)); err == nil {
		t.Fatal("negative length accepted")
	}
}

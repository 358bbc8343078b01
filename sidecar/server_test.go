package sidecar

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

func startServer(t *testing.T, tweak func(*Server)) (string, func()) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{
		Dispatcher: dispatch.New(dispatch.Options{}),
		MaxFrame:   1 << 16,
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if tweak != nil {
		tweak(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, l); close(done) }()
	return path, func() { cancel(); <-done }
}

type client struct {
	t *testing.T
	c net.Conn
}

func dial(t *testing.T, path string) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &client{t, c}
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) recv() (*pb.Response, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := ReadFrame(c.c, 1<<24, nil)
	if err != nil {
		return nil, err
	}
	var r pb.Response
	if err := proto.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *client) call(req *pb.Request) *pb.Response {
	c.t.Helper()
	b, _ := proto.Marshal(req)
	c.sendRaw(AppendFrame(nil, b))
	r, err := c.recv()
	if err != nil {
		c.t.Fatalf("call: %v", err)
	}
	return r
}

func (c *client) hello() {
	c.t.Helper()
	if r := c.call(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: dispatch.ProtocolVersion}}}); r.GetHello() == nil {
		c.t.Fatalf("hello: %v", r)
	}
}

func (c *client) openCosine() uint64 {
	c.t.Helper()
	st, _ := structpb.NewStruct(map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 100.0})
	r := c.call(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	if r.GetSession() == nil {
		c.t.Fatalf("open: %v", r)
	}
	return r.GetSession().GetSessionId()
}

func (c *client) works(id uint64) {
	c.t.Helper()
	r := c.call(&pb.Request{Body: &pb.Request_GetLr{GetLr: &pb.GetLR{SessionId: id, Step: 0, Count: 2}}})
	if v := r.GetLr().GetValues(); len(v) != 2 || v[0] != 1 {
		c.t.Fatalf("get_lr: %v", r)
	}
}

func TestSocketModeAndRoundTrip(t *testing.T) {
	path, stop := startServer(t, nil)
	defer stop()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want socket 0600", fi.Mode())
	}
	c := dial(t, path)
	c.hello()
	c.works(c.openCosine())
}

func TestBadFramesDoNotDisturbOtherClients(t *testing.T) {
	path, stop := startServer(t, func(s *Server) { s.FrameTimeout = 300 * time.Millisecond })
	defer stop()
	good := dial(t, path)
	good.hello()
	id := good.openCosine()

	// Malformed payload: an error response, and the connection stays usable.
	bad := dial(t, path)
	bad.sendRaw(AppendFrame(nil, []byte{0xff, 0xff, 0xff, 0xff}))
	r, err := bad.recv()
	if err != nil || r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_MALFORMED {
		t.Fatalf("malformed: %v %v", r, err)
	}
	bad.hello()
	good.works(id)

	// Oversized frame: an error response, then a clean close.
	big := dial(t, path)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1<<30)
	big.sendRaw(hdr[:])
	r, err = big.recv()
	if err != nil || r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE {
		t.Fatalf("oversized: %v %v", r, err)
	}
	if _, err := big.recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("oversized frame should close the connection, got %v", err)
	}
	good.works(id)

	// A frame over the limit but within reach: the server reads it away,
	// answers, and the connection goes on.
	over := dial(t, path)
	over.hello()
	over.sendRaw(AppendFrame(nil, make([]byte, 1<<16+1)))
	r, err = over.recv()
	if err != nil || r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE ||
		!strings.Contains(r.GetError().GetMessage(), "65537 bytes, the limit is 65536") {
		t.Fatalf("oversized body: %v %v", r, err)
	}
	over.works(over.openCosine())

	// Half-open client: a header promising 100 bytes, then silence.
	slow := dial(t, path)
	binary.BigEndian.PutUint32(hdr[:], 100)
	slow.sendRaw(hdr[:])
	slow.sendRaw([]byte{1, 2, 3})
	if _, err := slow.recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stalled frame should be closed after the frame timeout, got %v", err)
	}
	good.works(id)

	// A request type this server does not know.
	unk := dial(t, path)
	unk.sendRaw(AppendFrame(nil, []byte{0xfa, 0x05, 0x00})) // field 95, empty bytes
	r, err = unk.recv()
	if err != nil || r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_UNIMPLEMENTED {
		t.Fatalf("unknown request: %v %v", r, err)
	}
	good.works(id)
}

func TestConcurrentClients(t *testing.T) {
	path, stop := startServer(t, nil)
	defer stop()
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, path)
			c.hello()
			id := c.openCosine()
			for j := 0; j < 50; j++ {
				c.works(id)
			}
		}()
	}
	wg.Wait()
}

// Servers started at once on one path: exactly one listens, and closing a
// refused one cannot remove the winner's socket.
func TestListenRaceHasOneWinner(t *testing.T) {
	for trial := 0; trial < 20; trial++ {
		path := filepath.Join(t.TempDir(), "s.sock")
		const n = 4
		var wg sync.WaitGroup
		ls := make([]*Listener, n)
		errs := make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ls[i], errs[i] = Listen(path)
			}()
		}
		wg.Wait()
		var won []*Listener
		for i, l := range ls {
			if l != nil {
				won = append(won, l)
			} else if !strings.Contains(errs[i].Error(), "already listening") {
				t.Fatalf("trial %d: %v", trial, errs[i])
			}
		}
		if len(won) != 1 {
			t.Fatalf("trial %d: %d servers listen on one path", trial, len(won))
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("trial %d: the winner is unreachable: %v", trial, err)
		}
		_ = c.Close()
		_ = won[0].Close()
	}
}

// Servers that start and stop on one path over and over never overlap,
// although each removes its lock file on the way out.
func TestListenChurnNeverOverlaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	var holders, won atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				l, err := Listen(path)
				if err != nil {
					if !strings.Contains(err.Error(), "already listening") {
						t.Errorf("Listen: %v", err)
						return
					}
					continue
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d servers hold %s at once", n, path)
				}
				won.Add(1)
				runtime.Gosched()
				holders.Add(-1)
				_ = l.Close()
			}
		}()
	}
	wg.Wait()
	if won.Load() == 0 {
		t.Fatal("no server ever listened")
	}
	if _, err := os.Stat(path + ServeLockSuffix); !os.IsNotExist(err) {
		t.Fatalf("lock file left after the last server closed: %v", err)
	}
}

// Close removes the lock file once: a second Close must not remove the lock
// file of the server that started after the first.
func TestListenerCloseTwiceKeepsNextLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	a, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	b, err := Listen(path)
	if err != nil {
		t.Fatalf("a server after a closed one: %v", err)
	}
	defer b.Close()
	_ = a.Close()
	if _, err := os.Stat(path + ServeLockSuffix); err != nil {
		t.Fatalf("the second server's lock file: %v", err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("a third server beside a live one: %v", err)
	}
}

// A server that holds its lock past Close (to write a final snapshot) keeps
// the next server out until it lets go.
func TestHoldLockKeepsTheNextServerOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	a, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	a.HoldLock()
	_ = a.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left after Close: %v", err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "is held") {
		t.Fatalf("a server started while the lock is held: %v", err)
	}
	a.ReleaseLock()
	if _, err := os.Stat(path + ServeLockSuffix); !os.IsNotExist(err) {
		t.Fatalf("lock file left after ReleaseLock: %v", err)
	}
	b, err := Listen(path)
	if err != nil {
		t.Fatalf("after ReleaseLock: %v", err)
	}
	a.ReleaseLock() // a second release must not touch b's lock
	if _, err := Listen(path); err == nil {
		t.Fatal("a third server beside a live one")
	}
	_ = b.Close()
}

func TestAnotherUserIsToldWhy(t *testing.T) {
	var seen []int
	var mu sync.Mutex
	path, stop := startServer(t, func(s *Server) {
		s.allowUID = func(uid int) bool {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, uid)
			return false
		}
	})
	defer stop()
	c := dial(t, path)
	r := c.call(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: dispatch.ProtocolVersion}}})
	e := r.GetError()
	if e.GetCode() != pb.ErrorCode_ERROR_CODE_PERMISSION_DENIED || !strings.Contains(e.GetMessage(), fmt.Sprintf("runs as uid %d", os.Getuid())) {
		t.Fatalf("refused peer got %v", r)
	}
	// Nothing more is served on that connection.
	if _, err := c.recv(); err == nil {
		t.Fatal("a refused connection stayed open")
	}
	mu.Lock()
	checked := append([]int(nil), seen...)
	mu.Unlock()
	if len(checked) != 1 || checked[0] != os.Getuid() {
		t.Fatalf("uids checked: %v", checked)
	}
	// The Go client reports the server's reason.
	if _, err := Dial(path, "test"); err == nil || !strings.Contains(err.Error(), "serves uid") {
		t.Fatalf("Dial by a refused peer: %v", err)
	}
}

func TestListenStaleAndLiveSocket(t *testing.T) {
	path, stop := startServer(t, nil)
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second server on a live socket: %v", err)
	}
	stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left after shutdown: %v", err)
	}
	// A stale socket file (no listener) is replaced.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	_ = l.Close()
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	_ = l2.Close()
	// A regular file is never removed.
	f := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(f, []byte("x"), 0o600)
	if _, err := Listen(f); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if _, err := Listen("/tmp/" + strings.Repeat("x", 120)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("overlong path: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, []byte("hello")))
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add(AppendFrame(AppendFrame(nil, nil), []byte{1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadFrame(bytes.NewReader(data), 1<<10, nil)
		if err != nil {
			return
		}
		n := binary.BigEndian.Uint32(data)
		if uint32(len(b)) != n || n > 1<<10 || !bytes.Equal(b, data[4:4+n]) {
			t.Fatalf("frame %x from %x", b, data)
		}
	})
}

// A connection keeps its frame buffers for the next request only while they
// are small: 40 idle clients that once sent 15 MiB each held 860 MiB.
func TestLargeFrameBuffersAreNotKept(t *testing.T) {
	small := make([]byte, 100, 4096)
	if got := reusable(small); len(got) != 0 || cap(got) != 4096 {
		t.Errorf("a 4 KiB buffer: len %d cap %d, want it kept and emptied", len(got), cap(got))
	}
	if got := reusable(make([]byte, 15<<20)); got != nil {
		t.Errorf("a 15 MiB buffer kept (cap %d)", cap(got))
	}
}

// A length prefix is a claim, not bytes: a client that declares 16 MiB and
// sends 10 bytes must not make the server hold 16 MiB (a few hundred such
// connections, each stalled, would take gigabytes). The buffer grows with
// the bytes that arrive; a whole frame still reads back intact.
func TestReadFrameAllocatesForTheBytesThatArrive(t *testing.T) {
	const declared = 16 << 20
	stalled := append(binary.BigEndian.AppendUint32(nil, declared), make([]byte, 10)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := ReadFrame(bytes.NewReader(stalled), declared, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame cut short: %v", err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("10 bytes of a declared %d allocated %d bytes", declared, got)
	}
	payload := make([]byte, 5<<20+3)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	got, err := ReadFrame(bytes.NewReader(AppendFrame(nil, payload)), declared, nil)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("a whole 5 MiB frame: %d bytes, %v", len(got), err)
	}
	small := make([]byte, 0, 64)
	got, err = ReadFrame(bytes.NewReader(AppendFrame(nil, []byte("hello"))), declared, small)
	if err != nil || string(got) != "hello" || &got[0] != &small[:1][0] {
		t.Fatalf("a frame that fits the given buffer: %q, %v (reused: %v)", got, err, err == nil && &got[0] == &small[:1][0])
	}
}

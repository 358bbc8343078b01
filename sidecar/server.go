// Package sidecar serves rewarm's dispatcher on a Unix socket.
//
// Each frame is a 4-byte big-endian length followed by a serialized
// rewarm.v1.Request; the reply uses the same framing. One connection carries
// one client (one training process): requests on it are answered in order.
package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// maxDrain bounds the oversized body the server reads away to answer it.
const maxDrain = 256 << 20

// MaxSocketPath is the longest filesystem socket path Linux accepts
// (sun_path is 108 bytes including the terminating NUL).
const MaxSocketPath = 107

// Server answers framed requests on a listener. It admits only peers of its
// own uid (read with SO_PEERCRED); another's first request is answered
// PERMISSION_DENIED and the connection closed.
type Server struct {
	Dispatcher *dispatch.Dispatcher
	// MaxFrame caps a request's payload (DefaultMaxFrame when 0).
	MaxFrame uint32
	// FrameTimeout bounds reading one frame once its first byte arrived, and
	// writing one reply, so a slow or half-open client cannot pin a handler
	// (30 s when 0).
	FrameTimeout time.Duration
	// IdleTimeout closes a connection with no request for this long (0: never).
	IdleTimeout time.Duration
	Log         *slog.Logger
	// allowUID admits a peer by uid (the server's own uid when nil); tests
	// stand in another user with it.
	allowUID func(uid int) bool

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	lastSeen time.Time
	wg       sync.WaitGroup
}

// Idle reports how long the server has had no connection (0 while one is
// open, and before Serve starts).
func (s *Server) Idle() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) > 0 || s.lastSeen.IsZero() {
		return 0
	}
	return time.Since(s.lastSeen)
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// ServeLockSuffix names the lock file a server holds beside its socket.
const ServeLockSuffix = ".serve.lock"

// Listener is a Unix socket listener that holds the lock file beside its
// socket for as long as it is open, so two servers cannot both start on one
// path. Closing it removes the socket file and the lock file, then releases
// the lock (unless HoldLock was called).
type Listener struct {
	*net.UnixListener
	lock      *os.File
	lockPath  string
	holdLock  bool
	closeOnce sync.Once
	closeErr  error
	lockOnce  sync.Once
}

// HoldLock makes Close leave the lock held until ReleaseLock: for a server
// with work to finish after it stops listening (a final snapshot), during
// which no new server may start on the path.
func (l *Listener) HoldLock() { l.holdLock = true }

// ReleaseLock removes the lock file and releases the lock; only the first
// call acts, so it cannot remove the lock file of the next server.
func (l *Listener) ReleaseLock() {
	l.lockOnce.Do(func() {
		// Removed while still held: a server that opened the old file and
		// takes the lock after this finds it unlinked and starts over.
		_ = os.Remove(l.lockPath)
		_ = l.lock.Close()
	})
}

// Close stops listening and removes the socket file, then releases the lock
// unless HoldLock was called. Only the first call acts.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.UnixListener.Close()
		if !l.holdLock {
			l.ReleaseLock()
		}
	})
	return l.closeErr
}

// Listen creates a Unix socket at path with mode 0600 (no chmod race: the
// umask is set around bind). The umask is the process's: a file or directory
// another goroutine creates during that bind loses its group, other and
// execute bits, so a program that embeds the server should call Listen before
// it starts such work. A stale socket file left by a dead server is
// removed; a live one is an error. The check and the bind run under an
// exclusive lock on path + ".serve.lock" (not ".lock", which the Python
// spawner holds while it starts a server), held until the listener is closed: two
// servers started at once cannot both pass the check.
func Listen(path string) (*Listener, error) {
	if len(path) > MaxSocketPath {
		return nil, fmt.Errorf("socket path is %d bytes, the limit is %d: %s", len(path), MaxSocketPath, path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
	}
	lockPath := path + ServeLockSuffix
	lock, err := lockFile(lockPath)
	if err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("a server is already listening on %s (or starting there: %s is held)", path, lockPath)
		}
		return nil, err
	}
	l, err := listenLocked(path)
	if err != nil {
		_ = os.Remove(lockPath)
		_ = lock.Close()
		return nil, err
	}
	return &Listener{UnixListener: l, lock: lock, lockPath: lockPath}, nil
}

// lockFile takes an exclusive lock on the file at path, creating it, without
// waiting. Holders remove the file before they release it, so a lock taken on
// a file that is no longer the one at path is worthless: then it starts over.
func lockFile(path string) (*os.File, error) {
	for range 100 {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open the socket's lock file: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, err
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		held, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("stat %s: %w", path, err)
		}
		if now, err := os.Stat(path); err == nil && os.SameFile(held, now) {
			return f, nil
		}
		_ = f.Close()
	}
	return nil, fmt.Errorf("lock %s: it was replaced 100 times while being locked", path)
}

func listenLocked(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("a server is already listening on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	return l, nil
}

// Serve accepts connections until ctx is cancelled, then closes the listener
// (removing the socket file), closes open connections and waits up to 5 s
// for their handlers (logging any still running). It returns nil once
// stopped.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	s.conns = map[net.Conn]struct{}{}
	s.lastSeen = time.Now()
	s.mu.Unlock()
	// The listener is closed here, not only on cancel, and Serve waits for
	// it: a *Listener releases its lock in Close, and a server started on
	// the same path right after Serve returns must find the lock free.
	stop := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		select {
		case <-ctx.Done():
		case <-stop:
		}
		_ = l.Close()
	}()
	defer func() { close(stop); <-closed }()
	var tempDelay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			// Out of file descriptors and similar: back off, keep serving.
			if tempDelay == 0 {
				tempDelay = 5 * time.Millisecond
			} else if tempDelay < time.Second {
				tempDelay *= 2
			}
			s.logger().Warn("accept failed", "err", err, "retry_in", tempDelay)
			time.Sleep(tempDelay)
			continue
		}
		tempDelay = 0
		s.track(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.serveConn(c)
		}()
	}
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.logger().Warn("handlers still running at shutdown")
	}
	return nil
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSeen = time.Now()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
		_ = c.Close()
	}
}

func (s *Server) serveConn(c net.Conn) {
	log := s.logger()
	maxFrame := s.MaxFrame
	if maxFrame == 0 {
		maxFrame = DefaultMaxFrame
	}
	frameTimeout := s.FrameTimeout
	if frameTimeout == 0 {
		frameTimeout = 30 * time.Second
	}
	if uc, ok := c.(*net.UnixConn); ok {
		uid, err := peerUID(uc)
		allow := s.allowUID
		if allow == nil {
			allow = func(uid int) bool { return uid == os.Getuid() }
		}
		if err != nil || !allow(uid) {
			log.Warn("refused connection from another user", "peer_uid", uid, "err", err)
			s.refuse(c, maxFrame, frameTimeout, uid, err)
			return
		}
	}
	conn := s.Dispatcher.NewConn()
	defer conn.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	var (
		buf []byte
		out []byte
	)
	for {
		var idle time.Time
		if s.IdleTimeout > 0 {
			idle = time.Now().Add(s.IdleTimeout)
		}
		_ = c.SetReadDeadline(idle)
		if _, err := r.Peek(1); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("connection closed while idle", "err", err)
			}
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(frameTimeout))
		frame, err := ReadFrame(r, maxFrame, buf)
		if err != nil {
			var big *FrameTooLargeError
			if !errors.As(err, &big) {
				log.Debug("read frame failed", "err", err)
				return
			}
			log.Warn("refused oversized frame", "err", err)
			// The client is still sending the body: read it away (up to a
			// bound) so it gets this error rather than a broken pipe, and the
			// connection stays usable.
			drained := big.Size <= maxDrain
			if drained {
				_, derr := io.CopyN(io.Discard, r, int64(big.Size))
				drained = derr == nil
			}
			if !s.reply(c, frameTimeout, errorFrame(pb.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, err.Error())) || !drained {
				return
			}
			continue
		}
		out = AppendFrame(out[:0], conn.HandleFrame(frame))
		ok := s.reply(c, frameTimeout, out)
		buf, out = reusable(frame), reusable(out)
		if !ok {
			return
		}
	}
}

// keepBuffer is the largest frame buffer a connection keeps for its next
// request: one 15 MiB request (or an 8 MiB reply) must not hold that much
// for as long as the connection stays open.
const keepBuffer = 1 << 20

// reusable empties b for the next frame, or drops it if it is large.
func reusable(b []byte) []byte {
	if cap(b) > keepBuffer {
		return nil
	}
	return b[:0]
}

// refuse answers a refused peer's first request with PERMISSION_DENIED, so
// it learns why rather than seeing a dropped connection. Nothing of the
// request is read but its frame.
func (s *Server) refuse(c net.Conn, maxFrame uint32, timeout time.Duration, uid int, err error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	if _, rerr := ReadFrame(bufio.NewReader(c), maxFrame, nil); rerr != nil {
		return
	}
	why := fmt.Sprintf("this sidecar serves uid %d only; the connecting process runs as uid %d", os.Getuid(), uid)
	if err != nil {
		why = fmt.Sprintf("this sidecar serves uid %d only and could not read the connecting process's uid: %v", os.Getuid(), err)
	}
	s.reply(c, timeout, errorFrame(pb.ErrorCode_ERROR_CODE_PERMISSION_DENIED, why))
}

func (s *Server) reply(c net.Conn, timeout time.Duration, frame []byte) bool {
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(frame); err != nil {
		s.logger().Debug("write reply failed", "err", err)
		return false
	}
	return true
}

func errorFrame(code pb.ErrorCode, msg string) []byte {
	b, _ := proto.Marshal(&pb.Response{Body: &pb.Response_Error{Error: &pb.Error{Code: code, Message: msg}}})
	return AppendFrame(nil, b)
}

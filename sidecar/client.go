package sidecar

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// Client is a minimal Go client, for rewarm ctl and tests.
type Client struct {
	c  net.Conn
	r  *bufio.Reader
	id uint64
}

// Dial connects to a sidecar and performs the handshake.
func Dial(path, client string) (*Client, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the sidecar at %s: %w", path, err)
	}
	cl := &Client{c: c, r: bufio.NewReader(c)}
	resp, err := cl.Call(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: dispatch.ProtocolVersion, Client: client}}})
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	if e := resp.GetError(); e != nil {
		_ = c.Close()
		return nil, fmt.Errorf("handshake: %s", e.GetMessage())
	}
	return cl, nil
}

// Call sends one request and returns its response. It sets req.Id, allows
// 30 s for the round trip, and returns a server-side refusal inside the
// Response (its Error body), not as the error, which is for the transport.
func (c *Client) Call(req *pb.Request) (*pb.Response, error) {
	c.id++
	req.Id = c.id
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.c.Write(AppendFrame(nil, b)); err != nil {
		return nil, err
	}
	frame, err := ReadFrame(c.r, 1<<30, nil)
	if err != nil {
		return nil, err
	}
	resp := &pb.Response{}
	if err := proto.Unmarshal(frame, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// DefaultSocketPath is where a sidecar for run id listens when no path is
// given: a 0700 directory under $XDG_RUNTIME_DIR, or under the system temp
// dir named for the uid, namespaced by the torchelastic run id, and kept
// within the 107-byte socket path limit.
func DefaultSocketPath(runID string) (string, error) {
	if runID == "" {
		runID = "default"
	}
	dir := ""
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
		dir = filepath.Join(x, "rewarm")
	} else {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("rewarm-%d", os.Getuid()))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is accessible to other users (mode %v); it must be 0700", dir, fi.Mode().Perm())
	}
	path := filepath.Join(dir, "rewarm-"+runID+".sock")
	if len(path) > MaxSocketPath {
		sum := sha256.Sum256([]byte(runID))
		path = filepath.Join(dir, "rw-"+hex.EncodeToString(sum[:8])+".sock")
	}
	if len(path) > MaxSocketPath {
		return "", fmt.Errorf("socket directory %s is too long for a socket path; set XDG_RUNTIME_DIR or pass --socket", dir)
	}
	return path, nil
}

package sidecar

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// SnapshotFile is the name of the sidecar's state file in its state dir.
const SnapshotFile = "sidecar.snapshot"

// Snapshots writes one state dir's snapshots one at a time, so a snapshot
// taken earlier never lands over a newer one.
type Snapshots struct {
	Dir string
	mu  sync.Mutex
}

// Write snapshots d into the dir.
func (s *Snapshots) Write(d *dispatch.Dispatcher) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeSnapshot(s.Dir, d)
}

// WriteControl saves d with control c queued, then calls commit (which
// queues it in d) before any other snapshot can be taken, so the file never
// loses an acknowledged control nor holds a refused one. It is
// dispatch.Options.OnControl for a sidecar with a state dir.
func (s *Snapshots) WriteControl(d *dispatch.Dispatcher, c *pb.Control, commit func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	blob, err := d.SnapshotWith(c)
	if err != nil {
		return err
	}
	if err := writeBlob(s.Dir, blob); err != nil {
		return err
	}
	commit()
	return nil
}

// Check makes sure the dir exists and takes files: a sidecar finds out at
// start that snapshots cannot be written, not at its first control.
func (s *Snapshots) Check() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.Dir, SnapshotFile+".check-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, werr := f.Write([]byte("ok"))
	cerr := f.Close()
	_ = os.Remove(name)
	return errors.Join(werr, cerr)
}

// writeSnapshot writes d's state to dir atomically: a temporary file,
// fsync, rename over the old snapshot, fsync of the directory.
// Unexported: every write goes through Snapshots, whose lock orders it
// against WriteControl's write-then-commit.
func writeSnapshot(dir string, d *dispatch.Dispatcher) error {
	blob, err := d.Snapshot()
	if err != nil {
		return err
	}
	return writeBlob(dir, blob)
}

func writeBlob(dir string, blob []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, SnapshotFile+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(blob); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, SnapshotFile)); err != nil {
		return err
	}
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		_ = f.Close()
	}
	return nil
}

// LoadSnapshot restores dir's snapshot into d and reports whether there was
// one. A missing snapshot is not an error (a first start); a corrupt or
// incompatible one is, and is left in place for inspection rather than
// silently reset.
func LoadSnapshot(dir string, d *dispatch.Dispatcher) (bool, error) {
	path := filepath.Join(dir, SnapshotFile)
	blob, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := d.Restore(blob); err != nil {
		return false, fmt.Errorf("%s: %w; move it away to start empty", path, err)
	}
	return true, nil
}

// StateLockFile names the lock file a server holds in its state dir.
const StateLockFile = "serve.lock"

// Lock takes the state dir for this server, without waiting, and removes
// temporary files that a server killed mid-write left there. Hold it from
// before the snapshot is read until after the final one is written: two
// servers sharing a dir, or one started while another stops, would load a
// state that the other then overwrites. The returned func releases it.
func (s *Snapshots) Lock() (release func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(s.Dir, StateLockFile)
	f, err := lockFile(path)
	if err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another server is using this state dir (%s is held)", path)
		}
		return nil, err
	}
	// Only the holder writes here, so any temporary file is a dead writer's.
	for _, pattern := range []string{SnapshotFile + ".tmp-*", SnapshotFile + ".check-*"} {
		stale, _ := filepath.Glob(filepath.Join(s.Dir, pattern))
		for _, name := range stale {
			_ = os.Remove(name)
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = os.Remove(path) // while held: see lockFile
			_ = f.Close()
		})
	}, nil
}

package sidecar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// WriteControl commits a control only once the snapshot holding it is on
// disk; a dir that cannot take the file gets no commit.
func TestWriteControlCommitsOnlyWhatIsOnDisk(t *testing.T) {
	d := dispatch.New(dispatch.Options{})
	c := &pb.Control{Seq: 1, Replan: &pb.Replan{AtStep: 50, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5}}}}

	blocked := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(blocked, []byte("a file where the dir should be"), 0o600); err != nil {
		t.Fatal(err)
	}
	commits := 0
	if err := (&Snapshots{Dir: blocked}).WriteControl(d, c, func() { commits++ }); err == nil || commits != 0 {
		t.Fatalf("unwritable dir: err %v, %d commits; want an error and none", err, commits)
	}

	dir := filepath.Join(t.TempDir(), "state")
	if err := (&Snapshots{Dir: dir}).WriteControl(d, c, func() { commits++ }); err != nil || commits != 1 {
		t.Fatalf("writable dir: err %v, %d commits; want one", err, commits)
	}
	restored := dispatch.New(dispatch.Options{})
	if ok, err := LoadSnapshot(dir, restored); !ok || err != nil {
		t.Fatalf("load: %v %v", ok, err)
	}
	if st := restored.Status(); st.GetControlSeq() != 1 {
		t.Fatalf("restored control_seq %d; want the saved control 1", st.GetControlSeq())
	}
}

// A state dir is held by one server at a time, from before its snapshot is
// read to after its final one is written; taking it clears temporary files
// a killed writer left, and releasing it leaves no lock file behind.
func TestStateDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := &Snapshots{Dir: dir}
	release, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Snapshots{Dir: dir}).Lock(); err == nil || !strings.Contains(err.Error(), "another server is using this state dir") {
		t.Fatalf("a second holder: %v", err)
	}
	stale := filepath.Join(dir, SnapshotFile+".tmp-123")
	if err := os.WriteFile(stale, []byte("half a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	release()
	release() // only the first call acts
	if _, err := os.Stat(filepath.Join(dir, StateLockFile)); !os.IsNotExist(err) {
		t.Fatalf("lock file left after release: %v", err)
	}
	release2, err := s.Lock()
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	defer release2()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("a dead writer's temporary file survived the next lock: %v", err)
	}
}

package specfile

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	y := filepath.Join(dir, "s.yaml")
	j := filepath.Join(dir, "s.json")
	_ = os.WriteFile(y, []byte("kind: cosine\npeak_lr: 3.0e-4\ntotal_steps: 100\nmin_lr: .nan\n"), 0o600)
	_ = os.WriteFile(j, []byte(`{"kind": "cosine", "peak_lr": 0.0003, "total_steps": 100}`), 0o600)
	m, err := Load(y)
	if err != nil || m["kind"] != "cosine" || m["total_steps"] != 100 || !math.IsNaN(m["min_lr"].(float64)) {
		t.Fatalf("yaml: %v %v", m, err)
	}
	m, err = Load(j)
	if err != nil || m["kind"] != "cosine" {
		t.Fatalf("json: %v %v", m, err)
	}
	m, err = Load(`{"kind": "constant", "peak_lr": 1}`)
	if err != nil || m["kind"] != "constant" {
		t.Fatalf("inline: %v %v", m, err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing.yaml"), filepath.Join(dir, "x.txt"), "{not: [yaml"} {
		if _, err := Load(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	empty := filepath.Join(dir, "e.yaml")
	_ = os.WriteFile(empty, []byte(""), 0o600)
	if _, err := Load(empty); err == nil {
		t.Error("empty file accepted")
	}
}

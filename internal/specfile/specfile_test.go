package specfile

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
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

// A JSON file means one spec, as a YAML file (go-yaml refuses a repeated
// key) and Python's load_spec do: a repeated key, at any depth, and data
// after the mapping are refused. The decoder kept the last peak_lr and
// ignored trailing junk, so `rewarm ctl stage --spec` could re-plan a live
// job with a value the user did not mean. Numbers keep their text.
func TestJSONFilesAreReadStrictly(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		`{"kind": "cosine", "peak_lr": 0.1, "peak_lr": 5, "total_steps": 100}`:                      `duplicate key "peak_lr"`,
		`{"kind": "stages", "stages": [{"steps": 10}, {"steps": 5, "steps": 6}]}`:                   `duplicate key "steps" in stages[1]`,
		`{"kind": "cosine", "peak_lr": 0.1, "total_steps": 100} trailing garbage {`:                 "after the top-level mapping",
		`{"kind": "cosine", "peak_lr": 0.1, "total_steps": 100} {"kind": "constant", "peak_lr": 1}`: "after the top-level mapping",
		`[1, 2]`: "expected a mapping",
	}
	for text, want := range cases {
		p := filepath.Join(dir, "s.json")
		_ = os.WriteFile(p, []byte(text), 0o600)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", text, err, want)
		}
	}
	p := filepath.Join(dir, "ok.json")
	_ = os.WriteFile(p, []byte(`{"kind": "stages", "x": null, "stages": [{"steps": 10, "on": true}, []], "peak_lr": 1e-3}`+"\n"), 0o600)
	m, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	st := m["stages"].([]any)
	if m["peak_lr"] != json.Number("1e-3") || m["x"] != nil || st[0].(map[string]any)["on"] != true || len(st[1].([]any)) != 0 {
		t.Fatalf("decoded %#v", m)
	}
}

// Deep nesting is refused at encoding/json's own depth (each level kept its
// whole path: 40,000 levels took 1.7 GB), and a file cut short says so
// rather than a bare EOF.
func TestJSONDepthAndTruncation(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "deep.json")
	_ = os.WriteFile(deep, []byte(`{"a": `+strings.Repeat("[", 40000)+strings.Repeat("]", 40000)+`}`), 0o600)
	if _, err := Load(deep); err == nil || !strings.Contains(err.Error(), "nested deeper than 10000") {
		t.Fatalf("deep: %v", err)
	}
	cut := filepath.Join(dir, "cut.json")
	_ = os.WriteFile(cut, []byte(`{"kind": "cosine", "peak_lr": 1e-3`), 0o600)
	if _, err := Load(cut); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("truncated: %v", err)
	}
}

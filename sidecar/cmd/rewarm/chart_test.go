package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChart(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, data, out string
		code            int
		stderr          string
		flags           []string
	}{
		{"lines", `{"title": "t", "series": [{"name": "a", "x": [0, 1, 2], "y": [1, 2, 3]}]}`, "a.png", 0, "", nil},
		{"bars", `{"bars": true, "series": [{"name": "k", "x": [0, 1], "y": [1, 0.5]}]}`, "b.svg", 0, "", nil},
		{"unknown field", `{"series": [{"name": "a", "x": [0], "y": [1]}], "colour": "red"}`, "c.png", 1, `unknown field "colour"`, nil},
		{"ragged", `{"series": [{"name": "a", "x": [0, 1], "y": [1]}]}`, "d.png", 1, `series "a" has 2 x and 1 y values`, nil},
		{"legend", `{"legend": "bottom left", "series": [{"name": "a", "x": [0], "y": [1]}]}`, "g.png", 0, "", nil},
		{"bad legend", `{"legend": "middle", "series": [{"name": "a", "x": [0], "y": [1]}]}`, "h.png", 1, `legend: "middle"`, nil},
		{"empty", `{"series": []}`, "e.png", 1, "series: empty", nil},
		{"bad extension", `{"series": [{"name": "a", "x": [0], "y": [1]}]}`, "f.jpg", 2, "use a .png or .svg", nil},
		// These used to panic inside the plotting library.
		{"log of zero", `{"log_y": true, "series": [{"name": "a", "x": [0, 1], "y": [1, 0]}]}`, "i.png", 1, `series "a": y[1] = 0: log_y needs values > 0`, nil},
		{"log bars", `{"log_y": true, "bars": true, "series": [{"name": "k", "x": [0], "y": [-2]}]}`, "j.png", 1, "y[0] = -2: log_y", nil},
		{"zero width", `{"series": [{"name": "a", "x": [0], "y": [1]}]}`, "k.png", 2, "--width 0: must be in (0, 200] inches", []string{"--width", "0"}},
		{"huge height", `{"series": [{"name": "a", "x": [0], "y": [1]}]}`, "l.png", 2, "--height 1e+09: must be in", []string{"--height", "1e9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			out := filepath.Join(dir, tc.out)
			args := append([]string{"chart", write(tc.name+".json", tc.data), "-o", out}, tc.flags...)
			code := run(args, &bytes.Buffer{}, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), tc.code, tc.stderr)
			}
			if _, err := os.Stat(out); (err == nil) != (tc.code == 0) {
				t.Fatalf("output %s exists: %v, want %v", out, err == nil, tc.code == 0)
			}
		})
	}
}

// Bars stand at their series' x values, as the spec says: they stood at 0,
// 1, 2 whatever x held. The axis of bars at 100, 200 and 300 is labelled
// there.
func TestChartBarsStandAtTheirX(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "b.json")
	_ = os.WriteFile(data, []byte(`{"bars": true, "series": [{"name": "a", "x": [100, 200, 300], "y": [1, 2, 3]},
		{"name": "b", "x": [100, 200, 300], "y": [2, 1, 2]}]}`), 0o600)
	out := filepath.Join(dir, "b.svg")
	var stderr bytes.Buffer
	if code := run([]string{"chart", data, "-o", out}, &bytes.Buffer{}, &stderr); code != 0 {
		t.Fatalf("rc %d: %s", code, stderr.String())
	}
	svg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, tick := range []string{">100<", ">200<", ">300<"} {
		if !strings.Contains(string(svg), tick) {
			t.Fatalf("no x tick %s in the chart", tick)
		}
	}
}

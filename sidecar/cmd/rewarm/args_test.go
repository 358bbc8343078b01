package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewarm/rewarm/internal/specfile"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/sched"
	"github.com/rewarm/rewarm/sidecar"
)

// runCLI runs the rewarm command line in-process.
func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// A command that takes a fixed number of positional arguments refuses an
// extra one, naming it, instead of silently ignoring the flags after it
// (Go's flag package stops at the first positional argument).
func TestExtraPositionalRefused(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.json")
	if err := os.WriteFile(data, []byte(`{"series": [{"name": "a", "x": [0, 1], "y": [1, 2]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := "{kind: constant, peak_lr: 0.25}"
	sock := filepath.Join(dir, "none.sock")
	for _, args := range [][]string{
		{"show", spec, "extra", "--at", "500"},
		{"show", spec, "--at", "500", "extra"},
		{"show", "--at", "500", spec, "extra"},
		{"plot", spec, "extra", "--steps", "10", "-o", filepath.Join(dir, "a.png")},
		{"chart", data, "extra", "-o", filepath.Join(dir, "b.png")},
		{"plan", "extra", "--layers", "4"},
		{"plan", "--layers", "4", "extra"},
		{"plot-plan", "extra", "-o", filepath.Join(dir, "c.png")},
		{"serve", "extra", "--socket", sock},
		{"ctl", "--socket", sock, "status", "extra"},
		{"ctl", "--socket", sock, "anneal", "extra", "--at-step", "5", "--steps", "3"},
	} {
		_, stderr, code := runCLI(args...)
		if code != 2 || !strings.Contains(stderr, `unexpected argument "extra"`) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 naming the extra argument", args, code, stderr)
		}
	}
}

// Flags may come before or after the one positional argument; a constant
// schedule at peak_lr 0.25 shows 0.25 at step 500.
func TestFlagsAroundPositional(t *testing.T) {
	dir := t.TempDir()
	spec := "{kind: constant, peak_lr: 0.25}"
	for _, args := range [][]string{
		{"show", spec, "--at", "500"},
		{"show", "--at", "500", spec},
		{"show", "--at=500", "--", spec},
	} {
		stdout, stderr, code := runCLI(args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		lines := strings.Split(stdout, "\n")
		if len(lines) < 2 || strings.Join(strings.Fields(lines[1]), " ") != "500 0.25" {
			t.Errorf("%q: printed %q, want the row for step 500 with lr 0.25", args, stdout)
		}
	}
	// A flag that takes a value before the positional (the old splitting
	// took --width's value 3 for the data file).
	data := filepath.Join(dir, "data.json")
	if err := os.WriteFile(data, []byte(`{"series": [{"name": "a", "x": [0, 1], "y": [1, 2]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "w.png")
	if _, stderr, code := runCLI("chart", "--width", "3", data, "-o", out); code != 0 {
		t.Fatalf("chart --width 3 DATA: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(out); err != nil {
		t.Error(err)
	}
}

// plot says what is wrong with --steps or -o instead of printing only the usage.
func TestPlotSteps(t *testing.T) {
	spec := "{kind: constant, peak_lr: 0.25}"
	out := filepath.Join(t.TempDir(), "p.png")
	for _, c := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"plot", spec, "--steps", "0", "-o", out}, "--steps 0: must be >= 1"},
		{[]string{"plot", spec, "--steps", "-3", "-o", out}, "--steps -3: must be >= 1"},
		{[]string{"plot", spec, "-o", out}, "--steps N is required"},
		// The file name is a usage error too, as in chart and plot-plan.
		{[]string{"plot", spec, "--steps", "10", "-o", out + ".jpg"}, "use a .png or .svg file name"},
	} {
		_, stderr, code := runCLI(c.args...)
		if code != 2 || !strings.Contains(stderr, c.stderr) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", c.args, code, stderr, c.stderr)
		}
	}
}

// ctl refuses a flag value the sidecar would refuse or drop, naming the flag
// and the value, before it dials (the socket here does not exist, so a
// request that got through would exit 1 on the dial).
func TestCtlFlags(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--min-lr", "nan"}, 2, "--min-lr NaN: must be a finite number >= 0"},
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--min-lr", "-0.5"}, 2, "--min-lr -0.5: must be a finite number >= 0"},
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--min-lr", "-1"}, 2, "--min-lr -1: must be"},
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--min-lr", "inf"}, 2, "--min-lr +Inf: must be"},
		{[]string{"anneal", "--at-step", "-5", "--steps", "10"}, 2, "--at-step -5: must be >= 0"},
		{[]string{"anneal", "--steps", "10"}, 2, "--at-step is required"},
		{[]string{"anneal", "--at-step", "5"}, 2, "--steps is required"},
		{[]string{"anneal", "--at-step", "5", "--steps", "0"}, 2, "--steps 0: must be >= 1"},
		{[]string{"anneal", "--at-step", "5", "--steps", "-3"}, 2, "--steps -3: must be >= 1"},
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--total", "20"}, 2, "flag provided but not defined: -total"},
		{[]string{"extend", "--at-step", "5"}, 2, "--total is required"},
		{[]string{"extend", "--at-step", "100", "--total", "100"}, 2, "--total 100: must be greater than --at-step (100)"},
		{[]string{"extend", "--at-step", "-1", "--total", "100"}, 2, "--at-step -1: must be >= 0"},
		{[]string{"stage", "--at-step", "100"}, 2, "--spec is required"},
		{[]string{"stage", "--at-step", "100", "--spec", "{kind: [}"}, 2, "--spec:"},
		// Values only the schedule code knows are checked here too, as the sidecar checks them.
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--shape", "bogus"}, 2, `--shape "bogus": must be one of: 1-sqrt, cosine, exp, linear`},
		{[]string{"extend", "--at-step", "5", "--total", "60", "--mode", "stretch"}, 2, `--mode "stretch": must be "continuous" or "proportional"`},
		{[]string{"stage", "--at-step", "5", "--spec", "{kind: cosine, peak_lr: -1, total_steps: 10}"}, 2, `--spec: new_stage: `},
		{[]string{"stage", "--at-step", "5", "--spec", "{kind: constant, peak_lr: 0.1, weight_decay: 0.1}"}, 2, `--spec: new_stage: field "schedule.weight_decay"`},
		// Valid requests get as far as the dial.
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--min-lr", "0"}, 1, "none.sock"},
		{[]string{"extend", "--at-step", "5", "--total", "6"}, 1, "none.sock"},
		{[]string{"extend", "--at-step", "5", "--total", "60", "--mode", "proportional"}, 1, "none.sock"},
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--shape", "1-sqrt"}, 1, "none.sock"},
		{[]string{"stage", "--at-step", "5", "--spec", "{kind: constant, peak_lr: 0.1}"}, 1, "none.sock"},
		// --socket after the command too (it wins over the one before).
		{[]string{"status", "--socket", sock + ".after"}, 1, "none.sock.after"},
		{[]string{"anneal", "--at-step", "5", "--steps", "10", "--socket", sock + ".after"}, 1, "none.sock.after"},
	} {
		_, stderr, code := runCLI(append([]string{"ctl", "--socket", sock}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.stderr) {
			t.Errorf("ctl %q: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.stderr)
		}
	}
}

// --min-lr is sent when given (0 included) and left unset otherwise, so the
// schedule's own floor applies.
func TestCtlMinLRSent(t *testing.T) {
	var errb bytes.Buffer
	req, code := ctlRequest("anneal", []string{"--at-step", "5", "--steps", "10", "--min-lr", "0"}, new(string), &errb)
	if code >= 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if a := req.GetPostControl().GetReplan().GetAnneal(); a.MinLr == nil || a.GetMinLr() != 0 || a.GetSteps() != 10 {
		t.Errorf("anneal %v: want min_lr 0 and 10 steps", a)
	}
	req, code = ctlRequest("anneal", []string{"--at-step", "5", "--steps", "10"}, new(string), &errb)
	if code >= 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if a := req.GetPostControl().GetReplan().GetAnneal(); a.MinLr != nil {
		t.Errorf("anneal %v: min_lr sent though not given", a)
	}
}

// serve refuses durations that would break every connection, and a state dir
// it cannot write, before it prints READY.
func TestServeRefusesUnusableSettings(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	held := t.TempDir()
	release, err := (&sidecar.Snapshots{Dir: held}).Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--frame-timeout", "-1s"}, 2, "--frame-timeout -1s: want a positive duration"},
		{[]string{"--frame-timeout", "0s"}, 2, "--frame-timeout 0s: want a positive duration"},
		{[]string{"--conn-idle-timeout", "-5s"}, 2, "--conn-idle-timeout -5s: want a positive duration, or 0 for off"},
		{[]string{"--idle-exit", "-1m"}, 2, "--idle-exit -1m0s"},
		{[]string{"--idle-exit", "5"}, 2, `invalid value "5" for flag -idle-exit: want a duration with a unit`},
		{[]string{"--snapshot-interval", "0s", "--state-dir", t.TempDir()}, 2, "--snapshot-interval 0s"},
		// A state dir under a regular file cannot be created.
		{[]string{"--state-dir", filepath.Join(file, "state")}, 1, "--state-dir " + filepath.Join(file, "state")},
		// One that another server holds (it may be writing its final snapshot).
		{[]string{"--state-dir", held}, 1, "another server is using this state dir"},
	} {
		stdout, stderr, code := runCLI(append([]string{"serve", "--socket", sock}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.stderr) || strings.Contains(stdout, "READY") {
			t.Errorf("serve %q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, stdout, stderr, c.code, c.stderr)
		}
	}
}

func TestHelpCommands(t *testing.T) {
	if _, stderr, code := runCLI("help", "bogus"); code != 2 || !strings.Contains(stderr, `unknown command "bogus"`) {
		t.Errorf("help bogus: exit %d, %q", code, stderr)
	}
	if _, stderr, code := runCLI("help", "chart"); code != 0 || !strings.Contains(stderr, "-o") {
		t.Errorf("help chart: exit %d, %q", code, stderr)
	}
	if stdout, _, code := runCLI("help", "version"); code != 0 || !strings.Contains(stdout, "protocol") {
		t.Errorf("help version: exit %d, %q", code, stdout)
	}
	if stdout, _, code := runCLI("help", "help"); code != 0 || !strings.Contains(stdout, "Usage:") {
		t.Errorf("help help: exit %d, %q", code, stdout)
	}
	if stdout, stderr, code := runCLI("version", "--bogus"); code != 2 || stdout != "" || !strings.Contains(stderr, `takes no arguments, got ["--bogus"]`) {
		t.Errorf("version --bogus: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if stdout, _, code := runCLI("version"); code != 0 || !strings.Contains(stdout, "protocol") {
		t.Errorf("version: exit %d, %q", code, stdout)
	}
}

// serve, plan and plot-plan --help say what the command does, not only
// its flags.
func TestHelpHasASynopsis(t *testing.T) {
	for cmd, want := range map[string]string{
		"serve":     "usage: rewarm serve --socket PATH",
		"plan":      "Prints the MoD plan's table",
		"plot-plan": "Draws the MoD plan's ratio per layer",
	} {
		if _, stderr, code := runCLI("help", cmd); code != 0 || !strings.Contains(stderr, want) {
			t.Errorf("help %s: exit %d, %q; want %q", cmd, code, stderr, want)
		}
	}
}

// ctl status marks a session no client holds, and a control posted only to
// such sessions gets a note saying it waits for their job to come back.
func TestCtlShowsUnheldSessions(t *testing.T) {
	st := &pb.Status{Sessions: []*pb.SessionStatus{
		{SessionId: 1, Name: "dead", OrphanedSeconds: 125.2},
		{SessionId: 2, Name: "live"},
	}}
	var out bytes.Buffer
	printStatus(&out, st)
	lines := strings.Split(out.String(), "\n")
	if !strings.HasSuffix(lines[1], "no client for 2m5s") || strings.Contains(lines[2], "no client") {
		t.Errorf("status:\n%s", out.String())
	}
	for target, noted := range map[string]bool{"dead": true, "live": false, "": false, "other": false} {
		if note := unheldTargets(st, target); (note != "") != noted {
			t.Errorf("--name %q: note %q, want one: %v", target, note, noted)
		}
	}
}

// --steps near 2^63 draws (sampled) instead of looping forever.
func TestPlotHugeSteps(t *testing.T) {
	out := filepath.Join(t.TempDir(), "p.png")
	if _, stderr, code := runCLI("plot", "{kind: cosine, peak_lr: 1e-3, total_steps: 100}", "--steps", "9223372036854700000", "-o", out); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

// A stage spec goes to the sidecar in canonical form, checked here: a
// grad_norms_file is read where ctl runs (the sidecar's working directory
// may differ) and its values are sent, and specs of nested kinds survive the
// protobuf Struct.
func TestCtlStageSendsTheCheckedSpec(t *testing.T) {
	dir := t.TempDir()
	norms := filepath.Join(dir, "norms.txt")
	if err := os.WriteFile(norms, []byte("1.0\n2.0\n1.5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{
		"{kind: refined, peak_lr: 0.1, total_steps: 3, grad_norms_file: " + norms + "}",
		"{kind: stages, stages: [{steps: 10, schedule: {kind: cosine, peak_lr: 0.1}}, {steps: 5, schedule: {kind: constant, peak_lr: 0.01}}]}",
		"{kind: multistep, peak_lr: 0.1, milestones: [3, 6], gamma: 0.5}",
	} {
		var errb bytes.Buffer
		req, code := ctlRequest("stage", []string{"--at-step", "5", "--spec", spec}, new(string), &errb)
		if code >= 0 {
			t.Fatalf("%s: exit %d: %s", spec, code, errb.String())
		}
		sent := req.GetPostControl().GetReplan().GetNewStage().GetSchedule().AsMap()
		// What the sidecar will parse is the schedule ctl checked.
		want, err := specfile.Load(spec)
		if err != nil {
			t.Fatal(err)
		}
		a, err := sched.Parse(want)
		if err != nil {
			t.Fatal(err)
		}
		b, err := sched.Parse(sent)
		if err != nil {
			t.Fatalf("%s: the sent spec does not parse: %v (%v)", spec, err, sent)
		}
		for n := int64(0); n < 20; n++ {
			if a.LR(n) != b.LR(n) {
				t.Fatalf("%s: LR(%d) = %v sent, %v given", spec, n, b.LR(n), a.LR(n))
			}
		}
		if _, ok := sent["grad_norms_file"]; ok {
			t.Errorf("%s: the file name was sent, not its values: %v", spec, sent)
		}
	}
}

// A flat series draws at any magnitude: the 1e-12 widening of a flat range
// vanished above 2^53 and gonum panicked with a stack trace (rc 2).
func TestPlotAFlatSeriesOfLargeValues(t *testing.T) {
	out := filepath.Join(t.TempDir(), "p.png")
	for _, spec := range []string{"{kind: constant, peak_lr: 1e300}", "{kind: constant, peak_lr: 3e17}", "{kind: constant, peak_lr: 0}"} {
		_, stderr, code := runCLI("plot", spec, "--steps", "5", "-o", out)
		if code != 0 {
			t.Fatalf("%s: rc %d, %s", spec, code, stderr)
		}
		if st, err := os.Stat(out); err != nil || st.Size() == 0 {
			t.Fatalf("%s: no image: %v", spec, err)
		}
	}
}

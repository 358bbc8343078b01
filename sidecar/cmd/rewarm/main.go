// Command rewarm is rewarm's command-line tool and sidecar daemon.
//
//	rewarm serve --socket PATH         serve the dispatcher on a Unix socket
//	rewarm show SPEC --at 0,100        print a schedule's values at some steps
//	rewarm plot SPEC --steps N -o F    draw a schedule (PNG or SVG)
//	rewarm plan --layers 32 --tokens N print a Mixture-of-Depths plan
//	rewarm plot-plan ... -o F          draw a MoD plan's ratios per layer
//	rewarm chart DATA.json -o F        draw line or bar series (the study's plots)
//	rewarm launch -- torchrun ...      run a job with one sidecar per node
//	rewarm ctl status|anneal|...       inspect and re-plan a live job
//	rewarm demo [--quick]              the continual pre-training study (needs the Python package)
//	rewarm version                     print the version and protocol version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rewarm/rewarm/dispatch"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/sched"
	"github.com/rewarm/rewarm/sidecar"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

const usage = `rewarm: learning-rate schedules, replay sampling and MoD plans for continual pre-training.

Usage:
  rewarm serve --socket PATH [flags]   serve the dispatcher on a Unix socket
  rewarm launch [flags] -- torchrun …  run torchrun beside one sidecar for this node
  rewarm ctl [--socket P] status|anneal|extend|stage
                                       inspect a running job, or re-plan it at a future step
  rewarm show SPEC [--at 0,100,1000]   print a schedule's values at those steps, and its phases
  rewarm plot SPEC --steps N [-o F]    draw the LR (and momentum, weight decay) to F (.png or .svg)
  rewarm plan --layers 32 --tokens 576 print a Mixture-of-Depths plan (k per layer, KV, FLOPs)
  rewarm plot-plan [plan flags] -o F   draw a MoD plan's kept fraction per layer
  rewarm chart DATA.json -o F          draw line or bar series from JSON (used by the study)
  rewarm demo [--quick] [ARGS]         the continual pre-training study on CPU (the main job)
  rewarm version                       print versions
  rewarm help [COMMAND]                show help

SPEC is a .yaml/.json file, or an inline mapping such as '{kind: cosine, peak_lr: 3e-4, total_steps: 1000}'.
Schedule kinds: %s
Run "rewarm help COMMAND" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, strings.Join(sched.Kinds(), ", "))
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		if len(args) > 1 {
			switch args[1] {
			case "serve":
				return serve([]string{"-h"}, stdout, stderr)
			case "show":
				return show([]string{"-h"}, stdout, stderr)
			case "plot":
				return plotCmd([]string{"-h"}, stderr)
			case "plan":
				return planCmd([]string{"-h"}, stdout, stderr)
			case "launch":
				return launch([]string{"-h"}, stdout, stderr)
			case "ctl":
				return ctl([]string{"-h"}, stdout, stderr)
			case "plot-plan":
				return plotPlan([]string{"-h"}, stderr)
			case "chart":
				return chart([]string{"-h"}, stderr)
			case "demo":
				return demo([]string{"-h"}, stderr)
			case "version":
				fmt.Fprintln(stdout, "rewarm version: print the version and the protocol version")
				return 0
			case "help", "-h", "--help":
			default:
				fmt.Fprintf(stderr, "rewarm help: unknown command %q\n\n", args[1])
				fmt.Fprintf(stderr, usage, strings.Join(sched.Kinds(), ", "))
				return 2
			}
		}
		fmt.Fprintf(stdout, usage, strings.Join(sched.Kinds(), ", "))
		return 0
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "launch":
		return launch(args[1:], stdout, stderr)
	case "ctl":
		return ctl(args[1:], stdout, stderr)
	case "demo":
		return demo(args[1:], stderr)
	case "show":
		return show(args[1:], stdout, stderr)
	case "plot":
		return plotCmd(args[1:], stderr)
	case "plan":
		return planCmd(args[1:], stdout, stderr)
	case "plot-plan":
		return plotPlan(args[1:], stderr)
	case "chart":
		return chart(args[1:], stderr)
	case "version", "--version":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "rewarm version: takes no arguments, got %q\n", args[1:])
			return 2
		}
		fmt.Fprintf(stdout, "rewarm %s (protocol %d)\n", version, dispatch.ProtocolVersion)
		return 0
	}
	fmt.Fprintf(stderr, "rewarm: unknown command %q\n\n", args[0])
	fmt.Fprintf(stderr, usage, strings.Join(sched.Kinds(), ", "))
	return 2
}

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "Unix socket path to listen on (required)")
	maxFrame := fs.Uint("max-frame-bytes", sidecar.DefaultMaxFrame, "largest accepted request frame")
	frameTimeout := durationVar(fs, "frame-timeout", 30*time.Second, "`duration` allowed to receive one frame or send one reply")
	idleTimeout := durationVar(fs, "conn-idle-timeout", 0, "close a connection idle this long, a `duration` (0: never)")
	idleExit := durationVar(fs, "idle-exit", 0, "exit after this long with no client connected, a `duration` (0: never)")
	orphanTTL := durationVar(fs, "orphan-ttl", dispatch.DefaultOrphanTTL,
		"keep a closed connection's sessions and samplers this long (a `duration`) for a client that reconnects")
	stateDir := fs.String("state-dir", "", "snapshot sessions to this directory and restore them on start")
	snapEvery := durationVar(fs, "snapshot-interval", 30*time.Second, "how often to snapshot when --state-dir is set, a `duration`")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics on this loopback address (off by default)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: rewarm serve --socket PATH [flags]\n\n"+
			"Runs the sidecar: the dispatcher behind a Unix socket (mode 0600, same uid only). It prints\n"+
			"READY PATH when listening and removes the socket on SIGTERM or SIGINT. See docs/sidecar.md.\n\n")
		fs.PrintDefaults()
	}
	if _, code := parseArgs(fs, args, 0, "only flags"); code >= 0 {
		return code
	}
	if *socket == "" {
		fmt.Fprintln(stderr, "rewarm serve: --socket PATH is required")
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "rewarm serve: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	if *orphanTTL <= 0 {
		fmt.Fprintf(stderr, "rewarm serve: --orphan-ttl %v: want a positive duration\n", *orphanTTL)
		return 2
	}
	for _, f := range []struct {
		name string
		v    time.Duration
		zero bool // 0 is allowed (off)
	}{{"frame-timeout", *frameTimeout, false}, {"conn-idle-timeout", *idleTimeout, true}, {"idle-exit", *idleExit, true},
		{"snapshot-interval", *snapEvery, false}} {
		if f.v < 0 || (f.v == 0 && !f.zero) {
			want := "a positive duration"
			if f.zero {
				want = "a positive duration, or 0 for off"
			}
			fmt.Fprintf(stderr, "rewarm serve: --%s %v: want %s\n", f.name, f.v, want)
			return 2
		}
	}
	if *maxFrame == 0 || *maxFrame > 1<<30 {
		fmt.Fprintf(stderr, "rewarm serve: --max-frame-bytes %d: want 1..%d\n", *maxFrame, 1<<30)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	path, err := filepath.Abs(*socket)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm serve: %v\n", err)
		return 1
	}
	metrics := sidecar.NewMetrics()
	opts := dispatch.Options{Server: "rewarm-sidecar/" + version, Logger: log, OrphanTTL: *orphanTTL,
		MaxRequest: int(*maxFrame)}
	if *metricsAddr != "" {
		if err := sidecar.CheckLoopback(*metricsAddr); err != nil {
			fmt.Fprintf(stderr, "rewarm serve: --metrics-addr: %v\n", err)
			return 2
		}
		opts.Observe = metrics.Observe
	}
	if err := dispatch.Warm(); err != nil {
		fmt.Fprintf(stderr, "rewarm serve: %v\n", err)
		return 1
	}
	var d *dispatch.Dispatcher
	snaps := &sidecar.Snapshots{Dir: *stateDir}
	if *stateDir != "" {
		// A control is on disk before it is acknowledged: its number is never
		// handed out again, even after a crash.
		opts.OnControl = func(c *pb.Control, commit func()) error { return snaps.WriteControl(d, c, commit) }
	}
	d = dispatch.New(opts)
	if *stateDir != "" {
		// Held from before the snapshot is read until after the final one is
		// written: a server that started meanwhile, on this socket or another,
		// would load an older state and later overwrite this one's.
		release, err := snaps.Lock()
		if err != nil {
			fmt.Fprintf(stderr, "rewarm serve: --state-dir %s: %v\n", *stateDir, err)
			return 1
		}
		defer release()
		// Found unusable now, not at the first control, whose acknowledgement
		// promises it is on disk.
		if err := snaps.Check(); err != nil {
			fmt.Fprintf(stderr, "rewarm serve: --state-dir %s: %v\n", *stateDir, err)
			return 1
		}
		restored, err := sidecar.LoadSnapshot(*stateDir, d)
		if err != nil {
			fmt.Fprintf(stderr, "rewarm serve: refusing to start: %v\n", err)
			return 1
		}
		if restored {
			log.Info("restored snapshot", "dir", *stateDir, "sessions", d.Sessions())
		}
	}
	// The umask dance in Listen is process-wide: listen before starting
	// goroutines that create files.
	l, err := sidecar.Listen(path)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm serve: %v\n", err)
		return 1
	}
	// The lock is held until serve returns, after the final snapshot: a server
	// started on this path meanwhile would load the state before it.
	l.HoldLock()
	defer l.ReleaseLock()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &sidecar.Server{
		Dispatcher:   d,
		MaxFrame:     uint32(*maxFrame),
		FrameTimeout: *frameTimeout,
		IdleTimeout:  *idleTimeout,
		Log:          log,
	}
	if *metricsAddr != "" {
		metrics.Attach(d)
		addr, err := metrics.Serve(ctx, *metricsAddr)
		if err != nil {
			fmt.Fprintf(stderr, "rewarm serve: metrics: %v\n", err)
			_ = l.Close()
			return 1
		}
		log.Info("metrics", "addr", "http://"+addr+"/metrics")
	}
	if *idleExit > 0 || *stateDir != "" {
		go background(ctx, stop, srv, d, *idleExit, snaps, *snapEvery, log)
	}
	fmt.Fprintf(stdout, "READY %s\n", path)
	log.Info("serving", "socket", path, "pid", os.Getpid(), "protocol", dispatch.ProtocolVersion)
	if err := srv.Serve(ctx, l); err != nil {
		log.Error("serve failed", "err", err)
		return 1
	}
	if *stateDir != "" {
		if err := snaps.Write(d); err != nil {
			log.Error("final snapshot failed", "err", err)
			return 1
		}
	}
	log.Info("stopped", "socket", path)
	return 0
}

// durationFlag is flag.Duration with an error that says what is wanted (the
// flag package reports only "parse error" for a duration without a unit).
type durationFlag struct{ d *time.Duration }

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration with a unit, such as 30s, 5m or 1h30m")
	}
	*f.d = d
	return nil
}

func (f durationFlag) String() string {
	if f.d == nil {
		return "0s" // the zero value, so -h prints no default for it
	}
	return f.d.String()
}

func durationVar(fs *flag.FlagSet, name string, value time.Duration, usage string) *time.Duration {
	d := value
	fs.Var(durationFlag{&d}, name, usage)
	return &d
}

// background snapshots the state at intervals and stops an idle server.
func background(ctx context.Context, stop func(), srv *sidecar.Server, d *dispatch.Dispatcher, idleExit time.Duration,
	snaps *sidecar.Snapshots, every time.Duration, log *slog.Logger) {
	tick := time.NewTicker(min(time.Second, max(every, 10*time.Millisecond)))
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if snaps.Dir != "" && time.Since(last) >= every {
			if err := snaps.Write(d); err != nil {
				log.Error("snapshot failed", "err", err)
			}
			last = time.Now()
		}
		if idleExit > 0 && srv.Idle() >= idleExit {
			log.Info("no clients, exiting", "idle", srv.Idle().Round(time.Second))
			stop()
			return
		}
	}
}

// demo hands over to the Python package, which owns the training loop. It
// runs REWARM_PYTHON when set, else the interpreter installed beside this
// binary (the same virtual environment), else python3 on PATH.
func demo(args []string, stderr io.Writer) int {
	py := findPython()
	if py == "" {
		fmt.Fprintln(stderr, "rewarm demo: no Python interpreter found; install the package with `pip install .` and run it from that environment")
		return 1
	}
	argv := append([]string{py, "-m", "rewarm.study"}, args...)
	if err := syscall.Exec(py, argv, os.Environ()); err != nil {
		fmt.Fprintf(stderr, "rewarm demo: exec %s: %v\n", py, err)
		return 1
	}
	return 0
}

func findPython() string {
	if p := os.Getenv("REWARM_PYTHON"); p != "" {
		return p
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		for _, name := range []string{"python", "python3"} {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	for _, name := range []string{"python3", "python"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

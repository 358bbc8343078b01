// Command rewarm is rewarm's command-line tool and sidecar daemon.
//
//	rewarm serve --socket PATH         serve the dispatcher on a Unix socket
//	rewarm show SPEC --at 0,100        print a schedule's values at some steps
//	rewarm plot SPEC --steps N -o F    draw a schedule (PNG or SVG)
//	rewarm plan --layers 32 --tokens N print a Mixture-of-Depths plan
//	rewarm plot-plan ... -o F          draw a MoD plan's ratios per layer
//	rewarm demo [ARGS]                 run the CPU training demo (needs the Python package)
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
	"github.com/rewarm/rewarm/sched"
	"github.com/rewarm/rewarm/sidecar"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

const usage = `rewarm: learning-rate schedules, replay sampling and MoD plans for continual pre-training.

Usage:
  rewarm serve --socket PATH [flags]   serve the dispatcher on a Unix socket
  rewarm show SPEC [--at 0,100,1000]   print a schedule's values at those steps, and its phases
  rewarm plot SPEC --steps N [-o F]    draw the LR (and momentum, weight decay) to F (.png or .svg)
  rewarm plan --layers 32 --tokens 576 print a Mixture-of-Depths plan (k per layer, KV, FLOPs)
  rewarm plot-plan [plan flags] -o F   draw a MoD plan's kept fraction per layer
  rewarm demo [ARGS]                   train a tiny model on CPU with a rewarm schedule
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
			case "plot-plan":
				return plotPlan([]string{"-h"}, stderr)
			}
		}
		fmt.Fprintf(stdout, usage, strings.Join(sched.Kinds(), ", "))
		return 0
	case "serve":
		return serve(args[1:], stdout, stderr)
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
	case "version", "--version":
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
	frameTimeout := fs.Duration("frame-timeout", 30*time.Second, "time allowed to receive one frame or send one reply")
	idleTimeout := fs.Duration("conn-idle-timeout", 0, "close a connection idle this long (0: never)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
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
	// The umask dance in Listen is process-wide: listen before starting
	// goroutines that create files.
	l, err := sidecar.Listen(path)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm serve: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &sidecar.Server{
		Dispatcher:   dispatch.New(dispatch.Options{Server: "rewarm-sidecar/" + version, Logger: log}),
		MaxFrame:     uint32(*maxFrame),
		FrameTimeout: *frameTimeout,
		IdleTimeout:  *idleTimeout,
		Log:          log,
	}
	fmt.Fprintf(stdout, "READY %s\n", path)
	log.Info("serving", "socket", path, "pid", os.Getpid(), "protocol", dispatch.ProtocolVersion)
	if err := srv.Serve(ctx, l); err != nil {
		log.Error("serve failed", "err", err)
		return 1
	}
	log.Info("stopped", "socket", path)
	return 0
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
	argv := append([]string{py, "-m", "rewarm.demo"}, args...)
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

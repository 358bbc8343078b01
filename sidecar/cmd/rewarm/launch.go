package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/rewarm/rewarm/sidecar"
)

// launch starts one sidecar for this node, waits for READY, runs the command
// (torchrun) with REWARM_SOCKET exported, forwards SIGINT and SIGTERM to it,
// and stops the sidecar when it exits, returning its exit code. The sidecar
// is the launcher's child, not the workers', so it outlives torchrun's
// elastic restarts of the workers.
func launch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("launch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "socket path (default: a per-user 0700 directory, named for this launcher)")
	stateDir := fs.String("state-dir", "", "passed to rewarm serve: snapshot and restore sessions")
	metricsAddr := fs.String("metrics-addr", "", "passed to rewarm serve: loopback Prometheus address")
	logLevel := fs.String("log-level", "info", "passed to rewarm serve")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rewarm launch [flags] -- torchrun [torchrun args] script.py [args]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitFlag(err)
	}
	cmdArgs := fs.Args()
	if len(cmdArgs) == 0 {
		fs.Usage()
		return 2
	}
	path := *socket
	if path == "" {
		var err error
		if path, err = sidecar.DefaultSocketPath(fmt.Sprintf("launch-%d", os.Getpid())); err != nil {
			fmt.Fprintf(stderr, "rewarm launch: %v\n", err)
			return 1
		}
	}
	// Exported absolute: a command that changes directory (Hydra does) must
	// still find the sidecar.
	path, err := filepath.Abs(path)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm launch: --socket: %v\n", err)
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "rewarm launch: %v\n", err)
		return 1
	}
	serveArgs := []string{"serve", "--socket", path, "--log-level", *logLevel}
	if *stateDir != "" {
		serveArgs = append(serveArgs, "--state-dir", *stateDir)
	}
	if *metricsAddr != "" {
		serveArgs = append(serveArgs, "--metrics-addr", *metricsAddr)
	}
	side := exec.Command(exe, serveArgs...)
	side.Stderr = stderr
	// Its own process group: a Ctrl-C in the terminal reaches torchrun through
	// us, and the sidecar is stopped last, after the workers are gone.
	// Pdeathsig: a launcher killed with SIGKILL must not leave the sidecar
	// holding the socket.
	side.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out, err := side.StdoutPipe()
	if err != nil {
		fmt.Fprintf(stderr, "rewarm launch: %v\n", err)
		return 1
	}
	if err := side.Start(); err != nil {
		fmt.Fprintf(stderr, "rewarm launch: start sidecar: %v\n", err)
		return 1
	}
	stopSidecar := func() {
		_ = side.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = side.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = side.Process.Kill()
			<-done
		}
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "READY ") {
			err = fmt.Errorf("unexpected sidecar output %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if errors.Is(err, io.EOF) {
			// It exited before READY; it has said why on stderr (ours).
			werr := side.Wait()
			fmt.Fprintf(stderr, "rewarm launch: the sidecar exited before it was ready (%v); its message is above\n", exitText(werr))
			// 2 stays 2: a flag passed on to serve was refused.
			if code := side.ProcessState.ExitCode(); code == 2 {
				return 2
			}
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "rewarm launch: the sidecar did not start: %v\n", err)
			stopSidecar()
			return 1
		}
	case <-time.After(30 * time.Second):
		fmt.Fprintln(stderr, "rewarm launch: the sidecar did not print READY within 30 s")
		stopSidecar()
		return 1
	}
	fmt.Fprintf(stderr, "rewarm launch: sidecar ready at %s\n", path)

	child := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, stdout, stderr
	child.Env = append(os.Environ(), "REWARM_SOCKET="+path)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := child.Start(); err != nil {
		fmt.Fprintf(stderr, "rewarm launch: %v\n", err)
		stopSidecar()
		return 127
	}
	go func() {
		for s := range sigs {
			// A Ctrl-C in the terminal reaches every process of the
			// foreground group, the command included: forwarding it too
			// would interrupt the command's own SIGINT handling.
			if s == syscall.SIGINT && inForeground() {
				continue
			}
			_ = child.Process.Signal(s)
		}
	}()
	err = child.Wait()
	stopSidecar()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exit.ExitCode()
	}
	fmt.Fprintf(stderr, "rewarm launch: %v\n", err)
	return 1
}

// exitText words how a child process ended.
func exitText(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// inForeground reports whether this process's group is the foreground group
// of the terminal on stdin, which is where a terminal's SIGINT goes.
func inForeground() bool {
	var fg int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, os.Stdin.Fd(), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&fg))); errno != 0 {
		return false
	}
	return int(fg) == syscall.Getpgrp()
}

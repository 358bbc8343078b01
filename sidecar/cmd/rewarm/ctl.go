package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewarm/rewarm/internal/specfield"
	"github.com/rewarm/rewarm/internal/specfile"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/sched"
	"github.com/rewarm/rewarm/sidecar"
)

const ctlUsage = `usage: rewarm ctl [--socket PATH] COMMAND [flags]

  status                                      each session's step, LR, plan; each sampler's mixture
  anneal --at-step S --steps L [--shape cosine] [--min-lr X] [--name JOB]
  extend --at-step S --total N [--mode continuous|proportional] [--name JOB]
  stage  --at-step S --spec FILE|'{...}' [--name JOB]   start a new stage (a schedule spec)

Re-plans are queued in the sidecar; the job's rank 0 picks them up, broadcasts
them, and every rank switches at --at-step. --name limits one to sessions of
that name. The socket defaults to $REWARM_SOCKET.
`

func ctl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", os.Getenv("REWARM_SOCKET"), "sidecar socket")
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	if err := fs.Parse(args); err != nil {
		return exitFlag(err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	switch rest[0] {
	case "status", "anneal", "extend", "stage":
	default:
		fmt.Fprintf(stderr, "rewarm ctl: unknown command %q\n\n", rest[0])
		fs.Usage()
		return 2
	}
	req, code := ctlRequest(rest[0], rest[1:], socket, stderr)
	if code >= 0 {
		return code
	}
	if *socket == "" {
		fmt.Fprintln(stderr, "rewarm ctl: give --socket PATH or set REWARM_SOCKET")
		return 2
	}
	at := req.GetPostControl().GetReplan().GetAtStep()
	c, err := sidecar.Dial(*socket, "rewarm-ctl/"+version)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm ctl: %v\n", err)
		return 1
	}
	defer c.Close()
	resp, err := c.Call(req)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm ctl: %v\n", err)
		return 1
	}
	if e := resp.GetError(); e != nil {
		fmt.Fprintf(stderr, "rewarm ctl %s: %s\n", rest[0], e.GetMessage())
		return 1
	}
	if st := resp.GetStatus(); st != nil {
		printStatus(stdout, st)
		return 0
	}
	fmt.Fprintf(stdout, "queued control %d: %s at step %d; rank 0 applies it when it polls\n",
		resp.GetAck().GetPlanVersion(), rest[0], at)
	if st, err := c.Call(&pb.Request{Body: &pb.Request_GetStatus{GetStatus: &pb.GetStatus{}}}); err == nil {
		if note := unheldTargets(st.GetStatus(), req.GetPostControl().GetTargetName()); note != "" {
			fmt.Fprintln(stderr, "rewarm ctl: note: "+note)
		}
	}
	return 0
}

// ctlRequest parses a ctl command's flags, each command having only its own,
// and builds the request of cmd (status, anneal, extend or stage). It refuses values the sidecar would refuse or
// drop, naming the flag and the value. code is -1 to go on, else the exit
// code, with the message printed.
func ctlRequest(cmd string, args []string, socket *string, stderr io.Writer) (*pb.Request, int) {
	sub := flag.NewFlagSet("ctl "+cmd, flag.ContinueOnError)
	sub.SetOutput(stderr)
	// --socket is ctl's, but it is taken after the command too.
	sub.StringVar(socket, "socket", *socket, "sidecar socket (also before the command)")
	if cmd == "status" {
		if _, code := parseArgs(sub, args, 0, "no arguments"); code >= 0 {
			return nil, code
		}
		return &pb.Request{Body: &pb.Request_GetStatus{GetStatus: &pb.GetStatus{}}}, -1
	}
	at := sub.Int64("at-step", 0, "the re-plan takes effect from update at-step+1 (after at-step updates); required")
	name := sub.String("name", "", "only sessions with this name")
	var (
		steps, total      *int64
		minLR             *float64
		shape, mode, spec *string
	)
	switch cmd {
	case "anneal":
		steps = sub.Int64("steps", 0, "anneal length in updates; required")
		shape = sub.String("shape", "cosine", "anneal shape: cosine, linear, exp or 1-sqrt")
		minLR = sub.Float64("min-lr", 0, "anneal target (default: the schedule's own floor)")
	case "extend":
		total = sub.Int64("total", 0, "new total_steps; required")
		mode = sub.String("mode", "continuous", "extend mode: continuous or proportional")
	case "stage":
		spec = sub.String("spec", "", "new stage schedule: a .yaml/.json file or an inline mapping; required")
	}
	if _, code := parseArgs(sub, args, 0, "only flags"); code >= 0 {
		return nil, code
	}
	set := map[string]bool{}
	sub.Visit(func(f *flag.Flag) { set[f.Name] = true })
	bad := func(format string, a ...any) (*pb.Request, int) {
		fmt.Fprintf(stderr, "rewarm ctl %s: %s\n", cmd, fmt.Sprintf(format, a...))
		return nil, 2
	}
	switch {
	case !set["at-step"]:
		return bad("--at-step is required: re-plans take effect at an explicit future step")
	case *at < 0:
		return bad("--at-step %d: must be >= 0 (the number of updates after which the re-plan applies)", *at)
	}
	rp := &pb.Replan{AtStep: *at}
	local := sched.Replan{At: *at} // checked here as the sidecar will check it
	switch cmd {
	case "anneal":
		switch {
		case !set["steps"]:
			return bad("--steps is required: the anneal length in updates")
		case *steps < 1:
			return bad("--steps %d: must be >= 1 (the anneal length in updates)", *steps)
		}
		a := &pb.Anneal{Steps: *steps, Shape: *shape}
		if set["min-lr"] {
			if math.IsNaN(*minLR) || math.IsInf(*minLR, 0) || *minLR < 0 {
				return bad("--min-lr %g: must be a finite number >= 0", *minLR)
			}
			a.MinLr = minLR
		}
		rp.Op = &pb.Replan_Anneal{Anneal: a}
		local.Op, local.Steps, local.Shape, local.MinLR = sched.OpAnneal, a.Steps, a.Shape, a.MinLr
	case "extend":
		switch {
		case !set["total"]:
			return bad("--total is required: the new total_steps")
		case *total <= *at:
			return bad("--total %d: must be greater than --at-step (%d)", *total, *at)
		}
		rp.Op = &pb.Replan_Extend{Extend: &pb.Extend{TotalSteps: *total, Mode: *mode}}
		local.Op, local.Total, local.Mode = sched.OpExtend, *total, *mode
	case "stage":
		if *spec == "" {
			return bad("--spec is required: the new stage's schedule, a .yaml/.json file or an inline '{...}' mapping")
		}
		m, err := specfile.Load(*spec)
		if err != nil {
			return bad("--spec: %v", err)
		}
		local.Op, local.Spec = sched.OpNewStage, m
	}
	if err := local.Check(); err != nil {
		return bad("%s", flagError(cmd, err))
	}
	if cmd == "stage" {
		// The checked spec in canonical form: files it names (grad_norms_file)
		// were read here, where the user runs ctl, not where the sidecar runs.
		st, err := structpb.NewStruct(local.Spec)
		if err != nil {
			return bad("--spec: %v", err)
		}
		rp.Op = &pb.Replan_NewStage{NewStage: &pb.NewStage{Schedule: st}}
	}
	return &pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: rp, TargetName: *name}}}, -1
}

// ctlFlags names the flag that sets each re-plan field.
var ctlFlags = map[string]string{
	"at_step": "--at-step", "steps": "--steps", "shape": "--shape", "min_lr": "--min-lr",
	"total_steps": "--total", "mode": "--mode",
}

// flagError words a re-plan's field error in terms of the ctl flag that set
// the field; a stage spec's errors are the spec's own.
func flagError(cmd string, err error) string {
	var fe *specfield.Error
	if errors.As(err, &fe) {
		if f, ok := ctlFlags[fe.Field]; ok {
			return fmt.Sprintf("%s %s: %s", f, specfield.FormatValue(fe.Value), fe.Reason)
		}
	}
	if cmd == "stage" {
		return "--spec: " + err.Error()
	}
	return err.Error()
}

// unheldTargets says so when no client holds any session a control goes
// to: a job that exited leaves its sessions for --orphan-ttl, and its
// controls then wait for a client that may never come back.
func unheldTargets(st *pb.Status, target string) string {
	n := 0
	for _, s := range st.GetSessions() {
		if target != "" && s.GetName() != target {
			continue
		}
		if s.GetOrphanedSeconds() == 0 {
			return ""
		}
		n++
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("no client holds the %d session(s) it goes to (see rewarm ctl status): it is applied when "+
		"their job connects again (after an idle close, a failover or a restart), if that comes before --orphan-ttl frees them", n)
}

func printStatus(w io.Writer, st *pb.Status) {
	fmt.Fprintf(w, "%s, %d sessions, %d samplers, %d controls posted\n", st.GetServer(), len(st.GetSessions()),
		len(st.GetSamplers()), st.GetControlSeq())
	for _, s := range st.GetSessions() {
		var phases []string
		for _, p := range s.GetPhases() {
			phases = append(phases, fmt.Sprintf("%s@%d", p.GetName(), p.GetStart()))
		}
		orphan := ""
		if o := s.GetOrphanedSeconds(); o > 0 {
			orphan = fmt.Sprintf("  no client for %s", time.Duration(o*float64(time.Second)).Round(time.Second))
		}
		fmt.Fprintf(w, "session %d %q  kind %s  step %d  lr %.6g  plan v%d  [%s]%s\n", s.GetSessionId(), s.GetName(),
			s.GetKind(), s.GetStep(), s.GetLr(), s.GetPlanVersion(), strings.Join(phases, ", "), orphan)
	}
	for _, s := range st.GetSamplers() {
		var mix []string
		for i, n := range s.GetSourceNames() {
			if i < len(s.GetQuotas()) {
				mix = append(mix, fmt.Sprintf("%s=%d", n, s.GetQuotas()[i]))
			}
		}
		fmt.Fprintf(w, "sampler %d  spec %s  step %d/%d  batch mixture %s\n", s.GetSamplerId(), s.GetSpecHash(),
			s.GetStep(), s.GetTotalSteps(), strings.Join(mix, " "))
	}
}

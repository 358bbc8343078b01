package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewarm/rewarm/internal/specfile"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/sidecar"
)

const ctlUsage = `usage: rewarm ctl [--socket PATH] COMMAND [flags]

  status                                      each session's step, LR, plan; each sampler's mixture
  anneal --at-step S --steps L [--shape cosine] [--min-lr X]
  extend --at-step S --total N [--mode continuous|proportional]
  stage  --at-step S --spec FILE|'{...}'      start a new stage (a schedule spec)

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
	if *socket == "" {
		fmt.Fprintln(stderr, "rewarm ctl: give --socket PATH or set REWARM_SOCKET")
		return 2
	}
	sub := flag.NewFlagSet("ctl "+rest[0], flag.ContinueOnError)
	sub.SetOutput(stderr)
	at := sub.Int64("at-step", -1, "the re-plan takes effect from update at-step+1 (after at-step updates)")
	name := sub.String("name", "", "only sessions with this name")
	steps := sub.Int64("steps", 0, "anneal length in updates")
	shape := sub.String("shape", "cosine", "anneal shape: cosine, linear, exp or 1-sqrt")
	minLR := sub.Float64("min-lr", -1, "anneal target (default: the schedule's own floor)")
	total := sub.Int64("total", 0, "new total_steps")
	mode := sub.String("mode", "continuous", "extend mode: continuous or proportional")
	spec := sub.String("spec", "", "new stage schedule: a .yaml/.json file or an inline mapping")
	if err := sub.Parse(rest[1:]); err != nil {
		return exitFlag(err)
	}
	var req *pb.Request
	switch rest[0] {
	case "status":
		req = &pb.Request{Body: &pb.Request_GetStatus{GetStatus: &pb.GetStatus{}}}
	case "anneal", "extend", "stage":
		if *at < 0 {
			fmt.Fprintf(stderr, "rewarm ctl %s: --at-step is required: re-plans take effect at an explicit future step\n", rest[0])
			return 2
		}
		rp := &pb.Replan{AtStep: *at}
		switch rest[0] {
		case "anneal":
			a := &pb.Anneal{Steps: *steps, Shape: *shape}
			if *minLR >= 0 {
				a.MinLr = minLR
			}
			rp.Op = &pb.Replan_Anneal{Anneal: a}
		case "extend":
			rp.Op = &pb.Replan_Extend{Extend: &pb.Extend{TotalSteps: *total, Mode: *mode}}
		case "stage":
			m, err := specfile.Load(*spec)
			if err != nil {
				fmt.Fprintf(stderr, "rewarm ctl stage: --spec: %v\n", err)
				return 2
			}
			st, err := structpb.NewStruct(m)
			if err != nil {
				fmt.Fprintf(stderr, "rewarm ctl stage: --spec: %v\n", err)
				return 2
			}
			rp.Op = &pb.Replan_NewStage{NewStage: &pb.NewStage{Schedule: st}}
		}
		req = &pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: rp, TargetName: *name}}}
	default:
		fmt.Fprintf(stderr, "rewarm ctl: unknown command %q\n\n", rest[0])
		fs.Usage()
		return 2
	}
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
		resp.GetAck().GetPlanVersion(), rest[0], *at)
	return 0
}

func printStatus(w io.Writer, st *pb.Status) {
	fmt.Fprintf(w, "%s, %d sessions, %d samplers, %d controls posted\n", st.GetServer(), len(st.GetSessions()),
		len(st.GetSamplers()), st.GetControlSeq())
	for _, s := range st.GetSessions() {
		var phases []string
		for _, p := range s.GetPhases() {
			phases = append(phases, fmt.Sprintf("%s@%d", p.GetName(), p.GetStart()))
		}
		fmt.Fprintf(w, "session %d %q  kind %s  step %d  lr %.6g  plan v%d  [%s]\n", s.GetSessionId(), s.GetName(),
			s.GetKind(), s.GetStep(), s.GetLr(), s.GetPlanVersion(), strings.Join(phases, ", "))
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

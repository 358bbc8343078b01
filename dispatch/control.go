package dispatch

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/sched"
)

// MaxControls bounds the queue of posted controls; the oldest are dropped.
const MaxControls = 1024

func (d *Dispatcher) postControl(r *pb.PostControl) (*pb.Response, error) {
	rp := r.GetReplan()
	if rp == nil || rp.Op == nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "replan", "post_control: give a replan (extend, anneal or new_stage)")
	}
	if rp.GetAtStep() < 0 {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "at_step", "post_control: at_step = %d: must be >= 0", rp.GetAtStep())
	}
	// Posts go one at a time, the check included: two posted at once must
	// each be checked after the other, as they will be applied.
	d.postMu.Lock()
	defer d.postMu.Unlock()
	// Refuse what no session could apply: check it against each matching
	// session now, on a copy of its plan.
	if err := d.checkControl(rp, r.GetTargetName()); err != nil {
		return nil, err
	}
	d.mu.Lock()
	c := &pb.Control{Seq: d.ctlSeq + 1, Replan: proto.Clone(rp).(*pb.Replan), TargetName: r.GetTargetName()}
	d.mu.Unlock()
	c.Replan.SessionId = 0
	// Numbered, queued and counted in one step, so a poll sees either
	// nothing of it or all of it.
	committed := false
	commit := func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if committed {
			return
		}
		d.ctlSeq = c.Seq
		d.controls = append(d.controls, c)
		if len(d.controls) > MaxControls {
			d.controls = d.controls[len(d.controls)-MaxControls:]
		}
		committed = true
	}
	if d.opts.OnControl == nil {
		commit()
	} else {
		err := d.opts.OnControl(c, commit)
		if !committed {
			if err == nil {
				err = errors.New("OnControl returned without committing the control")
			}
			// Nobody saw this control or its number: the next post takes it.
			d.log.Error("control refused: it could not be saved", "err", err)
			return nil, fail(pb.ErrorCode_ERROR_CODE_INTERNAL, "",
				"post_control: the control could not be saved to the state dir, so it was not queued (post it again once that is fixed): %v", err)
		}
		if err != nil { // queued all the same: clients may already have it
			d.log.Warn("control queued, but saving it reported an error", "seq", c.Seq, "err", err)
		}
	}
	d.log.Info("control posted", "seq", c.Seq, "at_step", rp.GetAtStep(), "target", r.GetTargetName())
	return &pb.Response{Body: &pb.Response_Ack{Ack: &pb.Ack{PlanVersion: c.Seq}}}, nil
}

func (d *Dispatcher) checkControl(rp *pb.Replan, target string) error {
	// The control's own fields first: a bad value is named whether or not a
	// session is open to receive it.
	r, err := toReplan(rp)
	if err != nil {
		return err
	}
	if err := r.Check(); err != nil {
		return err
	}
	d.mu.Lock()
	var sessions []*session
	var names []string
	jobPolled := map[string]bool{} // a named job's rank src has polled
	live := map[*session]bool{}    // owned by a connection; the lease is d.mu's
	for _, s := range d.sessions {
		if target == "" || s.name == target {
			sessions = append(sessions, s)
			live[s] = s.owner != 0
		}
		names = append(names, strconv.Quote(s.name))
		s.mu.Lock()
		if s.polled && s.owner != 0 && s.name != "" {
			jobPolled[s.name] = true
		}
		s.mu.Unlock()
	}
	d.mu.Unlock()
	if len(sessions) == 0 {
		// Queued, it would wait for no one: a typo in the name, or no job yet.
		if target == "" {
			return fail(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "", "post_control: no session is open to apply it; start the training job first")
		}
		sort.Strings(names)
		if len(names) > 8 {
			names = append(names[:8], "...")
		}
		open := "none"
		if len(names) > 0 {
			open = strings.Join(names, ", ")
		}
		return fail(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "target_name", "post_control: no open session is named %q (open: %s)", target, open)
	}
	// A control for a step every receiver has passed would be queued and
	// then skipped by each client (a warning in the job's log at best): an
	// --at-step 250 meant as 2500 would never anneal. What a job has passed
	// is what its polling rank last reported; the other ranks step with it.
	// Orphans do not count: a job that crashed and restarted from an earlier
	// checkpoint has new sessions, and a client that reconnects to an orphan
	// judges the control itself when it polls.
	jobApplied := map[string]int64{}
	for _, s := range sessions {
		s.mu.Lock()
		if s.name != "" && live[s] {
			jobApplied[s.name] = max(jobApplied[s.name], s.applied)
		}
		s.mu.Unlock()
	}
	applied := func(s *session) int64 {
		if a, ok := jobApplied[s.name]; ok { // only named sessions are in it
			return a
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.applied
	}
	least, leastName := int64(math.MaxInt64), ""
	for _, s := range sessions {
		if a := applied(s); live[s] && a < least {
			least, leastName = a, s.name
		}
	}
	if least != math.MaxInt64 && r.At < least {
		who := "the job"
		if leastName != "" {
			who = fmt.Sprintf("job %q", leastName)
		}
		return fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "at_step",
			"post_control: at_step %d has passed: %s had applied %d updates at its last poll_control (so had each job it would go to)",
			r.At, who, least)
	}
	for _, s := range sessions {
		s.mu.Lock()
		trial, err := sched.NewPlan(s.plan.Config, s.plan.Replans, s.plan.Reports)
		seen, polled := s.ctlSeen, s.polled
		if !polled {
			seen = s.ctlStart
		}
		s.mu.Unlock()
		// The client skips a queued control whose step it has passed; what
		// it has passed is what it applied, not a look-ahead get_lr's step.
		step := applied(s)
		if err != nil {
			return err
		}
		// For the rank that polls (src), the controls queued since its last
		// poll come first, as its client will apply them (skipping one that
		// fails or is late); so for a job none of whose ranks has polled yet.
		// The other ranks of a job never poll: their plans hold what src
		// broadcast to them.
		if polled || !jobPolled[s.name] {
			for _, c := range d.queuedFor(s.name, seen) {
				if q, err := toReplan(c.GetReplan()); err == nil && q.At >= step {
					_ = trial.Replan(q)
				}
			}
		}
		if err := trial.Replan(r); err != nil {
			return err
		}
	}
	return nil
}

// queuedFor returns the queued controls after seq that a session named name
// receives.
func (d *Dispatcher) queuedFor(name string, seq uint64) []*pb.Control {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*pb.Control
	for _, c := range d.controls {
		if c.GetSeq() > seq && (c.GetTargetName() == "" || c.GetTargetName() == name) {
			out = append(out, c)
		}
	}
	return out
}

func (d *Dispatcher) pollControl(r *pb.PollControl) (*pb.Response, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := &pb.Controls{ControlEpoch: d.ctlEpoch, LatestSeq: d.ctlSeq}
	after := r.GetAfterSeq()
	if e := r.GetControlEpoch(); e != 0 && e != d.ctlEpoch {
		after = 0 // counted by another sidecar: nothing here was seen yet
	}
	s, ok := d.sessions[r.GetSessionId()]
	if !ok && r.GetSessionId() != 0 {
		// Said, not ignored: a failover client recreates a session the
		// sidecar reaped, and its job is visible to ctl again.
		return nil, fail(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "session_id", "no session with id %d", r.GetSessionId())
	}
	if ok {
		s.mu.Lock()
		if r.GetStep() >= 0 {
			s.step = r.GetStep()
			s.applied = max(s.applied, r.GetStep())
		}
		if !s.polled && r.GetControlEpoch() == 0 {
			// A client that has seen no control starts where the numbering
			// stood when its job opened.
			after = max(after, s.ctlStart)
		}
		s.polled = true
		s.ctlSeen = d.ctlSeq
		s.mu.Unlock()
	}
	i := sort.Search(len(d.controls), func(i int) bool { return d.controls[i].GetSeq() > after })
	for _, c := range d.controls[i:] {
		out.Controls = append(out.Controls, proto.Clone(c).(*pb.Control))
	}
	return &pb.Response{Body: &pb.Response_Controls{Controls: out}}, nil
}

func (d *Dispatcher) status() (*pb.Response, error) {
	return &pb.Response{Body: &pb.Response_Status{Status: d.Status()}}, nil
}

// Status describes every open session and sampler.
func (d *Dispatcher) Status() *pb.Status {
	d.mu.Lock()
	d.reap()
	ids := make([]uint64, 0, len(d.sessions))
	for id := range d.sessions {
		ids = append(ids, id)
	}
	sids := make([]uint64, 0, len(d.samplers))
	for id := range d.samplers {
		sids = append(sids, id)
	}
	out := &pb.Status{Server: d.opts.Server, ControlSeq: d.ctlSeq}
	sessions := make([]*session, len(ids))
	orphaned := make([]float64, len(ids)) // the lease is d.mu's
	now := d.now()
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for i, id := range ids {
		sessions[i] = d.sessions[id]
		if l := sessions[i].lease; l.owner == 0 {
			orphaned[i] = max(now.Sub(l.orphaned).Seconds(), 1e-3)
		}
	}
	sort.Slice(sids, func(a, b int) bool { return sids[a] < sids[b] })
	samplers := make([]*samplerEntry, len(sids))
	steps := make([]int64, len(sids)) // e.step is written under d.mu
	for i, id := range sids {
		samplers[i] = d.samplers[id]
		steps[i] = samplers[i].step
	}
	d.mu.Unlock()
	for i, s := range sessions {
		s.mu.Lock()
		st := &pb.SessionStatus{SessionId: s.id, Name: s.name, Kind: s.plan.Config.LR.Kind(), Step: s.step,
			Lr: s.plan.LR(s.step), PlanVersion: version(s.plan), OrphanedSeconds: orphaned[i]}
		for _, ph := range s.plan.Phases() {
			st.Phases = append(st.Phases, &pb.Phase{Name: ph.Name, Start: ph.Start})
		}
		s.mu.Unlock()
		out.Sessions = append(out.Sessions, st)
	}
	for i, e := range samplers {
		st := &pb.SamplerStatus{SamplerId: sids[i], SpecHash: e.s.Hash(), Step: steps[i], TotalSteps: e.s.TotalSteps()}
		for _, src := range e.s.Sources() {
			st.SourceNames = append(st.SourceNames, src.Name)
		}
		if q, err := e.s.Quotas(steps[i]); err == nil {
			st.Quotas = q
		}
		out.Samplers = append(out.Samplers, st)
	}
	return out
}

package dispatch

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/replay"
	"github.com/rewarm/rewarm/sched"
)

// Snapshot encodes every session, sampler and queued control as a
// checksummed msgpack blob, keeping their ids.
func (d *Dispatcher) Snapshot() ([]byte, error) { return d.SnapshotWith(nil) }

// SnapshotWith is Snapshot with control c queued after the others: the
// snapshot OnControl writes before the control is committed.
func (d *Dispatcher) SnapshotWith(c *pb.Control) ([]byte, error) {
	d.mu.Lock()
	d.reap()
	st := dispatcherState{NextID: d.nextID, CtlSeq: d.ctlSeq, CtlEpoch: d.ctlEpoch}
	controls := d.controls
	if c != nil {
		controls = append(controls[:len(controls):len(controls)], c)
		if len(controls) > MaxControls { // as commit will trim it
			controls = controls[len(controls)-MaxControls:]
		}
		st.CtlSeq = max(st.CtlSeq, c.GetSeq())
	}
	sessions := make([]*session, 0, len(d.sessions))
	for _, s := range d.sessions {
		sessions = append(sessions, s)
	}
	for id, e := range d.samplers {
		st.Samplers = append(st.Samplers, savedSampler{ID: id, Spec: e.spec, Step: e.step})
	}
	for _, c := range controls {
		b, err := proto.Marshal(c)
		if err != nil {
			d.mu.Unlock()
			return nil, err
		}
		st.Controls = append(st.Controls, b)
	}
	d.mu.Unlock()
	for _, s := range sessions {
		s.mu.Lock()
		st.Sessions = append(st.Sessions, savedSession{ID: s.id, CtlStart: s.ctlStart, State: sessionState{
			Spec: s.plan.Config.Canonical(), Replans: s.plan.Replans, Reports: s.plan.Reports, Step: s.step, Name: s.name}})
		s.mu.Unlock()
	}
	sort.Slice(st.Sessions, func(a, b int) bool { return st.Sessions[a].ID < st.Sessions[b].ID })
	sort.Slice(st.Samplers, func(a, b int) bool { return st.Samplers[a].ID < st.Samplers[b].ID })
	return seal(kindSidecar, &st)
}

func restoredIDs(st dispatcherState) []uint64 {
	var ids []uint64
	for _, ss := range st.Sessions {
		ids = append(ids, ss.ID)
	}
	for _, sm := range st.Samplers {
		ids = append(ids, sm.ID)
	}
	return ids
}

// Restore loads a Snapshot into an empty dispatcher. A corrupt or
// incompatible blob is refused and the dispatcher is left empty.
func (d *Dispatcher) Restore(blob []byte) error {
	var st dispatcherState
	if err := unseal(kindSidecar, blob, &st); err != nil {
		return err
	}
	sessions := map[uint64]*session{}
	for _, ss := range st.Sessions {
		cfg, err := sched.ParseConfig(ss.State.Spec)
		if err != nil {
			return fmt.Errorf("%w: session %d: %v", ErrSnapshot, ss.ID, err)
		}
		plan, err := sched.NewPlan(cfg, ss.State.Replans, ss.State.Reports)
		if err != nil {
			return fmt.Errorf("%w: session %d: %v", ErrSnapshot, ss.ID, err)
		}
		sessions[ss.ID] = &session{id: ss.ID, name: ss.State.Name, plan: plan, step: ss.State.Step, ctlStart: ss.CtlStart}
	}
	samplers := map[uint64]*samplerEntry{}
	for _, sm := range st.Samplers {
		s, err := replay.Parse(sm.Spec)
		if err != nil {
			return fmt.Errorf("%w: sampler %d: %v", ErrSnapshot, sm.ID, err)
		}
		samplers[sm.ID] = &samplerEntry{s: s, spec: sm.Spec, step: sm.Step}
	}
	var controls []*pb.Control
	for _, b := range st.Controls {
		c := &pb.Control{}
		if err := proto.Unmarshal(b, c); err != nil {
			return fmt.Errorf("%w: control: %v", ErrSnapshot, err)
		}
		controls = append(controls, c)
	}
	// Ids come from one counter: a restored id past it, or used twice, would
	// let a new session or sampler silently replace a restored one.
	ids := map[uint64]bool{}
	for _, id := range restoredIDs(st) {
		if id == 0 || id > st.NextID || ids[id] {
			return fmt.Errorf("%w: id %d is used twice or lies outside the ids handed out (1..%d)", ErrSnapshot, id, st.NextID)
		}
		ids[id] = true
	}
	for _, c := range controls {
		if c.GetSeq() == 0 || c.GetSeq() > st.CtlSeq {
			return fmt.Errorf("%w: control %d lies outside the numbers handed out (1..%d)", ErrSnapshot, c.GetSeq(), st.CtlSeq)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.sessions)+len(d.samplers) > 0 {
		return fmt.Errorf("restore into a dispatcher that already holds sessions")
	}
	// Nobody holds the restored objects yet: they wait for their clients
	// like a closed connection's.
	now := d.now()
	for _, s := range sessions {
		s.lease = lease{orphaned: now}
	}
	for _, e := range samplers {
		e.lease = lease{orphaned: now}
	}
	d.orphans = len(sessions) + len(samplers)
	d.sessions, d.samplers, d.controls = sessions, samplers, controls
	d.nextID, d.ctlSeq = st.NextID, st.CtlSeq
	if st.CtlEpoch != 0 { // snapshots before epochs keep this process's
		d.ctlEpoch = st.CtlEpoch
	}
	return nil
}

package dispatch

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

func TestControlQueueAndStatus(t *testing.T) {
	d := New(Options{Server: "srv"})
	c := d.NewConn()
	c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	id := open(t, c, cosineSpec)
	getLR(c, id, 30, 4)
	post := func(at int64, steps int64) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
			AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: steps, Shape: "linear"}}}}}})
	}
	if r := post(50, 10); r.GetAck().GetPlanVersion() != 1 {
		t.Fatalf("post: %v", r)
	}
	if r := post(60, 0); r.GetError().GetField() != "steps" {
		t.Fatalf("a control no session can apply must be refused: %v", r)
	}
	if r := post(70, 5); r.GetAck().GetPlanVersion() != 2 {
		t.Fatalf("second post: %v", r)
	}
	poll := func(after uint64, step int64) []*pb.Control {
		return c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{AfterSeq: after, SessionId: id, Step: step}}}).GetControls().GetControls()
	}
	if got := poll(0, 41); len(got) != 2 || got[0].GetReplan().GetAtStep() != 50 {
		t.Fatalf("poll: %v", got)
	}
	if got := poll(1, 42); len(got) != 1 || got[0].GetSeq() != 2 {
		t.Fatalf("poll after 1: %v", got)
	}
	st := c.Handle(&pb.Request{Body: &pb.Request_GetStatus{GetStatus: &pb.GetStatus{}}}).GetStatus()
	if len(st.GetSessions()) != 1 || st.GetSessions()[0].GetStep() != 42 || st.GetControlSeq() != 2 ||
		st.GetSessions()[0].GetLr() != cosineRef(42) {
		t.Fatalf("status: %v", st)
	}
}

// A client that saw control n of a sidecar and resumes against a new one
// (restarted without a snapshot) must get every control posted there; one
// restored from a snapshot keeps the numbering.
func TestControlEpochs(t *testing.T) {
	post := func(c *Conn, at int64) uint64 {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
			AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5, Shape: "linear"}}}}}}).GetAck().GetPlanVersion()
	}
	poll := func(c *Conn, after, epoch uint64) *pb.Controls {
		return c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{AfterSeq: after,
			ControlEpoch: epoch}}}).GetControls()
	}
	hello := &pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}}
	oldD := New(Options{})
	old := oldD.NewConn()
	old.Handle(hello)
	open(t, old, cosineSpec)
	for i := int64(0); i < 3; i++ {
		post(old, 50+i)
	}
	seen := poll(old, 0, 0)
	epoch, last := seen.GetControlEpoch(), seen.GetControls()[2].GetSeq()
	if epoch == 0 || len(poll(old, last, epoch).GetControls()) != 0 {
		t.Fatalf("epoch %d; after the last seen, nothing new expected", epoch)
	}
	blob, err := oldD.Snapshot()
	if err != nil {
		t.Fatal(err)
	}

	fresh := New(Options{}).NewConn()
	fresh.Handle(hello)
	open(t, fresh, cosineSpec)
	post(fresh, 60)
	post(fresh, 61)
	post(fresh, 62)
	post(fresh, 63)
	got := poll(fresh, last, epoch)
	if n := len(got.GetControls()); n != 4 || got.GetControlEpoch() == epoch {
		t.Fatalf("a restarted sidecar: %d controls (want all 4), epoch %d (the old was %d)", n, got.GetControlEpoch(), epoch)
	}

	restored := New(Options{})
	if err := restored.Restore(blob); err != nil {
		t.Fatal(err)
	}
	rc := restored.NewConn()
	rc.Handle(hello)
	post(rc, 70)
	got = poll(rc, last, epoch)
	if len(got.GetControls()) != 1 || got.GetControlEpoch() != epoch {
		t.Fatalf("a restored sidecar keeps the numbering: %v", got)
	}
}

func TestDispatcherSnapshotRoundTrip(t *testing.T) {
	d := New(Options{})
	c := d.NewConn()
	c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	id := open(t, c, cosineSpec)
	c.Handle(&pb.Request{Body: &pb.Request_Replan{Replan: &pb.Replan{SessionId: id, AtStep: 40,
		Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 10, Shape: "cosine"}}}}})
	st, _ := structpb.NewStruct(samplerSpec)
	sid := c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{Spec: st}}}).GetSampler().GetSamplerId()
	blob, err := d.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	d2 := restoredFrom(t, blob)
	c2 := d2.NewConn()
	c2.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	a := getLR(c, id, 0, 100).GetLr().GetValues()
	b := getLR(c2, id, 0, 100).GetLr().GetValues() // the same id, the same re-planned schedule
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("restored session differs at %d", i)
		}
	}
	batches := func(c *Conn) []byte {
		return c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: sid, Step: 7, Count: 3}}}).GetBatches().GetIds()
	}
	if string(batches(c)) != string(batches(c2)) {
		t.Fatal("restored sampler differs")
	}
	// A new session after the restore does not reuse an id.
	if nid := open(t, c2, cosineSpec); nid <= sid {
		t.Fatalf("new id %d collides", nid)
	}
	for _, bad := range [][]byte{blob[:len(blob)-5], flip(blob, len(blob)/2), []byte("nope")} {
		if err := New(Options{}).Restore(bad); err == nil || !strings.Contains(err.Error(), "snapshot") {
			t.Errorf("corrupt snapshot accepted: %v", err)
		}
	}
	// A well-sealed snapshot whose ids or control numbers are inconsistent
	// (hand-edited, or another build's) is refused: restored, a new session
	// would take a restored one's id and replace it.
	c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
		AtStep: 60, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5}}}}}})
	blob, err = d.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*dispatcherState){
		"next_id below a restored id": func(st *dispatcherState) { st.NextID = 1 },
		"id used twice":               func(st *dispatcherState) { st.Samplers[0].ID = st.Sessions[0].ID },
		"id 0":                        func(st *dispatcherState) { st.Sessions[0].ID = 0 },
		"control past control_seq":    func(st *dispatcherState) { st.CtlSeq = 0 },
		"a name that is not UTF-8":    func(st *dispatcherState) { st.Sessions[0].State.Name = "a\xffb" },
	} {
		var st dispatcherState
		if err := unseal(kindSidecar, blob, &st); err != nil {
			t.Fatal(err)
		}
		edit(&st)
		bad, err := seal(kindSidecar, &st)
		if err != nil {
			t.Fatal(err)
		}
		if err := New(Options{}).Restore(bad); !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s: restored (%v)", name, err)
		}
	}
	// A session blob is not a sidecar snapshot.
	one := c.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: id, Step: 3}}}).GetState().GetMsgpack()
	if err := New(Options{}).Restore(one); err == nil || !strings.Contains(err.Error(), `"session"`) {
		t.Errorf("session blob restored as a sidecar snapshot: %v", err)
	}
}

// A control that no open session would receive is refused, naming the
// field: queued, it would wait for nobody (a typo in the name, no job yet).
func TestControlWithoutReceiverIsRefused(t *testing.T) {
	c := greeted(t)
	post := func(target string) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{TargetName: target,
			Replan: &pb.Replan{AtStep: 50, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 10, Shape: "linear"}}}}}})
	}
	if e := post("").GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_NOT_FOUND || !strings.Contains(e.GetMessage(), "no session is open") {
		t.Fatalf("no sessions: %v", e)
	}
	// A bad value is named first, session or not.
	bad := c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{
		Replan: &pb.Replan{AtStep: 50, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 10, Shape: "bogus"}}}}}}).GetError()
	if bad.GetField() != "shape" || !strings.Contains(bad.GetMessage(), `"bogus"`) {
		t.Fatalf("bad shape with no session: %v", bad)
	}
	st, _ := structpb.NewStruct(cosineSpec)
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: "demo"}}})
	if r.GetSession() == nil {
		t.Fatal(r)
	}
	e := post("dmeo").GetError()
	if e.GetField() != "target_name" || !strings.Contains(e.GetMessage(), `"dmeo"`) || !strings.Contains(e.GetMessage(), `open: "demo"`) {
		t.Fatalf("unknown name: %v", e)
	}
	if r := post("demo"); r.GetAck().GetPlanVersion() != 1 {
		t.Fatalf("the right name: %v", r)
	}
	if r := post(""); r.GetAck().GetPlanVersion() != 2 {
		t.Fatalf("no name, one session: %v", r)
	}
}

// A control is checked after the ones still queued for a session, in the
// order its client will apply them. A fresh session starts after the
// controls posted before its job opened (its first live session of the same
// name), unless its client says where it was.
func TestControlsQueuedAheadAndFreshSessions(t *testing.T) {
	d := New(Options{})
	c := greet(t, d)
	post := func(at int64) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{
			Replan: &pb.Replan{AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 10, Shape: "linear"}}}}}})
	}
	poll := func(id uint64) *pb.Controls {
		return c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{
			SessionId: id, Step: 0}}}).GetControls()
	}
	named := func(on *Conn, name string) uint64 {
		st, _ := structpb.NewStruct(cosineSpec)
		r := on.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: name}}})
		if r.GetSession() == nil {
			t.Fatal(r)
		}
		return r.GetSession().GetSessionId()
	}
	a0 := named(c, "A")
	if r := post(100); r.GetAck().GetPlanVersion() != 1 {
		t.Fatal(r)
	}
	// Not yet polled: the session's plan has no re-plan, but control 1 comes first.
	if e := post(50).GetError(); e.GetField() != "at_step" || !strings.Contains(e.GetMessage(), "previous re-plan's step (100)") {
		t.Fatalf("a control behind a queued one: %v", e)
	}
	b := named(c, "B") // another job, opened after control 1
	got := poll(b)
	if len(got.GetControls()) != 0 || got.GetLatestSeq() != 1 || got.GetControlEpoch() == 0 {
		t.Fatalf("a later job's first poll: %v", got)
	}
	a1 := named(c, "A") // job A's second rank, opened after control 1: the job had started
	for _, id := range []uint64{a1, a0} {
		if got := poll(id); len(got.GetControls()) != 1 || got.GetLatestSeq() != 1 {
			t.Fatalf("job A, session %d: %v", id, got)
		}
	}
	blob := c.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: a0, Step: 0}}}).GetState().GetMsgpack()
	r := c.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: blob}}})
	if got := poll(r.GetSession().GetSessionId()); len(got.GetControls()) != 1 {
		t.Fatalf("a restored rank of the live job A: %v", got)
	}
	// A job whose connections closed leaves orphans; a new job of that name
	// starts after the controls posted for the old one.
	old := greet(t, d)
	named(old, "C")
	if r := post(300); r.GetAck().GetPlanVersion() != 2 {
		t.Fatal(r)
	}
	old.Close()
	if got := poll(named(c, "C")); len(got.GetControls()) != 0 || got.GetLatestSeq() != 2 {
		t.Fatalf("a new job named like a finished one: %v", got)
	}
}

// Only rank src polls: the other ranks' sessions must not replay the queue
// (src may have skipped a control as late), and unnamed sessions, or a
// session restored for a client that has seen no control, are jobs of their own.
func TestControlsOfOtherRanksAndOtherJobs(t *testing.T) {
	d := New(Options{})
	c := greet(t, d)
	post := func(rp *pb.Replan) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: rp}}})
	}
	anneal := func(at int64) *pb.Replan {
		return &pb.Replan{AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 10, Shape: "linear"}}}
	}
	poll := func(id uint64, step int64) []*pb.Control {
		return c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{
			SessionId: id, Step: step}}}).GetControls().GetControls()
	}
	named := func(name string) uint64 {
		st, _ := structpb.NewStruct(cosineSpec)
		r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: name}}})
		return r.GetSession().GetSessionId()
	}
	src := named("demo")
	named("demo") // rank 1: never polls
	poll(src, 40)
	if r := post(anneal(50)); r.GetAck() == nil {
		t.Fatal(r)
	}
	if got := poll(src, 60); len(got) != 1 { // its client skips it: step 50 passed before this poll
		t.Fatalf("src: %v", got)
	}
	extend := &pb.Replan{AtStep: 80, Op: &pb.Replan_Extend{Extend: &pb.Extend{TotalSteps: 300}}}
	if r := post(extend); r.GetAck() == nil {
		t.Fatalf("an extend after a skipped anneal: %v", r)
	}
	// Two unnamed jobs: the second does not take what was posted for the first.
	first := named("")
	poll(first, 0)
	if r := post(anneal(500)); r.GetAck() == nil {
		t.Fatal(r)
	}
	if got := poll(named(""), 0); len(got) != 0 {
		t.Fatalf("a later unnamed job: %v", got)
	}
	// A session restored for a client that has seen no control (a checkpoint
	// from before its first poll, or a move from in-process): posted before it, not for it.
	blob := c.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: first, Step: 0}}}).GetState().GetMsgpack()
	r := c.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: blob, Name: "other"}}})
	if got := poll(r.GetSession().GetSessionId(), 0); len(got) != 0 {
		t.Fatalf("restored for a client with no position: %v", got)
	}
}

// A control is saved before anyone sees it: while it is being saved a poll
// sees neither it nor its number, and the snapshot written holds it. One that
// cannot be saved is refused and never queued; nobody saw its number, so the
// next post takes it.
func TestControlIsSavedBeforeItIsQueued(t *testing.T) {
	var d *Dispatcher
	var c *Conn
	var id uint64
	var saved []byte
	var whileSaving *pb.Controls
	failSave := false
	d = New(Options{OnControl: func(ctl *pb.Control, commit func()) error {
		whileSaving = c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{
			SessionId: id, Step: 1}}}).GetControls()
		if failSave {
			return errors.New("disk full")
		}
		var err error
		if saved, err = d.SnapshotWith(ctl); err != nil {
			return err
		}
		commit()
		return nil
	}})
	c = d.NewConn()
	c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	id = open(t, c, cosineSpec)
	post := func(at int64) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
			AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5, Shape: "linear"}}}}}})
	}
	poll := func(after uint64) *pb.Controls {
		return c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{
			SessionId: id, Step: 2, AfterSeq: after}}}).GetControls()
	}
	if r := post(50); r.GetAck().GetPlanVersion() != 1 {
		t.Fatalf("first post: %v", r)
	}
	if len(whileSaving.GetControls()) != 0 || whileSaving.GetLatestSeq() != 0 {
		t.Fatalf("a poll during the save saw %v; want no control and latest_seq 0", whileSaving)
	}
	restored := New(Options{})
	if err := restored.Restore(saved); err != nil {
		t.Fatal(err)
	}
	if n := len(restored.controls); n != 1 || restored.controls[0].GetSeq() != 1 || restored.ctlSeq != 1 {
		t.Fatalf("the snapshot written during the save: %d controls, seq %d; want control 1", n, restored.ctlSeq)
	}
	if got := poll(0); len(got.GetControls()) != 1 || got.GetLatestSeq() != 1 {
		t.Fatalf("after the post: %v", got)
	}

	failSave = true
	r := post(60)
	if e := r.GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_INTERNAL ||
		!strings.Contains(e.GetMessage(), "could not be saved") || !strings.Contains(e.GetMessage(), "disk full") {
		t.Fatalf("a control that cannot be saved must be refused, naming why: %v", r)
	}
	if got := poll(1); len(got.GetControls()) != 0 || got.GetLatestSeq() != 1 || whileSaving.GetLatestSeq() != 1 {
		t.Fatalf("after the refused post: %v (during it: %v); want nothing new, latest_seq 1", got, whileSaving)
	}
	failSave = false
	if r := post(70); r.GetAck().GetPlanVersion() != 2 {
		t.Fatalf("after a refused control the next is 2: %v", r)
	}
	got := poll(1)
	if len(got.GetControls()) != 1 || got.GetControls()[0].GetSeq() != 2 || got.GetControls()[0].GetReplan().GetAtStep() != 70 {
		t.Fatalf("queued after control 1: %v; want control 2 at step 70", got)
	}
}

// An OnControl that commits twice queues the control once; one that commits
// and then reports an error has queued it, so the post is acknowledged.
func TestOnControlCommitContract(t *testing.T) {
	d := New(Options{OnControl: func(_ *pb.Control, commit func()) error {
		commit()
		commit()
		return errors.New("fsync of the directory failed")
	}})
	c := d.NewConn()
	c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	id := open(t, c, cosineSpec)
	r := c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
		AtStep: 50, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5, Shape: "linear"}}}}}})
	if r.GetAck().GetPlanVersion() != 1 {
		t.Fatalf("a committed control must be acknowledged: %v", r)
	}
	got := c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{SessionId: id, Step: 1}}}).GetControls()
	if len(got.GetControls()) != 1 || got.GetLatestSeq() != 1 {
		t.Fatalf("committed twice: %v; want one control", got)
	}
}

// Two controls posted at once are each checked after the other, in the
// order they are queued: one at a step before a control queued ahead of it
// is refused, not queued to be skipped by every client.
func TestConcurrentPostsAreCheckedInOrder(t *testing.T) {
	var c *Conn
	var second chan *pb.Response
	post := func(at int64) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
			AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5, Shape: "linear"}}}}}})
	}
	d := New(Options{OnControl: func(ctl *pb.Control, commit func()) error {
		if ctl.GetReplan().GetAtStep() == 50 {
			// The second post arrives while the first is being saved.
			second = make(chan *pb.Response, 1)
			started := make(chan struct{})
			go func() { close(started); second <- post(40) }()
			<-started
			// Room for an unlocked check to run and queue it: without the
			// post lock it would be acknowledged well within this.
			time.Sleep(200 * time.Millisecond)
		}
		commit()
		return nil
	}})
	c = d.NewConn()
	c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	open(t, c, cosineSpec)
	if r := post(50); r.GetAck().GetPlanVersion() != 1 {
		t.Fatalf("first post: %v", r)
	}
	r := <-second
	if e := r.GetError(); e == nil || e.GetField() != "at_step" || !strings.Contains(e.GetMessage(), "previous re-plan's step (50)") {
		t.Fatalf("a control at step 40 posted while one at 50 was being queued: %v; want it refused naming at_step", r)
	}
	if n := len(d.controls); n != 1 {
		t.Fatalf("%d controls queued, want 1", n)
	}
}

// A job that had not polled yet when its sidecar restarted from a snapshot
// still gets the control posted for it: the client moves its session over
// (restore_state) and takes the job's start from the restored session. A
// fresh job of the same name does not take the earlier job's controls.
func TestUnpolledJobKeepsItsControlsAcrossARestart(t *testing.T) {
	st, _ := structpb.NewStruct(cosineSpec)
	d1 := New(Options{})
	c1 := greet(t, d1)
	id := c1.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: "demo"}}}).GetSession().GetSessionId()
	if r := c1.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
		AtStep: 50, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5}}}}}}); r.GetAck().GetPlanVersion() != 1 {
		t.Fatalf("post: %v", r)
	}
	state := c1.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: id, Step: 10}}}).GetState().GetMsgpack()
	snap, err := d1.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	d2 := restoredFrom(t, snap)
	c2 := greet(t, d2)
	moved := c2.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: state}}}).GetSession().GetSessionId()
	poll := func(c *Conn, id uint64) []*pb.Control {
		return c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{SessionId: id, Step: 11}}}).GetControls().GetControls()
	}
	if got := poll(c2, moved); len(got) != 1 || got[0].GetSeq() != 1 {
		t.Fatalf("the moved session of the unpolled job got %v; want control 1", got)
	}
	// Restored again, the job's client never comes back; a new job opens.
	d3 := restoredFrom(t, snap)
	c3 := greet(t, d3)
	fresh := c3.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: "demo"}}}).GetSession().GetSessionId()
	if got := poll(c3, fresh); len(got) != 0 {
		t.Fatalf("a fresh job got the earlier job's controls: %v", got)
	}
}

// restoredFrom is a new dispatcher restored from a snapshot.
func restoredFrom(t *testing.T, snap []byte) *Dispatcher {
	t.Helper()
	d := New(Options{})
	if err := d.Restore(snap); err != nil {
		t.Fatal(err)
	}
	return d
}

// A control for a step that every receiving job has passed, by the update
// count its last poll reported, is refused when posted, naming at_step:
// queued, each client would skip it. A look-ahead get_lr (lrs_at(9999))
// says nothing of what the job has applied.
func TestControlForAPassedStepIsRefused(t *testing.T) {
	d := New(Options{Server: "srv"})
	hello := &pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}}
	st, err := structpb.NewStruct(cosineSpec)
	if err != nil {
		t.Fatal(err)
	}
	openNamed := func(c *Conn, name string) uint64 {
		r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: name}}})
		if r.GetSession() == nil {
			t.Fatalf("open %s: %v", name, r)
		}
		return r.GetSession().GetSessionId()
	}
	job := d.NewConn()
	job.Handle(hello)
	id := openNamed(job, "a")
	rank1 := openNamed(job, "a") // a second rank of job a: it never polls
	poll := func(id uint64, step int64) {
		job.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{SessionId: id, Step: step, AfterSeq: 1 << 40}}})
	}
	post := func(at int64, target string) *pb.Response {
		return job.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{TargetName: target, Replan: &pb.Replan{
			AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5, Shape: "linear"}}}}}})
	}
	getLR(job, id, 9999, 4) // look-ahead: not a step the job has reached
	getLR(job, rank1, 9999, 4)
	if r := post(500, ""); r.GetAck() == nil {
		t.Fatalf("at 500, the job never polled: %v", r)
	}
	poll(id, 30)
	r := post(20, "")
	if e := r.GetError(); e.GetField() != "at_step" || !strings.Contains(e.GetMessage(), `job "a" had applied 30 updates`) {
		t.Fatalf("at 20, job at 30: %v", r)
	}
	if r := post(30, ""); r.GetAck() == nil {
		t.Fatalf("at 30, job at 30: %v", r)
	}
	getLR(job, id, 9999, 4)
	if r := post(600, "a"); r.GetAck() == nil {
		t.Fatalf("at 600 after a look-ahead to 9999, job at 30: %v", r)
	}
	poll(id, 41)
	if r := post(40, "a"); r.GetError().GetField() != "at_step" {
		t.Fatalf("at 40, job at 41: %v", r)
	}
	// A second job, just started, could still apply it; sent to a alone it
	// is refused.
	other := d.NewConn()
	other.Handle(hello)
	openNamed(other, "b")
	if r := post(40, ""); r.GetAck() == nil {
		t.Fatalf("at 40 with job b at 0: %v", r)
	}
	if r := post(40, "a"); r.GetError().GetField() != "at_step" {
		t.Fatalf("at 40 for a alone: %v", r)
	}
}

// A job that crashed and restarted from an earlier checkpoint opens a new
// session under its name; the old one, orphaned, has applied more updates.
// What the job has passed is what its live sessions report.
func TestPassedStepCountsLiveSessionsOnly(t *testing.T) {
	d := New(Options{})
	st, err := structpb.NewStruct(cosineSpec)
	if err != nil {
		t.Fatal(err)
	}
	openNamed := func(c *Conn) uint64 {
		r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: "job"}}})
		if r.GetSession() == nil {
			t.Fatal(r)
		}
		return r.GetSession().GetSessionId()
	}
	poll := func(c *Conn, id uint64, step int64) {
		c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{SessionId: id, Step: step, AfterSeq: 1 << 40}}})
	}
	post := func(c *Conn, at int64) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{TargetName: "job", Replan: &pb.Replan{
			AtStep: at, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 5, Shape: "linear"}}}}}})
	}
	crashed := greet(t, d)
	poll(crashed, openNamed(crashed), 100)
	crashed.Close() // its session is an orphan now
	restarted := greet(t, d)
	poll(restarted, openNamed(restarted), 60)
	if r := post(restarted, 80); r.GetAck() == nil {
		t.Fatalf("at 80, the restarted job at 60 (the orphan had reached 100): %v", r)
	}
	if r := post(restarted, 50); r.GetError().GetField() != "at_step" || !strings.Contains(r.GetError().GetMessage(), "had applied 60 updates") {
		t.Fatalf("at 50, the restarted job at 60: %v", r)
	}
	// With only the orphan left, nothing live has passed a step: a client
	// that reconnects judges the control when it polls.
	restarted.Close()
	if r := post(greet(t, d), 90); r.GetAck() == nil {
		t.Fatalf("at 90 with only orphans of the job: %v", r)
	}
}

// The trial of a new control replays the queued controls its client will
// apply: those at or after the step the job has applied, not the step of a
// look-ahead get_lr.
func TestTrialReplaysQueuedControlsFromTheAppliedStep(t *testing.T) {
	c := greeted(t)
	id := open(t, c, cosineSpec)
	c.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{SessionId: id, Step: 10, AfterSeq: 1 << 40}}})
	stage, err := structpb.NewStruct(map[string]any{"kind": "constant", "peak_lr": 2.0})
	if err != nil {
		t.Fatal(err)
	}
	post := func(rp *pb.Replan) *pb.Response {
		return c.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: rp}}})
	}
	if r := post(&pb.Replan{AtStep: 50, Op: &pb.Replan_NewStage{NewStage: &pb.NewStage{Schedule: stage}}}); r.GetAck() == nil {
		t.Fatalf("new stage at 50: %v", r)
	}
	getLR(c, id, 9999, 4) // look-ahead
	minLR := 1.5          // below the new stage's 2.0, above the cosine's rate at 60
	if r := post(&pb.Replan{AtStep: 60, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 10, Shape: "linear", MinLr: &minLR}}}); r.GetAck() == nil {
		t.Fatalf("anneal at 60 to 1.5 after the queued stage at 2.0: %v", r)
	}
	// Without the stage the anneal would raise the rate: the check is live.
	fresh := greeted(t)
	other := open(t, fresh, cosineSpec)
	fresh.Handle(&pb.Request{Body: &pb.Request_PollControl{PollControl: &pb.PollControl{SessionId: other, Step: 10, AfterSeq: 1 << 40}}})
	r := fresh.Handle(&pb.Request{Body: &pb.Request_PostControl{PostControl: &pb.PostControl{Replan: &pb.Replan{
		AtStep: 60, Op: &pb.Replan_Anneal{Anneal: &pb.Anneal{Steps: 10, Shape: "linear", MinLr: &minLR}}}}}})
	if r.GetError().GetField() != "min_lr" {
		t.Fatalf("anneal at 60 to 1.5 on the cosine alone: %v", r)
	}
}

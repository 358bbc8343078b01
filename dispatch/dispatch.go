// Package dispatch is rewarm's single request handler. The Unix-socket server
// and the in-process (gopy) binding both hand it serialized rewarm.v1.Request
// frames and send back the serialized Response, so the two transports cannot
// disagree.
//
// A Dispatcher owns the sessions; a Conn is one client's view of it and
// enforces the handshake (Hello first, matching protocol version).
package dispatch

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewarm/rewarm/internal/specfield"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/replay"
	"github.com/rewarm/rewarm/sched"
)

// ProtocolVersion is the wire protocol this build speaks.
const ProtocolVersion = uint32(pb.ProtocolVersion_PROTOCOL_VERSION_CURRENT)

// Limits on a single request, so one client cannot make the server
// allocate without bound.
const (
	// MaxCount caps the updates one GetLR or GetBatches request asks for.
	MaxCount = 1 << 16
	// MaxGroups caps the param groups of one GetLR request.
	MaxGroups = 1 << 12
	// MaxValues caps count × groups of one GetLR reply, and the ids of one
	// rank's batch.
	MaxValues = 1 << 20
	// MaxName caps a session's name in bytes: a label, quoted in status and
	// in control refusals.
	MaxName = 256
)

// Defaults for Options.
const (
	// DefaultSessions caps the sessions and samplers held at once.
	DefaultSessions = 1 << 16
	// DefaultMaxRequest caps a serialized request on every transport, so a
	// request the sidecar refuses is refused in-process too.
	DefaultMaxRequest = 16 << 20
	// DefaultOrphanTTL is how long a closed connection's sessions and
	// samplers wait for a client to come back for them.
	DefaultOrphanTTL = time.Hour
)

// Options configure a Dispatcher. The zero value is usable.
type Options struct {
	// Server names this process in HelloReply, for example
	// "rewarm-sidecar/0.1.0" ("rewarm" when empty).
	Server string
	// MaxSessions caps open sessions and samplers together (DefaultSessions
	// when 0).
	MaxSessions int
	// OrphanTTL is how long the sessions and samplers of a closed connection
	// (and those restored from a snapshot) are kept for a reconnecting client,
	// which claims them by using them; after it they are freed
	// (DefaultOrphanTTL when 0).
	OrphanTTL time.Duration
	// MaxRequest caps a serialized request in bytes (DefaultMaxRequest when 0).
	MaxRequest int
	// Logger receives handler panics and refused requests (slog.Default() when nil).
	Logger *slog.Logger
	// OnControl, when set, is called with a control that is numbered but not
	// yet queued (no poll sees it). It saves the control (the sidecar writes
	// SnapshotWith(c)) and then calls commit, which queues it, before any
	// other snapshot is taken: so an acknowledged control survives a crash,
	// and a snapshot never holds one that was refused. An error (or no
	// commit) refuses the control.
	OnControl func(c *pb.Control, commit func()) error
	// Observe, when set, is called after every request with its method name,
	// its error code (ERROR_CODE_UNSPECIFIED on success) and its duration.
	Observe func(method string, code pb.ErrorCode, d time.Duration)
}

// Dispatcher holds the sessions and answers requests. It is safe for
// concurrent use by many Conns.
type Dispatcher struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[uint64]*session
	samplers map[uint64]*samplerEntry
	nextID   uint64
	controls []*pb.Control
	ctlSeq   uint64
	// postMu makes posts one at a time, so controls are checked against
	// those queued before them, then numbered and queued in order.
	postMu sync.Mutex
	// ctlEpoch names this numbering of controls, so a client that resumes
	// with a number from another sidecar is not taken to have seen ours.
	ctlEpoch uint64
	// instance names this dispatcher in HelloReply; never snapshotted.
	instance uint64
	// conns numbers connections; orphans counts objects whose connection
	// closed (owner 0), so a reap with none to find costs nothing.
	conns   uint64
	orphans int
	now     func() time.Time
}

// lease ties a session or sampler to the connection that uses it, so the
// objects of a client that went away are freed once no one claims them.
type lease struct {
	owner    uint64    // the connection using it; 0: orphaned
	orphaned time.Time // when owner became 0
}

type samplerEntry struct {
	lease
	s    *replay.Sampler
	spec map[string]any
	// step is the last step a client asked for; it only feeds status output.
	step int64
}

type session struct {
	lease
	id   uint64
	name string
	// mu guards plan; the rates are a pure function of it.
	mu   sync.Mutex
	plan *sched.Plan
	// step is the last step a client asked about; it only feeds status output.
	step int64
	// ctlStart is where the controls of a client that has seen none start:
	// the numbering when the job opened, so that a job takes the controls
	// posted since it started and not those posted for earlier jobs. Ranks
	// are one job when they share a (non-empty) name: a rank that opens
	// late takes the start of the first live one.
	ctlStart uint64
	// ctlSeen is the newest control its client has been sent or skipped
	// past, once it has polled. Guarded by mu, as polled is.
	ctlSeen uint64
	polled  bool
	// applied is the update count its client reported when it last polled
	// (0 before then). Unlike step, which a look-ahead get_lr moves, the job
	// is at or past it, so a control for an earlier step would be skipped.
	// Guarded by mu.
	applied int64
}

// New returns an empty Dispatcher.
func New(opts Options) *Dispatcher {
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultSessions
	}
	if opts.Server == "" {
		opts.Server = "rewarm"
	}
	if opts.MaxRequest <= 0 {
		opts.MaxRequest = DefaultMaxRequest
	}
	if opts.OrphanTTL <= 0 {
		opts.OrphanTTL = DefaultOrphanTTL
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Dispatcher{opts: opts, log: log, sessions: map[uint64]*session{}, samplers: map[uint64]*samplerEntry{},
		now: time.Now, ctlEpoch: newEpoch(), instance: newEpoch()}
}

// newEpoch is a random nonzero number.
func newEpoch() uint64 {
	for {
		if e := rand.Uint64(); e != 0 {
			return e
		}
	}
}

// Conn is one client connection. It is not safe for concurrent use; each
// transport connection (or in-process handle) gets its own.
type Conn struct {
	d       *Dispatcher
	id      uint64
	greeted bool
}

// NewConn starts a connection that must begin with Hello.
func (d *Dispatcher) NewConn() *Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conns++
	return &Conn{d: d, id: d.conns}
}

// Close ends the connection: its sessions and samplers become orphans,
// kept for Options.OrphanTTL for a client that reconnects and uses them.
func (c *Conn) Close() {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for _, s := range d.sessions {
		d.orphan(&s.lease, c.id, now)
	}
	for _, e := range d.samplers {
		d.orphan(&e.lease, c.id, now)
	}
}

func (d *Dispatcher) orphan(l *lease, conn uint64, now time.Time) {
	if l.owner == conn {
		l.owner, l.orphaned = 0, now
		d.orphans++
	}
}

// claim gives an orphan to the connection that uses it; the caller holds d.mu.
func (d *Dispatcher) claim(l *lease, conn uint64) {
	if l.owner == 0 {
		l.owner = conn
		d.orphans--
	}
}

// reap frees the orphans older than the TTL; the caller holds d.mu.
func (d *Dispatcher) reap() {
	if d.orphans == 0 {
		return
	}
	cutoff := d.now().Add(-d.opts.OrphanTTL)
	for id, s := range d.sessions {
		if s.owner == 0 && !s.orphaned.After(cutoff) {
			delete(d.sessions, id)
			d.orphans--
		}
	}
	for id, e := range d.samplers {
		if e.owner == 0 && !e.orphaned.After(cutoff) {
			delete(d.samplers, id)
			d.orphans--
		}
	}
}

// reserve makes room for one more object; the caller holds d.mu.
func (d *Dispatcher) reserve() error {
	d.reap()
	if n := len(d.sessions) + len(d.samplers); n >= d.opts.MaxSessions {
		return fail(pb.ErrorCode_ERROR_CODE_RESOURCE_EXHAUSTED, "",
			"too many open sessions and samplers (%d sessions, %d samplers, limit %d); close unused ones",
			len(d.sessions), len(d.samplers), d.opts.MaxSessions)
	}
	return nil
}

// touch claims the session or sampler a request names, if it is an orphan.
func (c *Conn) touch(req *pb.Request) {
	m := req.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("body"))
	if fd == nil || fd.Message() == nil {
		return
	}
	var id uint64
	switch b := m.Get(fd).Message().Interface().(type) {
	case interface{ GetSessionId() uint64 }:
		id = b.GetSessionId()
	case interface{ GetSamplerId() uint64 }:
		id = b.GetSamplerId()
	default:
		return
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.sessions[id]; ok {
		d.claim(&s.lease, c.id)
	} else if e, ok := d.samplers[id]; ok {
		d.claim(&e.lease, c.id)
	}
}

// Sessions returns the number of open sessions.
func (d *Dispatcher) Sessions() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sessions)
}

// HandleFrame decodes one serialized Request, handles it and returns the
// serialized Response. It never panics: a malformed frame or a handler panic
// becomes an Error response.
func (c *Conn) HandleFrame(frame []byte) []byte {
	req := &pb.Request{}
	var resp *pb.Response
	if max := c.d.opts.MaxRequest; len(frame) > max {
		resp = errorResponse(0, pb.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, "",
			fmt.Sprintf("frame too large: %d bytes, the limit is %d", len(frame), max))
	} else if err := proto.Unmarshal(frame, req); err != nil {
		resp = errorResponse(0, pb.ErrorCode_ERROR_CODE_MALFORMED, "", fmt.Sprintf("frame is not a rewarm.v1.Request: %v", err))
	} else {
		resp = c.Handle(req)
	}
	out, err := proto.Marshal(resp)
	if err != nil {
		out, _ = proto.Marshal(errorResponse(req.GetId(), pb.ErrorCode_ERROR_CODE_INTERNAL, "", "encode response: "+err.Error()))
	}
	return out
}

// Handle answers one Request. A panic in a handler is recovered, logged and
// reported as ERROR_CODE_INTERNAL.
func (c *Conn) Handle(req *pb.Request) (resp *pb.Response) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			c.d.log.Error("handler panic", "panic", r, "stack", string(debug.Stack()))
			resp = errorResponse(req.GetId(), pb.ErrorCode_ERROR_CODE_INTERNAL, "", fmt.Sprintf("internal error: %v", r))
		}
		if obs := c.d.opts.Observe; obs != nil {
			obs(Method(req), resp.GetError().GetCode(), time.Since(start))
		}
	}()
	resp = c.handle(req)
	resp.Id = req.GetId()
	return resp
}

// Method names a request by its body type, for metrics and logs.
func Method(req *pb.Request) string {
	if req.Body == nil {
		return "unknown"
	}
	return string(req.ProtoReflect().WhichOneof(req.ProtoReflect().Descriptor().Oneofs().ByName("body")).Name())
}

// status is an error that carries a wire error code and, for spec errors,
// the field at fault.
type status struct {
	code  pb.ErrorCode
	field string
	msg   string
}

func (s *status) Error() string { return s.msg }

func fail(code pb.ErrorCode, field, format string, args ...any) *status {
	return &status{code: code, field: field, msg: fmt.Sprintf(format, args...)}
}

func errorResponse(id uint64, code pb.ErrorCode, field, msg string) *pb.Response {
	return &pb.Response{Id: id, Body: &pb.Response_Error{Error: &pb.Error{Code: code, Message: msg, Field: field}}}
}

func toResponse(err error) *pb.Response {
	var st *status
	if errors.As(err, &st) {
		return errorResponse(0, st.code, st.field, st.msg)
	}
	var fe *specfield.Error
	if errors.As(err, &fe) {
		return errorResponse(0, pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fe.Field, err.Error())
	}
	return errorResponse(0, pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "", err.Error())
}

func (c *Conn) handle(req *pb.Request) *pb.Response {
	if h, ok := req.Body.(*pb.Request_Hello); ok {
		return c.hello(h.Hello)
	}
	if req.Body == nil {
		msg := "request has no body"
		if len(req.ProtoReflect().GetUnknown()) > 0 {
			msg = "unknown request type: this server speaks protocol version " + fmt.Sprint(ProtocolVersion)
		}
		return errorResponse(0, pb.ErrorCode_ERROR_CODE_UNIMPLEMENTED, "", msg)
	}
	if !c.greeted {
		return errorResponse(0, pb.ErrorCode_ERROR_CODE_HANDSHAKE_REQUIRED, "", "send Hello before any other request")
	}
	var (
		resp *pb.Response
		err  error
	)
	c.touch(req)
	switch b := req.Body.(type) {
	case *pb.Request_OpenSession:
		resp, err = c.d.open(b.OpenSession, c.id)
	case *pb.Request_GetLr:
		resp, err = c.d.getLR(b.GetLr)
	case *pb.Request_GetState:
		resp, err = c.d.getState(b.GetState)
	case *pb.Request_RestoreState:
		resp, err = c.d.restore(b.RestoreState, c.id)
	case *pb.Request_CloseSession:
		resp, err = c.d.close(b.CloseSession)
	case *pb.Request_Replan:
		resp, err = c.d.replan(b.Replan)
	case *pb.Request_Report:
		resp, err = c.d.report(b.Report)
	case *pb.Request_Preview:
		resp, err = preview(b.Preview)
	case *pb.Request_OpenSampler:
		resp, err = c.d.openSampler(b.OpenSampler, c.id)
	case *pb.Request_GetBatches:
		resp, err = c.d.getBatches(b.GetBatches)
	case *pb.Request_GetQuotas:
		resp, err = c.d.getQuotas(b.GetQuotas)
	case *pb.Request_GetModPlan:
		resp, err = modPlan(b.GetModPlan)
	case *pb.Request_GetStatus:
		resp, err = c.d.status()
	case *pb.Request_PostControl:
		resp, err = c.d.postControl(b.PostControl)
	case *pb.Request_PollControl:
		resp, err = c.d.pollControl(b.PollControl)
	default:
		err = fail(pb.ErrorCode_ERROR_CODE_UNIMPLEMENTED, "", "request type %T is not implemented", b)
	}
	if err != nil {
		return toResponse(err)
	}
	return resp
}

func (c *Conn) hello(h *pb.Hello) *pb.Response {
	if h.GetProtocolVersion() != ProtocolVersion {
		return errorResponse(0, pb.ErrorCode_ERROR_CODE_PROTOCOL_MISMATCH, "protocol_version",
			fmt.Sprintf("protocol version mismatch: client %q speaks %d, server %q speaks %d",
				h.GetClient(), h.GetProtocolVersion(), c.d.opts.Server, ProtocolVersion))
	}
	c.greeted = true
	return &pb.Response{Body: &pb.Response_Hello{Hello: &pb.HelloReply{
		ProtocolVersion: ProtocolVersion,
		Server:          c.d.opts.Server,
		ScheduleKinds:   sched.Kinds(),
		Instance:        c.d.instance,
	}}}
}

// add opens a session. A named one takes the control start of its job's
// first live rank; resuming (a client moving its session over) it also
// takes that of the job's orphaned sessions, such as those a restarted
// sidecar restored, while a fresh job ignores a dead one's.
func (d *Dispatcher) add(plan *sched.Plan, name string, step int64, owner uint64, resuming bool) (*pb.Response, error) {
	if len(name) > MaxName {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "name", "name of %d bytes: at most %d", len(name), MaxName)
	}
	canon, err := structpb.NewStruct(plan.Config.Canonical())
	if err != nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INTERNAL, "", "encode canonical spec: %v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.reserve(); err != nil {
		return nil, err
	}
	d.nextID++
	s := &session{lease: lease{owner: owner}, id: d.nextID, name: name, plan: plan, step: step, ctlStart: d.ctlSeq}
	if name != "" {
		for _, o := range d.sessions {
			if (o.owner != 0 || resuming) && o.name == name {
				s.ctlStart = min(s.ctlStart, o.ctlStart)
			}
		}
	}
	d.sessions[s.id] = s
	return &pb.Response{Body: &pb.Response_Session{Session: &pb.SessionInfo{
		SessionId: s.id, Schedule: canon, Step: step, Name: name, PlanVersion: version(plan),
	}}}, nil
}

// version counts the changes made to a plan; cached rates from an older
// version are stale.
func version(p *sched.Plan) uint64 { return uint64(len(p.Replans) + len(p.Reports)) }

func (d *Dispatcher) open(r *pb.OpenSession, owner uint64) (*pb.Response, error) {
	if r.GetSchedule() == nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "schedule", "open_session: missing schedule spec")
	}
	cfg, err := sched.ParseConfig(specMap(r.GetSchedule()))
	if err != nil {
		return nil, err
	}
	plan, err := sched.NewPlan(cfg, nil, nil)
	if err != nil {
		return nil, err
	}
	return d.add(plan, r.GetName(), 0, owner, false)
}

func (d *Dispatcher) lookup(id uint64) (*session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	if !ok {
		return nil, fail(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "session_id", "no session with id %d", id)
	}
	return s, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func groupsOf(in []*pb.Group) ([]sched.Group, error) {
	if len(in) == 0 {
		return []sched.Group{{Multiplier: 1, WDMult: 1}}, nil
	}
	out := make([]sched.Group, len(in))
	for i, g := range in {
		field := fmt.Sprintf("groups[%d]", i)
		if !finite(g.GetMultiplier()) || g.GetMultiplier() < 0 {
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, field+".multiplier",
				"get_lr: %s.multiplier = %s: must be a finite number >= 0", field, specfield.FormatValue(g.GetMultiplier()))
		}
		if !finite(g.GetWdMult()) || g.GetWdMult() < 0 {
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, field+".wd_mult",
				"get_lr: %s.wd_mult = %s: must be a finite number >= 0", field, specfield.FormatValue(g.GetWdMult()))
		}
		out[i] = sched.Group{Multiplier: g.GetMultiplier(), WDMult: g.GetWdMult()}
		for _, b := range []struct {
			name string
			set  bool
			v    float64
			dst  **float64
		}{{"min_lr", g.MinLr != nil, g.GetMinLr(), &out[i].MinLR}, {"peak_lr", g.PeakLr != nil, g.GetPeakLr(), &out[i].PeakLR}} {
			if !b.set {
				continue
			}
			if !finite(b.v) || b.v < 0 {
				return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, field+"."+b.name,
					"get_lr: %s.%s = %s: must be a finite number >= 0", field, b.name, specfield.FormatValue(b.v))
			}
			v := b.v
			*b.dst = &v
		}
		if out[i].MinLR != nil && out[i].PeakLR != nil && *out[i].MinLR > *out[i].PeakLR {
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, field+".min_lr",
				"get_lr: %s.min_lr = %g: must be <= its peak_lr (%g)", field, *out[i].MinLR, *out[i].PeakLR)
		}
	}
	return out, nil
}

func (d *Dispatcher) getLR(r *pb.GetLR) (*pb.Response, error) {
	s, err := d.lookup(r.GetSessionId())
	if err != nil {
		return nil, err
	}
	step := r.GetStep()
	if step < 0 {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step", "get_lr: step = %d: must be >= 0", step)
	}
	count := int64(r.GetCount())
	if count == 0 {
		count = 1
	}
	if count > MaxCount {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "count", "get_lr: count = %d: must be <= %d", count, MaxCount)
	}
	if step > math.MaxInt64-count {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step", "get_lr: step = %d: too large", step)
	}
	if len(r.GetGroups()) > MaxGroups || int64(len(r.GetGroups()))*count > MaxValues {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "groups",
			"get_lr: %d groups x %d steps: at most %d groups and %d values per request", len(r.GetGroups()), count, MaxGroups, MaxValues)
	}
	groups, err := groupsOf(r.GetGroups())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	plan := s.plan
	// An inverted range (cyclic's min_lr above its peak_lr, a onecycle with
	// div_factor·final_div_factor < 1) has no affine map onto a group's
	// [min, peak] that keeps the schedule's shape.
	schedLo, schedHi := plan.GroupRange(sched.Group{})
	for i, g := range groups {
		if g.MinLR == nil && g.PeakLR == nil {
			continue
		}
		if schedLo > schedHi {
			name := "min_lr"
			if g.MinLR == nil {
				name = "peak_lr"
			}
			field := fmt.Sprintf("groups[%d].%s", i, name)
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, field,
				"get_lr: %s: the schedule's range is inverted (its low end %g is above its peak %g), so no group range maps onto it; scale the group with a multiplier instead",
				field, schedLo, schedHi)
		}
		// One end given: the other is the schedule's, and the two must not cross.
		if (g.MinLR == nil) == (g.PeakLR == nil) {
			continue
		}
		if lo, hi := plan.GroupRange(g); lo > hi {
			name, v, end, other := "min_lr", lo, "peak_lr", hi
			if g.PeakLR != nil {
				name, v, end, other = "peak_lr", hi, "min_lr", lo
			}
			field := fmt.Sprintf("groups[%d].%s", i, name)
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, field,
				"get_lr: %s = %g: crosses the schedule's %s (%g), so the group's rate would move against the schedule; give both ends",
				field, v, end, other)
		}
	}
	ng := int64(len(groups))
	out := &pb.LRValues{Step: step, Count: uint32(count), Groups: uint32(ng), PlanVersion: version(plan),
		Values: make([]float64, 0, ng*count)}
	_, hasMom := plan.Momentum(step)
	_, hasWD := plan.WeightDecay(step)
	if hasMom {
		out.Momentum = make([]float64, 0, count)
	}
	if hasWD {
		out.WeightDecay = make([]float64, 0, ng*count)
	}
	for i := int64(0); i < count; i++ {
		n := step + i
		lr := plan.LR(n)
		if math.IsInf(lr, 0) || math.IsNaN(lr) {
			// A schedule that grows (gamma > 1) overflows in the end: never
			// hand an optimizer that. The window stops short of it; the
			// update that would use it (or the one after, fetched with it)
			// gets the error.
			if i < 2 {
				return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step",
					"get_lr: the rate at step %d is %v: the schedule grows past what a float64 holds (a gamma above 1?)", n, lr)
			}
			out.Count = uint32(i)
			break
		}
		for _, g := range groups {
			out.Values = append(out.Values, plan.GroupLR(lr, g))
		}
		if hasMom {
			m, _ := plan.Momentum(n)
			out.Momentum = append(out.Momentum, m)
		}
		if hasWD {
			wd, _ := plan.WeightDecay(n)
			for _, g := range groups {
				out.WeightDecay = append(out.WeightDecay, g.WDMult*wd)
			}
		}
	}
	s.step = step
	return &pb.Response{Body: &pb.Response_Lr{Lr: out}}, nil
}

// toReplan converts a wire re-plan.
func toReplan(r *pb.Replan) (sched.Replan, error) {
	rp := sched.Replan{At: r.GetAtStep()}
	switch op := r.Op.(type) {
	case *pb.Replan_Extend:
		rp.Op, rp.Total, rp.Mode = sched.OpExtend, op.Extend.GetTotalSteps(), op.Extend.GetMode()
	case *pb.Replan_Anneal:
		rp.Op, rp.Steps, rp.Shape = sched.OpAnneal, op.Anneal.GetSteps(), op.Anneal.GetShape()
		if op.Anneal.MinLr != nil {
			v := op.Anneal.GetMinLr()
			rp.MinLR = &v
		}
	case *pb.Replan_NewStage:
		if op.NewStage.GetSchedule() == nil {
			return rp, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "new_stage.schedule", "replan: new_stage needs a schedule")
		}
		rp.Op, rp.Spec = sched.OpNewStage, specMap(op.NewStage.GetSchedule())
	default:
		return rp, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "op", "replan: give extend, anneal or new_stage")
	}
	return rp, nil
}

func (d *Dispatcher) replan(r *pb.Replan) (*pb.Response, error) {
	s, err := d.lookup(r.GetSessionId())
	if err != nil {
		return nil, err
	}
	rp, err := toReplan(r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.plan.Replan(rp); err != nil {
		return nil, err
	}
	return d.info(s)
}

func (d *Dispatcher) report(r *pb.Report) (*pb.Response, error) {
	s, err := d.lookup(r.GetSessionId())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.plan.Report(sched.Report{Step: r.GetStep(), Metric: r.GetMetric()}); err != nil {
		return nil, err
	}
	return &pb.Response{Body: &pb.Response_Ack{Ack: &pb.Ack{PlanVersion: version(s.plan)}}}, nil
}

// info describes a session; the caller holds s.mu.
func (d *Dispatcher) info(s *session) (*pb.Response, error) {
	canon, err := structpb.NewStruct(s.plan.Config.Canonical())
	if err != nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INTERNAL, "", "encode canonical spec: %v", err)
	}
	return &pb.Response{Body: &pb.Response_Session{Session: &pb.SessionInfo{
		SessionId: s.id, Schedule: canon, Step: s.step, Name: s.name, PlanVersion: version(s.plan),
	}}}, nil
}

// MaxPreview caps the points of one Preview request.
const MaxPreview = 1 << 20

func preview(r *pb.Preview) (*pb.Response, error) {
	if r.GetSchedule() == nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "schedule", "preview: missing schedule spec")
	}
	cfg, err := sched.ParseConfig(specMap(r.GetSchedule()))
	if err != nil {
		return nil, err
	}
	plan, err := sched.NewPlan(cfg, nil, nil)
	if err != nil {
		return nil, err
	}
	steps := r.GetSteps()
	if len(steps) == 0 {
		stride := r.GetStride()
		if stride == 0 {
			stride = 1
		}
		if stride < 0 || r.GetStart() < 0 {
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "stride", "preview: start and stride must be >= 0")
		}
		count := int64(r.GetCount())
		if count > MaxPreview {
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "count", "preview: count = %d: at most %d points", count, MaxPreview)
		}
		if count > 1 && stride > (math.MaxInt64-r.GetStart())/(count-1) {
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "stride",
				"preview: start %d + (count %d - 1) x stride %d is past the largest step", r.GetStart(), count, stride)
		}
		steps = make([]int64, count)
		for i := range steps {
			steps[i] = r.GetStart() + int64(i)*stride
		}
	}
	if len(steps) > MaxPreview {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "steps", "preview: %d steps: at most %d points", len(steps), MaxPreview)
	}
	out := &pb.PreviewValues{Steps: steps, Lr: make([]float64, len(steps))}
	for i, n := range steps {
		if n < 0 {
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("steps[%d]", i), "preview: steps[%d] = %d: must be >= 0", i, n)
		}
		out.Lr[i] = plan.LR(n)
		if m, ok := plan.Momentum(n); ok {
			out.Momentum = append(out.Momentum, m)
		}
		if wd, ok := plan.WeightDecay(n); ok {
			out.WeightDecay = append(out.WeightDecay, wd)
		}
	}
	for _, ph := range plan.Phases() {
		out.Phases = append(out.Phases, &pb.Phase{Name: ph.Name, Start: ph.Start})
	}
	return &pb.Response{Body: &pb.Response_Preview{Preview: out}}, nil
}

func (d *Dispatcher) getState(r *pb.GetState) (*pb.Response, error) {
	s, err := d.lookup(r.GetSessionId())
	if err != nil {
		return nil, err
	}
	if r.GetStep() < 0 {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step", "get_state: step = %d: must be >= 0", r.GetStep())
	}
	s.mu.Lock()
	st := sessionState{Spec: s.plan.Config.Canonical(), Replans: s.plan.Replans, Reports: s.plan.Reports,
		Step: r.GetStep(), Name: s.name}
	blob, err := encodeSnapshot(st)
	s.mu.Unlock()
	if err != nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INTERNAL, "", "%v", err)
	}
	return &pb.Response{Body: &pb.Response_State{State: &pb.StateBlob{Msgpack: blob}}}, nil
}

func (d *Dispatcher) restore(r *pb.RestoreState, owner uint64) (*pb.Response, error) {
	st, err := decodeSnapshot(r.GetMsgpack())
	if err != nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "msgpack", "restore_state: %v", err)
	}
	cfg, err := sched.ParseConfig(st.Spec)
	if err != nil {
		return nil, fmt.Errorf("restore_state: snapshot spec: %w", err)
	}
	plan, err := sched.NewPlan(cfg, st.Replans, st.Reports)
	if err != nil {
		return nil, fmt.Errorf("restore_state: snapshot re-plans: %w", err)
	}
	name := r.GetName()
	if name == "" {
		name = st.Name
	}
	// A client moving its own session over continues its job: one whose
	// sidecar restarted finds the job's start on the restored session.
	return d.add(plan, name, st.Step, owner, true)
}

func (d *Dispatcher) close(r *pb.CloseSession) (*pb.Response, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id := r.GetSessionId()
	var l *lease
	if s, ok := d.sessions[id]; ok {
		l = &s.lease
	} else if e, ok := d.samplers[id]; ok {
		l = &e.lease
	} else {
		return nil, fail(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "session_id", "no session or sampler with id %d", id)
	}
	if l.owner == 0 {
		d.orphans--
	}
	delete(d.sessions, id)
	delete(d.samplers, id)
	return &pb.Response{Body: &pb.Response_Closed{Closed: &pb.Closed{}}}, nil
}

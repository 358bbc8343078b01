package dispatch

import (
	"bytes"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/sched"
)

func greeted(t *testing.T) *Conn {
	t.Helper()
	return greet(t, New(Options{}))
}

func open(t *testing.T, c *Conn, spec map[string]any) uint64 {
	t.Helper()
	st, err := structpb.NewStruct(spec)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	if r.GetSession() == nil {
		t.Fatalf("open failed: %v", r)
	}
	return r.GetSession().GetSessionId()
}

func getLR(c *Conn, id uint64, step int64, count uint32, mult ...float64) *pb.Response {
	var groups []*pb.Group
	for _, m := range mult {
		groups = append(groups, &pb.Group{Multiplier: m, WdMult: 1})
	}
	return c.Handle(&pb.Request{Body: &pb.Request_GetLr{GetLr: &pb.GetLR{SessionId: id, Step: step, Count: count, Groups: groups}}})
}

var cosineSpec = map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10.0, "total_steps": 110.0}

// closed form, written out independently of package sched
func cosineRef(n int64) float64 {
	switch {
	case n < 10:
		return float64(n) / 10
	case n > 110:
		return 0.1
	}
	return 0.1 + 0.9*0.5*(1+math.Cos(math.Pi*float64(n-10)/100))
}

func TestHandshake(t *testing.T) {
	c := New(Options{Server: "srv"}).NewConn()
	st, _ := structpb.NewStruct(cosineSpec)
	r := c.Handle(&pb.Request{Id: 7, Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	if r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_HANDSHAKE_REQUIRED || r.GetId() != 7 {
		t.Fatalf("request before hello: %v", r)
	}
	r = c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: 99, Client: "cli/9"}}})
	e := r.GetError()
	if e.GetCode() != pb.ErrorCode_ERROR_CODE_PROTOCOL_MISMATCH || !strings.Contains(e.GetMessage(), "99") ||
		!strings.Contains(e.GetMessage(), "speaks 1") {
		t.Fatalf("mismatch error should name both versions: %v", r)
	}
	r = c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	if r.GetHello().GetServer() != "srv" || len(r.GetHello().GetScheduleKinds()) == 0 {
		t.Fatalf("hello reply: %v", r)
	}
}

func TestGetLRMatchesClosedFormWithMultipliers(t *testing.T) {
	c := greeted(t)
	id := open(t, c, cosineSpec)
	r := getLR(c, id, 5, 120, 1, 0.5, 2)
	lr := r.GetLr()
	if lr == nil || lr.GetCount() != 120 || lr.GetGroups() != 3 || len(lr.GetValues()) != 360 {
		t.Fatalf("bad reply: %v", r.GetError())
	}
	for i := int64(0); i < 120; i++ {
		want := cosineRef(5 + i)
		for g, m := range []float64{1, 0.5, 2} {
			got := lr.GetValues()[i*3+int64(g)]
			if math.Abs(got-m*want) > 1e-15 {
				t.Fatalf("step %d group %d: %v, want %v", 5+i, g, got, m*want)
			}
		}
	}
	if r := getLR(c, id, 0, 0); len(r.GetLr().GetValues()) != 1 || r.GetLr().GetValues()[0] != 0 {
		t.Fatalf("count 0 means 1, no multipliers means one group at 1.0: %v", r)
	}
}

func TestGetLRRejects(t *testing.T) {
	c := greeted(t)
	id := open(t, c, cosineSpec)
	cases := []struct {
		r     *pb.Response
		code  pb.ErrorCode
		field string
	}{
		{getLR(c, id, -1, 1), pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step"},
		{getLR(c, id, 0, MaxCount+1), pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "count"},
		{getLR(c, id, 0, 1, 1, math.NaN()), pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "groups[1].multiplier"},
		{getLR(c, id, 0, 1, -2), pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "groups[0].multiplier"},
		{getLR(c, id, math.MaxInt64, 2), pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step"},
		{getLR(c, id+100, 0, 1), pb.ErrorCode_ERROR_CODE_NOT_FOUND, "session_id"},
	}
	for i, cs := range cases {
		if e := cs.r.GetError(); e.GetCode() != cs.code || e.GetField() != cs.field {
			t.Errorf("case %d: got %v, want %v on %q", i, cs.r, cs.code, cs.field)
		}
	}
}

// A cyclic schedule may run from a min_lr above its peak_lr (torch's CyclicLR
// takes base_lr > max_lr); a group's absolute range has nothing to map onto
// then, so it is refused, while a multiplier still applies.
func TestGroupRangeOnInvertedSchedule(t *testing.T) {
	c := greeted(t)
	id := open(t, c, map[string]any{"kind": "cyclic", "peak_lr": 0.1, "min_lr": 0.2, "step_size_up": 4.0})
	for i, g := range []*pb.Group{
		{Multiplier: 1, WdMult: 1, MinLr: proto.Float64(0.01), PeakLr: proto.Float64(0.1)},
		{Multiplier: 1, WdMult: 1, PeakLr: proto.Float64(0.5)},
	} {
		r := c.Handle(&pb.Request{Body: &pb.Request_GetLr{GetLr: &pb.GetLR{SessionId: id, Count: 1, Groups: []*pb.Group{g}}}})
		want := "groups[0].min_lr"
		if g.MinLr == nil {
			want = "groups[0].peak_lr"
		}
		if e := r.GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != want || !strings.Contains(e.GetMessage(), "inverted") {
			t.Errorf("group %d: got %v, want a refusal on %s", i, r, want)
		}
	}
	// torch's CyclicLR at its first step is base_lr: 0.2 here, times 3.
	if r := getLR(c, id, 0, 1, 3); len(r.GetLr().GetValues()) != 1 || math.Abs(r.GetLr().GetValues()[0]-0.6) > 1e-15 {
		t.Fatalf("multiplier on an inverted cyclic: %v", r)
	}
}

func TestOpenRejectsBadSpecWithField(t *testing.T) {
	c := greeted(t)
	st, _ := structpb.NewStruct(map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 10.0, "warmup_steps": 20.0})
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	e := r.GetError()
	if e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != "warmup_steps" || !strings.Contains(e.GetMessage(), "20") {
		t.Fatalf("got %v", r)
	}
	r = c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{}}})
	if r.GetError().GetField() != "schedule" {
		t.Fatalf("missing schedule: %v", r)
	}
}

func TestStateRoundTripAndCorruption(t *testing.T) {
	c := greeted(t)
	id := open(t, c, cosineSpec)
	r := c.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: id, Step: 37}}})
	blob := r.GetState().GetMsgpack()
	if len(blob) == 0 {
		t.Fatalf("no state: %v", r)
	}
	r2 := c.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: id, Step: 37}}})
	if string(r2.GetState().GetMsgpack()) != string(blob) {
		t.Fatal("snapshots of the same state differ in bytes")
	}
	// Restore in a different dispatcher: the schedule continues identically.
	c2 := greeted(t)
	rr := c2.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: blob}}})
	s := rr.GetSession()
	if s == nil || s.GetStep() != 37 {
		t.Fatalf("restore: %v", rr)
	}
	a := getLR(c, id, 37, 100).GetLr().GetValues()
	b := getLR(c2, s.GetSessionId(), 37, 100).GetLr().GetValues()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("restored session differs at %d: %v vs %v", i, a[i], b[i])
		}
	}
	for _, bad := range [][]byte{nil, []byte("junk"), flip(blob, len(blob)/2), blob[:len(blob)-3]} {
		rr := c2.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: bad}}})
		if e := rr.GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != "msgpack" {
			t.Errorf("corrupt blob accepted: %v", rr)
		}
	}
}

// A resealed blob whose name (or any string in it) is not UTF-8 is refused:
// restored, it failed to encode the restore's reply and then every status
// reply, for every client, until the orphan expired.
func TestRestoreRefusesStringsThatAreNotUTF8(t *testing.T) {
	c := greeted(t)
	stages := map[string]any{"kind": "stages", "stages": []any{
		map[string]any{"name": "warm", "steps": 10.0, "schedule": cosineSpec},
		map[string]any{"steps": 10.0, "schedule": cosineSpec},
	}}
	badStage := map[string]any{"kind": "stages", "stages": []any{
		map[string]any{"steps": 10.0, "schedule": cosineSpec},
		map[string]any{"name": "w\xffarm", "steps": 10.0, "schedule": cosineSpec},
	}}
	badKey := map[string]any{"kind": "cosine", "peak_lr": 1.0, "total_steps": 10.0, "\xff": 1.0}
	for _, c2 := range []struct {
		st    sessionState
		where string
	}{
		{sessionState{Spec: cosineSpec, Name: "job\xff"}, "state.name is"},
		{sessionState{Spec: badStage, Name: "job"}, "state.spec.stages[1].name is"},
		{sessionState{Spec: badKey, Name: "job"}, "state.spec (a key) is"},
	} {
		name := c2.where
		blob, err := encodeSnapshot(c2.st)
		if err != nil {
			t.Fatal(err)
		}
		rr := c.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: blob}}})
		if e := rr.GetError(); e.GetField() != "msgpack" || !strings.Contains(e.GetMessage(), c2.where+" not valid UTF-8") {
			t.Errorf("%s: %v", name, rr)
		}
		if _, err := proto.Marshal(rr); err != nil {
			t.Errorf("%s: the reply cannot be sent: %v", name, err)
		}
	}
	// The same blobs with valid names restore (the refusal is the name's).
	for _, st := range []sessionState{{Spec: cosineSpec, Name: "job"}, {Spec: stages, Name: "job"}} {
		blob, _ := encodeSnapshot(st)
		if rr := c.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: blob}}}); rr.GetSession() == nil {
			t.Fatalf("valid blob refused: %v", rr)
		}
	}
	status := c.Handle(&pb.Request{Body: &pb.Request_GetStatus{GetStatus: &pb.GetStatus{}}})
	if _, err := proto.Marshal(status); err != nil || len(status.GetStatus().GetSessions()) != 2 {
		t.Errorf("status: %v (%v)", status, err)
	}
}

func flip(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 0x40
	return out
}

func TestCloseSession(t *testing.T) {
	d := New(Options{MaxSessions: 1})
	c := d.NewConn()
	c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	id := open(t, c, cosineSpec)
	st, _ := structpb.NewStruct(cosineSpec)
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	if r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_RESOURCE_EXHAUSTED {
		t.Fatalf("session cap not enforced: %v", r)
	}
	if r := c.Handle(&pb.Request{Body: &pb.Request_CloseSession{CloseSession: &pb.CloseSession{SessionId: id}}}); r.GetClosed() == nil {
		t.Fatalf("close: %v", r)
	}
	if d.Sessions() != 0 {
		t.Fatal("session not removed")
	}
	if r := getLR(c, id, 0, 1); r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("closed session still answers: %v", r)
	}
}

func TestHandleFrameMalformedAndUnknown(t *testing.T) {
	c := greeted(t)
	decode := func(b []byte) *pb.Response {
		var r pb.Response
		if err := proto.Unmarshal(b, &r); err != nil {
			t.Fatalf("response does not parse: %v", err)
		}
		return &r
	}
	if r := decode(c.HandleFrame([]byte{0xff, 0xff, 0xff})); r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_MALFORMED {
		t.Fatalf("malformed: %v", r)
	}
	// A request type from a newer protocol: field 99 inside Request.
	unknown := protowire.AppendTag(nil, 1, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 5)
	unknown = protowire.AppendTag(unknown, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte{})
	r := decode(c.HandleFrame(unknown))
	if r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_UNIMPLEMENTED || r.GetId() != 5 {
		t.Fatalf("unknown request: %v", r)
	}
	if r := decode(c.HandleFrame(nil)); r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_UNIMPLEMENTED {
		t.Fatalf("empty request: %v", r)
	}
}

func FuzzHandleFrame(f *testing.F) {
	hello, _ := proto.Marshal(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	st, _ := structpb.NewStruct(cosineSpec)
	openReq, _ := proto.Marshal(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	lr, _ := proto.Marshal(&pb.Request{Body: &pb.Request_GetLr{GetLr: &pb.GetLR{SessionId: 1, Step: 3, Count: 4}}})
	for _, s := range [][]byte{hello, openReq, lr, {}, {0x0a}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		d := New(Options{})
		c := d.NewConn()
		c.HandleFrame(hello)
		c.HandleFrame(openReq)
		out := c.HandleFrame(frame)
		var r pb.Response
		if err := proto.Unmarshal(out, &r); err != nil {
			t.Fatalf("response does not parse: %v", err)
		}
		if r.Body == nil {
			t.Fatal("response without body")
		}
	})
}

func BenchmarkHandleFrameGetLR(b *testing.B) {
	d := New(Options{})
	c := d.NewConn()
	hello, _ := proto.Marshal(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	c.HandleFrame(hello)
	st, _ := structpb.NewStruct(cosineSpec)
	openReq, _ := proto.Marshal(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	c.HandleFrame(openReq)
	req, _ := proto.Marshal(&pb.Request{Body: &pb.Request_GetLr{GetLr: &pb.GetLR{SessionId: 1, Step: 3, Count: 64,
		Groups: []*pb.Group{{Multiplier: 1, WdMult: 1}, {Multiplier: 1, WdMult: 1}}}}})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.HandleFrame(req)
	}
}

type panicky struct{}

func (panicky) LR(int64) float64 { panic("boom") }
func (panicky) Kind() string     { return "panicky" }
func (panicky) Validate() error  { return nil }

func TestHandlerPanicIsRecovered(t *testing.T) {
	d := New(Options{})
	c := d.NewConn()
	c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}})
	plan, err := sched.NewPlan(&sched.Config{LR: panicky{}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.sessions[42] = &session{id: 42, plan: plan}
	r := getLR(c, 42, 0, 1)
	if r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_INTERNAL || !strings.Contains(r.GetError().GetMessage(), "boom") {
		t.Fatalf("panic not reported: %v", r)
	}
	// The dispatcher (and its lock) still work afterwards.
	id := open(t, c, cosineSpec)
	if getLR(c, id, 0, 1).GetLr() == nil {
		t.Fatal("dispatcher unusable after a handler panic")
	}
}

// Warm must run every request it warms without an error response, or it
// would be warming an error path instead of the real one.
func TestWarm(t *testing.T) {
	if err := Warm(); err != nil {
		t.Fatal(err)
	}
	if err := Warm(); err != nil {
		t.Fatalf("second call: %v", err)
	}
}

// NaN and ±Inf cross the wire as numbers (structpb's AsMap would turn them
// into strings): refined drops non-finite grad_norms, and a non-finite
// scalar is named as such rather than as "not a number".
func TestNonFiniteSpecNumbersStayNumbers(t *testing.T) {
	c := greeted(t)
	norms := []any{1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0}
	spiky := []any{1.0, 2.0, 3.0, math.NaN(), 4.0, 5.0, math.Inf(1), 6.0, 7.0, 8.0}
	lrs := func(gn []any) []float64 {
		id := open(t, c, map[string]any{"kind": "refined", "peak_lr": 1.0, "total_steps": 10.0, "grad_norms": gn})
		return getLR(c, id, 0, 11).GetLr().GetValues()
	}
	want, got := lrs(norms), lrs(spiky)
	if len(want) != 11 || !slices.Equal(got, want) {
		t.Fatalf("with NaN and +Inf norms: %v; without them: %v", got, want)
	}
	st, err := structpb.NewStruct(map[string]any{"kind": "cosine", "peak_lr": math.NaN(), "total_steps": 10.0})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	if e := r.GetError(); e.GetField() != "peak_lr" || !strings.Contains(e.GetMessage(), "= NaN: must be a finite number") {
		t.Fatalf("peak_lr NaN: %v", r)
	}
}

// A growing schedule overflows in the end: a window stops short of the first
// infinite rate, and a request whose first two rates include it is refused.
func TestOverflowingRatesAreNeverSent(t *testing.T) {
	c := greeted(t)
	id := open(t, c, map[string]any{"kind": "exponential", "peak_lr": 1.0, "gamma": 2.0})
	// peak·γ^n = 2^n: finite up to n = 1023, +Inf from 1024.
	r := getLR(c, id, 1000, 100)
	if v := r.GetLr().GetValues(); len(v) != 24 || r.GetLr().GetCount() != 24 || math.IsInf(v[23], 0) || v[23] < 1e307 {
		t.Fatalf("window from 1000: %d values (count %d), last %v; want 24, the last near 2^1023", len(v), r.GetLr().GetCount(), v[len(v)-1])
	}
	for _, step := range []int64{1023, 1024, 5000} {
		if e := getLR(c, id, step, 8).GetError(); e.GetField() != "step" || !strings.Contains(e.GetMessage(), "grows past what a float64 holds") {
			t.Errorf("window from %d: %v", step, e)
		}
	}
}

// A refusal that quotes a long non-ASCII value still encodes: the quote is
// cut at a character, not inside one (a peak_lr of ["é"·100] came back as
// an INTERNAL "failed to encode" instead of naming peak_lr).
func TestRefusalQuotingALongNonASCIIValueEncodes(t *testing.T) {
	c := greeted(t)
	st, _ := structpb.NewStruct(map[string]any{"kind": "cosine", "peak_lr": []any{strings.Repeat("é", 100)}, "total_steps": 10.0})
	req, _ := proto.Marshal(&pb.Request{Id: 3, Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}})
	var r pb.Response
	if err := proto.Unmarshal(c.HandleFrame(req), &r); err != nil {
		t.Fatal(err)
	}
	if e := r.GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != "peak_lr" {
		t.Fatalf("got %v", &r)
	}
}

// A crafted blob is refused, not decoded: msgpack makes a slice of the
// length a blob declares and recurses per level, so a 60-byte blob (an
// array of 2^32-1 values) ran the process out of memory and 500,000 nested
// arrays overflowed its stack, killing the sidecar, or a training process
// loading a checkpoint in-process, with no error to catch.
func TestCraftedStateBlobsAreRefused(t *testing.T) {
	sealRaw := func(payload []byte) []byte {
		b, err := marshalSorted(&envelope{Format: snapshotFormat, Kind: kindSession, Payload: payload, CRC32: crc32.ChecksumIEEE(payload)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// {"spec": {"a": array32(0xffffffff)}}
	huge := append([]byte{0x81, 0xa4, 's', 'p', 'e', 'c', 0x81, 0xa1, 'a', 0xdd}, 0xff, 0xff, 0xff, 0xff)
	deep := append(append([]byte{0x81, 0xa4, 's', 'p', 'e', 'c'}, bytes.Repeat([]byte{0x91}, 500000)...), 0xc0)
	c := greeted(t)
	for name, blob := range map[string][]byte{
		"a huge array":      sealRaw(huge),
		"deep nesting":      sealRaw(deep),
		"a huge envelope":   {0x84, 0xc6, 0xff, 0xff, 0xff, 0xff},
		"a huge map":        sealRaw([]byte{0xdf, 0x7f, 0xff, 0xff, 0xff}),
		"a truncated value": sealRaw([]byte{0x81, 0xa4, 's', 'p'}),
	} {
		r := c.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: blob}}})
		if e := r.GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != "msgpack" {
			t.Errorf("%s: %v", name, r)
		}
	}
	// A real session's blob still restores.
	id := open(t, c, cosineSpec)
	st := c.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: id, Step: 3}}}).GetState()
	if r := c.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: st.GetMsgpack()}}}); r.GetSession() == nil {
		t.Fatalf("a real blob: %v", r)
	}
}

func FuzzCheckShape(f *testing.F) {
	for _, v := range []any{cosineSpec, []any{1, "x", nil, 2.5, true, []byte{1, 2}}, map[string]any{"a": []any{map[string]any{}}}} {
		b, _ := marshalSorted(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkShape(b) != nil {
			return
		}
		var v any
		_ = msgpack.Unmarshal(b, &v) // must not run away: the shape bounds what it allocates
	})
}

// A session name is a label of at most MaxName bytes: 70 sessions named
// with 15 MiB each made every `rewarm ctl status` reply too large to send,
// and each control post quoted every name.
func TestLongSessionNamesAreRefused(t *testing.T) {
	c := greeted(t)
	st, _ := structpb.NewStruct(cosineSpec)
	long := strings.Repeat("n", MaxName+1)
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: long}}})
	if e := r.GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != "name" {
		t.Fatalf("open: %v", e)
	}
	id := open(t, c, cosineSpec)
	blob := c.Handle(&pb.Request{Body: &pb.Request_GetState{GetState: &pb.GetState{SessionId: id}}}).GetState().GetMsgpack()
	r = c.Handle(&pb.Request{Body: &pb.Request_RestoreState{RestoreState: &pb.RestoreState{Msgpack: blob, Name: long}}})
	if e := r.GetError(); e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != "name" {
		t.Fatalf("restore: %v", e)
	}
	ok := strings.Repeat("n", MaxName)
	if r := c.Handle(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st, Name: ok}}}); r.GetSession().GetName() != ok {
		t.Fatalf("a name of %d bytes: %v", MaxName, r.GetError())
	}
}

package dispatch

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/replay"
)

var samplerSpec = map[string]any{
	"sources":           []any{map[string]any{"name": "a", "size": 1000.0}, map[string]any{"name": "b", "size": 500.0}},
	"global_batch_size": 12.0,
	"seed":              3.0,
	"stages": []any{
		map[string]any{"steps": 5.0, "mixture": map[string]any{"a": 1.0}},
		map[string]any{"steps": 20.0, "mixture": map[string]any{"a": 0.25, "b": 0.75}},
	},
}

func TestSamplerOverTheDispatcher(t *testing.T) {
	c := greeted(t)
	st, _ := structpb.NewStruct(samplerSpec)
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{Spec: st}}})
	info := r.GetSampler()
	if info == nil || info.GetTotalSteps() != 25 || info.GetGlobalBatchSize() != 12 || len(info.GetSpecHash()) != 16 {
		t.Fatalf("open: %v", r)
	}
	ref, err := replay.Parse(st.AsMap())
	if err != nil {
		t.Fatal(err)
	}
	r = c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{
		SamplerId: info.GetSamplerId(), Step: 3, Count: 10, Rank: 1, WorldSize: 3}}})
	b := r.GetBatches()
	if b == nil || b.GetCount() != 10 || b.GetPerBatch() != 4 || len(b.GetIds()) != 10*4*8 {
		t.Fatalf("batches: %v", r)
	}
	want := make([]int64, 4)
	for i := 0; i < 10; i++ {
		if err := ref.Batch(int64(3+i), 1, 3, want); err != nil {
			t.Fatal(err)
		}
		for j, w := range want {
			got := int64(binary.LittleEndian.Uint64(b.GetIds()[(i*4+j)*8:]))
			if got != w {
				t.Fatalf("step %d slot %d: %d, want %d", 3+i, j, got, w)
			}
		}
	}
	// A count running past the plan is cut at the last step.
	r = c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: info.GetSamplerId(), Step: 20, Count: 100}}})
	if r.GetBatches().GetCount() != 5 {
		t.Fatalf("clipped count: %v", r.GetBatches().GetCount())
	}
	q := c.Handle(&pb.Request{Body: &pb.Request_GetQuotas{GetQuotas: &pb.GetQuotas{SamplerId: info.GetSamplerId(), Step: 4, Count: 2}}}).GetQuotas()
	if q == nil || q.GetSources() != 2 || q.GetCounts()[0] != 12 || q.GetCounts()[2]+q.GetCounts()[3] != 12 {
		t.Fatalf("quotas: %v", q)
	}
	for _, bad := range []*pb.GetBatches{
		{SamplerId: info.GetSamplerId(), Step: 0, WorldSize: 5},
		{SamplerId: info.GetSamplerId(), Step: 0, WorldSize: 2, Rank: 2},
		{SamplerId: info.GetSamplerId(), Step: 25},
		{SamplerId: 999},
	} {
		if e := c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: bad}}).GetError(); e == nil {
			t.Errorf("accepted %v", bad)
		}
	}
	if r := c.Handle(&pb.Request{Body: &pb.Request_CloseSession{CloseSession: &pb.CloseSession{SessionId: info.GetSamplerId()}}}); r.GetClosed() == nil {
		t.Fatalf("close sampler: %v", r)
	}
	bad, _ := structpb.NewStruct(map[string]any{"sources": []any{map[string]any{"name": "a", "size": 0.0}}})
	e := c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{Spec: bad}}}).GetError()
	if e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() == "" {
		t.Fatalf("bad spec: %v", e)
	}
}

// The JSON form of a spec must open the same sampler as the Struct form: the
// same hash and the same batches, and its errors must name the same fields.
func TestSamplerSpecJSONMatchesStruct(t *testing.T) {
	c := greeted(t)
	st, _ := structpb.NewStruct(samplerSpec)
	js, err := json.Marshal(samplerSpec)
	if err != nil {
		t.Fatal(err)
	}
	open := func(o *pb.OpenSampler) *pb.SamplerInfo {
		t.Helper()
		r := c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: o}})
		if r.GetSampler() == nil {
			t.Fatalf("open %v: %v", o, r)
		}
		return r.GetSampler()
	}
	a, b := open(&pb.OpenSampler{Spec: st}), open(&pb.OpenSampler{SpecJson: string(js)})
	if a.GetSpecHash() != b.GetSpecHash() || a.GetTotalSteps() != b.GetTotalSteps() {
		t.Fatalf("struct %v, json %v", a, b)
	}
	for step := int64(0); step < a.GetTotalSteps(); step++ {
		get := func(id uint64) []byte {
			return c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{
				SamplerId: id, Step: step, WorldSize: 1}}}).GetBatches().GetIds()
		}
		if x, y := get(a.GetSamplerId()), get(b.GetSamplerId()); len(x) == 0 || string(x) != string(y) {
			t.Fatalf("step %d: struct and json batches differ", step)
		}
	}
	for _, tc := range []struct{ json, field string }{
		{`{"sources": [{"name": "a", "size": 0}], "global_batch_size": 4, "stages": [{"steps": 1, "mixture": {"a": 1}}]}`, "sources[0].size"},
		{`{"sources": [`, "spec_json"},
		{`[1, 2]`, "spec_json"},
		{`null`, "spec_json"},
	} {
		e := c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{SpecJson: tc.json}}}).GetError()
		if e.GetCode() != pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || e.GetField() != tc.field {
			t.Errorf("%s: got %v, want an error naming %s", tc.json, e, tc.field)
		}
	}
}

// A refused request leaves the sampler's step where the last served one put
// it: status (and the snapshot that restores it) showed step 10^12 after a
// request for it was refused, or -5.
func TestRefusedSamplerRequestsLeaveTheStep(t *testing.T) {
	d := New(Options{})
	c := greet(t, d)
	id := openSampler(t, c)
	if b := c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: id, Step: 7}}}).GetBatches(); b == nil {
		t.Fatal("step 7 refused")
	}
	for _, r := range []*pb.Request{
		{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: id, Step: 1e12}}},
		{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: id, Step: -5}}},
		{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: id, Step: 9, WorldSize: 5}}},
		{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: id, Step: 9, WorldSize: 2, Rank: 2}}},
		{Body: &pb.Request_GetQuotas{GetQuotas: &pb.GetQuotas{SamplerId: id, Step: 25}}},
	} {
		if e := c.Handle(r).GetError(); e == nil {
			t.Fatalf("accepted %v", r)
		}
		if got := d.Status().GetSamplers()[0].GetStep(); got != 7 {
			t.Fatalf("after the refused %v the step is %d, want 7", r, got)
		}
	}
	if q := c.Handle(&pb.Request{Body: &pb.Request_GetQuotas{GetQuotas: &pb.GetQuotas{SamplerId: id, Step: 11}}}).GetQuotas(); q == nil {
		t.Fatal("quotas at 11 refused")
	}
	if got := d.Status().GetSamplers()[0].GetStep(); got != 11 {
		t.Fatalf("after quotas at 11 the step is %d", got)
	}
}

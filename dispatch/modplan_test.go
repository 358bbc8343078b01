package dispatch

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewarm/rewarm/mod"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// The wire plan carries every field of the planner's plan, with its value:
// both transports and the CLI read plans only through this message.
func TestModPlanCarriesEveryField(t *testing.T) {
	spec := map[string]any{"num_layers": 12.0, "buckets": []any{64.0, 100.0}, "text_tokens": 7.0,
		"hidden_size": 256.0, "ffn_size": 683.0, "per_sample": true}
	st, err := structpb.NewStruct(spec)
	if err != nil {
		t.Fatal(err)
	}
	r := greeted(t).Handle(&pb.Request{Body: &pb.Request_GetModPlan{GetModPlan: &pb.GetModPlan{Spec: st}}})
	got := r.GetModPlan()
	if got == nil {
		t.Fatalf("get_mod_plan: %v", r)
	}
	want, err := mod.Parse(st.AsMap())
	if err != nil {
		t.Fatal(err)
	}
	if got.GetTextTokens() != 7 || len(got.GetBuckets()) != len(want.Buckets) {
		t.Fatalf("text_tokens %d, %d buckets", got.GetTextTokens(), len(got.GetBuckets()))
	}
	for i, wb := range want.Buckets {
		gb := got.GetBuckets()[i]
		s := gb.GetSummary()
		if gb.GetTokens() != wb.Tokens || s.GetMeanRatio() != wb.Summary.MeanRatio || s.GetKvRatio() != wb.Summary.KVRatio ||
			s.GetFlopsDense() != wb.Summary.FLOPsDense || s.GetFlopsMod() != wb.Summary.FLOPsMoD || s.GetFlopsRatio() != wb.Summary.FLOPsRatio {
			t.Errorf("bucket %d: %v, want %+v", i, gb, wb.Summary)
		}
		for j, wl := range wb.Layers {
			gl := gb.GetLayers()[j]
			if gl.GetIndex() != wl.Index || gl.GetRoute() != wl.Route || gl.GetRatio() != wl.Ratio || gl.GetK() != wl.K ||
				gl.GetKvCapacity() != wl.KVCapacity || len(gl.GetKByTokens()) != len(wl.KByTokens) {
				t.Errorf("bucket %d layer %d: %v, want %+v", i, j, gl, wl)
			}
		}
	}
	// A field added to the messages but not filled in is caught here: every
	// field of each message is set somewhere in this plan.
	seen := map[protoreflect.FullName]bool{}
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			seen[fd.FullName()] = true
			switch {
			case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
				for k := 0; k < v.List().Len(); k++ {
					walk(v.List().Get(k).Message())
				}
			case fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap():
				walk(v.Message())
			}
			return true
		})
	}
	walk(proto.Clone(got).ProtoReflect())
	for _, m := range []proto.Message{&pb.ModPlan{}, &pb.ModBucket{}, &pb.ModLayer{}, &pb.ModSummary{}} {
		fields := m.ProtoReflect().Descriptor().Fields()
		for k := 0; k < fields.Len(); k++ {
			if name := fields.Get(k).FullName(); !seen[name] {
				t.Errorf("%s is never set in the wire plan", name)
			}
		}
	}
}

func TestModPlanRejectsBadSpecWithField(t *testing.T) {
	st, _ := structpb.NewStruct(map[string]any{"num_layers": 0.0, "tokens": 576.0})
	r := greeted(t).Handle(&pb.Request{Body: &pb.Request_GetModPlan{GetModPlan: &pb.GetModPlan{Spec: st}}})
	if e := r.GetError(); e == nil || !strings.Contains(e.GetField(), "num_layers") {
		t.Errorf("bad spec: %v", r)
	}
}

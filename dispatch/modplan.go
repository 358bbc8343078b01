package dispatch

import (
	"github.com/rewarm/rewarm/mod"
	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

func modPlan(r *pb.GetModPlan) (*pb.Response, error) {
	if r.GetSpec() == nil {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "spec", "get_mod_plan: missing plan spec")
	}
	p, err := mod.Parse(specMap(r.GetSpec()))
	if err != nil {
		return nil, err
	}
	return &pb.Response{Body: &pb.Response_ModPlan{ModPlan: ModPlanProto(p)}}, nil
}

// ModPlanProto converts a plan to its wire form.
func ModPlanProto(p *mod.Plan) *pb.ModPlan {
	out := &pb.ModPlan{TextTokens: p.Spec.TextTokens}
	for _, b := range p.Buckets {
		mb := &pb.ModBucket{Tokens: b.Tokens, Summary: &pb.ModSummary{
			MeanRatio: b.Summary.MeanRatio, KvRatio: b.Summary.KVRatio, FlopsDense: b.Summary.FLOPsDense,
			FlopsMod: b.Summary.FLOPsMoD, FlopsRatio: b.Summary.FLOPsRatio}}
		for _, l := range b.Layers {
			mb.Layers = append(mb.Layers, &pb.ModLayer{Index: l.Index, Route: l.Route, Ratio: l.Ratio, K: l.K, KvCapacity: l.KVCapacity, KByTokens: l.KByTokens})
		}
		out.Buckets = append(out.Buckets, mb)
	}
	return out
}

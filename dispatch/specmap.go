package dispatch

import (
	"math"

	"google.golang.org/protobuf/types/known/structpb"
)

// specMap is s as plain Go values, like s.AsMap(), except that a number
// stays a float64 when it is NaN or ±Inf: AsMap turns those into the strings
// "NaN" and "Infinity", which the spec decoders would refuse as "not a
// number" where a spec means them (refined's grad_norms drops NaN and +Inf)
// or name a confusing reason where it does not.
func specMap(s *structpb.Struct) map[string]any {
	if s == nil {
		return nil
	}
	out := make(map[string]any, len(s.GetFields()))
	for k, v := range s.GetFields() {
		out[k] = specValue(v)
	}
	return out
}

func specValue(v *structpb.Value) any {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return k.NumberValue
		}
	case *structpb.Value_StructValue:
		return specMap(k.StructValue)
	case *structpb.Value_ListValue:
		items := k.ListValue.GetValues()
		out := make([]any, len(items))
		for i, item := range items {
			out[i] = specValue(item)
		}
		return out
	}
	return v.AsInterface()
}

package replay_test

import (
	"fmt"

	"github.com/rewarm/rewarm/replay"
)

// Two stages: 4 steps of the old data alone, then new data with 20 % replay.
// Every global batch of 10 carries exactly 8 new and 2 old samples.
func ExampleSampler_Quotas() {
	s, err := replay.Parse(map[string]any{
		"sources":           []any{map[string]any{"name": "old", "size": 1000}, map[string]any{"name": "new", "size": 5000}},
		"global_batch_size": 10,
		"stages": []any{
			map[string]any{"steps": 4, "mixture": map[string]any{"old": 1.0}},
			map[string]any{"steps": 100, "mixture": map[string]any{"new": 0.8, "old": 0.2}},
		},
	})
	if err != nil {
		panic(err)
	}
	for _, step := range []int64{0, 4, 5, 103} {
		q, err := s.Quotas(step)
		if err != nil {
			panic(err)
		}
		fmt.Println(step, q)
	}
	// Output:
	// 0 [10 0]
	// 4 [2 8]
	// 5 [2 8]
	// 103 [2 8]
}

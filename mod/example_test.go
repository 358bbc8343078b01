package mod_test

import (
	"fmt"

	"github.com/rewarm/rewarm/mod"
)

// p-MoD's released schedule for 32 layers and 576 image tokens: R(l) =
// 0.5 + ½cos(πl/31), routed where R ≤ 0.85 (layers 8–31) and floored at
// 0.15, so the mean ratio is 0.5375 and k = ⌊576·R⌋ (86 from layer 24 on).
func ExampleParse() {
	p, err := mod.Parse(map[string]any{"num_layers": 32, "tokens": 576})
	if err != nil {
		panic(err)
	}
	b := p.Buckets[0]
	for _, l := range b.Layers[6:12] {
		fmt.Println(l.Index, l.Route, l.K)
	}
	fmt.Println("layer 31 keeps", b.Layers[31].K)
	fmt.Printf("mean ratio %.4f\n", b.Summary.MeanRatio)
	// Output:
	// 6 false 576
	// 7 false 576
	// 8 true 486
	// 9 true 464
	// 10 true 440
	// 11 true 414
	// layer 31 keeps 86
	// mean ratio 0.5375
}

package sched_test

import (
	"fmt"

	"github.com/rewarm/rewarm/sched"
)

// A schedule is a pure function of the update count. Cosine from 1 to 0
// over 4 updates: LR(n) = ½(1 + cos(πn/4)).
func ExampleParse() {
	s, err := sched.Parse(map[string]any{"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.0, "total_steps": 4})
	if err != nil {
		panic(err)
	}
	for n := int64(0); n <= 5; n++ {
		fmt.Printf("%d %.4f\n", n, s.LR(n))
	}
	// Output:
	// 0 1.0000
	// 1 0.8536
	// 2 0.5000
	// 3 0.1464
	// 4 0.0000
	// 5 0.0000
}

// A session's plan takes live changes. Annealing linearly over 2 updates
// from step 1 on, a constant 1 falls by halves to 0 at LR(2) and LR(3).
func ExamplePlan_Replan() {
	cfg, err := sched.ParseConfig(map[string]any{"kind": "constant", "peak_lr": 1.0})
	if err != nil {
		panic(err)
	}
	p, err := sched.NewPlan(cfg, nil, nil)
	if err != nil {
		panic(err)
	}
	if err := p.Replan(sched.Replan{Op: sched.OpAnneal, At: 1, Steps: 2, Shape: "linear", MinLR: new(0.0)}); err != nil {
		panic(err)
	}
	for n := int64(0); n <= 4; n++ {
		fmt.Printf("%d %.2f\n", n, p.LR(n))
	}
	// Output:
	// 0 1.00
	// 1 1.00
	// 2 0.50
	// 3 0.00
	// 4 0.00
}

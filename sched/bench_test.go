package sched

import (
	"sort"
	"testing"
)

func refinedNorms() []any {
	out := make([]any, 20000)
	for i := range out {
		out[i] = 1.0 + float64(i%97)/50
	}
	return out
}

// benchSpecs holds one valid spec per kind.
var benchSpecs = map[string]map[string]any{
	"constant":     {"kind": "constant", "peak_lr": 1e-3, "warmup_steps": 100},
	"cosine":       {"kind": "cosine", "peak_lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 1000, "total_steps": 100000},
	"linear":       {"kind": "linear", "peak_lr": 3e-4, "warmup_steps": 1000, "total_steps": 100000},
	"polynomial":   {"kind": "polynomial", "peak_lr": 3e-4, "power": 2, "total_steps": 100000},
	"rex":          {"kind": "rex", "peak_lr": 3e-4, "total_steps": 100000, "sampling": 10},
	"cosine_power": {"kind": "cosine_power", "peak_lr": 3e-4, "total_steps": 100000},
	"wsd":          {"kind": "wsd", "peak_lr": 3e-4, "warmup_steps": 1000, "total_steps": 100000, "decay_steps": 10000},
	"infinite": {"kind": "infinite", "peak_lr": 3e-4, "const_lr": 1e-4, "min_lr": 1e-5, "warmup_steps": 1000,
		"cooldown_steps": 10000, "constant_steps": 50000, "anneal_steps": 10000},
	"inv_sqrt":    {"kind": "inv_sqrt", "peak_lr": 3e-4, "warmup_steps": 1000},
	"step":        {"kind": "step", "peak_lr": 0.1, "step_size": 3000},
	"multistep":   {"kind": "multistep", "peak_lr": 0.1, "milestones": []any{30000, 60000, 90000}},
	"exponential": {"kind": "exponential", "peak_lr": 0.1, "gamma": 0.9999},
	"onecycle":    {"kind": "onecycle", "peak_lr": 0.1, "total_steps": 100000},
	"cyclic":      {"kind": "cyclic", "min_lr": 1e-3, "peak_lr": 0.1, "mode": "triangular2"},
	"sgdr":        {"kind": "sgdr", "peak_lr": 0.1, "cycle_steps": 1000, "cycle_mul": 2, "cycle_decay": 0.9},
	"plateau":     {"kind": "plateau", "peak_lr": 0.1},
	"refined":     {"kind": "refined", "peak_lr": 0.1, "grad_norms": refinedNorms(), "total_steps": 100000},
	"sequence": {"kind": "sequence", "parts": []any{
		map[string]any{"steps": 1000, "schedule": map[string]any{"kind": "linear", "peak_lr": 1e-3, "min_lr": 1e-3, "warmup_steps": 1000, "total_steps": 1000}},
		map[string]any{"schedule": map[string]any{"kind": "cosine", "peak_lr": 1e-3, "total_steps": 99000}}}},
	"stages": {"kind": "stages", "defaults": map[string]any{"kind": "cosine", "peak_lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 500},
		"stages": []any{map[string]any{"steps": 40000}, map[string]any{"steps": 30000}, map[string]any{"steps": 30000}}},
}

func TestEveryKindHasABenchSpec(t *testing.T) {
	for _, k := range Kinds() {
		if _, ok := benchSpecs[k]; !ok {
			t.Errorf("kind %q has no benchmark spec", k)
		}
	}
}

// BenchmarkLR evaluates each kind at steps spread over its run; every closed
// form should stay well under 50 ns, and refined is a table lookup.
func BenchmarkLR(b *testing.B) {
	names := make([]string, 0, len(benchSpecs))
	for k := range benchSpecs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		s, err := Parse(benchSpecs[name])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			var sink float64
			for i := 0; i < b.N; i++ {
				sink += s.LR(int64(i*7919) % 120000)
			}
			_ = sink
		})
	}
}

// One more report to a plateau plan that already holds 10k: it extends the
// replay (O(1)); the rebuild it replaces replays all 10k.
func BenchmarkPlateauReport(b *testing.B) {
	cfg, err := ParseConfig(map[string]any{"kind": "plateau", "peak_lr": 0.1, "patience": 3})
	if err != nil {
		b.Fatal(err)
	}
	reports := make([]Report, 10_000)
	for i := range reports {
		reports[i] = Report{Step: int64(i), Metric: float64(i % 7)}
	}
	b.Run("extend", func(b *testing.B) {
		p, _ := NewPlan(cfg, nil, reports)
		step := int64(len(reports))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := p.Report(Report{Step: step, Metric: 1}); err != nil {
				b.Fatal(err)
			}
			step++
		}
	})
	b.Run("rebuild", func(b *testing.B) {
		p, _ := NewPlan(cfg, nil, reports)
		for i := 0; i < b.N; i++ {
			p.Reports = append(p.Reports[:len(reports)], Report{Step: int64(len(reports)), Metric: 1})
			if err := p.build(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

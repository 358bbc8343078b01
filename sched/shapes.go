package sched

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// A shape maps progress p in [0, 1] through a phase to a factor. Decay
// shapes fall from 1 at p=0 to 0 at p=1; rise shapes climb from 0 to 1.
// Phases then scale the factor into their own [low, high] range.

// decayShapes are the WSD / anneal decay shapes (HF, Megatron, timm, Hägele et al.).
var decayShapes = map[string]func(p, param float64) float64{
	"linear": func(p, _ float64) float64 { return 1 - p },
	"cosine": func(p, _ float64) float64 { return 0.5 * (1 + math.Cos(math.Pi*p)) },
	"1-sqrt": func(p, _ float64) float64 { return 1 - math.Sqrt(p) },
	"square": func(p, _ float64) float64 { return 1 - p*p },
	// power: 1 − p^a (a = 0.5 is 1-sqrt), as timm's WSD scheduler.
	"power": func(p, a float64) float64 { return 1 - math.Pow(p, a) },
	// exp: (r^p − r)/(1 − r), timm's form; r = 0.5 is Megatron's 2·0.5^p − 1.
	"exp": func(p, r float64) float64 { return (math.Pow(r, p) - r) / (1 - r) },
}

// riseShapes are warmup shapes (HF WSD warmup types).
var riseShapes = map[string]func(p float64) float64{
	"linear": func(p float64) float64 { return p },
	"cosine": func(p float64) float64 { return 0.5 * (1 - math.Cos(math.Pi*p)) },
	"1-sqrt": func(p float64) float64 { return 1 - math.Sqrt(1-p) },
}

func names[V any](m map[string]V) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// oneOf requires v to be a key of m.
func oneOf[V any](c *checks, field, v string, m map[string]V) {
	if _, ok := m[v]; !ok {
		c.fail(field, v, "must be one of: %s", names(m))
	}
}

// annealFunc is a rate falling from v0 at progress 0 to floor at progress 1.
type annealFunc func(v0, floor, p float64) float64

// annealShape returns the anneal of a shape. The "exp" anneal is geometric,
// v0·(floor/v0)^p, as in the infinite schedule; it needs floor > 0.
func annealShape(shape string) (annealFunc, error) {
	switch shape {
	case "exp":
		return func(v0, floor, p float64) float64 { return v0 * math.Pow(floor/v0, p) }, nil
	case "linear", "cosine", "1-sqrt":
		f := decayShapes[shape]
		return func(v0, floor, p float64) float64 { return floor + (v0-floor)*f(p, 0) }, nil
	}
	return nil, fmt.Errorf("unknown anneal shape %q (one of: 1-sqrt, cosine, exp, linear)", shape)
}

var annealShapes = map[string]bool{"exp": true, "linear": true, "cosine": true, "1-sqrt": true}

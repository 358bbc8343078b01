package main

import (
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/rewarm/rewarm/internal/specfield"
	"github.com/rewarm/rewarm/internal/specfile"
	"github.com/rewarm/rewarm/mod"
)

// planFlags builds a MoD plan from flags (or a spec file). The spec holds
// only the schedule flags that were given, so the planner refuses one that
// the chosen kind does not use (--ratio with prd) instead of dropping it.
// code is -1 to go on, else the exit code, with the message printed.
func planFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*mod.Plan, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("spec", "", "plan spec file (.yaml/.json) instead of the other plan flags")
	layers := fs.Int64("layers", 32, "number of decoder layers")
	tokens := fs.String("tokens", "576", "routable tokens N (comma-separated for several buckets)")
	bucketArg := fs.String("buckets", "", "comma-separated routable-token buckets (the same as a list in --tokens)")
	text := fs.Int64("text-tokens", 0, "non-routable tokens T (for t_plus_k alignment, KV and FLOPs)")
	kind := fs.String("schedule", "prd", "prd, shifted_linear, constant, interleave or explicit")
	shift := fs.Float64("shift", 0.5, "PRD shift (the average ratio; prd, shifted_linear)")
	maxRatio := fs.Float64("max-ratio", 0.85, "a layer routes iff its raw ratio <= this (prd, shifted_linear)")
	minRatio := fs.Float64("min-ratio", 0.15, "floor of routed ratios (prd, shifted_linear)")
	denom := fs.Float64("denom", 0, "cosine denominator (default: layers-1; 31 matches the released 7B checkpoints)")
	ratio := fs.Float64("ratio", 0.5, "ratio for constant / interleave")
	routed := fs.String("routed-layers", "", "comma-separated layer indices that route (constant)")
	preset := fs.String("preset", "", "constant: deep_all (layers 2..L-2) or deep_all_include_last (2..L-1)")
	ratios := fs.String("ratios", "", "comma-separated ratio per layer, 1 = dense (explicit)")
	minK := fs.Int64("min-k", 0, "smallest k of a routed layer")
	maxK := fs.Int64("max-k", 0, "largest k of a routed layer")
	rounding := fs.String("rounding", "floor", "floor (p-MoD), nearest or ceil")
	precision := fs.String("precision", "float32", "float32 (p-MoD's torch arithmetic) or float64")
	multiple := fs.Int64("multiple", 1, "align k (or T+k) to a multiple, 1 to 2^20 (8, 64 and 128 suit GPU kernels)")
	align := fs.String("align", "k", "k or t_plus_k")
	hidden := fs.Int64("hidden-size", 4096, "d, for the FLOPs estimate")
	ffn := fs.Int64("ffn-size", 11008, "MLP width, for the FLOPs estimate")
	fs.Usage = func() {
		what := "Prints the MoD plan's table: per layer whether it routes, its ratio, k and KV capacity, then the summary"
		if name == "plot-plan" {
			what = "Draws the MoD plan's ratio per layer (PNG or SVG, -o)"
		}
		fmt.Fprintf(stderr, "usage: rewarm %s [--layers L] [--tokens N] [--schedule KIND ...] | --spec FILE\n\n%s.\n"+
			"The flags build a plan spec (see docs/mod.md): --routed-layers is the spec's schedule.layers,\n"+
			"--rounding its rounding.mode.\n\n", name, what)
		fs.PrintDefaults()
	}
	planFlag := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { planFlag[f.Name] = f.Name != "spec" })
	if extra != nil {
		extra(fs)
	}
	if _, code := parseArgs(fs, args, 0, "only flags"); code >= 0 {
		return nil, code
	}
	failed := func(err error) (*mod.Plan, int) {
		fmt.Fprintf(stderr, "rewarm %s: %v\n", name, err)
		return nil, 1
	}
	// A flag value that does not parse is a usage error, as in the flag package.
	badFlag := func(err error) (*mod.Plan, int) {
		fmt.Fprintf(stderr, "rewarm %s: %v\n", name, err)
		return nil, 2
	}
	if *file != "" {
		// The file is the whole plan: a plan flag beside it would be ignored.
		var both []string
		fs.Visit(func(f *flag.Flag) {
			if planFlag[f.Name] {
				both = append(both, "--"+f.Name)
			}
		})
		if len(both) > 0 {
			fmt.Fprintf(stderr, "rewarm %s: %s with --spec: the spec file sets the whole plan; put it in the file or drop --spec\n",
				name, strings.Join(both, ", "))
			return nil, 2
		}
		m, err := specfile.Load(*file)
		if err != nil {
			return failed(err)
		}
		p, err := mod.Parse(m)
		if err != nil {
			return failed(err)
		}
		return p, -1
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	spec := map[string]any{"num_layers": *layers, "text_tokens": *text, "hidden_size": *hidden, "ffn_size": *ffn}
	// --buckets replaces the default --tokens. Both given explicitly plan
	// every count named, as plan(tokens=..., buckets=...) does in Python.
	if *bucketArg == "" || set["tokens"] {
		ns, err := parseList(*tokens, "--tokens", strconv.ParseInt)
		if err != nil {
			return badFlag(err)
		}
		switch {
		case len(ns) == 1:
			spec["tokens"] = ns[0]
		case *bucketArg != "":
			return badFlag(fmt.Errorf("--tokens %s with --buckets: give one count in --tokens, or all of them in one list", *tokens))
		default:
			spec["buckets"] = anys(ns)
		}
	}
	if *bucketArg != "" {
		bs, err := parseList(*bucketArg, "--buckets", strconv.ParseInt)
		if err != nil {
			return badFlag(err)
		}
		spec["buckets"] = anys(bs)
	}
	schedule := map[string]any{"kind": *kind}
	// flagOf names the flag behind each schedule field, for the planner's errors.
	flagOf := map[string]string{}
	for _, f := range []struct {
		flag, field string
		value       any
	}{{"shift", "shift", *shift}, {"max-ratio", "max_ratio", *maxRatio}, {"min-ratio", "min_ratio", *minRatio},
		{"denom", "denom", *denom}, {"ratio", "ratio", *ratio}, {"preset", "preset", *preset}} {
		if set[f.flag] {
			schedule[f.field], flagOf["schedule."+f.field] = f.value, "--"+f.flag
		}
	}
	if set["routed-layers"] {
		ls, err := parseList(*routed, "--routed-layers", strconv.ParseInt)
		if err != nil {
			return badFlag(err)
		}
		schedule["layers"], flagOf["schedule.layers"] = anys(ls), "--routed-layers"
	}
	if set["ratios"] {
		parse := func(s string, _ int, bits int) (float64, error) { return strconv.ParseFloat(s, bits) }
		rs, err := parseList(*ratios, "--ratios", parse)
		if err != nil {
			return badFlag(err)
		}
		schedule["ratios"], flagOf["schedule.ratios"] = anys(rs), "--ratios"
	}
	spec["schedule"] = schedule
	rd := map[string]any{"mode": *rounding, "precision": *precision, "multiple": *multiple, "align": *align}
	if set["min-k"] {
		rd["min_k"] = *minK
	}
	if set["max-k"] {
		rd["max_k"] = *maxK
	}
	spec["rounding"] = rd
	p, err := mod.Parse(spec)
	if err != nil {
		var fe *specfield.Error
		if errors.As(err, &fe) && flagOf[fe.Field] != "" {
			err = fmt.Errorf("%s: %w", flagOf[fe.Field], err)
		}
		return failed(err)
	}
	return p, -1
}

func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// parseList reads a comma-separated list, naming the flag and the item that
// does not parse.
func parseList[T any](s, flagName string, parse func(string, int, int) (T, error)) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		v, err := parse(strings.TrimSpace(f), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number", flagName, strings.TrimSpace(f))
		}
		out = append(out, v)
	}
	return out, nil
}

// planCmd prints a MoD plan as a table.
func planCmd(args []string, stdout, stderr io.Writer) int {
	p, code := planFlags("plan", args, stderr, nil)
	if code >= 0 {
		return code
	}
	for _, b := range p.Buckets {
		fmt.Fprintf(stdout, "N = %d routable tokens, T = %d other tokens\n", b.Tokens, p.Spec.TextTokens)
		fmt.Fprintf(stdout, "%5s  %5s  %8s  %7s  %11s\n", "layer", "route", "ratio", "k", "kv_capacity")
		for _, l := range b.Layers {
			route := "dense"
			if l.Route {
				route = "MoD"
			}
			fmt.Fprintf(stdout, "%5d  %5s  %8.4f  %7d  %11d\n", l.Index, route, l.Ratio, l.K, l.KVCapacity)
		}
		s := b.Summary
		fmt.Fprintf(stdout, "mean ratio %.4f   KV %.2f%%   FLOPs %.3g -> %.3g (%.2f%%)\n\n",
			s.MeanRatio, 100*s.KVRatio, s.FLOPsDense, s.FLOPsMoD, 100*s.FLOPsRatio)
	}
	return 0
}

// bucketColors tells the buckets' bars apart (matplotlib's tab10).
var bucketColors = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
	color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255},
	color.RGBA{227, 119, 194, 255}, color.RGBA{127, 127, 127, 255}, color.RGBA{188, 189, 34, 255},
	color.RGBA{23, 190, 207, 255},
}

// plotWidth is plot-plan's image width; about 7 inches of it hold the data.
const plotWidth = 8 * vg.Inch

// barWidth fits a layer's group of bars, one per bucket, into 80% of the
// layer's share of the data width, so neighbouring layers never overlap;
// 6 points at most.
func barWidth(layers, buckets int) vg.Length {
	slot := (plotWidth - vg.Inch) / vg.Length(layers)
	return min(vg.Points(6), 0.8*slot/vg.Length(buckets))
}

// plotPlan draws the planned ratio R per layer, and for each bucket the
// share of its routable tokens kept after rounding (k / N).
func plotPlan(args []string, stderr io.Writer) int {
	var out *string
	p, code := planFlags("plot-plan", args, stderr, func(fs *flag.FlagSet) {
		out = fs.String("o", "plan.png", "output file: .png or .svg")
	})
	if code >= 0 {
		return code
	}
	if len(p.Buckets) > len(bucketColors) {
		fmt.Fprintf(stderr, "rewarm plot-plan: %d buckets: the plot tells at most %d apart (rewarm plan prints them all)\n",
			len(p.Buckets), len(bucketColors))
		return 2
	}
	pl := plot.New()
	pl.Title.Text = fmt.Sprintf("rewarm: %s MoD plan, %d layers", p.Spec.Schedule.Kind, p.Spec.NumLayers)
	pl.X.Label.Text = "layer"
	pl.Y.Label.Text = "ratio"
	w := barWidth(len(p.Buckets[0].Layers), len(p.Buckets))
	for i, b := range p.Buckets {
		vals := make(plotter.Values, len(b.Layers))
		var kept int64
		for j, l := range b.Layers {
			vals[j] = float64(l.K) / float64(b.Tokens)
			kept += l.K
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			fmt.Fprintf(stderr, "rewarm plot-plan: %v\n", err)
			return 1
		}
		bars.Color = bucketColors[i]
		bars.LineStyle.Width = 0
		bars.Offset = vg.Length(i)*w - vg.Length(len(p.Buckets)-1)*w/2
		pl.Add(bars)
		// The bars' own mean, after rounding: the summary's mean_ratio is
		// the planned R's.
		mean := float64(kept) / float64(int64(len(b.Layers))*b.Tokens)
		pl.Legend.Add(fmt.Sprintf("k / N, N=%d (mean %.4f)", b.Tokens, mean), bars)
	}
	ratios := make(plotter.XYs, len(p.Buckets[0].Layers))
	for j, l := range p.Buckets[0].Layers {
		ratios[j] = plotter.XY{X: float64(j), Y: l.Ratio}
	}
	line, err := plotter.NewLine(ratios)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm plot-plan: %v\n", err)
		return 1
	}
	line.Width = vg.Points(1.5)
	pl.Add(line)
	pl.Legend.Add("planned ratio R", line)
	pl.Legend.Top = true
	pl.Y.Min, pl.Y.Max = 0, 1.05
	if !imagePath("plot-plan", *out, stderr) {
		return 2
	}
	if err := pl.Save(plotWidth, 4*vg.Inch, *out); err != nil {
		fmt.Fprintf(stderr, "rewarm plot-plan: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s\n", *out)
	return 0
}

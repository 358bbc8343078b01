package main

import (
	"flag"
	"fmt"
	"image/color"
	"io"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/rewarm/rewarm/internal/specfile"
	"github.com/rewarm/rewarm/mod"
)

// planFlags builds a MoD plan spec from flags (or a spec file).
func planFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*mod.Plan, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("spec", "", "plan spec file (.yaml/.json) instead of the flags below")
	layers := fs.Int64("layers", 32, "number of decoder layers")
	tokens := fs.Int64("tokens", 576, "routable tokens N (comma-separated for buckets)")
	bucketArg := fs.String("buckets", "", "comma-separated routable-token buckets")
	text := fs.Int64("text-tokens", 0, "non-routable tokens T (for t_plus_k alignment, KV and FLOPs)")
	kind := fs.String("schedule", "prd", "prd, shifted_linear, constant, interleave or explicit")
	shift := fs.Float64("shift", 0.5, "PRD shift (the average ratio)")
	maxRatio := fs.Float64("max-ratio", 0.85, "a layer routes iff its raw ratio <= this")
	minRatio := fs.Float64("min-ratio", 0.15, "floor of routed ratios")
	denom := fs.Float64("denom", 0, "cosine denominator (0: layers-1; 31 matches the released 7B checkpoints)")
	ratio := fs.Float64("ratio", 0.5, "ratio for constant / interleave")
	rounding := fs.String("rounding", "floor", "floor (p-MoD), nearest or ceil")
	precision := fs.String("precision", "float32", "float32 (p-MoD's torch arithmetic) or float64")
	multiple := fs.Int64("multiple", 1, "align k (or T+k) to a multiple: 1, 8, 64 or 128")
	align := fs.String("align", "k", "k or t_plus_k")
	hidden := fs.Int64("hidden-size", 4096, "d, for the FLOPs estimate")
	ffn := fs.Int64("ffn-size", 11008, "MLP width, for the FLOPs estimate")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	if *file != "" {
		m, err := specfile.Load(*file)
		if err != nil {
			return nil, fs, err
		}
		p, err := mod.Parse(m)
		return p, fs, err
	}
	spec := mod.Defaults()
	spec.NumLayers, spec.Tokens, spec.TextTokens = *layers, *tokens, *text
	spec.HiddenSize, spec.FFNSize = *hidden, *ffn
	if *bucketArg != "" {
		for _, f := range strings.Split(*bucketArg, ",") {
			var b int64
			if _, err := fmt.Sscan(strings.TrimSpace(f), &b); err != nil {
				return nil, fs, fmt.Errorf("--buckets: %q is not an integer", f)
			}
			spec.Buckets = append(spec.Buckets, b)
		}
		spec.Tokens = 0
	}
	spec.Schedule.Kind, spec.Schedule.Shift = *kind, *shift
	spec.Schedule.MaxRatio, spec.Schedule.MinRatio, spec.Schedule.Ratio = *maxRatio, *minRatio, *ratio
	if *denom > 0 {
		spec.Schedule.Denom = denom
	}
	spec.Rounding.Mode, spec.Rounding.Precision = *rounding, *precision
	spec.Rounding.Multiple, spec.Rounding.Align = *multiple, *align
	p, err := mod.New(spec)
	return p, fs, err
}

// planCmd prints a MoD plan as a table.
func planCmd(args []string, stdout, stderr io.Writer) int {
	p, _, err := planFlags("plan", args, stderr, nil)
	if err != nil {
		if exit := exitFlag(err); exit == 0 || strings.HasPrefix(err.Error(), "flag") {
			return exit
		}
		fmt.Fprintf(stderr, "rewarm plan: %v\n", err)
		return 1
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

// plotPlan draws the ratio per layer for each bucket.
func plotPlan(args []string, stderr io.Writer) int {
	var out *string
	p, _, err := planFlags("plot-plan", args, stderr, func(fs *flag.FlagSet) {
		out = fs.String("o", "plan.png", "output file: .png or .svg")
	})
	if err != nil {
		if exit := exitFlag(err); exit == 0 || strings.HasPrefix(err.Error(), "flag") {
			return exit
		}
		fmt.Fprintf(stderr, "rewarm plot-plan: %v\n", err)
		return 1
	}
	pl := plot.New()
	pl.Title.Text = fmt.Sprintf("rewarm: %s MoD plan, %d layers", p.Spec.Schedule.Kind, p.Spec.NumLayers)
	pl.X.Label.Text = "layer"
	pl.Y.Label.Text = "tokens kept (k / N)"
	w := vg.Points(6)
	palette := []color.Color{color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255}}
	for i, b := range p.Buckets {
		vals := make(plotter.Values, len(b.Layers))
		for j, l := range b.Layers {
			vals[j] = float64(l.K) / float64(b.Tokens)
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			fmt.Fprintf(stderr, "rewarm plot-plan: %v\n", err)
			return 1
		}
		bars.Color = palette[i%len(palette)]
		bars.LineStyle.Width = 0
		bars.Offset = vg.Length(i)*w - vg.Length(len(p.Buckets)-1)*w/2
		pl.Add(bars)
		pl.Legend.Add(fmt.Sprintf("N=%d (mean %.3f)", b.Tokens, b.Summary.KVRatio), bars)
	}
	pl.Legend.Top = true
	pl.Y.Min, pl.Y.Max = 0, 1.05
	ext := strings.ToLower(filepath.Ext(*out))
	if ext != ".png" && ext != ".svg" {
		fmt.Fprintf(stderr, "rewarm plot-plan: -o %s: use a .png or .svg file name\n", *out)
		return 2
	}
	if err := pl.Save(8*vg.Inch, 4*vg.Inch, *out); err != nil {
		fmt.Fprintf(stderr, "rewarm plot-plan: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s\n", *out)
	return 0
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/rewarm/rewarm/internal/specfile"
	"github.com/rewarm/rewarm/sched"
)

func loadPlan(arg string) (*sched.Plan, error) {
	m, err := specfile.Load(arg)
	if err != nil {
		return nil, err
	}
	cfg, err := sched.ParseConfig(m)
	if err != nil {
		return nil, err
	}
	return sched.NewPlan(cfg, nil, nil)
}

// show prints the values of a spec at chosen steps.
func show(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	at := fs.String("at", "0", "comma-separated steps (updates applied), e.g. 0,100,1000")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rewarm show SPEC [--at 0,100,1000]\n\nSPEC is a .yaml/.json file or an inline {...} mapping.")
		fs.PrintDefaults()
	}
	spec, code := parsePositional(fs, args, "one SPEC (and flags before or after it)")
	if code >= 0 {
		return code
	}
	p, err := loadPlan(spec)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm show: %v\n", err)
		return 1
	}
	var steps []int64
	for _, f := range strings.Split(*at, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n < 0 {
			fmt.Fprintf(stderr, "rewarm show: --at: %q is not a step (an integer >= 0)\n", f)
			return 2
		}
		steps = append(steps, n)
	}
	_, hasMom := p.Momentum(0)
	_, hasWD := p.WeightDecay(0)
	fmt.Fprintf(stdout, "%12s  %-14s", "step", "lr")
	if hasMom {
		fmt.Fprintf(stdout, "  %-10s", "momentum")
	}
	if hasWD {
		fmt.Fprintf(stdout, "  %-10s", "weight_decay")
	}
	fmt.Fprintln(stdout)
	for _, n := range steps {
		fmt.Fprintf(stdout, "%12d  %-14.8g", n, p.LR(n))
		if m, ok := p.Momentum(n); ok {
			fmt.Fprintf(stdout, "  %-10.6g", m)
		}
		if wd, ok := p.WeightDecay(n); ok {
			fmt.Fprintf(stdout, "  %-10.6g", wd)
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintln(stdout, "\nphases:")
	for _, ph := range p.Phases() {
		fmt.Fprintf(stdout, "  %10d  %s\n", ph.Start, ph.Name)
	}
	return 0
}

// plotCmd draws the LR (and momentum / weight decay when scheduled) against
// the step, with each phase marked.
func plotCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	steps := fs.Int64("steps", 0, "number of steps to draw (required)")
	out := fs.String("o", "schedule.png", "output file: .png or .svg")
	title := fs.String("title", "", "plot title (default: the spec kind)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rewarm plot SPEC --steps N [-o out.png|out.svg]\n\nSPEC is a .yaml/.json file or an inline {...} mapping.")
		fs.PrintDefaults()
	}
	spec, code := parsePositional(fs, args, "one SPEC (and flags before or after it)")
	if code >= 0 {
		return code
	}
	if *steps < 1 {
		given := false
		fs.Visit(func(f *flag.Flag) { given = given || f.Name == "steps" })
		if given {
			fmt.Fprintf(stderr, "rewarm plot: --steps %d: must be >= 1 (the number of steps to draw)\n", *steps)
		} else {
			fmt.Fprintln(stderr, "rewarm plot: --steps N is required (the number of steps to draw)")
		}
		return 2
	}
	if !imagePath("plot", *out, stderr) {
		return 2
	}
	p, err := loadPlan(spec)
	if err != nil {
		fmt.Fprintf(stderr, "rewarm plot: %v\n", err)
		return 1
	}
	if *title == "" {
		*title = "rewarm: " + p.Config.LR.Kind()
	}
	if err := drawPlan(p, *steps, *out, *title); err != nil {
		fmt.Fprintf(stderr, "rewarm plot: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s\n", *out)
	return 0
}

// imagePath reports whether out names a file the plot commands can write
// (.png or .svg), saying why not.
func imagePath(cmd, out string, stderr io.Writer) bool {
	switch strings.ToLower(filepath.Ext(out)) {
	case ".png", ".svg":
		return true
	}
	fmt.Fprintf(stderr, "rewarm %s: -o %s: use a .png or .svg file name\n", cmd, out)
	return false
}

// parsePositional parses fs from args around one required positional
// argument, which may come before, between or after the flags. code is -1
// to go on, else the exit code.
func parsePositional(fs *flag.FlagSet, args []string, what string) (arg string, code int) {
	pos, code := parseArgs(fs, args, 1, what)
	if code >= 0 {
		return "", code
	}
	if len(pos) == 0 {
		fs.Usage()
		return "", 2
	}
	return pos[0], -1
}

// parseArgs parses fs from args with the flags allowed before, between and
// after the positional arguments (all that follow "--" are positional), and
// returns the positionals. More than maxPos of them is a usage error that
// names the first extra one: Go's flag package stops at the first
// positional, so a flag after an extra one would otherwise be silently
// ignored. what says what the command takes, for that message. code is -1
// to go on, else the exit code.
func parseArgs(fs *flag.FlagSet, args []string, maxPos int, what string) (pos []string, code int) {
	for {
		if err := fs.Parse(args); err != nil {
			return nil, exitFlag(err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) > maxPos {
		fmt.Fprintf(fs.Output(), "rewarm %s: unexpected argument %q: %s takes %s\n", fs.Name(), pos[maxPos], fs.Name(), what)
		return nil, 2
	}
	return pos, -1
}

func exitFlag(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

const maxPlotPoints = 200000

func series(steps int64, f func(int64) (float64, bool)) (plotter.XYs, bool) {
	stride := int64(1)
	if steps > maxPlotPoints {
		stride = steps/maxPlotPoints + 1 // no overflow near 2^63
	}
	var xy plotter.XYs
	for n := int64(0); n >= 0 && n < steps; n += stride {
		v, ok := f(n)
		if !ok {
			return nil, false
		}
		xy = append(xy, plotter.XY{X: float64(n), Y: v})
	}
	return xy, true
}

func drawPlan(p *sched.Plan, steps int64, out, title string) error {
	type panel struct {
		name string
		xy   plotter.XYs
	}
	lr, _ := series(steps, func(n int64) (float64, bool) { return p.LR(n), true })
	panels := []panel{{"learning rate", lr}}
	if xy, ok := series(steps, p.Momentum); ok {
		panels = append(panels, panel{"momentum", xy})
	}
	if xy, ok := series(steps, p.WeightDecay); ok {
		panels = append(panels, panel{"weight decay", xy})
	}
	plots := make([][]*plot.Plot, len(panels))
	for i, pn := range panels {
		pl := plot.New()
		if i == 0 {
			pl.Title.Text = title
		}
		pl.X.Label.Text = "step (updates applied)"
		pl.Y.Label.Text = pn.name
		line, err := plotter.NewLine(pn.xy)
		if err != nil {
			return err
		}
		line.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
		line.Width = vg.Points(1.5)
		lo, hi := pn.xy[0].Y, pn.xy[0].Y
		for _, q := range pn.xy {
			lo, hi = min(lo, q.Y), max(hi, q.Y)
		}
		if hi == lo {
			// Widened relative to the value: a fixed 1e-12 vanishes above
			// 2^53, and gonum refuses an empty range.
			d := max(math.Abs(lo)*1e-6, 1e-12)
			lo, hi = lo-d, hi+d
			pl.Y.Min, pl.Y.Max = lo, hi
		}
		var labels plotter.XYLabels
		// Names of phases that start close together would print over each
		// other, so each goes on the first row whose last label has ended.
		// Widths are estimated: about 4.5pt per 8pt character on a ~520pt
		// wide data area.
		var rowEnds []float64
		for _, ph := range p.Phases() {
			if ph.Start <= 0 || ph.Start >= steps {
				continue
			}
			x := float64(ph.Start)
			mark, err := plotter.NewLine(plotter.XYs{{X: x, Y: lo}, {X: x, Y: hi}})
			if err != nil {
				return err
			}
			mark.Color = color.Gray{Y: 150}
			mark.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
			pl.Add(mark)
			if i == 0 {
				start := x / float64(steps)
				row := 0
				for row < len(rowEnds) && rowEnds[row] > start {
					row++
				}
				end := start + float64(len(ph.Name)+2)*4.5/520
				if row == len(rowEnds) {
					rowEnds = append(rowEnds, end)
				} else {
					rowEnds[row] = end
				}
				y := hi - float64(row)*0.07*(hi-lo)
				labels.XYs = append(labels.XYs, plotter.XY{X: x, Y: y})
				labels.Labels = append(labels.Labels, " "+ph.Name)
			}
		}
		pl.Add(line)
		if len(labels.XYs) > 0 {
			l, err := plotter.NewLabels(labels)
			if err != nil {
				return err
			}
			for j := range l.TextStyle {
				l.TextStyle[j].Font.Size = vg.Points(8)
			}
			pl.Add(l)
		}
		pl.X.Min, pl.X.Max = 0, float64(steps)
		plots[i] = []*plot.Plot{pl}
	}
	w, h := 8*vg.Inch, vg.Length(len(panels))*3*vg.Inch
	var (
		canvas draw.Canvas
		write  func(io.Writer) error
	)
	switch strings.ToLower(filepath.Ext(out)) {
	case ".png":
		img := vgimg.New(w, h)
		canvas = draw.New(img)
		write = func(f io.Writer) error { _, err := vgimg.PngCanvas{Canvas: img}.WriteTo(f); return err }
	case ".svg":
		img := vgsvg.New(w, h)
		canvas = draw.New(img)
		write = func(f io.Writer) error { _, err := img.WriteTo(f); return err }
	default:
		return fmt.Errorf("-o %s: use a .png or .svg file name", out)
	}
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4),
		PadLeft: vg.Points(4), PadRight: vg.Points(12), PadY: vg.Points(8)}
	cells := plot.Align(plots, tiles, canvas)
	for i := range plots {
		plots[i][0].Draw(cells[i][0])
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"io"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chartSpec is what `rewarm chart` draws: line series, or bars when Bars
// is set (one bar group per series, at the x positions).
type chartSpec struct {
	Title  string `json:"title"`
	XLabel string `json:"xlabel"`
	YLabel string `json:"ylabel"`
	Bars   bool   `json:"bars"`
	LogY   bool   `json:"log_y"`
	Legend string `json:"legend"` // "top right" (default), "bottom left", ...
	Series []struct {
		Name string    `json:"name"`
		X    []float64 `json:"x"`
		Y    []float64 `json:"y"`
	} `json:"series"`
}

var palette = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
	color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255},
	color.RGBA{227, 119, 194, 255}, color.RGBA{127, 127, 127, 255}, color.RGBA{188, 189, 34, 255},
	color.RGBA{23, 190, 207, 255},
}

// maxChartInches bounds --width and --height (a PNG is drawn at 96 dpi).
const maxChartInches = 200

// chart draws series from a JSON file (or - for stdin), for the study's figures.
func chart(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("chart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "chart.png", "output file: .png or .svg")
	width := fs.Float64("width", 8, "inches")
	height := fs.Float64("height", 4, "inches")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: rewarm chart DATA.json [-o out.png|out.svg]

DATA: {"title", "xlabel", "ylabel", "bars": false, "log_y": false, "legend": "top right",
       "series": [{"name", "x": [...], "y": [...]}]}`)
		fs.PrintDefaults()
	}
	src, code := parsePositional(fs, args, "one DATA.json or - (and flags before or after it)")
	if code >= 0 {
		return code
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"width", *width}, {"height", *height}} {
		// NaN fails both comparisons and is refused too.
		if !(f.v > 0 && f.v <= maxChartInches) {
			fmt.Fprintf(stderr, "rewarm chart: --%s %v: must be in (0, %d] inches\n", f.name, f.v, maxChartInches)
			return 2
		}
	}
	var raw []byte
	var err error
	if src == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(src)
	}
	if err != nil {
		fmt.Fprintf(stderr, "rewarm chart: %v\n", err)
		return 1
	}
	var spec chartSpec
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		fmt.Fprintf(stderr, "rewarm chart: %s: %v\n", src, err)
		return 1
	}
	if len(spec.Series) == 0 {
		fmt.Fprintf(stderr, "rewarm chart: %s: series: empty; nothing to draw\n", src)
		return 1
	}
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = spec.Title, spec.XLabel, spec.YLabel
	if spec.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{}
	}
	w := vg.Points(float64(40) / float64(max(1, len(spec.Series))))
	for i, s := range spec.Series {
		if len(s.X) != len(s.Y) {
			fmt.Fprintf(stderr, "rewarm chart: series %q has %d x and %d y values\n", s.Name, len(s.X), len(s.Y))
			return 1
		}
		if spec.LogY {
			for j, y := range s.Y {
				if !(y > 0) {
					fmt.Fprintf(stderr, "rewarm chart: series %q: y[%d] = %v: log_y needs values > 0\n", s.Name, j, y)
					return 1
				}
			}
		}
		c := palette[i%len(palette)]
		if spec.Bars {
			// One bar chart per point: gonum places a chart's bars at
			// XMin, XMin+1, ..., and these stand at their own x.
			for j := range s.Y {
				bar, err := plotter.NewBarChart(plotter.Values{s.Y[j]}, w)
				if err != nil {
					fmt.Fprintf(stderr, "rewarm chart: series %q: %v\n", s.Name, err)
					return 1
				}
				bar.XMin = s.X[j]
				bar.Color, bar.LineStyle.Width = c, 0
				bar.Offset = vg.Length(i)*w - vg.Length(len(spec.Series)-1)*w/2
				p.Add(bar)
				if j == 0 {
					p.Legend.Add(s.Name, bar)
				}
			}
			continue
		}
		xy := make(plotter.XYs, len(s.X))
		for j := range s.X {
			xy[j] = plotter.XY{X: s.X[j], Y: s.Y[j]}
		}
		line, err := plotter.NewLine(xy)
		if err != nil {
			fmt.Fprintf(stderr, "rewarm chart: series %q: %v\n", s.Name, err)
			return 1
		}
		line.Color, line.Width = c, vg.Points(1.3)
		if i >= len(palette) {
			line.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(line)
		p.Legend.Add(s.Name, line)
	}
	switch spec.Legend {
	case "", "top right":
		p.Legend.Top = true
	case "top left":
		p.Legend.Top, p.Legend.Left = true, true
	case "bottom left":
		p.Legend.Left = true
	case "bottom right":
	default:
		fmt.Fprintf(stderr, "rewarm chart: legend: %q: use \"top right\", \"top left\", \"bottom left\" or \"bottom right\"\n", spec.Legend)
		return 1
	}
	p.Add(plotter.NewGrid())
	if !imagePath("chart", *out, stderr) {
		return 2
	}
	if err := p.Save(vg.Length(*width)*vg.Inch, vg.Length(*height)*vg.Inch, *out); err != nil {
		fmt.Fprintf(stderr, "rewarm chart: %v\n", err)
		return 1
	}
	return 0
}

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"strings"
)

// runPlot: `ecps-bench plot [-o FILE] [-steps result,total] REPORT.json…`
// draws the latency by percentile of each report's steps as an SVG, in the
// manner of HDR histogram plots: the x axis stretches the tail (90 %,
// 99 %, 99.9 %, 99.99 %), the last point of each line is the maximum.
func runPlot(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ecps-bench plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the SVG to this `file` (default: standard output)")
	steps := fs.String("steps", "result,total", "comma-separated `steps` to draw: "+strings.Join(stepOrder, ", "))
	title := fs.String("title", "e-CPS login latency by percentile", "the plot's `title`")
	logY := fs.Bool("logy", true, "latency on a log scale (false: linear from 0)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: ecps-bench plot [-o FILE.svg] [-steps result,total] REPORT.json…")
		return exitUsage
	}
	var series []plotSeries
	for _, path := range fs.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "ecps-bench plot: %v\n", err)
			return exitError
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			fmt.Fprintf(stderr, "ecps-bench plot: %s: %v\n", path, err)
			return exitError
		}
		name := r.Label
		if name == "" {
			name = path
		}
		name += fmt.Sprintf(" (%s loop, %.0f logins/s)", r.Mode, r.LoginsPerS)
		for _, st := range splitList(*steps) {
			if sp := r.Spectrum[st]; len(sp) > 0 {
				series = append(series, plotSeries{name: stepTitle(st) + ": " + name, points: sp})
			}
		}
	}
	if len(series) == 0 {
		fmt.Fprintf(stderr, "ecps-bench plot: no step %s in the reports\n", *steps)
		return exitError
	}
	svg := plotSVG(*title, series, *logY)
	if *out == "" {
		_, _ = io.WriteString(stdout, svg)
		return exitOK
	}
	if err := os.WriteFile(*out, []byte(svg), 0o644); err != nil {
		fmt.Fprintf(stderr, "ecps-bench plot: %v\n", err)
		return exitError
	}
	return exitOK
}

func stepTitle(st string) string {
	switch st {
	case stepResult:
		return "decision → IdP result"
	case stepTotal:
		return "whole login"
	}
	return st
}

type plotSeries struct {
	name   string
	points [][2]float64 // percentile, ms
}

// tailX places a percentile on the x axis: log10(1 / (1 − p)), so that
// 90 %, 99 %, 99.9 % and 99.99 % are evenly spaced; the maximum (100 %)
// goes a little after 99.99 %.
func tailX(p float64) float64 {
	if p >= 100 {
		return 4.4
	}
	return math.Min(math.Log10(100/(100-p)), 4)
}

// niceCeil rounds v up to 1, 2 or 5 × a power of ten, and gives the tick step.
func niceCeil(v float64) (top, step float64) {
	if v <= 0 {
		return 1, 0.2
	}
	mag := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= v {
			top = m * mag
			break
		}
	}
	step = top / 5
	return top, step
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// yAxis maps latencies (ms) to [0, 1] and lists the ticks: linear from 0
// to a round ceiling, or by decades (1, 2, 5 × 10^k) on a log scale.
type yAxis struct {
	f     func(ms float64) float64
	ticks []float64
}

func newYAxis(minY, maxY float64, logY bool) yAxis {
	if !logY || minY <= 0 {
		top, step := niceCeil(maxY)
		var ticks []float64
		for y := 0.0; y <= top+step/2; y += step {
			ticks = append(ticks, y)
		}
		return yAxis{f: func(v float64) float64 { return v / top }, ticks: ticks}
	}
	lo := math.Floor(math.Log10(minY))
	hi := math.Ceil(math.Log10(maxY))
	if hi <= lo {
		hi = lo + 1
	}
	var ticks []float64
	for e := lo; e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); math.Log10(v) <= hi+1e-9 {
				ticks = append(ticks, v)
			}
		}
	}
	return yAxis{f: func(v float64) float64 { return (math.Log10(math.Max(v, minY/10)) - lo) / (hi - lo) }, ticks: ticks}
}

func plotSVG(title string, series []plotSeries, logY bool) string {
	const (
		w           = 900
		left, right = 70, 20
		top, bottom = 40, 60 // bottom: the x axis labels; the legend goes below
		legendLine  = 18
		xMax        = 4.4
		plotH       = 400.0
		axisColor   = "#444"
		gridColor   = "#ddd"
	)
	h := top + int(plotH) + bottom + legendLine*len(series) + 16
	plotW := float64(w - left - right)
	maxY, minY := 0.0, math.Inf(1)
	for _, s := range series {
		for _, p := range s.points {
			maxY = math.Max(maxY, p[1])
			if p[1] > 0 {
				minY = math.Min(minY, p[1])
			}
		}
	}
	ya := newYAxis(minY, maxY, logY)
	px := func(x float64) float64 { return left + x/xMax*plotW }
	py := func(y float64) float64 { return top + plotH - ya.f(y)*plotH }
	yBottom, yTopV := py(ya.ticks[0]), py(ya.ticks[len(ya.ticks)-1])

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" text-anchor="middle">%s</text>`+"\n", w/2, html.EscapeString(title))
	for _, y := range ya.ticks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", px(0), py(y), px(xMax), py(y), gridColor)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", px(0)-6, py(y)+4, trimFloat(y))
	}
	for _, t := range []struct {
		p     float64
		label string
	}{{0, "0 %"}, {90, "90 %"}, {99, "99 %"}, {99.9, "99.9 %"}, {99.99, "99.99 %"}, {100, "max"}} {
		x := px(tailX(t.p))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, yBottom, x, yTopV, gridColor)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, yBottom+18, t.label)
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="%s"/>`+"\n",
		px(0), yTopV, px(xMax)-px(0), yBottom-yTopV, axisColor)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">percentile (the tail stretched: 1 / (1 − p) on a log scale)</text>`+"\n",
		px(xMax/2), yBottom+38)
	yLabel := "latency (ms)"
	if logY {
		yLabel = "latency (ms, log scale)"
	}
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (yBottom+yTopV)/2, yLabel)
	for i, s := range series {
		color := palette[i%len(palette)]
		var pts []string
		for _, p := range s.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(tailX(p[0])), py(p[1])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		for _, p := range pts {
			xy := strings.Split(p, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`+"\n", xy[0], xy[1], color)
		}
		ly := yBottom + 60 + float64(legendLine*i)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", px(0), ly-4, px(0)+24, ly-4, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", px(0)+32, ly, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// series is one system at one setting of one scenario, over its rounds.
type series struct {
	system  string
	param   string  // e.g. "c=64"
	x       float64 // the setting as a number, for charts
	peer    string  // the system this one is compared with ("" for a peer)
	unit    string  // what ops/s counts, e.g. "req/s"
	samples []sample
}

func (s *series) opsList() []float64 {
	out := make([]float64, len(s.samples))
	for i, x := range s.samples {
		out[i] = x.ops
	}
	return out
}

// medOps is the median over rounds of ops/s.
func (s *series) medOps() float64 { return median(s.opsList()) }

// medP50 and medP99 are the medians over rounds of each round's quantile.
func (s *series) medP50() time.Duration {
	return medDur(s.samples, func(x sample) time.Duration { return x.p50 })
}
func (s *series) medP99() time.Duration {
	return medDur(s.samples, func(x sample) time.Duration { return x.p99 })
}

func (s *series) fails() (ok, fail int) {
	for _, x := range s.samples {
		ok += x.ok
		fail += x.fail
	}
	return ok, fail
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	c := slices.Clone(v)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func medDur(ss []sample, f func(sample) time.Duration) time.Duration {
	v := make([]time.Duration, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	return medianDur(v)
}

func medianDur(ds []time.Duration) time.Duration {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = float64(d)
	}
	return time.Duration(median(v))
}

// goal is one goal of the issue and what was measured against it.
type goal struct {
	scenario string
	text     string // the goal as the issue states it
	measured string // the figures
	met      bool
	checked  bool // false when the scenario could not measure it
}

// section is what one scenario reports.
type section struct {
	key    string // flag name of the scenario
	title  string
	intro  string
	series []*series
	extra  string // markdown after the table (own tables, notes)
	goals  []goal
	charts []string // PNG file names in the results directory
	err    error
	took   time.Duration
}

// find returns the series of system at param, or nil.
func (sec *section) find(system, param string) *series {
	for _, s := range sec.series {
		if s.system == system && s.param == param {
			return s
		}
	}
	return nil
}

// add appends a sample to the series of system at param, creating it.
func (sec *section) add(system, peer, param string, x float64, unit string, smp sample) *series {
	s := sec.find(system, param)
	if s == nil {
		s = &series{system: system, peer: peer, param: param, x: x, unit: unit}
		sec.series = append(sec.series, s)
	}
	s.samples = append(s.samples, smp)
	return s
}

// ratio returns s's median ops/s and p50, p99 over its peer's.
func (sec *section) ratio(s *series) (ops, p50, p99 float64, ok bool) {
	if s.peer == "" {
		return 0, 0, 0, false
	}
	pe := sec.find(s.peer, s.param)
	if pe == nil || pe.medOps() == 0 {
		return 0, 0, 0, false
	}
	ops = s.medOps() / pe.medOps()
	if pe.medP50() > 0 {
		p50 = float64(s.medP50()) / float64(pe.medP50())
	}
	if pe.medP99() > 0 {
		p99 = float64(s.medP99()) / float64(pe.medP99())
	}
	return ops, p50, p99, true
}

// table renders the scenario's series as the table.
func (sec *section) table() string {
	if len(sec.series) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("| system | setting | ops/s median [min–max] | p50 | p99 | failed | ratio to peer (ops/s; p50; p99) |\n|---|---|---|---|---|---|---|\n")
	for _, s := range sec.series {
		ops := s.opsList()
		ratio := "—"
		if r, p50, p99, ok := sec.ratio(s); ok {
			ratio = fmt.Sprintf("**%.2f×** vs %s; p50 %.2f×; p99 %.2f×", r, s.peer, p50, p99)
		}
		_, fail := s.fails()
		fmt.Fprintf(&b, "| %s | %s | %s %s [%s–%s] | %s | %s | %d | %s |\n", s.system, s.param,
			fmtNum(median(ops)), s.unit, fmtNum(slices.Min(ops)), fmtNum(slices.Max(ops)),
			fmtDur(s.medP50()), fmtDur(s.medP99()), fail, ratio)
	}
	return b.String()
}

func fmtNum(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.2f", f)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// palette for the charts' systems.
var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// barChart draws value(series) grouped by setting, one bar colour per
// system, into dir/file.
func barChart(dir, file, title, ylabel string, ss []*series, value func(*series) float64) error {
	var params, systems []string
	for _, s := range ss {
		if !slices.Contains(params, s.param) {
			params = append(params, s.param)
		}
		if !slices.Contains(systems, s.system) {
			systems = append(systems, s.system)
		}
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	w := vg.Points(18)
	for i, sys := range systems {
		vals := make(plotter.Values, len(params))
		for j, prm := range params {
			for _, s := range ss {
				if s.system == sys && s.param == prm {
					vals[j] = value(s)
				}
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("chart %s: %w", file, err)
		}
		bars.LineStyle.Width = 0
		bars.Color = palette[i%len(palette)]
		bars.Offset = w * vg.Length(float64(i)-float64(len(systems)-1)/2)
		p.Add(bars)
		p.Legend.Add(sys, bars)
	}
	p.Legend.Top = true
	p.Y.Min = 0
	p.Y.Max *= 1.35 // room for the legend above the bars
	p.NominalX(params...)
	if err := p.Save(vg.Length(max(5, len(params)*len(systems)))*vg.Inch*0.9, 4*vg.Inch, filepath.Join(dir, file)); err != nil {
		return fmt.Errorf("save chart %s: %w", file, err)
	}
	return nil
}

// lineChart draws y(x) per system into dir/file, with a logarithmic x
// axis ticked at the settings when logX.
func lineChart(dir, file, title, xlabel, ylabel string, logX bool, ss []*series, value func(*series) float64) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	var systems []string
	for _, s := range ss {
		if !slices.Contains(systems, s.system) {
			systems = append(systems, s.system)
		}
	}
	for i, sys := range systems {
		var pts plotter.XYs
		for _, s := range ss {
			if s.system == sys {
				pts = append(pts, plotter.XY{X: s.x, Y: value(s)})
			}
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("chart %s: %w", file, err)
		}
		l.Color, sc.Color = palette[i%len(palette)], palette[i%len(palette)]
		p.Add(l, sc)
		p.Legend.Add(sys, l, sc)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	if logX {
		p.X.Scale = plot.LogScale{}
		var ticks []plot.Tick
		for _, s := range ss {
			if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == s.x }) {
				ticks = append(ticks, plot.Tick{Value: s.x, Label: fmt.Sprint(s.x)})
			}
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
	}
	p.Y.Max *= 1.15
	if err := p.Save(6*vg.Inch, 4*vg.Inch, filepath.Join(dir, file)); err != nil {
		return fmt.Errorf("save chart %s: %w", file, err)
	}
	return nil
}

// machine describes the machine of the run.
func machine() string {
	var b strings.Builder
	cpu := "?"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	mem := "?"
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib int64
		_, _ = fmt.Sscanf(strings.SplitN(string(raw), "\n", 2)[0], "MemTotal: %d kB", &kib)
		mem = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
	}
	kernel := "?"
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(raw))
	}
	fmt.Fprintf(&b, "- CPU: %d × %s (nproc %d)\n", runtime.NumCPU(), cpu, runtime.NumCPU())
	fmt.Fprintf(&b, "- memory: %s; kernel %s; %s/%s; harness built with %s\n", mem, kernel, runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(&b, "- peers: %s\n", peerVersions())
	return b.String()
}

// loadavg returns /proc/loadavg's first three fields.
func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func peerVersions() string {
	var out []string
	for _, c := range [][]string{{"haproxy", "-v"}, {"redis-server", "--version"}, {"etcd", "--version"}, {"memcached", "-V"}} {
		raw, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		if err != nil {
			continue
		}
		first := strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0])
		out = append(out, first)
	}
	return strings.Join(out, "; ")
}

// writeReport writes the results note for the sections.
func writeReport(path string, secs []*section, opts options, started time.Time, loadStart, loadEnd string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# cohort benchmark results, %s\n\n", started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Command: `%s`. Every figure below was taken in this one run, cohort and its peers on the same machine, "+
		"alternating round by round; ratios are what to read, absolute figures on a shared machine are noise.\n\n", opts.command)
	b.WriteString("## Machine\n\n")
	b.WriteString(machine())
	fmt.Fprintf(&b, "- cohort measured: %s\n", opts.cohortDesc)
	fmt.Fprintf(&b, "- load average (1, 5, 15 min) at start: %s; at end: %s\n", loadStart, loadEnd)
	fmt.Fprintf(&b, "- mode: %s; rounds per setting: %d of %s after a %s warm-up\n\n", opts.modeName(), opts.rounds, opts.round, opts.warmup)

	b.WriteString("## Goals\n\n| scenario | goal | measured | met |\n|---|---|---|---|\n")
	for _, s := range secs {
		for _, g := range s.goals {
			met := "no"
			switch {
			case !g.checked:
				met = "not measured"
			case g.met:
				met = "yes"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.scenario, g.text, g.measured, met)
		}
	}
	b.WriteString("\n")
	for _, s := range secs {
		fmt.Fprintf(&b, "## %s\n\n", s.title)
		if s.intro != "" {
			b.WriteString(s.intro + "\n\n")
		}
		if s.err != nil {
			fmt.Fprintf(&b, "**The scenario failed:** %s\n\n", strings.ReplaceAll(s.err.Error(), "\n", " "))
		}
		if t := s.table(); t != "" {
			b.WriteString(t + "\n")
		}
		if s.extra != "" {
			b.WriteString(s.extra + "\n")
		}
		for _, c := range s.charts {
			fmt.Fprintf(&b, "![%s](%s)\n", c, c)
		}
		if len(s.charts) > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "_Scenario time: %s._\n\n", s.took.Round(time.Second))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// round1 rounds to one decimal.
func round1(f float64) float64 { return math.Round(f*10) / 10 }

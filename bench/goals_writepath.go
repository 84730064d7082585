package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The goals of the durable write path (issue 22): the harness reports each
// as met or not on every run, so a regression shows in the next one.

// ratioGoal checks that cohort at param reaches at least minOps× its
// peer's ops/s with the latency percentile lat ("p50" or "p99") at most
// maxLat× the peer's.
func ratioGoal(sec *section, scenario, text, param string, minOps float64, lat string, maxLat float64) goal {
	g := goal{scenario: scenario, text: text}
	s := sec.find("cohort", param)
	if s == nil {
		return g
	}
	r, p50, p99, ok := sec.ratio(s)
	if !ok {
		return g
	}
	pe := sec.find(s.peer, param)
	lr, ld, pd := p99, s.medP99(), pe.medP99()
	if lat == "p50" {
		lr, ld, pd = p50, s.medP50(), pe.medP50()
	}
	g.checked, g.met = true, r >= minOps && lr <= maxLat
	g.measured = fmt.Sprintf("%.2f× (%s vs %s); %s %.2f× (%s vs %s)", r, fmtNum(s.medOps()), fmtNum(pe.medOps()),
		lat, lr, fmtDur(ld), fmtDur(pd))
	return g
}

// stackGoals are the stack scenario's goals at 1 and 64 connections.
func stackGoals(sec *section) []goal {
	return []goal{
		ratioGoal(sec, "1 stack", "cohort ≥ 1.0× the stack's req/s at 1 connection, p99 ≤ 2× the stack's", "c=1", 1.0, "p99", 2.0),
		ratioGoal(sec, "1 stack", "cohort ≥ 1.5× the stack's req/s at 64 connections, p99 no worse", "c=64", 1.5, "p99", 1.0),
	}
}

// writesGoals are the replicated writes scenario's goals at 1 and 64 writers.
func writesGoals(sec *section) []goal {
	return []goal{
		ratioGoal(sec, "2 writes", "cohort ≥ 1.0× etcd's writes/s with 1 writer, p50 no worse", "writers=1", 1.0, "p50", 1.0),
		ratioGoal(sec, "2 writes", "cohort ≥ 1.3× etcd's writes/s at 64 writers, p99 no worse", "writers=64", 1.3, "p99", 1.0),
	}
}

// idleCPUGoal is the most CPU an idle cohort node may use, in percent of
// one core.
const idleCPUGoal = 2.0

// measureIdle reads the CPU time the idle processes of two systems spend
// over d from /proc, and returns the idle goal and a table of the
// figures. The systems are measured at the same time: neither has load.
func measureIdle(ctx context.Context, d time.Duration, cohort, peer []*proc, peerName string) (goal, string) {
	g := goal{scenario: "2 writes", text: fmt.Sprintf("an idle 3-node cluster uses ≤ %.0f %% of a core per node (CPU from /proc over %s)", idleCPUGoal, d)}
	pct, err := idleCPU(ctx, d, append(append([]*proc{}, cohort...), peer...))
	if err != nil {
		return g, ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Idle CPU, percent of one core, read from `/proc/PID/stat` over %s with no load on either system:\n\n", d)
	b.WriteString("| system | per process |\n|---|---|\n")
	row := func(name string, v []float64) {
		var cells []string
		for _, x := range v {
			cells = append(cells, fmt.Sprintf("%.1f %%", x))
		}
		fmt.Fprintf(&b, "| %s | %s |\n", name, strings.Join(cells, ", "))
	}
	row("cohort", pct[:len(cohort)])
	row(peerName, pct[len(cohort):])
	b.WriteString("\n")
	worst := 0.0
	for _, x := range pct[:len(cohort)] {
		worst = max(worst, x)
	}
	g.checked, g.met = true, worst <= idleCPUGoal
	g.measured = fmt.Sprintf("busiest cohort node %.1f %% of a core", worst)
	return g, b.String()
}

// idleCPU reads the CPU time procs spend over d from /proc, in percent of
// one core each.
func idleCPU(ctx context.Context, d time.Duration, procs []*proc) ([]float64, error) {
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.pid())
	}
	m := newCPUMeter(pids...)
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(d):
	}
	took := time.Since(start)
	pct := make([]float64, len(pids))
	for i, p := range pids {
		end, err := cpuTicks(p)
		if err != nil {
			return nil, fmt.Errorf("cpu of %d: %w", p, err)
		}
		pct[i] = float64(time.Duration(end-m.start[i])*10*time.Millisecond) / float64(took) * 100
	}
	return pct, nil
}

package main

import (
	"context"
	"fmt"
)

// runHop is scenario 4.
func runHop(ctx context.Context, e *env) *section {
	sec := &section{title: "4. The forwarded hop: cohort's front vs HAProxy",
		intro: "`GET /demo/api/counter` with a session owned by node n2. cohort: sent to n1, whose sticky front " +
			"forwards it over the authenticated cluster port to n2. HAProxy: sent to an HAProxy whose only backend is " +
			"n2's public port. Same handler at the end, one hop each; `direct` (straight to n2) is the floor. " +
			"vegeta, closed loop."}
	conc := []int{1, 16, 64} // c=1 gives the p50 a hop adds (hop minus direct)
	if e.opts.short {
		conc = []int{64}
	}
	cc, err := startCohort(ctx, e.p, "s4-cohort", e.cohortCmd(), 3)
	if err != nil {
		sec.err = err
		return sec
	}
	defer cc.stop()
	n1, n2 := cc.nodes[0], cc.nodes[1]
	port, err := e.p.freePort()
	if err != nil {
		sec.err = err
		return sec
	}
	front := fmt.Sprintf("127.0.0.1:%d", port)
	hp, err := startHAProxy(ctx, e.p, "s4-haproxy", front, haproxyConfig(front, []string{n2.http}, ""))
	defer e.p.stopSome(hp)
	if err != nil {
		sec.err = err
		return sec
	}
	const path = "/demo/api/counter"
	owned, err := newSessions(ctx, 64, []string{"http://" + n2.http}, path, nil)
	if err != nil {
		sec.err = err
		return sec
	}
	via := func(base string) []client {
		out := make([]client, len(owned))
		for i, c := range owned {
			out[i] = client{base: base, cookie: c.cookie}
		}
		return out
	}
	systems := []struct {
		name, peer string
		clients    []client
	}{
		{"cohort hop (n1→n2)", "haproxy (→n2)", via("http://" + n1.http)},
		{"haproxy (→n2)", "", via("http://" + front)},
		{"direct (n2)", "", owned},
	}
	for _, c := range conc {
		param := fmt.Sprintf("c=%d", c)
		for _, s := range systems {
			attackHTTP(ctx, c, e.opts.warmup, mixTargeter(s.clients, path, 0))
		}
		for r := range e.opts.rounds {
			for _, s := range systems {
				smp := attackHTTP(ctx, c, e.opts.round, mixTargeter(s.clients, path, 0))
				e.logf("  %s %s round %d: %.0f req/s p50 %s p99 %s failed %d %v", s.name, param, r+1, smp.ops, fmtDur(smp.p50), fmtDur(smp.p99), smp.fail, smp.errs)
				sec.add(s.name, s.peer, param, float64(c), "req/s", smp)
			}
		}
		if ctx.Err() != nil {
			sec.err = ctx.Err()
			return sec
		}
		if c == 64 {
			e.profileRound(ctx, sec, "hop-c64-entry-n1", n1.proc.pid(), func() {
				attackHTTP(ctx, c, e.opts.round, mixTargeter(systems[0].clients, path, 0))
			})
		}
	}
	g := goal{scenario: "4 hop", text: "cohort's forwarded hop ≥ 0.8× HAProxy's req/s"}
	if s := sec.find("cohort hop (n1→n2)", "c=64"); s != nil {
		if r, _, p99, ok := sec.ratio(s); ok {
			pe := sec.find(s.peer, "c=64")
			g.checked, g.met = true, r >= 0.8
			g.measured = fmt.Sprintf("%.2f× at c=64 (%s vs %s req/s; p99 %.2f×)", r, fmtNum(s.medOps()), fmtNum(pe.medOps()), p99)
		}
	}
	sec.goals = append(sec.goals, g)
	e.chart(sec, "hop", "bar", "Scenario 4: one forwarded hop", "", "req/s (median of rounds)",
		func(s *series) float64 { return s.medOps() })
	return sec
}

package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// runHop is scenario 4.
func runHop(ctx context.Context, e *env) *section {
	sec := &section{title: "4. The forwarded hop: cohort's front vs HAProxy",
		intro: "`GET /demo/api/counter` with a session owned by node n2. cohort: sent to n1, whose sticky front " +
			"forwards it over the authenticated cluster port to n2. HAProxy: sent to an HAProxy whose only backend is " +
			"n2's public port. Same handler at the end, one hop each; `direct` (straight to n2) is the floor. " +
			"vegeta, closed loop; then the same with wrk (one session, one thread), with the CPU time each process spends per request."}
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
	if _, err := exec.LookPath("wrk"); err != nil {
		e.logf("  wrk not found: the hop is measured with vegeta only")
	} else if err := hopWithWrk(ctx, e, sec, conc, owned[0].cookie, path, systems[0].clients[0].base, "http://"+front, "http://"+n2.http,
		n1.proc.pid(), hp.pid(), n2.proc.pid()); err != nil {
		sec.err = err
		return sec
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
	added := goal{scenario: "4 hop", text: "the forwarded hop adds < 100 µs to the p50 (wrk, c=1)"}
	hop, direct := sec.find("cohort hop (n1→n2), wrk", "c=1"), sec.find("direct (n2), wrk", "c=1")
	if hop != nil && direct != nil {
		d := hop.medP50() - direct.medP50()
		added.checked, added.met = true, d < 100*time.Microsecond
		added.measured = fmt.Sprintf("+%s (p50 %s against %s direct)", fmtDur(d), fmtDur(hop.medP50()), fmtDur(direct.medP50()))
		if hp := sec.find("haproxy (→n2), wrk", "c=1"); hp != nil {
			added.measured += fmt.Sprintf("; HAProxy +%s", fmtDur(hp.medP50()-direct.medP50()))
		}
	}
	sec.goals = append(sec.goals, added)
	e.chart(sec, "hop", "bar", "Scenario 4: one forwarded hop", "", "req/s (median of rounds)",
		func(s *series) float64 { return s.medOps() })
	return sec
}

// hopWithWrk measures the three systems again with wrk, round by round,
// and the CPU time per request of the entry node or HAProxy and of the
// owner n2; the CPU table goes after the scenario's table.
func hopWithWrk(ctx context.Context, e *env, sec *section, conc []int, cookie, path, hopURL, haproxyURL, directURL string, n1, haproxy, n2 int) error {
	systems := []struct {
		name, peer, url string
		front           int // the process in front of n2, 0 for none
	}{
		{"cohort hop (n1→n2), wrk", "haproxy (→n2), wrk", hopURL, n1},
		{"haproxy (→n2), wrk", "", haproxyURL, haproxy},
		{"direct (n2), wrk", "", directURL, 0},
	}
	type cpu struct{ front, owner []time.Duration }
	cpus := make(map[string]*cpu)
	var b strings.Builder
	b.WriteString("CPU time per request (wrk rounds, median; user + system from `/proc/PID/stat`): " +
		"the process in front of n2 (cohort's entry node n1, or HAProxy) and n2 itself.\n\n" +
		"| setting | system | in front of n2 | n2 |\n|---|---|---|---|\n")
	for _, c := range conc {
		param := fmt.Sprintf("c=%d", c)
		for _, s := range systems {
			if _, err := runWrk(ctx, c, time.Second, s.url+path, cookie); err != nil {
				return err
			}
		}
		for r := range e.opts.rounds {
			for _, s := range systems {
				pids := []int{n2}
				if s.front != 0 {
					pids = append(pids, s.front)
				}
				m := newCPUMeter(pids...)
				smp, err := runWrk(ctx, c, e.opts.round, s.url+path, cookie)
				if err != nil {
					return err
				}
				per := m.perOp(smp.ok + smp.fail)
				k := s.name + " " + param
				if cpus[k] == nil {
					cpus[k] = &cpu{}
				}
				cpus[k].owner = append(cpus[k].owner, per[0])
				if s.front != 0 {
					cpus[k].front = append(cpus[k].front, per[1])
				}
				e.logf("  %s %s round %d: %.0f req/s p50 %s p99 %s failed %d; CPU per request: n2 %s%s", s.name, param, r+1,
					smp.ops, fmtDur(smp.p50), fmtDur(smp.p99), smp.fail, fmtDur(per[0]), frontCPU(per))
				sec.add(s.name, s.peer, param, float64(c), "req/s", smp)
			}
		}
		for _, s := range systems {
			k := s.name + " " + param
			front := "—"
			if len(cpus[k].front) > 0 {
				front = fmtDur(medianDur(cpus[k].front))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", param, strings.TrimSuffix(s.name, ", wrk"), front, fmtDur(medianDur(cpus[k].owner)))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	sec.extra += b.String()
	return nil
}

func frontCPU(per []time.Duration) string {
	if len(per) < 2 {
		return ""
	}
	return ", in front " + fmtDur(per[1])
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// client is one benchmark client's session: where it sends its requests
// and the cookies it holds.
type client struct {
	base   string // http://host:port
	cookie string // Cookie header value
}

// newSession creates a session with one POST to base+path and returns
// the client holding its cookies.
func newSession(ctx context.Context, hc *http.Client, base, path string, body []byte) (client, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(string(body)))
	if err != nil {
		return client{}, fmt.Errorf("session request: %w", err)
	}
	res, err := hc.Do(req)
	if err != nil {
		return client{}, fmt.Errorf("create session at %s: %w", base, err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return client{}, fmt.Errorf("create session at %s: %s", base, res.Status)
	}
	var parts []string
	for _, c := range res.Cookies() {
		parts = append(parts, c.Name+"="+c.Value)
	}
	if len(parts) == 0 {
		return client{}, fmt.Errorf("create session at %s: no cookie set", base)
	}
	return client{base: base, cookie: strings.Join(parts, "; ")}, nil
}

// newSessions creates n sessions, the i-th through bases[i%len(bases)].
func newSessions(ctx context.Context, n int, bases []string, path string, body []byte) ([]client, error) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer hc.CloseIdleConnections()
	out := make([]client, n)
	for i := range n {
		c, err := newSession(ctx, hc, bases[i%len(bases)], path, body)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// mixTargeter spreads requests over the clients' sessions round-robin:
// every tenth is a POST (a session write), the rest GETs (reads).
func mixTargeter(clients []client, path string, postEvery uint64) vegeta.Targeter {
	var k atomic.Uint64
	hdrs := make([]http.Header, len(clients))
	for i, c := range clients {
		hdrs[i] = http.Header{"Cookie": {c.cookie}}
	}
	return func(t *vegeta.Target) error {
		i := k.Add(1)
		c := i % uint64(len(clients))
		t.Method = http.MethodGet
		if postEvery > 0 && i%postEvery == 0 {
			t.Method = http.MethodPost
		}
		t.URL = clients[c].base + path
		t.Header = hdrs[c]
		t.Body = nil
		return nil
	}
}

// runStack is scenario 1.
func runStack(ctx context.Context, e *env) *section {
	sec := &section{title: "1. The stack: 3 cohort nodes vs HAProxy → 3 Go apps (scs) → Redis",
		intro: "Each client holds one session and sends 90% `GET /demo/api/counter` (reads the session) and 10% `POST` " +
			"(increments it). cohort: the real binary, 3 nodes, clients spread over the three nodes (each session " +
			"created on the node its client talks to), every POST committed through Raft on a majority (fsync'd) " +
			"before the answer. The stack: HAProxy 2.6 with an inserted sticky cookie (`SERVERID`), three Go processes " +
			"with alexedwards/scs (same counter logic, no idle timeout so reads never write) and one Redis with " +
			"Debian's defaults (no AOF: an acknowledged write is in memory only). Load: vegeta as a library, closed " +
			"loop, one worker per connection; the systems alternate round by round."}
	conc := []int{1, 16, 64, 256}
	if e.opts.short {
		conc = []int{1, 64}
	}
	const sessionsN = 256
	cc, err := startCohort(ctx, e.p, "s1-cohort", e.cohortCmd(), 3)
	if err != nil {
		sec.err = err
		return sec
	}
	defer cc.stop()
	st, err := startStack(ctx, e.p, e.self, 3)
	defer e.p.stopSome(st.procs...)
	if err != nil {
		sec.err = err
		return sec
	}
	var bases []string
	for _, n := range cc.nodes {
		bases = append(bases, "http://"+n.http)
	}
	const path = "/demo/api/counter"
	cohortClients, err := newSessions(ctx, sessionsN, bases, path, nil)
	if err != nil {
		sec.err = fmt.Errorf("cohort sessions: %w", err)
		return sec
	}
	stackClients, err := newSessions(ctx, sessionsN, []string{"http://" + st.front}, path, nil)
	if err != nil {
		sec.err = fmt.Errorf("stack sessions: %w", err)
		return sec
	}
	systems := []struct {
		name, peer string
		clients    []client
	}{
		{"cohort", "haproxy+scs+redis", cohortClients},
		{"haproxy+scs+redis", "", stackClients},
	}
	for _, c := range conc {
		param := fmt.Sprintf("c=%d", c)
		for _, s := range systems {
			e.logf("  warm-up %s %s", s.name, param)
			attackHTTP(ctx, c, e.opts.warmup, mixTargeter(s.clients, path, 10))
		}
		for r := range e.opts.rounds {
			for _, s := range systems {
				smp := attackHTTP(ctx, c, e.opts.round, mixTargeter(s.clients, path, 10))
				e.logf("  %s %s round %d: %.0f req/s p50 %s p99 %s failed %d %v", s.name, param, r+1, smp.ops, fmtDur(smp.p50), fmtDur(smp.p99), smp.fail, smp.errs)
				sec.add(s.name, s.peer, param, float64(c), "req/s", smp)
			}
			if ctx.Err() != nil {
				sec.err = ctx.Err()
				return sec
			}
		}
		if c == 64 {
			e.profileRound(ctx, sec, "stack-c64-n1", cc.nodes[0].proc.pid(), func() {
				attackHTTP(ctx, c, e.opts.round, mixTargeter(cohortClients, path, 10))
			})
		}
	}
	var b strings.Builder
	b.WriteString("The POSTs alone (session writes), median over rounds:\n\n| system | setting | write p50 | write p99 |\n|---|---|---|---|\n")
	for _, s := range sec.series {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.system, s.param,
			fmtDur(medDur(s.samples, func(x sample) time.Duration { return x.writeP50 })),
			fmtDur(medDur(s.samples, func(x sample) time.Duration { return x.writeP99 })))
	}
	sec.extra += b.String()
	sec.goals = append(sec.goals, stackGoals(sec)...)
	e.chart(sec, "stack-throughput", "line", "Scenario 1: 90% session reads / 10% writes", "concurrent connections", "req/s (median of rounds)",
		func(s *series) float64 { return s.medOps() })
	e.chart(sec, "stack-p99", "line", "Scenario 1: p99 latency", "concurrent connections", "p99 (ms)",
		func(s *series) float64 { return float64(s.medP99()) / 1e6 })
	return sec
}

// chart draws a chart of sec's series into the results directory and
// links it; a chart that fails is noted, not fatal.
func (e *env) chart(sec *section, name, kind, title, xlabel, ylabel string, value func(*series) float64) {
	e.chartSeries(sec, sec.series, name, kind, title, xlabel, ylabel, value)
}

// chartSeries is chart of some of sec's series.
func (e *env) chartSeries(sec *section, ss []*series, name, kind, title, xlabel, ylabel string, value func(*series) float64) {
	file := e.stamp + "-" + name + ".png"
	var err error
	if kind == "line" {
		err = lineChart(e.out, file, title, xlabel, ylabel, true, ss, value)
	} else {
		err = barChart(e.out, file, title, ylabel, ss, value)
	}
	if err != nil {
		sec.extra += fmt.Sprintf("\n(chart %s failed: %v)\n", name, err)
		return
	}
	sec.charts = append(sec.charts, file)
}

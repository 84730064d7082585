package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// blob1K is the 1 KiB value of the replicated writes scenario.
func blob1K() []byte {
	b := make([]byte, 1024)
	_, _ = rand.Read(b)
	return b
}

// httpWriter returns an op for conc workers that POSTs body into the
// workers' sessions.
func httpWriter(clients []client, conc int, path string, body []byte) (func(ctx context.Context, w int) error, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: len(clients), MaxIdleConns: 4 * len(clients)}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	pick := sessionPicker(clients, conc)
	op := func(ctx context.Context, w int) error {
		c := pick(w)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("request: %w", err)
		}
		req.Header.Set("Cookie", c.cookie)
		res, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("post: %w", err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("post: %s", res.Status)
		}
		return nil
	}
	return op, tr.CloseIdleConnections
}

// sessionPicker returns, for conc workers, which client worker w uses next:
// sessions w, w+conc, w+2·conc, ... in turn, so that no two workers share a
// session and, with the sessions created round-robin over the nodes, the
// workers' requests spread over every node. Each worker calls it from its
// own goroutine only.
func sessionPicker(clients []client, conc int) func(w int) client {
	next := make([]int, conc)
	for w := range next {
		next[w] = w
	}
	return func(w int) client {
		c := clients[next[w]%len(clients)]
		next[w] += conc
		return c
	}
}

// runWrites is scenario 2.
func runWrites(ctx context.Context, e *env) *section {
	sec := &section{title: "2. Replicated writes: 1 KiB session writes through Raft vs etcd 3.4 puts",
		intro: "cohort: 3 nodes (the harness's `cohort-node`, i.e. `cohort serve` plus a `POST /bench/blob` route that " +
			"stores the 1 KiB body in the caller's session and commits it through Raft before answering). Each writer " +
			"owns a session on one of the three nodes, so two thirds of the writes are forwarded by a follower to the " +
			"leader, as in production. etcd: 3 members on loopback (Debian's etcd-server), `Put` of 1 KiB through " +
			"clientv3 over all three endpoints. Both are durable on a majority with fsync before the answer. Load: the " +
			"harness's closed loop (one goroutine per writer; etcd speaks gRPC, so vegeta cannot drive it). The cohort nodes run " +
			"with `--no-demo`: the demo application's `demo-tick` job commits two entries every 2 s, so a cluster running it " +
			"is not idle; its cost is reported apart, below the idle table."}
	writers := []int{1, 64}
	// --no-demo: the demo application's job writes twice every 2 s, which
	// is work, not idle; idleWithDemo reports that cost apart.
	cc, err := startCohortWith(ctx, e.p, "s2-cohort", e.benchNodeCmd(), 3, []string{"--no-demo"})
	if err != nil {
		sec.err = err
		return sec
	}
	defer cc.stop()
	urls, eps, err := startEtcd(ctx, e.p, "s2-etcd", 3)
	defer e.p.stopSome(eps...)
	if err != nil {
		sec.err = err
		return sec
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		sec.err = fmt.Errorf("etcd client: %w", err)
		return sec
	}
	defer cli.Close()
	body := blob1K()
	var bases []string
	for _, n := range cc.nodes {
		bases = append(bases, "http://"+n.http)
	}
	clients, err := newSessions(ctx, 64, bases, "/bench/blob", body)
	if err != nil {
		sec.err = fmt.Errorf("cohort sessions: %w", err)
		return sec
	}
	idle := 20 * time.Second
	if e.opts.short {
		idle = 5 * time.Second
	}
	var cohortProcs []*proc
	for _, n := range cc.nodes {
		cohortProcs = append(cohortProcs, n.proc)
	}
	ig, itable := measureIdle(ctx, idle, cohortProcs, eps, "etcd")
	e.logf("  idle: %s", ig.measured)
	sec.extra += itable
	sec.goals = append(sec.goals, ig)
	val := string(body)
	etcdOp := func(ctx context.Context, w int) error {
		_, err := cli.Put(ctx, fmt.Sprintf("bench/k%d", w), val)
		return err
	}
	cost := map[string][][]time.Duration{} // "system writers=N" -> per round, per process (the harness last)
	for _, wr := range writers {
		cohortOp, closeIdle := httpWriter(clients, wr, "/bench/blob", body)
		defer closeIdle()
		systems := []struct {
			name, peer string
			op         func(context.Context, int) error
			procs      []*proc
		}{{"cohort", "etcd", cohortOp, cohortProcs}, {"etcd", "", etcdOp, eps}}
		param := fmt.Sprintf("writers=%d", wr)
		for _, s := range systems {
			closedLoop(ctx, wr, e.opts.warmup, s.op)
		}
		for r := range e.opts.rounds {
			for _, s := range systems {
				meter := newCPUMeter(append(pids(s.procs), os.Getpid())...)
				smp := closedLoop(ctx, wr, e.opts.round, s.op)
				per := meter.perOp(smp.ok)
				cost[s.name+" "+param] = append(cost[s.name+" "+param], per)
				e.logf("  %s %s round %d: %.0f writes/s p50 %s p99 %s failed %d %v; CPU per write: servers %s, harness %s", s.name, param, r+1, smp.ops,
					fmtDur(smp.p50), fmtDur(smp.p99), smp.fail, smp.errs, fmtDur(sumDur(per[:len(per)-1])), fmtDur(per[len(per)-1]))
				sec.add(s.name, s.peer, param, float64(wr), "writes/s", smp)
			}
		}
		if ctx.Err() != nil {
			sec.err = ctx.Err()
			return sec
		}
		if wr == 64 {
			if l, err := cc.leader(ctx); err == nil {
				e.profileRound(ctx, sec, "writes-64-leader", l.proc.pid(), func() {
					closedLoop(ctx, wr, e.opts.round, cohortOp)
				})
			}
		}
	}
	sec.extra += cpuPerWriteTable(cost, writers)
	cc.stop()
	sec.extra += idleWithDemo(ctx, e, idle)
	sec.goals = append(sec.goals, writesGoals(sec)...)
	e.chart(sec, "writes", "bar", "Scenario 2: replicated 1 KiB writes", "", "writes/s (median of rounds)",
		func(s *series) float64 { return s.medOps() })
	return sec
}

// idleWithDemo measures, for information, the idle CPU of a 3-node cluster
// that runs the demo application (as `cohort serve` does by default), whose
// demo-tick job commits a start and a finish entry every 2 s.
func idleWithDemo(ctx context.Context, e *env, d time.Duration) string {
	cc, err := startCohort(ctx, e.p, "s2-cohort-demo", e.benchNodeCmd(), 3)
	if err != nil {
		return fmt.Sprintf("\n(idle with the demo application: %v)\n", err)
	}
	defer cc.stop()
	var procs []*proc
	for _, n := range cc.nodes {
		procs = append(procs, n.proc)
	}
	pct, err := idleCPU(ctx, d, procs)
	if err != nil {
		return fmt.Sprintf("\n(idle with the demo application: %v)\n", err)
	}
	var cells []string
	for _, x := range pct {
		cells = append(cells, fmt.Sprintf("%.1f %%", x))
	}
	e.logf("  idle with the demo application: %s", strings.Join(cells, ", "))
	return fmt.Sprintf("\nThe same idle measurement of three nodes running the demo application (its job every 2 s, "+
		"not part of the goal), over %s: %s of a core.\n", d, strings.Join(cells, ", "))
}

// pids returns the process ids of procs.
func pids(procs []*proc) []int {
	out := make([]int, 0, len(procs))
	for _, p := range procs {
		out = append(out, p.pid())
	}
	return out
}

// sumDur adds ds.
func sumDur(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

// medianCPU splits each round's CPU time per operation (cpuMeter.perOp,
// the harness last) into the servers' sum and the harness's, and returns
// the median of each over the rounds.
func medianCPU(rounds [][]time.Duration) (servers, harness time.Duration) {
	var s, h []time.Duration
	for _, per := range rounds {
		s = append(s, sumDur(per[:len(per)-1]))
		h = append(h, per[len(per)-1])
	}
	return medianDur(s), medianDur(h)
}

// cpuPerWriteTable reports the CPU time each system's three servers (summed)
// and the harness's own process spent per acknowledged write, median over
// the rounds: on a machine whose cores are all busy at 64 writers, this,
// not the disk, decides the rate, and it tells the servers' cost from the
// clients' (HTTP/1.1 for cohort, gRPC for etcd).
func cpuPerWriteTable(cost map[string][][]time.Duration, writers []int) string {
	var b strings.Builder
	b.WriteString("\nCPU time per acknowledged write (from `/proc/PID/stat`, 10 ms ticks; median of the rounds): the " +
		"three servers summed, and the harness process that drives the load (its HTTP/1.1 or gRPC client):\n\n" +
		"| system | setting | servers | harness |\n|---|---|---|---|\n")
	for _, wr := range writers {
		for _, name := range []string{"cohort", "etcd"} {
			rounds := cost[fmt.Sprintf("%s writers=%d", name, wr)]
			if len(rounds) == 0 {
				continue
			}
			servers, harness := medianCPU(rounds)
			fmt.Fprintf(&b, "| %s | writers=%d | %s | %s |\n", name, wr, fmtDur(servers), fmtDur(harness))
		}
	}
	return b.String()
}

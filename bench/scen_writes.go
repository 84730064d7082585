package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
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
	// Worker w of conc writes to sessions w, w+conc, w+2·conc, ... in
	// turn, so one writer visits sessions on every node and no two writers
	// share a session (len(clients) is a multiple of every conc used).
	next := make([]int, len(clients))
	op := func(ctx context.Context, w int) error {
		c := clients[next[w]%len(clients)]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("request: %w", err)
		}
		req.Header.Set("Cookie", c.cookie)
		next[w] += conc
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

// runWrites is scenario 2.
func runWrites(ctx context.Context, e *env) *section {
	sec := &section{title: "2. Replicated writes: 1 KiB session writes through Raft vs etcd 3.4 puts",
		intro: "cohort: 3 nodes (the harness's `cohort-node`, i.e. `cohort serve` plus a `POST /bench/blob` route that " +
			"stores the 1 KiB body in the caller's session and commits it through Raft before answering). Each writer " +
			"owns a session on one of the three nodes, so two thirds of the writes are forwarded by a follower to the " +
			"leader, as in production. etcd: 3 members on loopback (Debian's etcd-server), `Put` of 1 KiB through " +
			"clientv3 over all three endpoints. Both are durable on a majority with fsync before the answer. Load: the " +
			"harness's closed loop (one goroutine per writer; etcd speaks gRPC, so vegeta cannot drive it)."}
	writers := []int{1, 64}
	cc, err := startCohort(ctx, e.p, "s2-cohort", e.benchNodeCmd(), 3)
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
	for _, wr := range writers {
		cohortOp, closeIdle := httpWriter(clients, wr, "/bench/blob", body)
		defer closeIdle()
		systems := []struct {
			name, peer string
			op         func(context.Context, int) error
		}{{"cohort", "etcd", cohortOp}, {"etcd", "", etcdOp}}
		param := fmt.Sprintf("writers=%d", wr)
		for _, s := range systems {
			closedLoop(ctx, wr, e.opts.warmup, s.op)
		}
		for r := range e.opts.rounds {
			for _, s := range systems {
				smp := closedLoop(ctx, wr, e.opts.round, s.op)
				e.logf("  %s %s round %d: %.0f writes/s p50 %s p99 %s failed %d %v", s.name, param, r+1, smp.ops, fmtDur(smp.p50), fmtDur(smp.p99), smp.fail, smp.errs)
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
	sec.goals = append(sec.goals, writesGoals(sec)...)
	e.chart(sec, "writes", "bar", "Scenario 2: replicated 1 KiB writes", "", "writes/s (median of rounds)",
		func(s *series) float64 { return s.medOps() })
	return sec
}

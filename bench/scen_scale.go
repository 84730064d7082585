package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// createSessions creates n sessions (one POST without a cookie each,
// i.e. one Raft entry each) from conc workers spread over the nodes.
func createSessions(ctx context.Context, cc *cohortCluster, n, conc int) (time.Duration, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := cc.nodes[w%len(cc.nodes)].url("/demo/api/counter")
			for ctx.Err() == nil && next.Add(1) <= int64(n) {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base, nil)
				res, err := hc.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						err = fmt.Errorf("create session: %s", res.Status)
					}
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t0), firstErr
}

// runScale is scenario 7.
func runScale(ctx context.Context, e *env) *section {
	sizes := []int{10_000, 100_000}
	if e.opts.short {
		sizes = []int{10_000}
	}
	if len(e.opts.sessions) > 0 {
		sizes = e.opts.sessions
	}
	sec := &section{title: "7. Scale curves",
		intro: "Sessions are created through the real binary's `POST /demo/api/counter` without a cookie (one Raft entry " +
			"each, 64 clients over the three nodes), cumulatively up to each size. At each size: resident memory of every " +
			"node (VmRSS), time of `POST /_cohort/api/snapshot` on follower n3, and restore: n3 is killed (-9) and " +
			"restarted, time until it answers `/_cohort/ready`. Then a fourth node joins with `--join` and the harness " +
			"times until it is ready and has applied the leader's commit index. Last, 1 KiB session writes at 64 writers " +
			"on 3 nodes against 5 nodes (the harness's `cohort-node`)."}
	var b strings.Builder
	cc, err := startCohort(ctx, e.p, "s7-cohort", e.cohortCmd(), 3)
	if err != nil {
		sec.err = err
		return sec
	}
	defer cc.stop()
	rss := func() []int64 {
		var out []int64
		for _, n := range cc.nodes {
			out = append(out, rssKiB(n.proc))
		}
		return out
	}
	base := rss()
	b.WriteString("| sessions | created in | RSS n1 / n2 / n3 | RSS per session (n1) | snapshot (n3) | restore: restart to ready (n3) |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| 0 | — | %s | — | — | — |\n", kibList(base))
	have := 0
	var memSeries []*series
	n3 := cc.nodes[2]
	for _, size := range sizes {
		took, err := createSessions(ctx, cc, size-have, 64)
		if err != nil {
			sec.err = fmt.Errorf("create %d sessions: %w", size, err)
			break
		}
		have = size
		if err := caughtUp(ctx, cc); err != nil {
			sec.err = err
			break
		}
		mem := rss()
		per := float64(mem[0]-base[0]) * 1024 / float64(size)
		t0 := time.Now()
		snapErr := cc.adminJSON(ctx, n3, http.MethodPost, "/_cohort/api/snapshot", nil)
		snap := time.Since(t0)
		n3.proc.kill()
		t0 = time.Now()
		if err := cc.launch(n3); err != nil {
			sec.err = err
			break
		}
		readyErr := cc.waitReady(ctx, 5*time.Minute, n3)
		restore := time.Since(t0)
		snapCell, restoreCell := fmtDur(snap), fmtDur(restore)
		if snapErr != nil {
			snapCell = "failed: " + snapErr.Error()
		}
		if readyErr != nil {
			restoreCell = "failed: " + readyErr.Error()
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.0f B | %s | %s |\n", size, fmtDur(took), kibList(mem), per, snapCell, restoreCell)
		e.logf("  %d sessions: created in %s, RSS %s, snapshot %s, restore %s", size, fmtDur(took), kibList(mem), snapCell, restoreCell)
		memSeries = append(memSeries,
			&series{system: "RSS n1 (MiB)", param: fmt.Sprint(size), x: float64(size), samples: []sample{{ops: float64(mem[0]) / 1024}}},
			&series{system: "restore (s)", param: fmt.Sprint(size), x: float64(size), samples: []sample{{ops: restore.Seconds()}}},
			&series{system: "snapshot (s)", param: fmt.Sprint(size), x: float64(size), samples: []sample{{ops: snap.Seconds()}}})
		if readyErr != nil {
			sec.err = readyErr
			break
		}
	}
	// A fourth node joins the cluster holding the sessions.
	if sec.err == nil {
		join, err := joinNode(ctx, cc)
		if err != nil {
			fmt.Fprintf(&b, "\nJoin of n4 with %d sessions: failed: %v\n", have, err)
		} else {
			fmt.Fprintf(&b, "\nCatch-up of a fourth node joining with %d sessions: ready and caught up after %s.\n", have, fmtDur(join))
			e.logf("  join with %d sessions: %s", have, fmtDur(join))
		}
	}
	cc.stop()
	sec.extra = b.String()
	if len(memSeries) > 0 {
		tmp := &section{series: memSeries}
		file := e.stamp + "-scale.png"
		if err := lineChart(e.out, file, "Scenario 7: growth with sessions", "sessions", "MiB (RSS) / seconds", true, tmp.series,
			func(s *series) float64 { return s.medOps() }); err == nil {
			sec.charts = append(sec.charts, file)
		}
	}
	// Write throughput, 3 against 5 nodes.
	for _, size := range []int{3, 5} {
		smp, err := blobWrites(ctx, e, size)
		if err != nil {
			sec.extra += fmt.Sprintf("\nWrites on %d nodes failed: %v\n", size, err)
			continue
		}
		for _, s := range smp {
			sec.add(fmt.Sprintf("cohort %d nodes", size), peerOf(size), "writers=64", float64(size), "writes/s", s)
		}
	}
	if have < 1_000_000 {
		sec.extra += "\nNot in this run: 1M sessions (creating them through HTTP at this machine's few thousand writes/s " +
			"takes minutes); run `cd bench && go run . -scenario scale -sessions 10000,100000,1000000` for the full curve.\n"
	}
	return sec
}

func peerOf(size int) string {
	if size == 5 {
		return "cohort 3 nodes"
	}
	return ""
}

// blobWrites measures 1 KiB session writes at 64 writers on size nodes.
func blobWrites(ctx context.Context, e *env, size int) ([]sample, error) {
	cc, err := startCohort(ctx, e.p, fmt.Sprintf("s7-writes-%d", size), e.benchNodeCmd(), size)
	if err != nil {
		return nil, err
	}
	defer cc.stop()
	body := blob1K()
	var bases []string
	for _, n := range cc.nodes {
		bases = append(bases, "http://"+n.http)
	}
	clients, err := newSessions(ctx, 64, bases, "/bench/blob", body)
	if err != nil {
		return nil, err
	}
	op, closeIdle := httpWriter(clients, 64, "/bench/blob", body)
	defer closeIdle()
	closedLoop(ctx, 64, e.opts.warmup, op)
	var out []sample
	rounds := e.opts.rounds
	if e.opts.short {
		rounds = 1
	}
	for range rounds {
		s := closedLoop(ctx, 64, e.opts.round, op)
		e.logf("  %d nodes: %.0f writes/s p99 %s", size, s.ops, fmtDur(s.p99))
		out = append(out, s)
	}
	return out, nil
}

// joinNode starts n4 with --join and waits until it is ready and has
// applied the commit index the leader had when it started.
func joinNode(ctx context.Context, cc *cohortCluster) (time.Duration, error) {
	leader, err := cc.leader(ctx)
	if err != nil {
		return 0, err
	}
	st, err := cc.status(ctx, leader)
	if err != nil {
		return 0, err
	}
	ports, err := cc.p.ports(2)
	if err != nil {
		return 0, err
	}
	n := &cohortNode{id: "n4", http: fmt.Sprintf("127.0.0.1:%d", ports[0]), cluster: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	n.data = cc.dir + "/n4"
	t0 := time.Now()
	if err := cc.launch(n, "--join", leader.cluster); err != nil {
		return 0, err
	}
	cc.nodes = append(cc.nodes, n)
	if err := cc.waitReady(ctx, 5*time.Minute, n); err != nil {
		return 0, err
	}
	err = waitFor(ctx, 5*time.Minute, func() (bool, string) {
		s, err := cc.status(ctx, n)
		if err != nil {
			return false, err.Error()
		}
		return s.AppliedIndex >= st.CommitIndex, fmt.Sprintf("applied %d of %d", s.AppliedIndex, st.CommitIndex)
	})
	return time.Since(t0), err
}

func kibList(v []int64) string {
	var parts []string
	for _, k := range v {
		parts = append(parts, fmt.Sprintf("%.0f MiB", float64(k)/1024))
	}
	return strings.Join(parts, " / ")
}

// caughtUp waits until every node has applied the leader's commit index.
func caughtUp(ctx context.Context, cc *cohortCluster) error {
	leader, err := cc.leader(ctx)
	if err != nil {
		return err
	}
	st, err := cc.status(ctx, leader)
	if err != nil {
		return err
	}
	return waitFor(ctx, time.Minute, func() (bool, string) {
		for _, n := range cc.nodes {
			s, err := cc.status(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			if s.AppliedIndex < st.CommitIndex {
				return false, fmt.Sprintf("%s applied %d of %d", n.id, s.AppliedIndex, st.CommitIndex)
			}
		}
		return true, ""
	})
}

package testcluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/jobs"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/testcluster"
)

// The jobs of the nemesis test: both fire every second (the scheduler's
// finest @every). "once" has recover: skip, so a run whose leader
// is lost is recorded abandoned and its key never executes again; its runs
// are short, one in four lasts a few seconds, and a client asks for extra
// runs through random nodes several times a second. "again" has the default
// recover: rerun, so such a run executes again, with a new token, on the
// next leader; its runs work until their context ends (or the test
// releases them to quiesce), so every fault catches one in flight, which
// its old leader must cancel before the new one reruns it.
var nemesisJobs = []struct {
	name, recover string
	work          func() time.Duration // how long a run works unless cancelled; 0: until released
}{
	{"once", jobs.RecoverSkip, func() time.Duration {
		if rand.IntN(4) == 0 {
			return time.Duration(1000+rand.IntN(2000)) * time.Millisecond
		}
		return time.Duration(50+rand.IntN(200)) * time.Millisecond
	}},
	{"again", jobs.RecoverRerun, func() time.Duration { return 0 }},
}

// jobExec is one execution that reached a job's handler. The seq fields
// order the events of every node on one counter.
type jobExec struct {
	Job, Key string
	Node     string // where the handler ran
	RunNode  string // the node the run record names
	Fence    jobs.Fence
	Manual   bool
	Enter    int64  // handler called
	Exit     int64  // handler returned (0: still running)
	ValidErr string // what StillValid said ("" = the token is current)
	Write    string // the fenced write: "accepted", "refused ...", "" = not tried
}

// jobLedger is the world outside the cluster that the jobs act on: every
// execution on any node, and a fenced row per job that accepts a write only
// with a token newer than the last one it took (the guard of docs/jobs.md).
type jobLedger struct {
	mu       sync.Mutex
	seq      int64
	execs    []*jobExec
	row      map[string]uint64
	reported map[string]bool // violations a schedule already failed with
	release  chan struct{}   // closed: runs that work until released return
}

func newJobLedger() *jobLedger {
	return &jobLedger{row: make(map[string]uint64), reported: make(map[string]bool), release: make(chan struct{})}
}

// releaseRuns lets every run that works until released return, now and
// until renewRuns.
func (l *jobLedger) releaseRuns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.release)
}

// renewRuns makes runs work until released again.
func (l *jobLedger) renewRuns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.release = make(chan struct{})
}

// fresh drops the violations an earlier schedule already reported (the
// checks run over every execution so far).
func (l *jobLedger) fresh(bad []string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, b := range bad {
		if !l.reported[b] {
			l.reported[b] = true
			out = append(out, b)
		}
	}
	return out
}

// handler records the run, checks its token through the log (StillValid),
// writes the fenced row when the token is current, then works for a while
// (until its context ends) so faults catch runs in flight.
func (l *jobLedger) handler(nodeID string, work func() time.Duration) jobs.Func {
	return func(ctx context.Context, run jobs.Run) error {
		e := &jobExec{Job: run.Job, Key: run.Key, Node: nodeID, RunNode: run.Node, Fence: run.Fence, Manual: run.Manual}
		l.mu.Lock()
		l.seq++
		e.Enter = l.seq
		l.execs = append(l.execs, e)
		release := l.release
		l.mu.Unlock()

		vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := run.StillValid(vctx)
		cancel()
		l.mu.Lock()
		l.seq++
		if err != nil {
			e.ValidErr = err.Error()
		} else if last := l.row[run.Job]; run.FencingToken() <= last {
			e.Write = fmt.Sprintf("refused: token %d, the row holds %d", run.FencingToken(), last)
		} else {
			l.row[run.Job] = run.FencingToken()
			e.Write = "accepted"
		}
		l.mu.Unlock()

		var done <-chan time.Time
		if d := work(); d > 0 {
			done = time.After(d)
		}
		select {
		case <-ctx.Done():
		case <-done:
		case <-release:
		}
		l.mu.Lock()
		l.seq++
		e.Exit = l.seq
		l.mu.Unlock()
		return ctx.Err()
	}
}

// mark returns the current position of the event counter.
func (l *jobLedger) mark() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// snapshot copies every execution so far, in the order they entered.
func (l *jobLedger) snapshot() []jobExec {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]jobExec, len(l.execs))
	for i, e := range l.execs {
		out[i] = *e
	}
	return out
}

// TestJobsUnderNemesis runs the two nemesis jobs (see nemesisJobs) while
// the nemesis (testcluster.NemesisFaults) strikes, one seeded schedule per
// fault (COHORT_LONG=1: 100 schedules; COHORT_LIN_SCHEDULES and
// COHORT_LIN_SEED as for the session test). A fault strikes while a run is
// in flight; one that takes the leader away lasts until a new leader ran a
// job. After each schedule the jobs are suspended and the cluster quiesced,
// then it checks what jobs/DESIGN.md promises, from what the handlers
// recorded outside the cluster: a run key with recover: skip executes at
// most once and no (key, token) executes twice; a term's tokens belong to
// one node and index order agrees with term order; no run starts after a
// run of a newer term started (a paused or cut-off old leader has stopped
// before the new one begins), and a job's runs never overlap and start in
// token order; a run that StillValid declared current is never refused by
// the fenced row; the jobs fire again on the leader after the heal; every
// node holds the same history, with exactly one execution behind each
// succeeded record and a record for every execution.
func TestJobsUnderNemesis(t *testing.T) {
	ledger := newJobLedger()
	c := testcluster.New(t, 3, testcluster.WithDiskLimit(testcluster.NemesisDisk),
		testcluster.WithConfig(func(cfg *config.Config) { cfg.Jobs.History = 1000 }),
		testcluster.WithNodeSetup(func(n *node.Node) {
			for _, j := range nemesisJobs {
				if err := n.Jobs().Register(j.name, "@every 1s", ledger.handler(n.ID(), j.work), jobs.WithRecover(j.recover)); err != nil {
					t.Errorf("register %s on %s: %v", j.name, n.ID(), err)
				}
			}
		}))
	c.WaitLeader(t)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		ran := map[string]bool{}
		for _, e := range ledger.snapshot() {
			ran[e.Job] = true
		}
		return len(ran) == len(nemesisJobs), fmt.Sprintf("first runs: %v", ran)
	})
	runNemesisSchedules(t, 100, func(t *testing.T, seed uint64) { runJobsSchedule(t, c, ledger, seed) })
}

func runJobsSchedule(t *testing.T, c *testcluster.Cluster, ledger *jobLedger, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	since := len(ledger.snapshot())
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // run-now requests through random nodes (of the short job: the long one would queue them)
		defer wg.Done()
		crng := rand.New(rand.NewPCG(seed, 1))
		for ctx.Err() == nil {
			nodes := c.Nodes()
			if n := nodes[crng.IntN(len(nodes))].Node(); n != nil {
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				_, _ = n.Jobs().RunNow(rctx, "once")
				rcancel()
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(100+crng.IntN(150)) * time.Millisecond):
			}
		}
	}()
	<-time.After(time.Duration(300+rng.IntN(500)) * time.Millisecond) // when the fault starts
	// ... once a run that works until cancelled is in flight, for the fault
	// to catch.
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		for _, e := range ledger.snapshot() {
			if e.Exit == 0 && e.Job == "again" {
				return true, ""
			}
		}
		return false, "no run of again in flight"
	})
	struck := ledger.mark()
	before := c.Leader()
	what, undo := c.StrikeWith(rng, faultOf(seed))
	holdFault(t, c, before, time.Duration(500+rng.IntN(700))*time.Millisecond, func(nl *testcluster.Node) (bool, string) {
		for _, e := range ledger.snapshot() {
			if e.Enter > struck && e.Node == nl.ID {
				return true, ""
			}
		}
		return false, "no run on the new leader " + nl.ID + " yet"
	})
	undo()
	wg.Wait()
	c.Heal()
	c.WaitLeader(t)
	healed := ledger.mark()

	// Jobs keep firing after a leader change (dkron#1210): a scheduled run
	// starts on the leader after the heal.
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		l := c.Leader()
		if l == nil {
			return false, "no leader"
		}
		for _, e := range ledger.snapshot() {
			if e.Enter > healed && !e.Manual && e.Node == l.ID {
				return true, ""
			}
		}
		return false, "no scheduled run on the leader " + l.ID + " since the heal"
	})

	// Quiesce: suspend both jobs, wait until no run is active or pending
	// and every node applied the same history.
	setJobsSuspended(t, c, true)
	ledger.releaseRuns()
	defer func() {
		ledger.renewRuns()
		setJobsSuspended(t, c, false)
	}()
	histories := make(map[string][]jobs.RunRecord)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		for _, j := range nemesisJobs {
			var first string
			for i, nd := range c.Running() {
				n := nd.Node()
				if n == nil {
					return false, nd.ID + " restarting"
				}
				st, err := n.Jobs().Job(j.name)
				if err != nil || !st.Suspended || len(st.Running) > 0 || st.Pending > 0 {
					return false, fmt.Sprintf("%s on %s: suspended %v, running %v, pending %d (err %v)", j.name, nd.ID, st.Suspended, st.Running, st.Pending, err)
				}
				rs, err := n.Jobs().Runs(j.name)
				if err != nil {
					return false, err.Error()
				}
				b, _ := json.Marshal(rs)
				if i == 0 {
					first, histories[j.name] = string(b), rs
				} else if string(b) != first {
					return false, fmt.Sprintf("%s: the history on %s differs from %s's", j.name, nd.ID, c.Running()[0].ID)
				}
			}
		}
		return true, ""
	})

	execs := ledger.snapshot()
	bad := jobExecViolations(execs)
	for _, j := range nemesisJobs {
		bad = append(bad, jobHistoryViolations(j.name, j.recover == jobs.RecoverSkip, histories[j.name], execs, since)...)
	}
	bad = ledger.fresh(bad)
	terms := map[uint64]string{}
	n := 0
	for _, e := range execs[since:] {
		terms[e.Fence.Term] = e.Node
		n++
	}
	t.Logf("seed %d: nemesis %q (struck at event %d, healed at %d); %d executions this schedule, terms %v", seed, what, struck, healed, n, terms)
	if len(bad) > 0 {
		var b strings.Builder
		for _, e := range execs[max(0, since-20):] {
			fmt.Fprintf(&b, "  %+v\n", e)
		}
		t.Logf("executions since shortly before this schedule:\n%s", b.String())
		t.Fatalf("seed %d (nemesis %q): %d violations; replay with COHORT_LIN_SEED=%d:\n  %s", seed, what, len(bad), seed, strings.Join(bad, "\n  "))
	}
}

// setJobsSuspended suspends or resumes every nemesis job through the
// leader, retrying while leadership settles.
func setJobsSuspended(t *testing.T, c *testcluster.Cluster, suspend bool) {
	t.Helper()
	for _, j := range nemesisJobs {
		testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
			l := c.Leader()
			if l == nil || l.Node() == nil {
				return false, "no leader"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var err error
			if suspend {
				err = l.Node().Jobs().Suspend(ctx, j.name)
			} else {
				err = l.Node().Jobs().Resume(ctx, j.name)
			}
			return err == nil, fmt.Sprintf("suspend=%v %s: %v", suspend, j.name, err)
		})
	}
}

// jobExecViolations checks the executions, in the order they entered their
// handlers, against the promises that hold across jobs and leaders.
func jobExecViolations(execs []jobExec) []string {
	var bad []string
	type keyFence struct {
		key   string
		fence jobs.Fence
	}
	onceJob := map[string]bool{}
	for _, j := range nemesisJobs {
		onceJob[j.name] = j.recover == jobs.RecoverSkip
	}
	ran := map[keyFence]int64{}
	keys := map[string]int64{}
	termNode := map[uint64]string{}
	index := map[uint64]jobExec{}
	last := map[string]jobExec{} // per job, the previous execution
	var newest jobExec           // the execution of the highest term so far
	for _, e := range execs {
		kf := keyFence{e.Key, e.Fence}
		if at, dup := ran[kf]; dup {
			bad = append(bad, fmt.Sprintf("%s with token %s executed twice (events %d and %d)", e.Key, e.Fence, at, e.Enter))
		}
		ran[kf] = e.Enter
		if at, dup := keys[e.Key]; dup && onceJob[e.Job] {
			bad = append(bad, fmt.Sprintf("%s executed twice (events %d and %d) although recover: skip", e.Key, at, e.Enter))
		}
		keys[e.Key] = e.Enter
		if e.RunNode != e.Node {
			bad = append(bad, fmt.Sprintf("%s ran on %s but its record names %s", e.Key, e.Node, e.RunNode))
		}
		if n, ok := termNode[e.Fence.Term]; ok && n != e.Node {
			bad = append(bad, fmt.Sprintf("term %d issued tokens to %s and to %s", e.Fence.Term, n, e.Node))
		}
		termNode[e.Fence.Term] = e.Node
		if o, ok := index[e.Fence.Index]; ok && o.Key != e.Key {
			bad = append(bad, fmt.Sprintf("token index %d given to %s and to %s", e.Fence.Index, o.Key, e.Key))
		}
		index[e.Fence.Index] = e
		if e.Fence.Term < newest.Fence.Term {
			bad = append(bad, fmt.Sprintf("%s (token %s on %s) started at event %d, after %s of the newer term %d started on %s at event %d: an old leader ran after the new one began",
				e.Key, e.Fence, e.Node, e.Enter, newest.Key, newest.Fence.Term, newest.Node, newest.Enter))
		} else {
			newest = e
		}
		if p, ok := last[e.Job]; ok {
			if !p.Fence.Less(e.Fence) {
				bad = append(bad, fmt.Sprintf("%s (token %s) started after %s (token %s): tokens do not increase", e.Key, e.Fence, p.Key, p.Fence))
			}
			if p.Exit == 0 || p.Exit > e.Enter {
				bad = append(bad, fmt.Sprintf("%s on %s started at event %d while %s on %s still ran (returned at event %d)", e.Key, e.Node, e.Enter, p.Key, p.Node, p.Exit))
			}
		}
		last[e.Job] = e
		if strings.HasPrefix(e.Write, "refused") {
			bad = append(bad, fmt.Sprintf("%s (token %s on %s) passed StillValid but the fenced row was %s", e.Key, e.Fence, e.Node, e.Write))
		}
	}
	// Index order and term order agree.
	idx := make([]uint64, 0, len(index))
	for i := range index {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for i := 1; i < len(idx); i++ {
		if a, b := index[idx[i-1]], index[idx[i]]; b.Fence.Term < a.Fence.Term {
			bad = append(bad, fmt.Sprintf("token %s (%s) has a higher index but a lower term than %s (%s)", b.Fence, b.Key, a.Fence, a.Key))
		}
	}
	return bad
}

// jobHistoryViolations checks one job's replicated history (quiesced)
// against the executions: keys unique, nothing left running, exactly one
// execution behind each succeeded record, and a run record for every
// execution since the schedule began (index since).
func jobHistoryViolations(job string, once bool, hist []jobs.RunRecord, execs []jobExec, since int) []string {
	var bad []string
	rec := map[string]jobs.RunRecord{}
	for _, r := range hist {
		if _, dup := rec[r.Key]; dup {
			bad = append(bad, fmt.Sprintf("%s: key %s recorded twice", job, r.Key))
		}
		rec[r.Key] = r
		if r.Status == jobs.StatusRunning {
			bad = append(bad, fmt.Sprintf("%s: %s still running after quiescence", job, r.Key))
		}
		if r.Status == jobs.StatusAbandoned && !once {
			bad = append(bad, fmt.Sprintf("%s: %s abandoned although recover: rerun", job, r.Key))
		}
		if r.Status != jobs.StatusSucceeded {
			continue
		}
		n := 0
		for _, e := range execs {
			if e.Key == r.Key && e.Fence == r.Fence {
				n++
				if e.Node != r.Node {
					bad = append(bad, fmt.Sprintf("%s: %s recorded as run by %s, executed on %s", job, r.Key, r.Node, e.Node))
				}
			}
		}
		if n != 1 {
			bad = append(bad, fmt.Sprintf("%s: %s succeeded with token %s but executed %d times with it", job, r.Key, r.Fence, n))
		}
	}
	for _, e := range execs[since:] {
		if e.Job != job {
			continue
		}
		r, ok := rec[e.Key]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: %s executed on %s (token %s) but has no record", job, e.Key, e.Node, e.Fence))
		case r.Status == jobs.StatusSkipped || r.Status == jobs.StatusMisfired:
			bad = append(bad, fmt.Sprintf("%s: %s executed on %s but is recorded %s", job, e.Key, e.Node, r.Status))
		case once && r.Fence != e.Fence:
			bad = append(bad, fmt.Sprintf("%s: %s executed with token %s but is recorded with %s", job, e.Key, e.Fence, r.Fence))
		case r.Fence.Less(e.Fence):
			bad = append(bad, fmt.Sprintf("%s: %s executed with token %s, newer than its record's %s", job, e.Key, e.Fence, r.Fence))
		}
	}
	sort.Strings(bad)
	return bad
}

package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/jobs"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/testcluster"
)

// recorder is the test's view of what ran where; every node writes to it.
type recorder struct {
	mu      sync.Mutex
	seq     int
	execs   []execRec
	elected map[string]time.Time // node/term -> when OnLeader ran
	events  []string             // ordered events of the partition test
}

type execRec struct {
	Key   string
	Node  string
	Fence jobs.Fence
	At    time.Time
}

func newRecorder() *recorder { return &recorder{elected: make(map[string]time.Time)} }

func (r *recorder) exec(run jobs.Run) {
	r.mu.Lock()
	r.execs = append(r.execs, execRec{Key: run.Key, Node: run.Node, Fence: run.Fence, At: time.Now()})
	r.mu.Unlock()
}

func (r *recorder) event(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.events = append(r.events, fmt.Sprintf("%03d %s", r.seq, s))
	return r.seq
}

func (r *recorder) snapshot() []execRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.execs)
}

func runs(t *testing.T, nd *node.Node, job string) []jobs.RunRecord {
	t.Helper()
	rs, err := nd.Jobs().Runs(job)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestExactlyOnceAcrossLeaderKills runs a job every second on 3 nodes and
// kills the leader twice: every occurrence has exactly one record (ran or
// misfired), keys are unique and fencing tokens increase with the schedule.
func TestExactlyOnceAcrossLeaderKills(t *testing.T) {
	span := 20 * time.Second
	if os.Getenv("COHORT_LONG") == "1" {
		span = 60 * time.Second
	}
	rec := newRecorder()
	c := testcluster.New(t, 3,
		testcluster.WithConfig(func(cfg *config.Config) { cfg.Jobs.History = 1000 }),
		testcluster.WithNodeSetup(func(n *node.Node) {
			id := n.ID()
			n.Cluster().OnLeader(func(ctx context.Context, term uint64) {
				rec.mu.Lock()
				rec.elected[fmt.Sprintf("%s/%d", id, term)] = time.Now()
				rec.mu.Unlock()
			})
			if err := n.Jobs().Register("tick", "@every 1s", func(ctx context.Context, run jobs.Run) error {
				rec.exec(run)
				return nil
				// A short misfire threshold, so occurrences due while no
				// leader existed are recorded as misfired (fire_once).
			}, jobs.WithMisfire(jobs.MisfireFireOnce, 0, 1500*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}))
	waitExecs := func(n int, why string) {
		testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
			got := len(rec.snapshot())
			return got >= n, fmt.Sprintf("%s: %d runs, want %d", why, got, n)
		})
	}
	waitExecs(3, "first runs")
	var failovers []time.Duration
	for kill := 1; kill <= 2; kill++ {
		waitExecs(len(rec.snapshot())+int(span/time.Second)/4, "schedule running")
		old := c.WaitLeader(t)
		c.Kill(old.ID)
		killed := time.Now()
		nl := c.WaitLeader(t)
		// The next occurrence on the new leader, measured from its election.
		testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
			for _, e := range rec.snapshot() {
				if e.Node == nl.ID && e.At.After(killed) {
					return true, ""
				}
			}
			return false, "no run on the new leader " + nl.ID + " yet"
		})
		var elected, first time.Time
		rec.mu.Lock()
		for k, at := range rec.elected {
			if len(k) > len(nl.ID) && k[:len(nl.ID)+1] == nl.ID+"/" && at.After(killed) && (elected.IsZero() || at.Before(elected)) {
				elected = at
			}
		}
		for _, e := range rec.execs {
			if e.Node == nl.ID && e.At.After(killed) && (first.IsZero() || e.At.Before(first)) {
				first = e.At
			}
		}
		rec.mu.Unlock()
		failovers = append(failovers, first.Sub(elected))
		t.Logf("kill %d: leader %s killed; %s elected after %s; its first run %s after its election",
			kill, old.ID, nl.ID, elected.Sub(killed).Round(time.Millisecond), first.Sub(elected).Round(time.Millisecond))
		c.Restart(old.ID)
	}
	waitExecs(int(span/time.Second)*3/4, "the rest of the schedule")
	leader := c.WaitLeader(t)
	// Stop scheduling so the history is final, then read it on every node.
	if err := leader.Node().Jobs().Suspend(context.Background(), "tick"); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			st, err := nd.Node().Jobs().Job("tick")
			if err != nil || len(st.Running) > 0 || !st.Suspended {
				return false, fmt.Sprintf("%s: still running %v (err %v)", nd.ID, st.Running, err)
			}
		}
		return true, ""
	})
	history := runs(t, leader.Node(), "tick")
	sort.Slice(history, func(a, b int) bool { return history[a].ScheduledAt.Before(history[b].ScheduledAt) })
	seen := make(map[string]bool)
	byStatus := make(map[string]int)
	var prevFence jobs.Fence
	for i, r := range history {
		if seen[r.Key] {
			t.Errorf("key %s recorded twice", r.Key)
		}
		seen[r.Key] = true
		byStatus[r.Status]++
		switch r.Status {
		case jobs.StatusSucceeded:
			if !prevFence.Less(r.Fence) {
				t.Errorf("run %s: fence %s does not increase after %s", r.Key, r.Fence, prevFence)
			}
			prevFence = r.Fence
		case jobs.StatusMisfired:
		default:
			t.Errorf("run %s: status %s (%s)", r.Key, r.Status, r.Error)
		}
		if i > 0 {
			if gap := r.ScheduledAt.Sub(history[i-1].ScheduledAt); gap != time.Second {
				t.Errorf("occurrences %s and %s are %s apart: an occurrence has no record", history[i-1].Key, r.Key, gap)
			}
		}
	}
	// Every node holds the same history.
	for _, nd := range c.Running() {
		other := runs(t, nd.Node(), "tick")
		if len(other) != len(history) {
			t.Errorf("%s holds %d records, leader %d", nd.ID, len(other), len(history))
		}
	}
	execs := make(map[string]int)
	for _, e := range rec.snapshot() {
		execs[e.Key]++
	}
	reruns := 0
	for k, n := range execs {
		if n > 1 {
			reruns++
			t.Logf("key %s executed %d times (a run its killed leader never finished; recover: rerun with a new token)", k, n)
		}
	}
	t.Logf("occurrences %d: %v; executions %d; reruns %d; failover-to-first-run %v", len(history), byStatus, len(rec.snapshot()), reruns, failovers)
	if len(history) < int(span/time.Second)/2 {
		t.Errorf("only %d occurrences recorded over %s", len(history), span)
	}
}

// TestPartitionedLeaderCancelsBeforeNewLeaderStarts isolates the leader
// while a long run is in flight: its context must end before the new
// leader starts the run again.
func TestPartitionedLeaderCancelsBeforeNewLeaderStarts(t *testing.T) {
	rec := newRecorder()
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(func(n *node.Node) {
		if err := n.Jobs().Register("long", "@every 1s", func(ctx context.Context, run jobs.Run) error {
			rec.event(fmt.Sprintf("start %s %s fence=%s", run.Node, run.Key, run.Fence))
			<-ctx.Done()
			rec.event(fmt.Sprintf("cancel %s %s", run.Node, run.Key))
			return ctx.Err()
		}); err != nil {
			t.Fatal(err)
		}
	}))
	old := c.WaitLeader(t)
	startedOn := func(id string) bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, e := range rec.events {
			if len(e) > 10 && e[4:10] == "start " && e[10:10+len(id)] == id {
				return true
			}
		}
		return false
	}
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) { return startedOn(old.ID), "no run on the leader yet" })
	c.Isolate(old.ID)
	var nl *testcluster.Node
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			if nd.ID != old.ID && nd.Node().Cluster().IsLeader() && startedOn(nd.ID) {
				nl = nd
				return true, ""
			}
		}
		return false, "no run on a new leader yet"
	})
	rec.mu.Lock()
	events := slices.Clone(rec.events)
	rec.mu.Unlock()
	cancelAt, startAt := -1, -1
	for i, e := range events {
		if cancelAt < 0 && len(e) > 11 && e[4:11] == "cancel " && e[11:11+len(old.ID)] == old.ID {
			cancelAt = i
		}
		if startAt < 0 && e[4:10] == "start " && e[10:10+len(nl.ID)] == nl.ID {
			startAt = i
		}
	}
	t.Logf("events:\n%s", joinLines(events))
	if cancelAt < 0 || cancelAt > startAt {
		t.Fatalf("old leader %s cancelled at event %d, new leader %s started at event %d: want the cancel first", old.ID, cancelAt, nl.ID, startAt)
	}
	c.Heal()
}

func joinLines(ss []string) string {
	out := ""
	for _, s := range ss {
		out += "  " + s + "\n"
	}
	return out
}

// TestJobsAPI drives run now, suspend, resume and the runs list over HTTP
// on a follower.
func TestJobsAPI(t *testing.T) {
	ran := make(chan jobs.Run, 16)
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(func(n *node.Node) {
		if err := n.Jobs().Register("report", "0 3 * * *", func(ctx context.Context, run jobs.Run) error {
			if err := run.StillValid(ctx); err != nil {
				return fmt.Errorf("a running run's token is not valid: %w", err)
			}
			ran <- run
			return nil
		}, jobs.WithTimeZone("Europe/Berlin")); err != nil {
			t.Fatal(err)
		}
	}))
	c.WaitLeader(t)
	f := c.Followers()[0]
	tests := []struct {
		name, method, path string
		want               int
	}{
		{"list", http.MethodGet, "/_cohort/api/jobs", http.StatusOK},
		{"one", http.MethodGet, "/_cohort/api/jobs/report", http.StatusOK},
		{"unknown runs", http.MethodGet, "/_cohort/api/jobs/nope/runs", http.StatusNotFound},
		{"unknown run", http.MethodPost, "/_cohort/api/jobs/nope/run", http.StatusNotFound},
		{"bad action", http.MethodPost, "/_cohort/api/jobs/report/explode", http.StatusNotFound},
		{"suspend", http.MethodPost, "/_cohort/api/jobs/report/suspend", http.StatusOK},
		{"resume", http.MethodPost, "/_cohort/api/jobs/report/resume", http.StatusOK},
		{"run now", http.MethodPost, "/_cohort/api/jobs/report/run", http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := f.Do(t, tt.method, tt.path, nil)
			if code != tt.want {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.path, code, body, tt.want)
			}
		})
	}
	var run jobs.Run
	select {
	case run = <-ran:
	case <-time.After(30 * time.Second):
		t.Fatal("run now did not run")
	}
	if !run.Manual || run.Fence.Index == 0 {
		t.Fatalf("run now gave %+v", run)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		code, body := f.Do(t, http.MethodGet, "/_cohort/api/jobs/report/runs", nil)
		var out struct {
			Runs []jobs.RunRecord `json:"runs"`
		}
		_ = json.Unmarshal(body, &out)
		ok := code == 200 && len(out.Runs) == 1 && out.Runs[0].Status == jobs.StatusSucceeded && out.Runs[0].Key == run.Key
		return ok, fmt.Sprintf("%d %s", code, body)
	})
	// Once finished, the token is no longer current.
	if err := run.StillValid(context.Background()); !errors.Is(err, jobs.ErrStaleFence) {
		t.Fatalf("StillValid after the run finished: %v, want ErrStaleFence", err)
	}
	code, body := f.Do(t, http.MethodGet, "/_cohort/api/jobs/report", nil)
	var st jobs.JobStatus
	if err := json.Unmarshal(body, &st); err != nil || code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if st.NextRun.IsZero() || st.LastRun == nil || st.TimeZone != "Europe/Berlin" {
		t.Fatalf("status %s", body)
	}
	if h, _, _ := st.NextRun.In(mustBerlin(t)).Clock(); h != 3 {
		t.Fatalf("next run %s is not 03:00 in Berlin", st.NextRun)
	}
}

func mustBerlin(t *testing.T) *time.Location {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

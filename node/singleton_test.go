package node_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/testcluster"
)

// tickCommand is a singleton that appends "NAME NODE FENCE UNIX-NANOS" to
// out every 50 ms.
func tickCommand(out string) string {
	return `while :; do echo "$COHORT_SINGLETON $COHORT_NODE $COHORT_FENCE $(date +%s%N)" >> ` + out + `; sleep 0.05; done`
}

// tickRun is one stretch of ticks from one node under one fence.
type tickRun struct {
	node        string
	fence       uint64
	first, last time.Time
}

// readTicks parses the tick file into runs and fails the test if two
// instances ever overlapped: a fence that goes back (an old instance still
// writing after a newer one started), or one fence written by two nodes.
func readTicks(t *testing.T, out string) []tickRun {
	t.Helper()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read ticks: %v", err)
	}
	var runs []tickRun
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			t.Fatalf("line %d %q: want 'NAME NODE FENCE NANOS'", i+1, l)
		}
		fence, err1 := strconv.ParseUint(f[2], 10, 64)
		ns, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || fence == 0 {
			t.Fatalf("line %d %q: bad fence or time", i+1, l)
		}
		at := time.Unix(0, ns)
		if len(runs) > 0 {
			r := &runs[len(runs)-1]
			switch {
			case fence < r.fence:
				t.Fatalf("line %d %q: fence went back from %d (node %s): two instances ran at once", i+1, l, r.fence, r.node)
			case fence == r.fence && f[1] != r.node:
				t.Fatalf("line %d %q: node %s wrote the same fence %d: two instances ran at once", i+1, l, r.node, fence)
			case fence == r.fence:
				r.last = at
				continue
			}
		}
		runs = append(runs, tickRun{node: f[1], fence: fence, first: at, last: at})
	}
	return runs
}

// lastTicker returns the node of the file's last line ("" if none).
func lastTicker(out string) string {
	b, _ := os.ReadFile(out)
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	if f := strings.Fields(l[len(l)-1]); len(f) == 4 {
		return f[1]
	}
	return ""
}

func waitTicksFrom(t *testing.T, out, id string, within time.Duration) {
	t.Helper()
	testcluster.WaitFor(t, within, func() (bool, string) {
		got := lastTicker(out)
		return got == id, fmt.Sprintf("last tick from %q, want from %s", got, id)
	})
}

// TestSingletonRunsOnTheLeaderOnlyWithGrowingFence runs a singleton that
// appends "name node fence time" to a file every 50 ms, kills the leader
// twice and partitions it once, and checks from the file that one instance
// ran at a time with a fence that never went back, that it moved to each
// new leader, and logs the gap of each failover.
func TestSingletonRunsOnTheLeaderOnlyWithGrowingFence(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ticks")
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.App.Singletons = []config.Singleton{{Name: "ticker", Command: tickCommand(out)}}
		cfg.App.SingletonStopGrace = time.Second
	}))
	leader := c.WaitLeader(t)
	waitTicksFrom(t, out, leader.ID, 20*time.Second)
	for fault := 0; fault < 3; fault++ {
		old := leader.ID
		if fault == 1 {
			c.Isolate(old)
		} else {
			c.Kill(old)
		}
		leader = c.WaitLeader(t)
		waitTicksFrom(t, out, leader.ID, 20*time.Second)
		if fault == 1 {
			c.Heal()
		} else {
			c.Restart(old) // keep a quorum for the next fault
		}
		c.WaitLeader(t)
	}
	runs := readTicks(t, out)
	if len(runs) < 4 {
		t.Fatalf("the singleton ran under %d fences, want 4 (first leader and three failovers): %+v", len(runs), runs)
	}
	for i := 1; i < len(runs); i++ {
		gap := runs[i].first.Sub(runs[i-1].last)
		t.Logf("failover %s/%d -> %s/%d: gap %s", runs[i-1].node, runs[i-1].fence, runs[i].node, runs[i].fence, gap.Round(time.Millisecond))
		// The goal is election + 1 s; this bound only catches a singleton
		// that did not move promptly, with slack for a loaded machine.
		if gap > 15*time.Second {
			t.Errorf("failover gap %s, want about election + 1 s", gap)
		}
	}
}

// TestSingletonPreferenceList places a singleton on n2 (list n2,n3,n1),
// kills n2 (it moves to n3 with a greater fence once n2's lease is waited
// out), brings n2 back (it stays on n3: no move back), then isolates n3
// (it stops there and moves to n2) and checks from the file that one
// instance ran at a time.
func TestSingletonPreferenceList(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ticks")
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.App.Singletons = []config.Singleton{{Name: "pref", Command: tickCommand(out), Nodes: []string{"n2", "n3", "n1"}}}
		cfg.App.SingletonStopGrace = time.Second
		cfg.App.SingletonLease = time.Second
	}))
	c.WaitLeader(t)
	waitTicksFrom(t, out, "n2", 20*time.Second)

	c.Kill("n2")
	waitTicksFrom(t, out, "n3", 30*time.Second)
	c.Restart("n2")
	c.WaitReady(t)
	// n2 is back and healthy: the singleton stays on n3. Count on 20 more
	// ticks (1 s) after n2 is ready, all from n3.
	before := len(readTicks(t, out))
	mark, _ := os.ReadFile(out)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(out)
		n := strings.Count(string(b[len(mark):]), "\n")
		return n >= 20, fmt.Sprintf("%d ticks since n2 is back", n)
	})
	if runs := readTicks(t, out); len(runs) != before || runs[len(runs)-1].node != "n3" {
		t.Fatalf("the singleton moved after n2 came back: %+v", runs)
	}
	st := c.Node("n1").Node().Singletons()
	if len(st) != 1 || st[0].Placed != "n3" {
		t.Fatalf("n1's status: %+v, want placed on n3", st)
	}

	c.Isolate("n3")
	waitTicksFrom(t, out, "n2", 30*time.Second)
	c.Heal()
	c.WaitReady(t)

	runs := readTicks(t, out)
	if len(runs) != 3 || runs[0].node != "n2" || runs[1].node != "n3" || runs[2].node != "n2" {
		t.Fatalf("runs %+v, want n2, n3, n2", runs)
	}
	for i := 1; i < len(runs); i++ {
		t.Logf("move %s/%d -> %s/%d: gap %s", runs[i-1].node, runs[i-1].fence, runs[i].node, runs[i].fence, runs[i].first.Sub(runs[i-1].last).Round(time.Millisecond))
	}
}

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

// TestSingletonRunsOnTheLeaderOnlyWithGrowingFence runs a singleton that
// appends "node fence" to a file every 50 ms, kills the leader twice and
// checks from the file that one instance ran at a time, on the leader, with
// a fence that never went back, and that it moved to each new leader.
func TestSingletonRunsOnTheLeaderOnlyWithGrowingFence(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ticks")
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.App.Singletons = []config.Singleton{{Name: "ticker",
			Command: `while :; do echo "$COHORT_SINGLETON $COHORT_NODE $COHORT_FENCE" >> ` + out + `; sleep 0.05; done`}}
		cfg.App.SingletonStopGrace = time.Second
	}))
	lines := func() []string {
		b, _ := os.ReadFile(out)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	waitTicksOf := func(id string) {
		t.Helper()
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			l := lines()
			return strings.Contains(l[len(l)-1], " "+id+" "), fmt.Sprintf("last tick %q, want from %s", l[len(l)-1], id)
		})
	}
	leader := c.WaitLeader(t)
	waitTicksOf(leader.ID)
	for kill := 0; kill < 2; kill++ {
		old := leader.ID
		c.Kill(old)
		leader = c.WaitLeader(t)
		waitTicksOf(leader.ID)
		c.Restart(old) // keep a quorum for the next kill
	}
	var lastFence uint64
	lastNode, runs := "", 0
	for i, l := range lines() {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "ticker" {
			t.Fatalf("line %d %q: want 'ticker NODE FENCE'", i+1, l)
		}
		fence, _ := strconv.ParseUint(f[2], 10, 64)
		if fence < lastFence {
			t.Fatalf("line %d %q: fence went back from %d: two instances ran at once", i+1, l, lastFence)
		}
		if fence == lastFence && f[1] != lastNode && lastNode != "" {
			t.Fatalf("line %d %q: another node with the same fence %d", i+1, l, fence)
		}
		if fence != lastFence {
			runs++
		}
		lastFence, lastNode = fence, f[1]
	}
	if runs < 3 {
		t.Fatalf("the singleton ran under %d fences, want 3 (first leader and two after kills)", runs)
	}
}

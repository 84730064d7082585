package e2e

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/internal/singletonlog"
)

// TestSingletonsThroughTheBinary runs two singletons on three processes of
// the built binary — "tick" on the leader, "pref" on the list n2,n3,n1 —
// each appending "name node fence time" to its own file five times a
// second. It kills -9 the leader twice (restarting it), then the node
// holding "pref" (restarting it), and checks from the files that one
// instance ran at a time with fences that only grow, that "tick" followed
// each leader, and that "pref" started on n2, moved to n3 and stayed there
// when n2 came back. The failover gaps are logged.
func TestSingletonsThroughTheBinary(t *testing.T) {
	dir := t.TempDir()
	tick, pref := filepath.Join(dir, "tick"), filepath.Join(dir, "pref")
	c := startProcCluster(t, 3,
		"--singleton", "tick="+singletonlog.Command(tick, "0.2"),
		"--singleton", "pref="+singletonlog.Command(pref, "0.2"),
		"--singleton-nodes", "pref=n2,n3,n1",
		"--singleton-lease", "1s", "--singleton-stop-grace", "1s")
	byID := map[string]*proc{}
	for _, p := range c.nodes {
		byID[p.id] = p
	}
	waitTicks := func(file, id string) {
		t.Helper()
		poll.Until(t, 30*time.Second, func() (bool, string) {
			got := singletonlog.Last(file)
			return got == id, fmt.Sprintf("%s: last tick from %q, want from %s", filepath.Base(file), got, id)
		})
	}
	leader := c.leader(c.nodes...)
	waitTicks(tick, leader.id)
	waitTicks(pref, "n2")

	for kill := 0; kill < 2; kill++ {
		old := leader
		c.kill(old, syscall.SIGKILL)
		leader = c.leader(c.others(old)...)
		waitTicks(tick, leader.id)
		c.start(old)
		c.waitReady(c.nodes...)
	}

	holder := byID[singletonlog.Last(pref)]
	c.kill(holder, syscall.SIGKILL)
	waitTicks(pref, "n3")
	c.start(holder)
	c.waitReady(c.nodes...)
	mark := singletonlog.Lines(pref)
	poll.Until(t, 20*time.Second, func() (bool, string) {
		n := singletonlog.Lines(pref) - mark
		return n >= 10, fmt.Sprintf("%d pref ticks since n2 is back", n)
	})

	for _, file := range []string{tick, pref} {
		runs, err := singletonlog.Read(file)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(file), err)
		}
		for i := 1; i < len(runs); i++ {
			t.Logf("%s: %s/%d -> %s/%d: gap %s", filepath.Base(file), runs[i-1].Node, runs[i-1].Fence,
				runs[i].Node, runs[i].Fence, runs[i].First.Sub(runs[i-1].Last).Round(time.Millisecond))
		}
		switch {
		case file == tick && len(runs) < 3:
			t.Fatalf("tick ran under %d fences, want at least 3 (two leader kills): %+v", len(runs), runs)
		case file == pref && (len(runs) != 2 || runs[0].Node != "n2" || runs[1].Node != "n3"):
			t.Fatalf("pref runs %+v, want on n2 then n3 (and staying there when n2 is back)", runs)
		}
	}
}

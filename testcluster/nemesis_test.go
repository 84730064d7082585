package testcluster_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cohortserver/cohort/testcluster"
)

// nemesisPlan is how many seeded schedules a test under the nemesis runs
// and from which seed: one schedule per fault of testcluster.NemesisFaults
// (so CI covers every fault), long schedules with COHORT_LONG=1,
// COHORT_LIN_SCHEDULES=N of them, or the single COHORT_LIN_SEED=S. Seeds
// are base, base+1, ...; a schedule's fault is its seed modulo the number
// of faults, so a printed seed replays the same fault.
func nemesisPlan(t *testing.T, long int) (base uint64, schedules int) {
	t.Helper()
	schedules = len(testcluster.NemesisFaults())
	if os.Getenv("COHORT_LONG") != "" {
		schedules = long
	}
	if v, err := strconv.Atoi(os.Getenv("COHORT_LIN_SCHEDULES")); err == nil && v > 0 {
		schedules = v
	}
	base = uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("COHORT_LIN_SEED"), 10, 64); err == nil {
		base, schedules = v, 1
	}
	return base, schedules
}

// faultOf is the nemesis fault of a seed.
func faultOf(seed uint64) testcluster.Fault {
	faults := testcluster.NemesisFaults()
	return faults[seed%uint64(len(faults))]
}

// runNemesisSchedules runs one subtest per seed and logs the tally.
func runNemesisSchedules(t *testing.T, long int, run func(t *testing.T, seed uint64)) {
	base, schedules := nemesisPlan(t, long)
	failed := 0
	for s := 0; s < schedules; s++ {
		seed := base + uint64(s)
		if !t.Run(fmt.Sprintf("seed=%d_%s", seed, faultOf(seed).Name), func(t *testing.T) { run(t, seed) }) {
			failed++
		}
	}
	t.Logf("%d schedules, %d failed (base seed %d; replay one with COHORT_LIN_SEED=SEED -run '%s')", schedules, failed, base, t.Name())
}

// runNemesisGroups is runNemesisSchedules with a fresh cluster for every
// round of the faults (one schedule each): setup builds the group's cluster
// and returns what runs a schedule on it. For tests whose schedules leave
// data behind — the files test keeps every schedule's tree and an hour of
// unreferenced blobs, which fill NemesisDisk after some twenty schedules —
// so that a long run measures the faults, not an ever fuller disk.
func runNemesisGroups(t *testing.T, long int, setup func(t *testing.T) func(t *testing.T, seed uint64)) {
	base, schedules := nemesisPlan(t, long)
	per := len(testcluster.NemesisFaults())
	failed := 0
	for g := 0; g*per < schedules; g++ {
		t.Run(fmt.Sprintf("cluster=%d", g+1), func(t *testing.T) {
			run := setup(t)
			for s := g * per; s < min(schedules, (g+1)*per); s++ {
				seed := base + uint64(s)
				if !t.Run(fmt.Sprintf("seed=%d_%s", seed, faultOf(seed).Name), func(t *testing.T) { run(t, seed) }) {
					failed++
				}
			}
		})
	}
	t.Logf("%d schedules on %d clusters, %d failed (base seed %d; replay one with COHORT_LIN_SEED=SEED -run '%s')",
		schedules, (schedules+per-1)/per, failed, base, t.Name())
}

// holdFault lets a fault last d and, when it took the leader away (killed,
// cut off or paused: before no longer leads), until another node leads and
// newLeader says that leader has done what the test needs (bounded): a
// schedule then exercises the failover and the old leader's return, not
// only a blip the old leader rides out.
func holdFault(t *testing.T, c *testcluster.Cluster, before *testcluster.Node, d time.Duration, newLeader func(nd *testcluster.Node) (bool, string)) {
	t.Helper()
	<-time.After(d)
	if before == nil {
		return
	}
	if n := before.Node(); n != nil && n.Cluster().IsLeader() {
		return
	}
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			if n := nd.Node(); nd.ID != before.ID && n != nil && n.Cluster().IsLeader() {
				return newLeader(nd)
			}
		}
		return false, "no new leader while " + before.ID + " is away"
	})
}

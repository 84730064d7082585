package jobs

import (
	"testing"
	"time"
)

// waitFor polls cond on a ticker until it holds or timeout passes, then
// fails the test with what cond last reported. (The package's own tests
// cannot use testcluster.WaitFor: testcluster imports jobs.)
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, last := cond()
		if ok {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("not within %s: %s", timeout, last)
		case <-tick.C:
		}
	}
}

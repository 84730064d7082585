// Package poll is the tests' one bounded wait for a state: poll a
// condition with a deadline and fail with what was last seen. It owns
// nothing the product uses. testcluster.WaitFor is this wait; packages
// that testcluster imports (jobs) call poll.Until directly.
package poll

import (
	"testing"
	"time"
)

// Until calls cond until it reports true or timeout passes, then fails t
// with the description cond last returned. The polling interval starts at
// 5 ms and grows to 100 ms.
func Until(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	wait := 5 * time.Millisecond
	for {
		ok, last := cond()
		if ok {
			return
		}
		tick := time.NewTimer(wait)
		select {
		case <-deadline.C:
			tick.Stop()
			if ok, last = cond(); ok {
				return
			}
			t.Fatalf("condition not met within %s; last seen: %s", timeout, last)
		case <-tick.C:
		}
		wait = min(wait*2, 100*time.Millisecond)
	}
}

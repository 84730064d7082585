package jobs_test

import (
	"testing"

	"github.com/cohortserver/cohort/testcluster"
)

// TestMain fails the package if a test leaves goroutines behind: every node
// a test started must have stopped everything it started.
func TestMain(m *testing.M) { testcluster.VerifyNoLeaks(m) }

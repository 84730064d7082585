//go:build linux

package mount_test

import (
	"testing"

	"github.com/cohortserver/cohort/testcluster"
)

// TestMain fails the package if a test leaves goroutines behind.
func TestMain(m *testing.M) { testcluster.VerifyNoLeaks(m) }

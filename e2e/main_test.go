package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binPath is the cohort binary built once for the whole package.
var binPath string

// TestMain builds the real binary once; every test runs copies of it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cohort-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "cohort")
	build := exec.Command("go", "build", "-race", "-o", binPath, "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build cohort:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cohortBinary returns the path of the binary under test.
func cohortBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process e2e tests are skipped in -short mode")
	}
	return binPath
}

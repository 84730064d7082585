//go:build !unix

package jobs

import "os/exec"

// processGroup is a no-op where process groups do not exist; cancellation
// kills only the process.
func processGroup(*exec.Cmd) {}

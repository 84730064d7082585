//go:build unix

package jobs

import (
	"os/exec"
	"syscall"
)

// processGroup starts cmd in its own process group and makes cancellation
// kill the whole group, so children a shell started die with it.
func processGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

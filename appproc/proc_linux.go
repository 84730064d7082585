package appproc

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// sysProcAttr puts the app in its own process group (so a stop reaches
// everything the shell started) and tells the guard shell when cohort
// dies (guardScript).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGUSR1}
}

func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }

// killLeftovers kills every process whose environment carries this
// node's marker (what a kill -9 of an earlier cohort left: the shell's
// children do not get the parent-death signal). It returns how many.
func killLeftovers(instance string) int {
	want := []byte(MarkerEnv + "=" + instance + "\x00")
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	n := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

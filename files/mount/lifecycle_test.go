//go:build linux

package mount_test

import (
	"bufio"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cohortserver/cohort/files/mount"
)

// TestStaleMountHelper is not a test: run by TestStaleMountIsClearedAtStart
// with COHORT_STALE_MOUNT=DIR, it mounts a FUSE file system named like
// cohort's at DIR and waits to be killed.
func TestStaleMountHelper(t *testing.T) {
	dir := os.Getenv("COHORT_STALE_MOUNT")
	if dir == "" {
		t.Skip("helper process only")
	}
	srv, err := gofs.Mount(dir, &gofs.Inode{}, &gofs.Options{MountOptions: fuse.MountOptions{
		Name: "cohort", FsName: "cohort", DirectMount: os.Geteuid() == 0}})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("mounted\n")
	srv.Wait()
}

// TestStaleMountIsClearedAtStart leaves a mount behind a process killed
// with SIGKILL (its mount point answers ENOTCONN) and checks that Prepare
// clears it; another file system at the mount point is refused.
func TestStaleMountIsClearedAtStart(t *testing.T) {
	needFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(dir, 0o755))
	cmd := exec.Command(os.Args[0], "-test.run=^TestStaleMountHelper$")
	cmd.Env = append(os.Environ(), "COHORT_STALE_MOUNT="+dir)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) }) // if the test fails halfway
	line, _ := bufio.NewReader(out).ReadString('\n')
	if !strings.Contains(line, "mounted") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not mount: %q", line)
	}
	must(t, cmd.Process.Kill())
	cmd.Wait()
	_, err = os.Stat(dir)
	if !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the killed mount: %v, want ENOTCONN (a stale mount)", err)
	}
	must(t, mount.ClearStale(dir, slog.New(slog.DiscardHandler)))
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("after Prepare the mount point still fails: %v", err)
	}

	if os.Geteuid() != 0 {
		return
	}
	must(t, syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"))
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	if err := mount.ClearStale(dir, slog.New(slog.DiscardHandler)); !errors.Is(err, mount.ErrBusy) {
		t.Fatalf("Prepare over a tmpfs: %v, want ErrBusy", err)
	}
}

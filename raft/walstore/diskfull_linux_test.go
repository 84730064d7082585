//go:build linux

package walstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	hraft "github.com/hashicorp/raft"
)

// skipDiskFullEnv, when set, skips the disk-full test where mounting a
// tmpfs is not permitted (testcluster.EnvSkipDiskFull; CI runs as root).
const skipDiskFullEnv = "COHORT_SKIP_DISKFULL"

// smallDisk mounts a tmpfs of size bytes at a fresh directory: a disk that
// fills up with the kernel's real ENOSPC.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size))
	if err != nil {
		if errors.Is(err, syscall.EPERM) && os.Getenv(skipDiskFullEnv) != "" {
			t.Skipf("mount a tmpfs: %v (skipped: %s is set)", err, skipDiskFullEnv)
		}
		t.Fatalf("mount a tmpfs at %s: %v; run as root (or set %s=1 to skip)", dir, err, skipDiskFullEnv)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a ballast file into dir until the disk is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ballast")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			return p
		}
	}
}

// TestDiskFull fills the disk under a Store: appends go on while the
// preallocated segment has room, the first one that needs a new segment
// fails with ENOSPC and changes nothing, deletes (compaction, conflicts)
// still work, and once space returns the log goes on where it was.
func TestDiskFull(t *testing.T) {
	disk := smallDisk(t, 1<<20)
	dir := filepath.Join(disk, "wal")
	opts := Options{SegmentSize: 128 << 10}
	s := openStore(t, dir, opts)
	want := map[uint64]*hraft.Log{}
	next := uint64(1)
	add := func() error {
		l := entry(next, 1, 1000)
		if err := s.StoreLogs([]*hraft.Log{l}); err != nil {
			return err
		}
		want[next] = l
		next++
		return nil
	}
	for len(segmentFiles(t, dir)) < 2 {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	ballast := fill(t, disk)

	whileFull := 0
	var err error
	for err = add(); err == nil; err = add() {
		whileFull++
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk = %v, want ENOSPC", err)
	}
	t.Logf("%d appends went into the preallocated segment with the disk full; then: %v", whileFull, err)
	if whileFull == 0 {
		t.Fatal("no append used the preallocated segment")
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*"+tmpSuffix)); len(tmps) > 0 {
		t.Fatalf("the failed segment creation left %v", tmps)
	}
	checkRange(t, s, 1, next-1, want)
	if err := add(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second append on a full disk = %v, want ENOSPC", err)
	}

	// A conflict and a compaction need no space.
	if err := s.DeleteRange(next-3, next-1); err != nil {
		t.Fatalf("tail delete on a full disk: %v", err)
	}
	next -= 3
	for range 3 {
		if err := add(); err != nil {
			t.Fatalf("append into the truncated tail on a full disk: %v", err)
		}
	}
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatalf("compaction on a full disk: %v", err)
	}
	checkRange(t, s, 11, next-1, want)

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if err := add(); err != nil {
			t.Fatalf("append after space returned: %v", err)
		}
	}
	s.Close()
	s = openStore(t, dir, opts)
	checkRange(t, s, 11, next-1, want)
}

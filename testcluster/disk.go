package testcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// EnvSkipDiskFull, when set to any value, makes tests that need a disk
// limit skip where mounting a tmpfs is not permitted, instead of failing.
// CI runs as root and must not set it.
const EnvSkipDiskFull = "COHORT_SKIP_DISKFULL"

// ballastPrefix names the files FillDisk writes in a node's data dir.
const ballastPrefix = ".testcluster-ballast-"

// diskLimit is what WithDiskLimit asked for.
type diskLimit struct {
	size  int64
	nodes map[string]bool // nil: every node
}

// WithDiskLimit gives each listed node (every node, including those added
// later, when none is listed) a data dir of size bytes: a tmpfs of that
// size is mounted at the data dir before the node first starts. Kill, Stop
// and Restart keep the mount and its content; it is unmounted when the test
// ends, after every node stopped. FillDisk and FreeDisk then make the
// node's disk full and free again, with the kernel's real ENOSPC.
//
// Mounting needs root (CAP_SYS_ADMIN) on Linux. Where it is not permitted
// the test fails, saying so, unless COHORT_SKIP_DISKFULL is set, in which
// case it is skipped. A test binary that dies without running its cleanups
// (a -timeout panic, a kill) leaves its mounts behind, holding memory:
// `mount | grep /tmp/Test` lists them for umount.
func WithDiskLimit(size int64, ids ...string) Option {
	return func(c *Cluster) {
		d := &diskLimit{size: size}
		if len(ids) > 0 {
			d.nodes = make(map[string]bool, len(ids))
			for _, id := range ids {
				d.nodes[id] = true
			}
		}
		c.disk = d
	}
}

// mountDisk mounts the size-limited tmpfs at nd's data dir when the
// cluster has a disk limit for nd. The first mount registers the unmount
// as a cleanup; New registers closeAll after its nodes were made, so the
// cleanups run in the right order: nodes stop, then the mounts go, then
// the temp dir.
func (c *Cluster) mountDisk(nd *Node) {
	d := c.disk
	if d == nil || (d.nodes != nil && !d.nodes[nd.ID]) {
		return
	}
	t := c.t
	t.Helper()
	dir := nd.cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("disk limit for %s: %v", nd.ID, err)
	}
	if err := mountTmpfs(dir, d.size); err != nil {
		msg := fmt.Sprintf("disk limit for %s: mount a %d-byte tmpfs at %s: %v", nd.ID, d.size, dir, err)
		if errors.Is(err, syscall.EPERM) || errors.Is(err, errors.ErrUnsupported) {
			msg += "; disk-full tests mount a tmpfs per node: run them as root on Linux (or with CAP_SYS_ADMIN)"
			if os.Getenv(EnvSkipDiskFull) != "" {
				t.Skipf("%s (skipped: %s is set)", msg, EnvSkipDiskFull)
			}
			msg += ", or set " + EnvSkipDiskFull + "=1 to skip them"
		}
		t.Fatal(msg)
	}
	c.mu.Lock()
	first := len(c.mounts) == 0
	c.mounts = append(c.mounts, dir)
	c.mu.Unlock()
	if first {
		t.Cleanup(c.unmountAll)
	}
}

// unmountAll unmounts every tmpfs once the nodes stopped. A mount still in
// use means a stopped node left a file open: that fails the test, and the
// mount is detached so the temp dir can still be removed.
func (c *Cluster) unmountAll() {
	c.mu.Lock()
	mounts := c.mounts
	c.mounts = nil
	c.mu.Unlock()
	for _, dir := range mounts {
		if err := unmountTmpfs(dir, false); err != nil {
			c.t.Errorf("unmount %s: %v (a stopped node still holds a file open there?); detaching it", dir, err)
			if err := unmountTmpfs(dir, true); err != nil {
				c.t.Errorf("detach %s: %v", dir, err)
			}
		}
	}
}

// diskDir returns the data dir of id, failing the test when it has no
// disk limit.
func (c *Cluster) diskDir(id string) string {
	c.t.Helper()
	nd := c.Node(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.mounts {
		if m == nd.cfg.DataDir {
			return m
		}
	}
	c.t.Fatalf("node %s has no disk limit: start the cluster WithDiskLimit", id)
	return ""
}

// FillDisk writes a ballast file into node id's data dir until the kernel
// answers ENOSPC, and returns how many bytes it wrote. The node's own
// writes then fail as on a full disk, until FreeDisk; only bbolt goes on
// for a few writes in the pages it freed itself (wait for the node's
// Cluster().LogWriteErr to see its Raft log fail). Space the node frees
// itself (a failed upload's temp file) becomes usable again; call FillDisk
// again to take it. The node needs a disk limit (WithDiskLimit).
func (c *Cluster) FillDisk(id string) int64 {
	c.t.Helper()
	dir := c.diskDir(id)
	f, err := os.CreateTemp(dir, ballastPrefix+"*")
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return 0
		}
		c.t.Fatalf("fill disk of %s: %v", id, err)
	}
	defer f.Close()
	var total int64
	buf := make([]byte, 1<<20)
	// Big writes first, then pages, so the last partial page is taken too.
	for _, size := range []int{1 << 20, 4096, 1} {
		for {
			n, err := f.Write(buf[:size])
			total += int64(n)
			if err == nil {
				continue
			}
			if !errors.Is(err, syscall.ENOSPC) {
				c.t.Fatalf("fill disk of %s: %v", id, err)
			}
			break
		}
	}
	c.t.Logf("disk of %s full: %d bytes of ballast written", id, total)
	return total
}

// FreeDisk removes the ballast FillDisk wrote in node id's data dir.
func (c *Cluster) FreeDisk(id string) {
	c.t.Helper()
	dir := c.diskDir(id)
	ents, err := os.ReadDir(dir)
	if err != nil {
		c.t.Fatalf("free disk of %s: %v", id, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ballastPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				c.t.Fatalf("free disk of %s: %v", id, err)
			}
		}
	}
	c.t.Logf("disk of %s freed: %d bytes available", id, c.DiskFree(id))
}

// DiskFree is the space available in node id's data dir, in bytes.
func (c *Cluster) DiskFree(id string) int64 {
	c.t.Helper()
	n, err := freeBytes(c.Node(id).cfg.DataDir)
	if err != nil {
		c.t.Fatalf("free space in the data dir of %s: %v", id, err)
	}
	return n
}

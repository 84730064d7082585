package files

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// A blob is known good when this process hashed it, or received it from
// the node that hashed it (ingest), and the file has not changed since:
// the same inode, size, and change and modification times. A write to
// the file, a truncate or a replacement changes them (no process can set
// a change time), so a damaged blob is never taken for a good one; damage
// that bypasses the file system (the disk's own) is the scrubber's to
// find. Readers that cannot check what they read, such as the mount's
// FUSE passthrough, read only known good blobs (File.Good).
//
// Only blobs larger than the size Open hashes in full (Config.VerifyBelow)
// are remembered: smaller ones are checked at every open anyway. So the
// memory is one small entry per large blob this process wrote, received
// or checked.

// stamp is a blob file's identity and state on disk.
type stamp struct {
	dev, ino     uint64
	size         int64
	ctime, mtime unix.Timespec
}

// stampOf returns the stamp of an open file.
func stampOf(f *os.File) (stamp, bool) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return stamp{}, false
	}
	return stampOfStat(&st), true
}

// stampOfStat returns the stamp in a stat result (the conversion is for
// systems whose device numbers are narrower, such as macOS).
func stampOfStat(st *unix.Stat_t) stamp {
	return stamp{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, ctime: st.Ctim, mtime: st.Mtim} //nolint:unconvert
}

// goodBlobs records the stamps of known good blobs.
type goodBlobs struct {
	min int64 // blobs of at most this size are not recorded
	m   sync.Map
}

// mark records blob sum, whose file had stamp st when its content was
// found or made right.
func (g *goodBlobs) mark(sum string, st stamp) {
	if st.size > g.min {
		g.m.Store(sum, st)
	}
}

// markPath records blob sum from its file at path, unless the blob is too
// small to be recorded (no system call then).
func (g *goodBlobs) markPath(sum, path string, size int64) {
	if size <= g.min {
		return
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return
	}
	g.mark(sum, stampOfStat(&st))
}

// check reports whether blob sum, open as f, is known good, and f's
// stamp (ok false when f could not be stat'ed).
func (g *goodBlobs) check(sum string, f *os.File) (good bool, st stamp, ok bool) {
	st, ok = stampOf(f)
	if !ok {
		return false, st, false
	}
	v, found := g.m.Load(sum)
	return found && st == v.(stamp), st, true
}

// is reports whether blob sum, open as f, is known good.
func (g *goodBlobs) is(sum string, f *os.File) bool {
	good, _, _ := g.check(sum, f)
	return good
}

// forget drops blob sum (found corrupt, moved aside or removed).
func (g *goodBlobs) forget(sum string) { g.m.Delete(sum) }

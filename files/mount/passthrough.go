//go:build linux

package mount

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cohortserver/cohort/files"
)

// FUSE passthrough (kernel 6.9): a read handle of a large file names its
// blob's descriptor as the inode's backing file, and the kernel reads the
// blob itself, with no READ through this process. The kernel demands
// that while one file of an inode is open in passthrough, every other open
// of that inode is passthrough too, with the same backing file; otherwise
// the open fails. Here a handle reads the version it opened while writers
// replace the file, and a writer's content lives in its own temp file, so
// an inode cannot serve both. The way out is a new inode per conflict:
//
//   - A read handle is passthrough only when its blob is known good
//     (files.File.Good: hashed when written, received or checked here and
//     unchanged on disk since, since the kernel reads it unchecked), the
//     file is large (ptMin; smaller ones gain little and keep the page
//     cache's books, pagecache.go), and no other kind of handle is open on
//     the inode. It shares the inode with passthrough handles of the same
//     blob only.
//   - An open that cannot join the passthrough handles of the inode (a
//     writer, or a reader of another version) answers ESTALE and marks the
//     inode superseded. The kernel then looks the name up again
//     (LOOKUP_REVAL) and retries the open once; the lookup answers a new
//     inode for the name, on which the open succeeds. The old inode keeps
//     its passthrough readers, each reading the version it opened, as on
//     any inode here; it is out of the tree, and what is done by name goes
//     to the new one.
//   - The kernel retries once, and a retry must not fail again. So a
//     caller told ESTALE is recorded with the name it opened (retries,
//     kept by name, not by inode: the kernel forgets the inode a
//     revalidating lookup answered before it looks the name up again, and
//     go-fuse drops a forgotten inode from the tree, so the retry may reach
//     an inode made after the refusal). The inode the name leads to then
//     is superseded if passthrough or cached read handles are open on it;
//     until the retry came (or ptRetry passed) no caller gets such a
//     handle on an inode of that name, so nothing there refuses or
//     supersedes, and the retry opens whatever it can.
type ptState struct {
	n   int    // passthrough handles open
	sum string // the blob they read (the kernel's backing file); kept
	// direct counts the read handles open that are neither passthrough nor
	// in the page cache's books (direct readHandles, sharedReaders).
	direct int
	// superseded makes lookups of the name answer a new inode (next, made
	// by the first of them) and every open of this one answer ESTALE: a
	// handle on it would not be found by name, and a writer's content
	// would be lost.
	superseded bool
	next       *gofs.Inode
	// tainted: a handle that is not passthrough was opened on the inode.
	// go-fuse counts the users of an inode's backing file wrongly when
	// such a handle is released while passthrough handles are open (it
	// drops the backing file, and the next passthrough open conflicts
	// with the one the kernel still holds); this process sees a release
	// before go-fuse does, so the two kinds never share an inode: the
	// first passthrough reader of a tainted inode takes a new one.
	tainted bool
	// dir and name are where the inode was last answered: an inode out of
	// the tree has no parent to ask.
	dir  *gofs.Inode
	name string
}

// retries are the callers told ESTALE whose retry is expected, by thread
// id (the kernel retries within the same system call, on the same
// thread). A leaf lock: taken under a fileNode's mu, never the other way.
type retries struct {
	mu sync.Mutex
	by map[uint32]retry
}

// retry is a caller expected to open name in dir again.
type retry struct {
	at   time.Time
	dir  *gofs.Inode
	name string
}

// expect records that caller pid retries an open of name in dir.
func (rs *retries) expect(pid uint32, dir *gofs.Inode, name string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.by == nil {
		rs.by = make(map[uint32]retry)
	}
	rs.by[pid] = retry{at: time.Now(), dir: dir, name: name}
}

// check reports whether caller pid is expected to retry an open and how
// many others are expected to open name in dir; it forgets the stale.
func (rs *retries) check(pid uint32, dir *gofs.Inode, name string) (mine bool, others int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for p, r := range rs.by {
		switch {
		case time.Since(r.at) > ptRetry:
			delete(rs.by, p)
		case p == pid:
			mine = true
		case r.dir == dir && r.name == name:
			others++
		}
	}
	return mine, others
}

// done forgets caller pid's retry: its open succeeded.
func (rs *retries) done(pid uint32) {
	rs.mu.Lock()
	delete(rs.by, pid)
	rs.mu.Unlock()
}

// ptMin is the smallest file read through passthrough: above the size the
// store hashes in full at open (files.Config.VerifyBelow's default).
const ptMin = 4<<20 + 1

// ptRetry is how long a caller told ESTALE is expected to retry: far
// longer than the kernel's retry takes.
const ptRetry = 2 * time.Second

// probePassthrough reports whether the kernel accepts a backing file from
// dir's file system (as root, on kernel 6.9 or later, where the file
// system is not itself stacked too deep, as overlayfs in a container is).
func probePassthrough(server *fuse.Server, dir string, log *slog.Logger) bool {
	if server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		log.Info("files mount: the kernel offers no FUSE passthrough; large files are read through this process")
		return false
	}
	f, err := os.CreateTemp(dir, "probe-*")
	if err != nil {
		log.Warn("files mount: passthrough probe", "err", err)
		return false
	}
	defer os.Remove(f.Name())
	defer f.Close()
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		log.Info("files mount: FUSE passthrough refused; large files are read through this process", "err", errno)
		return false
	}
	_ = server.UnregisterBackingFd(id)
	return true
}

// openPassthrough decides whether read handle h, of a file not pending,
// opened by caller pid, is passthrough. ESTALE: the inode was superseded
// and the kernel retries on a new one.
func (fn *fileNode) openPassthrough(pid uint32, f *files.File) (bool, syscall.Errno) {
	fn.mu.Lock()
	pt := &fn.pt
	sum := f.Info().SHA256
	if pt.superseded {
		return false, fn.refuse(pid)
	}
	mine, others := fn.expected(pid)
	if pt.n > 0 {
		if pt.sum != sum {
			return false, fn.refuse(pid)
		}
		// The kernel reads the backing file of the first handle, which
		// was known good at its open.
		pt.n++
		fn.mu.Unlock()
		fn.m.ptOpens.Add(1)
		if mine {
			fn.m.retries.done(pid)
		}
		return true, 0
	}
	eligible := fn.m.pt.Load() && f.Info().Size >= ptMin && f.Good() && !fn.pending && others == 0 &&
		!fn.writing() && len(fn.cache.readers) == 0 && pt.direct == 0
	switch {
	case eligible && !pt.tainted && (pt.sum == "" || pt.sum == sum):
		pt.n, pt.sum = 1, sum
		fn.mu.Unlock()
		fn.m.ptOpens.Add(1)
		if mine {
			fn.m.retries.done(pid)
		}
		return true, 0
	case eligible && !mine:
		// Read through us before, or in passthrough of another blob,
		// which go-fuse may still hand out (it drops a backing file only
		// after the handle's Release): a new inode.
		return false, fn.refuse(pid)
	}
	pt.tainted = true
	fn.mu.Unlock()
	if mine {
		fn.m.retries.done(pid)
	}
	return false, 0
}

// openOther is called before a non-passthrough open of the inode by
// caller pid, write for a writer: ESTALE when the inode must go to a new
// one. Passthrough handles hold it. Or, for a writer: the inode was read
// in passthrough (the new content then gets a new inode, where its readers
// can be passthrough again), or read handles that read through the page
// cache are open: the writer's open (O_TRUNC) and writes move the size the
// kernel holds for the inode, and a cached read stops there, so such a
// reader would see a partial file. A writer never moves to a new inode
// away from another writer: that one's content would not be found by name
// at its close. While a retry is expected on the name, a writer stays on
// an inode read in passthrough before (makeRoom counts on it). A writer
// let in counts as one from here (opening) until opened is called.
func (fn *fileNode) openOther(pid uint32, write bool) syscall.Errno {
	fn.mu.Lock()
	pt := &fn.pt
	mine, others := fn.expected(pid)
	if pt.superseded || pt.n > 0 ||
		(write && !mine && !fn.writing() && (len(fn.cache.readers) > 0 || (pt.sum != "" && others == 0))) {
		return fn.refuse(pid)
	}
	pt.tainted = true
	if write {
		fn.opening++
	}
	fn.mu.Unlock()
	if mine {
		fn.m.retries.done(pid)
	}
	return 0
}

// opened ends the reservation openOther made for a writer, which is
// registered now or failed to open.
func (fn *fileNode) opened() {
	fn.mu.Lock()
	fn.opening--
	fn.mu.Unlock()
}

// writing reports whether a writer is open or opening (fn.mu held).
func (fn *fileNode) writing() bool {
	return len(fn.writers) > 0 || fn.opening > 0
}

// detached answers an open that reached an inode no longer in the tree (a
// lookup answered another inode for its name, or it was removed or
// renamed, while the caller walked to it): ESTALE, and the kernel retries
// on what the name leads to now, which must take that retry.
func (fn *fileNode) detached(pid uint32) syscall.Errno {
	fn.mu.Lock()
	return fn.refuse(pid)
}

// where returns the directory and name of the inode: where it is in the
// tree, else where it was last answered (fn.mu held).
func (fn *fileNode) where() (*gofs.Inode, string) {
	if name, dir := fn.Parent(); dir != nil {
		return dir, name
	}
	return fn.pt.dir, fn.pt.name
}

// placed records that the inode was answered for name in dir.
func (fn *fileNode) placed(dir *gofs.Inode, name string) {
	fn.mu.Lock()
	fn.pt.dir, fn.pt.name = dir, name
	fn.mu.Unlock()
}

// expected reports whether caller pid is expected to retry an open and
// how many others are expected to open this name (fn.mu held).
func (fn *fileNode) expected(pid uint32) (mine bool, others int) {
	dir, name := fn.where()
	return fn.m.retries.check(pid, dir, name)
}

// refuse answers ESTALE to caller pid and unlocks fn.mu: fn is
// superseded, pid's retry is expected on its name, and the inode the name
// leads to now is superseded too unless it can take the retry (makeRoom).
func (fn *fileNode) refuse(pid uint32) syscall.Errno {
	fn.pt.superseded = true
	dir, name := fn.where()
	fn.m.retries.expect(pid, dir, name)
	fn.mu.Unlock()
	if dir != nil {
		if d, ok := dir.Operations().(*dirNode); ok {
			d.makeRoom(name)
		}
	}
	return syscall.ESTALE
}

// makeRoom makes sure a retry of an open of name lands on an inode with
// no passthrough or cached read handle open (so that nothing there refuses
// or supersedes while the retry is expected): the inode the name leads to
// is superseded otherwise, and the next lookup answers a new one. Never
// one with writers (their content would not be found by name at close),
// which cached readers and passthrough handles do not share an inode with.
func (d *dirNode) makeRoom(name string) {
	ch := d.GetChild(name)
	if ch == nil {
		return // the next lookup answers a new inode
	}
	fn, ok := ch.Operations().(*fileNode)
	if !ok {
		return
	}
	fn.mu.Lock()
	if (fn.pt.n > 0 || len(fn.cache.readers) > 0) && !fn.writing() {
		fn.pt.superseded = true
	}
	fn.mu.Unlock()
}

// successor returns the inode that replaces superseded node fn under its
// name (with version in), made by the first lookup that asks, or nil when
// fn is not superseded.
func (fn *fileNode) successor(ctx context.Context, parent *gofs.Inode, name string, in files.Info) *gofs.Inode {
	fn.mu.Lock()
	if !fn.pt.superseded {
		fn.mu.Unlock()
		return nil
	}
	if fn.pt.next == nil {
		fn.m.ptSwaps.Add(1)
		next := &fileNode{m: fn.m, info: in}
		next.pt.dir, next.pt.name = parent, name
		fn.pt.next = parent.NewInode(ctx, next, gofs.StableAttr{Mode: syscall.S_IFREG})
	}
	next := fn.pt.next
	fn.mu.Unlock()
	// The successor may be superseded too (the name may still lead to
	// this inode): the last of the chain.
	if last := next.Operations().(*fileNode).successor(ctx, parent, name, in); last != nil {
		return last
	}
	return next
}

// retrying reports whether a caller is expected to retry an open of the
// name: no cached read handle opens meanwhile (fn.mu held).
func (fn *fileNode) retrying() bool {
	_, others := fn.expected(0)
	return others > 0
}

// closeDirect forgets a direct read handle.
func (fn *fileNode) closeDirect() {
	fn.mu.Lock()
	fn.pt.direct--
	fn.mu.Unlock()
}

// closePassthrough forgets a passthrough handle.
func (fn *fileNode) closePassthrough() {
	fn.mu.Lock()
	fn.pt.n--
	fn.mu.Unlock()
}

// ptHandle is a passthrough read handle. Only it implements
// fs.FilePassthroughFder: go-fuse gives every handle that does the backing
// file the inode already has, so a plain readHandle must not.
type ptHandle struct{ *readHandle }

var _ gofs.FilePassthroughFder = ptHandle{}

// PassthroughFd implements fs.FilePassthroughFder: the blob's descriptor.
func (h ptHandle) PassthroughFd() (int, bool) { return int(h.f.Fd()), true }

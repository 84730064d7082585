package mount

import (
	"context"
	"log/slog"
	"os"
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
//   - The kernel retries once. So a caller told ESTALE is expected on the
//     inode its retry finds (ptState.retriers); until it came (or ptRetry
//     passed) no other caller gets a passthrough or cached read handle
//     there, and the retry opens whatever it can: it does not fail again.
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
	// retriers are the callers told ESTALE whose retry is expected here
	// (on a superseded inode: on its successor, which takes them over).
	// Their retry must not fail again, so while one is expected no other
	// caller gets a passthrough or cached handle here, and the retry
	// itself opens whatever it can.
	retriers map[uint32]retrier
}

// retrier is a caller expected to retry an open (ptState.retriers).
type retrier struct {
	at    time.Time
	write bool   // a writer, else a reader of sum
	sum   string // the blob the reader opens
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
	defer fn.mu.Unlock()
	pt := &fn.pt
	sum := f.Info().SHA256
	me := retrier{at: time.Now(), sum: sum}
	if pt.superseded {
		return false, fn.refuse(pid, me)
	}
	mine, others := fn.expected(pid)
	if pt.n > 0 {
		if pt.sum != sum {
			return false, fn.refuse(pid, me)
		}
		// The kernel reads the backing file of the first handle, which
		// was known good at its open.
		pt.n++
		fn.m.ptOpens.Add(1)
		delete(pt.retriers, pid)
		return true, 0
	}
	eligible := fn.m.pt.Load() && f.Info().Size >= ptMin && f.Good() && !fn.pending && others == 0 &&
		len(fn.writers) == 0 && len(fn.cache.readers) == 0 && pt.direct == 0
	switch {
	case eligible && !pt.tainted && (pt.sum == "" || pt.sum == sum):
		pt.n, pt.sum = 1, sum
		fn.m.ptOpens.Add(1)
		delete(pt.retriers, pid)
		return true, 0
	case eligible && !mine:
		// Read through us before, or in passthrough of another blob,
		// which go-fuse may still hand out (it drops a backing file only
		// after the handle's Release): a new inode.
		return false, fn.refuse(pid, me)
	}
	pt.tainted = true
	delete(pt.retriers, pid)
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
// at its close.
func (fn *fileNode) openOther(pid uint32, write bool) syscall.Errno {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	pt := &fn.pt
	me := retrier{at: time.Now(), write: true}
	mine, _ := fn.expected(pid)
	if pt.superseded || pt.n > 0 ||
		(write && !mine && len(fn.writers) == 0 && (pt.sum != "" || len(fn.cache.readers) > 0)) {
		return fn.refuse(pid, me)
	}
	pt.tainted = true
	delete(pt.retriers, pid)
	return 0
}

// expected reports whether caller pid is expected to retry here and how
// many others are (fn.mu held); it forgets the stale ones.
func (fn *fileNode) expected(pid uint32) (mine bool, others int) {
	for p, r := range fn.pt.retriers {
		if time.Since(r.at) > ptRetry {
			delete(fn.pt.retriers, p)
		}
	}
	_, mine = fn.pt.retriers[pid]
	others = len(fn.pt.retriers)
	if mine {
		others--
	}
	return mine, others
}

// refuse answers ESTALE to caller pid (fn.mu held): fn is superseded, and
// pid is expected on the inode its retry will find (expect).
func (fn *fileNode) refuse(pid uint32, r retrier) syscall.Errno {
	fn.pt.superseded = true
	if next := fn.pt.next; next != nil {
		next.Operations().(*fileNode).expect(pid, r)
	} else {
		fn.expectHere(pid, r)
	}
	return syscall.ESTALE
}

// expect records that caller pid will retry on this inode, or on its
// successor when this one is superseded or cannot take the retry: a
// writer, or a reader of another blob, where passthrough handles are
// open, or a writer where cached readers are.
func (fn *fileNode) expect(pid uint32, r retrier) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	pt := &fn.pt
	if !pt.superseded && pt.n > 0 && (r.write || r.sum != pt.sum) {
		pt.superseded = true
	}
	if !pt.superseded && r.write && len(fn.cache.readers) > 0 && len(fn.writers) == 0 {
		pt.superseded = true
	}
	if next := pt.next; pt.superseded && next != nil {
		next.Operations().(*fileNode).expect(pid, r)
		return
	}
	fn.expectHere(pid, r)
}

// expectHere records retrier pid on fn (fn.mu held).
func (fn *fileNode) expectHere(pid uint32, r retrier) {
	if fn.pt.retriers == nil {
		fn.pt.retriers = make(map[uint32]retrier)
	}
	fn.pt.retriers[pid] = r
}

// successor returns the inode that replaces superseded node fn under its
// name (with version in), made by the first lookup that asks, or nil when
// fn is not superseded. It takes over the callers expected to retry.
func (fn *fileNode) successor(ctx context.Context, parent *gofs.Inode, in files.Info) *gofs.Inode {
	fn.mu.Lock()
	if !fn.pt.superseded {
		fn.mu.Unlock()
		return nil
	}
	if fn.pt.next == nil {
		fn.m.ptSwaps.Add(1)
		next := &fileNode{m: fn.m, info: in}
		fn.expected(0) // forget the stale
		next.pt.retriers = fn.pt.retriers
		fn.pt.retriers = nil
		fn.pt.next = parent.NewInode(ctx, next, gofs.StableAttr{Mode: syscall.S_IFREG})
	}
	next := fn.pt.next
	fn.mu.Unlock()
	// The successor may be superseded too (the name may still lead to
	// this inode): the last of the chain.
	if last := next.Operations().(*fileNode).successor(ctx, parent, in); last != nil {
		return last
	}
	return next
}

// retrying reports whether a caller is expected to retry an open here: no
// cached read handle opens meanwhile (fn.mu held).
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

//go:build linux

package mount

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cohortserver/cohort/files"
)

// marker is the empty file that records a directory made with mkdir, so
// that an empty directory exists on every node; the mount hides it.
const marker = ".cohort-dir"

// blockSize is the block size the mount reports (statfs, st_blksize).
const blockSize = 4096

// dirNode is a directory: the root, a directory made with mkdir (it holds
// a marker) or one that exists because files sit under it.
type dirNode struct {
	gofs.Inode
	m *Mount
}

// fileNode is a regular file of the tree.
type fileNode struct {
	gofs.Inode
	m *Mount

	mu      sync.Mutex
	info    files.Info // the last committed version seen
	writers map[*writeHandle]struct{}
	// opening counts the writers past openOther and not registered in
	// writers yet (openWriter): they count as writers from that check on,
	// or a reader could open cached or passthrough in between.
	opening int
	// pending is a file created here (without O_EXCL) whose first version
	// is not committed yet: it exists on this node only, until a close.
	pending bool
	// told is the version whose attributes the kernel was last given.
	told uint64
	// cache is which version's bytes the kernel's page cache of the inode
	// may hold (pagecache.go).
	cache pageCache
	// pt is the inode's passthrough handles (passthrough.go).
	pt ptState
}

var (
	_ gofs.NodeLookuper       = (*dirNode)(nil)
	_ gofs.NodeReaddirer      = (*dirNode)(nil)
	_ gofs.NodeOpendirHandler = (*dirNode)(nil)
	_ gofs.NodeCreater        = (*dirNode)(nil)
	_ gofs.NodeMkdirer        = (*dirNode)(nil)
	_ gofs.NodeRmdirer        = (*dirNode)(nil)
	_ gofs.NodeUnlinker       = (*dirNode)(nil)
	_ gofs.NodeRenamer        = (*dirNode)(nil)
	_ gofs.NodeGetattrer      = (*dirNode)(nil)
	_ gofs.NodeSetattrer      = (*dirNode)(nil)
	_ gofs.NodeStatfser       = (*dirNode)(nil)
	_ gofs.NodeSymlinker      = (*dirNode)(nil)
	_ gofs.NodeLinker         = (*dirNode)(nil)
	_ gofs.NodeMknoder        = (*dirNode)(nil)
	_ gofs.NodeOpener         = (*fileNode)(nil)
	_ gofs.NodeGetattrer      = (*fileNode)(nil)
	_ gofs.NodeSetattrer      = (*fileNode)(nil)
)

// pathOf returns the tree path of an inode ("" for the root); false when
// the inode was unlinked or renamed over.
func (m *Mount) pathOf(in *gofs.Inode) (string, bool) {
	root := m.root.EmbeddedInode()
	var segs []string
	for p := in; p != root; {
		name, parent := p.Parent()
		if parent == nil {
			return "", false
		}
		segs = append(segs, name)
		p = parent
	}
	var b strings.Builder
	for i := len(segs) - 1; i >= 0; i-- {
		b.WriteString(segs[i])
		if i > 0 {
			b.WriteByte('/')
		}
	}
	return b.String(), true
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// childPath validates a name given by a program and returns its tree path.
func (d *dirNode) childPath(name string) (string, syscall.Errno) {
	dir, ok := d.m.pathOf(&d.Inode)
	if !ok {
		return "", syscall.ENOENT
	}
	if len(name) > files.MaxSegmentBytes {
		return "", syscall.ENAMETOOLONG
	}
	if name == marker {
		return "", syscall.EINVAL
	}
	p := join(dir, name)
	if _, err := files.CleanPath(p); err != nil {
		return "", syscall.EINVAL
	}
	return p, 0
}

// commitCtx bounds a commit; it is not cancelled with the request, so an
// interrupted close does not leave an outcome unknown.
func (m *Mount) commitCtx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CommitTimeout)
	if m.cfg.Bound != nil {
		ctx = m.cfg.Bound(ctx)
	}
	return ctx, cancel
}

// put stores r() at p: first without the leader round trip before the
// conditional check (this node's applied state is usually current), and
// once more after catching up when that state refused it.
func (m *Mount) put(ctx context.Context, p string, r func() io.Reader, o files.WriteOptions) (files.Info, error) {
	o.NoBarrier = true
	info, err := m.store.Create(ctx, p, r(), &o)
	if errors.Is(err, files.ErrVersionMismatch) || errors.Is(err, files.ErrQuotaExceeded) {
		o.NoBarrier = false
		info, err = m.store.Create(ctx, p, r(), &o)
	}
	return info, err
}

// putStaged commits content staged while it was written, as put does.
func (m *Mount) putStaged(ctx context.Context, p string, st *files.Staged, o files.WriteOptions) (files.Info, error) {
	o.NoBarrier = true
	info, err := m.store.CreateStaged(ctx, p, st, &o)
	if errors.Is(err, files.ErrVersionMismatch) || errors.Is(err, files.ErrQuotaExceeded) {
		o.NoBarrier = false
		info, err = m.store.CreateStaged(ctx, p, st, &o)
	}
	return info, err
}

func empty() io.Reader { return bytes.NewReader(nil) }

// catchUpLimit bounds the catch-up with the leader before a lookup that
// missed, a readdir or an open (longer than the store's 2 s default, which a
// loaded node can overrun while the apply is on its way).
const catchUpLimit = 5 * time.Second

// catchUp makes this node's view current before answering a program
// (close-to-open); when it cannot, the local state is served.
func (m *Mount) catchUp(ctx context.Context) {
	if err := m.store.CatchUp(ctx, catchUpLimit); err != nil {
		m.log.Debug("files mount: serving the local state", "err", err)
	}
}

// errno maps the store's errors to what a program understands.
func (m *Mount) errno(op, p string, err error) syscall.Errno {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, files.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, files.ErrVersionMismatch):
		return syscall.EEXIST
	case errors.Is(err, files.ErrBadPath):
		return syscall.EINVAL
	case errors.Is(err, files.ErrQuotaExceeded):
		e = syscall.EDQUOT
	case errors.Is(err, files.ErrFileTooLarge):
		e = syscall.EFBIG
	case errors.Is(err, files.ErrDiskFull), errors.Is(err, syscall.ENOSPC):
		e = syscall.ENOSPC
	case errors.Is(err, files.ErrConflict):
		if m.store.IsDir(p) {
			return syscall.EISDIR
		}
		return syscall.ENOTDIR
	default:
		// No quorum, outcome unknown, content unavailable, closed:
		// the old content stays.
		e = syscall.EIO
	}
	m.log.Warn("files mount: operation failed", "op", op, "path", p, "errno", e.Error(), "err", err)
	return e
}

func (m *Mount) fileAttr(in files.Info, out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | uint32(in.Mode.Perm())
	out.Size = uint64(in.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = blockSize
	out.Nlink = 1
	out.Uid, out.Gid = m.uid, m.gid
	mt := in.ModTime
	out.SetTimes(&mt, &mt, &mt)
}

// dirAttr fills the attributes of directory p: mode and time from its
// marker when it has one.
func (m *Mount) dirAttr(p string, out *fuse.Attr) {
	mode, mt := fs.FileMode(0o755), m.start
	if in, ok := m.store.Local(join(p, marker)); ok && !in.Deleted {
		mode, mt = in.Mode.Perm(), in.ModTime
	}
	out.Mode = syscall.S_IFDIR | uint32(mode)
	out.Nlink = 2
	out.Size = blockSize
	out.Blksize = blockSize
	out.Uid, out.Gid = m.uid, m.gid
	out.SetTimes(&mt, &mt, &mt)
}

// Lookup answers from this node's applied state once the leader confirmed
// that it holds the same entry for the name (one round trip; none on the
// leader), and catches up first otherwise. The kernel decides on the
// answer: a name removed elsewhere and still found in a lagging view would
// make mkdir and open(O_CREAT|O_EXCL) fail with EEXIST and a plain
// open(O_CREAT) open a file that is gone; a file closed elsewhere and not
// applied here yet would be missing.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p, errno := d.childPath(name)
	if errno != 0 {
		return nil, syscall.ENOENT
	}
	if ch := d.pendingChild(name, out); ch != nil {
		return ch, 0
	}
	if d.m.store.Current() {
		return d.answer(ctx, name, p, d.m.store.Entry(p), out)
	}
	e := d.m.store.Entry(p)
	same, err := d.m.store.SameAtLeader(ctx, p, e, catchUpLimit)
	switch {
	case err != nil:
		// No leader to ask (none known, unreachable): a catch-up would
		// fail alike, so the local state answers, as reads do then.
		d.m.log.Debug("files mount: lookup from the local state", "path", p, "err", err)
	case !same:
		d.m.catchUp(ctx)
		e = d.m.store.Entry(p)
	}
	return d.answer(ctx, name, p, e, out)
}

// pendingChild returns the child name when it is a file created on this
// node and not committed yet (it exists here only).
func (d *dirNode) pendingChild(name string, out *fuse.EntryOut) *gofs.Inode {
	if ch := d.GetChild(name); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.isPending() {
			fn.attr(&out.Attr)
			return ch
		}
	}
	return nil
}

// answer answers a lookup of name (path p) with the entry e.
func (d *dirNode) answer(ctx context.Context, name, p string, e files.Entry, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	switch {
	case e.Live():
		return d.fileChild(ctx, name, e.Info, &out.Attr), 0
	case e.Dir:
		return d.dirChild(ctx, name, p, &out.Attr), 0
	}
	return nil, syscall.ENOENT
}

func (d *dirNode) fileChild(ctx context.Context, name string, in files.Info, out *fuse.Attr) *gofs.Inode {
	if ch := d.GetChild(name); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok {
			if next := fn.successor(ctx, &d.Inode, name, in); next != nil {
				// Its passthrough handles keep it; the name gets a new
				// inode (passthrough.go).
				ch, fn = next, next.Operations().(*fileNode)
			}
			fn.placed(&d.Inode, name)
			fn.observe(in)
			fn.attr(out)
			return ch
		}
	}
	fn := &fileNode{m: d.m, info: in}
	fn.pt.dir, fn.pt.name = &d.Inode, name
	fn.attr(out)
	return d.NewInode(ctx, fn, gofs.StableAttr{Mode: syscall.S_IFREG})
}

func (d *dirNode) dirChild(ctx context.Context, name, p string, out *fuse.Attr) *gofs.Inode {
	d.m.dirAttr(p, out)
	if ch := d.GetChild(name); ch != nil {
		if _, ok := ch.Operations().(*dirNode); ok {
			return ch
		}
	}
	return d.NewInode(ctx, &dirNode{m: d.m}, gofs.StableAttr{Mode: syscall.S_IFDIR})
}

// OpendirHandle opens the directory for reading (see dirHandle).
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{d: d}, 0, 0
}

// dirHandle is an open directory. Its listing is taken at the first read,
// after catching up with the leader (Readdir); the lookups the kernel
// makes of the names listed (READDIRPLUS) answer from that same current
// state, without the leader round trip of each Lookup. go-fuse calls it
// under the handle's lock.
type dirHandle struct {
	d  *dirNode
	ds gofs.DirStream
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileLookuper     = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
)

func (h *dirHandle) list(ctx context.Context) syscall.Errno {
	if h.ds != nil {
		return 0
	}
	ds, errno := h.d.Readdir(ctx)
	if errno != 0 {
		return errno
	}
	h.ds = ds
	return 0
}

// Readdirent implements fs.FileReaddirenter.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := h.list(ctx); errno != 0 {
		return nil, errno
	}
	if !h.ds.HasNext() {
		return nil, 0
	}
	e, errno := h.ds.Next()
	return &e, errno
}

// Seekdir implements fs.FileSeekdirer (rewinddir, telldir/seekdir) within
// the listing taken at the first read.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if errno := h.list(ctx); errno != 0 {
		return errno
	}
	if sd, ok := h.ds.(gofs.FileSeekdirer); ok {
		return sd.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

// Lookup implements fs.FileLookuper: a name the listing just returned,
// from the state the listing was taken from (or a newer one).
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p, errno := h.d.childPath(name)
	if errno != 0 {
		return nil, syscall.ENOENT
	}
	if ch := h.d.pendingChild(name, out); ch != nil {
		return ch, 0
	}
	return h.d.answer(ctx, name, p, h.d.m.store.Entry(p), out)
}

// Releasedir implements fs.FileReleasedirer.
func (h *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	if h.ds != nil {
		h.ds.Close()
	}
}

// Readdir lists the directory after catching up with the leader.
func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	dir, ok := d.m.pathOf(&d.Inode)
	if !ok {
		return nil, syscall.ENOENT
	}
	d.m.catchUp(ctx)
	fs, dirs := d.m.store.Children(dir)
	list := make([]fuse.DirEntry, 0, len(fs)+len(dirs))
	for _, in := range fs {
		if name := path.Base(in.Path); name != marker {
			list = append(list, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG})
		}
	}
	for _, name := range dirs {
		list = append(list, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR})
	}
	for name, ch := range d.Children() {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.isPending() {
			if in, ok := d.m.store.Local(join(dir, name)); !ok || in.Deleted {
				list = append(list, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG})
			}
		}
	}
	return gofs.NewListDirStream(list), 0
}

// Create makes a file. With O_EXCL an empty file is committed at once,
// conditional on the name being free cluster-wide. Without it the new
// file exists on this node only until its first close commits it (the
// kernel holds the directory locked during a create, so a commit there
// would serialize every create in the directory).
func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	p, errno := d.childPath(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if d.m.store.IsDir(p) {
		return nil, nil, 0, syscall.EISDIR
	}
	cctx, cancel := d.m.commitCtx()
	defer cancel()
	perm := fs.FileMode(mode).Perm()
	cur, _ := d.m.store.Local(p)
	fn := &fileNode{m: d.m}
	fn.pt.tainted = true // its first handle is a writer
	fn.pt.dir, fn.pt.name = &d.Inode, name
	var w *writeHandle
	switch {
	case flags&syscall.O_EXCL != 0:
		info, err := d.m.createEmpty(cctx, "create", p, files.WriteOptions{Mode: perm})
		if err != nil {
			return nil, nil, 0, d.m.errno("create", p, err)
		}
		fn.info = info
		w, errno = fn.openWriter(cctx, p, info, true)
	case !cur.Deleted && cur.Version != 0:
		// It exists (created elsewhere since the kernel looked): open it.
		fn.info = cur
		w, errno = fn.openWriter(cctx, p, cur, flags&syscall.O_TRUNC != 0)
	default:
		fn.info = files.Info{Path: p, Mode: perm, ModTime: time.Now(), Version: cur.Version, Deleted: true}
		fn.pending = true
		w, errno = fn.openWriter(cctx, p, fn.info, true)
		if w != nil {
			w.markDirty() // even an empty new file is committed at close
		}
	}
	if errno != 0 {
		return nil, nil, 0, errno
	}
	ch := d.NewInode(ctx, fn, gofs.StableAttr{Mode: syscall.S_IFREG})
	fn.attr(&out.Attr)
	return ch, w, directOpen, 0
}

// Mkdir records the directory with a marker file, conditional on the name
// being free cluster-wide.
func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p, errno := d.childPath(name)
	if errno != 0 {
		return nil, errno
	}
	d.m.catchUp(ctx)
	if in, ok := d.m.store.Local(p); (ok && !in.Deleted) || d.m.store.IsDir(p) {
		return nil, syscall.EEXIST
	}
	cctx, cancel := d.m.commitCtx()
	defer cancel()
	_, err := d.m.createEmpty(cctx, "mkdir", join(p, marker), files.WriteOptions{Mode: fs.FileMode(mode).Perm()})
	if err != nil {
		if errors.Is(err, files.ErrConflict) {
			return nil, syscall.EEXIST // a file has that name
		}
		return nil, d.m.errno("mkdir", p, err)
	}
	return d.dirChild(ctx, name, p, &out.Attr), 0
}

// Rmdir removes an empty directory (its marker).
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	p, errno := d.childPath(name)
	if errno != 0 {
		return syscall.ENOENT
	}
	d.m.catchUp(ctx)
	cctx, cancel := d.m.commitCtx()
	defer cancel()
	mp := join(p, marker)
	var sent *files.Info // the marker a removal with an unknown outcome was conditioned on
	for unknown := 0; ; {
		if sent != nil {
			if cur, _ := d.m.store.Local(mp); !sameEntry(cur, *sent) {
				return 0 // landed (what came after is another's doing)
			}
		}
		fs, dirs := d.m.store.Children(p)
		var mk *files.Info
		for i := range fs {
			if path.Base(fs[i].Path) != marker {
				return syscall.ENOTEMPTY
			}
			mk = &fs[i]
		}
		if len(dirs) > 0 {
			return syscall.ENOTEMPTY
		}
		if mk == nil {
			return syscall.ENOENT
		}
		_, err := d.m.store.Remove(cctx, mk.Path, &files.WriteOptions{IfVersion: files.Version(mk.Version)})
		switch {
		case err == nil:
			return 0
		case (errors.Is(err, files.ErrVersionMismatch) || errors.Is(err, files.ErrNotFound)) && cctx.Err() == nil:
			d.m.store.Barrier(cctx) // changed meanwhile: look again
		case isUnknown(err) && unknown < maxAttempts:
			unknown++
			if serr := d.m.settle(cctx, "rmdir", p, err); serr != nil {
				return d.m.errno("rmdir", p, serr)
			}
			sent = mk
		default:
			return d.m.errno("rmdir", p, err)
		}
	}
}

// Unlink removes a file (leaving a tombstone). A handle still open on it
// keeps reading the old content; what is written through it is dropped.
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	p, errno := d.childPath(name)
	if errno != 0 {
		return syscall.ENOENT
	}
	cctx, cancel := d.m.commitCtx()
	defer cancel()
	var fn *fileNode
	if ch := d.GetChild(name); ch != nil {
		fn, _ = ch.Operations().(*fileNode)
	}
	if errno := d.m.remove(cctx, "unlink", p); errno != 0 && !(errno == syscall.ENOENT && fn != nil && fn.isPending()) {
		return errno
	}
	if fn != nil {
		fn.unlinked()
	}
	return 0
}

// Rename moves a file in one committed step (the target, if any, is
// replaced atomically on every node). Directories are not renamed: EXDEV
// makes mv copy them instead.
func (d *dirNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.EINVAL // RENAME_NOREPLACE, RENAME_EXCHANGE
	}
	src, errno := d.childPath(name)
	if errno != 0 {
		return syscall.ENOENT
	}
	np, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	dst, errno := np.childPath(newName)
	if errno != 0 {
		return errno
	}
	if in, ok := d.m.store.Local(src); (!ok || in.Deleted) && d.m.store.IsDir(src) {
		return syscall.EXDEV
	}
	cctx, cancel := d.m.commitCtx()
	defer cancel()
	if ch := d.GetChild(name); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.isPending() {
			// renamed before its first close: commit it so it can move
			if errno := fn.commitWriters(cctx); errno != 0 {
				return errno
			}
		}
	}
	if errno := d.m.rename(cctx, src, dst); errno != 0 {
		return errno
	}
	if ch := np.GetChild(newName); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok && ch != d.GetChild(name) {
			fn.unlinked() // the replaced file
		}
	}
	return 0
}

// rename moves the file at src to dst as a compare-and-set on the version
// of src this node sees (after catching up when that view refuses it), so
// that a rename sent again after an unknown outcome can only move that
// version.
func (m *Mount) rename(ctx context.Context, src, dst string) syscall.Errno {
	caughtUp := false
	var sent *files.Info // the entry of src a rename with an unknown outcome was conditioned on
	for unknown := 0; ; {
		cur, _ := m.store.Local(src)
		if sent != nil && !sameEntry(cur, *sent) {
			return 0 // landed (what came after is another's doing)
		}
		if cur.Version == 0 || cur.Deleted {
			if !caughtUp {
				m.store.Barrier(ctx)
				caughtUp = true
				continue
			}
			return syscall.ENOENT
		}
		_, err := m.store.Rename(ctx, src, dst, &files.WriteOptions{IfVersion: files.Version(cur.Version)})
		switch {
		case err == nil:
			return 0
		case (errors.Is(err, files.ErrVersionMismatch) || errors.Is(err, files.ErrNotFound)) && ctx.Err() == nil:
			// A stale view, or src changed meanwhile (a close elsewhere):
			// move the version there now, however many writers commit
			// meanwhile, for as long as the commit may take.
			m.store.Barrier(ctx)
			caughtUp = true
		case isUnknown(err) && unknown < maxAttempts:
			unknown++
			if serr := m.settle(ctx, "rename", dst, err); serr != nil {
				return m.errno("rename", dst, serr)
			}
			sent = &cur
		default:
			return m.errno("rename", dst, err)
		}
	}
}

// Getattr of a directory.
func (d *dirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	p, ok := d.m.pathOf(&d.Inode)
	if !ok {
		return syscall.ENOENT
	}
	d.m.dirAttr(p, &out.Attr)
	return 0
}

// Setattr of a directory: mode and mtime are kept on its marker (made
// when missing); owners are not kept.
func (d *dirNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	p, ok := d.m.pathOf(&d.Inode)
	if !ok {
		return syscall.ENOENT
	}
	mode, setMode := in.GetMode()
	mtime, setTime := in.GetMTime()
	if p != "" && (setMode || setTime) {
		mp := join(p, marker)
		cctx, cancel := d.m.commitCtx()
		defer cancel()
		var sent *files.Info // the marker a change with an unknown outcome was conditioned on
		for unknown := 0; ; {
			cur, ok := d.m.store.Local(mp)
			if sent != nil && !sameEntry(cur, *sent) {
				break // landed (what came after is another's doing)
			}
			var err error
			if ok && !cur.Deleted {
				m := cur.Mode
				if setMode {
					m = fs.FileMode(mode)
				}
				_, err = d.m.store.SetAttr(cctx, cur, m, mtime)
			} else {
				m := fs.FileMode(0o755)
				if setMode {
					m = fs.FileMode(mode)
				}
				_, err = d.m.put(cctx, mp, empty, files.WriteOptions{IfVersion: files.Version(0), Mode: m, SizeKnown: true, ModTime: mtime})
			}
			if errors.Is(err, files.ErrVersionMismatch) && cctx.Err() == nil {
				// Changed meanwhile: again on the new version.
				d.m.store.Barrier(cctx)
				continue
			}
			if isUnknown(err) && unknown < maxAttempts {
				unknown++
				if serr := d.m.settle(cctx, "setattr", p, err); serr != nil {
					return d.m.errno("setattr", p, serr)
				}
				sent = &cur
				continue
			}
			if err != nil {
				return d.m.errno("setattr", p, err)
			}
			break
		}
	}
	d.m.dirAttr(p, &out.Attr)
	return 0
}

// Statfs reports the quota (--files-max-bytes) as the size, or the data
// disk when there is none.
func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st := d.m.store.Status()
	var sfs syscall.Statfs_t
	diskFree, diskTotal := int64(-1), int64(-1)
	if syscall.Statfs(d.m.cfg.TempDir, &sfs) == nil {
		diskFree, diskTotal = int64(sfs.Bavail)*sfs.Bsize, int64(sfs.Blocks)*sfs.Bsize
	}
	total, free := diskTotal, diskFree
	if q := st.Usage.MaxBytes; q > 0 {
		total, free = q, max(q-st.Usage.Bytes, 0)
		if diskFree >= 0 {
			free = min(free, diskFree)
		}
	}
	total, free = max(total, 0), max(free, 0)
	out.Bsize, out.Frsize = blockSize, blockSize
	out.Blocks = uint64(total) / blockSize
	out.Bfree = uint64(free) / blockSize
	out.Bavail = out.Bfree
	out.Files = uint64(st.Usage.Files) + 1<<20
	out.Ffree = 1 << 20
	out.NameLen = files.MaxSegmentBytes
	return 0
}

// Symlink is refused: the shared files hold regular files and directories only.
func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Link is refused: no hard links.
func (d *dirNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Mknod is refused: no device files, FIFOs or sockets.
func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// observe records the committed version seen for this file and tells the
// kernel to drop its cached attributes when it changed.
func (fn *fileNode) observe(in files.Info) bool {
	fn.mu.Lock()
	changed := fn.info.Version != in.Version
	if !in.Deleted {
		fn.info, fn.pending = in, false
	}
	fn.mu.Unlock()
	return changed
}

// isPending reports a file created here that no close committed yet and
// that a handle still holds open.
func (fn *fileNode) isPending() bool {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	return fn.pending && len(fn.writers) > 0
}

// allWriters returns the write handles open on the file.
func (fn *fileNode) allWriters() []*writeHandle {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	ws := make([]*writeHandle, 0, len(fn.writers))
	for h := range fn.writers {
		ws = append(ws, h)
	}
	return ws
}

// commitWriters commits what the open writers hold (the first with
// content wins; the others commit at their close as usual).
func (fn *fileNode) commitWriters(ctx context.Context) syscall.Errno {
	for _, w := range fn.allWriters() {
		if errno := w.commit(ctx); errno != 0 {
			return errno
		}
	}
	return 0
}

// writer returns an open writer of the file, a dirty one if any.
func (fn *fileNode) writer() *writeHandle {
	// Not under fn.mu: a handle's mu comes first (commit holds it while it
	// records the new version on the node), and taking it under fn.mu
	// deadlocked a GETATTR with a close of the same file.
	var w *writeHandle
	for _, h := range fn.allWriters() {
		if w == nil || h.isDirty() {
			w = h
		}
	}
	return w
}

// attr fills the attributes: a writer open on this node shows its size.
func (fn *fileNode) attr(out *fuse.Attr) {
	w := fn.writer()
	fn.mu.Lock()
	in := fn.info
	fn.told = in.Version
	fn.mu.Unlock()
	fn.m.fileAttr(in, out)
	if w != nil {
		w.attr(out)
	}
}

// refreshKernel drops the kernel's cached attributes when they are not
// those of version v (an open of v must not read with an older size).
func (fn *fileNode) refreshKernel(v uint64) {
	fn.mu.Lock()
	stale := fn.told != v
	fn.mu.Unlock()
	if stale {
		fn.NotifyContent(-1, 0)
	}
}

func (fn *fileNode) unlinked() {
	for _, h := range fn.allWriters() {
		h.drop()
	}
}

// Getattr of a file: the local applied state (at most CacheTimeout old
// in the kernel, invalidated when a change is applied here).
func (fn *fileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if w, ok := f.(*writeHandle); ok {
		fn.m.fileAttr(fn.current(), &out.Attr)
		w.attr(&out.Attr)
		return 0
	}
	if p, ok := fn.m.pathOf(&fn.Inode); ok {
		if in, ok := fn.m.store.Local(p); ok && !in.Deleted {
			fn.observe(in)
		}
	}
	fn.attr(&out.Attr)
	return 0
}

func (fn *fileNode) current() files.Info {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	return fn.info
}

// Setattr: size through the open writer (or a commit of the truncated
// content), mode and mtime committed without resending the content
// (or with the writer's content at its close). Owners are not kept.
func (fn *fileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	p, ok := fn.m.pathOf(&fn.Inode)
	if !ok {
		fn.attr(&out.Attr)
		return 0 // unlinked: nothing to keep
	}
	// The handle the call came through (ftruncate), else a writer of
	// this node with unclosed writes; a closed handle may still be
	// registered until its release arrives, so it does not count.
	w, _ := f.(*writeHandle)
	if w == nil {
		if h := fn.writer(); h != nil && h.isDirty() {
			w = h
		}
	}
	size, setSize := in.GetSize()
	mode, setMode := in.GetMode()
	mtime, setTime := in.GetMTime()
	cctx, cancel := fn.m.commitCtx()
	defer cancel()
	if setSize {
		if w == nil {
			cur, err := fn.m.store.Stat(cctx, p)
			if err != nil {
				return fn.m.errno("truncate", p, err)
			}
			tw, errno := fn.openWriter(cctx, p, cur, size == 0)
			if errno != 0 {
				return errno
			}
			errno = tw.truncate(int64(size))
			if errno == 0 {
				errno = tw.commit(cctx)
			}
			tw.release()
			if errno != 0 {
				return errno
			}
		} else if errno := w.truncate(int64(size)); errno != 0 {
			return errno
		}
	}
	if setMode || setTime {
		// Every writer's next commit keeps the mode; an mtime set before
		// a handle's first write is overtaken by the write, as locally.
		dirty := false
		for _, h := range fn.allWriters() {
			d := h.isDirty()
			h.setAttr(setMode, fs.FileMode(mode), setTime && d, mtime)
			dirty = dirty || d
		}
		if !dirty {
			if errno := fn.setAttr(cctx, p, setMode, fs.FileMode(mode), mtime); errno != 0 {
				return errno
			}
		}
	}
	fn.attr(&out.Attr)
	return 0
}

// setAttr commits a mode and/or mtime, keeping the content.
func (fn *fileNode) setAttr(ctx context.Context, p string, setMode bool, mode fs.FileMode, mtime time.Time) syscall.Errno {
	var sent *files.Info // the version a change with an unknown outcome was conditioned on
	for unknown := 0; ; {
		cur, ok := fn.m.store.Local(p)
		if sent != nil && !sameEntry(cur, *sent) {
			if ok && !cur.Deleted {
				fn.observe(cur)
			}
			return 0 // landed (what came after is another's doing)
		}
		if !ok || cur.Deleted {
			return syscall.ENOENT
		}
		m := cur.Mode
		if setMode {
			m = mode
		}
		info, err := fn.m.store.SetAttr(ctx, cur, m, mtime)
		if errors.Is(err, files.ErrVersionMismatch) && ctx.Err() == nil {
			// The file changed after this node read its version (a close
			// elsewhere): the mode or time goes on the new version, tried
			// again for as long as the commit may take, as a close does.
			fn.m.store.Barrier(ctx)
			continue
		}
		if isUnknown(err) && unknown < maxAttempts {
			unknown++
			if serr := fn.m.settle(ctx, "setattr", p, err); serr != nil {
				return fn.m.errno("setattr", p, serr)
			}
			sent = &cur
			continue
		}
		if err != nil {
			return fn.m.errno("setattr", p, err)
		}
		fn.observe(info)
		return 0
	}
}

// Open reads the version current at open (close-to-open: it first
// catches up with the leader); a writer gets a private temp copy that is
// committed at close or fsync.
func (fn *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	p, ok := fn.m.pathOf(&fn.Inode)
	if !ok {
		return nil, 0, fn.detached(callerPid(ctx))
	}
	if fn.isPending() {
		// Created here and not closed yet: a reader on this node reads
		// what the writer wrote so far; another writer starts empty.
		if errno := fn.openOther(callerPid(ctx), write); errno != 0 {
			return nil, 0, errno
		}
		if write {
			defer fn.opened()
		} else {
			if w := fn.writer(); w != nil {
				fn.mu.Lock()
				fn.pt.direct++
				fn.mu.Unlock()
				return &sharedReader{w: w}, directOpen, 0
			}
		}
		cctx, cancel := fn.m.commitCtx()
		defer cancel()
		w, errno := fn.openWriter(cctx, p, fn.current(), true)
		if errno != 0 {
			return nil, 0, errno
		}
		w.markDirty()
		return w, directOpen, 0
	}
	fn.m.catchUp(ctx)
	if !write {
		f, err := fn.m.store.Open(ctx, p)
		if err != nil {
			return nil, 0, fn.m.openErrno(ctx, p, err)
		}
		fn.observe(f.Info())
		pt, errno := fn.openPassthrough(callerPid(ctx), f)
		if errno != 0 {
			f.Close()
			return nil, 0, errno
		}
		fn.refreshKernel(f.Info().Version)
		h := &readHandle{n: fn, f: f, pt: pt}
		if pt {
			return ptHandle{h}, 0, 0
		}
		return h, fn.openRead(h), 0
	}
	if errno := fn.openOther(callerPid(ctx), true); errno != 0 {
		return nil, 0, errno
	}
	defer fn.opened()
	cctx, cancel := fn.m.commitCtx()
	defer cancel()
	cur, err := fn.m.store.Stat(cctx, p)
	if err != nil {
		return nil, 0, fn.m.openErrno(ctx, p, err)
	}
	fn.observe(cur)
	fn.refreshKernel(cur.Version)
	w, errno := fn.openWriter(cctx, p, cur, flags&syscall.O_TRUNC != 0)
	if errno != 0 {
		return nil, 0, errno
	}
	return w, directOpen, 0
}

// openErrno maps the error of an open. A file removed elsewhere while the
// kernel still holds its name (for up to CacheTimeout, until the removal
// is applied here) answers ESTALE, as NFS does: the kernel then looks the
// name up again (LOOKUP_REVAL) and retries the open once, so
// open(O_CREAT) creates the file anew and a plain open gets ENOENT.
func (m *Mount) openErrno(ctx context.Context, p string, err error) syscall.Errno {
	if errors.Is(err, files.ErrNotFound) {
		return syscall.ESTALE
	}
	if ctx.Err() != nil {
		// The kernel interrupted the request (its caller got a signal,
		// such as the Go runtime's preemption signal): EINTR, which the
		// caller may retry, not EIO, which it must not.
		return syscall.EINTR
	}
	return m.errno("open", p, err)
}

//go:build linux

package mount

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/cohortserver/cohort/files"
)

// readHandle reads the version that was current at open, from the local
// blob (fetched and verified first when missing). The bytes reach the
// kernel by splice(2) from the blob's descriptor (fuse.ReadResultFd), not
// through a buffer of this process; each handle has its own descriptor, so
// it keeps its version whatever replaces the file meanwhile.
type readHandle struct {
	n      *fileNode
	f      *files.File
	cached bool // reads through the kernel's page cache (pagecache.go)
	// pt: the kernel reads the blob itself (passthrough.go); a READ
	// reaching this handle means it refused (ptRefused).
	pt        bool
	ptRefused atomic.Bool

	mu      sync.Mutex
	checker *checker // a large blob's check (readcheck.go), from the first READ
	// unchecked is set once the READs left the sequence the checker follows.
	unchecked bool
}

var (
	_ gofs.FileReader   = (*readHandle)(nil)
	_ gofs.FileReleaser = (*readHandle)(nil)
)

// Read implements fs.FileReader. A blob hashed in full at open is spliced
// at once. A larger one is checked while it is read, from its first byte
// on, by a checker that hashes ahead of the READs on its own goroutine:
// READs before the end are spliced at once, and the READ that reaches the
// end waits for the checker's verdict (EIO on a mismatch, never handing
// out a corrupt tail). The kernel's readahead sends READs concurrently
// and out of order, so only a READ far ahead of the others ends the check
// (the scrubber covers the blob then).
func (h *readHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.pt && !h.ptRefused.Swap(true) && h.n.m.pt.Swap(false) {
		h.n.m.log.Error("files mount: the kernel did not take a passthrough handle; reading through this process from now on")
	}
	size := h.f.Info().Size
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	n := int(min(int64(len(dest)), size-off))
	if h.f.Verified() {
		return fuse.ReadResultFd(h.f.Fd(), off, n), 0
	}
	end := off + int64(n)
	c := h.check(off, end)
	if c == nil {
		return fuse.ReadResultFd(h.f.Fd(), off, n), 0
	}
	if end < size && end <= c.blobSize {
		return fuse.ReadResultFd(h.f.Fd(), off, n), 0
	}
	// The end, or past the end of a short blob: the verdict first.
	switch err := c.wait(); {
	case errors.Is(err, files.ErrCorrupt):
		// The store queued its repair; never hand out bytes that failed
		// their hash, nor keep the ones handed out before in the cache.
		h.n.readCorrupt(h)
		return nil, syscall.EIO
	case err != nil:
		return nil, syscall.EIO
	}
	h.n.readChecked(h)
	return fuse.ReadResultFd(h.f.Fd(), off, n), 0
}

// check returns the handle's checker, started at the first READ and asked
// to hash up to end; nil once the READs left the sequence (a READ more
// than maxReadGap past the furthest one before, the first counting from
// offset 0).
func (h *readHandle) check(off, end int64) *checker {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.unchecked {
		return nil
	}
	if h.checker == nil {
		h.checker = startChecker(h.f)
	}
	c := h.checker
	if !c.ask(off, end) {
		h.unchecked = true
		return nil
	}
	return c
}

// Release implements fs.FileReleaser.
func (h *readHandle) Release(ctx context.Context) syscall.Errno {
	if h.pt {
		h.n.closePassthrough()
		if h.ptRefused.Load() {
			// Its reads went through the page cache behind the books.
			go h.n.NotifyContent(0, 0)
		}
	} else {
		h.n.closeRead(h)
	}
	h.mu.Lock()
	if h.checker != nil {
		h.checker.stop()
	}
	h.mu.Unlock()
	h.f.Close()
	return 0
}

// sharedReader reads a file created on this node and not closed yet
// through its writer's temp file.
type sharedReader struct{ w *writeHandle }

var (
	_ gofs.FileReader   = (*sharedReader)(nil)
	_ gofs.FileReleaser = (*sharedReader)(nil)
)

// Release implements fs.FileReleaser.
func (r *sharedReader) Release(ctx context.Context) syscall.Errno {
	r.w.n.closeDirect()
	return 0
}

// Read implements fs.FileReader.
func (r *sharedReader) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return r.w.Read(ctx, dest, off)
}

// writeHandle is a file open for writing: its content lives in a private
// temp file (already unlinked, so a crash leaves nothing behind) and is
// committed as a new version at close and fsync.
type writeHandle struct {
	n *fileNode

	mu      sync.Mutex
	tmp     *os.File
	base    uint64 // the version the content started from
	mode    fs.FileMode
	mtime   time.Time // set by utimens while dirty; zero: commit time
	dirty   bool
	gone    bool // unlinked or replaced: writes go nowhere
	killed  bool // a process holding it was killed: its content is discarded, and writes and commits fail with EIO
	written time.Time
	// inOrder counts the bytes written in order from the first one, while
	// every write so far continued the last; -1 once one did not, or when
	// the handle started from existing content.
	inOrder int64
	// stage stages the content while it is written in order, once it
	// outgrew the log entry (stager); nil before and after.
	stage *stager
	// lazy is the base content not copied into tmp yet (lazybase.go);
	// nil once tmp holds the whole content.
	lazy *lazyBase
}

var (
	_ gofs.FileReader   = (*writeHandle)(nil)
	_ gofs.FileWriter   = (*writeHandle)(nil)
	_ gofs.FileFlusher  = (*writeHandle)(nil)
	_ gofs.FileFsyncer  = (*writeHandle)(nil)
	_ gofs.FileReleaser = (*writeHandle)(nil)
)

// openWriter makes a write handle on version cur of p: an empty temp file
// when empty is set (O_TRUNC, a new file), else a copy of the content.
func (fn *fileNode) openWriter(ctx context.Context, p string, cur files.Info, empty bool) (*writeHandle, syscall.Errno) {
	tmp, err := fn.m.temps.get()
	if err != nil {
		return nil, fn.m.errno("open", p, err)
	}
	w := &writeHandle{n: fn, tmp: tmp, base: cur.Version, mode: cur.Mode, dirty: empty && cur.Size > 0, written: time.Now()}
	if !empty && cur.Size > 0 {
		f, err := fn.m.store.Open(ctx, p)
		if err == nil {
			if size := f.Info().Size; size >= lazyCopyMin {
				// Copied when needed (lazybase.go); in-order writes from
				// the first byte are staged as for a new file.
				w.lazy = &lazyBase{f: f, limit: size}
				err = tmp.Truncate(size)
			} else {
				w.inOrder = -1
				_, err = io.Copy(tmp, f)
				f.Close()
			}
		}
		if err != nil {
			if w.lazy != nil {
				w.lazy.f.Close()
			}
			fn.m.temps.put(tmp)
			return nil, fn.m.errno("open", p, err)
		}
		w.base = f.Info().Version
	}
	fn.mu.Lock()
	if fn.writers == nil {
		fn.writers = make(map[*writeHandle]struct{})
	}
	fn.writers[w] = struct{}{}
	fn.mu.Unlock()
	return w, 0
}

// markDirty makes the handle commit at its close even if nothing is
// written through it. Under w.mu: the handle is registered on its node
// already, where a GETATTR or SETATTR may look at it.
func (w *writeHandle) markDirty() {
	w.mu.Lock()
	w.dirty = true
	w.mu.Unlock()
}

func (w *writeHandle) isDirty() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dirty
}

// attr overlays the temp file's size and time on out.
func (w *writeHandle) attr(out *fuse.Attr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tmp == nil {
		return
	}
	if fi, err := w.tmp.Stat(); err == nil {
		out.Size = uint64(fi.Size())
		out.Blocks = (out.Size + 511) / 512
		mt := w.written
		if !w.mtime.IsZero() {
			mt = w.mtime
		}
		if w.dirty {
			out.SetTimes(&mt, &mt, &mt)
		}
	}
	out.Mode = syscall.S_IFREG | uint32(w.mode.Perm())
}

func (w *writeHandle) setAttr(setMode bool, mode fs.FileMode, setTime bool, mtime time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if setMode {
		w.mode = mode.Perm()
	}
	if setTime {
		w.mtime = mtime
	}
}

// drop marks the handle's file as gone: nothing it holds is committed.
func (w *writeHandle) drop() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
}

// abandon discards the handle's unfinished content when a process that
// holds it is killed: nothing it holds is committed, and it no longer
// counts as the file's writer, so no reader on this node sees that content
// (a new file's pending name, a writer's size) while the kernel's RELEASE
// is on its way, or while another process sharing the descriptor (a forked
// child) keeps it open. That process's writes, fsync and close then fail
// with EIO rather than vanish. It reports whether there was content to
// discard.
func (w *writeHandle) abandon() bool {
	w.n.mu.Lock()
	delete(w.n.writers, w)
	w.n.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	dirty := w.dirty && !w.gone && !w.killed
	w.killed, w.dirty = true, false
	w.outOfOrder(false)
	return dirty
}

// Read implements fs.FileReader (O_RDWR reads the handle's own content).
func (w *writeHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tmp == nil {
		return fuse.ReadResultData(nil), 0 // its writer closed
	}
	if errno := w.materialize(); errno != 0 {
		return nil, errno
	}
	n, err := w.tmp.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write implements fs.FileWriter: into the temp file, nothing committed.
func (w *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	var first bool
	defer func() {
		if first {
			w.n.written() // after w.mu: fn.mu comes first
		}
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.killed {
		return 0, syscall.EIO
	}
	n, err := w.tmp.WriteAt(data, off)
	if n > 0 {
		first = !w.dirty
		w.dirty, w.written = true, time.Now()
		if w.lazy != nil {
			w.lazy.mark(off, off+int64(n))
		}
		w.follow(off, int64(n))
	}
	if err != nil {
		return uint32(n), toErrno(err)
	}
	return uint32(n), 0
}

func (w *writeHandle) truncate(size int64) syscall.Errno {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.killed {
		return syscall.EIO
	}
	if size != w.inOrder {
		w.outOfOrder(false)
	}
	if w.lazy != nil {
		w.lazy.limit = min(w.lazy.limit, size)
	}
	if err := w.tmp.Truncate(size); err != nil {
		return toErrno(err)
	}
	w.dirty, w.written = true, time.Now()
	return 0
}

// Flush implements fs.FileFlusher: close(2) commits. A flush from a
// process being killed by a signal commits nothing, so a writer killed
// mid-write leaves the previous version.
func (w *writeHandle) Flush(ctx context.Context) syscall.Errno {
	if killed(ctx) {
		if w.abandon() {
			w.n.m.log.Info("files mount: writer killed by a signal; its unfinished content is discarded", "pid", callerPid(ctx))
		}
		return 0
	}
	cctx, cancel := w.n.m.commitCtx()
	defer cancel()
	return w.commit(cctx)
}

// Fsync implements fs.FileFsyncer: fsync(2) commits too.
func (w *writeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	cctx, cancel := w.n.m.commitCtx()
	defer cancel()
	return w.commit(cctx)
}

// commit stores the temp file's content as the file's new version: its
// blob on a quorum, then the metadata through Raft. The commit is a
// compare-and-set on the version seen, so a file deleted elsewhere
// meanwhile is not brought back (ESTALE, as NFS answers).
func (w *writeHandle) commit(ctx context.Context) syscall.Errno {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.killed {
		return syscall.EIO
	}
	if w.gone || !w.dirty {
		return 0
	}
	m := w.n.m
	p, ok := m.pathOf(&w.n.Inode)
	if !ok {
		w.gone = true
		return 0
	}
	if errno := w.materialize(); errno != 0 {
		return errno
	}
	fi, err := w.tmp.Stat()
	if err != nil {
		return toErrno(err)
	}
	size := fi.Size()
	staged := w.finishStage(ctx, size)
	if staged != nil {
		defer staged.Release()
	}
	sum := func() string {
		if staged != nil {
			return staged.SHA256()
		}
		return sumOf(w.tmp, size)
	}
	var sent *files.Info // the entry a commit with an unknown outcome was conditioned on
	for unknown := 0; ; {
		cur, ok := m.store.Local(p)
		live := ok && !cur.Deleted
		if sent != nil {
			// The outcome of the last try was unknown; this node's state
			// now holds every committed command (settle).
			if live && cur.Size == size && cur.SHA256 == sum() {
				w.base, w.dirty, w.mtime = cur.Version, false, time.Time{}
				w.n.observe(cur)
				return 0 // it landed
			}
			if !sameEntry(cur, *sent) {
				// It landed and was replaced or removed since, or another
				// change came first: as if it landed just before that one
				// (last close wins). A later commit of this handle starts
				// from the version it replaced.
				w.base, w.dirty, w.mtime = sent.Version, false, time.Time{}
				if live {
					w.n.observe(cur)
				}
				return 0
			}
		}
		if ok && !live && cur.Version > w.base {
			m.log.Warn("files mount: file deleted on another node while open for writing; content dropped", "path", p)
			w.gone = true
			return syscall.ESTALE
		}
		var want uint64
		if live {
			want = cur.Version
		}
		o := files.WriteOptions{IfVersion: &want, Mode: w.mode, Size: size, SizeKnown: true, ModTime: w.mtime}
		var info files.Info
		if staged != nil {
			info, err = m.putStaged(ctx, p, staged, o)
		} else {
			info, err = m.put(ctx, p, func() io.Reader { return io.NewSectionReader(w.tmp, 0, size) }, o)
		}
		if errors.Is(err, files.ErrVersionMismatch) && ctx.Err() == nil {
			// Another close landed after this one read the version: last
			// close wins, so try again on the new one, however many
			// writers commit meanwhile, for as long as a commit may take.
			m.store.Barrier(ctx)
			continue
		}
		if isUnknown(err) && unknown < maxAttempts {
			unknown++
			// Leadership changed in flight: the put may have landed. Find
			// out (above); if it did not, the compare-and-set makes a
			// second try safe.
			if serr := m.settle(ctx, "close", p, err); serr != nil {
				return m.errno("close", p, serr)
			}
			sent = &cur
			continue
		}
		if err != nil {
			return m.errno("close", p, err)
		}
		w.base, w.dirty, w.mtime = info.Version, false, time.Time{}
		w.n.observe(info)
		return 0
	}
}

// Release implements fs.FileReleaser.
func (w *writeHandle) Release(ctx context.Context) syscall.Errno {
	w.release()
	return 0
}

func (w *writeHandle) release() {
	w.n.mu.Lock()
	delete(w.n.writers, w)
	w.n.mu.Unlock()
	w.mu.Lock()
	w.outOfOrder(true)
	if w.lazy != nil {
		w.lazy.f.Close()
		w.lazy = nil
	}
	if w.tmp != nil {
		w.n.m.temps.put(w.tmp)
		w.tmp = nil
	}
	w.mu.Unlock()
}

// materialize copies into the temp file what it lacks of the base version
// (w.mu held): before the handle's content is read or committed. A base
// that fails its hash fails the call with EIO (the store queued its
// repair): its writes can then not be completed, and the handle fails
// from then on as a killed writer's does (nothing of it is committed).
func (w *writeHandle) materialize() syscall.Errno {
	if w.lazy == nil {
		return 0
	}
	fi, err := w.tmp.Stat()
	if err != nil {
		return toErrno(err)
	}
	if err := w.lazy.fill(w.tmp, fi.Size()); err != nil {
		w.lazy = nil
		w.killed = true // its content cannot be completed: nothing of it is committed
		w.n.m.log.Warn("files mount: the version a writer started from could not be read; its writes are discarded", "err", err)
		return syscall.EIO
	}
	w.lazy = nil
	return 0
}

// follow notes a write of n bytes at off (w.mu held): in order, it feeds
// the stager, started once the content outgrew a log entry.
func (w *writeHandle) follow(off, n int64) {
	if w.inOrder < 0 {
		return
	}
	if off != w.inOrder {
		w.outOfOrder(false)
		return
	}
	w.inOrder += n
	switch {
	case w.stage != nil:
		w.stage.wrote(w.inOrder)
	case w.inOrder > files.InlineMax:
		w.stage = startStager(w.n.m.life, w.n.m.store, w.tmp, w.inOrder)
	}
}

// outOfOrder ends the staging of the handle (w.mu held): its next commit
// reads the temp file. With wait, it returns once the stager no longer
// reads the temp file.
func (w *writeHandle) outOfOrder(wait bool) {
	w.inOrder = -1
	if w.stage == nil {
		return
	}
	if wait {
		w.stage.stop()
		w.stage = nil
		return
	}
	w.stage.drop(errStageDropped)
}

// finishStage returns the content staged while it was written (w.mu
// held), or nil when there is none or it failed: the commit then reads
// the temp file, and any error shows again there. A file still written in
// order after the commit (an empty new file committed by a truncate, say)
// is staged again from its first byte once it outgrows a log entry.
func (w *writeHandle) finishStage(ctx context.Context, size int64) *files.Staged {
	g := w.stage
	w.stage = nil
	if w.inOrder != size {
		w.inOrder = -1
		if g != nil {
			g.stop()
		}
		return nil
	}
	if g == nil {
		return nil
	}
	st, err := g.finish(ctx)
	if err != nil {
		if !errors.Is(err, errStageDropped) {
			w.n.m.log.Debug("files mount: staging while written failed; committing from the temp file", "err", err)
		}
		return nil
	}
	return st
}

// sumOf returns the hex SHA-256 of the first size bytes of f ("" on error).
func sumOf(f *os.File, size int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

func toErrno(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

func callerPid(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Pid
	}
	return 0
}

// pfExiting is the kernel's PF_EXITING task flag (set once do_exit began).
const pfExiting = 0x4

// killed reports whether the caller is a process exiting because of a
// signal: the kernel closes its files in do_exit after it set PF_EXITING
// and the exit code (/proc/PID/stat fields 9 and 52). A normal exit
// (exit(2) without close) still commits.
func killed(ctx context.Context) bool {
	pid := callerPid(ctx)
	if pid == 0 {
		return false
	}
	var buf [1024]byte
	n, ok := readProcStat(pid, buf[:])
	return ok && statKilled(string(buf[:n]))
}

// readProcStat reads /proc/PID/stat into buf with three system calls.
// Every close of a written file asks, and os.ReadFile made twice as many
// (an fstat, and registering the file with Go's poller): 6 % of a
// leader's CPU under a stream of small files. ok is false when the file
// cannot be read or does not fit.
func readProcStat(pid uint32, buf []byte) (n int, ok bool) {
	fd, err := unix.Open("/proc/"+strconv.FormatUint(uint64(pid), 10)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, false
		case m == 0:
			return n, true
		}
		n += m
	}
	return 0, false
}

// statKilled reads a /proc/PID/stat line: PF_EXITING set and an exit code
// that names a signal.
func statKilled(s string) bool {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 50 {
		return false
	}
	flags, err1 := strconv.ParseUint(f[6], 10, 64)
	code, err2 := strconv.ParseInt(f[49], 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	return flags&pfExiting != 0 && code&0x7f != 0
}

//go:build linux

package mount

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cohortserver/cohort/files"
)

// Mount is the shared files tree mounted as a FUSE file system.
type Mount struct {
	cfg   Config
	log   *slog.Logger
	store *files.Store
	root  *dirNode
	uid   uint32
	gid   uint32
	start time.Time
	// temps hands write handles their temp files (in TempDir).
	temps tempPool
	// life ends at Close; the stagers of open handles stop with it.
	life context.Context
	// pt: read handles of large files may be passthrough (passthrough.go).
	pt               atomic.Bool
	ptOpens, ptSwaps atomic.Uint64
	// retries are the callers told ESTALE, whose open the kernel retries
	// (passthrough.go).
	retries retries

	mu      sync.Mutex
	server  *fuse.Server
	err     error
	closed  bool
	cancel  context.CancelFunc
	watchWG sync.WaitGroup
}

// New returns a Mount. It does no I/O.
func New(cfg Config) (*Mount, error) {
	if cfg.Dir == "" || cfg.Store == nil || cfg.TempDir == "" {
		return nil, errors.New("files mount: Dir, Store and TempDir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 15 * time.Second
	}
	if cfg.CacheTimeout <= 0 {
		cfg.CacheTimeout = time.Second
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("--files-mount %s: %w", cfg.Dir, err)
	}
	cfg.Dir = dir
	m := &Mount{cfg: cfg, log: cfg.Logger.With("component", "files-mount"), store: cfg.Store,
		uid: uint32(os.Getuid()), gid: uint32(os.Getgid())}
	m.root = &dirNode{m: m}
	m.temps.dir = cfg.TempDir
	return m, nil
}

// SetCommitTimeout changes Config.CommitTimeout; call it before Start
// (tests of quorum loss).
func (m *Mount) SetCommitTimeout(d time.Duration) { m.cfg.CommitTimeout = d }

// SetCacheTimeout changes Config.CacheTimeout; call it before Start
// (tests of the invalidation: with an hour, only it refreshes the kernel).
func (m *Mount) SetCacheTimeout(d time.Duration) { m.cfg.CacheTimeout = d }

// Dir is the mount point.
func (m *Mount) Dir() string { return m.cfg.Dir }

// Prepare checks that FUSE is usable, clears a stale mount left at Dir by
// a killed process, creates Dir and empties TempDir. It fails with a
// message naming what to do when /dev/fuse is missing.
func (m *Mount) Prepare() error {
	if err := Available(); err != nil {
		return err
	}
	if err := ClearStale(m.cfg.Dir, m.log); err != nil {
		return err
	}
	if err := os.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("--files-mount %s: %w", m.cfg.Dir, err)
	}
	if err := os.RemoveAll(m.cfg.TempDir); err != nil {
		return fmt.Errorf("files mount: empty %s: %w", m.cfg.TempDir, err)
	}
	if err := os.MkdirAll(m.cfg.TempDir, 0o700); err != nil {
		return fmt.Errorf("files mount: %w", err)
	}
	return nil
}

// Available reports whether this process can mount FUSE file systems; the
// error says what is missing and how to provide it.
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("%w: /dev/fuse is missing (%w); --files-mount needs the kernel's FUSE device: on a host load it (modprobe fuse) and install fuse3; in Docker run the container with --device /dev/fuse --cap-add SYS_ADMIN (some hosts also need --security-opt apparmor:unconfined)", ErrNoFUSE, err)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return fmt.Errorf("%w: not running as root and fusermount3 is not on PATH; install fuse3 or run cohort as root", ErrNoFUSE)
		}
	}
	return nil
}

// Start mounts the tree at Dir (call Prepare first) and starts following
// the changes applied on this node to invalidate the kernel's caches.
func (m *Mount) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return files.ErrClosed
	}
	if m.server != nil {
		return nil
	}
	m.start = time.Now()
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	m.life = wctx
	changes, err := m.store.Watch(wctx, "")
	if err != nil {
		cancel()
		return fmt.Errorf("files mount: watch changes: %w", err)
	}
	root := os.Geteuid() == 0
	zero := time.Duration(0)
	cache := m.cfg.CacheTimeout
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:      fsName,
			Name:        fsName,
			DirectMount: root,
			// Any local user may use the mount, as with a shared NFS
			// directory; permission bits are shown, not enforced
			// (DESIGN.md).
			AllowOther: root,
			// Requests (READ and WRITE) of at most maxRequest: a READ
			// reply (header, data and the page go-fuse adds) then fits in
			// one pipe of the default /proc/sys/fs/pipe-max-size (1 MiB),
			// so go-fuse splices it from the blob; a larger reply would be
			// copied through this process instead.
			MaxWrite:      maxRequest,
			MaxReadAhead:  readahead,
			DisableXAttrs: true,
			// open(O_TRUNC) arrives as one OPEN, so a truncating writer
			// never publishes an empty file before its close.
			// A write handle bypasses the page cache (FOPEN_DIRECT_IO,
			// pagecache.go); without DIRECT_IO_ALLOW_MMAP the kernel
			// would refuse a shared mapping of it (ENODEV).
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		},
		EntryTimeout:    &cache,
		AttrTimeout:     &cache,
		NegativeTimeout: &zero,
		UID:             m.uid,
		GID:             m.gid,
	}
	server, err := fs.Mount(m.cfg.Dir, m.root, opts)
	if err != nil {
		cancel()
		m.err = fmt.Errorf("--files-mount %s: mount: %w", m.cfg.Dir, err)
		if root {
			// go-fuse tried the mount(2) call, then fusermount; the
			// second error hides the first, whose usual cause is this.
			m.err = fmt.Errorf("%w (as root cohort mounts directly, which needs CAP_SYS_ADMIN: in Docker run the container with --cap-add SYS_ADMIN --device /dev/fuse)", m.err)
		}
		return m.err
	}
	m.server, m.err = server, nil
	m.pt.Store(!m.cfg.NoPassthrough && probePassthrough(server, m.cfg.TempDir, m.log))
	raiseReadahead(m.cfg.Dir, m.log)
	m.watchWG.Add(1)
	go func() {
		defer m.watchWG.Done()
		m.invalidateLoop(changes)
	}()
	m.log.Info("shared files mounted", "dir", m.cfg.Dir)
	return nil
}

// maxRequest is the largest READ or WRITE request the kernel sends: 1 MiB
// less two pages.
const maxRequest = 1<<20 - 8<<10

// readahead is how far ahead of a sequential reader the kernel asks.
const readahead = 1 << 20

// raiseReadahead sets the mount's readahead window to readahead through
// sysfs (/sys/class/bdi/MAJOR:MINOR/read_ahead_kb): FUSE starts every
// mount at 128 KiB whatever max_readahead says, and a sequential reader
// then waits for one 128 KiB round trip through this process after
// another. Only root may write there; elsewhere it stays at 128 KiB.
func raiseReadahead(dir string, log *slog.Logger) {
	if os.Geteuid() != 0 {
		return
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		log.Debug("files mount: readahead left at the default", "err", err)
		return
	}
	dev := uint64(st.Dev)
	major, minor := (dev>>8)&0xfff|(dev>>32)&^0xfff, dev&0xff|(dev>>12)&^0xff
	f := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	if err := os.WriteFile(f, []byte(strconv.Itoa(readahead>>10)), 0o644); err != nil {
		log.Debug("files mount: readahead left at the default", "file", f, "err", err)
	}
}

// Fail records err as the reason the mount is not there (Status, ready).
func (m *Mount) Fail(err error) {
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
}

// Status reports whether the tree is mounted.
func (m *Mount) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Dir: m.cfg.Dir, Mounted: m.server != nil, Passthrough: m.pt.Load(),
		PassthroughOpens: m.ptOpens.Load(), InodeSwaps: m.ptSwaps.Load()}
	st.ApplyLease, st.LeaseHolders = m.store.LeaseStatus()
	if m.err != nil {
		st.Error = m.err.Error()
	}
	return st
}

// Ready returns nil once the tree is mounted, else why not.
func (m *Mount) Ready() error {
	st := m.Status()
	switch {
	case st.Mounted:
		return nil
	case st.Error != "":
		return fmt.Errorf("files mount %s: %s", st.Dir, st.Error)
	default:
		return fmt.Errorf("files mount %s: not mounted yet (waiting until the node caught up)", st.Dir)
	}
}

// Close unmounts the tree (lazily when a process still uses it, so
// shutdown never hangs) and waits for the server. It is idempotent.
func (m *Mount) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	server, cancel := m.server, m.cancel
	m.server = nil
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	var err error
	if server != nil {
		if uerr := server.Unmount(); uerr != nil {
			m.log.Warn("files mount busy; detaching it lazily", "dir", m.cfg.Dir, "err", uerr)
			if derr := detach(m.cfg.Dir); derr != nil {
				err = fmt.Errorf("unmount %s: %w", m.cfg.Dir, errors.Join(uerr, derr))
			}
		}
		server.Wait()
		m.log.Info("shared files unmounted", "dir", m.cfg.Dir)
	}
	m.watchWG.Wait()
	m.temps.close()
	return err
}

// ClearStale detaches a cohort FUSE mount left at dir by a process that
// was killed (its mount point answers ENOTCONN). Another file system
// mounted there is an error (ErrBusy).
func ClearStale(dir string, log *slog.Logger) error {
	fstype, ok, err := mountedAt(dir)
	if err != nil || !ok {
		return err
	}
	if fstype != "fuse."+fsName && fstype != "fuse" {
		return fmt.Errorf("%w: --files-mount %s already has a %s file system mounted; choose an empty directory", ErrBusy, dir, fstype)
	}
	log.Warn("clearing a stale files mount left by an earlier process", "dir", dir)
	if err := detach(dir); err != nil {
		return fmt.Errorf("--files-mount %s: clear the stale mount: %w; run fusermount3 -u -z %s", dir, err, dir)
	}
	return nil
}

// detach unmounts dir lazily: umount2(MNT_DETACH) as root, else
// fusermount3 -u -z.
func detach(dir string) error {
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("umount2 %s: %w", dir, err)
		}
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mountedAt reports the file system type mounted at dir, if any, from
// /proc/self/mountinfo.
func mountedAt(dir string) (string, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	found, fstype := false, ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		for i := 5; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				found, fstype = true, fields[i+1] // the last one is on top
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, fmt.Errorf("read mount table: %w", err)
	}
	return fstype, found, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for a space) of a
// mountinfo field.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

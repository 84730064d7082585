package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// copyBuf is the size of every streaming buffer: memory per transfer is
// bounded by it, whatever the file size.
const copyBuf = 256 << 10

// blobStore keeps content-addressed blobs on the local disk:
// dir/blobs/ab/abcdef... (hex SHA-256), temp files in dir/tmp, corrupt
// blobs moved aside to dir/quarantine.
type blobStore struct {
	dir  string
	bufs sync.Pool
	dirs *dirSyncer
	made sync.Map // shard dirs known to exist
	good goodBlobs
}

func newBlobStore(dir string) *blobStore {
	b := &blobStore{dir: dir, dirs: newDirSyncer()}
	b.bufs.New = func() any { p := make([]byte, copyBuf); return &p }
	return b
}

func (b *blobStore) open() error {
	for _, d := range []string{"blobs", "tmp", "quarantine"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o750); err != nil {
			return fmt.Errorf("create blob store: %w", err)
		}
	}
	return nil
}

func validSum(sum string) bool {
	if len(sum) != 64 {
		return false
	}
	_, err := hex.DecodeString(sum)
	return err == nil && strings.ToLower(sum) == sum
}

func (b *blobStore) path(sum string) string {
	return filepath.Join(b.dir, "blobs", sum[:2], sum)
}

func (b *blobStore) has(sum string) bool {
	_, err := os.Stat(b.path(sum))
	return err == nil
}

func (b *blobStore) openBlob(sum string) (*os.File, error) {
	f, err := os.Open(b.path(sum))
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", sum[:12], err)
	}
	return f, nil
}

// ingestResult is what ingest stored.
type ingestResult struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// ingestOpts says how ingest checks and names what it receives.
type ingestOpts struct {
	// limit > 0 refuses content over limit bytes (ErrFileTooLarge).
	limit int64
	// expect, when set, refuses content with another SHA-256 (ErrCorrupt).
	expect string
	// declared, when set, is asked once the stream has ended for the
	// SHA-256 and CRC-32C its sender computed over it. ingest then checks
	// the transfer with the CRC (hardware, some fifteen times cheaper than
	// SHA-256 here) and names the blob by the declared SHA-256 instead of
	// hashing the content again: the sender is an authenticated node that
	// hashed exactly the bytes it sent. The scrubber and every fetch still
	// verify the SHA-256 later.
	declared func() (sum string, crc uint32, err error)
	// complete, when set, is called once the content is all read and
	// named, before the fsync, so that peers copying the same stream can
	// end their copies while this one is made durable.
	complete func(sum string)
}

// castagnoli is the CRC-32C table; hash/crc32 uses the CPU's instruction
// for it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ingest streams r into a temp file while checking it (see ingestOpts),
// fsyncs it and renames it into place under its hash. Nothing but the temp
// file is touched before the content is complete and durable.
func (b *blobStore) ingest(ctx context.Context, r io.Reader, o ingestOpts) (res ingestResult, err error) {
	tmp, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "in-*")
	if err != nil {
		return res, fmt.Errorf("create temp file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var h hash.Hash
	if o.declared != nil && o.expect == "" {
		h = crc32.New(castagnoli)
	} else {
		o.declared = nil
		h = sha256.New()
	}
	src := r
	if o.limit > 0 {
		src = io.LimitReader(r, o.limit+1)
	}
	bp := b.bufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.MultiWriter(&writeback{f: tmp}, h), ctxReader{ctx, src}, *bp)
	b.bufs.Put(bp)
	if err != nil {
		return res, fmt.Errorf("receive content: %w", err)
	}
	if o.limit > 0 && n > o.limit {
		return res, fmt.Errorf("%w: more than %d bytes (--files-max-file-bytes)", ErrFileTooLarge, o.limit)
	}
	var sum string
	if o.declared != nil {
		if sum, err = checkDeclared(h.(hash.Hash32).Sum32(), o.declared); err != nil {
			return res, err
		}
	} else {
		sum = hex.EncodeToString(h.Sum(nil))
	}
	if o.expect != "" && sum != o.expect {
		return res, fmt.Errorf("%w: received %s, expected %s", ErrCorrupt, sum[:12], o.expect[:min(12, len(o.expect))])
	}
	if o.complete != nil {
		o.complete(sum)
	}
	if err := tmp.Sync(); err != nil {
		return res, fmt.Errorf("fsync temp file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return res, fmt.Errorf("close temp file: %w", err)
	}
	dst := b.path(sum)
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return res, fmt.Errorf("create blob dir: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return res, fmt.Errorf("publish blob: %w", err)
	}
	// Stamped after the rename, which sets the change time.
	b.good.markPath(sum, dst, n)
	if err := b.dirs.sync(filepath.Dir(dst)); err != nil {
		return res, fmt.Errorf("fsync blob dir: %w", err)
	}
	return ingestResult{SHA256: sum, Size: n}, nil
}

// checkDeclared compares the CRC-32C of what arrived with the one its
// sender declared and returns the sender's SHA-256.
func checkDeclared(got uint32, declared func() (string, uint32, error)) (string, error) {
	sum, want, err := declared()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if !validSum(sum) {
		return "", fmt.Errorf("%w: the sender declared no valid sha-256 (%q)", ErrCorrupt, sum)
	}
	if got != want {
		return "", fmt.Errorf("%w: damaged in transfer: crc32c %08x, sender's %08x", ErrCorrupt, got, want)
	}
	return sum, nil
}

// shard makes sure the directory of blob sum and the temp directory
// exist (once per shard).
func (b *blobStore) shard(sum string) error {
	if _, made := b.made.Load(sum[:2]); made {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(b.path(sum)), 0o750); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(b.dir, "tmp"), 0o750); err != nil {
		return err
	}
	b.made.Store(sum[:2], true)
	return nil
}

// syncAll fsyncs the given blobs (those still present) and their
// directories.
func (b *blobStore) syncAll(sums []string) error {
	dirs := make(map[string]bool)
	for _, sum := range sums {
		f, err := os.Open(b.path(sum))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync blob %s: %w", sum[:12], err)
		}
		dirs[filepath.Dir(b.path(sum))] = true
	}
	for d := range dirs {
		if err := fsyncDir(d); err != nil {
			return fmt.Errorf("fsync %s: %w", d, err)
		}
	}
	return nil
}

// verify re-hashes blob sum, reading at most rate bytes per second when
// rate > 0. It returns ErrCorrupt on a mismatch.
func (b *blobStore) verify(ctx context.Context, sum string, rate int64) (int64, error) {
	f, err := b.openBlob(sum)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	before, stamped := stampOf(f)
	h := sha256.New()
	bp := b.bufs.Get().(*[]byte)
	defer b.bufs.Put(bp)
	var r io.Reader = f
	if rate > 0 {
		r = &throttled{r: f, rate: rate, start: time.Now()}
	}
	n, err := io.CopyBuffer(h, ctxReader{ctx, r}, *bp)
	if err != nil {
		return n, fmt.Errorf("read blob %s: %w", sum[:12], err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		b.good.forget(sum)
		return n, fmt.Errorf("%w: blob %s hashes to %s", ErrCorrupt, sum[:12], got[:12])
	}
	if stamped {
		// As it was before the hash: a change during it shows later.
		b.good.mark(sum, before)
	}
	return n, nil
}

// quarantine moves a corrupt blob aside (kept for inspection until the
// garbage collector's grace period ends).
func (b *blobStore) quarantine(sum string) error {
	b.good.forget(sum)
	dst := filepath.Join(b.dir, "quarantine", fmt.Sprintf("%s.%d", sum, time.Now().UnixNano()))
	if err := os.Rename(b.path(sum), dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("quarantine blob %s: %w", sum[:12], err)
	}
	return nil
}

// remove deletes a blob.
func (b *blobStore) remove(sum string) error {
	b.good.forget(sum)
	if err := os.Remove(b.path(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", sum[:12], err)
	}
	return nil
}

// blobEntry is a stored blob seen by walk.
type blobEntry struct {
	sum     string
	size    int64
	modTime time.Time
}

// walk lists the blobs on disk.
func (b *blobStore) walk(fn func(blobEntry)) error {
	root := filepath.Join(b.dir, "blobs")
	shards, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, sh := range shards {
		ents, err := os.ReadDir(filepath.Join(root, sh.Name()))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !validSum(e.Name()) {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			fn(blobEntry{sum: e.Name(), size: fi.Size(), modTime: fi.ModTime()})
		}
	}
	return nil
}

// sweepDir removes the files of dir (tmp, quarantine) older than cutoff.
func (b *blobStore) sweepDir(name string, cutoff time.Time) int {
	dir := filepath.Join(b.dir, name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(dir, e.Name())) == nil {
			n++
		}
	}
	return n
}

// writebackEvery is how much a large write accumulates before its
// writeback to disk is started (see startWriteback).
const writebackEvery = 8 << 20

// writeback writes to f and starts the disk writeback of every full
// writebackEvery bytes.
type writeback struct {
	f       *os.File
	off     int64 // bytes written
	flushed int64 // writeback started up to here
}

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= writebackEvery {
		startWriteback(w.f, w.flushed, w.off-w.flushed)
		w.flushed = w.off
	}
	return n, err
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// throttled paces reads to rate bytes per second.
type throttled struct {
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
}

func (t *throttled) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.n += int64(n)
	due := t.start.Add(time.Duration(float64(t.n) / float64(t.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		time.Sleep(d) // pacing, not waiting for a state
	}
	return n, err
}

// dirSyncer coalesces directory fsyncs (group commit): a caller waits for a
// sync of its directory that started after its rename, and one fsync serves
// every rename made before it started.
type dirSyncer struct {
	mu   sync.Mutex
	dirs map[string]*dirSync
}

type dirSync struct {
	running bool
	pending *syncRound // round that the next fsync will serve
}

type syncRound struct {
	done chan struct{}
	err  error
}

func newDirSyncer() *dirSyncer { return &dirSyncer{dirs: make(map[string]*dirSync)} }

func (d *dirSyncer) sync(dir string) error {
	d.mu.Lock()
	ds := d.dirs[dir]
	if ds == nil {
		ds = &dirSync{}
		d.dirs[dir] = ds
	}
	if ds.pending == nil {
		ds.pending = &syncRound{done: make(chan struct{})}
	}
	round := ds.pending
	if !ds.running {
		ds.running = true
		go d.run(dir, ds)
	}
	d.mu.Unlock()
	<-round.done
	return round.err
}

func (d *dirSyncer) run(dir string, ds *dirSync) {
	for {
		d.mu.Lock()
		round := ds.pending
		ds.pending = nil
		if round == nil {
			ds.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		round.err = fsyncDir(dir)
		close(round.done)
	}
}

func fsyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

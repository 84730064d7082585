package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// Log is what the store needs from the Raft cluster member.
type Log interface {
	Register(name string, sm raft.StateMachine, types ...string) error
	Apply(ctx context.Context, typ string, payload []byte) (raft.Result, error)
	WaitApplied(ctx context.Context, index uint64) error
	CatchUp(ctx context.Context, index, term uint64) error
	LeaderCommitIndex(ctx context.Context) (index, term uint64, err error)
	HandleLeaderCall(name string, fn raft.LeaderCallFunc)
	CallLeader(ctx context.Context, name string, payload []byte) ([]byte, error)
	Settle(ctx context.Context) error
	LeaseCommands(types ...string)
	LeaseHeld() bool
	LeaseStatus() (held bool, holders int)
	HandleInternal(pattern string, h http.Handler)
	Client() *http.Client
	Servers() ([]raft.Server, error)
	IsLeader() bool
	Leader() (id, addr string)
	Info() raft.Info
}

// Config configures a Store.
type Config struct {
	// NodeID is this node's id. Required.
	NodeID string
	// Dir holds the blobs (Dir/blobs), temp files and quarantine. Required.
	Dir string
	// Log is the Raft cluster member. Required.
	Log Log
	// Healthy reports whether a peer answers; writes do not wait for
	// unhealthy peers. If nil, every peer is tried.
	Healthy func(id string) bool
	// Logger receives the store's logs. If nil, logs are discarded.
	Logger *slog.Logger

	// MaxBytes bounds the total size of the live files; 0 means no limit.
	MaxBytes int64
	// MaxFileBytes bounds one file; 0 means no limit.
	MaxFileBytes int64
	// MirrorDir, when set, is kept as a read-only copy of the tree.
	MirrorDir string
	// GCGrace is how long an unreferenced blob, temp file or quarantined
	// blob stays before it is removed. If 0, one hour.
	GCGrace time.Duration
	// LowDiskBytes is the free space below which collection turns
	// emergency: unreferenced blobs no write in flight holds go once
	// older than EmergencyGrace, whatever GCGrace says, and the collector
	// checks every few seconds. If 0, 64 MiB; negative disables.
	LowDiskBytes int64
	// ScrubInterval is the pause between two scrubs of every local blob;
	// 0 disables the background scrubber (ScrubNow still works).
	ScrubInterval time.Duration
	// ScrubRate bounds how fast the scrubber reads, in bytes per second;
	// 0 means unthrottled.
	ScrubRate int64
	// SyncWorkers is how many blobs catch-up fetches at once. If 0, 4.
	SyncWorkers int
	// VerifyBelow is the size up to which Open re-hashes a blob before
	// returning it (so even range reads of small files are verified).
	// If 0, 4 MiB; negative disables.
	VerifyBelow int64
}

// Store is this node's view of the shared files: the replicated manifest,
// the local blobs, and the workers that keep them in step.
type Store struct {
	cfg Config
	log *slog.Logger
	// httpExists counts lookups a follower asked over HTTP (test seam).
	httpExists atomic.Int64
	state      *state
	blobs      *blobStore
	// inline writes the small files committed through the log.
	inline *inlineQueue

	mu       sync.Mutex
	fetching map[string]*fetchCall
	watchers map[*watcher]struct{}
	pending  map[string]int64 // blobs named by recent commits, for the syncer
	held     map[string]int   // blobs of writes through this node not yet committed
	full     bool             // the syncer should compare the whole manifest
	repair   map[string]bool  // blobs reported corrupt
	progress SyncStatus
	scrub    ScrubStatus
	started  bool
	closed   bool

	syncKick   chan struct{}
	mirrorKick chan struct{}
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// WriteOptions adjust a write. The zero value writes unconditionally with
// mode 0644.
type WriteOptions struct {
	// IfVersion, when set, makes the write a compare-and-set: it succeeds
	// only if the file's current version is *IfVersion (0: the file must
	// not exist).
	IfVersion *uint64
	// Mode is the file's permission bits; 0 means 0644.
	Mode fs.FileMode
	// Size, when known (> 0 or with SizeKnown), lets the store refuse a
	// file over the limits before reading it.
	Size      int64
	SizeKnown bool
	// ModTime, when not zero, is recorded as the file's modification time
	// instead of the commit time (utimens through the mount).
	ModTime time.Time
	// NoBarrier skips the read barrier before a conditional write: the
	// precheck then uses this node's applied state, which may refuse a
	// valid write with ErrVersionMismatch; for callers that catch up and
	// retry on it (the mount), saving a round trip to the leader.
	NoBarrier bool
}

// Version returns a pointer to v, for WriteOptions.IfVersion.
func Version(v uint64) *uint64 { return &v }

// New returns a Store and registers its state machine and node-to-node
// handlers. It does no I/O.
func New(cfg Config) (*Store, error) {
	if cfg.NodeID == "" || cfg.Dir == "" || cfg.Log == nil {
		return nil, errors.New("files: NodeID, Dir and Log are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GCGrace <= 0 {
		cfg.GCGrace = time.Hour
	}
	if cfg.LowDiskBytes == 0 {
		cfg.LowDiskBytes = 64 << 20
	}
	if cfg.SyncWorkers <= 0 {
		cfg.SyncWorkers = 4
	}
	if cfg.VerifyBelow == 0 {
		cfg.VerifyBelow = 4 << 20
	}
	s := &Store{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "files"),
		state:      newState(),
		blobs:      newBlobStore(cfg.Dir),
		fetching:   make(map[string]*fetchCall),
		watchers:   make(map[*watcher]struct{}),
		pending:    make(map[string]int64),
		held:       make(map[string]int),
		repair:     make(map[string]bool),
		full:       true,
		syncKick:   make(chan struct{}, 1),
		mirrorKick: make(chan struct{}, 1),
	}
	s.blobs.good.min = cfg.VerifyBelow
	s.state.notify = s.changed
	s.inline = newInlineQueue(s.blobs)
	s.inline.written = s.kickMirror
	s.state.inline = s.inline
	if err := cfg.Log.Register(Section, s.state, cmdPut, cmdDelete, cmdRename); err != nil {
		return nil, fmt.Errorf("register files state machine: %w", err)
	}
	// A follower holding an apply lease answers lookups, opens and reads
	// from its own state (Current), without asking the leader.
	cfg.Log.LeaseCommands(cmdPut, cmdDelete, cmdRename)
	s.routesInternal()
	return s, nil
}

// Start creates the blob store and starts catch-up, the garbage collector,
// the scrubber and the mirror. The workers stop at Close or when ctx ends.
func (s *Store) Start(ctx context.Context) error {
	if err := s.blobs.open(); err != nil {
		return err
	}
	if s.cfg.MirrorDir != "" {
		if err := os.MkdirAll(s.cfg.MirrorDir, 0o755); err != nil {
			return fmt.Errorf("--files-mirror-dir: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.started = true
	s.cancel = cancel
	s.mu.Unlock()
	s.kickSync(true)
	s.goWorker(func() { s.inline.run(ctx) })
	s.goWorker(func() { s.syncLoop(ctx) })
	s.goWorker(func() { s.gcLoop(ctx) })
	if s.cfg.ScrubInterval > 0 {
		s.goWorker(func() { s.scrubLoop(ctx) })
	}
	if s.cfg.MirrorDir != "" {
		s.kickMirror()
		s.goWorker(func() { s.mirrorLoop(ctx) })
	}
	return nil
}

func (s *Store) goWorker(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// Close stops the workers and waits for them. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel := s.cancel
	ws := s.watchers
	s.watchers = map[*watcher]struct{}{}
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	for w := range ws {
		w.stop()
	}
	s.wg.Wait()
	return nil
}

// changed is called by the state machine after every change.
func (s *Store) changed(ev Event) {
	s.mu.Lock()
	if ev.Reset {
		s.full = true
	} else if !ev.Info.Deleted {
		s.pending[ev.Info.SHA256] = ev.Info.Size
	}
	for w := range s.watchers {
		w.offer(ev)
	}
	s.mu.Unlock()
	s.kickSync(false)
	s.kickMirror()
}

func (s *Store) kickSync(full bool) {
	if full {
		s.mu.Lock()
		s.full = true
		s.mu.Unlock()
	}
	select {
	case s.syncKick <- struct{}{}:
	default:
	}
}

func (s *Store) kickMirror() {
	select {
	case s.mirrorKick <- struct{}{}:
	default:
	}
}

// Create writes the content of r to path, replacing any current file, and
// returns once the content is durable on a quorum of nodes and the new
// metadata is committed. Memory use does not depend on the file size.
func (s *Store) Create(ctx context.Context, path string, r io.Reader, opts *WriteOptions) (Info, error) {
	p, o, err := s.prepare(ctx, path, opts)
	if err != nil {
		return Info{}, err
	}
	st, err := s.Stage(ctx, r, &o)
	if err != nil {
		return Info{}, err
	}
	defer st.Release()
	return s.commitStaged(ctx, p, st, o)
}

// Staged is content stored ahead of its commit (Stage): a blob durable on
// a quorum, or, up to InlineMax, bytes held here to travel in the log
// entry. Release it once committed or given up.
type Staged struct {
	sum     string
	size    int64
	holders []string
	data    []byte // the content when inline
	inline  bool
	release func()
}

// SHA256 is the content's hex SHA-256.
func (st *Staged) SHA256() string { return st.sum }

// Size is the content's length.
func (st *Staged) Size() int64 { return st.size }

// Release lets the blob be collected if no commit names it. It is
// idempotent.
func (st *Staged) Release() {
	if st.release != nil {
		st.release()
		st.release = nil
	}
}

// Stage reads r to its end and makes its content durable on a quorum as a
// blob (or keeps it, when small enough to travel in the log entry), without
// committing it anywhere: CreateStaged does. A writer that learns the
// content while it arrives (the mount, for a file written in order) stages
// it meanwhile, so its commit costs a log entry at close. opts gives the
// size when known, checked against the limits first.
func (s *Store) Stage(ctx context.Context, r io.Reader, opts *WriteOptions) (*Staged, error) {
	var o WriteOptions
	if opts != nil {
		o = *opts
	}
	size := int64(-1)
	if o.SizeKnown || o.Size > 0 {
		size = o.Size
	}
	if err := s.checkSpace(size); err != nil {
		return nil, err
	}
	// A small file travels in the Raft log itself: one replicated,
	// batched fsync instead of a blob push and several fsyncs per copy.
	head := make([]byte, 0, min(InlineMax+1, max(o.Size+1, 512)))
	head, err := readUpTo(r, head, InlineMax+1)
	if err != nil {
		return nil, fmt.Errorf("read content: %w", err)
	}
	if len(head) <= InlineMax {
		if s.cfg.MaxFileBytes > 0 && int64(len(head)) > s.cfg.MaxFileBytes {
			return nil, fmt.Errorf("%w: %d bytes, over the %d allowed per file (--files-max-file-bytes)", ErrFileTooLarge, len(head), s.cfg.MaxFileBytes)
		}
		sum := sha256.Sum256(head)
		return &Staged{sum: hex.EncodeToString(sum[:]), size: int64(len(head)), data: head, inline: true}, nil
	}
	res, holders, err := s.store(ctx, io.MultiReader(bytes.NewReader(head), r), o)
	if err != nil {
		return nil, err
	}
	return &Staged{sum: res.SHA256, size: res.Size, holders: holders, release: s.hold(res.SHA256)}, nil
}

// CreateStaged commits content staged with Stage at path, as Create
// commits the content it read: the same checks, the same compare-and-set.
// The caller still releases st.
func (s *Store) CreateStaged(ctx context.Context, path string, st *Staged, opts *WriteOptions) (Info, error) {
	o := WriteOptions{}
	if opts != nil {
		o = *opts
	}
	o.Size, o.SizeKnown = st.size, true
	p, o, err := s.prepare(ctx, path, &o)
	if err != nil {
		return Info{}, err
	}
	return s.commitStaged(ctx, p, st, o)
}

// prepare cleans path and refuses early, before any byte is read, what
// would surely be refused at commit (after a read barrier when the answer
// depends on the current state, unless o.NoBarrier).
func (s *Store) prepare(ctx context.Context, path string, opts *WriteOptions) (string, WriteOptions, error) {
	var o WriteOptions
	if opts != nil {
		o = *opts
	}
	p, err := CleanPath(path)
	if err != nil {
		return "", o, err
	}
	if (o.IfVersion != nil || s.cfg.MaxBytes > 0) && !o.NoBarrier {
		s.barrier(ctx) // a stale local view must not refuse a valid write
	}
	if err := s.precheck(p, o); err != nil {
		return "", o, err
	}
	return p, o, nil
}

// commitStaged commits st at the clean path p.
func (s *Store) commitStaged(ctx context.Context, p string, st *Staged, o WriteOptions) (Info, error) {
	mode := o.Mode.Perm()
	if mode == 0 {
		mode = 0o644
	}
	cmd := putCmd{Path: p, Mode: uint32(mode), IfVersion: o.IfVersion, MaxBytes: s.cfg.MaxBytes,
		SHA256: st.sum, Size: st.size}
	if !o.ModTime.IsZero() {
		cmd.MTime = &o.ModTime
	}
	if st.inline {
		cmd.Data, cmd.Inline = st.data, true
	} else {
		cmd.Holders = st.holders
	}
	// No retry when the outcome is unknown: the first attempt may have
	// committed, and a second one landing after another writer's newer put
	// would silently undo it. The caller learns the outcome is unknown.
	return s.apply(ctx, cmdPut, cmd)
}

// InlineMax is the largest file whose content is carried in the Raft log
// entry that commits it (and held in memory while it is written).
const InlineMax = 64 << 10

// readUpTo appends to buf from r until EOF or n bytes.
func readUpTo(r io.Reader, buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// precheck refuses early, before any byte is read, what would surely be
// refused at commit.
func (s *Store) precheck(p string, o WriteOptions) error {
	known := o.SizeKnown || o.Size > 0
	if known && s.cfg.MaxFileBytes > 0 && o.Size > s.cfg.MaxFileBytes {
		return fmt.Errorf("%w: %d bytes, over the %d allowed per file (--files-max-file-bytes)", ErrFileTooLarge, o.Size, s.cfg.MaxFileBytes)
	}
	cur, ok := s.state.get(p)
	if o.IfVersion != nil {
		var have uint64
		if ok && !cur.Deleted {
			have = cur.Version
		}
		if have != *o.IfVersion {
			return fmt.Errorf("%w: %s is at version %d, not %d", ErrVersionMismatch, p, have, *o.IfVersion)
		}
	}
	if known && s.cfg.MaxBytes > 0 {
		_, total, _ := s.state.usage()
		after := total + o.Size
		if ok && !cur.Deleted {
			after -= cur.Size
		}
		if after > s.cfg.MaxBytes {
			return fmt.Errorf("%w: storing %d bytes would bring the shared files to %d bytes, over the %d allowed (--files-max-bytes)", ErrQuotaExceeded, o.Size, after, s.cfg.MaxBytes)
		}
	}
	return nil
}

func (s *Store) apply(ctx context.Context, typ string, cmd any) (Info, error) {
	payload, err := json.Marshal(cmd)
	if err != nil {
		return Info{}, fmt.Errorf("encode %s: %w", typ, err)
	}
	res, err := s.cfg.Log.Apply(ctx, typ, payload)
	if err != nil {
		return Info{}, fromApply(err)
	}
	var in Info
	if err := json.Unmarshal(res.Data, &in); err != nil {
		return Info{}, fmt.Errorf("decode %s result: %w", typ, err)
	}
	return in, nil
}

// Writer returns an io.WriteCloser that stores what is written to it at
// path when closed (Close returns the error of the write, and Info the
// result). Abort discards the content instead.
func (s *Store) Writer(ctx context.Context, path string, opts *WriteOptions) *Writer {
	pr, pw := io.Pipe()
	w := &Writer{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.info, w.err = s.Create(ctx, path, pr, opts)
		pr.CloseWithError(w.err)
	}()
	return w
}

// Writer streams a new file's content; see Store.Writer.
type Writer struct {
	pw   *io.PipeWriter
	done chan struct{}
	info Info
	err  error
}

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) { return w.pw.Write(p) }

// Close ends the content and waits for the commit.
func (w *Writer) Close() error {
	w.pw.Close()
	<-w.done
	return w.err
}

// Abort discards the content: nothing is committed.
func (w *Writer) Abort() {
	w.pw.CloseWithError(errors.New("write aborted"))
	<-w.done
}

// Info is the committed file after a successful Close.
func (w *Writer) Info() Info { return w.info }

// Remove deletes path, leaving a tombstone. opts.IfVersion makes it a
// compare-and-set.
func (s *Store) Remove(ctx context.Context, path string, opts *WriteOptions) (Info, error) {
	p, err := CleanPath(path)
	if err != nil {
		return Info{}, err
	}
	cmd := deleteCmd{Path: p}
	if opts != nil {
		cmd.IfVersion = opts.IfVersion
	}
	return s.apply(ctx, cmdDelete, cmd)
}

// Rename moves from to to (replacing to) in one committed step; from
// becomes a tombstone. opts.IfVersion checks from's version.
func (s *Store) Rename(ctx context.Context, from, to string, opts *WriteOptions) (Info, error) {
	f, err := CleanPath(from)
	if err != nil {
		return Info{}, err
	}
	t, err := CleanPath(to)
	if err != nil {
		return Info{}, err
	}
	cmd := renameCmd{From: f, To: t}
	if opts != nil {
		cmd.IfVersion = opts.IfVersion
	}
	return s.apply(ctx, cmdRename, cmd)
}

// Stat returns the metadata of path. It first catches up with the
// leader's commit index, so a write acknowledged by any node is seen.
func (s *Store) Stat(ctx context.Context, path string) (Info, error) {
	p, err := CleanPath(path)
	if err != nil {
		return Info{}, err
	}
	s.barrier(ctx)
	in, ok := s.state.get(p)
	if !ok || in.Deleted {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	return in, nil
}

// List returns the live files whose path starts with prefix, sorted.
func (s *Store) List(ctx context.Context, prefix string) ([]Info, error) {
	p, err := CleanPrefix(prefix)
	if err != nil {
		return nil, err
	}
	s.barrier(ctx)
	return s.state.list(p, false), nil
}

// ListAll is List including tombstones.
func (s *Store) ListAll(ctx context.Context, prefix string) ([]Info, error) {
	p, err := CleanPrefix(prefix)
	if err != nil {
		return nil, err
	}
	s.barrier(ctx)
	return s.state.list(p, true), nil
}

// Open opens path for reading. The content is read from the local blob;
// when this node lacks it (or its copy is corrupt) it is first fetched
// from a node that has it, verified and kept.
func (s *Store) Open(ctx context.Context, path string) (*File, error) {
	in, err := s.Stat(ctx, path)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if err := s.ensureLocal(ctx, in.SHA256, in.Holders); err != nil {
			return nil, err
		}
		if in.Size <= s.cfg.VerifyBelow {
			if _, err := s.blobs.verify(ctx, in.SHA256, 0); err != nil {
				if errors.Is(err, ErrCorrupt) && attempt == 0 {
					s.log.Error("corrupt blob found on read; fetching a good copy", "path", in.Path, "sha256", in.SHA256, "err", err)
					if qerr := s.blobs.quarantine(in.SHA256); qerr != nil {
						return nil, qerr
					}
					continue
				}
				if !errors.Is(err, fs.ErrNotExist) || attempt > 0 {
					return nil, fmt.Errorf("open %s: %w", in.Path, err)
				}
				continue
			}
		}
		f, err := s.blobs.openBlob(in.SHA256)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && attempt == 0 {
				continue // collected or quarantined meanwhile
			}
			return nil, err
		}
		sum := in.SHA256
		file := newFile(in, f, func() { s.reportCorrupt(sum) })
		file.verified = in.Size <= s.cfg.VerifyBelow
		if !file.verified {
			good, st, ok := s.blobs.good.check(sum, f)
			file.good = good
			if ok && !good {
				file.checked = func() { s.blobs.good.mark(sum, st) }
			}
		}
		return file, nil
	}
}

// ReadFile returns the whole content of path (for small files).
func (s *Store) ReadFile(ctx context.Context, path string) ([]byte, error) {
	f, err := s.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// barrier waits until this node applied the leader's commit index, so a
// read sees every acknowledged write. Without a reachable leader it
// returns at once and the read is served from the local state.
func (s *Store) barrier(ctx context.Context) { _ = s.catchUp(ctx, 2*time.Second) }

// leaderCommitHTTP asks a leader of the previous version for its commit
// index over HTTP.
func (s *Store) leaderCommitHTTP(ctx context.Context, client *http.Client, addr string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+internalCommit, nil)
	if err != nil {
		return 0, fmt.Errorf("read barrier: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		s.log.Debug("read barrier: leader unreachable, reading local state", "err", err)
		return 0, fmt.Errorf("read barrier: leader unreachable: %w", err)
	}
	defer resp.Body.Close()
	var ans struct {
		Index uint64 `json:"index"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ans) != nil {
		return 0, fmt.Errorf("read barrier: leader answered %s", resp.Status)
	}
	return ans.Index, nil
}

// catchUp is the barrier, bounded by limit; the error says why this node
// could not confirm it is current (nil on the leader).
func (s *Store) catchUp(ctx context.Context, limit time.Duration) error {
	if s.Current() {
		return nil
	}
	_, addr := s.cfg.Log.Leader()
	client := s.cfg.Log.Client()
	if addr == "" || client == nil {
		return errors.New("no leader known")
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	idx, term, err := s.cfg.Log.LeaderCommitIndex(ctx)
	switch {
	case errors.Is(err, raft.ErrLeaderCallRefused):
		if idx, err = s.leaderCommitHTTP(ctx, client, addr); err != nil {
			return err
		}
	case err != nil:
		s.log.Debug("read barrier: leader unreachable, reading local state", "err", err)
		return fmt.Errorf("read barrier: leader unreachable: %w", err)
	}
	if err := s.cfg.Log.CatchUp(ctx, idx, term); err != nil {
		s.log.Debug("read barrier: not caught up in time, reading local state", "err", err)
		return fmt.Errorf("read barrier: not caught up in time: %w", err)
	}
	return nil
}

// peer is another node of the cluster.
type peer struct {
	id, addr string
	voter    bool
}

// peers returns the other servers and the write quorum.
func (s *Store) peers() ([]peer, int, error) {
	servers, err := s.cfg.Log.Servers()
	if err != nil {
		return nil, 0, fmt.Errorf("read cluster configuration: %w", err)
	}
	voters := 0
	var out []peer
	for _, sv := range servers {
		if sv.Voter {
			voters++
		}
		if sv.ID != s.cfg.NodeID {
			out = append(out, peer{id: sv.ID, addr: sv.Address, voter: sv.Voter})
		}
	}
	if voters == 0 {
		voters = 1
	}
	return out, voters/2 + 1, nil
}

func (s *Store) healthy(id string) bool {
	return s.cfg.Healthy == nil || s.cfg.Healthy(id)
}

// Usage is the size of the tree.
type Usage struct {
	Files      int   `json:"files"`
	Bytes      int64 `json:"bytes"`
	Tombstones int   `json:"tombstones"`
	MaxBytes   int64 `json:"max_bytes,omitempty"`
}

// Status is this node's view of the shared files.
type Status struct {
	Node  string      `json:"node"`
	Usage Usage       `json:"usage"`
	Sync  SyncStatus  `json:"sync"`
	Scrub ScrubStatus `json:"scrub"`
}

// Status returns the tree's size and the progress of catch-up and scrub.
func (s *Store) Status() Status {
	files, bytes, tombs := s.state.usage()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Node: s.cfg.NodeID, Usage: Usage{Files: files, Bytes: bytes, Tombstones: tombs, MaxBytes: s.cfg.MaxBytes}, Sync: s.progress, Scrub: s.scrub}
	st.Sync.finish()
	return st
}

func containsID(ids []string, id string) bool { return slices.Contains(ids, id) }

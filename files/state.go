package files

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// Command types owned by this package.
const (
	cmdPut    = "files.put"
	cmdDelete = "files.delete"
	cmdRename = "files.rename"
)

// Info is the replicated metadata of one path. A deleted path keeps a
// tombstone (Deleted true, no content) so that a node that was down
// cannot bring the file back.
type Info struct {
	Path    string      `json:"path"`
	Size    int64       `json:"size"`
	SHA256  string      `json:"sha256,omitempty"` // hex; empty on a tombstone
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mtime"`   // the leader's clock at commit
	Version uint64      `json:"version"` // Raft index of the last change; grows with every change
	Writer  string      `json:"writer"`  // node that proposed the last change
	Deleted bool        `json:"deleted,omitempty"`
	// Holders are the nodes that held the content when it was committed.
	Holders []string `json:"holders,omitempty"`
}

// Event is one change of the tree, delivered to watchers in commit order.
type Event struct {
	// Info is the new state of the path (Deleted for a removal).
	Info Info
	// Reset is set, with an empty Info, when the whole tree was replaced
	// from a snapshot; watchers re-read what they care about.
	Reset bool
}

type putCmd struct {
	Path      string   `json:"path"`
	SHA256    string   `json:"sha256"`
	Size      int64    `json:"size"`
	Mode      uint32   `json:"mode"`
	IfVersion *uint64  `json:"if_version,omitempty"`
	Holders   []string `json:"holders,omitempty"`
	MaxBytes  int64    `json:"max_bytes,omitempty"` // the proposer's quota, 0 = none
	// Data is the content of a small file carried in the log itself
	// (see InlineMax); each node writes its blob when it applies.
	Data   []byte `json:"data,omitempty"`
	Inline bool   `json:"inline,omitempty"` // Data holds the content (even when empty)
	// MTime, when set, is the file's modification time chosen by the
	// writer (utimens through the mount); otherwise the commit time.
	MTime *time.Time `json:"set_mtime,omitempty"`
}

type deleteCmd struct {
	Path      string  `json:"path"`
	IfVersion *uint64 `json:"if_version,omitempty"`
}

type renameCmd struct {
	From      string  `json:"from"`
	To        string  `json:"to"`
	IfVersion *uint64 `json:"if_version,omitempty"`
}

// state is the replicated manifest: every path ever written, live or
// tombstone. Info values are never mutated once stored, so snapshots and
// readers may share them.
type state struct {
	mu    sync.RWMutex
	files map[string]*Info
	dirs  map[string]int // live files under each directory path
	refs  map[string]int // live files per blob
	total int64          // bytes of live files

	// notify is called after every change, outside the lock, in commit
	// order (Apply runs on one goroutine).
	notify func(Event)

	// inline receives the content of inline puts; nil in unit tests.
	// Persist makes those blobs durable before Raft may truncate the log
	// entries that carry them.
	inline *inlineQueue
}

var _ raft.StateMachine = (*state)(nil)

func newState() *state {
	return &state{files: make(map[string]*Info), dirs: make(map[string]int), refs: make(map[string]int)}
}

// Apply implements raft.StateMachine.
func (s *state) Apply(e raft.Entry) ([]byte, error) {
	var changed []Info
	var err error
	switch e.Type {
	case cmdPut:
		c, derr := decodePut(e.Payload)
		if derr != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, derr)
		}
		changed, err = s.put(e, c)
	case cmdDelete:
		var c deleteCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		changed, err = s.remove(e, c)
	case cmdRename:
		var c renameCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		changed, err = s.rename(e, c)
	default:
		return nil, fmt.Errorf("files: unknown command %q", e.Type)
	}
	if err != nil {
		return nil, err
	}
	if s.notify != nil {
		for _, in := range changed {
			s.notify(Event{Info: in})
		}
	}
	return json.Marshal(changed[len(changed)-1])
}

func (s *state) put(e raft.Entry, c putCmd) ([]Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := CleanPath(c.Path); err != nil {
		return nil, refuse("files.bad_path", "%q", c.Path)
	}
	cur := s.files[c.Path]
	if err := checkVersion(c.Path, cur, c.IfVersion); err != nil {
		return nil, err
	}
	if err := s.checkTree(c.Path); err != nil {
		return nil, err
	}
	if c.MaxBytes > 0 {
		after := s.total + c.Size
		if cur != nil && !cur.Deleted {
			after -= cur.Size
		}
		if after > c.MaxBytes {
			return nil, refuse("files.quota", "storing %d bytes would bring the shared files to %d bytes, over the %d allowed (--files-max-bytes)", c.Size, after, c.MaxBytes)
		}
	}
	if c.Inline {
		sum := sha256.Sum256(c.Data)
		if int64(len(c.Data)) != c.Size || hex.EncodeToString(sum[:]) != c.SHA256 {
			return nil, fmt.Errorf("%w: inline content of %s does not match its size and sha-256", ErrCorrupt, c.Path)
		}
	}
	in := &Info{
		Path: c.Path, Size: c.Size, SHA256: c.SHA256, Mode: fs.FileMode(c.Mode).Perm(),
		ModTime: e.Time, Version: e.Index, Writer: e.Origin, Holders: c.Holders,
	}
	if c.MTime != nil {
		in.ModTime = *c.MTime
	}
	s.set(in)
	if c.Inline && s.inline != nil {
		s.inline.add(c.SHA256, c.Data)
	}
	return []Info{*in}, nil
}

func (s *state) remove(e raft.Entry, c deleteCmd) ([]Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.files[c.Path]
	if cur == nil || cur.Deleted {
		return nil, refuse("files.not_found", "%s", c.Path)
	}
	if err := checkVersion(c.Path, cur, c.IfVersion); err != nil {
		return nil, err
	}
	in := tombstone(c.Path, e)
	s.set(in)
	return []Info{*in}, nil
}

func (s *state) rename(e raft.Entry, c renameCmd) ([]Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := CleanPath(c.To); err != nil {
		return nil, refuse("files.bad_path", "%q", c.To)
	}
	cur := s.files[c.From]
	if cur == nil || cur.Deleted {
		return nil, refuse("files.not_found", "%s", c.From)
	}
	if err := checkVersion(c.From, cur, c.IfVersion); err != nil {
		return nil, err
	}
	if c.From == c.To {
		return []Info{*cur}, nil
	}
	old := tombstone(c.From, e)
	s.set(old)
	if err := s.checkTree(c.To); err != nil {
		s.set(cur) // undo: Apply must leave no trace of a refused command
		return nil, err
	}
	moved := *cur
	// A rename keeps the file's mtime, as rename(2) does (rsync and tar
	// set it on a temp file before renaming it into place).
	moved.Path, moved.Version, moved.Writer = c.To, e.Index, e.Origin
	s.set(&moved)
	return []Info{*old, moved}, nil
}

func tombstone(p string, e raft.Entry) *Info {
	return &Info{Path: p, ModTime: e.Time, Version: e.Index, Writer: e.Origin, Deleted: true}
}

func checkVersion(p string, cur *Info, want *uint64) error {
	if want == nil {
		return nil
	}
	var have uint64
	if cur != nil && !cur.Deleted {
		have = cur.Version
	}
	if have != *want {
		if *want == 0 {
			return refuse("files.version", "%s already exists at version %d", p, have)
		}
		return refuse("files.version", "%s is at version %d, not %d", p, have, *want)
	}
	return nil
}

// checkTree refuses p when a live file is one of its parent directories or
// when live files sit under p as a directory. Called with mu held.
func (s *state) checkTree(p string) error {
	if s.dirs[p] > 0 {
		return refuse("files.conflict", "%s is a directory holding %d files", p, s.dirs[p])
	}
	for i := strings.IndexByte(p, '/'); i >= 0; i = next(p, i) {
		if f := s.files[p[:i]]; f != nil && !f.Deleted {
			return refuse("files.conflict", "%s is a file, so %s cannot be created under it", p[:i], p)
		}
	}
	return nil
}

func next(p string, i int) int {
	j := strings.IndexByte(p[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// set stores in, keeping the counters. Called with mu held.
func (s *state) set(in *Info) {
	if old := s.files[in.Path]; old != nil && !old.Deleted {
		s.account(old, -1)
	}
	s.files[in.Path] = in
	if !in.Deleted {
		s.account(in, 1)
	}
}

func (s *state) account(in *Info, d int) {
	s.total += int64(d) * in.Size
	s.refs[in.SHA256] += d
	if s.refs[in.SHA256] <= 0 {
		delete(s.refs, in.SHA256)
	}
	p := in.Path
	for i := strings.IndexByte(p, '/'); i >= 0; i = next(p, i) {
		s.dirs[p[:i]] += d
		if s.dirs[p[:i]] <= 0 {
			delete(s.dirs, p[:i])
		}
	}
}

func (s *state) get(p string) (Info, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	in := s.files[p]
	if in == nil {
		return Info{}, false
	}
	return *in, true
}

// list returns the entries under prefix sorted by path; tombstones only
// when withDeleted.
func (s *state) list(prefix string, withDeleted bool) []Info {
	s.mu.RLock()
	out := make([]Info, 0, 16)
	for p, in := range s.files {
		if strings.HasPrefix(p, prefix) && (withDeleted || !in.Deleted) {
			out = append(out, *in)
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// referenced reports whether a live file uses blob sum.
func (s *state) referenced(sum string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.refs[sum] > 0
}

// blobSizes returns every referenced blob and its size.
func (s *state) blobSizes() map[string]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]int64, len(s.refs))
	for _, in := range s.files {
		if !in.Deleted {
			out[in.SHA256] = in.Size
		}
	}
	return out
}

// blobHolders returns, for each blob in want, the holders recorded by a
// live file that uses it (one scan of the manifest).
func (s *state) blobHolders(want map[string]bool) map[string][]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string][]string, len(want))
	for _, in := range s.files {
		if !in.Deleted && want[in.SHA256] && len(in.Holders) > 0 {
			out[in.SHA256] = in.Holders
		}
	}
	return out
}

// holders returns the nodes recorded as holding blob sum.
func (s *state) holders(sum string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, in := range s.files {
		if in.SHA256 == sum && !in.Deleted {
			return in.Holders
		}
	}
	return nil
}

func (s *state) usage() (files int, bytes int64, tombstones int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, in := range s.files {
		if in.Deleted {
			tombstones++
		} else {
			files++
		}
	}
	return files, s.total, tombstones
}

type stateSnap struct {
	files    []*Info
	inline   *inlineQueue
	pending  map[string][]byte
	unsynced []string
}

// Snapshot implements raft.StateMachine: it copies the pointers (the Info
// values are immutable).
func (s *state) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := &stateSnap{files: make([]*Info, 0, len(s.files)), inline: s.inline}
	for _, in := range s.files {
		snap.files = append(snap.files, in)
	}
	if s.inline != nil {
		snap.pending, snap.unsynced = s.inline.snapshot()
	}
	return snap, nil
}

// Persist makes the inline blobs written since the last snapshot durable
// (the log entries that carry them are about to be truncated), then
// writes one JSON object per line.
func (s *stateSnap) Persist(w io.Writer) error {
	if s.inline != nil {
		if err := s.inline.persist(s.pending, s.unsynced); err != nil {
			return fmt.Errorf("persist files: make inline blobs durable: %w", err)
		}
	}
	enc := json.NewEncoder(w)
	for _, in := range s.files {
		if err := enc.Encode(in); err != nil {
			return fmt.Errorf("persist file %s: %w", in.Path, err)
		}
	}
	return nil
}

func (s *stateSnap) Release() {}

// Restore implements raft.StateMachine.
func (s *state) Restore(r io.Reader) error {
	fresh := newState()
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	for {
		var in Info
		if err := dec.Decode(&in); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("restore files manifest: %w", err)
		}
		fresh.set(&in)
	}
	s.mu.Lock()
	s.files, s.dirs, s.refs, s.total = fresh.files, fresh.dirs, fresh.refs, fresh.total
	s.mu.Unlock()
	if s.notify != nil {
		s.notify(Event{Reset: true})
	}
	return nil
}

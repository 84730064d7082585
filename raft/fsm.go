package raft

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	hraft "github.com/hashicorp/raft"
)

// StateMachine is the part of the replicated state that one package owns.
// The router hands it the committed commands of the types it registered and
// asks it for its section of every snapshot.
type StateMachine interface {
	// Apply applies one committed command. It must be deterministic. An
	// application error (a refused command) is returned as error and travels
	// to the proposer inside the result; the log entry stays applied.
	Apply(e Entry) ([]byte, error)
	// Snapshot captures the state cheaply; the returned value is persisted
	// off the apply path.
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with the one read from r. r is empty
	// when the snapshot holds no section for this machine.
	Restore(r io.Reader) error
}

// Snapshot is a point-in-time view of a StateMachine.
type Snapshot interface {
	// Persist writes the view; it may run concurrently with Apply.
	Persist(w io.Writer) error
	// Release frees what the view holds.
	Release()
}

// ApplyError is a command refused by its state machine. It crosses the
// network when a follower forwarded the command, so it carries a code a
// package can map back to its own sentinel errors.
type ApplyError struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
}

// Error returns the message.
func (e *ApplyError) Error() string { return e.Message }

// CodedError is implemented by application errors that want their code to
// survive forwarding.
type CodedError interface {
	error
	ApplyCode() string
}

func toApplyError(err error) *ApplyError {
	if err == nil {
		return nil
	}
	var ae *ApplyError
	if errors.As(err, &ae) {
		return ae
	}
	out := &ApplyError{Message: err.Error()}
	var ce CodedError
	if errors.As(err, &ce) {
		out.Code = ce.ApplyCode()
	}
	return out
}

type applyResult struct {
	data []byte
	err  *ApplyError
	term uint64 // of the entry: a follower checks its own log against it
}

const snapshotMagic = "COHSNAP1"

// router is the hashicorp/raft FSM: it decodes the envelope and hands the
// entry to the machine that registered its type.
type router struct {
	mu       sync.RWMutex
	machines map[string]StateMachine // section name -> machine
	byType   map[string]StateMachine // command type -> machine
	sealed   bool

	// applyMu orders every change of the machines' state: Raft's FSM
	// goroutine (Apply, Restore, Snapshot) and a follower catching up
	// from its own log (catchUp) once the leader said an index committed.
	applyMu sync.Mutex
	applied appliedIndex
	// raftIndex is the last index Raft's FSM goroutine handed to Apply
	// (applied or skipped), or restored; under applyMu. While catchUp ran
	// ahead of it, no snapshot is taken (errAhead).
	raftIndex uint64
	stages    stageFn // test seam, set before Start
}

var _ hraft.FSM = (*router)(nil)

func newRouter() *router {
	return &router{machines: make(map[string]StateMachine), byType: make(map[string]StateMachine)}
}

func (r *router) register(name string, sm StateMachine, types ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sealed {
		return fmt.Errorf("register %q: the cluster is already started", name)
	}
	if _, dup := r.machines[name]; dup {
		return fmt.Errorf("register %q: name already taken", name)
	}
	for _, t := range types {
		if len(t) == 0 || len(t) > maxTypeLen {
			return fmt.Errorf("register %q: command type %q must be 1..%d bytes", name, t, maxTypeLen)
		}
		if _, dup := r.byType[t]; dup {
			return fmt.Errorf("register %q: command type %q already owned", name, t)
		}
	}
	r.machines[name] = sm
	for _, t := range types {
		r.byType[t] = sm
	}
	return nil
}

func (r *router) seal() {
	r.mu.Lock()
	r.sealed = true
	r.mu.Unlock()
}

// Apply implements hraft.FSM. An entry this node already applied while
// catching up (catchUp) is skipped.
func (r *router) Apply(l *hraft.Log) any {
	if l.Type != hraft.LogCommand {
		return nil
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.raftIndex = l.Index
	if l.Index <= r.applied.get() {
		return nil
	}
	return r.applyLocked(l)
}

// errAhead refuses a snapshot while this node's state machines hold
// entries (applied by catchUp) that Raft has not handed to the FSM yet:
// Raft labels a snapshot with its own last applied index, and a snapshot
// holding later entries would be restored under the wrong index (a
// backup restored into a new cluster would skip that many new entries).
// Raft hands them over within a commit timeout; Cluster.Snapshot and
// Backup retry.
var errAhead = errors.New("state machines are ahead of raft (caught up from the log); snapshot again shortly")

// applyLocked applies one command entry; applyMu is held.
func (r *router) applyLocked(l *hraft.Log) *applyResult {
	e, err := decodeEnvelope(l.Data)
	if err != nil {
		// Every node would fail the same way; carrying on would hide a
		// corrupt or incompatible log.
		panic(fmt.Sprintf("raft log index %d: %v", l.Index, err))
	}
	e.Index, e.Term = l.Index, l.Term
	r.mu.RLock()
	sm := r.byType[e.Type]
	r.mu.RUnlock()
	if sm == nil {
		panic(fmt.Sprintf("raft log index %d: command type %q has no state machine on this node (mixed versions?)", l.Index, e.Type))
	}
	data, aerr := sm.Apply(e)
	r.applied.setTerm(l.Index, l.Term)
	r.stages.mark(stageFSM, l.Index)
	return &applyResult{data: data, err: toApplyError(aerr), term: l.Term}
}

// catchUp applies the entries of this node's own log up to index, when the
// entry at index has the term the leader reported for it. The leader
// answers a write or a read index only once that entry is committed; by
// Raft's log matching property a log holding the same term at the same
// index holds the same entries up to it, so all of them are committed too.
// A follower otherwise learns a commit only with the leader's next append
// (CommitTimeout later). It reports whether index is applied; false (term
// unknown, entry not in this log yet, or of another term) leaves the
// entries to Raft. Raft's own Apply skips what was applied here.
func (r *router) catchUp(logs hraft.LogStore, index, term uint64) bool {
	if term == 0 || logs == nil {
		return false
	}
	if r.applied.get() >= index {
		return true
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	cur := r.applied.get()
	if cur >= index {
		return true
	}
	var l hraft.Log
	if err := logs.GetLog(index, &l); err != nil || l.Term != term {
		return false
	}
	for i := cur + 1; i <= index; i++ {
		// A fresh Log each time: the log store decodes into the Data
		// slice it is given, and state machines keep slices of the
		// payload (sessions' values), which the next entry would
		// overwrite.
		e := new(hraft.Log)
		if err := logs.GetLog(i, e); err != nil {
			return false // compacted or missing: Raft applies from here
		}
		if e.Type == hraft.LogCommand {
			r.applyLocked(e)
		}
	}
	r.applied.setTerm(index, term)
	return true
}

// Snapshot implements hraft.FSM. It holds applyMu, so no Apply runs
// concurrently with the machines' Snapshot calls.
func (r *router) Snapshot() (hraft.FSMSnapshot, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.applied.get() > r.raftIndex {
		return nil, errAhead
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.machines))
	for n := range r.machines {
		names = append(names, n)
	}
	sort.Strings(names)
	s := &routerSnapshot{index: r.applied.get()}
	for _, n := range names {
		ms, err := r.machines[n].Snapshot()
		if err != nil {
			s.Release()
			return nil, fmt.Errorf("snapshot %s: %w", n, err)
		}
		s.parts = append(s.parts, namedSnap{n, ms})
	}
	return s, nil
}

// Restore implements hraft.FSM: every machine's state is replaced.
func (r *router) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 256<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	if string(magic) != snapshotMagic {
		return fmt.Errorf("snapshot header %q is not a cohort snapshot", magic)
	}
	index, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("read snapshot index: %w", err)
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.RLock()
	defer r.mu.RUnlock()
	seen := make(map[string]bool)
	err = eachSection(br, func(name string, cr io.Reader) error {
		sm := r.machines[name]
		if sm == nil {
			return nil // a section of a machine this node does not run: skipped
		}
		if err := sm.Restore(cr); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		seen[name] = true
		return nil
	})
	if err != nil {
		return err
	}
	for name, sm := range r.machines {
		if !seen[name] {
			if err := sm.Restore(eofReader{}); err != nil {
				return fmt.Errorf("reset %s: %w", name, err)
			}
		}
	}
	r.applied.set(index)
	r.raftIndex = index
	return nil
}

type namedSnap struct {
	name string
	snap Snapshot
}

type routerSnapshot struct {
	index uint64
	parts []namedSnap
}

// Persist implements hraft.FSMSnapshot.
func (s *routerSnapshot) Persist(sink hraft.SnapshotSink) error {
	err := s.persist(sink)
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *routerSnapshot) persist(sink io.Writer) error {
	bw := bufio.NewWriterSize(sink, 256<<10)
	bw.WriteString(snapshotMagic)
	bw.Write(binary.AppendUvarint(nil, s.index))
	for _, p := range s.parts {
		writeFrameString(bw, p.name)
		cw := &chunkWriter{w: bw}
		if err := p.snap.Persist(cw); err != nil {
			return fmt.Errorf("persist %s: %w", p.name, err)
		}
		if err := cw.end(); err != nil {
			return fmt.Errorf("persist %s: %w", p.name, err)
		}
	}
	writeFrameString(bw, "")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// Release implements hraft.FSMSnapshot.
func (s *routerSnapshot) Release() {
	for _, p := range s.parts {
		p.snap.Release()
	}
}

func writeFrameString(w *bufio.Writer, s string) {
	w.Write(binary.AppendUvarint(nil, uint64(len(s))))
	w.WriteString(s)
}

func readFrameString(r *bufio.Reader) (string, error) {
	l, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	if l > maxTypeLen {
		return "", fmt.Errorf("section name of %d bytes", l)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// eachSection reads the sections of a snapshot after its header and
// index, calling fn with each one's name and content; what fn leaves of a
// section is skipped.
func eachSection(br *bufio.Reader, fn func(name string, r io.Reader) error) error {
	for {
		name, err := readFrameString(br)
		if err != nil {
			return fmt.Errorf("read snapshot section name: %w", err)
		}
		if name == "" {
			return nil
		}
		cr := &chunkReader{r: br}
		if err := fn(name, cr); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, cr); err != nil {
			return fmt.Errorf("read snapshot section %s: %w", name, err)
		}
	}
}

// chunkWriter frames a section as uvarint-length chunks ended by a zero.
type chunkWriter struct{ w *bufio.Writer }

func (c *chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.w.Write(binary.AppendUvarint(nil, uint64(len(p))))
	return c.w.Write(p)
}

func (c *chunkWriter) end() error {
	return c.w.WriteByte(0)
}

// chunkReader reads one framed section and reports EOF at its end.
type chunkReader struct {
	r    *bufio.Reader
	left uint64
	done bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		l, err := binary.ReadUvarint(c.r)
		if err != nil {
			return 0, fmt.Errorf("read snapshot chunk: %w", io.ErrUnexpectedEOF)
		}
		if l == 0 {
			c.done = true
			return 0, io.EOF
		}
		c.left = l
	}
	if uint64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= uint64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// appliedIndex tracks the last index applied to the state machines and lets
// callers wait for an index.
type appliedIndex struct {
	mu    sync.Mutex
	index uint64
	term  uint64 // of the entry at index; 0 when not known (after a restore)
	wake  chan struct{}
}

func (a *appliedIndex) set(i uint64) { a.setTerm(i, 0) }

func (a *appliedIndex) setTerm(i, term uint64) {
	a.mu.Lock()
	a.index, a.term = i, term
	if a.wake != nil {
		close(a.wake)
		a.wake = nil
	}
	a.mu.Unlock()
}

func (a *appliedIndex) get() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index
}

// getTerm returns the index and the term of its entry (0 if not known).
func (a *appliedIndex) getTerm() (index, term uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index, a.term
}

// waitChTerm is waitCh with the term of the entry at the index.
func (a *appliedIndex) waitChTerm() (index, term uint64, ch <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake == nil {
		a.wake = make(chan struct{})
	}
	return a.index, a.term, a.wake
}

// waitCh returns the current index and a channel closed at the next change.
func (a *appliedIndex) waitCh() (uint64, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake == nil {
		a.wake = make(chan struct{})
	}
	return a.index, a.wake
}

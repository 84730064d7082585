package sessions

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/internal/leaderclock"
	"github.com/cohortserver/cohort/raft"
)

// session is one replicated session. A version is immutable once it is in
// the map: Apply replaces it with a new version (copy on write), so readers
// and snapshot views need no lock beyond the map lookup.
type session struct {
	created   int64  // unix nanos, stamped by the leader
	touched   int64  // last replicated access, leader time
	idle      int64  // idle timeout, nanoseconds (0 = none)
	lifetime  int64  // absolute lifetime, nanoseconds (0 = none)
	principal string // "" = none
	owner     string // node that last committed or claimed it (reads.go)
	data      []byte // attribute blob; nil when passivated (see size)
	size      int64  // len of the blob, also while passivated
	passive   bool   // data lives in the passivation file
	loc       *local // node-local state shared by every version
}

// local is what a node knows of a session that is never replicated.
type local struct {
	access atomic.Int64 // unix nanos of the last request this node served
	queued atomic.Bool  // a touch is waiting to be replicated
}

// grace is how much later than its replicated touch a session may have
// been used: touches are replicated only once idle/4 has passed.
func grace(idle int64) int64 { return idle/4 + min(idle/4, int64(2*time.Second)) }

// expiredAt reports whether the session is over at now, given the last
// access this node saw itself (0 in Apply, which must be deterministic).
func (s *session) expiredAt(now, access int64) bool {
	if s.lifetime > 0 && now >= s.created+s.lifetime {
		return true
	}
	if s.idle <= 0 {
		return false
	}
	last := max(s.touched+grace(s.idle), access)
	return now-last > s.idle
}

// EventType names a session lifecycle event.
type EventType string

// Lifecycle events, delivered once per node when the entry that caused
// them is applied.
const (
	EventCreated   EventType = "created"
	EventRenewed   EventType = "renewed"
	EventDestroyed EventType = "destroyed"
	EventExpired   EventType = "expired"
)

// Event is one session lifecycle event. ID is the non-secret short id of
// the session (for renewals, of the new token; OldID names the old one).
type Event struct {
	Type      EventType
	ID        string
	OldID     string
	Principal string
	Index     uint64    // Raft index of the entry; entries replayed after a restart repeat their events
	Time      time.Time // leader time of the entry
}

// store is the sessions state machine: every session of the cluster, in
// memory on every node (cold attribute data may be passivated to disk).
type store struct {
	mu         sync.RWMutex
	sessions   map[string]*session
	principals map[string]map[string]struct{}
	bytes      int64 // attribute bytes of every session
	memBytes   int64 // attribute bytes held in memory
	passive    int   // sessions whose data is passivated

	applied atomic.Uint64      // entries of this machine applied on this node
	pv      *passivator        // nil: no memory budget
	onEvent func([]Event)      // called after the lock is released
	clock   *leaderclock.Clock // the leader's clock, as seen through applied entries (read decisions like "expired?")

	self        string          // this node's id, with onMovedAway
	onMovedAway func(id string) // a claim moved a session of this node to another (session lock); nil when off
}

var _ raft.StateMachine = (*store)(nil)

func newStore() *store {
	return &store{sessions: make(map[string]*session), principals: make(map[string]map[string]struct{}),
		clock: leaderclock.New(nil)}
}

// get returns the current version of a session (nil when absent).
func (s *store) get(id string) *session {
	s.mu.RLock()
	x := s.sessions[id]
	s.mu.RUnlock()
	return x
}

// Apply implements raft.StateMachine.
func (s *store) Apply(e raft.Entry) ([]byte, error) {
	s.applied.Add(1)
	s.clock.Observe(e.Time, e.Term)
	var evs []Event
	var out []byte
	var err error
	s.mu.Lock()
	switch e.Type {
	case cmdCommit:
		evs, out, err = s.applyCommit(e)
	case cmdTouch:
		err = s.applyTouch(e)
	case cmdSweep:
		evs, err = s.applySweep(e)
	case cmdDestroy:
		evs, out, err = s.applyDestroy(e)
	case cmdClaim:
		err = s.applyClaim(e)
	default:
		err = fmt.Errorf("%w: type %q", errBadCommand, e.Type)
	}
	if s.pv != nil {
		s.pv.rebalanceLocked(s)
	}
	s.mu.Unlock()
	if len(evs) > 0 && s.onEvent != nil {
		s.onEvent(evs)
	}
	return out, err
}

// live returns a session that exists and is not expired at now; an
// expired one is removed (with an event) so every node drops it alike.
func (s *store) live(id string, now int64, e raft.Entry, evs *[]Event) *session {
	x := s.sessions[id]
	if x == nil {
		return nil
	}
	if x.expiredAt(now, 0) {
		s.removeLocked(id, x)
		*evs = append(*evs, s.event(EventExpired, id, "", x.principal, e))
		return nil
	}
	return x
}

func (s *store) event(t EventType, id, old, principal string, e raft.Entry) Event {
	ev := Event{Type: t, ID: idPrefix(id), Principal: principal, Index: e.Index, Time: e.Time}
	if old != "" {
		ev.OldID = idPrefix(old)
	}
	return ev
}

// commitPlan is what a commit does to the session map: which version it
// builds on (base, read from baseID), under which id the result goes
// (target), whether the loaded id goes away, and the event it raises.
type commitPlan struct {
	base      *session
	baseID    string
	target    string
	removeOld bool
	kind      EventType // EventCreated, EventRenewed or "" (a change)
}

// applyCommit applies one request's changes as one step: plan the target,
// build the new version, install it. Its answer is the results of the
// commit's atomic operations (appendResults).
func (s *store) applyCommit(e raft.Entry) ([]Event, []byte, error) {
	c, err := decodeCommit(e.Payload)
	if err != nil {
		return nil, nil, err
	}
	if (c.id != "" && len(c.id) != idLen) || (c.newID != "" && len(c.newID) != idLen) {
		return nil, nil, fmt.Errorf("%w: id length", errBadCommand)
	}
	now := e.Time.UnixNano()
	var evs []Event
	p, done, err := s.planCommit(c, e, now, &evs)
	if done || err != nil {
		return evs, nil, err
	}
	ns, results, err := s.buildVersion(p, c, now)
	if err != nil {
		return evs, nil, err
	}
	ns.touched, ns.owner = now, e.Origin
	s.installCommit(c.id, p, ns)
	switch p.kind {
	case EventCreated:
		evs = append(evs, s.event(EventCreated, p.target, "", ns.principal, e))
	case EventRenewed:
		evs = append(evs, s.event(EventRenewed, p.target, c.id, ns.principal, e))
	}
	return evs, appendResults(nil, results), nil
}

// planCommit decides what the commit does. done means it was complete
// already (a destroy without a new session).
func (s *store) planCommit(c commit, e raft.Entry, now int64, evs *[]Event) (commitPlan, bool, error) {
	p := commitPlan{target: c.id, baseID: c.id}
	if c.id != "" {
		p.base = s.live(c.id, now, e, evs)
	}
	switch {
	case c.newID != "" && s.live(c.newID, now, e, evs) != nil:
		// A retried commit whose first attempt was applied: go on from there.
		p.base, p.target, p.baseID = s.sessions[c.newID], c.newID, c.newID
	case c.flags&flagDestroy != 0:
		if p.base != nil {
			*evs = append(*evs, s.event(EventDestroyed, c.id, "", p.base.principal, e))
			if c.flags&flagCreate == 0 || c.newID == "" {
				s.removeLocked(c.id, s.sessions[c.id])
				return p, true, nil
			}
			p.removeOld = true
		}
		if c.flags&flagCreate == 0 || c.newID == "" {
			return p, true, nil
		}
		p.base, p.target, p.kind = nil, c.newID, EventCreated
	case c.flags&flagRenew != 0 && p.base != nil && c.newID != "":
		p.removeOld, p.target, p.kind = true, c.newID, EventRenewed
	case c.flags&flagCreate != 0 && c.newID != "" && p.base == nil:
		p.target, p.kind = c.newID, EventCreated
	case p.base == nil:
		return p, false, codedError{"sessions.gone", ErrSessionGone}
	}
	if p.base != nil && p.base.owner != "" && e.Origin != "" && p.base.owner != e.Origin {
		// Another node claimed the session after this request read it.
		return p, false, codedError{"sessions.moved", ErrSessionMoved}
	}
	if p.target == "" {
		return p, false, fmt.Errorf("%w: no target id", errBadCommand)
	}
	return p, false, nil
}

// buildVersion computes the session after the commit's ops, without
// touching the map, and checks the size limit.
func (s *store) buildVersion(p commitPlan, c commit, now int64) (*session, []int64, error) {
	var ns session
	if p.base != nil {
		ns = *p.base
		if ns.passive {
			data, err := s.pv.load(p.baseID)
			if err != nil {
				return nil, nil, err
			}
			ns.data, ns.passive = data, false
		}
	} else {
		ns = session{created: now, idle: max(c.idle, 0), lifetime: max(c.lifetime, 0)}
	}
	if p.kind == EventRenewed || p.kind == EventCreated || ns.loc == nil {
		ns.loc = &local{}
	}
	var attrOps []op
	for _, o := range c.ops {
		switch o.kind {
		case opIdle:
			ns.idle = max(o.n, 0)
		case opLifetime:
			ns.lifetime = max(o.n, 0)
		case opPrincipal:
			ns.principal = o.key
		default:
			attrOps = append(attrOps, o)
		}
	}
	var results []int64
	if len(attrOps) > 0 {
		var err error
		if ns.data, results, err = applyOps(ns.data, attrOps); err != nil {
			return nil, nil, err
		}
	}
	ns.size = int64(len(ns.data))
	if c.maxBytes > 0 && ns.size > c.maxBytes {
		return nil, nil, &limitError{what: "session", size: ns.size, limit: c.maxBytes}
	}
	return &ns, results, nil
}

// installCommit puts the new version in the map under its target id,
// removing the loaded id when the commit renews or replaces it.
func (s *store) installCommit(loaded string, p commitPlan, ns *session) {
	if old := s.sessions[loaded]; p.removeOld && old != nil {
		s.removeLocked(loaded, old)
	}
	if prev := s.sessions[p.target]; prev != nil {
		s.removeLocked(p.target, prev)
	}
	s.insertLocked(p.target, ns)
}

// applyClaim makes the proposing node the owner of the listed sessions.
func (s *store) applyClaim(e raft.Entry) error {
	ids, err := decodeIDs(e.Payload)
	if err != nil {
		return err
	}
	for _, id := range ids {
		x := s.sessions[id]
		if x == nil || x.owner == e.Origin {
			continue
		}
		if s.onMovedAway != nil && x.owner == s.self {
			s.onMovedAway(id)
		}
		// Copy on write: requests read sessions without the store's lock.
		nx := *x
		nx.owner = e.Origin
		s.sessions[id] = &nx
		if s.pv != nil {
			s.pv.replaced(x, &nx)
		}
	}
	return nil
}

func (s *store) applyTouch(e raft.Entry) error {
	ids, err := decodeIDs(e.Payload)
	if err != nil {
		return err
	}
	now := e.Time.UnixNano()
	for _, id := range ids {
		x := s.sessions[id]
		if x == nil || x.expiredAt(now, 0) || x.touched >= now {
			continue
		}
		nx := *x
		nx.touched = now
		s.sessions[id] = &nx
		if s.pv != nil {
			s.pv.replaced(x, &nx)
		}
	}
	return nil
}

func (s *store) applySweep(e raft.Entry) ([]Event, error) {
	ids, err := decodeIDs(e.Payload)
	if err != nil {
		return nil, err
	}
	now := e.Time.UnixNano()
	var evs []Event
	for _, id := range ids {
		if x := s.sessions[id]; x != nil && x.expiredAt(now, 0) {
			s.removeLocked(id, x)
			evs = append(evs, s.event(EventExpired, id, "", x.principal, e))
		}
	}
	return evs, nil
}

func (s *store) applyDestroy(e raft.Entry) ([]Event, []byte, error) {
	d, err := decodeDestroy(e.Payload)
	if err != nil {
		return nil, nil, err
	}
	var evs []Event
	for id := range s.principals[d.principal] {
		if id == d.except {
			continue
		}
		x := s.sessions[id]
		s.removeLocked(id, x)
		evs = append(evs, s.event(EventDestroyed, id, "", d.principal, e))
	}
	return evs, binary.AppendUvarint(nil, uint64(len(evs))), nil
}

func (s *store) insertLocked(id string, x *session) {
	s.sessions[id] = x
	s.bytes += x.size
	if x.passive {
		s.passive++
	} else {
		s.memBytes += x.size
	}
	if x.principal != "" {
		set := s.principals[x.principal]
		if set == nil {
			set = make(map[string]struct{})
			s.principals[x.principal] = set
		}
		set[id] = struct{}{}
	}
	if s.pv != nil {
		s.pv.inserted(id, x)
	}
}

func (s *store) removeLocked(id string, x *session) {
	if x == nil {
		return
	}
	delete(s.sessions, id)
	s.bytes -= x.size
	if x.passive {
		s.passive--
	} else {
		s.memBytes -= x.size
	}
	if x.principal != "" {
		if set := s.principals[x.principal]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(s.principals, x.principal)
			}
		}
	}
	if s.pv != nil {
		s.pv.removed(id, x)
	}
}

// Snapshot implements raft.StateMachine: a shallow copy of the map; the
// versions it points to never change.
func (s *store) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := &storeSnap{sessions: maps.Clone(s.sessions)}
	if s.pv != nil && s.passive > 0 {
		v, err := s.pv.view()
		if err != nil {
			return nil, err
		}
		snap.pview = v
	}
	return snap, nil
}

const (
	snapMagic   = "CSES3" // with the owner after the principal
	snapMagicV2 = "CSES2" // without owners; still restored
)

type storeSnap struct {
	sessions map[string]*session
	pview    passiveView
}

// Persist writes magic, the count, then per session: 1, id, created, touched, idle,
// lifetime, principal, data; then 0.
func (sn *storeSnap) Persist(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.WriteString(snapMagic)
	bw.Write(binary.AppendUvarint(nil, uint64(len(sn.sessions))))
	var hdr []byte
	for id, x := range sn.sessions {
		data := x.data
		if x.passive {
			var err error
			if data, err = sn.pview.get(id); err != nil {
				return err
			}
		}
		hdr = append(hdr[:0], 1)
		hdr = append(hdr, id...)
		hdr = binary.AppendVarint(hdr, x.created)
		hdr = binary.AppendVarint(hdr, x.touched)
		hdr = binary.AppendVarint(hdr, x.idle)
		hdr = binary.AppendVarint(hdr, x.lifetime)
		hdr = binary.AppendUvarint(hdr, uint64(len(x.principal)))
		hdr = append(hdr, x.principal...)
		hdr = binary.AppendUvarint(hdr, uint64(len(x.owner)))
		hdr = append(hdr, x.owner...)
		hdr = binary.AppendUvarint(hdr, uint64(len(data)))
		bw.Write(hdr)
		if _, err := bw.Write(data); err != nil {
			return fmt.Errorf("write sessions snapshot: %w", err)
		}
	}
	bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write sessions snapshot: %w", err)
	}
	return nil
}

// Release implements raft.Snapshot.
func (sn *storeSnap) Release() {
	if sn.pview != nil {
		sn.pview.release()
	}
}

// Restore implements raft.StateMachine: it replaces every session.
func (s *store) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	sessions := make(map[string]*session)
	principals := make(map[string]map[string]struct{})
	var bytes int64
	magic := make([]byte, len(snapMagic))
	n, err := io.ReadFull(br, magic)
	switch {
	case n == 0 && (errors.Is(err, io.EOF)):
		// No section: no sessions.
	case err != nil:
		return fmt.Errorf("read sessions snapshot: %w", err)
	case string(magic) != snapMagic && string(magic) != snapMagicV2:
		return fmt.Errorf("sessions snapshot header %q: %w", magic, errBadCommand)
	default:
		sessions, principals, bytes, err = readSessions(br, string(magic) == snapMagic)
		if err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.sessions, s.principals, s.bytes, s.memBytes, s.passive = sessions, principals, bytes, bytes, 0
	if s.pv != nil {
		s.pv.reset(s)
		s.pv.rebalanceLocked(s)
	}
	s.mu.Unlock()
	return nil
}

// readSessions reads the sessions of a snapshot after its magic: the
// count, then one record per session (readSession) up to the 0 mark.
func readSessions(br *bufio.Reader, withOwner bool) (map[string]*session, map[string]map[string]struct{}, int64, error) {
	count, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read sessions snapshot: %w", err)
	}
	sessions := make(map[string]*session, min(count, 1<<22))
	principals := make(map[string]map[string]struct{})
	var total int64
	rd := snapReader{br: br, withOwner: withOwner, intern: make(map[string]string)}
	for {
		id, x, err := rd.next()
		if err != nil {
			return nil, nil, 0, fmt.Errorf("read sessions snapshot: %w", err)
		}
		if x == nil {
			return sessions, principals, total, nil
		}
		total += x.size
		sessions[id] = x
		if x.principal != "" {
			set := principals[x.principal]
			if set == nil {
				set = make(map[string]struct{})
				principals[x.principal] = set
			}
			set[id] = struct{}{}
		}
	}
}

// snapReader reads the session records of a snapshot.
type snapReader struct {
	br        *bufio.Reader
	withOwner bool
	intern    map[string]string // every session of a principal (or owner) shares one string
	buf       []byte
}

// next reads one record; a nil session means the end mark.
func (rd *snapReader) next() (string, *session, error) {
	mark, err := rd.br.ReadByte()
	if err != nil || mark == 0 {
		return "", nil, err
	}
	var idb [idLen]byte
	if _, err := io.ReadFull(rd.br, idb[:]); err != nil {
		return "", nil, err
	}
	x := &session{loc: &local{}}
	for _, f := range []*int64{&x.created, &x.touched, &x.idle, &x.lifetime} {
		if *f, err = binary.ReadVarint(rd.br); err != nil {
			return "", nil, err
		}
	}
	if x.principal, err = rd.str(1 << 16); err != nil {
		return "", nil, err
	}
	if rd.withOwner {
		if x.owner, err = rd.str(64); err != nil {
			return "", nil, err
		}
	}
	dl, err := binary.ReadUvarint(rd.br)
	if err != nil || dl > 1<<31 {
		return "", nil, errors.Join(err, errBadCommand)
	}
	if dl > 0 {
		x.data = make([]byte, dl)
		if _, err := io.ReadFull(rd.br, x.data); err != nil {
			return "", nil, err
		}
	}
	x.size = int64(dl)
	return string(idb[:]), x, nil
}

// str reads a length-prefixed string of at most limit bytes, interned.
func (rd *snapReader) str(limit uint64) (string, error) {
	l, err := binary.ReadUvarint(rd.br)
	if err != nil || l > limit {
		return "", errors.Join(err, errBadCommand)
	}
	if l == 0 {
		return "", nil
	}
	if uint64(cap(rd.buf)) < l {
		rd.buf = make([]byte, l)
	}
	rd.buf = rd.buf[:l]
	if _, err := io.ReadFull(rd.br, rd.buf); err != nil {
		return "", err
	}
	v, ok := rd.intern[string(rd.buf)]
	if !ok {
		v = string(rd.buf)
		rd.intern[v] = v
	}
	return v, nil
}

package sessions

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/internal/leaderclock"
	"github.com/cohortserver/cohort/internal/sessioncookie"
	"github.com/cohortserver/cohort/raft"
)

// Errors of the sessions package.
var (
	// ErrTooLarge is returned when a value or a whole session passes its
	// size limit; the middleware answers 413.
	ErrTooLarge = errors.New("too large")
	// ErrSessionGone means the session ended (destroyed, renewed or
	// expired) on another request while this one was changing it.
	ErrSessionGone = errors.New("the session ended while this request was changing it")
	// ErrSessionMoved means another node took the session over while this
	// request was changing it here; the client retries through the new owner.
	ErrSessionMoved = errors.New("the session moved to another node while this request was changing it; retry")
	// ErrNoSession is returned by the context API outside the middleware.
	ErrNoSession = errors.New("no session in this request context: wrap the handler with Manager.Middleware")
	// ErrInvalidValue is a Put value that cannot be stored.
	ErrInvalidValue = errors.New("invalid session value")
	// ErrWrongType is an atomic operation on a value of another type (Incr
	// on a string, Append on a non-list); nothing of the commit is stored.
	ErrWrongType = errors.New("session value has the wrong type for this operation")
	// ErrConflict is an Update that lost to concurrent writers on every try.
	ErrConflict = errors.New("session value kept changing under concurrent updates")
	// ErrSessionBusy is a request that waited --session-lock-wait for the
	// session lock (another request of the same session held it); the
	// middleware answers 503 with Retry-After.
	ErrSessionBusy = errors.New("another request of this session is still running; retry")
	// ErrMalformedCookie is returned by ParseCookie.
	ErrMalformedCookie = sessioncookie.ErrMalformed

	errBadCommand     = errors.New("malformed sessions command")
	errPassiveMissing = errors.New("passivated data missing")
)

// limitError is ErrTooLarge with what passed which limit. It keeps its
// code across a forwarded Apply.
type limitError struct {
	what        string
	size, limit int64
}

func (e *limitError) Error() string {
	return fmt.Sprintf("%s of %d bytes is too large: the limit is %d bytes", e.what, e.size, e.limit)
}

func (e *limitError) Is(target error) bool { return target == ErrTooLarge }

// ApplyCode implements raft.CodedError.
func (e *limitError) ApplyCode() string { return "sessions.too_large" }

// typeError is ErrWrongType naming the key and what it should hold. It
// keeps its code across a forwarded Apply.
type typeError struct {
	key, want string
}

func (e *typeError) Error() string {
	return fmt.Sprintf("session key %q: %s: the operation needs %s", e.key, ErrWrongType, e.want)
}

func (e *typeError) Is(target error) bool { return target == ErrWrongType }

// ApplyCode implements raft.CodedError.
func (e *typeError) ApplyCode() string { return "sessions.wrong_type" }

// Reads is what keeps local session reads linearizable. Every session has
// one owner, the node that last committed to it or claimed it, recorded in
// the replicated state. Only the owner reads locally, and only while
// OwnerFresh holds; otherwise it first passes Sync. Another node claims the
// session through Raft and waits ClaimWait before serving it, by which time
// the old owner has either applied the claim or lost its read lease.
type Reads interface {
	// OwnerFresh reports whether this node may read its own sessions
	// locally right now (a fresh, synced read lease).
	OwnerFresh() bool
	// Sync waits until this node applied every acknowledged write (a read
	// index through the leader).
	Sync(ctx context.Context) error
	// ClaimWait is how long a new owner waits after its claim applied.
	ClaimWait() time.Duration
}

// codedError keeps a sentinel's code across a forwarded Apply.
type codedError struct {
	code string
	err  error
}

func (e codedError) Error() string { return e.err.Error() }

func (e codedError) Unwrap() error { return e.err }

// ApplyCode implements raft.CodedError.
func (e codedError) ApplyCode() string { return e.code }

// Log is what the sessions need of the replicated log and the cluster
// port (*raft.Cluster implements it; every package names this interface
// Log).
type Log interface {
	Register(name string, sm raft.StateMachine, types ...string) error
	Apply(ctx context.Context, typ string, payload []byte) (raft.Result, error)
	OnLeader(fn func(ctx context.Context, term uint64))
	HandleInternal(pattern string, h http.Handler)
	Client() *http.Client
	Leader() (id, addr string)
	IsLeader() bool
	Info() raft.Info
	WaitApplied(ctx context.Context, index uint64) error
}

// Config configures a Manager. Zero durations and sizes take the defaults
// noted.
type Config struct {
	// NodeID is this node's id (for logs).
	NodeID string
	// CookieName is the session cookie (default "cohort_session").
	CookieName string
	// Route returns this node's opaque route tag for the cookie. If nil,
	// the route is the node id.
	Route func() string
	// IdleTimeout ends a session not used for this long (default 30m).
	IdleTimeout time.Duration
	// Lifetime ends a session this long after its creation (default 24h).
	Lifetime time.Duration
	// MaxBytes limits the attribute data of one session (default 1 MiB).
	MaxBytes int64
	// MaxValueBytes limits one value (default 256 KiB).
	MaxValueBytes int64
	// MemoryBudget is the attribute bytes kept in memory before cold
	// sessions are passivated to disk; 0 = unlimited.
	MemoryBudget int64
	// MemorySessions is the count of sessions kept in memory before cold
	// ones are passivated; 0 = unlimited.
	MemorySessions int
	// Dir holds the passivation file (required with a memory budget).
	Dir string
	// Ignore matches request paths that never load or save a session.
	Ignore *regexp.Regexp
	// SweepInterval is how often the leader looks for expired sessions
	// (default 1m).
	SweepInterval time.Duration
	// SweepBatch bounds the ids of one sweep entry (default 1000).
	SweepBatch int
	// CommitTimeout bounds one commit through Raft (default 10s).
	CommitTimeout time.Duration
	// Reads decides when this node may answer a session from local state;
	// nil reads locally always (tests of the package without a node).
	Reads Reads
	// CatchUpTimeout bounds the wait for the leader's commit index when a
	// session arrives from another node (default 2s); past it the request
	// fails (503). With Reads set and a request marked with the cluster's
	// wait budget (raft.Cluster.Bounded; the front marks every application
	// request) the budget bounds the wait instead: a catch-up across a
	// leader election must not end sooner than the request's other waits.
	CatchUpTimeout time.Duration
	// Lock serializes the requests of one session on its owner: a request
	// waits until the previous one committed (its response started), as
	// PHP's default session handler and JBoss' session locking do. Off,
	// it costs nothing; concurrent requests then run at once and plain
	// Puts of one key are last-writer-wins (use the atomic operations).
	Lock bool
	// LockWait bounds the wait for the lock (default 5s); past it the
	// request gets ErrSessionBusy (503 with Retry-After).
	LockWait time.Duration
	// Now is this node's clock (nil: time.Now). Reads judge expiry by the
	// leader's clock, estimated from it and the entries applied here (see
	// leaderclock); the leader's sweep proposes by it.
	Now func() time.Time
	// Logger receives the package's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.CookieName == "" {
		c.CookieName = "cohort_session"
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Minute
	}
	if c.Lifetime <= 0 {
		c.Lifetime = 24 * time.Hour
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 1 << 20
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = 256 << 10
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Minute
	}
	if c.SweepBatch <= 0 {
		c.SweepBatch = 1000
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = 10 * time.Second
	}
	if c.LockWait <= 0 {
		c.LockWait = 5 * time.Second
	}
	if c.CatchUpTimeout <= 0 {
		c.CatchUpTimeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Manager owns the replicated sessions of one node: the state machine,
// the middleware and the context API handlers use.
type Manager struct {
	cfg     Config
	cluster Log
	st      *store
	log     *slog.Logger

	route atomic.Pointer[string]
	locks *sessionLocks // nil unless Config.Lock

	hookMu sync.RWMutex
	hooks  []func(Event)

	touchMu  sync.Mutex
	touchIDs []string
	touchCh  chan struct{}

	commits  atomic.Uint64 // commits this node proposed
	touches  atomic.Uint64 // touch entries this node proposed
	sweeps   atomic.Uint64 // sweep entries this node proposed
	catchUps atomic.Uint64 // read-index waits for sessions that moved here
	claims   atomic.Uint64 // sessions taken over from another owner

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool
}

// New builds a Manager and registers its state machine with the cluster
// (before the cluster starts). It does no I/O.
func New(cl Log, cfg Config) (*Manager, error) {
	cfg.defaults()
	if (cfg.MemoryBudget > 0 || cfg.MemorySessions > 0) && cfg.Dir == "" {
		return nil, errors.New("sessions: a memory budget needs a directory for the passivation file")
	}
	m := &Manager{cfg: cfg, cluster: cl, st: newStore(), log: cfg.Logger.With("component", "sessions"),
		touchCh: make(chan struct{}, 1)}
	m.st.onEvent = m.deliver
	if cfg.Lock {
		m.locks = &sessionLocks{}
		m.st.self, m.st.onMovedAway = cfg.NodeID, m.locks.movedAway
	}
	if cfg.Now != nil {
		m.st.clock = leaderclock.New(cfg.Now)
	}
	if err := cl.Register("sessions", m.st, cmdCommit, cmdTouch, cmdSweep, cmdDestroy, cmdClaim); err != nil {
		return nil, fmt.Errorf("register sessions state machine: %w", err)
	}
	cl.OnLeader(m.sweepLoop)
	cl.HandleInternal("GET "+commitIndexPath, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !cl.IsLeader() {
			http.Error(w, "not the leader", http.StatusMisdirectedRequest)
			return
		}
		fmt.Fprint(w, cl.Info().CommitIndex)
	}))
	return m, nil
}

const commitIndexPath = "/_internal/sessions/commit-index"

// catchUp waits until this node applied everything the leader had
// committed when asked (a read index). The middleware calls it when a
// session arrives from another node (its cookie names another route), so
// a session that moves reads its latest writes, and a write made there
// cannot be missed and its session recreated here.
func (m *Manager) catchUp(ctx context.Context) error {
	if m.cfg.Reads == nil || !raft.IsBounded(ctx) {
		// Nothing else bounds this wait (with Reads and a budget, the read
		// index ends within the request's budget).
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.cfg.CatchUpTimeout)
		defer cancel()
	}
	if m.cfg.Reads != nil {
		return m.cfg.Reads.Sync(ctx)
	}
	var idx uint64
	if m.cluster.IsLeader() {
		idx = m.cluster.Info().CommitIndex
	} else {
		_, addr := m.cluster.Leader()
		if addr == "" {
			return raft.ErrNoLeader
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+commitIndexPath, nil)
		if err != nil {
			return fmt.Errorf("ask the leader's commit index: %w", err)
		}
		resp, err := m.cluster.Client().Do(req)
		if err != nil {
			return fmt.Errorf("ask the leader's commit index: %w", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ask the leader's commit index: %s", resp.Status)
		}
		if idx, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return fmt.Errorf("leader's commit index %q: %w", b, err)
		}
	}
	if err := m.cluster.WaitApplied(ctx, idx); err != nil {
		return fmt.Errorf("catch up to the leader's commit index %d: %w", idx, err)
	}
	return nil
}

// Start opens the passivation file (when a memory budget is set; it is
// wiped first, being a cache of replicated state) and starts the touch
// flusher. Sessions restored before Start stay in memory until the
// passivator catches up. ctx ends the background work.
func (m *Manager) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	if m.cfg.MemoryBudget > 0 || m.cfg.MemorySessions > 0 {
		if err := os.MkdirAll(m.cfg.Dir, 0o700); err != nil {
			cancel()
			return fmt.Errorf("create sessions dir: %w", err)
		}
		pv, err := openPassivator(filepath.Join(m.cfg.Dir, "passivated.db"), m.cfg.MemoryBudget, m.cfg.MemorySessions, m.log)
		if err != nil {
			cancel()
			return err
		}
		m.st.mu.Lock()
		m.st.pv = pv
		pv.rebalanceLocked(m.st)
		m.st.mu.Unlock()
		pv.wg.Add(1)
		go pv.run(ctx, m.st)
	}
	m.mu.Lock()
	m.cancel = cancel
	m.mu.Unlock()
	m.wg.Add(1)
	go m.touchLoop(ctx)
	return nil
}

// Close stops the background work and closes the passivation file. It is
// idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	if m.cancel != nil {
		m.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.st.mu.RLock()
	pv := m.st.pv
	m.st.mu.RUnlock()
	if pv != nil {
		return pv.close()
	}
	return nil
}

// OnEvent adds a hook called for every lifecycle event this node applies,
// in log order, on the apply path: it must return quickly and must not
// commit session changes itself.
func (m *Manager) OnEvent(fn func(Event)) {
	m.hookMu.Lock()
	m.hooks = append(m.hooks, fn)
	m.hookMu.Unlock()
}

func (m *Manager) deliver(evs []Event) {
	m.hookMu.RLock()
	hooks := m.hooks
	m.hookMu.RUnlock()
	for _, ev := range evs {
		for _, h := range hooks {
			h(ev)
		}
	}
}

// routeTag returns this node's route tag, computed once it is known.
func (m *Manager) routeTag() string {
	if p := m.route.Load(); p != nil {
		return *p
	}
	r := m.cfg.NodeID
	if m.cfg.Route != nil {
		r = m.cfg.Route()
	}
	if r != "" {
		m.route.Store(&r)
	}
	return r
}

// now is the time reads judge expiry by: the leader's clock as estimated
// here (internal/leaderclock), in unix nanoseconds.
func (m *Manager) now() int64 { return m.st.clock.Now() }

// lookup returns the live version of a session for a request at now,
// reading passivated data back when needed. nil means none.
func (m *Manager) lookup(id string, now int64) *session {
	for range 3 {
		x := m.st.get(id)
		if x == nil || x.expiredAt(now, x.loc.access.Load()) {
			return nil
		}
		if !x.passive {
			return x
		}
		x.loc.access.Store(now) // the passivator must not pick it again at once
		m.st.mu.RLock()
		pv := m.st.pv
		m.st.mu.RUnlock()
		nx, err := pv.activate(m.st, id, x)
		if err == nil && nx != nil {
			return nx
		}
		if err == nil {
			return nil
		}
	}
	m.log.Error("read back passivated session failed", "session", idPrefix(id))
	return nil
}

// touched records a request on a session and queues a replicated touch
// when a quarter of its idle timeout passed since the last one.
func (m *Manager) touched(id string, x *session, now int64) {
	x.loc.access.Store(now)
	if x.idle <= 0 || now-x.touched < x.idle/4 {
		return
	}
	if !x.loc.queued.CompareAndSwap(false, true) {
		return
	}
	m.touchMu.Lock()
	m.touchIDs = append(m.touchIDs, id)
	m.touchMu.Unlock()
	select {
	case m.touchCh <- struct{}{}:
	default:
	}
}

// touchLoop replicates queued touches, all that queued meanwhile in one
// entry (group commit).
func (m *Manager) touchLoop(ctx context.Context) {
	defer m.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.touchCh:
		}
		m.touchMu.Lock()
		ids := m.touchIDs
		m.touchIDs = nil
		m.touchMu.Unlock()
		for len(ids) > 0 {
			batch := ids[:min(len(ids), 4096)]
			ids = ids[len(batch):]
			actx, cancel := context.WithTimeout(ctx, m.cfg.CommitTimeout)
			_, err := m.cluster.Apply(actx, cmdTouch, encodeIDs(batch))
			cancel()
			m.touches.Add(1)
			if err != nil && ctx.Err() == nil {
				m.log.Warn("replicate session touches", "sessions", len(batch), "err", err)
			}
			for _, id := range batch {
				if x := m.st.get(id); x != nil {
					x.loc.queued.Store(false)
				}
			}
		}
	}
}

// sweepLoop runs on the leader: it finds expired sessions and deletes them
// in batches, one entry per batch. Apply deletes only the listed ids still
// expired at the entry's time, so the sweep is deterministic.
func (m *Manager) sweepLoop(ctx context.Context, term uint64) {
	m.st.clock.Lead(term) // this node stamps the entries now; its Barrier applied the old leader's
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			ids := m.expired(m.st.clock.Local().UnixNano(), m.cfg.SweepBatch) // the leader's own clock: it stamps the sweep
			if len(ids) == 0 {
				break
			}
			actx, cancel := context.WithTimeout(ctx, m.cfg.CommitTimeout)
			_, err := m.cluster.Apply(actx, cmdSweep, encodeIDs(ids))
			cancel()
			m.sweeps.Add(1)
			if err != nil {
				if ctx.Err() == nil {
					m.log.Warn("sweep expired sessions", "sessions", len(ids), "err", err)
				}
				break
			}
			m.log.Debug("swept expired sessions", "sessions", len(ids), "term", term)
			if len(ids) < m.cfg.SweepBatch {
				break
			}
		}
	}
}

// expired lists up to limit ids expired at now by replicated times alone.
func (m *Manager) expired(now int64, limit int) []string {
	m.st.mu.RLock()
	defer m.st.mu.RUnlock()
	var ids []string
	for id, x := range m.st.sessions {
		if x.expiredAt(now, 0) {
			ids = append(ids, id)
			if len(ids) == limit {
				break
			}
		}
	}
	return ids
}

// Stats counts this node's sessions.
type Stats struct {
	Total      int   `json:"total"`
	InMemory   int   `json:"in_memory"`
	Passivated int   `json:"passivated"`
	Bytes      int64 `json:"bytes"`
	MemBytes   int64 `json:"memory_bytes"`
	Principals int   `json:"principals"`
	// Applied counts the sessions entries this node applied since start.
	Applied uint64 `json:"applied_entries"`
	// Commits, Touches and Sweeps count the entries this node proposed.
	Commits uint64 `json:"commits"`
	Touches uint64 `json:"touches"`
	Sweeps  uint64 `json:"sweeps"`
	// CatchUps counts sessions that arrived from another node and waited
	// for the leader's commit index.
	CatchUps uint64 `json:"catch_ups"`
	// Claims counts sessions this node took over from another owner.
	Claims uint64 `json:"claims"`
}

// Stats returns the counts of this node's copy of the sessions.
func (m *Manager) Stats() Stats {
	m.st.mu.RLock()
	defer m.st.mu.RUnlock()
	return Stats{
		Total: len(m.st.sessions), InMemory: len(m.st.sessions) - m.st.passive, Passivated: m.st.passive,
		Bytes: m.st.bytes, MemBytes: m.st.memBytes, Principals: len(m.st.principals),
		Applied: m.st.applied.Load(), Commits: m.commits.Load(), Touches: m.touches.Load(), Sweeps: m.sweeps.Load(),
		CatchUps: m.catchUps.Load(),
		Claims:   m.claims.Load(),
	}
}

// Info describes one session to an operator, never with its token.
type Info struct {
	ID        string    `json:"id"` // first 12 hex digits of the hash of the token
	Principal string    `json:"principal,omitempty"`
	Created   time.Time `json:"created"`
	LastUsed  time.Time `json:"last_used"`
	Bytes     int64     `json:"bytes"`
	Passive   bool      `json:"passivated,omitempty"`
}

// PrincipalSessions lists the live sessions of a principal, oldest first.
func (m *Manager) PrincipalSessions(name string) []Info {
	now := m.now()
	m.st.mu.RLock()
	defer m.st.mu.RUnlock()
	var out []Info
	for id := range m.st.principals[name] {
		x := m.st.sessions[id]
		if x == nil || x.expiredAt(now, x.loc.access.Load()) {
			continue
		}
		out = append(out, Info{ID: idPrefix(id), Principal: x.principal, Created: time.Unix(0, x.created).UTC(),
			LastUsed: time.Unix(0, max(x.touched, x.loc.access.Load())).UTC(), Bytes: x.size, Passive: x.passive})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// DestroyPrincipal ends every session of a principal on every node (log
// out everywhere) and returns how many ended.
func (m *Manager) DestroyPrincipal(ctx context.Context, name string) (int, error) {
	return m.destroyPrincipal(ctx, name, "")
}

func (m *Manager) destroyPrincipal(ctx context.Context, name, except string) (int, error) {
	if name == "" {
		return 0, errors.New("destroy sessions: principal name is empty")
	}
	res, err := m.cluster.Apply(ctx, cmdDestroy, destroyCmd{principal: name, except: except}.encode())
	if err != nil {
		return 0, fmt.Errorf("destroy sessions of %q: %w", name, err)
	}
	n, _ := binary.Uvarint(res.Data)
	return int(n), nil
}

// CookieName returns the session cookie's name.
func (m *Manager) CookieName() string { return m.cfg.CookieName }

// ignored reports whether a path never touches sessions.
func (m *Manager) ignored(r *http.Request) bool {
	return m.cfg.Ignore != nil && m.cfg.Ignore.MatchString(r.URL.Path)
}

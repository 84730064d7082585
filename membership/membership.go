package membership

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// Node states, replicated.
const (
	StateActive   = "active"   // serves existing sessions and takes new ones
	StateDraining = "draining" // serves existing sessions, takes no new ones
	StateDisabled = "disabled" // takes no traffic; its sessions fail over
)

// Command types owned by this package.
const (
	cmdUpsert = "member.upsert"
	cmdState  = "member.state"
	cmdRemove = "member.remove"
)

// Errors of the member table.
var (
	// ErrUnknownNode is returned for a node id the table does not hold.
	ErrUnknownNode = errors.New("unknown node")
	// ErrBadState is returned for a state other than active, draining, disabled.
	ErrBadState = errors.New("state must be active, draining or disabled")
)

// Member is what the cluster knows of one node beyond Raft's configuration.
type Member struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`      // cluster address
	HTTPAddress string    `json:"http_address"` // public front
	State       string    `json:"state"`
	Version     string    `json:"version,omitempty"`
	Since       time.Time `json:"since"` // when State last changed (leader's clock)
}

// Log is what the table needs from the replicated log.
type Log interface {
	Apply(ctx context.Context, typ string, payload []byte) (raft.Result, error)
	Register(name string, sm raft.StateMachine, types ...string) error
}

// answeredBy is the part of a Log that knows when a peer last answered
// this node over the authenticated cluster port (raft.Cluster does).
type answeredBy interface {
	LastAnswered(peer string) time.Time
}

// Table is the replicated member table and this node's local view of the
// others' liveness.
type Table struct {
	log    Log
	key    []byte
	selfID string
	logger *slog.Logger

	mu      sync.RWMutex
	members map[string]Member
	routes  sync.Map // node id -> route tag under key (cleared by SetKey)

	health *prober
}

var _ raft.StateMachine = (*Table)(nil)

// New returns a Table and registers it with the log.
func New(l Log, selfID string, logger *slog.Logger) (*Table, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Table{log: l, selfID: selfID, logger: logger.With("component", "membership"), members: make(map[string]Member)}
	if err := l.Register("members", t, cmdUpsert, cmdState, cmdRemove); err != nil {
		return nil, err
	}
	return t, nil
}

type upsertCmd struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	HTTPAddress string `json:"http_address"`
	Version     string `json:"version,omitempty"`
}

type stateCmd struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// Apply implements raft.StateMachine.
func (t *Table) Apply(e raft.Entry) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch e.Type {
	case cmdUpsert:
		var c upsertCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		m, ok := t.members[c.ID]
		if !ok {
			m = Member{ID: c.ID, State: StateActive, Since: e.Time}
		}
		m.Address, m.HTTPAddress, m.Version = c.Address, c.HTTPAddress, c.Version
		t.members[c.ID] = m
	case cmdState:
		var c stateCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		m, ok := t.members[c.ID]
		if !ok {
			return nil, unknownNode(c.ID)
		}
		if m.State != c.State {
			m.State, m.Since = c.State, e.Time
		}
		t.members[c.ID] = m
	case cmdRemove:
		var c stateCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		delete(t.members, c.ID)
	}
	return nil, nil
}

type tableSnap struct{ members []Member }

// Snapshot implements raft.StateMachine.
func (t *Table) Snapshot() (raft.Snapshot, error) {
	return &tableSnap{members: t.All()}, nil
}

// Persist writes the members as JSON.
func (s *tableSnap) Persist(w io.Writer) error { return json.NewEncoder(w).Encode(s.members) }

// Release does nothing.
func (s *tableSnap) Release() {}

// Restore implements raft.StateMachine.
func (t *Table) Restore(r io.Reader) error {
	var ms []Member
	if err := json.NewDecoder(r).Decode(&ms); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("decode members: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.members = make(map[string]Member, len(ms))
	for _, m := range ms {
		t.members[m.ID] = m
	}
	return nil
}

// All returns the members sorted by id.
func (t *Table) All() []Member {
	t.mu.RLock()
	out := make([]Member, 0, len(t.members))
	for _, m := range t.members {
		out = append(out, m)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns one member.
func (t *Table) Get(id string) (Member, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m, ok := t.members[id]
	return m, ok
}

// Announce records this node's addresses in the table (through the leader).
func (t *Table) Announce(ctx context.Context, addr, httpAddr, version string) error {
	if m, ok := t.Get(t.selfID); ok && m.Address == addr && m.HTTPAddress == httpAddr && m.Version == version {
		return nil
	}
	b, _ := json.Marshal(upsertCmd{ID: t.selfID, Address: addr, HTTPAddress: httpAddr, Version: version})
	if _, err := t.log.Apply(ctx, cmdUpsert, b); err != nil {
		return fmt.Errorf("announce %s: %w", t.selfID, err)
	}
	return nil
}

// SetState changes a node's state cluster-wide.
func (t *Table) SetState(ctx context.Context, id, state string) error {
	switch state {
	case StateActive, StateDraining, StateDisabled:
	default:
		return fmt.Errorf("%q: %w", state, ErrBadState)
	}
	if _, ok := t.Get(id); !ok {
		return fmt.Errorf("node %q: %w", id, ErrUnknownNode)
	}
	b, _ := json.Marshal(stateCmd{ID: id, State: state})
	if _, err := t.log.Apply(ctx, cmdState, b); err != nil {
		var ae *raft.ApplyError
		if errors.As(err, &ae) && ae.Code == codeUnknownNode {
			return fmt.Errorf("set %s %s: node %q: %w", id, state, id, ErrUnknownNode)
		}
		return fmt.Errorf("set %s %s: %w", id, state, err)
	}
	return nil
}

const codeUnknownNode = "unknown_node"

// codedError keeps a sentinel's code across forwarding to the leader.
type codedError struct {
	code string
	err  error
}

func (e *codedError) Error() string     { return e.err.Error() }
func (e *codedError) Unwrap() error     { return e.err }
func (e *codedError) ApplyCode() string { return e.code }

func unknownNode(id string) error {
	return &codedError{code: codeUnknownNode, err: fmt.Errorf("node %q: %w", id, ErrUnknownNode)}
}

// Forget removes a node's entry cluster-wide.
func (t *Table) Forget(ctx context.Context, id string) error {
	b, _ := json.Marshal(stateCmd{ID: id})
	if _, err := t.log.Apply(ctx, cmdRemove, b); err != nil {
		return fmt.Errorf("forget %s: %w", id, err)
	}
	return nil
}

// SetKey sets the key route tags derive from: the cluster key, so outsiders
// cannot map tags to node ids. Call it before serving.
func (t *Table) SetKey(key []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.key = key
	t.routes.Clear()
}

// Route returns the opaque route tag of a node: an HMAC of its id under the
// cluster key, so a cookie reveals nothing of the topology.
func (t *Table) Route(id string) string {
	if tag, ok := t.routes.Load(id); ok {
		return tag.(string)
	}
	t.mu.RLock()
	tag := RouteTag(t.key, id)
	t.mu.RUnlock()
	t.routes.Store(id, tag)
	return tag
}

// routeLocked is Route for a caller holding t.mu.
func (t *Table) routeLocked(id string) string {
	if tag, ok := t.routes.Load(id); ok {
		return tag.(string)
	}
	tag := RouteTag(t.key, id)
	t.routes.Store(id, tag)
	return tag
}

// RouteTag computes a route tag.
func RouteTag(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cohort/route\x00"))
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:9])
}

// ByRoute finds the member a route tag names.
func (t *Table) ByRoute(tag string) (Member, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for id, m := range t.members {
		if t.routeLocked(id) == tag {
			return m, true
		}
	}
	return Member{}, false
}

// StartProbing pings every other member over the cluster port until ctx
// ends, so Healthy reflects liveness within about a second.
func (t *Table) StartProbing(ctx context.Context, client *http.Client, interval time.Duration) {
	t.mu.Lock()
	if t.health == nil {
		t.health = newProber(t, client, interval, t.logger)
		if a, ok := t.log.(answeredBy); ok {
			t.health.answered = a.LastAnswered
		}
	}
	p := t.health
	t.mu.Unlock()
	p.run(ctx)
}

// Healthy reports whether a node answered its recent probes. This node is
// always healthy to itself; without probing every node is.
func (t *Table) Healthy(id string) bool {
	if id == t.selfID {
		return true
	}
	p := t.prober()
	return p == nil || p.healthy(id)
}

// Unresponsive reports whether a node failed its last probes: it is down,
// frozen or cut off. A node only marked failed by a caller (MarkFailed)
// is unhealthy but not unresponsive, since one failed call says little
// about the calls still waiting on it.
func (t *Table) Unresponsive(id string) bool {
	if id == t.selfID {
		return false
	}
	p := t.prober()
	return p != nil && p.unresponsive(id)
}

// MarkFailed records a failure seen by a caller (passive detection): the
// node counts as unhealthy until a probe succeeds again.
func (t *Table) MarkFailed(id string) {
	if p := t.prober(); p != nil && id != t.selfID {
		p.markFailed(id)
	}
}

// prober is the liveness prober, nil before StartProbing.
func (t *Table) prober() *prober {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.health
}

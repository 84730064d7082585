package db

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"sync"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// Command types of the "db" state machine.
const (
	cmdSettings = "db.settings" // {"dsn"}: the cluster-wide DSN
	cmdMigrated = "db.migrated" // {"name","checksum","node"}: a migration ran
	cmdFailed   = "db.failed"   // Failure: a migration failed; the rollout stopped
)

// Applied records one migration that ran.
type Applied struct {
	Checksum string    `json:"checksum"`
	Node     string    `json:"node"`  // the leader that ran it
	Index    uint64    `json:"index"` // Raft index of the record
	At       time.Time `json:"at"`
}

// Failure records the migration that stopped the rollout.
type Failure struct {
	Migration string    `json:"migration"`
	Statement string    `json:"statement"`
	Error     string    `json:"error"`
	Node      string    `json:"node"`
	At        time.Time `json:"at"`
}

// state is the replicated part of the business database: what every node
// agrees on.
type state struct {
	DSN     string             `json:"dsn,omitempty"`
	Applied map[string]Applied `json:"applied,omitempty"`
	Failure *Failure           `json:"failure,omitempty"`
}

type migratedCmd struct {
	Name     string `json:"name"`
	Checksum string `json:"checksum"`
	Node     string `json:"node"`
}

type settingsCmd struct {
	DSN string `json:"dsn"`
}

// fsm is the "db" state machine. Apply is deterministic: it reads only the
// entry and its own state.
type fsm struct {
	mu sync.RWMutex
	st state
	// onDSN is called (outside the lock) when the replicated DSN changes.
	onDSN func(dsn string)
}

var _ raft.StateMachine = (*fsm)(nil)

func (f *fsm) Apply(e raft.Entry) ([]byte, error) {
	switch e.Type {
	case cmdSettings:
		var c settingsCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		f.mu.Lock()
		changed := f.st.DSN != c.DSN
		f.st.DSN = c.DSN
		cb := f.onDSN
		f.mu.Unlock()
		if changed && cb != nil {
			cb(c.DSN)
		}
		return nil, nil
	case cmdMigrated:
		var c migratedCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil || c.Name == "" {
			return nil, fmt.Errorf("decode %s: malformed payload", e.Type)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.st.Applied[c.Name]; ok {
			return nil, nil // recorded before: exactly once
		}
		if f.st.Applied == nil {
			f.st.Applied = map[string]Applied{}
		}
		f.st.Applied[c.Name] = Applied{Checksum: c.Checksum, Node: c.Node, Index: e.Index, At: e.Time}
		if f.st.Failure != nil && f.st.Failure.Migration == c.Name {
			f.st.Failure = nil
		}
		return nil, nil
	case cmdFailed:
		var c Failure
		if err := json.Unmarshal(e.Payload, &c); err != nil || c.Migration == "" {
			return nil, fmt.Errorf("decode %s: malformed payload", e.Type)
		}
		c.At = e.Time
		f.mu.Lock()
		f.st.Failure = &c
		f.mu.Unlock()
		return nil, nil
	}
	return nil, fmt.Errorf("db: unknown command type %q", e.Type)
}

// dsn returns the replicated DSN without copying the rest of the state.
func (f *fsm) dsn() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.DSN
}

// view returns a copy of the state.
func (f *fsm) view() state {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.st
	s.Applied = maps.Clone(f.st.Applied)
	if f.st.Failure != nil {
		fc := *f.st.Failure
		s.Failure = &fc
	}
	return s
}

func (f *fsm) Snapshot() (raft.Snapshot, error) {
	return jsonSnapshot{st: f.view()}, nil
}

func (f *fsm) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read db snapshot: %w", err)
	}
	var st state
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("decode db snapshot: %w", err)
		}
	}
	f.mu.Lock()
	changed := f.st.DSN != st.DSN
	f.st = st
	cb := f.onDSN
	f.mu.Unlock()
	if changed && cb != nil {
		cb(st.DSN)
	}
	return nil
}

type jsonSnapshot struct{ st state }

func (s jsonSnapshot) Persist(w io.Writer) error { return json.NewEncoder(w).Encode(s.st) }
func (s jsonSnapshot) Release()                  {}

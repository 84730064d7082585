package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// localLog applies commands straight to the store, in order: the unit
// tests' stand-in for Raft (the cluster tests use real Raft).
type localLog struct {
	origin string // the Origin of every entry ("" = none: no ownership check)
	mu     sync.Mutex
	sm     raft.StateMachine
	index  uint64
	now    time.Time
}

func (l *localLog) Register(_ string, sm raft.StateMachine, _ ...string) error {
	l.sm = sm
	return nil
}

func (l *localLog) OnLeader(func(context.Context, uint64)) {}

func (l *localLog) HandleInternal(string, http.Handler)       {}
func (l *localLog) Client() *http.Client                      { return http.DefaultClient }
func (l *localLog) Leader() (string, string)                  { return "self", "" }
func (l *localLog) IsLeader() bool                            { return true }
func (l *localLog) Info() raft.Info                           { return raft.Info{CommitIndex: l.index} }
func (l *localLog) WaitApplied(context.Context, uint64) error { return nil }

func (l *localLog) Apply(_ context.Context, typ string, payload []byte) (raft.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.index++
	t := l.now
	if t.IsZero() {
		t = time.Now()
	}
	data, err := l.sm.Apply(raft.Entry{Index: l.index, Type: typ, Time: t, Origin: l.origin, Payload: payload})
	if err != nil {
		var ce raft.CodedError
		ae := &raft.ApplyError{Message: err.Error()}
		if errors.As(err, &ce) {
			ae.Code = ce.ApplyCode()
		}
		return raft.Result{Index: l.index}, ae
	}
	return raft.Result{Index: l.index, Data: data}, nil
}

func entry(typ string, payload []byte, at time.Time) raft.Entry {
	return raft.Entry{Type: typ, Payload: payload, Time: at}
}

func id(n int) string { return fmt.Sprintf("%016d", n) }

func create(t testing.TB, st *store, sid string, at time.Time, ops ...op) {
	t.Helper()
	c := commit{flags: flagCreate, newID: sid, maxBytes: 1 << 20,
		idle: int64(time.Minute), lifetime: int64(time.Hour), ops: ops}
	if _, err := st.Apply(entry(cmdCommit, c.encode(), at)); err != nil {
		t.Fatal(err)
	}
}

func TestStoreCommit(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	val := func(s string) []byte { b, _ := encodeValue(s); return b }
	tests := []struct {
		name    string
		c       commit
		wantErr error
		check   func(t *testing.T, st *store)
	}{
		{"set on an existing session", commit{id: id(1), maxBytes: 1 << 20, ops: []op{{kind: opSet, key: "b", val: val("2")}}}, nil,
			func(t *testing.T, st *store) {
				x := st.get(id(1))
				if decodeValue(blobGet(x.data, "a")) != "1" || decodeValue(blobGet(x.data, "b")) != "2" {
					t.Fatalf("keys %v", blobKeys(x.data))
				}
			}},
		{"delete", commit{id: id(1), maxBytes: 1 << 20, ops: []op{{kind: opDelete, key: "a"}}}, nil,
			func(t *testing.T, st *store) {
				if x := st.get(id(1)); x.data != nil || x.size != 0 {
					t.Fatalf("left %q", x.data)
				}
			}},
		{"unknown session", commit{id: id(9), maxBytes: 1 << 20, ops: []op{{kind: opDelete, key: "a"}}}, ErrSessionGone, nil},
		{"renew carries data and kills the old id", commit{flags: flagRenew, id: id(1), newID: id(2), maxBytes: 1 << 20, ops: []op{{kind: opPrincipal, key: "ann"}}}, nil,
			func(t *testing.T, st *store) {
				if st.get(id(1)) != nil || st.get(id(2)) == nil || decodeValue(blobGet(st.get(id(2)).data, "a")) != "1" {
					t.Fatal("not moved")
				}
				if _, ok := st.principals["ann"][id(2)]; !ok {
					t.Fatal("principal index")
				}
			}},
		{"renew of an ended session with changes creates one", commit{flags: flagRenew | flagCreate, id: id(7), newID: id(2), maxBytes: 1 << 20, ops: []op{{kind: opPrincipal, key: "ann"}}}, nil,
			func(t *testing.T, st *store) {
				if st.get(id(1)) == nil || st.get(id(2)) == nil || st.get(id(2)).principal != "ann" || st.get(id(2)).data != nil {
					t.Fatal("no fresh session")
				}
			}},
		{"destroy", commit{flags: flagDestroy, id: id(1), maxBytes: 1 << 20}, nil,
			func(t *testing.T, st *store) {
				if st.get(id(1)) != nil || len(st.sessions) != 0 || st.bytes != 0 {
					t.Fatal("not destroyed")
				}
			}},
		{"too large", commit{id: id(1), maxBytes: 8, ops: []op{{kind: opSet, key: "b", val: val("0123456789")}}}, ErrTooLarge,
			func(t *testing.T, st *store) {
				if blobGet(st.get(id(1)).data, "b") != nil {
					t.Fatal("refused change applied")
				}
			}},
		{"expired session is gone", commit{id: id(1), maxBytes: 1 << 20, ops: []op{{kind: opDelete, key: "a"}}}, ErrSessionGone, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore()
			create(t, st, id(1), t0, op{kind: opSet, key: "a", val: val("1")})
			at := t0.Add(time.Second)
			if tt.name == "expired session is gone" {
				at = t0.Add(2 * time.Minute)
			}
			_, err := st.Apply(entry(cmdCommit, tt.c.encode(), at))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, st)
			}
		})
	}
}

func TestSweepIsBatchedAndDeterministic(t *testing.T) {
	st := newStore()
	t0 := time.Unix(1_700_000_000, 0)
	var evs []Event
	st.onEvent = func(e []Event) { evs = append(evs, e...) }
	for i := range 10 {
		create(t, st, id(i), t0)
	}
	m := &Manager{st: st, cfg: Config{SweepBatch: 4}}
	// idle 1m + grace 17s: expired 77s after the last touch.
	later := t0.Add(92 * time.Second)
	// Session 3 is touched just before the sweep entry: Apply keeps it.
	ids := m.expired(later.UnixNano(), 100)
	if len(ids) != 10 {
		t.Fatalf("found %d expired", len(ids))
	}
	if _, err := st.Apply(entry(cmdTouch, encodeIDs([]string{id(3)}), t0.Add(70*time.Second))); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(entry(cmdSweep, encodeIDs(ids), later)); err != nil {
		t.Fatal(err)
	}
	if len(st.sessions) != 1 || st.get(id(3)) == nil {
		t.Fatalf("left %d sessions", len(st.sessions))
	}
	if len(evs) != 19 { // 10 created + 9 expired
		t.Fatalf("%d events", len(evs))
	}
}

func TestSnapshotRestore(t *testing.T) {
	st := newStore()
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 100 {
		v, _ := encodeValue(fmt.Sprintf("value-%d", i))
		create(t, st, id(i), t0, op{kind: opSet, key: "k", val: v}, op{kind: opPrincipal, key: fmt.Sprint("user", i%7)})
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the snapshot must not show in it.
	if _, err := st.Apply(entry(cmdCommit, commit{flags: flagDestroy, id: id(0)}.encode(), t0)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	st2 := newStore()
	if err := st2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if len(st2.sessions) != 100 || len(st2.principals) != 7 || st2.bytes != st.bytes+st.get(id(1)).size {
		t.Fatalf("restored %d sessions, %d principals, %d bytes", len(st2.sessions), len(st2.principals), st2.bytes)
	}
	for i := range 100 {
		x := st2.get(id(i))
		if decodeValue(blobGet(x.data, "k")) != fmt.Sprintf("value-%d", i) || x.created != t0.UnixNano() {
			t.Fatalf("session %d differs", i)
		}
	}
	if err := st2.Restore(bytes.NewReader(nil)); err != nil || len(st2.sessions) != 0 {
		t.Fatalf("empty restore: %v, %d left", err, len(st2.sessions))
	}
}

func TestPassivation(t *testing.T) {
	st := newStore()
	dir := t.TempDir()
	pv, err := openPassivator(dir+"/p.db", 10<<10, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pv.close()
	st.pv = pv
	t0 := time.Now()
	payload := bytes.Repeat([]byte("x"), 1000)
	for i := range 100 {
		v, _ := encodeValue(payload)
		create(t, st, id(i), t0, op{kind: opSet, key: "p", val: v})
	}
	if err := pv.pass(st); err != nil {
		t.Fatal(err)
	}
	if st.memBytes > 10<<10 || st.passive < 80 || st.bytes != 100*st.get(id(0)).size {
		t.Fatalf("mem %d passive %d bytes %d", st.memBytes, st.passive, st.bytes)
	}
	// A snapshot holds passivated sessions too.
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	st2 := newStore()
	if err := st2.Restore(&buf); err != nil || len(st2.sessions) != 100 || st2.memBytes != st.bytes {
		t.Fatalf("restore: %v %d", err, len(st2.sessions))
	}
	// Read back on demand, and a write to a passive session keeps its data.
	m := &Manager{st: st, log: slog.New(slog.DiscardHandler)}
	for i := range 100 {
		x := m.lookup(id(i), t0.UnixNano())
		if x == nil || !bytes.Equal(decodeValue(blobGet(x.data, "p")).([]byte), payload) {
			t.Fatalf("session %d lost its data", i)
		}
		if err := pv.pass(st); err != nil {
			t.Fatal(err)
		}
	}
	var passiveID string
	for sid, x := range st.sessions {
		if x.passive {
			passiveID = sid
			break
		}
	}
	v, _ := encodeValue("more")
	c := commit{id: passiveID, maxBytes: 1 << 20, ops: []op{{kind: opSet, key: "q", val: v}}}
	if _, err := st.Apply(entry(cmdCommit, c.encode(), t0)); err != nil {
		t.Fatal(err)
	}
	x := st.get(passiveID)
	if x.passive || blobGet(x.data, "p") == nil || blobGet(x.data, "q") == nil {
		t.Fatal("write to a passivated session lost data")
	}
}

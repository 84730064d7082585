package jobs

import (
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cohortserver/cohort/raft"
)

type applier struct {
	t     *testing.T
	s     *state
	index uint64
}

func (a *applier) apply(typ string, v any) ([]byte, error) {
	a.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	return a.s.Apply(raft.Entry{Index: a.index, Term: 2, Type: typ, Origin: "n1", Time: time.Unix(1700000000, 0).Add(time.Duration(a.index) * time.Second), Payload: b})
}

func TestStateRefusesDuplicatesAndStaleTokens(t *testing.T) {
	a := &applier{t: t, s: newState(nil)}
	at := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	must := func(_ []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.apply(cmdInit, initCmd{Job: "j", Cursor: at.Add(-time.Second)}))
	out, err := a.apply(cmdStart, startCmd{Job: "j", ScheduledAt: at, Concurrency: ConcurrencyAllow})
	must(out, err)
	var first RunRecord
	must(nil, json.Unmarshal(out, &first))
	if first.Key != "j@2026-01-01T00:00:10Z" || first.Fence != (Fence{2, 2}) {
		t.Fatalf("started %+v", first)
	}
	tests := []struct {
		name string
		typ  string
		cmd  any
		want error
	}{
		{"second start of the same key", cmdStart, startCmd{Job: "j", ScheduledAt: at, Concurrency: ConcurrencyAllow}, ErrDuplicateRun},
		{"start of an older key", cmdStart, startCmd{Job: "j", ScheduledAt: at.Add(-time.Second), Concurrency: ConcurrencyAllow}, ErrDuplicateRun},
		{"forbid while running", cmdStart, startCmd{Job: "j", ScheduledAt: at.Add(time.Second), Concurrency: ConcurrencyForbid}, ErrBusy},
		{"finish with a wrong token", cmdFinish, finishCmd{Job: "j", Key: first.Key, Fence: Fence{1, 1}, Status: StatusSucceeded}, ErrStaleFence},
		{"check with a wrong token", cmdCheck, keyCmd{Job: "j", Key: first.Key, Fence: Fence{2, 1}}, ErrStaleFence},
		{"check with the token", cmdCheck, keyCmd{Job: "j", Key: first.Key, Fence: first.Fence}, nil},
		{"takeover", cmdRestart, keyCmd{Job: "j", Key: first.Key, Fence: first.Fence}, nil},
		{"finish with the replaced token", cmdFinish, finishCmd{Job: "j", Key: first.Key, Fence: first.Fence, Status: StatusSucceeded}, ErrStaleFence},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.apply(tt.typ, tt.cmd)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var ce raft.CodedError
			if tt.want != nil && !errors.As(err, &ce) {
				t.Fatalf("%v carries no code", err)
			}
		})
	}
	st := a.s.view("j")
	if len(st.Active) != 1 || len(st.History) != 1 || st.History[0].Status != StatusSkipped {
		t.Fatalf("state %+v", st)
	}
	// Snapshot and restore give the same state.
	snap, err := a.s.Snapshot()
	must(nil, err)
	var buf writerBuf
	must(nil, snap.Persist(&buf))
	s2 := newState(nil)
	must(nil, s2.Restore(&buf))
	if got := s2.view("j"); got.Cursor != st.Cursor || len(got.Active) != 1 {
		t.Fatalf("restored %+v", got)
	}
}

type writerBuf struct{ b []byte }

func (w *writerBuf) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
func (w *writerBuf) Read(p []byte) (int, error) {
	if len(w.b) == 0 {
		return 0, errEOF
	}
	n := copy(p, w.b)
	w.b = w.b[n:]
	return n, nil
}

func FuzzStateApply(f *testing.F) {
	for _, s := range []string{`{"job":"j","scheduled_at":"2026-01-01T00:00:00Z"}`, `{"job":"j","key":"k","fence":{"term":1,"index":2}}`, `{}`, `[`, `{"job":"j","times":["2026-01-01T00:00:00Z"],"cursor":"2026-01-01T00:00:00Z"}`} {
		for _, typ := range []string{cmdInit, cmdStart, cmdRestart, cmdFinish, cmdMisfire, cmdSuspend, cmdRequest, cmdCheck} {
			f.Add(typ, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		s := newState(nil)
		for i := range 2 {
			_, _ = s.Apply(raft.Entry{Index: uint64(i + 1), Term: 1, Type: typ, Payload: payload})
		}
		snap, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var buf writerBuf
		if err := snap.Persist(&buf); err != nil {
			t.Fatal(err)
		}
		if err := newState(nil).Restore(&buf); err != nil {
			t.Fatal(err)
		}
	})
}

var errEOF = io.EOF

// TestRunNowWireCompatible: run-now entries written before requestCmd had
// its own type carry a suspendCmd payload; they must apply as they did.
func TestRunNowWireCompatible(t *testing.T) {
	tests := []struct {
		name    string
		payload any
	}{
		{"old suspendCmd payload", suspendCmd{Job: "j"}},
		{"requestCmd payload", requestCmd{Job: "j"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &applier{t: t, s: newState(nil)}
			out, err := a.apply(cmdRequest, tt.payload)
			if err != nil || string(out) != "j@manual-1" {
				t.Fatalf("run now: %q, %v", out, err)
			}
			if st := a.s.view("j"); len(st.Pending) != 1 || st.Pending[0] != 1 || st.Suspended {
				t.Fatalf("state %+v, want one pending request", st)
			}
		})
	}
}

package files

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cohortserver/cohort/raft"
)

type applier struct {
	t   *testing.T
	s   *state
	idx uint64
}

func (a *applier) do(typ string, cmd any) (Info, error) {
	a.t.Helper()
	a.idx++
	p, err := json.Marshal(cmd)
	if err != nil {
		a.t.Fatal(err)
	}
	out, err := a.s.Apply(raft.Entry{Index: a.idx, Type: typ, Origin: "n1", Time: time.Unix(int64(a.idx), 0).UTC(), Payload: p})
	if err != nil {
		return Info{}, err
	}
	var in Info
	if err := json.Unmarshal(out, &in); err != nil {
		a.t.Fatal(err)
	}
	return in, nil
}

const sumA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestStateApply(t *testing.T) {
	a := &applier{t: t, s: newState()}
	in, err := a.do(cmdPut, putCmd{Path: "x/a", SHA256: sumA, Size: 10, Mode: 0o644})
	if err != nil || in.Version != 1 || in.Writer != "n1" {
		t.Fatalf("put: %+v %v", in, err)
	}
	steps := []struct {
		name string
		typ  string
		cmd  any
		want error
	}{
		{"create-only refused", cmdPut, putCmd{Path: "x/a", SHA256: sumA, Size: 1, IfVersion: Version(0)}, ErrVersionMismatch},
		{"stale cas refused", cmdPut, putCmd{Path: "x/a", SHA256: sumA, Size: 1, IfVersion: Version(7)}, ErrVersionMismatch},
		{"file under a file", cmdPut, putCmd{Path: "x/a/b", SHA256: sumA, Size: 1}, ErrConflict},
		{"file over a directory", cmdPut, putCmd{Path: "x", SHA256: sumA, Size: 1}, ErrConflict},
		{"quota", cmdPut, putCmd{Path: "y", SHA256: sumA, Size: 100, MaxBytes: 50}, ErrQuotaExceeded},
		{"quota counts replaced size", cmdPut, putCmd{Path: "x/a", SHA256: sumA, Size: 50, MaxBytes: 50}, nil},
		{"delete missing", cmdDelete, deleteCmd{Path: "nope"}, ErrNotFound},
		{"cas delete refused", cmdDelete, deleteCmd{Path: "x/a", IfVersion: Version(1)}, ErrVersionMismatch},
		{"rename", cmdRename, renameCmd{From: "x/a", To: "z/b"}, nil},
		{"rename gone", cmdRename, renameCmd{From: "x/a", To: "z/c"}, ErrNotFound},
		{"file where directory was", cmdPut, putCmd{Path: "x", SHA256: sumA, Size: 1}, nil},
		{"delete", cmdDelete, deleteCmd{Path: "x"}, nil},
		{"delete again", cmdDelete, deleteCmd{Path: "x"}, ErrNotFound},
		{"recreate after delete with create-only", cmdPut, putCmd{Path: "x", SHA256: sumA, Size: 1, IfVersion: Version(0)}, nil},
	}
	for _, st := range steps {
		_, err := a.do(st.typ, st.cmd)
		if st.want == nil && err != nil || st.want != nil && !errors.Is(fromApply(raftErr(err)), st.want) {
			t.Fatalf("%s: got %v, want %v", st.name, err, st.want)
		}
	}
	files, bytes_, tombs := a.s.usage()
	if files != 2 || bytes_ != 51 || tombs != 1 {
		t.Fatalf("usage = %d files %d bytes %d tombstones", files, bytes_, tombs)
	}
	if in, _ := a.s.get("x/a"); !in.Deleted {
		t.Fatalf("x/a should be a tombstone: %+v", in)
	}

	// Snapshot and restore give the same tree.
	snap, _ := a.s.Snapshot()
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	r := newState()
	if err := r.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got, want := r.list("", true), a.s.list("", true); len(got) != len(want) {
		t.Fatalf("restored %d entries, want %d", len(got), len(want))
	}
	if f, b, tb := r.usage(); f != files || b != bytes_ || tb != tombs {
		t.Fatalf("restored usage differs")
	}
}

// raftErr turns an Apply error into what a proposer receives.
func raftErr(err error) error {
	if err == nil {
		return nil
	}
	ae := &raft.ApplyError{Message: err.Error()}
	var ce raft.CodedError
	if errors.As(err, &ce) {
		ae.Code = ce.ApplyCode()
	}
	return ae
}

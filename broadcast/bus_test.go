package broadcast

import (
	"io"
	"testing"

	"github.com/cohortserver/cohort/raft"
)

func FuzzApply(f *testing.F) {
	for _, s := range []string{`{"topic":"t","payload":"eA=="}`, `{"event":"joined","node":"n1"}`, `{"leader":"n1","term":3}`, `{`, ``} {
		for _, typ := range []string{cmdPublish, cmdMember, cmdLeader} {
			f.Add(typ, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		b := &Bus{view: make(map[string]memberView), signal: make(chan struct{}, 1), subs: make(map[uint64]sub)}
		_, _ = b.Apply(raft.Entry{Index: 1, Term: 1, Type: typ, Payload: payload})
		snap, err := b.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var w buf
		if err := snap.Persist(&w); err != nil {
			t.Fatal(err)
		}
		b2 := &Bus{view: make(map[string]memberView), signal: make(chan struct{}, 1), subs: make(map[uint64]sub)}
		if err := b2.Restore(&w); err != nil {
			t.Fatal(err)
		}
		if len(b2.msgs) != len(b.msgs) {
			t.Fatalf("restored %d messages, had %d", len(b2.msgs), len(b.msgs))
		}
	})
}

type buf struct{ b []byte }

func (w *buf) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
func (w *buf) Read(p []byte) (int, error) {
	if len(w.b) == 0 {
		return 0, errEOF
	}
	n := copy(p, w.b)
	w.b = w.b[n:]
	return n, nil
}

var errEOF = io.EOF

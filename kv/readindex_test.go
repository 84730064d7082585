package kv

import "testing"

func TestReadIndexAnswerEncoding(t *testing.T) {
	for _, a := range []readIndexAnswer{{}, {Index: 7, Now: 1_765_000_000_000_000_000, Term: 3, EntryTerm: 2, Visible: 6}, {Index: 1 << 62, Now: -5, Term: 1, Visible: 1 << 62}} {
		got, err := decodeReadIndexAnswer(encodeReadIndexAnswer(a, true))
		if err != nil || got != a {
			t.Errorf("round trip of %+v: %+v, %v", a, got, err)
		}
		// A leader of the previous version sends four numbers: no gate.
		got, err = decodeReadIndexAnswer(encodeReadIndexAnswer(a, false))
		want := a
		want.Visible = noGate
		if err != nil || got != want {
			t.Errorf("round trip of %+v without the visible index: %+v, %v", a, got, err)
		}
	}
	full := encodeReadIndexAnswer(readIndexAnswer{Index: 300, Now: 1, Term: 2, EntryTerm: 2, Visible: 300}, true)
	for _, bad := range [][]byte{nil, full[:len(full)-1], append(full, 0), {0x80}, full[:3]} {
		if _, err := decodeReadIndexAnswer(bad); err == nil {
			t.Errorf("decodeReadIndexAnswer(%v) took a malformed answer", bad)
		}
	}
}

func TestReadIndexRequestEncoding(t *testing.T) {
	b := readIndexRequest(1<<40, 7)
	if applied, need, ok := decodeReadIndexRequest(b); !ok || applied != 1<<40 || need != 7 {
		t.Errorf("round trip: %d %d %v", applied, need, ok)
	}
	for _, bad := range [][]byte{{0x80}, b[:len(b)-1], append(b, 1)} {
		if _, _, ok := decodeReadIndexRequest(bad); ok {
			t.Errorf("decodeReadIndexRequest(%v) took a malformed request", bad)
		}
	}
}

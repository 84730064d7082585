package kv

import "testing"

func TestReadIndexAnswerEncoding(t *testing.T) {
	for _, a := range []readIndexAnswer{{}, {Index: 7, Now: 1_765_000_000_000_000_000, Term: 3, EntryTerm: 2}, {Index: 1 << 62, Now: -5, Term: 1}} {
		got, err := decodeReadIndexAnswer(encodeReadIndexAnswer(a))
		if err != nil || got != a {
			t.Errorf("round trip of %+v: %+v, %v", a, got, err)
		}
	}
	full := encodeReadIndexAnswer(readIndexAnswer{Index: 300, Now: 1, Term: 2, EntryTerm: 2})
	for _, bad := range [][]byte{nil, full[:len(full)-1], append(full, 0), {0x80}} {
		if _, err := decodeReadIndexAnswer(bad); err == nil {
			t.Errorf("decodeReadIndexAnswer(%v) took a malformed answer", bad)
		}
	}
}

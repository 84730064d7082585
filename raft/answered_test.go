package raft

import (
	"io"
	"testing"
)

// LastAnswered counts bytes on connections a node dialed only: what a
// peer sends over a connection it dialed itself proves nothing about
// whether this node's own messages reach it (a one-way cut), so the
// membership probes that skip a peer that answered must not count it.
func TestLastAnsweredCountsOnlyConnectionsThisNodeDialed(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a, err := Listen("127.0.0.1:0", TransportConfig{NodeID: "a", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen("127.0.0.1:0", TransportConfig{NodeID: "b", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// a dials b; b answers on the connection it accepted.
	ca, err := a.dial(t.Context(), b.Addr().String(), chanHTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	if _, err := ca.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	cb, err := b.HTTPListener().Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(cb, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ca, buf); err != nil {
		t.Fatal(err)
	}

	if a.lastAnswered("b").IsZero() || a.lastHeard("b").IsZero() {
		t.Fatalf("a: answered %v heard %v by b, want both set", a.lastAnswered("b"), a.lastHeard("b"))
	}
	if b.lastHeard("a").IsZero() {
		t.Fatal("b heard nothing from a")
	}
	if got := b.lastAnswered("a"); !got.IsZero() {
		t.Fatalf("b counts a's bytes on a connection a dialed as an answer (%v)", got)
	}
}

package testport

import (
	"net"
	"strconv"
	"testing"
)

func TestPortsAreUniqueAndOutsideTheEphemeralRange(t *testing.T) {
	elo, ehi := ephemeralRange()
	seen := map[string]bool{}
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for i := range 200 {
		var addr string
		if i%2 == 0 {
			ln := Listen(t)
			held = append(held, ln)
			addr = ln.Addr().String()
		} else {
			addr = Addr(t)
		}
		if seen[addr] {
			t.Fatalf("port %s handed out twice", addr)
		}
		seen[addr] = true
		_, ps, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(ps)
		if p >= elo && p <= ehi {
			t.Fatalf("port %d lies in the ephemeral range [%d, %d]", p, elo, ehi)
		}
	}
}

func TestAddrCanBeBound(t *testing.T) {
	addr := Addr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("bind %s handed out by Addr: %v", addr, err)
	}
	ln.Close()
}

package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// TB is the part of testing.TB that testport needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// lowest is the lowest port handed out: below it sit well-known and
// registered services a developer may run (databases, caches, the
// product's own defaults such as 7070 and 8080).
const lowest = 10000

var (
	mu     sync.Mutex
	handed = map[int]bool{} // ports this process handed out; never reused
)

// Listen returns a TCP listener on a fresh 127.0.0.1 port. The caller owns
// it; no other call in this process returns the same port.
func Listen(t TB) net.Listener {
	t.Helper()
	ln, err := listen()
	if err != nil {
		t.Fatalf("testport: %v", err)
	}
	return ln
}

// Addr returns a 127.0.0.1 address that nothing listens on right now and
// that no other call in this process returns, for a server that binds it
// itself. Another process could still bind it first; the port sits
// outside the ephemeral range, so only a program that picks fixed ports
// in the same range can.
func Addr(t TB) string {
	t.Helper()
	ln, err := listen()
	if err != nil {
		t.Fatalf("testport: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("testport: close probe listener on %s: %v", addr, err)
	}
	return addr
}

// MustAddr is Addr for code without a testing.TB (examples); it panics
// when no port can be found.
func MustAddr() string {
	ln, err := listen()
	if err != nil {
		panic(fmt.Sprintf("testport: %v", err))
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func listen() (net.Listener, error) {
	lo, hi := candidates()
	mu.Lock()
	defer mu.Unlock()
	var lastErr error
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if handed[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			lastErr = err
			continue
		}
		handed[p] = true
		return ln, nil
	}
	return nil, fmt.Errorf("no free 127.0.0.1 port in [%d, %d) after 200 tries (last: %v)", lo, hi, lastErr)
}

// candidates returns the range [lo, hi) to pick from: from lowest up to
// the start of the ephemeral range. If that range is too small (a machine
// that made nearly every port ephemeral), it falls back to the ports
// above the ephemeral range.
func candidates() (lo, hi int) {
	elo, ehi := ephemeralRange()
	if elo-lowest >= 1000 {
		return lowest, elo
	}
	if 65536-(ehi+1) >= 1000 {
		return ehi + 1, 65536
	}
	return lowest, 65536
}

// ephemeralRange reads the kernel's local port range, or returns Linux's
// default when it cannot.
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l <= 0 || h < l || h > 65535 {
		return lo, hi
	}
	return l, h
}

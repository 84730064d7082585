package raft

import (
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Faults is the fault-injection seam of the cluster transport. One Faults
// value is shared by every node of an in-process test cluster; production
// nodes have none (every hook is skipped when it is nil).
//
// What it can do to the link between two nodes:
//   - Cut: refuse new connections after the handshake (both ends know each
//     other's node id by then) and sever the existing ones — a partition.
//   - CutOneWay: bytes from one node to the other stall, as if every packet
//     in that direction were lost; new dials in that direction fail.
//   - Delay: every write on the link waits before it is sent.
//   - Drop: each write on the link resets the connection with a probability.
//   - Pause: every connection of a node stalls in both directions, as if the
//     process were frozen (SIGSTOP) as far as its peers can tell.
type Faults struct {
	mu     sync.Mutex
	cut    map[[2]string]bool // {from, to}: from may not talk to to
	oneWay map[[2]string]bool
	delay  map[[2]string]time.Duration
	drop   map[[2]string]float64
	paused map[string]bool
	wake   chan struct{} // closed and replaced on every change
	nodes  map[*Transport]struct{}
}

// errDropped is returned by a write that the fault seam dropped.
var errDropped = errors.New("connection reset by fault injection")

// NewFaults returns a Faults with every link open.
func NewFaults() *Faults {
	return &Faults{
		cut:    make(map[[2]string]bool),
		oneWay: make(map[[2]string]bool),
		delay:  make(map[[2]string]time.Duration),
		drop:   make(map[[2]string]float64),
		paused: make(map[string]bool),
		wake:   make(chan struct{}),
		nodes:  make(map[*Transport]struct{}),
	}
}

func (f *Faults) register(t *Transport) {
	f.mu.Lock()
	f.nodes[t] = struct{}{}
	f.mu.Unlock()
}

func (f *Faults) unregister(t *Transport) {
	f.mu.Lock()
	delete(f.nodes, t)
	f.mu.Unlock()
}

// changed wakes stalled writers; call with f.mu held.
func (f *Faults) changed() {
	close(f.wake)
	f.wake = make(chan struct{})
}

// blocked reports whether a new connection between local and peer, dialled
// by local when dialer is true, must be refused.
func (f *Faults) blocked(local, peer string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cut[[2]string{local, peer}] || f.cut[[2]string{peer, local}]
}

func (f *Faults) dialBlocked(local, peer string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.oneWay[[2]string{local, peer}]
}

// gate runs before a write (write=true) or read on a connection from local
// to peer: it stalls while the link is one-way cut or either node paused,
// waits out an injected delay, and may drop the connection. A stall ends
// with os.ErrDeadlineExceeded once the connection's deadline (by: Unix
// nanoseconds, 0 for none, read again as it changes) has passed, as a
// socket with nothing to read would.
func (f *Faults) gate(local, peer string, write bool, closed <-chan struct{}, by *atomic.Int64) error {
	for {
		f.mu.Lock()
		link := [2]string{local, peer}
		stall := f.paused[local] || f.paused[peer] || (write && f.oneWay[link])
		delay, drop, wake := f.delay[link], f.drop[link], f.wake
		f.mu.Unlock()
		if stall {
			if dl := by.Load(); dl != 0 && time.Now().UnixNano() >= dl {
				return os.ErrDeadlineExceeded
			}
			// A deadline set while stalled must end the stall too: look
			// again every few milliseconds (tests only).
			t := time.NewTimer(10 * time.Millisecond)
			var err error
			select {
			case <-wake:
			case <-closed:
				err = errDropped
			case <-t.C:
			}
			t.Stop()
			if err != nil {
				return err
			}
			continue
		}
		if !write {
			return nil
		}
		if drop > 0 && rand.Float64() < drop {
			return errDropped
		}
		if delay > 0 {
			t := time.NewTimer(delay) // injected latency
			select {
			case <-t.C:
			case <-closed:
				t.Stop()
				return errDropped
			}
		}
		return nil
	}
}

func (f *Faults) transports(ids ...string) []*Transport {
	var ts []*Transport
	for t := range f.nodes {
		for _, id := range ids {
			if t.nodeID == id {
				ts = append(ts, t)
			}
		}
	}
	return ts
}

// Cut blocks the link between a and b in both directions and severs the
// connections that exist on it.
func (f *Faults) Cut(a, b string) {
	f.mu.Lock()
	f.cut[[2]string{a, b}] = true
	f.cut[[2]string{b, a}] = true
	ts := f.transports(a, b)
	f.changed()
	f.mu.Unlock()
	for _, t := range ts {
		if t.nodeID == a {
			t.sever(b)
		} else {
			t.sever(a)
		}
	}
}

// CutOneWay stalls every byte from `from` to `to`; the other direction
// still flows, but TCP-carried request/response traffic started by either
// side stops making progress, which is what Raft sees of such a fault.
func (f *Faults) CutOneWay(from, to string) {
	f.mu.Lock()
	f.oneWay[[2]string{from, to}] = true
	f.changed()
	f.mu.Unlock()
}

// Delay adds d before every write on the link a→b and b→a.
func (f *Faults) Delay(a, b string, d time.Duration) {
	f.mu.Lock()
	f.delay[[2]string{a, b}] = d
	f.delay[[2]string{b, a}] = d
	f.changed()
	f.mu.Unlock()
}

// Drop resets a connection on the link a↔b at each write with probability p.
func (f *Faults) Drop(a, b string, p float64) {
	f.mu.Lock()
	f.drop[[2]string{a, b}] = p
	f.drop[[2]string{b, a}] = p
	f.changed()
	f.mu.Unlock()
}

// Pause freezes every cluster connection of node id until Resume.
func (f *Faults) Pause(id string) {
	f.mu.Lock()
	f.paused[id] = true
	f.changed()
	f.mu.Unlock()
}

// Resume lets a paused node's connections flow again; what it queued while
// paused is delivered, as after a SIGCONT.
func (f *Faults) Resume(id string) {
	f.mu.Lock()
	delete(f.paused, id)
	f.changed()
	f.mu.Unlock()
}

// Mend opens the link between a and b again (cut, one-way, delay, drop).
func (f *Faults) Mend(a, b string) {
	f.mu.Lock()
	for _, k := range [][2]string{{a, b}, {b, a}} {
		delete(f.cut, k)
		delete(f.oneWay, k)
		delete(f.delay, k)
		delete(f.drop, k)
	}
	f.changed()
	f.mu.Unlock()
}

// MendAll opens every link and resumes every node.
func (f *Faults) MendAll() {
	f.mu.Lock()
	clear(f.cut)
	clear(f.oneWay)
	clear(f.delay)
	clear(f.drop)
	clear(f.paused)
	f.changed()
	f.mu.Unlock()
}

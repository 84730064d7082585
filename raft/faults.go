package raft

import "sync"

// Faults is the fault-injection seam of the cluster transport. One Faults
// value is shared by every node of an in-process test cluster; production
// nodes have none. A blocked link refuses new connections after the
// handshake (both ends know each other's node id by then) and severs the
// ones that exist, which is what a network partition looks like to Raft and
// to node-to-node RPC.
type Faults struct {
	mu    sync.Mutex
	cut   map[[2]string]bool // {from, to}: from may not talk to to
	nodes map[*Transport]struct{}
}

// NewFaults returns a Faults with every link open.
func NewFaults() *Faults {
	return &Faults{cut: make(map[[2]string]bool), nodes: make(map[*Transport]struct{})}
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

func (f *Faults) blocked(local, peer string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cut[[2]string{local, peer}] || f.cut[[2]string{peer, local}]
}

// Cut blocks the link between a and b in both directions and severs the
// connections that exist on it.
func (f *Faults) Cut(a, b string) {
	f.mu.Lock()
	f.cut[[2]string{a, b}] = true
	f.cut[[2]string{b, a}] = true
	var ts []*Transport
	for t := range f.nodes {
		if t.nodeID == a || t.nodeID == b {
			ts = append(ts, t)
		}
	}
	f.mu.Unlock()
	for _, t := range ts {
		if t.nodeID == a {
			t.sever(b)
		} else {
			t.sever(a)
		}
	}
}

// Mend opens the link between a and b again.
func (f *Faults) Mend(a, b string) {
	f.mu.Lock()
	delete(f.cut, [2]string{a, b})
	delete(f.cut, [2]string{b, a})
	f.mu.Unlock()
}

// MendAll opens every link.
func (f *Faults) MendAll() {
	f.mu.Lock()
	clear(f.cut)
	f.mu.Unlock()
}

package main

import (
	"fmt"
	"testing"
)

// TestSessionPickerSpreadsWorkers checks that the writes scenario's workers
// each keep to sessions of their own and, together, reach every node: at
// 64 writers over 64 sessions created round-robin on three nodes, every
// worker writes its own session and each node serves a third of them.
func TestSessionPickerSpreadsWorkers(t *testing.T) {
	bases := []string{"n1", "n2", "n3"}
	clients := make([]client, 64)
	for i := range clients {
		clients[i] = client{base: bases[i%len(bases)], cookie: fmt.Sprintf("s%d", i)}
	}

	pick := sessionPicker(clients, 64)
	owner := map[string]int{}
	perNode := map[string]int{}
	for round := range 3 {
		for w := range 64 {
			c := pick(w)
			if prev, ok := owner[c.cookie]; ok && prev != w {
				t.Fatalf("round %d: workers %d and %d both write session %s", round, prev, w, c.cookie)
			}
			owner[c.cookie] = w
			if round == 0 {
				perNode[c.base]++
			}
		}
	}
	if len(owner) != 64 {
		t.Fatalf("64 workers wrote %d sessions, want 64", len(owner))
	}
	for _, b := range bases {
		if perNode[b] < 21 {
			t.Errorf("node %s serves %d workers, want 21 or 22 (%v)", b, perNode[b], perNode)
		}
	}

	// One writer visits every session in turn.
	pick = sessionPicker(clients, 1)
	seen := map[string]bool{}
	for range 64 {
		seen[pick(0).cookie] = true
	}
	if len(seen) != 64 {
		t.Errorf("one writer visited %d sessions in 64 writes, want all 64", len(seen))
	}
}

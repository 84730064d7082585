package kv_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// history collects the operations of concurrent clients for porcupine.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	open  []int // operations whose outcome the client never learned
}

func newHistory() *history { return &history{start: time.Now()} }

// now is the history's clock.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

// add records op; an unknown one may linearize any time after its call.
func (h *history) add(op porcupine.Operation, unknown bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if unknown {
		h.open = append(h.open, len(h.ops))
	}
	h.ops = append(h.ops, op)
}

// done closes the operations with unknown outcomes after the last one and
// returns the history.
func (h *history) done() []porcupine.Operation {
	end := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, i := range h.open {
		h.ops[i].Return = end + 1
	}
	return h.ops
}

// underNemesis runs 4 clients for 2.5 s while the shared nemesis strikes
// once, then heals the cluster and waits for a leader. work runs one
// client's loop until ctx ends; its rng is the client's own.
func underNemesis(t *testing.T, k *kvCluster, seed uint64, work func(ctx context.Context, client int, rng *rand.Rand)) (what string) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for client := 0; client < 4; client++ {
		crng := rand.New(rand.NewPCG(seed, uint64(client)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(ctx, client, crng)
		}()
	}
	<-time.After(time.Duration(300+rng.IntN(500)) * time.Millisecond) // when the fault starts
	what, undo := k.Strike(rng)
	<-time.After(time.Duration(500+rng.IntN(700)) * time.Millisecond) // how long it lasts
	undo()
	wg.Wait()
	k.Heal()
	k.WaitLeader(t)
	return what
}

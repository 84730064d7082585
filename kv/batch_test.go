package kv

import (
	"testing"
	"time"
)

// gatherStore is a Store with just what gatherReturning reads: a queue,
// the generation and the last batch's figures.
func gatherStore(lastBatch int, lastRound time.Duration, gen uint64) *Store {
	s := &Store{queue: make(chan *pending, 16), stop: make(chan struct{}), lastBatch: lastBatch, lastRound: lastRound}
	s.gen.Store(gen)
	return s
}

func pendings(n int, gen uint64) []*pending {
	out := make([]*pending, n)
	for i := range out {
		out[i] = &pending{op: []byte{byte(i)}, gen: gen, done: make(chan struct{})}
	}
	return out
}

// TestGatherWaitsForReturningWriters: the writers of the last batch, and
// those that queued while it was on its way, share the next batch instead
// of alternating between two half-size ones.
func TestGatherWaitsForReturningWriters(t *testing.T) {
	// Three writers were in the last batch, two queued during its round
	// (an older generation): five are active. The batch starts with the
	// two and one returning writer; two more return while it waits.
	s := gatherStore(3, time.Hour, 7)
	batch := append(pendings(2, 6), pendings(1, 7)...)
	go func() {
		for _, p := range pendings(2, 7) {
			s.queue <- p
		}
	}()
	got, size := s.gatherReturning(batch, 3)
	if len(got) != 5 || size != 5 {
		t.Fatalf("batch of %d operations (%d bytes); want the 5 active writers", len(got), size)
	}
}

// TestGatherLoneWriterDoesNotWait: a writer alone in its last batch is
// the whole of the next one; what else is queued is left for the loop.
func TestGatherLoneWriterDoesNotWait(t *testing.T) {
	s := gatherStore(1, time.Hour, 3)
	s.queue <- pendings(1, 3)[0]
	got, _ := s.gatherReturning(pendings(1, 3), 1)
	if len(got) != 1 || len(s.queue) != 1 {
		t.Fatalf("batch of %d, %d left queued; want 1 and 1", len(got), len(s.queue))
	}
}

// TestGatherGivesUp: writers that do not come back cost at most a quarter
// of the last round (here 1 ms), then the batch goes as it is; after a
// failed round there is nothing to wait for.
func TestGatherGivesUp(t *testing.T) {
	s := gatherStore(5, 4*time.Millisecond, 2)
	if got, _ := s.gatherReturning(pendings(1, 2), 1); len(got) != 1 {
		t.Fatalf("batch of %d; want 1 (nobody came back)", len(got))
	}
	s = gatherStore(0, 4*time.Millisecond, 2)
	s.queue <- pendings(1, 2)[0]
	if got, _ := s.gatherReturning(pendings(1, 2), 1); len(got) != 1 || len(s.queue) != 1 {
		t.Fatalf("batch of %d after a failed round; want 1, no wait", len(got))
	}
}

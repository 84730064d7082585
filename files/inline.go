package files

import (
	"context"
	"sync"
)

// inlineQueue holds the content of small files committed through the Raft
// log until it is written to the blob store, so the write (a file create,
// the costly part) stays off the Raft apply path. Before the store starts
// (log replay at boot) Apply writes synchronously, so memory stays bounded.
type inlineQueue struct {
	blobs *blobStore

	mu       sync.Mutex
	async    bool              // the writer goroutine runs
	pending  map[string][]byte // committed, not yet written
	unsynced map[string]bool   // written without fsync since the last snapshot
	wake     chan struct{}
	// written, if set, is called after a batch of asynchronous writes.
	written func()
}

func newInlineQueue(b *blobStore) *inlineQueue {
	return &inlineQueue{blobs: b, pending: make(map[string][]byte), unsynced: make(map[string]bool), wake: make(chan struct{}, 1)}
}

// add is called by Apply with a committed inline blob.
func (q *inlineQueue) add(sum string, data []byte) {
	q.mu.Lock()
	if !q.async {
		q.mu.Unlock()
		q.write(sum, data)
		return
	}
	q.pending[sum] = data
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// write stores one blob and remembers it for the next snapshot's fsync.
// A failed write only leaves the blob missing: catch-up fetches it.
func (q *inlineQueue) write(sum string, data []byte) bool {
	wrote, err := q.blobs.writeInline(sum, data)
	q.mu.Lock()
	if wrote {
		q.unsynced[sum] = true
	}
	if err == nil {
		delete(q.pending, sum)
	}
	q.mu.Unlock()
	return err == nil
}

// flush writes blob sum now if it is still queued; it reports whether it
// was queued.
func (q *inlineQueue) flush(sum string) bool {
	q.mu.Lock()
	data, ok := q.pending[sum]
	q.mu.Unlock()
	if !ok {
		return false
	}
	return q.write(sum, data)
}

// run writes queued blobs until ctx ends, then goes back to synchronous
// writes after draining.
func (q *inlineQueue) run(ctx context.Context) {
	q.mu.Lock()
	q.async = true
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.async = false
		q.mu.Unlock()
		q.drain()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		}
		q.drain()
	}
}

func (q *inlineQueue) drain() {
	q.mu.Lock()
	batch := make(map[string][]byte, len(q.pending))
	for k, v := range q.pending {
		batch[k] = v
	}
	q.mu.Unlock()
	for sum, data := range batch {
		q.write(sum, data)
	}
	if len(batch) > 0 && q.written != nil {
		q.written()
	}
}

// queued reports whether blob sum waits to be written.
func (q *inlineQueue) queued(sum string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.pending[sum]
	return ok
}

// snapshot is called on the Apply goroutine: it takes what the next
// Persist must make durable (queued blobs and unsynced ones).
func (q *inlineQueue) snapshot() (pending map[string][]byte, unsynced []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	pending = make(map[string][]byte, len(q.pending))
	for k, v := range q.pending {
		pending[k] = v
	}
	for sum := range q.unsynced {
		unsynced = append(unsynced, sum)
	}
	clear(q.unsynced)
	return pending, unsynced
}

// persist writes the queued blobs of a snapshot and fsyncs every blob it
// names.
func (q *inlineQueue) persist(pending map[string][]byte, unsynced []string) error {
	for sum, data := range pending {
		if _, err := q.blobs.writeInline(sum, data); err != nil {
			return err
		}
		unsynced = append(unsynced, sum)
	}
	return q.blobs.syncAll(unsynced)
}

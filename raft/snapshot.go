package raft

import (
	"strings"
	"time"

	hraft "github.com/hashicorp/raft"
)

// snapshotNow asks Raft for a snapshot, again for up to five seconds while
// the state machines are ahead of Raft (errAhead: Raft is about to hand
// them the entries a catch-up applied). hashicorp/raft formats the FSM's
// error with %v, so it is recognised by its text.
func snapshotNow(r *hraft.Raft) hraft.SnapshotFuture {
	deadline := time.Now().Add(5 * time.Second)
	for {
		f := r.Snapshot()
		err := f.Error()
		if err == nil || !strings.Contains(err.Error(), errAhead.Error()) || time.Now().After(deadline) {
			return f
		}
		time.Sleep(20 * time.Millisecond) // Raft hands the entries over within a commit timeout
	}
}

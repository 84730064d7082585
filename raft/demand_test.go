package raft

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
)

// Refresh refreshes while reads come, parks once they stop, and a read
// after the pause wakes it again.
func TestDemandParksWhenIdleAndWakesOnARead(t *testing.T) {
	d := NewDemand()
	var calls atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Refresh(ctx, 2*time.Millisecond, 30*time.Millisecond, func(context.Context) { calls.Add(1) })
	}()
	defer func() { cancel(); <-done }()

	d.Note(time.Now().UnixNano())
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return calls.Load() >= 3, "no refreshes while a read was recent"
	})
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return d.parked.Load(), "the loop did not park once reads stopped"
	})
	parkedAt := calls.Load()
	// Parked: no timer, no call, however long it stays idle. The window
	// (an absence to observe, not a state to wait for) is fifty intervals,
	// so a loop still ticking would show.
	<-time.After(100 * time.Millisecond)
	if n := calls.Load(); n != parkedAt {
		t.Fatalf("refreshed %d times while parked", n-parkedAt)
	}

	d.Note(time.Now().UnixNano())
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return calls.Load() >= parkedAt+2, "a read after the pause did not wake the loop"
	})
}

// Note is rate-limited: reads within demandSpacing of the last stored one
// store nothing.
func TestDemandNoteIsSpaced(t *testing.T) {
	d := NewDemand()
	now := time.Now().UnixNano()
	d.Note(now)
	d.Note(now + int64(demandSpacing/2))
	if got := d.last.Load(); got != now {
		t.Fatalf("last = %d, want the first note %d", got, now)
	}
	d.Note(now + int64(2*demandSpacing))
	if got := d.last.Load(); got != now+int64(2*demandSpacing) {
		t.Fatalf("a note after the spacing was not stored")
	}
}

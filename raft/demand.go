package raft

import (
	"context"
	"sync/atomic"
	"time"
)

// demandSpacing is the shortest time between two stores of a Demand's
// clock: readers on every core note their demand, and a word written on
// each read would bounce between the cores' caches.
const demandSpacing = 50 * time.Millisecond

// Demand keeps a read lease fresh only while reads want it: Note records
// a read, and Refresh calls its function every interval while a read came
// within the idle time, and otherwise parks, with no timer running, until
// the next Note. An idle node's timers cost CPU each time they fire (two
// tickers every 42 ms were a tenth of an idle node's wake-ups); the first
// read after a pause does not wait for the loop: it passes a read index
// itself, as it would with a stale lease.
//
// The zero value is not ready: use NewDemand.
type Demand struct {
	last   atomic.Int64 // unix ns of the last noted read
	parked atomic.Bool  // Refresh waits on wake
	wake   chan struct{}
}

// NewDemand returns a Demand with no read noted.
func NewDemand() *Demand {
	return &Demand{wake: make(chan struct{}, 1)}
}

// Note records a read at now (unix nanoseconds) and wakes a parked
// Refresh. It is cheap enough for every read: at most one store per 50 ms.
func (d *Demand) Note(now int64) {
	if now-d.last.Load() <= int64(demandSpacing) {
		return
	}
	d.last.Store(now)
	if d.parked.Load() && d.parked.CompareAndSwap(true, false) {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// wanted reports whether a read was noted less than idle before now.
func (d *Demand) wanted(now time.Time, idle time.Duration) bool {
	return now.Sub(time.Unix(0, d.last.Load())) < idle
}

// Refresh calls refresh every interval while a read came within idle, parks while
// not, and returns when ctx ends.
func (d *Demand) Refresh(ctx context.Context, interval, idle time.Duration, refresh func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if d.wanted(now, idle) {
				refresh(ctx)
				continue
			}
			t.Stop()
			d.parked.Store(true)
			// A Note between the check above and the store saw the
			// loop running: look again before waiting.
			if !d.wanted(time.Now(), idle) {
				select {
				case <-ctx.Done():
					return
				case <-d.wake:
				}
			}
			d.parked.Store(false)
			refresh(ctx)
			t.Reset(interval)
		}
	}
}

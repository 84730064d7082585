package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Apply leases let a follower answer reads of chosen state (the commands
// named by LeaseCommands) from what it applied, without a round trip to
// the leader: while a follower holds one, the leader acknowledges no such
// command before that follower applied it or its lease ran out. The
// promise is that a read starting after a command's acknowledgement sees
// it — close-to-open, what files/mount needs for its lookups and opens.
// It is not, by itself, linearizability: a command is visible on the
// leader (and on a holder that applied it) before its acknowledgement, so
// a holder that has not applied it yet can still answer the older state to
// a read that starts after another read saw the newer one. Linearizable
// reads (package kv) add the visible index: every holder applied it, and
// a read shows no entry above it (VisibleIndex, AwaitVisible,
// LeaseVisible).
//
// Holder: a follower whose reads want a lease (LeaseHeld notes the demand)
// asks the leader for one every third of a read lease while they come,
// and parks 1 s after the last (Demand). The lease runs one ReadLease from
// when the follower *sent* its request, and is usable only once the
// follower applied the index the grant names (the leader's applied index
// after it recorded the holder: every leased command acknowledged without
// waiting for this holder is at or below it).
//
// Leader: a grant records the holder until one lease plus a margin after
// the request *arrived* (later than the holder's own end), then confirms
// leadership with a quorum (as a read index does) before it answers, so a
// deposed leader grants nothing: a quorum that confirmed it at T elects no
// other leader before T plus a heartbeat timeout (Timing), four leases
// later. A leased command's acknowledgement (applyLocal, for local and
// forwarded commands alike) waits until every other holder applied it:
// the leader pushes its commit to such a holder at once (the commit push's
// handler, which answers once the follower applied it), and a holder that
// does not answer is waited for only until its lease ends. The follower
// that proposed the command is not waited for: it applies it itself before
// it answers its caller. A new leader acknowledges no leased command for
// one lease after it took over (the fence), in case the timing argument
// above ran short.

const (
	// leaseCall is the leader call that grants an apply lease.
	leaseCall = "raft.lease"
	// leaseIdle is how long a holder keeps renewing its lease after the
	// last read that wanted one. Shorter than the read leases' 5 s: a
	// holder costs the writers (each leased write waits for its apply),
	// and a follower whose mount was used once should not slow the
	// leader's writes for long.
	leaseIdle = time.Second
	// leaseMargin is added to a holder's lease on the leader, for clock
	// rate drift between the two nodes.
	leaseMargin = 10 * time.Millisecond
	// leasePushRetry is the pause before a failed push to a holder is
	// tried again while a command waits for it.
	leasePushRetry = 5 * time.Millisecond
)

// grant is one apply lease as its holder sees it.
type grant struct {
	until time.Time // the holder's clock: from when it asked, plus a lease
	need  uint64    // usable once this node applied this index
	// gated: the grant came with a visible index (VisibleIndex), so its
	// leader leases every command type this version leases and gates
	// what reads may show (LeaseVisible). A leader of the previous
	// version sends none.
	gated bool
}

// holder is one follower's apply lease as the leader sees it.
type holder struct {
	addr    string    // its cluster address, for commit pushes
	until   time.Time // the leader's clock: its lease has surely ended by then
	applied uint64    // newest index it is known to have applied
	pushing bool      // a commit push to it is under way
	retry   time.Time // no push before this (the last one failed)
	want    uint64    // newest index a command waited for it to apply
	waiting time.Time // since when a command waits for it (zero: none)
}

// caughtUp clears the wait once the holder applied what was waited for.
func (h *holder) caughtUp() {
	if h.applied >= h.want {
		h.waiting = time.Time{}
	}
}

// applyLeases is both sides of the apply leases of one node.
type applyLeases struct {
	types  map[string]bool // LeaseCommands; set before Start, read-only after
	demand *Demand         // the holder side's reads

	mu      sync.Mutex
	held    [2]grant           // holder: the two newest grants
	visible uint64             // holder: the newest visible index learned (LeaseVisible)
	holders map[string]*holder // leader: by node id
	fence   time.Time          // leader: no leased acknowledgement before this
	changed chan struct{}      // closed when a holder's applied index moves
}

// LeaseCommands makes commands of the given types apply-leased: the
// leader acknowledges one only once every follower holding an apply lease
// applied it, so a follower holding one (LeaseHeld) may answer reads of
// the state they change from what it applied. Call it before Start.
func (c *Cluster) LeaseCommands(types ...string) {
	if c.leases.types == nil {
		c.leases.types = make(map[string]bool)
	}
	for _, t := range types {
		c.leases.types[t] = true
	}
}

// leasing reports whether apply leases are in use on this node: some
// command type is leased and followers apply from their own log
// (FollowerCatchUp), which the commit pushes to holders rely on.
func (c *Cluster) leasing() bool {
	return len(c.leases.types) > 0 && c.cfg.FollowerCatchUp
}

// LeaseHeld reports whether this follower holds an apply lease now and
// applied what its grant named: then every leased command the leader
// acknowledged before this call is applied here, and a read of their
// state that starts after this call may answer from the local state. It
// notes the demand, so a follower asking it keeps (or gets) a lease while
// it asks; the first calls after a pause answer false. Always false on
// the leader, which answers from its own state anyway.
func (c *Cluster) LeaseHeld() bool {
	ok, _ := c.usableGrant(false)
	return ok
}

// LeaseVisible is LeaseHeld for reads that must also be linearizable
// (package kv): ok when this follower holds a usable apply lease granted
// by a leader of this version, and visible is the newest index known to
// be applied by every holder (VisibleIndex). A read may answer from local
// state what only entries at or below visible wrote; a newer entry may not
// be applied by another holder yet, which would then answer the older
// state after this read answered the newer (AwaitVisible instead).
// visible is returned even when ok is false: it holds whatever the lease.
func (c *Cluster) LeaseVisible() (visible uint64, ok bool) {
	ok, visible = c.usableGrant(true)
	return visible, ok
}

// usableGrant notes the demand for a lease and reports whether this
// follower holds a grant that holds now, whose index it applied, and (with
// gated) that carried a visible index; and the visible index it knows.
func (c *Cluster) usableGrant(gated bool) (ok bool, visible uint64) {
	if !c.leasing() || c.IsLeader() {
		return false, c.notedVisible()
	}
	now := time.Now()
	c.leases.demand.Note(now.UnixNano())
	applied := c.router.applied.get()
	c.leases.mu.Lock()
	defer c.leases.mu.Unlock()
	for _, g := range c.leases.held {
		if (g.gated || !gated) && now.Before(g.until) && applied >= g.need {
			return true, c.leases.visible
		}
	}
	return false, c.leases.visible
}

// NoteVisible records a visible index learned from the leader (a read
// index answer): every apply lease holder has applied it, and any node
// granted a lease later applies it before it uses the lease, so it stays
// true.
func (c *Cluster) NoteVisible(index uint64) {
	c.leases.mu.Lock()
	c.leases.visible = max(c.leases.visible, index)
	c.leases.mu.Unlock()
}

// notedVisible is the newest visible index this node learned.
func (c *Cluster) notedVisible() uint64 {
	c.leases.mu.Lock()
	defer c.leases.mu.Unlock()
	return c.leases.visible
}

// VisibleIndex, on the leader, is the newest index that this leader and
// every follower holding an apply lease (as the leader sees their leases)
// applied. An entry above it may be missing from a holder's state, which
// answers reads without asking: a linearizable read shows no write above
// it (AwaitVisible). It never exceeds the leader's applied index, so a
// follower granted a lease later (its grant names the leader's applied
// index) has applied it too.
func (c *Cluster) VisibleIndex() uint64 {
	v := c.router.applied.get()
	if !c.leasing() {
		return v
	}
	now := time.Now()
	l := &c.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.fence) {
		// A follower may still hold a lease of the last leader, unknown
		// here, and miss any entry: nothing is visible until it ended.
		return 0
	}
	for _, h := range l.holders {
		if now.Before(h.until) && h.applied < v {
			v = h.applied
		}
	}
	return v
}

// AwaitVisible waits, on the leader, until index is visible: the leader
// applied it and every apply lease holder did (a holder's commit is pushed
// to it) or its lease ended. It returns the visible index then, at least
// index: a holder granted its lease meanwhile applies index before it
// reads (VisibleIndex may still count it lower for a moment).
func (c *Cluster) AwaitVisible(ctx context.Context, index uint64) (uint64, error) {
	if err := c.WaitApplied(ctx, index); err != nil {
		return 0, err
	}
	if c.leasing() {
		if err := c.awaitHolders(ctx, index, ""); err != nil {
			return 0, err
		}
	}
	return max(c.VisibleIndex(), index), nil
}

// NoteHolderApplied records, on the leader, that the follower id reports
// having applied index (it says so with its reads), so that VisibleIndex
// need not wait for the next lease renewal to count it.
func (c *Cluster) NoteHolderApplied(id string, index uint64) {
	l := &c.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.holders[id]; h != nil && index > h.applied {
		h.applied = index
		h.caughtUp()
		l.signal()
	}
}

// LeaseStatus reports, without noting a demand, whether this follower
// holds a usable apply lease and, on the leader, how many followers do.
func (c *Cluster) LeaseStatus() (held bool, holders int) {
	if !c.leasing() {
		return false, 0
	}
	now := time.Now()
	applied := c.router.applied.get()
	leader := c.IsLeader()
	c.leases.mu.Lock()
	defer c.leases.mu.Unlock()
	if leader {
		for _, h := range c.leases.holders {
			if now.Before(h.until) {
				holders++
			}
		}
		return false, holders
	}
	for _, g := range c.leases.held {
		if now.Before(g.until) && applied >= g.need {
			return true, 0
		}
	}
	return false, 0
}

// renewLease asks the leader for an apply lease (the holder side's
// Demand.Refresh function).
func (c *Cluster) renewLease(ctx context.Context) {
	if c.IsLeader() {
		return
	}
	lease := c.ReadLease()
	ctx, cancel := context.WithTimeout(ctx, lease)
	defer cancel()
	asked := time.Now()
	out, err := c.CallLeader(ctx, leaseCall, binary.AppendUvarint(nil, c.router.applied.get()))
	if err != nil {
		c.log.Debug("apply lease not granted", "err", err)
		return
	}
	need, n := binary.Uvarint(out)
	if n <= 0 {
		c.log.Warn("apply lease: malformed grant")
		return
	}
	g := grant{until: asked.Add(lease), need: need}
	var visible uint64
	if rest := out[n:]; len(rest) > 0 {
		v, m := binary.Uvarint(rest)
		if m <= 0 || m != len(rest) {
			c.log.Warn("apply lease: malformed grant")
			return
		}
		g.gated, visible = true, v
	}
	c.leases.mu.Lock()
	c.leases.held[0], c.leases.held[1] = c.leases.held[1], g
	c.leases.visible = max(c.leases.visible, visible)
	c.leases.mu.Unlock()
}

// answerLease grants the calling follower an apply lease: it records the
// holder, reads the applied index, confirms leadership with a quorum and
// answers that index.
func (c *Cluster) answerLease(ctx context.Context, payload []byte) ([]byte, error) {
	arrived := time.Now()
	applied, n := binary.Uvarint(payload)
	if n <= 0 || n != len(payload) {
		return nil, errors.New("malformed apply lease request")
	}
	id := PeerID(ctx)
	addr, ok := c.serverAddr(id)
	if !ok {
		return nil, fmt.Errorf("apply lease: %q is not a member of the cluster", id)
	}
	if !c.IsLeader() {
		return nil, fmt.Errorf("apply lease: %w", ErrNoLeader)
	}
	l := &c.leases
	l.mu.Lock()
	if l.holders == nil {
		l.holders = make(map[string]*holder)
	}
	h := l.holders[id]
	if h == nil {
		h = &holder{}
		l.holders[id] = h
	}
	h.addr = addr
	if applied > h.applied {
		h.applied = applied
		h.caughtUp()
		l.signal()
	}
	// A holder that a command has waited for for a lease is not given
	// another: it may reach the leader while the leader's appends and
	// pushes do not reach it (a one-way partition), and renewing its
	// lease would hold every files write up for as long as that lasts.
	// Its lease then ends, and the commands go on without it.
	if !h.waiting.IsZero() && arrived.Sub(h.waiting) > c.ReadLease() {
		want, waited := h.want, arrived.Sub(h.waiting)
		l.mu.Unlock()
		return nil, fmt.Errorf("apply lease refused: %s has not applied entry %d for %v", id, want, waited.Round(time.Millisecond))
	}
	h.until = later(h.until, arrived.Add(c.ReadLease()+leaseMargin))
	l.mu.Unlock()
	// The index is read after the holder was recorded: a leased command
	// acknowledged without waiting for it was applied here before that.
	idx, _, err := c.leaderReadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply lease: leadership not confirmed: %w (%w)", ErrNoLeader, err)
	}
	// The visible index follows: a holder of the previous version reads
	// one number and refuses the grant (it then reads through the
	// leader, as without a lease, until its own upgrade).
	return binary.AppendUvarint(binary.AppendUvarint(nil, idx), c.VisibleIndex()), nil
}

// serverAddr is the cluster address of node id in the latest
// configuration; false when it is not there or cannot be read.
func (c *Cluster) serverAddr(id string) (string, bool) {
	addr, ok, err := c.lookupServer(id)
	return addr, ok && err == nil
}

// leaseFence starts the fence of a new leader: no leased acknowledgement
// for one lease.
func (c *Cluster) leaseFence() {
	c.leases.mu.Lock()
	c.leases.fence = time.Now().Add(c.ReadLease())
	c.leases.mu.Unlock()
}

// signal wakes the commands waiting for holders; l.mu is held.
func (l *applyLeases) signal() {
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// awaitHolders waits until every apply lease holder but origin applied
// index, or its lease ended, and past the new leader's fence. It pushes
// the commit to a holder that has not applied it.
func (c *Cluster) awaitHolders(ctx context.Context, index uint64, origin string) error {
	l := &c.leases
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := time.Now()
		l.mu.Lock()
		pending := now.Before(l.fence)
		var wake time.Time // the earliest time something changes without a signal
		if pending {
			wake = l.fence
		}
		for id, h := range l.holders {
			if !now.Before(h.until) {
				if !h.pushing {
					delete(l.holders, id)
				}
				continue
			}
			if id == origin || h.applied >= index {
				continue
			}
			pending = true
			h.want = max(h.want, index)
			if h.waiting.IsZero() {
				h.waiting = now
			}
			if !h.pushing {
				if now.Before(h.retry) {
					wake = earlier(wake, h.retry)
				} else {
					h.pushing = true
					go c.pushToHolder(id, h.addr)
				}
			}
			wake = earlier(wake, h.until)
		}
		if !pending {
			l.mu.Unlock()
			return nil
		}
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		changed := l.changed
		l.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wake.Sub(now))
		} else {
			timer.Reset(wake.Sub(now))
		}
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for the apply lease holders to apply entry %d: %w", index, ctx.Err())
		case <-c.stop:
			return ErrNotStarted
		}
	}
}

// earlier is the earlier of a and b, ignoring a zero a.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// pushToHolder pushes this node's applied index to the holder id at addr
// and records what it applied.
func (c *Cluster) pushToHolder(id, addr string) {
	idx, term := c.router.applied.getTerm()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // end the push when the node closes
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var d pushDone
	if !c.failLeasePush.Load() {
		d = c.pushCommit(ctx, addr, idx, term)
	}
	l := &c.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.holders[id]
	if h == nil {
		return
	}
	h.pushing = false
	if d.ok {
		if idx > h.applied {
			h.applied = idx
		}
		h.caughtUp()
	} else {
		h.retry = time.Now().Add(leasePushRetry)
	}
	l.signal()
}

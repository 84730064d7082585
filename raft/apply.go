package raft

import (
	"context"
	"errors"
	"fmt"
	"time"

	hraft "github.com/hashicorp/raft"
)

// Result is the outcome of an applied command.
type Result struct {
	Index uint64 // log index of the command
	Data  []byte // what the state machine returned
	term  uint64 // of the entry, when known: lets a follower catch up from its own log
}

// apply is Apply without the wait budget (quorum.go).
func (c *Cluster) apply(ctx context.Context, typ string, payload []byte) (Result, error) {
	r, err := c.running()
	if err != nil {
		return Result{}, err
	}
	if c.applyFn != nil {
		start := time.Now()
		defer func() { c.applyFn(typ, time.Since(start)) }()
	}
	c.stages.mark(stageApply, 0)
	backoff := 10 * time.Millisecond
	for {
		var res Result
		var err error
		if r.State() == hraft.Leader {
			t := c.localInflight.ticket()
			res, err = c.applyLocal(withTicket(ctx, t), c.cfg.NodeID, typ, payload)
			t.release()
		} else {
			// A follower that cannot write its log could not apply the
			// command: refuse it before anything is committed. (A leader
			// tries: its failed write makes it step down.)
			if lerr := c.LogWriteErr(); lerr != nil {
				return Result{}, fmt.Errorf("apply %s: %w", typ, lerr)
			}
			res, err = c.forwardApply(ctx, typ, payload)
			if !c.cfg.FollowerCatchUp {
				res.term = 0 // wait for Raft to apply it here
			}
		}
		if err == nil {
			if werr := c.waitWritable(ctx, res.Index, res.term); werr != nil {
				if errors.Is(werr, ErrLogUnwritable) {
					return res, fmt.Errorf("apply %s: committed as entry %d, but this node cannot apply it: %w", typ, res.Index, werr)
				}
				// Committed, but the wait for this node to apply it
				// ended (the caller's context, the wait budget, a
				// cut-off): the write happened, so the caller must
				// not take the error for a refusal and retry it.
				return res, fmt.Errorf("apply %s: committed as entry %d, but not applied on this node yet: %w: %w", typ, res.Index, ErrOutcomeUnknown, werr)
			}
			c.stages.mark(stageApplied, res.Index)
			return res, nil
		}
		if !errors.Is(err, errRetry) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("apply %s: %w (%w)", typ, ErrNoLeader, ctx.Err())
		case <-c.stop:
			return Result{}, ErrNotStarted
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// errRetry marks an attempt that surely did not append the command.
var errRetry = errors.New("retry")

func (c *Cluster) applyLocal(ctx context.Context, origin, typ string, payload []byte) (Result, error) {
	if len(typ) == 0 || len(typ) > maxTypeLen {
		return Result{}, fmt.Errorf("command type %q: must be 1..%d bytes", typ, maxTypeLen)
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return Result{}, ctx.Err()
		}
	}
	now := time.Now
	if c.cfg.Now != nil {
		now = c.cfg.Now
	}
	data := encodeEnvelope(typ, origin, now(), payload)
	c.stages.mark(stagePropose, 0)
	t := takeTicket(ctx) // settle.go: tracked until Raft answers
	f := c.raft.Apply(data, timeout)
	// Wait for the outcome, the caller's context or our own shutdown:
	// hashicorp/raft can enqueue a command just as it shuts down and then
	// never answer its future, which hung Close. The waiting goroutine
	// ends when the future is answered, which is never for a command that
	// was committed but still queued for the state machine when Raft shut
	// down (its FSM loop drops that queue): then it stays blocked until the
	// process exits, holding only the future.
	errc := make(chan error, 1)
	go func() {
		err := f.Error()
		if t != nil {
			t.done()
		}
		errc <- err
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("apply %s: %w (%w)", typ, ErrOutcomeUnknown, ctx.Err())
	case <-c.stop:
		return Result{}, ErrNotStarted
	}
	if err != nil {
		switch {
		case errors.Is(err, hraft.ErrNotLeader), errors.Is(err, hraft.ErrEnqueueTimeout):
			return Result{}, errRetry
		case errors.Is(err, hraft.ErrLeadershipLost):
			return Result{}, fmt.Errorf("apply %s: %w", typ, ErrOutcomeUnknown)
		case errors.Is(err, hraft.ErrRaftShutdown):
			return Result{}, ErrNotStarted
		}
		if lerr := c.LogWriteErr(); lerr != nil {
			// The leader could not write the entry to its own log: nothing
			// was replicated and hashicorp/raft stepped down, so another
			// leader can take the command.
			c.log.Warn("leader could not write its raft log; it stepped down", "err", lerr)
			return Result{}, errRetry
		}
		return Result{}, fmt.Errorf("apply %s: %w", typ, err)
	}
	res := Result{Index: f.Index()}
	c.stages.mark(stageProposed, res.Index)
	ar, _ := f.Response().(*applyResult)
	if ar != nil {
		res.Data, res.term = ar.data, ar.term
	}
	if c.leasing() && c.leases.types[typ] {
		if err := c.awaitHolders(ctx, res.Index, origin); err != nil {
			return res, fmt.Errorf("apply %s: committed as entry %d: %w (%w)", typ, res.Index, ErrOutcomeUnknown, err)
		}
	}
	if ar != nil && ar.err != nil {
		return res, ar.err
	}
	return res, nil
}

// WaitApplied blocks until this node's state machines applied index.
func (c *Cluster) WaitApplied(ctx context.Context, index uint64) error {
	for {
		cur, ch := c.router.applied.waitCh()
		if cur >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, cur, ctx.Err())
		case <-c.stop:
			return ErrNotStarted
		}
	}
}

// CatchUp blocks until this node's state machines applied index, which
// the leader reported committed with term, the term of its entry (0: not
// known): with the term, it applies this node's own log up to index as
// soon as the log holds that entry instead of waiting for Raft (or the
// leader's commit push) to say it committed. It gives up with
// ErrLogUnwritable while this node cannot write its log.
func (c *Cluster) CatchUp(ctx context.Context, index, term uint64) error {
	if !c.cfg.FollowerCatchUp {
		term = 0
	}
	return c.waitWritable(ctx, index, term)
}

// CommitIndexTerm is the newest index this node knows committed and the
// term of its entry (0 when its log does not hold it any more), for a
// follower's CatchUp.
func (c *Cluster) CommitIndexTerm() (index, term uint64) {
	index = c.CommitIndex()
	if index == 0 {
		return 0, 0
	}
	var l hraft.Log
	if c.logs == nil || c.logs.GetLog(index, &l) != nil {
		return index, 0
	}
	return index, l.Term
}

// waitWritable is WaitApplied, except that it gives up with the
// ErrLogUnwritable error as soon as this node cannot write its Raft log:
// entries it has not stored cannot reach its state machines until a log
// write succeeds again, and a request should not hang on that. With the
// term of the entry at index, which the leader reported committed, it
// applies this node's log up to index as soon as the log holds that entry
// (router.catchUp), instead of waiting for Raft to say it committed.
func (c *Cluster) waitWritable(ctx context.Context, index, term uint64) error {
	tried := uint64(0) // last log index a catch-up was tried at
	for {
		cur, ch := c.router.applied.waitCh()
		if cur >= index {
			return nil
		}
		var grew <-chan struct{} // nil (never ready) without a term
		if term != 0 {
			// Try once the log holds the entry, and again only after
			// it grew: many writers wait here at once under load.
			var last uint64
			grew, last = c.watch.grewCh()
			if last >= index && last > tried {
				tried = last
				if c.router.catchUp(c.logs, index, term) {
					return nil
				}
			}
		}
		failed, lerr := c.watch.state()
		if lerr != nil {
			return lerr
		}
		select {
		case <-ch:
		case <-grew:
		case <-failed:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, cur, ctx.Err())
		case <-c.stop:
			return ErrNotStarted
		}
	}
}

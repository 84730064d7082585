package raft

import (
	"sync"

	hraft "github.com/hashicorp/raft"
)

// maxRPCsInFlight is the depth of pipelined replication to each follower:
// 1 is none (synchronous appends, each carrying up to MaxAppendEntries).
// Pipelining (8) measured no clear gain at 64 writers on the shared 2-core
// machine, and with CommitTimeout at 50 ms it made leaders change under
// load in tests that pass without it (files' TestCatchUpNoResurrection
// failed 2 runs of 3 with it, 0 of 3 without), not understood yet. The
// guard below stays, so that turning it on cannot bring back #612.
const maxRPCsInFlight = 1

// guardedTransport is hashicorp/raft's network transport whose pipelines
// cannot park the leader's replication for good (hashicorp/raft#612).
//
// When a follower answers a pipelined append with Success=false (its log
// write failed, e.g. a full disk, or its log does not match), the leader's
// pipeline decoder returns and stops reading answers. The transport's own
// reader then blocks handing on the next answer, stops taking requests in
// flight, and the replication goroutine sending the next append waits in
// pipelineSend for a slot that never frees: that follower never got another
// entry and the leader's Shutdown waited forever. A guarded pipeline
// closes the transport's pipeline right after it handed on an unsuccessful
// answer, which returns the parked send with an error; hashicorp/raft then
// falls back to synchronous appends, as it does after any failed pipeline.
type guardedTransport struct {
	*hraft.NetworkTransport
	seen *appendsSeen // what successful appends told each follower (pushCommits)
}

// AppendEntries implements hraft.Transport.
func (t guardedTransport) AppendEntries(id hraft.ServerID, target hraft.ServerAddress, args *hraft.AppendEntriesRequest, resp *hraft.AppendEntriesResponse) error {
	if err := t.NetworkTransport.AppendEntries(id, target, args, resp); err != nil {
		return err
	}
	t.seen.note(target, args, resp)
	return nil
}

// AppendEntriesPipeline implements hraft.Transport.
func (t guardedTransport) AppendEntriesPipeline(id hraft.ServerID, target hraft.ServerAddress) (hraft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	g := &guardedPipeline{inner: p, out: make(chan hraft.AppendFuture), stop: make(chan struct{}), target: target, seen: t.seen}
	go g.forward()
	return g, nil
}

// guardedPipeline hands on the transport pipeline's answers and closes it
// after the first unsuccessful one (see guardedTransport).
type guardedPipeline struct {
	inner  hraft.AppendPipeline
	out    chan hraft.AppendFuture
	stop   chan struct{}
	once   sync.Once
	target hraft.ServerAddress
	seen   *appendsSeen
}

func (g *guardedPipeline) forward() {
	in := g.inner.Consumer()
	for {
		select {
		case <-g.stop:
			return
		case f := <-in:
			if f.Error() == nil {
				g.seen.note(g.target, f.Request(), f.Response())
			}
			select {
			case g.out <- f:
			case <-g.stop:
				return
			}
			if f.Error() != nil || !f.Response().Success {
				// hashicorp/raft's decoder returned on this answer; free
				// a send that may be parked on the full pipeline.
				_ = g.inner.Close()
				return
			}
		}
	}
}

// AppendEntries implements hraft.AppendPipeline.
func (g *guardedPipeline) AppendEntries(args *hraft.AppendEntriesRequest, resp *hraft.AppendEntriesResponse) (hraft.AppendFuture, error) {
	return g.inner.AppendEntries(args, resp)
}

// Consumer implements hraft.AppendPipeline.
func (g *guardedPipeline) Consumer() <-chan hraft.AppendFuture { return g.out }

// Close implements hraft.AppendPipeline.
func (g *guardedPipeline) Close() error {
	g.once.Do(func() { close(g.stop) })
	return g.inner.Close()
}

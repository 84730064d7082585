package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// Settling a command whose outcome is unknown (ErrOutcomeUnknown).
//
// A caller that got ErrOutcomeUnknown finds out what happened by reading
// its own state after a read index: a command that is not there by then
// must never land, or the caller sends it again (or reports it failed)
// and the first copy lands later. A read index alone does not promise
// that: the leader answers with its applied index, and the command may
// still be on its way to Raft on the leader (the forward connection broke
// after the leader read it), proposed and not yet committed, or committed
// and inside the state machine's Apply; it may even wait in the leader's
// socket buffer for a partition to heal. Settle closes all of these:
//
//   - The leader tracks every command it proposes until Raft answers its
//     future (committed and applied, or failed), per forward connection for
//     the commands followers sent, and apart for its own.
//   - A follower notes each forward connection on which a command's
//     outcome became unknown (a doubt). Settle asks the leader to settle
//     those connections (the leader call raft.settle): the leader closes
//     a connection that broke or timed out on the follower's side (so no
//     byte still on its way can be read from it afterwards), waits until
//     its reader ended, then until every command read from it was answered
//     by Raft, and only then answers its read index. A command the leader
//     itself answered as unknown was read already: its connection is not
//     closed, only waited for.
//   - On the leader, Settle first waits for its own commands proposed
//     before the call.
//   - A new leader's read index commits whatever its predecessors left in
//     its log first, so doubts about another leader's connections end with
//     any settle through the current one.
//
// Commands forwarded over HTTP (larger than the forward channel carries,
// or to a leader of an older version) are not tracked: their settle is a
// read index, as before. A leader of an older version does not know the
// call either; Settle then falls back to a read index too.

// settleCall is the leader call that settles a follower's doubts.
const settleCall = "raft.settle"

// inflight tracks the commands proposed to Raft whose futures are not
// answered yet.
type inflight struct {
	mu      sync.Mutex
	next    uint64
	live    map[uint64]struct{}
	waiters int           // in wait: only then is changed closed (one allocation less per command)
	changed chan struct{} // closed and replaced when a command is done
}

// ticket is one command's entry in an inflight set. The code that hands
// the command to Raft takes it (take) and marks it done when Raft answers;
// otherwise the caller releases it once the command was not proposed.
type ticket struct {
	set   *inflight
	id    uint64
	taken atomic.Bool
}

type ticketKey struct{}

// withTicket returns ctx carrying t to applyLocal.
func withTicket(ctx context.Context, t *ticket) context.Context {
	return context.WithValue(ctx, ticketKey{}, t)
}

// takeTicket marks ctx's ticket as handed to Raft and returns it (nil
// when ctx carries none); the caller calls done once Raft answered.
func takeTicket(ctx context.Context) *ticket {
	t, _ := ctx.Value(ticketKey{}).(*ticket)
	if t != nil {
		t.taken.Store(true)
	}
	return t
}

// ticket adds a command about to be proposed.
func (s *inflight) ticket() *ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live == nil {
		s.live = make(map[uint64]struct{})
		s.changed = make(chan struct{})
	}
	s.next++
	s.live[s.next] = struct{}{}
	return &ticket{set: s, id: s.next}
}

// done ends t: Raft answered its command.
func (t *ticket) done() {
	s := t.set
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[t.id]; ok {
		delete(s.live, t.id)
		if s.waiters > 0 {
			close(s.changed)
			s.changed = make(chan struct{})
		}
	}
}

// release ends t unless it was handed to Raft (which ends it).
func (t *ticket) release() {
	if !t.taken.Load() {
		t.done()
	}
}

// wait returns once every command added before the call is done.
func (s *inflight) wait(ctx context.Context, stop <-chan struct{}) error {
	s.mu.Lock()
	upto := s.next
	s.waiters++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiters--
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		busy := false
		for id := range s.live {
			if id <= upto {
				busy = true
				break
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("commands in flight: %w", ctx.Err())
		case <-stop:
			return ErrNotStarted
		}
	}
}

// fwdServed is a forward connection the leader reads commands from.
type fwdServed struct {
	conn  net.Conn
	set   inflight
	ended chan struct{} // closed when its reader returned
}

// servedKey names a served connection: the follower and its end's address.
type servedKey struct{ origin, remote string }

// serving registers a forward connection this node reads from.
func (c *Cluster) serving(origin string, conn net.Conn) *fwdServed {
	sc := &fwdServed{conn: conn, ended: make(chan struct{})}
	c.servedMu.Lock()
	defer c.servedMu.Unlock()
	if c.served == nil {
		c.served = make(map[servedKey]*fwdServed)
	}
	c.served[servedKey{origin, conn.RemoteAddr().String()}] = sc
	return sc
}

// unserve forgets sc once every command read from it was answered by
// Raft (or the node stops).
func (c *Cluster) unserve(origin string, sc *fwdServed) {
	_ = sc.set.wait(context.Background(), c.stop)
	k := servedKey{origin, sc.conn.RemoteAddr().String()}
	c.servedMu.Lock()
	defer c.servedMu.Unlock()
	if c.served[k] == sc {
		delete(c.served, k)
	}
}

// doubt is a forward connection on which a command's outcome became
// unknown: the leader's address and this node's end of it.
type doubt struct{ leader, local string }

// noteDoubt records a forward connection to leader whose command's outcome
// is unknown; fence when the connection broke or the wait for its answer
// ended (a command may still be on its way), not when the leader itself
// answered "unknown" (it read the command).
//
// Only doubts about the connections to one leader are kept (a settle
// sends no other, and ends them), at most maxDoubts: callers that never
// settle (only the files mount does) must not make them grow.
func (c *Cluster) noteDoubt(leader, local string, fence bool) {
	c.doubtMu.Lock()
	defer c.doubtMu.Unlock()
	if c.doubts == nil {
		c.doubts = make(map[doubt]bool)
	}
	for d := range c.doubts {
		if d.leader != leader || len(c.doubts) >= maxDoubts {
			delete(c.doubts, d)
		}
	}
	d := doubt{leader, local}
	c.doubts[d] = c.doubts[d] || fence
}

// maxDoubts bounds the doubts kept (and a settle call's list).
const maxDoubts = 256

// Settle waits until this node's state machines hold every command
// committed before the call and every command this node proposed whose
// outcome was unknown, if it is to land at all: after Settle, a command
// whose effect is not in the local state never lands. Its errors are
// ReadIndex's, and it honours the wait budget of raft.Cluster.Bounded as
// ReadIndex does.
func (c *Cluster) Settle(ctx context.Context) error {
	mk, ok := ctx.Value(budgetKey{}).(*budgetMark)
	if !ok {
		return c.settle(ctx)
	}
	return c.within(ctx, mk, "settle", c.settle)
}

func (c *Cluster) settle(ctx context.Context) error {
	return c.waitIndex(ctx, "settle", func() (uint64, uint64, error) {
		if !c.IsLeader() {
			return c.forwardSettle(ctx)
		}
		if err := c.localInflight.wait(ctx, c.stop); err != nil {
			return 0, 0, fmt.Errorf("settle: %w (%w)", ErrNoLeader, err)
		}
		idx, _, err := c.leaderReadIndex(ctx)
		if err == nil {
			c.clearDoubts(nil)
		}
		return idx, 0, err
	})
}

// forwardSettle asks the leader to settle this node's doubts about its
// connections and answer its read index.
func (c *Cluster) forwardSettle(ctx context.Context) (index, term uint64, err error) {
	_, addr := c.Leader()
	if addr == "" {
		return 0, 0, errRetry
	}
	c.doubtMu.Lock()
	var sent []doubt
	var list []byte
	for d, fence := range c.doubts {
		if d.leader != addr {
			continue
		}
		sent = append(sent, d)
		b := byte(0)
		if fence {
			b = 1
		}
		list = append(list, b)
		list = binary.AppendUvarint(list, uint64(len(d.local)))
		list = append(list, d.local...)
	}
	c.doubtMu.Unlock()
	payload := binary.AppendUvarint(nil, uint64(len(sent)))
	payload = append(payload, list...)
	out, err := c.CallLeader(ctx, settleCall, payload)
	switch {
	case err == nil:
		index, term, err = decodeIndexTerm(out, "settle answer")
		if err == nil {
			c.clearDoubts(sent)
		}
		return index, term, err
	case errors.Is(err, ErrLeaderCallRefused), errors.Is(err, errUnknownCall):
		// A leader of an older version: a read index, as before.
		index, term, err = c.forwardReadIndex(ctx)
		if err == nil {
			c.clearDoubts(sent)
		}
		return index, term, err
	case ctx.Err() != nil:
		return 0, 0, fmt.Errorf("settle: %w (%w)", ErrNoLeader, ctx.Err())
	default:
		return 0, 0, errRetry
	}
}

// clearDoubts forgets the doubts settled (sent) and those about
// connections to other leaders: the leader that answered confirmed its
// leadership, so their commands landed through it or never will.
func (c *Cluster) clearDoubts(sent []doubt) {
	_, addr := c.Leader()
	c.doubtMu.Lock()
	defer c.doubtMu.Unlock()
	for _, d := range sent {
		delete(c.doubts, d)
	}
	for d := range c.doubts {
		if d.leader != addr {
			delete(c.doubts, d)
		}
	}
}

// answerSettle settles a follower's doubts on the leader (see the top of
// this file) and answers its read index.
func (c *Cluster) answerSettle(ctx context.Context, payload []byte) ([]byte, error) {
	origin := PeerID(ctx)
	n, k := binary.Uvarint(payload)
	if k <= 0 || n > maxDoubts {
		return nil, errors.New("malformed settle call")
	}
	payload = payload[k:]
	for range n {
		if len(payload) < 1 {
			return nil, errors.New("malformed settle call")
		}
		fence := payload[0] == 1
		remote, rest, err := readString(payload[1:], 256)
		if err != nil {
			return nil, fmt.Errorf("malformed settle call: %w", err)
		}
		payload = rest
		c.servedMu.Lock()
		sc := c.served[servedKey{origin, remote}]
		c.servedMu.Unlock()
		if sc == nil {
			continue // gone: every command read from it was answered
		}
		if fence {
			sc.conn.Close()
			select {
			case <-sc.ended:
			case <-ctx.Done():
				return nil, fmt.Errorf("settle: connection %s: %w (%w)", remote, ErrNoLeader, ctx.Err())
			}
		}
		if err := sc.set.wait(ctx, c.stop); err != nil {
			return nil, fmt.Errorf("settle: connection %s: %w (%w)", remote, ErrNoLeader, err)
		}
	}
	return c.answerReadIndex(ctx, nil)
}

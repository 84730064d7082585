package raft

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	hraft "github.com/hashicorp/raft"
)

// ErrNoQuorum means this node cannot reach a quorum of the cluster: it
// has heard from no leader for longer than the election timeout and from
// too few voters to elect one, or a wait on the cluster outlasted the wait
// budget. Every *QuorumError wraps it. Answer it at once with a retryable
// error (HTTP 503 with Retry-After, a Redis or memcached error reply, EIO
// or EAGAIN) so the client can go to another node.
var ErrNoQuorum = errors.New("this node cannot reach a quorum of the cluster")

// QuorumError is the error of a request refused, or cut short, because
// this node cannot reach a quorum. It wraps ErrNoQuorum and, when a wait
// was cut short, that wait's own error: errors.Is(err, ErrOutcomeUnknown)
// still tells a write that may or may not have been committed.
type QuorumError struct {
	// Reason says why, in words for the user ("no contact with a leader
	// for 1.2s, 1 of 3 voters reachable").
	Reason string
	// Err is the error of the wait the budget or the cut-off ended; nil
	// when the request was refused before it waited (nothing was sent).
	Err error
}

// Error starts with "this node cannot reach a quorum" (the API's error
// text for it) and says what the user can do.
func (e *QuorumError) Error() string {
	return ErrNoQuorum.Error() + ": " + e.Reason + "; retry, or use another node"
}

// Unwrap returns ErrNoQuorum and the wait's own error.
func (e *QuorumError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrNoQuorum}
	}
	return []error{ErrNoQuorum, e.Err}
}

// RefusalMessage returns the answer for a request err refused for lack of
// quorum, starting "this node cannot reach a quorum", and false when err
// is no such refusal. When err also carries ErrOutcomeUnknown (a write cut
// short after it may have been proposed) the message says so.
func RefusalMessage(err error) (string, bool) {
	var qe *QuorumError
	if !errors.As(err, &qe) {
		return "", false
	}
	msg := qe.Error()
	if errors.Is(err, ErrOutcomeUnknown) {
		msg += ". The write's outcome is unknown: it may or may not have been committed; check before retrying it"
	}
	return msg, true
}

// RetryAfter is the Retry-After (seconds) of an HTTP answer to a request
// refused for lack of quorum.
const RetryAfter = "1"

// DefaultWaitBudget is the wait budget for a Raft timer scale: ten
// election timeouts (5 s at scale 1). A node cut off from its quorum does
// not wait that long: it knows it is cut off one to two election timeouts
// after the cut and then answers at once, cutting short the waits in
// flight. The budget bounds the rest — a node that still hears a quorum
// waits out an election and a session's claim (about 1 s at scale 1 on an
// idle machine, but up to 2–4 s measured with -race binaries on a loaded
// 2-core machine, where four election timeouts failed a failover that
// must fail no request), a link that stalls one way only.
func DefaultWaitBudget(scale float64) time.Duration {
	_, election, _ := Timing(scale)
	return 10 * election
}

// WaitBudget is how long one request may wait on the cluster in all
// (Config.WaitBudget, or DefaultWaitBudget).
func (c *Cluster) WaitBudget() time.Duration {
	if c.cfg.WaitBudget > 0 {
		return c.cfg.WaitBudget
	}
	return DefaultWaitBudget(c.cfg.TimeoutScale)
}

// QuorumContact is this node's view of whether it can reach a quorum.
type QuorumContact struct {
	// CutOff is true while this node knows it cannot reach a quorum: it
	// is not the leader, has heard from no leader for longer than the
	// election timeout, and has heard (over the cluster port, in that
	// same window) from fewer voters than a quorum, itself included.
	CutOff bool
	// Reason says why it is cut off ("" when not).
	Reason string
	// SinceLeader is the time since the last contact with a leader (0 on
	// the leader).
	SinceLeader time.Duration
	// Heard and Voters count the voters heard from recently (this node
	// included) and the voters of the configuration; both 0 when a leader
	// is in contact (they are not counted then).
	Heard, Voters int
}

// QuorumContact tells whether this node is cut off from its quorum. It is
// cheap (a few atomic loads on the leader and on a follower in contact)
// and safe to call on every request: listeners call it, or use Bounded,
// to refuse at once instead of waiting. A node that just started is not
// cut off during its first two election timeouts, while it dials its
// peers. Before Start and after Close it reports no cut-off (waits then
// fail with ErrNotStarted).
func (c *Cluster) QuorumContact() QuorumContact {
	c.mu.Lock()
	r, tr, ok := c.raft, c.transport, c.started && !c.closed
	c.mu.Unlock()
	if !ok || r == nil || tr == nil {
		return QuorumContact{}
	}
	if r.State() == hraft.Leader {
		return QuorumContact{}
	}
	_, election, _ := Timing(c.cfg.TimeoutScale)
	now := time.Now()
	_, leader := r.LeaderWithID()
	last := r.LastContact()
	since := now.Sub(last)
	if last.IsZero() {
		since = now.Sub(tr.started)
	}
	if leader != "" && since <= election {
		return QuorumContact{SinceLeader: since}
	}
	qc := QuorumContact{SinceLeader: since}
	window := election + election/2
	for _, s := range r.GetConfiguration().Configuration().Servers {
		if s.Suffrage != hraft.Voter {
			continue
		}
		qc.Voters++
		if string(s.ID) == c.cfg.NodeID || now.Sub(tr.lastHeard(string(s.ID))) <= window {
			qc.Heard++
		}
	}
	if qc.Voters == 0 || qc.Heard > qc.Voters/2 || now.Sub(tr.started) <= 2*election {
		// Not a voter yet (joining), an election with a quorum in reach,
		// or just started: worth waiting for, within the budget.
		return qc
	}
	qc.CutOff = true
	what := "no contact with a leader for " + since.Round(time.Millisecond).String()
	if last.IsZero() {
		what = "no contact with a leader since start " + since.Round(time.Millisecond).String() + " ago"
	}
	qc.Reason = fmt.Sprintf("%s, and only %d of %d voters reachable", what, qc.Heard, qc.Voters)
	return qc
}

// CutOff returns a *QuorumError while this node knows it is cut off from
// its quorum (QuorumContact), nil otherwise: the one call a listener
// makes before work that needs the cluster.
func (c *Cluster) CutOff() error {
	if qc := c.QuorumContact(); qc.CutOff {
		return &QuorumError{Reason: qc.Reason}
	}
	return nil
}

type budgetKey struct{}

// budgetMark is what Bounded puts in a context: the budget and how much
// of it the request's waits used (nanoseconds; concurrent waits add up).
type budgetMark struct {
	context.Context // the context marked (Bounded)
	budget          time.Duration
	route           string
	waited          atomic.Int64
}

// Bounded returns ctx marked for the wait budget. Every wait on this
// cluster made with it (Apply, ReadIndex, Within) then fails at once with
// a *QuorumError while this node is cut off, ends with one the moment it
// becomes cut off, and ends with one once the waits made with it took
// WaitBudget in all: one budget for the whole request, whatever it waits
// on, not counting the time it spends elsewhere (reading an upload,
// querying a database). A mark already on ctx is kept. route names the entry for the refusal metric
// (OnRefused): "app" for the HTTP front, "redis", "memcached", "files-mount"
// for other listeners. Waits made with an unmarked context are not
// bounded (background work keeps its own timeouts).
func (c *Cluster) Bounded(ctx context.Context, route string) context.Context {
	if IsBounded(ctx) {
		return ctx
	}
	// The mark is the context itself: one allocation per request.
	return &budgetMark{Context: ctx, budget: c.WaitBudget(), route: route}
}

// IsBounded reports whether ctx carries a wait budget (Bounded): waits on
// the cluster made with it end within the budget, so a caller need not
// add a timeout of its own.
func IsBounded(ctx context.Context) bool {
	_, ok := ctx.Value(budgetKey{}).(*budgetMark)
	return ok
}

// Value implements context.Context: the mark under budgetKey.
func (mk *budgetMark) Value(key any) any {
	if _, ok := key.(budgetKey); ok {
		return mk
	}
	return mk.Context.Value(key)
}

// Within runs wait, a wait on the cluster named what ("catch-up"), under
// ctx's wait budget (Bounded; an unmarked ctx is marked now, with route
// "api"): a *QuorumError at once while this node is cut off, or when the
// budget ends or the node becomes cut off while wait runs (then it wraps
// wait's error). A caller's own earlier deadline or cancellation is
// returned as wait returned it.
func (c *Cluster) Within(ctx context.Context, what string, wait func(ctx context.Context) error) error {
	ctx = c.Bounded(ctx, "api")
	return c.within(ctx, ctx.Value(budgetKey{}).(*budgetMark), what, wait)
}

// OnRefused registers fn to be called once for every wait a *QuorumError
// refused or cut short, with the route of its mark (Bounded) and what it
// waited for (catch-up, read index, apply TYPE). Metrics count refusals
// with it. Call it before Start; fn must be cheap.
func (c *Cluster) OnRefused(fn func(route, what string)) {
	c.quorum.refused = fn
}

func (c *Cluster) within(ctx context.Context, mk *budgetMark, what string, wait func(ctx context.Context) error) error {
	if err := c.CutOff(); err != nil {
		return c.refuse(mk, what, err.(*QuorumError))
	}
	left := mk.budget - time.Duration(mk.waited.Load())
	if left <= 0 {
		return c.refuse(mk, what, c.spent(mk, what))
	}
	start := time.Now()
	wctx, cancelDeadline := context.WithDeadlineCause(ctx, start.Add(left), c.spent(mk, what))
	defer cancelDeadline()
	wctx, cancel := context.WithCancelCause(wctx)
	defer cancel(nil)
	w := c.quorum.add(c, cancel)
	err := wait(wctx)
	cause := context.Cause(wctx)
	c.quorum.remove(w)
	mk.waited.Add(int64(time.Since(start)))
	if err == nil || ctx.Err() != nil {
		return err
	}
	var qe *QuorumError
	if errors.As(cause, &qe) {
		cut := *qe
		cut.Err = err
		return c.refuse(mk, what, &cut)
	}
	return err
}

// spent is the error of a request whose wait budget ran out in what.
func (c *Cluster) spent(mk *budgetMark, what string) *QuorumError {
	return &QuorumError{Reason: fmt.Sprintf("the cluster did not answer within the wait budget of %s (%s)", mk.budget, what)}
}

func (c *Cluster) refuse(mk *budgetMark, what string, qe *QuorumError) error {
	if fn := c.quorum.refused; fn != nil {
		fn(mk.route, what)
	}
	if qe.Err == nil {
		return fmt.Errorf("%s: %w", what, qe)
	}
	return qe
}

// Apply proposes a command of type typ and waits until it is committed and
// applied on this node (read-your-writes on the serving node). A follower
// forwards the command to the leader over the cluster port. An error of the
// state machine comes back as *ApplyError.
//
// With a context marked by Bounded the wait is bounded (see Bounded): a
// *QuorumError without ErrOutcomeUnknown in its chain means nothing was
// proposed; one cut short after the command may have gone out carries
// ErrOutcomeUnknown.
func (c *Cluster) Apply(ctx context.Context, typ string, payload []byte) (Result, error) {
	mk, ok := ctx.Value(budgetKey{}).(*budgetMark)
	if !ok {
		return c.apply(ctx, typ, payload)
	}
	var res Result
	err := c.within(ctx, mk, "apply "+typ, func(ctx context.Context) error {
		var err error
		res, err = c.apply(ctx, typ, payload)
		return err
	})
	var qe *QuorumError
	if errors.As(err, &qe) && qe.Err != nil && !errors.Is(qe.Err, ErrOutcomeUnknown) && !errors.Is(qe.Err, ErrNoLeader) {
		// Cut short after a proposal may have gone out (e.g. while it
		// waited to apply a committed entry): say so.
		qe.Err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, qe.Err)
	}
	return res, err
}

// ReadIndex makes a linearizable read possible on this node: it asks the
// leader for the index of the last command the leader applied (every
// acknowledged write was applied on the leader before it was acknowledged),
// after the leader confirmed with a quorum that it still leads, and waits
// until this node applied that index. It fails with ErrNoLeader when no
// leader can be reached before ctx ends, and at once with ErrLogUnwritable
// when this node cannot write its log (it could not catch up). With a
// context marked by Bounded it is bounded by the wait budget (Bounded).
func (c *Cluster) ReadIndex(ctx context.Context) error {
	mk, ok := ctx.Value(budgetKey{}).(*budgetMark)
	if !ok {
		return c.readIndex(ctx)
	}
	return c.within(ctx, mk, "read index", c.readIndex)
}

// quorumWatch cuts short the bounded waits in flight the moment this node
// becomes cut off: one goroutine looks every tenth of an election timeout
// while waits are in flight, and ends when none is left.
type quorumWatch struct {
	refused func(route, what string) // OnRefused

	mu      sync.Mutex
	waiters map[*quorumWaiter]struct{}
	running bool
}

type quorumWaiter struct{ cancel context.CancelCauseFunc }

func (q *quorumWatch) add(c *Cluster, cancel context.CancelCauseFunc) *quorumWaiter {
	w := &quorumWaiter{cancel: cancel}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiters == nil {
		q.waiters = make(map[*quorumWaiter]struct{})
	}
	q.waiters[w] = struct{}{}
	if !q.running {
		q.running = true
		go q.loop(c)
	}
	return w
}

func (q *quorumWatch) remove(w *quorumWaiter) {
	q.mu.Lock()
	delete(q.waiters, w)
	q.mu.Unlock()
}

func (q *quorumWatch) loop(c *Cluster) {
	_, election, _ := Timing(c.cfg.TimeoutScale)
	t := time.NewTicker(max(election/10, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.stop:
			q.mu.Lock()
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Lock()
		if len(q.waiters) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		err := c.CutOff()
		if err == nil {
			continue
		}
		q.mu.Lock()
		for w := range q.waiters {
			w.cancel(err)
		}
		q.mu.Unlock()
	}
}

// LastHeard is when this node last received bytes from peer over the
// cluster port (zero when never, or before Start); for itself it is now.
// On the leader every follower answers each heartbeat, so it tells how
// long ago a follower was last in contact.
func (c *Cluster) LastHeard(peer string) time.Time {
	return c.peerTime(peer, (*Transport).lastHeard)
}

// LastAnswered is when peer last answered this node: bytes received over
// a cluster connection this node dialed (zero when never, or before
// Start); for itself it is now. Unlike LastHeard it proves that what this
// node sends reaches peer: the leader's heartbeats are answered every
// 50–100 ms by each follower. membership's probes skip a peer that
// answered within their interval.
func (c *Cluster) LastAnswered(peer string) time.Time {
	return c.peerTime(peer, (*Transport).lastAnswered)
}

// peerTime reads one of the transport's per-peer clocks; now for this
// node, zero before Start.
func (c *Cluster) peerTime(peer string, read func(*Transport, string) time.Time) time.Time {
	if peer == c.cfg.NodeID {
		return time.Now()
	}
	c.mu.Lock()
	tr := c.transport
	c.mu.Unlock()
	if tr == nil {
		return time.Time{}
	}
	return read(tr, peer)
}

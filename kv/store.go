package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/internal/leaderclock"
	"github.com/cohortserver/cohort/raft"
)

// cmdBatch is the one Raft command type of the store: a batch of
// operations committed together (group commit).
const cmdBatch = "kv.batch"

// Defaults of Config.
const (
	DefaultMaxValue       = 1 << 20
	DefaultExpireInterval = time.Second
	// maxBatchOps and maxBatchBytes bound one entry of the group commit.
	maxBatchOps   = 1024
	maxBatchBytes = 4 << 20
	// maxInFlight is how many batches may await their commit at once: one,
	// so that everything arriving during a Raft round shares the next
	// (DESIGN.md, Group commit).
	maxInFlight = 1
	// maxGatherWait bounds how long a batch waits for the writers of the
	// last one to come back (a quarter of the last round, at most this).
	maxGatherWait = time.Millisecond
	// expireBatch bounds the keys one background expiry entry removes.
	expireBatch = 1000
	// expireSample bounds the keys with an expiry one pass looks at.
	expireSample = 20 * expireBatch
	// readIdleAfter: the leader stops refreshing its read lease this long
	// after the last read that wanted it.
	readIdleAfter = 5 * time.Second
)

// ErrUnavailable wraps failures to reach a quorum in time; the protocol
// servers answer their own error text for it.
var ErrUnavailable = errors.New("the cluster cannot confirm this answer now (no quorum or leader reachable); retry")

// Config configures a Store.
type Config struct {
	MaxValue       int64            // largest string, field or member in bytes (--kv-max-value)
	MaxMemory      int64            // writes that add data are refused beyond this many bytes; 0 = no cap (--kv-max-memory)
	ExpireInterval time.Duration    // how often the leader removes expired keys
	Now            func() time.Time // this node's clock (tests skew it); time.Now when nil
	Logger         *slog.Logger
}

// Store is the replicated keyspace of one node: the state machine, the
// group-commit proposer and the linearizable read path.
type Store struct {
	cfg     Config
	cluster *raft.Cluster
	log     *slog.Logger

	mu      sync.RWMutex
	st      *state
	applied uint64 // last Raft index applied, under mu
	clock   *leaderclock.Clock

	queue    chan *pending
	inflight chan struct{}
	// gen counts the batches committed; an operation queued before the
	// last commit carries an older one (pending.gen).
	gen atomic.Uint64
	// lastBatch and lastRound are the operations and the commit time of
	// the last batch, written by its commit before it frees its inflight
	// slot, read by batchLoop once it holds the slot.
	lastBatch int
	lastRound time.Duration
	stop      chan struct{}
	stopOnce  sync.Once
	wg        sync.WaitGroup

	gate       readGate
	leaseStart atomic.Int64 // unix ns at which the leader's last read index started
	readDemand *raft.Demand // reads that want the lease; the leader refreshes it for them

	publish atomic.Pointer[func(channel, msg []byte)]

	localMu    sync.Mutex // newLocal only
	localIndex uint64

	batches, batchedOps, readIndexes, leaseReads atomic.Int64
	// holderReads counts reads a follower answered under its apply lease;
	// visibleWaits the reads that waited for an entry to be visible.
	holderReads, visibleWaits atomic.Int64
}

// New returns a Store registered with cluster as the state machine "kv".
// Call it before cluster.Start.
func New(cluster *raft.Cluster, cfg Config) (*Store, error) {
	if cfg.MaxValue <= 0 {
		cfg.MaxValue = DefaultMaxValue
	}
	if cfg.ExpireInterval <= 0 {
		cfg.ExpireInterval = DefaultExpireInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cfg:        cfg,
		cluster:    cluster,
		log:        cfg.Logger,
		st:         newState(),
		queue:      make(chan *pending, 4096),
		inflight:   make(chan struct{}, maxInFlight),
		stop:       make(chan struct{}),
		readDemand: raft.NewDemand(),
	}
	s.clock = leaderclock.New(cfg.Now)
	s.gate.run = s.readIndex
	if err := cluster.Register("kv", s, cmdBatch); err != nil {
		return nil, fmt.Errorf("kv: %w", err)
	}
	// Every write waits for the followers that answer reads from their
	// own state under an apply lease (DESIGN.md, Reads).
	cluster.LeaseCommands(cmdBatch)
	cluster.OnLeader(s.leaderLoop)
	cluster.HandleInternal("POST "+readIndexPath, http.HandlerFunc(s.handleReadIndex))
	cluster.HandleLeaderCall(readIndexCall, s.callReadIndex)
	return s, nil
}

// Start runs the group-commit loop.
func (s *Store) Start(context.Context) error {
	s.wg.Add(1)
	go s.batchLoop()
	return nil
}

// Close stops the group-commit loop; waiting writers get an error.
func (s *Store) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
	return nil
}

// MaxValue is the value size limit.
func (s *Store) MaxValue() int64 { return s.cfg.MaxValue }

// SetPublisher sets the function Apply hands every PUBLISH to, on this
// node, in log order. It must not block.
func (s *Store) SetPublisher(fn func(channel, msg []byte)) { s.publish.Store(&fn) }

func (s *Store) deliver(channel, msg []byte) {
	if fn := s.publish.Load(); fn != nil {
		(*fn)(channel, msg)
	}
}

func (s *Store) limits() limits {
	return limits{maxValue: s.cfg.MaxValue, maxMemory: s.cfg.MaxMemory}
}

// ---- state machine

var _ raft.StateMachine = (*Store)(nil)

// denyOOM lists the commands refused while memory is over the cap (Redis'
// "denyoom" flag): those that can add data. Deletes always pass.
var denyOOM = map[string]bool{
	"SET": true, "SETEX": true, "PSETEX": true, "SETNX": true, "MSET": true, "MSETNX": true,
	"INCR": true, "DECR": true, "INCRBY": true, "DECRBY": true, "APPEND": true, "GETEX": false,
	"HSET": true, "HMSET": true, "HSETNX": true, "HINCRBY": true, "SADD": true, "LPUSH": true, "RPUSH": true,
	"MC.STORE": true, "MC.INCR": true,
}

// Apply implements raft.StateMachine.
func (s *Store) Apply(e raft.Entry) ([]byte, error) {
	// Values are kept: copy the payload once and let them alias the copy.
	lim, ops, err := decodeBatch(bytes.Clone(e.Payload))
	if err != nil {
		return nil, fmt.Errorf("kv: entry %d: %w", e.Index, err)
	}
	s.clock.Observe(e.Time, e.Term)
	s.mu.Lock()
	defer s.mu.Unlock()
	x := &execCtx{st: s.st, now: e.Time.UnixNano(), index: e.Index, write: true, lim: lim, publish: s.deliver}
	replies := make([]Reply, len(ops))
	for i := range ops {
		replies[i] = x.applyOp(&ops[i])
	}
	s.applied = e.Index
	return encodeReplies(replies), nil
}

func (x *execCtx) applyOp(o *op) Reply {
	x.ns = o.ns
	switch o.kind {
	case opCmd:
		return x.runChecked(o.args)
	case opTx:
		for _, w := range o.watches {
			var cur uint64
			if it := x.get(w.key); it != nil {
				cur = it.rev
			}
			if cur != w.rev || (cur == 0 && x.st.lastDelete > o.watchIndex) {
				return Reply{Kind: kindNilArray}
			}
		}
		out := make([]Reply, len(o.cmds))
		for i, c := range o.cmds {
			out[i] = x.runChecked(c)
		}
		return rArr(out)
	case opExpire:
		var n int64
		for _, k := range o.keys {
			if it := x.st.keys[string(k)]; it != nil && it.expire != 0 && x.now >= it.expire {
				x.remove(string(k))
				n++
			}
		}
		return rInt(n)
	}
	return rErr("ERR unknown operation")
}

// runChecked is run with the memory cap.
func (x *execCtx) runChecked(args [][]byte) Reply {
	if len(args) == 0 {
		return rErr("ERR empty command")
	}
	if x.lim.maxMemory > 0 && x.st.used > x.lim.maxMemory && denyOOM[string(args[0])] {
		return rErr(errOOM)
	}
	return x.run(args)
}

// ---- group commit

type pending struct {
	op    []byte
	gen   uint64 // Store.gen when it was queued
	reply Reply
	err   error
	done  chan struct{}
}

// propose commits one encoded operation and returns its reply. Concurrent
// proposals share entries: while up to maxInFlight batches await their
// commit, new operations gather into the next one.
func (s *Store) propose(ctx context.Context, op []byte) (Reply, error) {
	p := &pending{op: op, gen: s.gen.Load(), done: make(chan struct{})}
	select {
	case s.queue <- p:
	case <-ctx.Done():
		return Reply{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	case <-s.stop:
		return Reply{}, raft.ErrNotStarted
	}
	select {
	case <-p.done:
		return p.reply, p.err
	case <-s.stop:
		return Reply{}, fmt.Errorf("%w: the node is shutting down", raft.ErrOutcomeUnknown)
	case <-ctx.Done():
		// It may still commit: the outcome is unknown to this client.
		return Reply{}, fmt.Errorf("%w: %w", raft.ErrOutcomeUnknown, ctx.Err())
	}
}

func (s *Store) batchLoop() {
	defer s.wg.Done()
	for {
		var first *pending
		select {
		case first = <-s.queue:
		case <-s.stop:
			s.failQueued()
			return
		}
		select {
		case s.inflight <- struct{}{}:
		case <-s.stop:
			first.err = raft.ErrNotStarted
			close(first.done)
			s.failQueued()
			return
		}
		batch := []*pending{first}
		size := len(first.op)
	gather:
		for len(batch) < maxBatchOps && size < maxBatchBytes {
			select {
			case p := <-s.queue:
				batch = append(batch, p)
				size += len(p.op)
			default:
				break gather
			}
		}
		batch, size = s.gatherReturning(batch, size)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.commit(batch)
			<-s.inflight
		}()
	}
}

// gatherReturning lets a batch wait, briefly, for the writers of the last
// one. Under a steady load of closed-loop writers (each sends its next
// write once the last is answered), the writers that queued during a
// round and those answered at its end would otherwise alternate between
// two half-size batches, each paying a whole Raft round; waiting for the
// answered ones to come back merges them. It waits until the batch holds
// as many operations as the last batch plus those queued during it (the
// writers known to be active), or a quarter of the last round
// (maxGatherWait at most), whichever comes first. A lone writer never
// waits: its own operation is the whole of its last batch.
func (s *Store) gatherReturning(batch []*pending, size int) ([]*pending, int) {
	if s.lastBatch == 0 || s.lastRound <= 0 {
		return batch, size
	}
	gen := s.gen.Load()
	target := s.lastBatch
	for _, p := range batch {
		if p.gen < gen {
			target++ // queued during the last round: not one of its writers
		}
	}
	if len(batch) >= target {
		return batch, size
	}
	t := time.NewTimer(min(s.lastRound/4, maxGatherWait))
	defer t.Stop()
	for len(batch) < target && len(batch) < maxBatchOps && size < maxBatchBytes {
		select {
		case p := <-s.queue:
			batch = append(batch, p)
			size += len(p.op)
		case <-t.C:
			return batch, size
		case <-s.stop:
			return batch, size
		}
	}
	return batch, size
}

func (s *Store) failQueued() {
	for {
		select {
		case p := <-s.queue:
			p.err = raft.ErrNotStarted
			close(p.done)
		default:
			return
		}
	}
}

// commitTimeout bounds one batch's wait for its commit.
const commitTimeout = 10 * time.Second

func (s *Store) commit(batch []*pending) {
	ops := make([][]byte, len(batch))
	for i, p := range batch {
		ops[i] = p.op
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	// A batch's commit is bounded like a request: refused at once while
	// this node is cut off from its quorum, so its clients hear at once.
	ctx = s.bound(ctx, "kv")
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	s.batches.Add(1)
	s.batchedOps.Add(int64(len(batch)))
	start := time.Now()
	res, err := s.apply(ctx, encodeBatch(s.limits(), ops))
	// Before any writer is answered: its next write then counts as one
	// returning (gatherReturning). A failed round predicts nothing.
	s.lastBatch, s.lastRound = len(batch), time.Since(start)
	if err != nil {
		s.lastBatch = 0
	}
	s.gen.Add(1)
	var replies []Reply
	if err == nil {
		replies, err = decodeReplies(res.Data)
		if err == nil && len(replies) != len(batch) {
			err = fmt.Errorf("kv: %d replies for %d operations", len(replies), len(batch))
		}
	}
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.reply = replies[i]
		}
		close(p.done)
	}
}

// bound marks ctx with the cluster's wait budget for requests entering
// through route ("redis", "memcached"): waits on the cluster end within it,
// and at once while this node is cut off from its quorum.
func (s *Store) bound(ctx context.Context, route string) context.Context {
	if s.cluster == nil {
		return ctx
	}
	return s.cluster.Bounded(ctx, route)
}

// apply commits a batch through Raft, or applies it at once on a store
// without a cluster (newLocal, for tests and fuzzing).
func (s *Store) apply(ctx context.Context, payload []byte) (raft.Result, error) {
	if s.cluster != nil {
		return s.cluster.Apply(ctx, cmdBatch, payload)
	}
	s.localMu.Lock()
	defer s.localMu.Unlock()
	s.localIndex++
	data, err := s.Apply(raft.Entry{Index: s.localIndex, Type: cmdBatch, Time: s.clock.Local(), Payload: payload})
	return raft.Result{Index: s.localIndex, Data: data}, err
}

// newLocal returns a started store that applies its writes at once,
// without Raft: one process, no replication (tests and fuzz targets).
func newLocal(cfg Config, now func() time.Time) *Store {
	if cfg.MaxValue <= 0 {
		cfg.MaxValue = DefaultMaxValue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, log: cfg.Logger, st: newState(), queue: make(chan *pending, 4096),
		inflight: make(chan struct{}, maxInFlight), stop: make(chan struct{}), readDemand: raft.NewDemand()}
	s.clock = leaderclock.New(now)
	s.gate.run = func(context.Context) (uint64, error) { return math.MaxUint64, nil }
	_ = s.Start(context.Background())
	return s
}

// ---- commands

// IsWrite reports whether a data command (upper-case name first) must go
// through Raft; ok is false for names the store does not know.
func IsWrite(args [][]byte) (write, ok bool) {
	spec, ok := lookupCommand(string(args[0]))
	if !ok {
		return false, false
	}
	return spec.write(args), true
}

// Do runs one data command in namespace ns: a write is committed on a
// quorum before Do returns, a read answers linearizably. args[0] must be
// upper case. A protocol-level error (unknown command, arity) comes back
// as an error Reply, a cluster failure as err.
func (s *Store) Do(ctx context.Context, ns byte, args [][]byte) (Reply, error) {
	spec, ok := lookupCommand(string(args[0]))
	if !ok {
		return unknownCommand(args), nil
	}
	if !arityOK(spec, len(args)) {
		return errArity(string(args[0])), nil
	}
	if spec.write(args) {
		// Refuse an oversized value before it reaches the log (Apply
		// checks again, with the limit stamped into the entry).
		for _, a := range args[1:] {
			if int64(len(a)) > s.cfg.MaxValue {
				if ns == nsMemcached {
					return rErr(mcTooLarge), nil
				}
				return rErr(errTooBig), nil
			}
		}
		return s.propose(ctx, encodeCmdOp(ns, args))
	}
	out, err := s.Read(ctx, ns, [][][]byte{args})
	if err != nil {
		return Reply{}, err
	}
	return out[0], nil
}

// Read answers read commands in namespace ns linearizably, in order, from
// one state of this node (a pipeline's run of reads shares one check).
// Each element of cmds is one command with its upper-case name first.
func (s *Store) Read(ctx context.Context, ns byte, cmds [][][]byte) ([]Reply, error) {
	out := make([]Reply, len(cmds))
	err := s.read(ctx, func(x *execCtx) {
		x.ns = ns
		for i, args := range cmds {
			out[i] = x.run(args)
		}
	})
	return out, err
}

// Exec commits a transaction as one operation of one entry: it aborts
// (a null array) when a watched key changed since watchIndex.
func (s *Store) Exec(ctx context.Context, ns byte, watchIndex uint64, watches []watch, cmds [][][]byte) (Reply, error) {
	return s.propose(ctx, encodeTxOp(ns, watchIndex, watches, cmds))
}

// Watch returns key's revision (0 when missing) and the index applied
// here, for a later Exec. A stale local answer only makes EXEC abort.
func (s *Store) Watch(ns byte, key []byte) (rev, index uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	x := &execCtx{st: s.st, now: s.clock.Now(), ns: ns}
	if it := x.get(key); it != nil {
		rev = it.rev
	}
	return rev, s.applied
}

// Local answers a read from this node's state, without a freshness check:
// call Sync first for a linearizable answer.
func (s *Store) Local(ns byte, args [][]byte) Reply {
	s.mu.RLock()
	defer s.mu.RUnlock()
	x := &execCtx{st: s.st, now: s.clock.Now(), ns: ns, lim: s.limits()}
	return x.run(args)
}

// read runs fn, a read, on this node's state once that state holds every
// write acknowledged before the call, and answers only if fn saw no entry
// above the visible index (DESIGN.md, Reads): a newer entry may still be
// missing from a follower that answers reads from its own state, which
// would then answer the older value after this one answered the newer.
// fn may run more than once; its last run is the answer.
func (s *Store) read(ctx context.Context, fn func(x *execCtx)) error {
	now := time.Now().UnixNano()
	s.readDemand.Note(now)
	if s.cluster == nil {
		s.runRead(fn)
		return nil
	}
	visible, local, err := s.localVisible(ctx, now)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !local {
		if visible, err = s.gate.wait(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	for {
		seen := s.runRead(fn)
		if seen <= visible {
			return nil
		}
		s.visibleWaits.Add(1)
		if visible, err = s.awaitVisible(ctx, seen); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
}

// runRead runs fn under the read lock and returns the newest index it saw.
func (s *Store) runRead(fn func(x *execCtx)) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	x := &execCtx{st: s.st, now: s.clock.Now(), lim: s.limits(), applied: s.applied}
	fn(x)
	return x.seen
}

// localVisible reports whether this node may read its own state now, with
// no round trip, and the visible index then: on a leader whose read lease
// holds (after applying its commit index: followers may have applied
// entries it has not), or on a follower holding an apply lease.
func (s *Store) localVisible(ctx context.Context, now int64) (visible uint64, ok bool, err error) {
	if s.leaseHolds(now) {
		s.leaseReads.Add(1)
		if err := s.cluster.WaitApplied(ctx, s.cluster.CommitIndex()); err != nil {
			return 0, false, err
		}
		return s.cluster.VisibleIndex(), true, nil
	}
	if v, ok := s.cluster.LeaseVisible(); ok && s.clock.Reported(clockReport) {
		s.holderReads.Add(1)
		return v, true, nil
	}
	return 0, false, nil
}

// clockReport is how recent the leader's last report of its clock must be
// for a follower to read from its own state: expiry is judged by that
// clock, and without a report the estimate may rest on entries applied
// late (DESIGN.md, Expiry). A lease holder passes one read index every
// clockReport while it reads.
const clockReport = 5 * time.Second

// awaitVisible waits until the entry at index is visible and returns the
// visible index then: on the leader until every apply lease holder applied
// it; on a follower by asking the leader, which waits so.
func (s *Store) awaitVisible(ctx context.Context, index uint64) (uint64, error) {
	var visible uint64
	err := s.cluster.Within(ctx, "kv read index", func(ctx context.Context) error {
		if s.cluster.IsLeader() {
			var err error
			visible, err = s.cluster.AwaitVisible(ctx, index)
			return err
		}
		idx, entryTerm, v, err := s.askLeader(ctx, index)
		if err != nil {
			return err
		}
		visible = v
		return s.cluster.CatchUp(ctx, idx, entryTerm)
	})
	return visible, err
}

// leaseHolds reports whether this node leads and its read lease holds at
// now (unix ns): its last read index, a quorum's confirmation of its
// leadership, started less than one lease ago.
func (s *Store) leaseHolds(now int64) bool {
	ls := s.leaseStart.Load()
	return ls != 0 && time.Duration(now-ls) < s.cluster.ReadLease() && s.cluster.IsLeader()
}

// readIndex passes one read index; on the leader it also renews the read
// lease from its start (see DESIGN.md), and returns the visible index.
func (s *Store) readIndex(ctx context.Context) (uint64, error) {
	// Under the request's wait budget: refused at once while this node
	// is cut off from its quorum (raft.Cluster.Within).
	var visible uint64
	err := s.cluster.Within(ctx, "kv read index", func(ctx context.Context) error {
		var err error
		visible, err = s.readIndexWait(ctx)
		return err
	})
	return visible, err
}

func (s *Store) readIndexWait(ctx context.Context) (uint64, error) {
	start := time.Now().UnixNano()
	leader := s.cluster.IsLeader()
	s.readIndexes.Add(1)
	idx, entryTerm, visible, err := s.commitReadIndex(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.cluster.CatchUp(ctx, idx, entryTerm); err != nil {
		return 0, err
	}
	if leader && s.cluster.IsLeader() {
		for {
			old := s.leaseStart.Load()
			if old >= start || s.leaseStart.CompareAndSwap(old, start) {
				break
			}
		}
	}
	return visible, nil
}

// leaderLoop runs on the leader: it keeps the read lease fresh while reads
// come, and removes expired keys in the background.
func (s *Store) leaderLoop(ctx context.Context, term uint64) {
	s.clock.Lead(term) // this node stamps the entries now; its Barrier applied the old leader's
	s.leaseStart.Store(0)
	lease := s.cluster.ReadLease()
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		s.readDemand.Refresh(ctx, lease/3, readIdleAfter, func(ctx context.Context) {
			rctx, cancel := context.WithTimeout(ctx, lease)
			_, _ = s.gate.wait(rctx)
			cancel()
		})
	}()
	expire := time.NewTicker(s.cfg.ExpireInterval)
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			<-renewed
			s.leaseStart.Store(0)
			return
		case <-expire.C:
			s.expireOnce(ctx)
		}
	}
}

// expireOnce removes expired keys in entries of up to expireBatch keys,
// another at once while a pass finds a full batch (as Redis repeats its
// active expiry cycle while a quarter of its sample was expired).
func (s *Store) expireOnce(ctx context.Context) {
	for ctx.Err() == nil {
		keys, _ := s.expiredKeys(s.clock.Local().UnixNano())
		if len(keys) == 0 {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, commitTimeout)
		_, err := s.propose(pctx, encodeExpireOp(keys))
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("kv: background expiry failed", "keys", len(keys), "err", err)
			}
			return
		}
		if len(keys) < expireBatch {
			return
		}
	}
}

// expiredKeys lists up to expireBatch keys expired at now, looking at no
// more than expireSample keys that have an expiry (the store's lock is
// held meanwhile, so writers wait; a scan of every key paused them for
// tens of milliseconds a second with a million keys). Go starts each map
// iteration at a random place, so a pass that stops early samples the
// volatile keys; reads never return an expired key whatever lags here.
// It also returns how many keys it looked at.
func (s *Store) expiredKeys(now int64) (keys []string, examined int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for k := range s.st.volatile {
		if examined == expireSample {
			break
		}
		examined++
		if it := s.st.keys[k]; it != nil && it.expire != 0 && now >= it.expire {
			keys = append(keys, k)
			if len(keys) == expireBatch {
				break
			}
		}
	}
	return keys, examined
}

// Stats is a node's view of the store.
type Stats struct {
	Keys         int    `json:"keys"`
	UsedBytes    int64  `json:"used_bytes"`
	MaxBytes     int64  `json:"max_bytes"`
	AppliedIndex uint64 `json:"applied_index"`
	Batches      int64  `json:"batches"`       // entries proposed by this node
	BatchedOps   int64  `json:"batched_ops"`   // operations in them
	ReadIndexes  int64  `json:"read_indexes"`  // read index rounds passed
	LeaseReads   int64  `json:"lease_reads"`   // reads answered under the leader's lease
	HolderReads  int64  `json:"holder_reads"`  // reads a follower answered under its apply lease
	VisibleWaits int64  `json:"visible_waits"` // reads that waited for an entry to be visible
}

// Stats returns counters of this node.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	st := Stats{Keys: len(s.st.keys), UsedBytes: s.st.used, AppliedIndex: s.applied}
	s.mu.RUnlock()
	st.MaxBytes = s.cfg.MaxMemory
	st.Batches = s.batches.Load()
	st.BatchedOps = s.batchedOps.Load()
	st.ReadIndexes = s.readIndexes.Load()
	st.LeaseReads = s.leaseReads.Load()
	st.HolderReads = s.holderReads.Load()
	st.VisibleWaits = s.visibleWaits.Load()
	return st
}

// KeyInfo describes one key for operators (cohort kv).
type KeyInfo struct {
	Key      string   `json:"key"`
	Exists   bool     `json:"exists"`
	Type     string   `json:"type,omitempty"`
	TTLMilli int64    `json:"ttl_ms,omitempty"` // -1: none
	Revision uint64   `json:"revision,omitempty"`
	Size     int64    `json:"size_bytes,omitempty"`
	Flags    uint32   `json:"flags,omitempty"`
	Value    string   `json:"value,omitempty"` // strings: up to 4 KiB
	Fields   []string `json:"fields,omitempty"`
}

// Inspect describes key in namespace ns after a linearizable sync.
func (s *Store) Inspect(ctx context.Context, ns byte, key []byte) (KeyInfo, error) {
	var info KeyInfo
	err := s.read(ctx, func(x *execCtx) {
		x.ns = ns
		info = describe(x, key)
	})
	return info, err
}

// describe is Inspect's answer from x.
func describe(x *execCtx, key []byte) KeyInfo {
	info := KeyInfo{Key: string(key)}
	now := x.now
	it := x.get(key)
	if it == nil {
		return info
	}
	info.Exists = true
	info.Type = string(cmdType(x, [][]byte{nil, key}).Str)
	info.TTLMilli = -1
	if it.expire != 0 {
		info.TTLMilli = (it.expire - now) / int64(time.Millisecond)
	}
	info.Revision = it.rev
	info.Size = it.size(fullKey(x.ns, key))
	info.Flags = it.flags
	if it.typ == typeString {
		info.Value = string(it.str[:min(len(it.str), 4096)])
	}
	for f := range it.hash {
		info.Fields = append(info.Fields, f)
	}
	for m := range it.set {
		info.Fields = append(info.Fields, m)
	}
	return info
}

// ---- read gate

// readGate shares read index rounds among concurrent readers. A reader
// joins a round that starts after it arrived — the running one if none,
// else the next — so its answer covers every write acknowledged before.
// A round answers the visible index it learned.
type readGate struct {
	run     func(ctx context.Context) (uint64, error)
	mu      sync.Mutex
	running bool
	next    *round
}

type round struct {
	done    chan struct{}
	visible uint64
	err     error
}

// readTimeout bounds one read index round.
const readTimeout = 5 * time.Second

func (g *readGate) wait(ctx context.Context) (uint64, error) {
	g.mu.Lock()
	var r *round
	if !g.running {
		g.running = true
		r = &round{done: make(chan struct{})}
		go g.exec(r)
	} else {
		if g.next == nil {
			g.next = &round{done: make(chan struct{})}
		}
		r = g.next
	}
	g.mu.Unlock()
	select {
	case <-r.done:
		return r.visible, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (g *readGate) exec(r *round) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		r.visible, r.err = g.run(ctx)
		cancel()
		close(r.done)
		g.mu.Lock()
		r, g.next = g.next, nil
		if r == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
	}
}

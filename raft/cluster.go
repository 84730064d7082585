package raft

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Errors returned by the cluster.
var (
	// ErrNoLeader means no leader was known before the context ended.
	ErrNoLeader = errors.New("no raft leader is known; the cluster may have lost its quorum")
	// ErrOutcomeUnknown means a command may or may not have been committed
	// (leadership was lost or the leader became unreachable after the command
	// was sent). Callers retry only idempotent commands.
	ErrOutcomeUnknown = errors.New("outcome unknown: leadership changed while the command was in flight")
	// ErrNotStarted is returned by calls made before Start or after Close.
	ErrNotStarted = errors.New("cluster is not running")
	// ErrNotMember is returned when a node id is not in the configuration.
	ErrNotMember = errors.New("no such node in the cluster")
	// ErrLogUnwritable means this node's last write to its Raft log failed
	// (its disk is full or failing): it cannot append or apply new entries,
	// so it proposes none, until a write succeeds again. The error wraps
	// the cause, such as syscall.ENOSPC.
	ErrLogUnwritable = errors.New("this node cannot write its raft log")
)

// Peer is a voter of the initial configuration.
type Peer struct {
	ID      string
	Address string
}

// Config configures a Cluster. The zero value is not valid: NodeID, DataDir,
// BindAddr and Key are required.
type Config struct {
	NodeID    string
	DataDir   string // Raft log, stable store and snapshots live in DataDir/raft
	BindAddr  string // cluster port, host:port
	Advertise string // address other nodes dial; default: the bound address
	Key       []byte // cluster key, at least 16 bytes
	// AcceptKeys are further cluster keys accepted from peers (rotation).
	AcceptKeys [][]byte
	TLS        *tls.Config
	// Peers, when the data dir holds no state, bootstraps the cluster. It
	// must be the same on every node and name this node.
	Peers []Peer
	// TimeoutScale multiplies every Raft timer. 1 (the default when 0) is
	// tuned for a LAN: a leader's death is noticed in 0.5–1 s.
	TimeoutScale float64
	// WaitBudget bounds a request's waits on the cluster (Bounded); 0 is
	// DefaultWaitBudget(TimeoutScale).
	WaitBudget time.Duration
	// SnapshotThreshold and TrailingLogs override hashicorp/raft's
	// defaults when non-zero.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotInterval overrides how often the threshold is checked.
	SnapshotInterval time.Duration
	Logger           *slog.Logger
	// Faults is the test seam of the transport; nil in production.
	Faults *Faults
	// Listener, when set, is the cluster port already opened.
	Listener net.Listener
	// Now is the clock the leader stamps commands with; nil is time.Now.
	// Tests skew it to show a follower's clock never reaches the log.
	Now func() time.Time
}

// Timing returns the Raft timers for a scale factor: heartbeat and election
// timeouts of 500 ms and a leader lease of a quarter of that. The quarter is
// what makes local reads safe: a leader cut off from its quorum steps down
// within two leases (hashicorp/raft checks the lease once per lease), i.e.
// half a heartbeat timeout, and a follower's read lease (ReadLease) runs
// out a quarter later, while no other node can be elected before a full
// heartbeat timeout without contact has passed.
func Timing(scale float64) (heartbeat, election, lease time.Duration) {
	if scale <= 0 {
		scale = 1
	}
	d := func(base time.Duration) time.Duration { return time.Duration(float64(base) * scale) }
	return d(500 * time.Millisecond), d(500 * time.Millisecond), d(125 * time.Millisecond)
}

// Cluster is one node's membership in the Raft cluster: consensus, the
// cluster port and node-to-node HTTP.
type Cluster struct {
	cfg Config
	log *slog.Logger

	router   *router
	internal *http.ServeMux

	leaderFns []func(ctx context.Context, term uint64)
	changeFns []func(leaderID string)
	applyFn   func(typ string, took time.Duration) // see OnApply
	quorum    quorumWatch                          // bounded waits (quorum.go)

	mu        sync.Mutex
	started   bool
	closed    bool
	raft      *hraft.Raft
	transport *Transport
	netTrans  *hraft.NetworkTransport
	store     *raftboltdb.BoltStore
	watch     *watchedStore // store, remembering failed log writes
	srv       *http.Server
	client    *http.Client
	observer  *hraft.Observer
	obsCh     chan hraft.Observation

	hadState     bool
	barrierDone  atomic.Uint64 // term whose leader Barrier completed here
	leaderCancel context.CancelFunc
	leaderWG     sync.WaitGroup
	loops        sync.WaitGroup
	stop         chan struct{}
}

// New returns a Cluster; it does no I/O.
func New(cfg Config) *Cluster {
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger,
		router:   newRouter(),
		internal: http.NewServeMux(),
		stop:     make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "raft")
	c.internal.HandleFunc("POST /_internal/raft/apply", c.handleApply)
	c.internal.HandleFunc("POST /_internal/raft/join", c.handleJoin)
	c.internal.HandleFunc("POST /_internal/raft/remove", c.handleRemove)
	c.internal.HandleFunc("POST /_internal/raft/transfer", c.handleTransfer)
	c.internal.HandleFunc("POST /_internal/raft/readindex", c.handleReadIndex)
	c.internal.HandleFunc("GET /_internal/ping", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(c.cfg.NodeID))
	})
	return c
}

// SetCredentials sets the cluster key and the optional mutual-TLS
// configuration. Call it before Start (node.Start reads them from disk).
// Further keys in accept are accepted from peers but never used to dial,
// which lets an operator rotate the key with rolling restarts.
func (c *Cluster) SetCredentials(key []byte, accept [][]byte, tlsConf *tls.Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg.Key, c.cfg.AcceptKeys, c.cfg.TLS = key, accept, tlsConf
}

// HadState reports whether the data dir held Raft state at Start.
func (c *Cluster) HadState() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hadState
}

// NodeID is this node's id.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// Register adds a state machine that owns the given command types and a
// section (name) of every snapshot. Call it before Start.
func (c *Cluster) Register(name string, sm StateMachine, types ...string) error {
	return c.router.register(name, sm, types...)
}

// HandleInternal mounts a handler on the node-to-node HTTP server. Only
// nodes that proved the cluster key reach it; PeerID(r.Context()) names the
// calling node. Patterns should start with /_internal/.
func (c *Cluster) HandleInternal(pattern string, h http.Handler) {
	c.internal.Handle(pattern, h)
}

// OnLeader registers fn to run each time this node becomes leader, after a
// Barrier has applied every earlier entry. ctx is cancelled the moment
// leadership is lost or the cluster closes; fn must return soon after.
// Call it before Start.
func (c *Cluster) OnLeader(fn func(ctx context.Context, term uint64)) {
	c.leaderFns = append(c.leaderFns, fn)
}

// OnLeaderChange registers fn to be called with the new leader id ("" when
// none is known) on every change this node observes. Call it before Start.
func (c *Cluster) OnLeaderChange(fn func(leaderID string)) {
	c.changeFns = append(c.changeFns, fn)
}

type peerKey struct{}

// PeerID returns the node id of the caller of an internal HTTP handler.
func PeerID(ctx context.Context) string {
	s, _ := ctx.Value(peerKey{}).(string)
	return s
}

// Start opens the stores, the cluster port and Raft, and bootstraps from
// Peers when the data dir holds no state. On error everything it opened is
// closed again.
func (c *Cluster) Start(ctx context.Context) (err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("cluster already started")
	}
	c.started = true
	c.router.seal()
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	dir := filepath.Join(c.cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create raft dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
	})
	if err != nil {
		return fmt.Errorf("open raft log %s: %w", filepath.Join(dir, "raft.db"), err)
	}
	cleanup = append(cleanup, func() { store.Close() })
	watch := newWatchedStore(store, filepath.Join(dir, "raft.db"))
	var started atomic.Pointer[hraft.Raft]
	watch.onChange = func(failing bool) {
		if r := started.Load(); r != nil {
			c.standBack(r, failing)
		}
	}
	logs, err := hraft.NewLogCache(1024, watch)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	hl := newHCLog(c.log, "raft")
	snaps, err := hraft.NewFileSnapshotStoreWithLogger(dir, 2, hl.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}

	tr, err := Listen(c.cfg.BindAddr, TransportConfig{
		NodeID: c.cfg.NodeID, Key: c.cfg.Key, AcceptKeys: c.cfg.AcceptKeys, TLS: c.cfg.TLS,
		Logger: c.log.With("sub", "transport"), Faults: c.cfg.Faults, Advertise: c.cfg.Advertise, Listener: c.cfg.Listener,
	})
	if err != nil {
		return err
	}
	cleanup = append(cleanup, func() { tr.Close() })
	nt := hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
		Stream:  &streamLayer{t: tr},
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  hl.Named("net"),
		// No pipelined replication: when a follower answers an append with
		// Success=false (its log write failed: a full disk) while a pipeline
		// runs, hashicorp/raft can park the replication goroutine in
		// pipelineSend for good (hashicorp/raft#612): that follower never
		// gets another entry, and the leader's Shutdown waits forever. Our
		// disk-full nemesis hit it. Synchronous appends still batch up to
		// MaxAppendEntries per round trip.
		MaxRPCsInFlight: 1,
	})
	cleanup = append(cleanup, func() { nt.Close() })

	c.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return tr.dial(ctx, addr, chanHTTP)
		},
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       64 << 10,
	}}
	cleanup = append(cleanup, c.client.CloseIdleConnections)

	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(c.cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = Timing(c.cfg.TimeoutScale)
	rc.CommitTimeout = 2 * time.Millisecond // followers learn a commit within ~2-4 ms (forwarded writes wait for it)
	rc.MaxAppendEntries = 256
	if c.cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = c.cfg.SnapshotThreshold
	}
	if c.cfg.TrailingLogs > 0 {
		rc.TrailingLogs = c.cfg.TrailingLogs
	}
	if c.cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = c.cfg.SnapshotInterval
	}
	notify := make(chan bool, 64)
	rc.NotifyCh = notify

	has, err := hraft.HasExistingState(logs, watch, snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	r, err := hraft.NewRaft(rc, c.router, logs, watch, snaps, nt)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	cleanup = append(cleanup, func() { _ = r.Shutdown().Error() })
	started.Store(r)
	c.raft, c.transport, c.netTrans, c.store, c.watch = r, tr, nt, store, watch
	c.hadState = has

	if !has && len(c.cfg.Peers) > 0 {
		if err := c.bootstrap(); err != nil {
			return err
		}
	} else if has && len(c.cfg.Peers) > 0 {
		c.log.Info("data dir holds raft state; --peers ignored")
	}

	c.srv = &http.Server{
		Handler:           c.internal,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			if ac, ok := conn.(*authConn); ok {
				return context.WithValue(ctx, peerKey{}, ac.peer)
			}
			return ctx
		},
	}
	c.loops.Add(1)
	go func() {
		defer c.loops.Done()
		if err := c.srv.Serve(tr.HTTPListener()); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			c.log.Error("internal http server stopped", "err", err)
		}
	}()

	c.obsCh = make(chan hraft.Observation, 64)
	c.observer = hraft.NewObserver(c.obsCh, false, func(o *hraft.Observation) bool {
		_, ok := o.Data.(hraft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(c.observer)
	c.loops.Add(2)
	go c.leaderLoop(notify)
	go c.observeLoop()
	c.log.Info("raft started", "node", c.cfg.NodeID, "addr", tr.AdvertiseAddr().String(), "existing_state", has)
	return nil
}

func (c *Cluster) bootstrap() error {
	var servers []hraft.Server
	self := false
	for _, p := range c.cfg.Peers {
		servers = append(servers, hraft.Server{Suffrage: hraft.Voter, ID: hraft.ServerID(p.ID), Address: hraft.ServerAddress(p.Address)})
		if p.ID == c.cfg.NodeID {
			self = true
		}
	}
	if !self {
		return fmt.Errorf("peers: the list does not name this node %q", c.cfg.NodeID)
	}
	err := c.raft.BootstrapCluster(hraft.Configuration{Servers: servers}).Error()
	if err != nil && !errors.Is(err, hraft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap cluster: %w", err)
	}
	c.log.Info("bootstrapped cluster from peers", "peers", len(servers))
	return nil
}

// leaderLoop turns NotifyCh transitions into leader sessions. NotifyCh is
// buffered and drained here, unlike LeaderCh which drops transitions.
func (c *Cluster) leaderLoop(notify <-chan bool) {
	defer c.loops.Done()
	for {
		select {
		case <-c.stop:
			c.stepDown()
			return
		case leader := <-notify:
			if leader {
				c.becomeLeader()
			} else {
				c.stepDown()
			}
		}
	}
}

func (c *Cluster) becomeLeader() {
	c.mu.Lock()
	if c.leaderCancel != nil {
		c.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.leaderCancel = cancel
	r := c.raft
	c.mu.Unlock()
	term := r.CurrentTerm()
	c.log.Info("became leader", "term", term)
	c.leaderWG.Add(1)
	go func() {
		defer c.leaderWG.Done()
		// Apply everything the previous leader committed before acting.
		for {
			err := r.Barrier(5 * time.Second).Error()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("barrier as new leader failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.barrierDone.Store(term)
		for _, fn := range c.leaderFns {
			c.leaderWG.Add(1)
			go func() {
				defer c.leaderWG.Done()
				fn(ctx, term)
			}()
		}
	}()
}

func (c *Cluster) stepDown() {
	c.mu.Lock()
	cancel := c.leaderCancel
	c.leaderCancel = nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		c.log.Info("leadership lost; leader work cancelled")
	}
}

func (c *Cluster) observeLoop() {
	defer c.loops.Done()
	for {
		select {
		case <-c.stop:
			return
		case o := <-c.obsCh:
			lo, ok := o.Data.(hraft.LeaderObservation)
			if !ok {
				continue
			}
			for _, fn := range c.changeFns {
				fn(string(lo.LeaderID))
			}
		}
	}
}

// Result is the outcome of an applied command.
type Result struct {
	Index uint64 // log index of the command
	Data  []byte // what the state machine returned
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
	backoff := 10 * time.Millisecond
	for {
		var res Result
		var err error
		if r.State() == hraft.Leader {
			res, err = c.applyLocal(ctx, c.cfg.NodeID, typ, payload)
		} else {
			// A follower that cannot write its log could not apply the
			// command: refuse it before anything is committed. (A leader
			// tries: its failed write makes it step down.)
			if lerr := c.LogWriteErr(); lerr != nil {
				return Result{}, fmt.Errorf("apply %s: %w", typ, lerr)
			}
			res, err = c.forwardApply(ctx, typ, payload)
		}
		if err == nil {
			if werr := c.waitWritable(ctx, res.Index); werr != nil {
				if errors.Is(werr, ErrLogUnwritable) {
					return res, fmt.Errorf("apply %s: committed as entry %d, but this node cannot apply it: %w", typ, res.Index, werr)
				}
				return res, werr
			}
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
	f := c.raft.Apply(data, timeout)
	// Wait for the outcome, the caller's context or our own shutdown:
	// hashicorp/raft can enqueue a command just as it shuts down and then
	// never answer its future, which hung Close. The waiting goroutine
	// ends when the future is answered, which is never for a command that
	// was committed but still queued for the state machine when Raft shut
	// down (its FSM loop drops that queue): then it stays blocked until the
	// process exits, holding only the future.
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
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
	ar, _ := f.Response().(*applyResult)
	if ar != nil {
		res.Data = ar.data
		if ar.err != nil {
			return res, ar.err
		}
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

// standBackFactor multiplies the heartbeat and election timeouts of a
// node that cannot write its Raft log.
const standBackFactor = 10

// standBack keeps a node that cannot write its log out of the race for
// leadership: its log is as long as the others' right after it fails, so
// it can win an election, only to fail the first entry of its term and
// step down again (seen five times in a row in TestDiskFullLeader, 9 s
// without a leader). With timeouts ten times longer it lets the others
// elect a leader first; once a log write succeeds the timers are restored.
// It runs on the goroutine that wrote the log (Raft's main loop), before
// the follower loop that follows a step-down reads the timeout.
func (c *Cluster) standBack(r *hraft.Raft, failing bool) {
	hb, el, _ := Timing(c.cfg.TimeoutScale)
	if failing {
		hb, el = hb*standBackFactor, el*standBackFactor
	}
	rc := r.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = hb, el
	if err := r.ReloadConfig(rc); err != nil {
		c.log.Error("change raft timers", "err", err)
		return
	}
	if failing {
		c.log.Warn("raft log cannot be written; standing back from elections until it can", "heartbeat_timeout", hb)
	} else {
		c.log.Info("raft log written again; election timers restored", "heartbeat_timeout", hb)
	}
}

// waitWritable is WaitApplied, except that it gives up with the
// ErrLogUnwritable error as soon as this node cannot write its Raft log:
// entries it has not stored cannot reach its state machines until a log
// write succeeds again, and a request should not hang on that.
func (c *Cluster) waitWritable(ctx context.Context, index uint64) error {
	for {
		cur, ch := c.router.applied.waitCh()
		if cur >= index {
			return nil
		}
		failed, lerr := c.watch.state()
		if lerr != nil {
			return lerr
		}
		select {
		case <-ch:
		case <-failed:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, cur, ctx.Err())
		case <-c.stop:
			return ErrNotStarted
		}
	}
}

// LogWriteErr reports why this node cannot write its Raft log (a full or
// failing disk), wrapping ErrLogUnwritable and the cause; nil when its last
// log write succeeded, and before Start. Such a node still votes and
// takes heartbeats but no new entries; it catches up once a write succeeds
// again (the leader retries it with a backoff of up to about 10 s).
func (c *Cluster) LogWriteErr() error {
	c.mu.Lock()
	w := c.watch
	c.mu.Unlock()
	if w == nil {
		return nil
	}
	_, err := w.state()
	return err
}

// AppliedIndex is the last index applied to this node's state machines.
func (c *Cluster) AppliedIndex() uint64 { return c.router.applied.get() }

func (c *Cluster) running() (*hraft.Raft, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started || c.closed || c.raft == nil {
		return nil, ErrNotStarted
	}
	return c.raft, nil
}

// IsLeader reports whether this node is the leader.
func (c *Cluster) IsLeader() bool {
	r, err := c.running()
	return err == nil && r.State() == hraft.Leader
}

// Leader returns the id and cluster address of the leader this node knows.
func (c *Cluster) Leader() (id, addr string) {
	r, err := c.running()
	if err != nil {
		return "", ""
	}
	a, i := r.LeaderWithID()
	return string(i), string(a)
}

// Client is the HTTP client for node-to-node calls: a URL's host is a peer's
// cluster address, and every connection proves the cluster key.
func (c *Cluster) Client() *http.Client { return c.client }

// DialHTTP opens a connection for node-to-node HTTP to a peer's cluster
// address; like Client's, it proves the cluster key before it is returned.
func (c *Cluster) DialHTTP(ctx context.Context, addr string) (net.Conn, error) {
	c.mu.Lock()
	tr := c.transport
	c.mu.Unlock()
	if tr == nil {
		return nil, errors.New("cluster is not started")
	}
	return tr.dial(ctx, addr, chanHTTP)
}

// AdvertiseAddr is the cluster address other nodes dial.
func (c *Cluster) AdvertiseAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.transport == nil {
		return c.cfg.Advertise
	}
	return c.transport.AdvertiseAddr().String()
}

// Server is a member of the Raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Servers returns the current Raft configuration.
func (c *Cluster) Servers() ([]Server, error) {
	r, err := c.running()
	if err != nil {
		return nil, err
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == hraft.Voter})
	}
	return out, nil
}

// Info is this node's view of Raft.
type Info struct {
	NodeID       string
	State        string // leader, follower, candidate, shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64 // applied to the state machines
	LastIndex    uint64
	LastContact  time.Time // zero on the leader
}

// Info returns this node's view of Raft.
func (c *Cluster) Info() Info {
	in := Info{NodeID: c.cfg.NodeID, State: "shutdown"}
	r, err := c.running()
	if err != nil {
		return in
	}
	in.State = stateName(r.State())
	a, i := r.LeaderWithID()
	in.LeaderID, in.LeaderAddr = string(i), string(a)
	in.Term = r.CurrentTerm()
	in.CommitIndex = r.CommitIndex()
	in.AppliedIndex = r.AppliedIndex()
	in.LastIndex = r.LastIndex()
	if in.State != "leader" {
		in.LastContact = r.LastContact()
	}
	return in
}

func stateName(s hraft.RaftState) string {
	switch s {
	case hraft.Leader:
		return "leader"
	case hraft.Follower:
		return "follower"
	case hraft.Candidate:
		return "candidate"
	default:
		return "shutdown"
	}
}

// Ready reports whether this node knows a leader and has applied the
// leader's commit index as of its last contact; reason says why not.
func (c *Cluster) Ready() (ok bool, reason string) {
	in := c.Info()
	_, hb, _ := Timing(c.cfg.TimeoutScale)
	lerr := c.LogWriteErr()
	switch {
	case in.State == "shutdown":
		return false, "raft is not running"
	case lerr != nil:
		return false, lerr.Error()
	case in.LeaderID == "":
		return false, "no leader is known"
	case in.State != "leader" && time.Since(in.LastContact) > 3*hb:
		return false, fmt.Sprintf("no contact with the leader for %s", time.Since(in.LastContact).Round(time.Millisecond))
	case in.AppliedIndex < in.CommitIndex:
		return false, fmt.Sprintf("catching up: applied %d of %d", in.AppliedIndex, in.CommitIndex)
	}
	return true, ""
}

// Snapshot asks Raft to take a snapshot now.
func (c *Cluster) Snapshot() error {
	r, err := c.running()
	if err != nil {
		return err
	}
	if err := r.Snapshot().Error(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// Close leaves gracefully: a leader hands leadership to another voter first,
// then Raft, the cluster port and the stores close in reverse order. It is
// idempotent.
func (c *Cluster) Close() error {
	return c.shutdown(true)
}

// Abort stops the node the way a crash would, as far as a process can: the
// cluster port drops every connection first, with no leadership transfer.
// Data on disk stays as a kill -9 would leave it.
func (c *Cluster) Abort() error {
	return c.shutdown(false)
}

func (c *Cluster) shutdown(graceful bool) error {
	c.mu.Lock()
	if !c.started || c.closed {
		c.closed = true
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	r, tr := c.raft, c.transport
	c.mu.Unlock()

	var errs []error
	if !graceful {
		errs = append(errs, tr.Close())
	} else if r.State() == hraft.Leader {
		if cfg := r.GetConfiguration(); cfg.Error() == nil && len(cfg.Configuration().Servers) > 1 {
			if err := r.LeadershipTransfer().Error(); err != nil {
				c.log.Warn("leadership transfer on shutdown failed", "err", err)
			} else {
				c.log.Info("leadership transferred before shutdown")
			}
		}
	}
	close(c.stop)
	c.stepDown()
	if err := r.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
	}
	r.DeregisterObserver(c.observer)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = c.srv.Shutdown(ctx)
	cancel()
	_ = c.srv.Close()
	c.client.CloseIdleConnections()
	errs = append(errs, c.netTrans.Close())
	if graceful {
		errs = append(errs, tr.Close())
	}
	c.loops.Wait()
	c.leaderWG.Wait()
	if err := c.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft log: %w", err))
	}
	return errors.Join(errs...)
}

// streamLayer adapts the Transport to hashicorp/raft.
type streamLayer struct{ t *Transport }

var _ hraft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) { return s.t.raftLn.Accept() }
func (s *streamLayer) Close() error              { return s.t.raftLn.Close() }
func (s *streamLayer) Addr() net.Addr            { return s.t.AdvertiseAddr() }

func (s *streamLayer) Dial(addr hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.t.dial(ctx, string(addr), chanRaft)
}

package raft

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	hraft "github.com/hashicorp/raft"
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
	// ErrRemoved is returned for a command this node forwarded when the
	// leader's configuration does not list this node: it was removed from
	// the cluster (or is not added yet), and nothing was proposed. Such a
	// node would never apply the entry, so the write could not be
	// acknowledged.
	ErrRemoved = errors.New("this node is not a member of the cluster (removed, or not added yet)")
	// ErrLogUnwritable means this node's last write to its Raft log failed
	// (its disk is full or failing): it cannot append or apply new entries,
	// so it proposes none, until a write succeeds again. The error wraps
	// the cause, such as syscall.ENOSPC.
	ErrLogUnwritable = errors.New("this node cannot write its raft log")
	// ErrNothingNewToSnapshot is returned (wrapped) by Snapshot when
	// nothing was applied since the last snapshot; it is not a failure.
	ErrNothingNewToSnapshot = hraft.ErrNothingNewToSnapshot
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
	// CommitTimeout is how long the leader's replication to an idle
	// follower sleeps before it sends an append (empty, carrying the commit
	// index) anyway. Each wake-up costs CPU on every node, most of an idle
	// cluster's. 0 is the default: with FollowerCatchUp, the heartbeat
	// timeout (500 ms at scale 1), since followers then learn of
	// commits at once (a forwarded write's answer, a read index, the
	// leader's commit push, see router.catchUp and pushCommits) and
	// heartbeats keep the leader's contact fresh (StepDown); without it,
	// shortCommitTimeout (2 ms), which is how soon a follower then applies
	// a write it forwarded.
	CommitTimeout time.Duration
	// LogSegmentSize is the size of the Raft log's segment files, which
	// are preallocated: the log's disk use grows by this step. 0 is
	// walstore.DefaultSegmentSize (64 MiB). Tests on small disks set less.
	LogSegmentSize int64
	// FollowerCatchUp lets a follower apply its own log up to an index the
	// leader reported committed (a forwarded write's answer, a read index,
	// a pushed commit) instead of waiting for Raft's next append: a write
	// through a follower then costs about what it costs on the leader.
	// node turns it on; the zero value keeps hashicorp/raft's behaviour
	// (see DESIGN.md, "Followers apply at once").
	FollowerCatchUp bool
	Logger          *slog.Logger
	// Faults is the test seam of the transport; nil in production.
	Faults *Faults
	// Listener, when set, is the cluster port already opened.
	Listener net.Listener
	// Now is the clock the leader stamps commands with; nil is time.Now.
	// Tests skew it to show a follower's clock never reaches the log.
	Now func() time.Time
}

// StepDown is hashicorp/raft's LeaderLeaseTimeout for a scale factor: half
// a heartbeat timeout (250 ms at scale 1). A leader that heard from no
// quorum for that long steps down; the check runs about once per lease, so
// a leader cut off at T has stepped down by about T + 1.5 leases (~375 ms),
// before the others can elect a new one (a heartbeat timeout without
// contact, 500 ms at the soonest). Heartbeats alone, every 50–100 ms,
// keep it fresh two to five times over, so the leader sends no append to
// keep its contact fresh and an idle cluster costs little (Config.CommitTimeout).
// Nothing reads locally on its strength: reads rely on read indexes and
// read leases (Timing).
func StepDown(scale float64) time.Duration {
	hb, _, _ := Timing(scale)
	return hb / 2
}

// shortCommitTimeout is Config.CommitTimeout's default without
// FollowerCatchUp.
const shortCommitTimeout = 2 * time.Millisecond

// pushAbove is the commit timeout above which the leader pushes commits to
// its followers (pushCommits): at the default, Raft's own next append
// tells them within 2–4 ms anyway.
const pushAbove = 10 * time.Millisecond

// Timing returns the Raft timers for a scale factor: heartbeat and election
// timeouts of 500 ms and a read lease of a quarter of that. A read lease
// starts when a read index started, which the leader answers only after a
// quorum confirmed its leadership (VerifyLeader), and no other node can be
// elected before a full heartbeat timeout without contact has passed: the
// quarter leaves three quarters for clock rate drift and scheduling delays.
// The leader's own belief that it leads is never a lease (StepDown).
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
	fwd      *forwarder // forwarded commands to the leader (forward.go)
	calls    *forwarder // calls to the leader (leadercall.go)

	leaderFns     []func(ctx context.Context, term uint64)
	changeFns     []func(leaderID string)
	applyFn       func(typ string, took time.Duration) // see OnApply
	quorum        quorumWatch                          // bounded waits (quorum.go)
	leases        applyLeases                          // followers' apply leases (applylease.go)
	localInflight inflight                             // this node's own commands proposed as leader (settle.go)
	servedMu      sync.Mutex
	served        map[servedKey]*fwdServed // forward connections read from (settle.go)
	doubtMu       sync.Mutex
	doubts        map[doubt]bool      // forward connections with commands of unknown outcome (settle.go)
	stages        stageFn             // test seam: steps of the write path
	noPush        bool                // test seam: no commit pushes (pushCommits)
	fwdReadGate   func(origin string) // test seam: runs before the leader reads each forwarded command
	failLeasePush atomic.Bool         // test seam: pushes to apply lease holders fail
	appends       appendsSeen         // what answered appends told followers (pushCommits)
	pushes        atomic.Int64        // test seam: commit pushes sent
	// Test seams of the forward channel: refuse it as an older node does,
	// and count the commands forwarded to this node over HTTP and over it.
	noForwardChan            bool
	httpApplies, fwdCommands atomic.Int64
	noCallChan               bool         // test seam: refuse the call channel, as the previous version does
	leaderCalls              atomic.Int64 // test seam: leader calls taken over the call channel
	httpReadIndexes          atomic.Int64 // test seam: read indexes asked over HTTP

	mu        sync.Mutex
	callFns   map[string]LeaderCallFunc // HandleLeaderCall
	started   bool
	closed    bool
	raft      *hraft.Raft
	transport *Transport
	netTrans  *hraft.NetworkTransport
	stream    *streamLayer // the cluster port's Raft connections, as hashicorp/raft sees them
	store     *diskStores
	watch     *watchedStore  // store, remembering failed log writes
	logs      hraft.LogStore // the log as Raft reads it (cached); catchUp reads it too
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
	c.fwd = newForwarder(c, chanForward, "forward")
	c.fwd.onDoubt = c.noteDoubt
	c.calls = newForwarder(c, chanCall, "leader calls")
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "raft")
	c.internal.HandleFunc("POST /_internal/raft/apply", c.handleApply)
	c.internal.HandleFunc("POST /_internal/raft/join", c.handleJoin)
	c.internal.HandleFunc("POST /_internal/raft/remove", c.handleRemove)
	c.internal.HandleFunc("POST /_internal/raft/transfer", c.handleTransfer)
	c.internal.HandleFunc("POST /_internal/raft/readindex", c.handleReadIndex)
	c.HandleLeaderCall(readIndexCall, c.answerReadIndex)
	c.HandleLeaderCall(commitIndexCall, c.answerCommitIndex)
	c.HandleLeaderCall(leaseCall, c.answerLease)
	c.HandleLeaderCall(settleCall, c.answerSettle)
	c.leases.demand = NewDemand()
	c.internal.HandleFunc("POST "+commitPushPath, c.handleCommit)
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

// CommitIndex is the newest log index this node knows committed (0 when
// not running). Cheaper than Info for a hot path.
func (c *Cluster) CommitIndex() uint64 {
	r, err := c.running()
	if err != nil {
		return 0
	}
	return r.CommitIndex()
}

// Term is this node's current Raft term (0 when not running).
func (c *Cluster) Term() uint64 {
	r, err := c.running()
	if err != nil {
		return 0
	}
	return r.CurrentTerm()
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

// inConfiguration reports whether node id is in the latest Raft
// configuration (voter or not), committed or not.
func (c *Cluster) inConfiguration(id string) bool {
	_, ok, err := c.lookupServer(id)
	if errors.Is(err, errNoConfiguration) {
		return true // cannot tell: let the command through, as before
	}
	return ok && err == nil
}

// errNoConfiguration is lookupServer's error when Raft could not give
// its configuration.
var errNoConfiguration = errors.New("raft configuration unavailable")

// lookupServer finds node id in the latest Raft configuration (committed
// or not) and returns its cluster address.
func (c *Cluster) lookupServer(id string) (addr string, ok bool, err error) {
	r, err := c.running()
	if err != nil {
		return "", false, err
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return "", false, errNoConfiguration
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return string(s.Address), true, nil
		}
	}
	return "", false, nil
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
	if err := snapshotNow(r).Error(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

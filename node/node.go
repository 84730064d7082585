package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/appproc"
	"github.com/cohortserver/cohort/broadcast"
	"github.com/cohortserver/cohort/buildinfo"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/db"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/files/mount"
	"github.com/cohortserver/cohort/jobs"
	"github.com/cohortserver/cohort/kv"
	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/metrics"
	"github.com/cohortserver/cohort/proxy"
	"github.com/cohortserver/cohort/raft"
	"github.com/cohortserver/cohort/sessions"
	"github.com/cohortserver/cohort/upstream"
)

// Option adjusts how New builds a node; tests use them to inject
// pre-opened listeners and the transport's fault seam.
type Option func(*options)

type options struct {
	httpLn     net.Listener
	clusterLn  net.Listener
	faults     *raft.Faults
	now        func() time.Time
	logSegment int64
}

// WithRaftLogSegmentSize sets the size of the Raft log's preallocated
// segment files (raft.Config.LogSegmentSize); tests on small disks use it.
func WithRaftLogSegmentSize(n int64) Option {
	return func(o *options) { o.logSegment = n }
}

// WithClock sets this node's clock (tests of clock skew): the one it stamps
// replicated commands with when it leads and the local clock its sessions
// correct by the leader's; the default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithListeners makes the node serve on already-open listeners instead of
// opening --http-addr and --cluster-addr itself.
func WithListeners(httpLn, clusterLn net.Listener) Option {
	return func(o *options) { o.httpLn, o.clusterLn = httpLn, clusterLn }
}

// WithFaults wires the cluster transport to a fault-injection seam.
func WithFaults(f *raft.Faults) Option {
	return func(o *options) { o.faults = f }
}

// ReadyCheck is one condition of /_cohort/ready; it returns nil when met.
type ReadyCheck func(ctx context.Context) error

// Node is one cohort process: the Raft cluster member, the replicated
// state machines, and the public HTTP front. It is the composition root.
type Node struct {
	cfg  config.Config
	opts options
	log  *slog.Logger

	cluster *raft.Cluster
	members *membership.Table

	mux         *http.ServeMux // public front
	httpSrv     *http.Server
	httpLn      net.Listener
	fastLn      *proxy.FastListener // the fast front, when it owns the public listener
	publicPaths []string            // paths mounted beside the front (http.go)
	adminToken  []byte              // the first token of --admin-token-file
	adminTokens [][]byte            // every token accepted (rotation)
	started     time.Time

	readyChecks []ReadyCheck
	events      *metrics.Events   // front and job events for /_cohort/metrics
	caughtUp    chan struct{}     // closed once ready for the first time (catchup.go)
	draining    atomic.Bool       // graceful shutdown under way (catchup.go)
	syncStart   atomic.Int64      // start of the last successful read index (readguard.go)
	readDemand  *raft.Demand      // session reads that need the sync (readguard.go)
	files       *files.Store      // shared files (files.go)
	filesMount  *mount.Mount      // --files-mount, nil when off (files.go)
	jobs        *jobs.Runner      // master-only jobs (jobs.go)
	bus         *broadcast.Bus    // cluster broadcast (jobs.go)
	sessions    *sessions.Manager // replicated HTTP sessions (sessions.go)
	// sessionIgnore is --session-ignore compiled once: the sessions
	// middleware skips these paths and the front serves them locally.
	sessionIgnore *regexp.Regexp
	ops           *ops // metrics, events, console (ops.go)

	// The replicated key-value store and its listeners, when on (kv.go).
	kv        *kv.Store
	redis     *kv.RESPServer
	memcached *kv.MemcacheServer

	db *db.Database // business database, wired by setupApp (node/app.go)

	front *proxy.Front // sticky front, wired by setupFront (node/front.go)
	// upstream and appProc are the app beside the node (node/appupstream.go);
	// nil without --app-upstream / --app-command.
	upstream      *upstream.Proxy
	appProc       *appproc.Supervisor
	appRestarting atomic.Bool
	singles       *singletons // --singleton processes (node/singleton.go)
	appEv         *appEvents  // --app-events-path delivery (node/events.go)
	publicTLS     *tls.Config // TLS of the public port, set by setupFront's start hook

	// app holds the application routes (the demo, user handlers); the
	// wrappers (sessions middleware, the sticky front) are applied around it
	// in order at Start, the first innermost.
	app      *http.ServeMux
	wrappers []func(http.Handler) http.Handler
	onStart  []func(ctx context.Context) error
	onClose  []func() error
	onDrain  []func(ctx context.Context) error
	hooksUp  int // start hooks that ran and whose close hooks have not (Start, runClose)

	mu         sync.Mutex
	state      int                // 0 new, 1 started, 2 closed
	cancel     context.CancelFunc // ends background loops and request contexts
	hookCancel context.CancelFunc // ends the OnStart hooks' context
	bg         sync.WaitGroup
	closeMu    sync.Mutex
}

// New builds a node from a validated configuration. It does no I/O.
func New(cfg config.Config, opts ...Option) (*Node, error) {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = cfg.NewLogger(os.Stderr)
	}
	logger = logger.With("node", cfg.NodeID)
	n := &Node{cfg: cfg, opts: o, log: logger, mux: http.NewServeMux(), app: http.NewServeMux(), caughtUp: make(chan struct{}), events: metrics.NewEvents(), readDemand: raft.NewDemand()}
	n.cluster = raft.New(raft.Config{
		NodeID:          cfg.NodeID,
		DataDir:         cfg.DataDir,
		BindAddr:        cfg.ClusterAddr,
		Advertise:       cfg.AdvertiseAddr,
		Peers:           toRaftPeers(cfg.Peers),
		TimeoutScale:    cfg.RaftTimeoutScale,
		WaitBudget:      cfg.ClusterWaitBudget,
		Logger:          logger,
		Faults:          o.faults,
		Listener:        o.clusterLn,
		Now:             o.now,
		FollowerCatchUp: true,
		LogSegmentSize:  o.logSegment,
	})
	n.cluster.OnRefused(n.events.QuorumRefused)
	members, err := membership.New(n.cluster, cfg.NodeID, logger)
	if err != nil {
		return nil, fmt.Errorf("member table: %w", err)
	}
	n.members = members
	n.routes()
	for _, setup := range []func() error{
		n.setupSessions, n.setupFiles, n.setupFilesMount, n.setupKV, n.setupUpstream, n.setupSingletons, n.setupJobs, n.setupAppEvents, n.setupApp, n.setupFront,
		n.setupOps,
	} {
		if err := setup(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func toRaftPeers(ps []config.Peer) []raft.Peer {
	out := make([]raft.Peer, len(ps))
	for i, p := range ps {
		out[i] = raft.Peer{ID: p.ID, Address: p.Address}
	}
	return out
}

// Cluster returns the node's Raft cluster member.
func (n *Node) Cluster() *raft.Cluster { return n.cluster }

// Members returns the replicated member table.
func (n *Node) Members() *membership.Table { return n.members }

// ID is the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Config returns the configuration the node runs with.
func (n *Node) Config() config.Config { return n.cfg }

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// HTTPAddr is the address the public front listens on (after Start).
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return n.cfg.HTTPAddr
	}
	return n.httpLn.Addr().String()
}

// AdminToken returns the admin token in use ("" when none is configured).
func (n *Node) AdminToken() string { return string(n.adminToken) }

// AddReadyCheck adds a condition to /_cohort/ready. Call it before Start.
func (n *Node) AddReadyCheck(c ReadyCheck) { n.readyChecks = append(n.readyChecks, c) }

// Start opens the data dir, the cluster port, Raft and the public front,
// then bootstraps or joins. On error everything it started is closed.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	if n.state != 0 {
		n.mu.Unlock()
		return errors.New("node already started")
	}
	n.state = 1
	n.mu.Unlock()
	n.started = time.Now()

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			// Everything Start began is released: a later Close has
			// nothing to drain or close.
			n.mu.Lock()
			n.state = 2
			n.mu.Unlock()
		}
	}()

	if err := n.prepareDataDir(); err != nil {
		return err
	}
	secrets, err := n.loadSecrets()
	if err != nil {
		return err
	}
	n.adminToken, n.adminTokens = first(secrets.adminTokens), secrets.adminTokens
	n.cluster.SetCredentials(first(secrets.clusterKeys), secrets.clusterKeys[1:], secrets.tls)
	n.members.SetKey(first(secrets.clusterKeys))

	ln := n.opts.httpLn
	if ln == nil {
		if ln, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("--http-addr %s: %w", n.cfg.HTTPAddr, err)
		}
	}
	n.httpLn = ln
	undo = append(undo, func() { ln.Close() })

	if err := n.cluster.Start(ctx); err != nil {
		if n.opts.clusterLn == nil {
			return fmt.Errorf("--cluster-addr %s: %w", n.cfg.ClusterAddr, err)
		}
		return err
	}
	undo = append(undo, func() { _ = n.cluster.Abort() })

	bgCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	undo = append(undo, cancel)
	undo = append(undo, func() { _ = n.runClose() }) // the hooks that started, once
	hookCtx, hookCancel := context.WithCancel(bgCtx)
	n.hookCancel = hookCancel
	undo = append(undo, hookCancel)
	for _, fn := range n.onStart {
		if err := fn(hookCtx); err != nil {
			return err
		}
		n.hooksUp++
	}

	if len(n.cfg.Join) > 0 && !n.cluster.HadState() {
		jctx, jcancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
		err := n.cluster.Join(jctx, n.cfg.Join)
		jcancel()
		if err != nil {
			return fmt.Errorf("--join: %w", err)
		}
	}

	ln = n.servePublic(bgCtx, ln)
	n.log.Info("node started", "http", ln.Addr().String(), "cluster", n.cluster.AdvertiseAddr(), "version", buildinfo.Version)
	return nil
}

// servePublic builds the public HTTP server around the application (its
// wrappers, the catch-up gate, the admin mux), starts serving ln (through
// TLS or the front's fast path when configured) and the node's background
// loops, all bound to bgCtx. It returns the listener served.
func (n *Node) servePublic(bgCtx context.Context, ln net.Listener) net.Listener {
	var front http.Handler = n.app
	for _, w := range n.wrappers {
		front = w(front)
	}
	n.mux.Handle("/", n.catchUpGate(front))
	n.httpSrv = &http.Server{
		Handler:           proxy.CloseChunked(n.closeWhileDraining(refuseDotSegments(n.mux))),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       0, // streaming uploads; bounded per handler
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return bgCtx },
	}
	if n.publicTLS != nil { // --public-tls-cert-file (node/front.go)
		n.httpSrv.TLSConfig = n.publicTLS
		ln = tls.NewListener(ln, n.publicTLS)
	} else if n.cfg.Front.FastPath {
		n.fastLn = n.front.Listen(ln, proxy.ListenOptions{
			Claims:         n.frontClaims,
			IdleTimeout:    n.httpSrv.IdleTimeout,
			HeaderTimeout:  n.httpSrv.ReadHeaderTimeout,
			MaxHeaderBytes: n.httpSrv.MaxHeaderBytes,
		})
		ln = n.fastLn
	} else {
		ln = n.front.WatchRefusals(ln) // log what net/http refuses, as the fast front does
	}
	n.goBackground(func() {
		if err := n.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("public http server stopped", "err", err)
		}
	})
	n.goBackground(func() { n.watchCatchUp(bgCtx) })
	n.goBackground(func() { n.syncLoop(bgCtx) })
	n.goBackground(func() { n.announceLoop(bgCtx) })
	n.goBackground(func() { n.members.StartProbing(bgCtx, n.cluster.Client(), 250*time.Millisecond) })
	return ln
}

func (n *Node) goBackground(fn func()) {
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		fn()
	}()
}

// announceLoop records this node's addresses in the member table as soon as
// a leader exists, and again whenever the table lost them (e.g. after a
// restore).
func (n *Node) announceLoop(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := n.members.Announce(actx, n.cluster.AdvertiseAddr(), n.advertisedHTTP(), buildinfo.Version)
		cancel()
		if err == nil {
			backoff = 2 * time.Second
		} else if ctx.Err() == nil {
			n.log.Debug("announce not yet possible", "err", err)
			// Short: readiness waits for the announce, and the usual
			// failure is only the first election still running.
			backoff = min(backoff*2, 250*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// advertisedHTTP is the public address other nodes and status show: the
// listener's port on the advertised cluster host when it listens on all
// interfaces.
func (n *Node) advertisedHTTP() string {
	addr := n.httpLn.Addr().String()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		chost, _, err := net.SplitHostPort(n.cluster.AdvertiseAddr())
		if err == nil {
			return net.JoinHostPort(chost, port)
		}
	}
	return addr
}

// Close shuts the node down gracefully: the public front stops taking
// requests and finishes those in flight, a leader hands over leadership,
// then Raft and the stores close. It is idempotent.
func (n *Node) Close() error { return n.shutdown(true) }

// Abort stops the node abruptly, the way kill -9 would as far as a process
// can: connections drop, no leadership transfer, nothing flushed beyond
// what is already durable. Tests use it to simulate a crash.
func (n *Node) Abort() error { return n.shutdown(false) }

func (n *Node) shutdown(graceful bool) error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	n.mu.Lock()
	if n.state != 1 {
		n.state = 2
		n.mu.Unlock()
		return nil
	}
	n.state = 2
	n.mu.Unlock()
	var errs []error
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
		// 1. Drain while the front still serves: answers carry
		// Connection: close so keep-alive clients move to other nodes, and
		// hooks mark the node draining cluster-wide and wait for in-flight
		// work.
		n.draining.Store(true)
		for _, d := range n.onDrain {
			if err := d(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		n.drainGrace(ctx)
		// 2. Stop taking requests; finish those in flight.
		if n.httpSrv != nil {
			if err := n.httpSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
		}
		if n.fastLn != nil {
			if err := n.fastLn.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("fast front shutdown: %w", err))
			}
		}
		cancel()
		// 3. Capabilities stop (their start contexts end first), then Raft
		// hands over leadership and closes.
		n.cancelHooks()
		errs = append(errs, n.runClose()...)
		errs = append(errs, n.cluster.Close())
	} else {
		errs = append(errs, n.cluster.Abort())
		if n.httpSrv != nil {
			_ = n.httpSrv.Close()
		}
		if n.fastLn != nil {
			n.fastLn.CloseConns()
		}
		n.cancelHooks()
		errs = append(errs, n.runClose()...)
	}
	if n.cancel != nil {
		n.cancel()
	}
	if n.httpLn != nil {
		_ = n.httpLn.Close()
	}
	n.bg.Wait()
	return errors.Join(errs...)
}

func (n *Node) cancelHooks() {
	if n.hookCancel != nil {
		n.hookCancel()
	}
}

// OnDrain registers fn to run first in a graceful Close, while the public
// front still serves: the place to stop taking new work and wait for what
// is in flight. ctx carries --shutdown-timeout. Call it before Start.
func (n *Node) OnDrain(fn func(ctx context.Context) error) { n.onDrain = append(n.onDrain, fn) }

// runClose runs the close hooks of the start hooks that ran, in reverse
// order, each once: a component that never started is not closed.
func (n *Node) runClose() []error {
	var errs []error
	for ; n.hooksUp > 0; n.hooksUp-- {
		errs = append(errs, n.onClose[n.hooksUp-1]())
	}
	return errs
}

// OnStart registers a lifecycle hook pair: start runs in Start after Raft
// is up and before the front serves; its ctx is cancelled when Close
// reaches the hooks (after draining and the front's shutdown), just before
// stop runs. Stops run in reverse order of registration. Either may be nil.
// Call it before Start.
func (n *Node) OnStart(start func(ctx context.Context) error, stop func() error) {
	if start == nil {
		start = func(context.Context) error { return nil }
	}
	if stop == nil {
		stop = func() error { return nil }
	}
	n.onStart = append(n.onStart, start)
	n.onClose = append(n.onClose, stop)
}

// HandleApp mounts an application route; application routes sit behind the
// sessions middleware and the sticky front. Call it before Start.
func (n *Node) HandleApp(pattern string, h http.Handler) { n.app.Handle(pattern, h) }

// WrapApp adds a middleware around the application routes; the first added
// is innermost. Call it before Start.
func (n *Node) WrapApp(w func(http.Handler) http.Handler) { n.wrappers = append(n.wrappers, w) }

type secrets struct {
	clusterKeys [][]byte // the first dials; all are accepted
	adminTokens [][]byte // all are accepted; the first is shown in dev mode
	tls         *tls.Config
}

func first(bs [][]byte) []byte {
	if len(bs) == 0 {
		return nil
	}
	return bs[0]
}

// secretLines splits a secret file into its non-empty lines: a file may
// hold several keys or tokens while one is being rotated out.
func secretLines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, []byte(l))
		}
	}
	return out
}

func (n *Node) loadSecrets() (secrets, error) {
	var s secrets
	switch {
	case n.cfg.ClusterKeyFile != "":
		b, err := config.ReadSecret(n.cfg.ClusterKeyFile, 16)
		if err != nil {
			return s, fmt.Errorf("--cluster-key-file: %w", err)
		}
		s.clusterKeys = secretLines(b)
		for i, k := range s.clusterKeys {
			if len(k) < 16 {
				return s, fmt.Errorf("--cluster-key-file %s: key on line %d has %d bytes; at least 16 are needed", n.cfg.ClusterKeyFile, i+1, len(k))
			}
		}
	case n.cfg.Dev:
		k, err := generatedSecret(n.cfg.DataDir, "cluster.key")
		if err != nil {
			return s, err
		}
		s.clusterKeys = [][]byte{k}
	default:
		return s, errors.New("--cluster-key-file: required")
	}
	switch {
	case n.cfg.AdminTokenFile != "":
		b, err := config.ReadSecret(n.cfg.AdminTokenFile, 16)
		if err != nil {
			return s, fmt.Errorf("--admin-token-file: %w", err)
		}
		s.adminTokens = secretLines(b)
		for i, tok := range s.adminTokens {
			if len(tok) < 16 {
				return s, fmt.Errorf("--admin-token-file %s: token on line %d has %d bytes; at least 16 are needed", n.cfg.AdminTokenFile, i+1, len(tok))
			}
		}
	case n.cfg.Dev:
		tok, err := generatedSecret(n.cfg.DataDir, "admin.token")
		if err != nil {
			return s, err
		}
		s.adminTokens = [][]byte{tok}
	}
	if n.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(n.cfg.TLSCertFile, n.cfg.TLSKeyFile)
		if err != nil {
			return s, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
		}
		caPEM, err := os.ReadFile(n.cfg.TLSCAFile)
		if err != nil {
			return s, fmt.Errorf("--tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return s, fmt.Errorf("--tls-ca-file %s: no PEM certificate found", n.cfg.TLSCAFile)
		}
		s.tls = &tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      pool,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS13,
		}
	}
	return s, nil
}

package raft

import (
	"context"
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

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/cohortserver/cohort/raft/walstore"
	"go.etcd.io/bbolt"
)

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

	st, err := c.openStores(&cleanup)
	if err != nil {
		return err
	}
	tr, nt, err := c.openTransport(st.hclog, &cleanup)
	if err != nil {
		return err
	}
	c.client = newPeerClient(tr)
	cleanup = append(cleanup, c.client.CloseIdleConnections)

	notify := make(chan bool, 64)
	has, err := hraft.HasExistingState(st.logs, st.watch, st.snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	r, err := hraft.NewRaft(c.raftConfig(st.hclog, notify), c.router, st.logs, st.watch, st.snaps, guardedTransport{NetworkTransport: nt, seen: &c.appends})
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	cleanup = append(cleanup, func() { _ = r.Shutdown().Error() })
	st.started.Store(r)
	c.raft, c.transport, c.netTrans, c.store, c.watch, c.logs = r, tr, nt, st.disk, st.watch, st.logs
	c.hadState = has

	if !has && len(c.cfg.Peers) > 0 {
		if err := c.bootstrap(); err != nil {
			return err
		}
	} else if has && len(c.cfg.Peers) > 0 {
		c.log.Info("data dir holds raft state; --peers ignored")
	}

	c.serveInternal(tr)
	c.loops.Add(1)
	go c.serveForward(tr.forwardListener(), c.forwardedCommand, true)
	c.loops.Add(1)
	go c.serveForward(tr.callListener(), c.leaderCall, false)
	c.startLoops(r, notify)
	if c.leasing() {
		c.loops.Add(1)
		go func() {
			defer c.loops.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				<-c.stop
				cancel()
			}()
			c.leases.demand.Refresh(ctx, c.ReadLease()/3, leaseIdle, c.renewLease)
		}()
	}
	c.log.Info("raft started", "node", c.cfg.NodeID, "addr", tr.AdvertiseAddr().String(), "existing_state", has)
	return nil
}

// stores is what openStores opened: the log and stable stores, the
// failure-watching wrapper of the log, the log cache in front of it and
// the snapshot store.
type stores struct {
	disk    *diskStores
	watch   *watchedStore
	logs    hraft.LogStore
	snaps   hraft.SnapshotStore
	hclog   hclog.Logger
	started *atomic.Pointer[hraft.Raft] // set once Raft runs; standBack needs it
}

// openStores opens DataDir/raft: the log and stable stores, the log cache
// and the snapshot store.
func (c *Cluster) openStores(cleanup *[]func()) (*stores, error) {
	disk, err := openLogStore(c.cfg.DataDir, c.cfg.LogSegmentSize, c.log)
	if err != nil {
		return nil, err
	}
	*cleanup = append(*cleanup, func() { disk.Close() })
	st := &stores{disk: disk, started: new(atomic.Pointer[hraft.Raft])}
	st.watch = newWatchedStore(disk)
	st.watch.stages, c.router.stages = c.stages, c.stages
	st.watch.onChange = func(failing bool) {
		if r := st.started.Load(); r != nil {
			c.standBack(r, failing)
		}
	}
	if st.logs, err = hraft.NewLogCache(1024, st.watch); err != nil {
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	st.hclog = newHCLog(c.log, "raft")
	if st.snaps, err = hraft.NewFileSnapshotStoreWithLogger(disk.dir, 2, st.hclog.Named("snapshot")); err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	return st, nil
}

// diskStores are a node's Raft stores in DataDir/raft: the log in wal/
// (walstore: one fdatasync per append) and the term and vote in raft.db
// (bbolt), which held the log too before the write path changed.
type diskStores struct {
	dir    string
	log    *walstore.Store
	stable *raftboltdb.BoltStore
}

// Close closes both stores.
func (d *diskStores) Close() error {
	return errors.Join(d.log.Close(), d.stable.Close())
}

// openLogStore creates DataDir/raft and opens its stores. A data dir
// written before the log moved to wal/ has its log in raft.db: it is
// copied into wal/ (walstore.Upgrade, atomic: an interrupted copy is
// started again at the next start), and then deleted from raft.db, so
// that nothing can read a stale copy of it. segSize is the log's segment
// size (0: walstore.DefaultSegmentSize).
func openLogStore(dataDir string, segSize int64, log *slog.Logger) (*diskStores, error) {
	dir := filepath.Join(dataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	path := filepath.Join(dir, "raft.db")
	stable, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
	})
	if err != nil {
		return nil, fmt.Errorf("open raft state %s (is a node still running on it?): %w", path, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	walDir := filepath.Join(dir, "wal")
	wal, err := walstore.Upgrade(walDir, walstore.Options{SegmentSize: segSize, Logger: log.With("component", "raft-log")}, stable)
	if err != nil {
		stable.Close()
		return nil, fmt.Errorf("open raft log %s: %w", walDir, err)
	}
	first, err1 := stable.FirstIndex()
	last, err2 := stable.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		wal.Close()
		stable.Close()
		return nil, fmt.Errorf("read the old raft log in %s: %w", path, err)
	}
	if last > 0 {
		if err := stable.DeleteRange(first, last); err != nil {
			wal.Close()
			stable.Close()
			return nil, fmt.Errorf("delete the old raft log in %s after copying it to %s: %w", path, walDir, err)
		}
		log.Info("raft log moved to its own store", "from", path, "to", walDir, "entries", last-first+1)
	}
	return &diskStores{dir: dir, log: wal, stable: stable}, nil
}

// openTransport opens the cluster port and hashicorp/raft's network
// transport over it.
func (c *Cluster) openTransport(hl hclog.Logger, cleanup *[]func()) (*Transport, *hraft.NetworkTransport, error) {
	tr, err := Listen(c.cfg.BindAddr, TransportConfig{
		NodeID: c.cfg.NodeID, Key: c.cfg.Key, AcceptKeys: c.cfg.AcceptKeys, TLS: c.cfg.TLS,
		Logger: c.log.With("sub", "transport"), Faults: c.cfg.Faults, Advertise: c.cfg.Advertise, Listener: c.cfg.Listener,
		noForward: c.noForwardChan, noCall: c.noCallChan,
	})
	if err != nil {
		return nil, nil, err
	}
	*cleanup = append(*cleanup, func() { tr.Close() })
	c.stream = &streamLayer{t: tr}
	nt := hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
		Stream:  c.stream,
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  hl.Named("net"),
		// See maxRPCsInFlight: pipelining is off; when on, it runs
		// through guardedTransport, which keeps hashicorp/raft#612 (a
		// follower whose log write failed parked the leader's replication
		// to it for good) from happening.
		MaxRPCsInFlight: maxRPCsInFlight,
	})
	*cleanup = append(*cleanup, func() { nt.Close() })
	return tr, nt, nil
}

// newPeerClient is the HTTP client for node-to-node calls over tr.
func newPeerClient(tr *Transport) *http.Client {
	return &http.Client{Transport: &http.Transport{
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
}

// raftConfig is hashicorp/raft's configuration for this node; leadership
// transitions go to notify.
func (c *Cluster) raftConfig(hl hclog.Logger, notify chan bool) *hraft.Config {
	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(c.cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout, rc.ElectionTimeout, _ = Timing(c.cfg.TimeoutScale)
	rc.LeaderLeaseTimeout = StepDown(c.cfg.TimeoutScale)
	rc.CommitTimeout = c.commitTimeout()
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
	rc.NotifyCh = notify
	return rc
}

// commitTimeout is Config.CommitTimeout or its default.
func (c *Cluster) commitTimeout() time.Duration {
	if c.cfg.CommitTimeout > 0 {
		return c.cfg.CommitTimeout
	}
	if !c.cfg.FollowerCatchUp {
		return shortCommitTimeout
	}
	hb, _, _ := Timing(c.cfg.TimeoutScale)
	return hb
}

// serveInternal starts the node-to-node HTTP server on tr's HTTP channel.
func (c *Cluster) serveInternal(tr *Transport) {
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
}

// startLoops starts the goroutines that turn leadership transitions and
// leader observations into OnLeader and OnLeaderChange calls.
func (c *Cluster) startLoops(r *hraft.Raft, notify <-chan bool) {
	c.obsCh = make(chan hraft.Observation, 64)
	c.observer = hraft.NewObserver(c.obsCh, false, func(o *hraft.Observation) bool {
		_, ok := o.Data.(hraft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(c.observer)
	c.loops.Add(2)
	go c.leaderLoop(notify)
	go c.observeLoop()
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
	c.fwd.close()
	c.calls.close()
	c.loops.Wait()
	c.leaderWG.Wait()
	// hashicorp/raft answers heartbeats on the connection's own goroutine,
	// outside the loops Shutdown waits for: one that carries a newer term
	// writes it to the stable store, and panics if the store is closed
	// under it. The cluster port is closed by now, so each handler is
	// about to return; wait for them before closing the stores.
	if !c.stream.drain(handlerDrainTimeout) {
		c.log.Error("raft connection handlers still running after the cluster port closed; closing the stores anyway", "waited", handlerDrainTimeout)
	}
	if err := c.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft stores: %w", err))
	}
	return errors.Join(errs...)
}

// handlerDrainTimeout bounds how long Close waits for hashicorp/raft's
// connection handlers once the cluster port is closed.
const handlerDrainTimeout = 10 * time.Second

// streamLayer adapts the Transport to hashicorp/raft. It counts the
// connections it hands to hashicorp/raft until their handler closes them,
// so that shutdown can wait for the handlers before closing the stores.
type streamLayer struct {
	t *Transport

	mu      sync.Mutex
	drained bool           // Accept hands out no more connections
	served  sync.WaitGroup // one per connection not yet closed by its handler
}

var _ hraft.StreamLayer = (*streamLayer)(nil)

// Accept returns the next authenticated Raft connection.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.t.raftLn.Accept()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drained {
		c.Close()
		return nil, net.ErrClosed
	}
	s.served.Add(1)
	return &servedConn{Conn: c, done: s.served.Done}, nil
}

// drain stops Accept and waits up to timeout until every connection it
// handed out was closed. It reports whether they all were.
func (s *streamLayer) drain(timeout time.Duration) bool {
	s.mu.Lock()
	s.drained = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.served.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// servedConn is a connection handed to hashicorp/raft's handler; its
// first Close marks the handler done.
type servedConn struct {
	net.Conn
	once sync.Once
	done func()
}

// Close closes the connection and, the first time, reports it closed.
func (c *servedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}

func (s *streamLayer) Close() error   { return s.t.raftLn.Close() }
func (s *streamLayer) Addr() net.Addr { return s.t.AdvertiseAddr() }

func (s *streamLayer) Dial(addr hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.t.dial(ctx, string(addr), chanRaft)
}

package raft

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"

	hraft "github.com/hashicorp/raft"
)

// ErrHasState is returned by SeedFromBackup when the data dir already holds
// Raft state: a restore only ever seeds a new node.
var ErrHasState = errors.New("the data dir already holds raft state; restore into an empty --data-dir")

// offlineStores opens the stores of DataDir/raft for an offline operation.
type offlineStores struct {
	disk  *diskStores
	snaps *hraft.FileSnapshotStore
}

func openOffline(cfg Config) (*offlineStores, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	disk, err := openLogStore(cfg.DataDir, cfg.LogSegmentSize, log)
	if err != nil {
		return nil, err
	}
	snaps, err := hraft.NewFileSnapshotStoreWithLogger(disk.dir, 2, newHCLog(log, "raft").Named("snapshot"))
	if err != nil {
		disk.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	return &offlineStores{disk: disk, snaps: snaps}, nil
}

func (s *offlineStores) close() error {
	if err := s.disk.Close(); err != nil {
		return fmt.Errorf("close raft stores: %w", err)
	}
	return nil
}

func configuration(servers []Peer) hraft.Configuration {
	var conf hraft.Configuration
	for _, p := range servers {
		conf.Servers = append(conf.Servers, hraft.Server{Suffrage: hraft.Voter, ID: hraft.ServerID(p.ID), Address: hraft.ServerAddress(p.Address)})
	}
	return conf
}

// Recover rewrites this node's Raft configuration offline to servers (the
// peers.json procedure of hashicorp/raft): the latest snapshot and every
// log entry after it are applied to the registered state machines, a new
// snapshot carrying the new configuration is written and the log is
// compacted. Use it after a quorum loss, on a stopped node whose data is
// intact; then start the node(s) named in servers. The cluster must have
// every state machine registered (node.New does that) and must not be
// started.
func (c *Cluster) Recover(servers []Peer) error {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if started {
		return errors.New("recover: the cluster is running; stop the node first")
	}
	if len(servers) == 0 {
		return errors.New("recover: the new configuration names no server")
	}
	st, err := openOffline(c.cfg)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer st.close()
	logs, err := hraft.NewLogCache(64, st.disk.log)
	if err != nil {
		return fmt.Errorf("recover: log cache: %w", err)
	}
	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(c.cfg.NodeID)
	rc.Logger = newHCLog(c.log, "raft")
	_, trans := hraft.NewInmemTransport(hraft.ServerAddress(c.cfg.BindAddr))
	defer trans.Close()
	if err := hraft.RecoverCluster(rc, c.router, logs, st.disk.stable, st.snaps, trans, configuration(servers)); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	c.log.Warn("raft configuration recovered offline", "servers", len(servers))
	return nil
}

// SeedFromBackup writes a backup (see Cluster.Backup) into an empty data
// dir as the latest snapshot, with a configuration of this one node
// (cfg.NodeID at cfg.Advertise, else cfg.BindAddr). A node started on that
// data dir restores the state and elects itself; grow it with --join.
// When r is a *bufio.Reader of at least 256 KiB it is read exactly to the
// end of the snapshot, so the caller reads a format-2 backup's tail
// (BackupMeta.Tail) from it next.
func SeedFromBackup(cfg Config, r io.Reader) (BackupMeta, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	bm, err := ReadBackupHeader(br)
	if err != nil {
		return bm, err
	}
	head, err := br.Peek(len(snapshotMagic))
	if err != nil || !bytes.Equal(head, []byte(snapshotMagic)) {
		return bm, fmt.Errorf("backup body is not a cohort snapshot: %w", ErrNotBackup)
	}
	addr := cfg.Advertise
	if addr == "" {
		addr = cfg.BindAddr
	}
	st, err := openOffline(cfg)
	if err != nil {
		return bm, fmt.Errorf("restore: %w", err)
	}
	defer st.close()
	has, err := hraft.HasExistingState(st.disk.log, st.disk.stable, st.snaps)
	if err != nil {
		return bm, fmt.Errorf("restore: inspect raft state: %w", err)
	}
	if has {
		return bm, ErrHasState
	}
	_, trans := hraft.NewInmemTransport(hraft.ServerAddress(addr))
	defer trans.Close()
	sink, err := st.snaps.Create(hraft.SnapshotVersionMax, bm.Index, bm.Term,
		configuration([]Peer{{ID: cfg.NodeID, Address: addr}}), 1, trans)
	if err != nil {
		return bm, fmt.Errorf("restore: create snapshot: %w", err)
	}
	n, err := io.Copy(sink, io.LimitReader(br, bm.Size))
	if err == nil && n != bm.Size {
		err = fmt.Errorf("backup truncated: %d of %d bytes", n, bm.Size)
	}
	if err != nil {
		_ = sink.Cancel()
		return bm, fmt.Errorf("restore: %w", err)
	}
	if err := sink.Close(); err != nil {
		return bm, fmt.Errorf("restore: finish snapshot: %w", err)
	}
	// Start at the backup's term so the new leader's terms never go back.
	if err := st.disk.stable.SetUint64([]byte("CurrentTerm"), bm.Term); err != nil {
		return bm, fmt.Errorf("restore: set term: %w", err)
	}
	return bm, nil
}

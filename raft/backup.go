package raft

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	hraft "github.com/hashicorp/raft"
)

// backupMagic opens every backup file: a text line, then one line of JSON
// (BackupMeta), then the FSM snapshot exactly as the snapshot store holds it.
const backupMagic = "COHORT-BACKUP 1\n"

// maxBackupMeta bounds the metadata line of a backup.
const maxBackupMeta = 1 << 20

// ErrNotBackup is returned when a file is not a cohort backup.
var ErrNotBackup = errors.New("not a cohort backup (missing COHORT-BACKUP header)")

// BackupMeta describes a backup: which log position its state is at and
// which configuration the cluster had then.
type BackupMeta struct {
	NodeID  string    `json:"node_id"` // the node that wrote it
	Created time.Time `json:"created"`
	Index   uint64    `json:"index"` // last log index the state includes
	Term    uint64    `json:"term"`
	Size    int64     `json:"size"` // bytes of snapshot after the header
	Servers []Server  `json:"servers"`
}

// Backup writes a consistent copy of the replicated state to w: it takes a
// snapshot now (or, when nothing was applied since the last one, reuses the
// latest) and streams it after a small header. The state is the FSM's at
// meta.Index, the same on every node. It may run while commands apply.
func (c *Cluster) Backup(w io.Writer) (BackupMeta, error) {
	r, err := c.running()
	if err != nil {
		return BackupMeta{}, err
	}
	var (
		meta *hraft.SnapshotMeta
		rc   io.ReadCloser
	)
	f := snapshotNow(r)
	if err := f.Error(); err == nil {
		meta, rc, err = f.Open()
		if err != nil {
			return BackupMeta{}, fmt.Errorf("open snapshot: %w", err)
		}
	} else if errors.Is(err, hraft.ErrNothingNewToSnapshot) {
		meta, rc, err = c.latestSnapshot()
		if err != nil {
			return BackupMeta{}, err
		}
	} else {
		return BackupMeta{}, fmt.Errorf("take snapshot: %w", err)
	}
	defer rc.Close()
	bm := BackupMeta{NodeID: c.cfg.NodeID, Created: time.Now().UTC(), Index: meta.Index, Term: meta.Term, Size: meta.Size}
	for _, s := range meta.Configuration.Servers {
		bm.Servers = append(bm.Servers, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == hraft.Voter})
	}
	head, err := json.Marshal(bm)
	if err != nil {
		return bm, fmt.Errorf("encode backup header: %w", err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.WriteString(backupMagic)
	bw.Write(head)
	bw.WriteByte('\n')
	n, err := io.Copy(bw, rc)
	if err != nil {
		return bm, fmt.Errorf("copy snapshot: %w", err)
	}
	if n != meta.Size {
		return bm, fmt.Errorf("copy snapshot: %d of %d bytes", n, meta.Size)
	}
	if err := bw.Flush(); err != nil {
		return bm, fmt.Errorf("write backup: %w", err)
	}
	return bm, nil
}

// latestSnapshot opens the newest snapshot in the store for reading.
func (c *Cluster) latestSnapshot() (*hraft.SnapshotMeta, io.ReadCloser, error) {
	snaps, err := hraft.NewFileSnapshotStoreWithLogger(filepath.Join(c.cfg.DataDir, "raft"), 2, newHCLog(c.log, "raft").Named("snapshot"))
	if err != nil {
		return nil, nil, fmt.Errorf("open snapshot store: %w", err)
	}
	list, err := snaps.List()
	if err != nil {
		return nil, nil, fmt.Errorf("list snapshots: %w", err)
	}
	if len(list) == 0 {
		return nil, nil, errors.New("no snapshot exists and nothing new to snapshot")
	}
	meta, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return nil, nil, fmt.Errorf("open snapshot %s: %w", list[0].ID, err)
	}
	return meta, rc, nil
}

// ReadBackupHeader reads the header of a backup and leaves r at the first
// byte of the snapshot.
func ReadBackupHeader(r *bufio.Reader) (BackupMeta, error) {
	var bm BackupMeta
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != backupMagic {
		return bm, ErrNotBackup
	}
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return bm, fmt.Errorf("read backup header: %w", err)
		}
		if len(line) > maxBackupMeta {
			return bm, fmt.Errorf("backup header longer than %d bytes: %w", maxBackupMeta, ErrNotBackup)
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(line)))
	if err := dec.Decode(&bm); err != nil {
		return bm, fmt.Errorf("decode backup header: %w: %w", err, ErrNotBackup)
	}
	if bm.Index == 0 || bm.Size < int64(len(snapshotMagic)) {
		return bm, fmt.Errorf("backup header names index %d and %d bytes: %w", bm.Index, bm.Size, ErrNotBackup)
	}
	return bm, nil
}

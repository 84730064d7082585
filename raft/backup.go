package raft

import (
	"bufio"
	"encoding/binary"
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
// Format 2 (backupMagicTail) is the same followed by a tail that
// BackupMeta.Tail names (the files' contents: see files.BackupTail).
const (
	backupMagic     = "COHORT-BACKUP 1\n"
	backupMagicTail = "COHORT-BACKUP 2\n"
)

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
	// Tail names what follows the snapshot in a format-2 backup ("" in
	// format 1, which ends with the snapshot).
	Tail string `json:"tail,omitempty"`
}

// BackupOptions extends a backup beyond the replicated state.
type BackupOptions struct {
	// Section names a snapshot section (a state machine's name) that
	// Observe reads while the snapshot streams, e.g. to learn which blobs
	// the state at the backup's index refers to. Observe runs on its own
	// goroutine and must read its reader to the end or return an error.
	Section string
	Observe func(io.Reader) error
	// Tail, when set, makes a format-2 backup: TailName goes into the
	// header and Tail writes what follows the snapshot, after Observe
	// returned.
	TailName string
	Tail     func(w io.Writer) error
}

// Backup writes a consistent copy of the replicated state to w: it takes a
// snapshot now (or, when nothing was applied since the last one, reuses the
// latest) and streams it after a small header. The state is the FSM's at
// meta.Index, the same on every node. It may run while commands apply.
func (c *Cluster) Backup(w io.Writer) (BackupMeta, error) {
	return c.BackupWith(w, BackupOptions{})
}

// BackupWith is Backup extended by o: a section of the snapshot is shown
// to o.Observe while it streams and o.Tail writes after it.
func (c *Cluster) BackupWith(w io.Writer, o BackupOptions) (BackupMeta, error) {
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
	magic := backupMagic
	if o.Tail != nil {
		bm.Tail, magic = o.TailName, backupMagicTail
	}
	for _, s := range meta.Configuration.Servers {
		bm.Servers = append(bm.Servers, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == hraft.Voter})
	}
	head, err := json.Marshal(bm)
	if err != nil {
		return bm, fmt.Errorf("encode backup header: %w", err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.WriteString(magic)
	bw.Write(head)
	bw.WriteByte('\n')
	var src io.Reader = rc
	var observed chan error
	var pw *io.PipeWriter
	if o.Observe != nil {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		observed = make(chan error, 1)
		go func() {
			err := ReadSnapshotSection(pr, o.Section, o.Observe)
			pr.CloseWithError(err)
			observed <- err
		}()
		src = io.TeeReader(rc, pw)
	}
	n, err := io.Copy(bw, src)
	if err == nil && n != meta.Size {
		err = fmt.Errorf("%d of %d bytes", n, meta.Size)
	}
	if observed != nil {
		pw.CloseWithError(err)
		if oerr := <-observed; oerr != nil && err == nil {
			err = fmt.Errorf("read section %s: %w", o.Section, oerr)
		}
	}
	if err != nil {
		return bm, fmt.Errorf("copy snapshot: %w", err)
	}
	if o.Tail != nil {
		if err := o.Tail(bw); err != nil {
			return bm, fmt.Errorf("write backup %s: %w", o.TailName, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return bm, fmt.Errorf("write backup: %w", err)
	}
	return bm, nil
}

// ReadSnapshotSection reads a snapshot (as Backup writes it after its
// header) to its end and calls fn with the content of the section named
// name, if there is one. fn need not read its reader to the end.
func ReadSnapshotSection(r io.Reader, name string, fn func(io.Reader) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("not a cohort snapshot: %w", ErrNotBackup)
	}
	if _, err := binary.ReadUvarint(br); err != nil {
		return fmt.Errorf("read snapshot index: %w", err)
	}
	err := eachSection(br, func(sec string, cr io.Reader) error {
		if sec != name || fn == nil {
			return nil
		}
		if err := fn(cr); err != nil {
			return fmt.Errorf("section %s: %w", sec, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, br)
	return err
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
	if _, err := io.ReadFull(r, magic); err != nil || (string(magic) != backupMagic && string(magic) != backupMagicTail) {
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
	if (string(magic) == backupMagicTail) != (bm.Tail != "") {
		return bm, fmt.Errorf("backup header %q names tail %q: %w", strings.TrimSpace(string(magic)), bm.Tail, ErrNotBackup)
	}
	if bm.Index == 0 || bm.Size < int64(len(snapshotMagic)) {
		return bm, fmt.Errorf("backup header names index %d and %d bytes: %w", bm.Index, bm.Size, ErrNotBackup)
	}
	return bm, nil
}

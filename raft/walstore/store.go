package walstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"

	hraft "github.com/hashicorp/raft"
)

// DefaultSegmentSize is the preallocated size of a segment file when
// Options.SegmentSize is zero.
const DefaultSegmentSize = 64 << 20

// MinSegmentSize is the smallest Options.SegmentSize Open accepts.
const MinSegmentSize = 4096

// maxSegmentSize keeps record offsets within 32 bits.
const maxSegmentSize = 1 << 31

// Options configure a Store. The zero value is ready: 64 MiB segments,
// nothing logged.
type Options struct {
	// SegmentSize is the size each segment file is preallocated to, in
	// bytes: the disk space the log takes grows by this step (a batch
	// larger than it gets a segment of its own size). If zero,
	// DefaultSegmentSize.
	SegmentSize int64

	// Logger receives what Open repaired (a torn write at the end of the
	// log). If nil, nothing is logged.
	Logger *slog.Logger
}

// Validate reports an unusable configuration.
func (o Options) Validate() error {
	if o.SegmentSize != 0 && (o.SegmentSize < MinSegmentSize || o.SegmentSize > maxSegmentSize) {
		return fmt.Errorf("raft log segment size %d: want %d to %d bytes", o.SegmentSize, MinSegmentSize, maxSegmentSize)
	}
	return nil
}

// Store is a Raft log store in a directory of segment files. Create it
// with Open; it implements hraft.LogStore and hraft.MonotonicLogStore.
type Store struct {
	dir      string
	segSize  int64
	log      *slog.Logger
	metaPath string

	// wmu serializes every change (StoreLogs, DeleteRange, Close); the
	// fields below it are only touched with wmu held.
	wmu      sync.Mutex
	metaF    *os.File // also holds the directory's lock
	meta     meta     // the durable meta state
	nextSeq  uint64
	wbuf     []byte
	dirtyEnd int64 // the current segment holds bytes of a failed write up to here
	failed   error // set when a tail truncation failed half way: ErrNeedsReopen

	// mu guards what readers see. Changes take it (with wmu) only to
	// publish what is already durable; GetLog holds it shared while it
	// reads a segment file, so a segment is closed only when no read is
	// in flight.
	mu          sync.RWMutex
	closed      bool
	segs        []*segment // by sequence; only the last may hold no record
	first, last uint64     // live entries; 0, 0 when empty
}

// segment is one open segment file.
type segment struct {
	seq  uint64
	path string
	f    *os.File
	size int64  // preallocated size
	base uint64 // index of ents[0]; 0 when there is no record
	ents []ent  // record of index base+i
	end  int64  // offset after the last record
}

// ent locates one record in its segment.
type ent struct {
	off uint32
	n   uint32 // record bytes, padding excluded: recHeaderSize + payload
}

// lastIndex is the index of the segment's last record (0 when none).
func (sg *segment) lastIndex() uint64 {
	if len(sg.ents) == 0 {
		return 0
	}
	return sg.base + uint64(len(sg.ents)) - 1
}

var (
	_ hraft.LogStore          = (*Store)(nil)
	_ hraft.MonotonicLogStore = (*Store)(nil)
)

const (
	metaName  = "meta"
	segPrefix = "wal-"
	segSuffix = ".seg"
	tmpSuffix = ".tmp"
)

func segName(seq uint64) string { return fmt.Sprintf("%s%016x%s", segPrefix, seq, segSuffix) }

// Open opens the log in dir, creating dir and an empty log if there is
// none, and recovers it: every record is checked, a write torn by a crash
// at the end of the log is cut away (and logged), and any other damage is
// a *CorruptError naming the file and offset, with nothing changed on
// disk. Only one Store may hold dir open (ErrLocked).
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Store{
		dir:      dir,
		segSize:  opts.SegmentSize,
		log:      opts.Logger,
		metaPath: filepath.Join(dir, metaName),
		nextSeq:  1,
	}
	if s.segSize == 0 {
		s.segSize = DefaultSegmentSize
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.open(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("open raft log %s: %w", dir, err)
	}
	return s, nil
}

// IsMonotonic implements hraft.MonotonicLogStore: the log holds no gaps,
// so hashicorp/raft empties it after a snapshot is installed or restored
// rather than appending after a gap.
func (s *Store) IsMonotonic() bool { return true }

// FirstIndex implements hraft.LogStore: the index of the first entry, 0
// when the log is empty.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.first, nil
}

// LastIndex implements hraft.LogStore: the index of the last entry, 0 when
// the log is empty.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.last, nil
}

// GetLog implements hraft.LogStore: it reads the entry at index with one
// pread and checks its checksum. An index outside FirstIndex..LastIndex is
// hraft.ErrLogNotFound, unwrapped (hashicorp/raft compares with ==).
// Data and Extensions of l are fresh slices the caller may keep.
func (s *Store) GetLog(index uint64, l *hraft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.last == 0 || index < s.first || index > s.last {
		return hraft.ErrLogNotFound
	}
	sg := s.segmentOf(index)
	e := sg.ents[index-sg.base]
	buf := make([]byte, recordSize(int(e.n)-recHeaderSize))
	if _, err := sg.f.ReadAt(buf[:e.n], int64(e.off)); err != nil {
		return fmt.Errorf("read raft log entry %d from %s at %d: %w", index, sg.path, e.off, err)
	}
	h, err := checkRecord(buf)
	if err == nil && h.index != index {
		err = fmt.Errorf("%w: index %d", errBadRecord, h.index)
	}
	if err != nil {
		return fmt.Errorf("read raft log entry %d: %w", index, &CorruptError{Path: sg.path, Offset: int64(e.off), Reason: err.Error()})
	}
	decodeRecord(buf, l)
	return nil
}

// segmentOf returns the segment holding index, which is live. Callers
// hold mu.
func (s *Store) segmentOf(index uint64) *segment {
	n := len(s.segs)
	if len(s.segs[n-1].ents) == 0 {
		n-- // an empty current segment holds nothing
	}
	i := sort.Search(n, func(i int) bool { return s.segs[i].base > index })
	return s.segs[i-1]
}

// StoreLog implements hraft.LogStore: StoreLogs of one entry.
func (s *Store) StoreLog(l *hraft.Log) error {
	return s.StoreLogs([]*hraft.Log{l})
}

// StoreLogs implements hraft.LogStore. The entries must follow the last
// stored index and each other (ErrNotContiguous); into an empty log the
// first may have any index. The batch is encoded, written with one write
// at the end of the current segment and made durable with one fdatasync
// before StoreLogs returns; a full segment first costs the creation of
// the next (its preallocation is where a full disk shows: the error wraps
// syscall.ENOSPC and the log is unchanged, ready for the next try).
func (s *Store) StoreLogs(logs []*hraft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	firstNew := logs[0].Index
	for i, l := range logs {
		if l.Index != firstNew+uint64(i) {
			return fmt.Errorf("store raft log entries %d-%d: %w: entry %d of the batch has index %d",
				firstNew, logs[len(logs)-1].Index, ErrNotContiguous, i, l.Index)
		}
	}
	if firstNew == 0 || (s.last != 0 && firstNew != s.last+1) {
		return fmt.Errorf("store raft log entries from %d: %w: the log ends at %d", firstNew, ErrNotContiguous, s.last)
	}
	if s.last == 0 && s.meta.first != 0 {
		// An empty log remembers no first index: whatever comes next starts it.
		if err := s.writeMeta(meta{}); err != nil {
			return fmt.Errorf("store raft log entries from %d: %w", firstNew, err)
		}
	}

	buf := s.wbuf[:0]
	ents := make([]ent, len(logs))
	for i, l := range logs {
		n, err := payloadLen(l)
		if err != nil {
			return err
		}
		ents[i] = ent{off: uint32(len(buf)), n: uint32(recHeaderSize + n)}
		buf = appendRecord(buf, l, firstNew)
	}
	size := int64(len(buf))
	if size > maxSegmentSize-segHeaderSize {
		return fmt.Errorf("store raft log entries %d-%d: %d bytes in one batch is more than a segment takes", firstNew, logs[len(logs)-1].Index, size)
	}
	sg, err := s.current(size)
	if err != nil {
		return fmt.Errorf("store raft log entries %d-%d: %w", firstNew, logs[len(logs)-1].Index, err)
	}
	off := sg.end
	// Bytes of an earlier failed write beyond this batch are zeroed in the
	// same write, so every byte after the end stays zero.
	if s.dirtyEnd > off+size {
		buf = append(buf, make([]byte, s.dirtyEnd-off-size)...)
	}
	if cap(buf) <= 4<<20 {
		s.wbuf = buf
	}
	if _, err := sg.f.WriteAt(buf, off); err != nil {
		s.dirtyEnd = max(s.dirtyEnd, off+int64(len(buf)))
		return fmt.Errorf("store raft log entries %d-%d: write %s: %w", firstNew, logs[len(logs)-1].Index, sg.path, err)
	}
	if err := s.syncData(sg.f); err != nil {
		s.dirtyEnd = max(s.dirtyEnd, off+int64(len(buf)))
		return fmt.Errorf("store raft log entries %d-%d: %w", firstNew, logs[len(logs)-1].Index, err)
	}
	s.dirtyEnd = 0

	s.mu.Lock()
	for i := range ents {
		ents[i].off += uint32(off)
	}
	if len(sg.ents) == 0 {
		sg.base = firstNew
	}
	sg.ents = append(sg.ents, ents...)
	sg.end = off + size
	if s.last == 0 {
		s.first = firstNew
	}
	s.last = logs[len(logs)-1].Index
	s.mu.Unlock()
	return nil
}

// syncData is datasync of a segment, behind the tests' seam.
func (s *Store) syncData(f *os.File) error {
	if testHooks.beforeSync != nil {
		if err := testHooks.beforeSync(f); err != nil {
			return err
		}
	}
	return datasync(f)
}

// testHooks are the tests' seam into the write path; the zero value (in
// production) changes nothing. Tests set them before opening a Store.
var testHooks struct {
	// beforeSync runs before every fdatasync of a segment; an error it
	// returns is the sync's (a failing disk).
	beforeSync func(*os.File) error
	// skipTailZero leaves the records of a truncated tail on disk: the
	// deliberately broken store that shows the model check catches it.
	skipTailZero bool
}

// writable reports why the Store takes no change, if it does not.
func (s *Store) writable() error {
	if s.metaF == nil {
		return ErrClosed
	}
	return s.failed
}

// current returns the segment the next size bytes go to, creating the
// next segment when they do not fit in the current one. Called with wmu.
func (s *Store) current(size int64) (*segment, error) {
	var cur *segment
	if n := len(s.segs); n > 0 {
		cur = s.segs[n-1]
		if cur.end+size <= cur.size {
			return cur, nil
		}
		if s.dirtyEnd > cur.end {
			// Leave the segment sealed with only zeros after its end.
			if err := zeroRange(cur.f, cur.end, s.dirtyEnd); err != nil {
				return nil, err
			}
			if err := s.syncData(cur.f); err != nil {
				return nil, err
			}
			s.dirtyEnd = 0
		}
	}
	segSize := max(s.segSize, (segHeaderSize+size+4095)&^4095)
	sg, err := s.createSegment(s.nextSeq, segSize)
	if err != nil {
		return nil, err
	}
	s.nextSeq++
	s.mu.Lock()
	if cur != nil && len(cur.ents) == 0 {
		// An empty segment too small for this batch: only the last
		// segment may be empty, so it goes (Open removes it if this
		// removal does not last).
		s.segs = s.segs[:len(s.segs)-1]
		defer s.removeSegment(cur)
	}
	s.segs = append(s.segs, sg)
	s.mu.Unlock()
	return sg, nil
}

// createSegment creates, preallocates and syncs segment seq (file, size
// and name) before anything is written to it, so that appends to it change
// no metadata.
func (s *Store) createSegment(seq uint64, size int64) (sg *segment, err error) {
	path := filepath.Join(s.dir, segName(seq))
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create raft log segment: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			os.Remove(path)
		}
	}()
	if err := preallocate(f, size); err != nil {
		return nil, fmt.Errorf("preallocate raft log segment %s (%d bytes): %w", path, size, err)
	}
	if _, err := f.WriteAt(encodeSegHeader(seq), 0); err != nil {
		return nil, fmt.Errorf("write raft log segment header: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("sync raft log segment %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("name raft log segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return nil, err
	}
	return &segment{seq: seq, path: path, f: f, size: size, end: segHeaderSize}, nil
}

// removeSegment closes and deletes sg's file.
func (s *Store) removeSegment(sg *segment) error {
	return errors.Join(sg.f.Close(), os.Remove(sg.path))
}

// DeleteRange implements hraft.LogStore: it deletes the entries min to max
// (inclusive) durably before it returns. hashicorp/raft deletes a head
// (after a snapshot: min at or below FirstIndex) or a tail (a conflict:
// max at or above LastIndex), or both (everything); a range strictly
// inside the log is ErrRange. Parts outside the log are ignored.
func (s *Store) DeleteRange(min, max uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if s.last == 0 || min > max || max < s.first || min > s.last {
		return nil
	}
	switch {
	case min <= s.first && max >= s.last:
		return s.deleteAll()
	case min <= s.first:
		return s.deleteHead(max + 1)
	case max >= s.last:
		return s.deleteTail(min)
	default:
		return fmt.Errorf("delete raft log entries %d-%d: %w (the log holds %d-%d)", min, max, ErrRange, s.first, s.last)
	}
}

// deleteHead makes first the first index: the meta file says so, then the
// segments wholly below it go.
func (s *Store) deleteHead(first uint64) error {
	if err := s.writeMeta(meta{first: first}); err != nil {
		return fmt.Errorf("delete raft log entries below %d: %w", first, err)
	}
	s.mu.Lock()
	s.first = first
	var drop []*segment
	for len(s.segs) > 1 && s.segs[0].lastIndex() < first {
		drop = append(drop, s.segs[0])
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	var errs []error
	for _, sg := range drop {
		errs = append(errs, s.removeSegment(sg))
	}
	if err := errors.Join(errs...); err != nil {
		// The entries are gone; Open deletes the files it finds below the
		// first index.
		return fmt.Errorf("delete raft log segments below %d: %w", first, err)
	}
	return nil
}

// deleteTail deletes the entries from min (above the first index) on. The
// meta file records the truncation first, so that recovery finishes it
// if this stops half way; then later segments go, the records from min on
// are zeroed and synced, and the meta file forgets the truncation.
func (s *Store) deleteTail(min uint64) error {
	if err := s.writeMeta(meta{first: s.meta.first, truncAt: min}); err != nil {
		return fmt.Errorf("delete raft log entries from %d: %w", min, err)
	}
	s.mu.Lock()
	i := sort.Search(len(s.segs), func(i int) bool {
		sg := s.segs[i]
		return len(sg.ents) == 0 || sg.lastIndex() >= min
	})
	sg := s.segs[i]
	drop := s.segs[i+1:]
	k := min - sg.base
	from, to := int64(sg.ents[k].off), sg.end
	if len(drop) == 0 {
		to = max(to, s.dirtyEnd)
	}
	sg.ents = sg.ents[:k:k]
	if k == 0 {
		sg.base = 0
	}
	sg.end = from
	s.segs = s.segs[: i+1 : i+1]
	s.last = min - 1
	s.mu.Unlock()

	err := s.finishTail(sg, drop, from, to)
	if err != nil {
		s.failed = fmt.Errorf("%w: deleting raft log entries from %d failed: %w", ErrNeedsReopen, min, err)
		return s.failed
	}
	return nil
}

// finishTail removes the segments after sg, zeroes sg from from to to and
// clears the pending truncation in the meta file.
func (s *Store) finishTail(sg *segment, drop []*segment, from, to int64) error {
	for i := len(drop) - 1; i >= 0; i-- {
		if err := s.removeSegment(drop[i]); err != nil {
			return err
		}
	}
	if len(drop) > 0 {
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	if !testHooks.skipTailZero {
		if err := zeroRange(sg.f, from, to); err != nil {
			return err
		}
	}
	if err := s.syncData(sg.f); err != nil {
		return err
	}
	s.dirtyEnd = 0
	return s.writeMeta(meta{first: s.meta.first})
}

// deleteAll empties the log: the meta file records the truncation, every
// segment goes, and the meta file is reset.
func (s *Store) deleteAll() error {
	if err := s.writeMeta(meta{first: s.meta.first, truncAt: s.first}); err != nil {
		return fmt.Errorf("delete raft log entries %d-%d: %w", s.first, s.last, err)
	}
	s.mu.Lock()
	drop := s.segs
	s.segs = nil
	s.first, s.last = 0, 0
	s.mu.Unlock()
	s.dirtyEnd = 0
	err := func() error {
		for i := len(drop) - 1; i >= 0; i-- {
			if err := s.removeSegment(drop[i]); err != nil {
				return err
			}
		}
		if err := syncDir(s.dir); err != nil {
			return err
		}
		return s.writeMeta(meta{})
	}()
	if err != nil {
		s.failed = fmt.Errorf("%w: deleting every raft log entry failed: %w", ErrNeedsReopen, err)
		return s.failed
	}
	return nil
}

// writeMeta makes m (its generation aside) the durable meta state: it
// writes the slot of the next generation in place and syncs it. A failed
// write leaves the other slot, the current state, intact, and the next
// try writes the same slot again.
func (s *Store) writeMeta(m meta) error {
	m.gen = s.meta.gen + 1
	if _, err := s.metaF.WriteAt(encodeMeta(m), int64(m.gen%2)*metaSlotSize); err != nil {
		return fmt.Errorf("write raft log meta: %w", err)
	}
	if err := datasync(s.metaF); err != nil {
		return fmt.Errorf("sync raft log meta: %w", err)
	}
	s.meta = m
	return nil
}

// Close closes the segment files and releases the directory. Further
// calls return ErrClosed; Close itself may be called again.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.closeFiles()
}

// closeFiles closes every open file. Called with both locks, or before
// the Store is shared.
func (s *Store) closeFiles() error {
	var errs []error
	for _, sg := range s.segs {
		errs = append(errs, sg.f.Close())
	}
	s.segs = nil
	if s.metaF != nil {
		errs = append(errs, s.metaF.Close())
		s.metaF = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close raft log %s: %w", s.dir, err)
	}
	return nil
}

// zeroRange writes zeros over f from from to to (not synced).
func zeroRange(f *os.File, from, to int64) error {
	const chunk = 1 << 20
	if to <= from {
		return nil
	}
	z := make([]byte, min(chunk, to-from))
	for off := from; off < to; off += int64(len(z)) {
		n := min(int64(len(z)), to-off)
		if _, err := f.WriteAt(z[:n], off); err != nil {
			return fmt.Errorf("zero %s from %d: %w", f.Name(), off, err)
		}
	}
	return nil
}

// syncDir makes the entries of dir (created, renamed, removed files)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync raft log directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync raft log directory %s: %w", dir, err)
	}
	return nil
}

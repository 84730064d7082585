package walstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// open creates or recovers the log in s.dir (see Open).
func (s *Store) open() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	seqs, err := s.listSegments()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(s.metaPath, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(seqs) == 0:
		f, err = s.createMeta()
		if err != nil {
			return err
		}
	case errors.Is(err, fs.ErrNotExist):
		return &CorruptError{Path: s.metaPath, Reason: fmt.Sprintf("the meta file is missing beside %d segment files", len(seqs))}
	case err != nil:
		return fmt.Errorf("open meta file: %w", err)
	}
	s.metaF = f
	if err := lockFile(f); err != nil {
		return err
	}
	if s.meta, err = readMeta(f); err != nil {
		return err
	}
	if err := s.recover(seqs); err != nil {
		return err
	}
	if s.meta.truncAt != 0 || (s.last == 0 && s.meta.first != 0) {
		// The truncation is done, or nothing is left to be first.
		m := meta{first: s.meta.first}
		if s.last == 0 {
			m.first = 0
		}
		if err := s.writeMeta(m); err != nil {
			return err
		}
	}
	return nil
}

// listSegments returns the sequence numbers of the segment files in s.dir
// in order, and removes files of segments that were never completed.
func (s *Store) listSegments() ([]uint64, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list directory: %w", err)
	}
	var seqs []uint64
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, tmpSuffix) {
			// A segment or meta file whose creation did not finish.
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return nil, fmt.Errorf("remove unfinished file: %w", err)
			}
			continue
		}
		if !strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix), 16, 64)
		if err != nil || seq == 0 || name != segName(seq) {
			return nil, &CorruptError{Path: filepath.Join(s.dir, name), Reason: "not a segment file name this store writes"}
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

// createMeta creates the meta file of an empty log, durably.
func (s *Store) createMeta() (*os.File, error) {
	tmp := s.metaPath + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create meta file: %w", err)
	}
	b := make([]byte, metaFileSize)
	copy(b, encodeMeta(meta{}))
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, s.metaPath)
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("create meta file: %w", err)
	}
	return f, nil
}

// readMeta returns the state of the meta file's newer valid slot.
func readMeta(f *os.File) (meta, error) {
	b := make([]byte, metaFileSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return meta{}, &CorruptError{Path: f.Name(), Reason: fmt.Sprintf("reading the meta file: %v", err)}
	}
	m0, ok0 := decodeMeta(b[:metaSlotSize])
	m1, ok1 := decodeMeta(b[metaSlotSize:])
	switch {
	case ok0 && ok1 && m1.gen > m0.gen, ok1 && !ok0:
		return m1, nil
	case ok0:
		return m0, nil
	}
	return meta{}, &CorruptError{Path: f.Name(), Reason: "neither meta slot is valid"}
}

// scan is what scanSegment found in one segment.
type scan struct {
	ents []ent
	base uint64 // index of ents[0]
	end  int64  // offset after the last good record
	// stop says why the scan ended at end: stopClean (a zero header or the
	// end of the file), stopBad (a record failing its checks: reason) or
	// stopTrunc (the record of the pending truncation).
	stop   int
	reason string
}

const (
	stopClean = iota
	stopBad
	stopTrunc
)

// scanSegment reads sg's records from its header on. next is the index
// its first record must have (0: any); truncAt, if not 0, the index at
// which a pending truncation cuts.
func scanSegment(sg *segment, next, truncAt uint64) (scan, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(sg.f, segHeaderSize, sg.size-segHeaderSize), int(min(1<<20, sg.size)))
	sc := scan{end: segHeaderSize}
	var hdr [recHeaderSize]byte
	var rec []byte
	for {
		off := sc.end
		if off+recHeaderSize+recFixed > sg.size {
			return sc, nil // too little room left for a record: the end
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return sc, fmt.Errorf("read %s at %d: %w", sg.path, off, err)
		}
		if hdr == [recHeaderSize]byte{} {
			return sc, nil
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if !plausibleLen(n, off, sg.size) {
			sc.stop, sc.reason = stopBad, fmt.Sprintf("record length %d does not fit", n)
			return sc, nil
		}
		size := recordSize(int(n))
		if cap(rec) < size {
			rec = make([]byte, size)
		}
		rec = rec[:size]
		copy(rec, hdr[:])
		if _, err := io.ReadFull(r, rec[recHeaderSize:]); err != nil {
			return sc, fmt.Errorf("read %s at %d: %w", sg.path, off, err)
		}
		h, err := checkRecord(rec)
		if err != nil {
			sc.stop, sc.reason = stopBad, err.Error()
			return sc, nil
		}
		want := next
		if len(sc.ents) > 0 {
			want = sc.base + uint64(len(sc.ents))
		}
		if want != 0 && h.index != want {
			sc.stop, sc.reason = stopBad, fmt.Sprintf("record of index %d where %d follows", h.index, want)
			return sc, nil
		}
		if truncAt != 0 && h.index >= truncAt {
			sc.stop = stopTrunc
			return sc, nil
		}
		if len(sc.ents) == 0 {
			sc.base = h.index
		}
		sc.ents = append(sc.ents, ent{off: uint32(off), n: uint32(recHeaderSize + h.n)})
		sc.end = off + int64(size)
	}
}

// recover opens the segments seqs and rebuilds the index, finishing a
// pending truncation and cutting a torn write at the end. Any change to
// disk comes after every check passed.
func (s *Store) recover(seqs []uint64) (err error) {
	truncAt := s.meta.truncAt
	var (
		prevLast uint64     // index of the last good record so far
		opened   []*segment // every segment opened, closed again on error
		keep     []*segment // segments that hold the log, in order
		drop     []*segment // segments to delete
		repairs  []func() error
	)
	defer func() {
		if err != nil {
			for _, sg := range opened {
				sg.f.Close()
			}
		}
	}()
	cut := false // the truncation point was passed: every later segment goes
	for i, seq := range seqs {
		sg, err := openSegment(filepath.Join(s.dir, segName(seq)), seq)
		if err != nil {
			return err
		}
		opened = append(opened, sg)
		s.nextSeq = seq + 1
		if cut {
			drop = append(drop, sg)
			continue
		}
		lastSeg := i == len(seqs)-1
		sc, err := scanSegment(sg, nextAfter(prevLast), truncAt)
		if err != nil {
			return err
		}
		sg.ents, sg.base, sg.end = sc.ents, sc.base, sc.end
		if len(sc.ents) > 0 {
			prevLast = sg.lastIndex()
		}
		switch {
		case sc.stop == stopTrunc:
			cut = true
			to, err := dataEnd(sg.f, sc.end, sg.size)
			if err != nil {
				return err
			}
			repairs = append(repairs, zeroAndSync(sg, sc.end, to))
		case sc.stop == stopBad && !lastSeg:
			return &CorruptError{Path: sg.path, Offset: sc.end, Reason: sc.reason + " (in a sealed segment)"}
		case lastSeg:
			to, err := dataEnd(sg.f, sc.end, sg.size)
			if err != nil {
				return err
			}
			if to > sc.end {
				if err := tornWrite(sg, sc, prevLast, to); err != nil {
					return err
				}
				s.log.Warn("raft log: cut a write torn by a crash at the end of the log",
					"file", sg.path, "offset", sc.end, "bytes", to-sc.end, "last_index", prevLast)
				repairs = append(repairs, zeroAndSync(sg, sc.end, to))
			}
		}
		if len(sg.ents) == 0 && !lastSeg && !cut {
			drop = append(drop, sg) // an empty segment left by a rotation
			continue
		}
		keep = append(keep, sg)
	}

	// The live range: from the meta file's first index (entries below it
	// were deleted after a snapshot) to the last record.
	first := s.meta.first
	if len(keep) > 0 && keep[0].base > first {
		first = keep[0].base
	}
	var live []*segment
	for _, sg := range keep {
		if len(sg.ents) > 0 && sg.lastIndex() < first {
			drop = append(drop, sg) // wholly below the first index
			continue
		}
		live = append(live, sg)
	}
	if prevLast == 0 || prevLast < first {
		// Nothing live remains (the log is empty or was emptied): no
		// segment stays, the next append starts a new one.
		drop = append(drop, live...)
		live = nil
	}

	// Every check passed: now change the disk.
	for _, fix := range repairs {
		if err := fix(); err != nil {
			return err
		}
	}
	for i, sg := range drop {
		if err := s.removeSegment(sg); err != nil {
			for _, sg := range drop[i+1:] {
				sg.f.Close()
			}
			s.segs = live
			return fmt.Errorf("remove raft log segment: %w", err)
		}
	}
	opened = nil // from here on s.segs owns the files
	s.segs = live
	if len(drop) > 0 {
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	if len(live) > 0 {
		s.first, s.last = first, prevLast
	}
	return nil
}

// nextAfter is the index that must follow last (0: any, when nothing
// came before).
func nextAfter(last uint64) uint64 {
	if last == 0 {
		return 0
	}
	return last + 1
}

// openSegment opens segment file path and checks its header.
func openSegment(path string, seq uint64) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open raft log segment: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat raft log segment: %w", err)
	}
	h := make([]byte, segHeaderSize)
	if _, err := f.ReadAt(h, 0); err != nil {
		f.Close()
		return nil, &CorruptError{Path: path, Reason: fmt.Sprintf("reading the segment header: %v", err)}
	}
	if err := checkSegHeader(h, seq); err != nil {
		f.Close()
		return nil, &CorruptError{Path: path, Reason: err.Error()}
	}
	return &segment{seq: seq, path: path, f: f, size: fi.Size(), end: segHeaderSize}, nil
}

// dataEnd returns the offset after the last non-zero byte of f in
// [from, size), or from when they are all zero. Holes and unwritten
// preallocated extents are skipped without reading them.
func dataEnd(f *os.File, from, size int64) (int64, error) {
	const chunk = 1 << 20
	end := from
	buf := make([]byte, min(chunk, max(size-from, 0)))
	for off := nextData(f, from, size); off < size; off = nextData(f, off, size) {
		hole := nextHole(f, off, size)
		for off < hole {
			n := min(int64(chunk), hole-off)
			b := buf[:n]
			if _, err := f.ReadAt(b, off); err != nil {
				return 0, fmt.Errorf("read %s at %d: %w", f.Name(), off, err)
			}
			if i := lastNonZero(b); i >= 0 {
				end = off + int64(i) + 1
			}
			off += n
		}
	}
	return end, nil
}

// lastNonZero returns the index of b's last non-zero byte, or -1.
func lastNonZero(b []byte) int {
	var zero [4096]byte
	for len(b) > 0 {
		n := min(len(b), len(zero))
		tail := b[len(b)-n:]
		if !bytes.Equal(tail, zero[:n]) {
			for i := n - 1; i >= 0; i-- {
				if tail[i] != 0 {
					return len(b) - n + i
				}
			}
		}
		b = b[:len(b)-n]
	}
	return -1
}

// tornWrite decides whether the non-zero bytes from sc.end to to at the
// end of the last segment sg are a write torn by a crash (nil: cut them)
// or damage to acknowledged entries (a *CorruptError). prevLast is the
// index of the last good record before sc.end.
//
// A write this store acknowledged was synced before the next one started,
// and every byte after the end of the log was zero before it (see
// DESIGN.md). So a torn write leaves, after the last good record, a mix of
// its own bytes and zeros (whole sectors, or a cut end), and nothing of a
// later write. The bytes are damage instead when
//   - a good record of another write follows (its batch starts after
//     prevLast+1, or differs from another good record's), or
//   - the bad record is whole (its length fits, it ends within the data,
//     none of its sectors is zero) yet fails its checks, or
//   - good records of the same write follow and nothing between the bad
//     record and the first of them is missing (no zero header, no zero
//     sector).
//
// A damaged last record with nothing after it looks like a torn write
// unless it is whole; DESIGN.md says why no log format can do better.
func tornWrite(sg *segment, sc scan, prevLast uint64, to int64) error {
	b := make([]byte, max(to-sc.end, recHeaderSize)) // zeros after to
	if _, err := sg.f.ReadAt(b[:to-sc.end], sc.end); err != nil {
		return fmt.Errorf("read %s at %d: %w", sg.path, sc.end, err)
	}
	corrupt := func(why string) error {
		return &CorruptError{Path: sg.path, Offset: sc.end, Reason: why}
	}
	// rec returns the size bytes of a record at p (relative to sc.end),
	// zeros beyond `to` included, or nil if it would pass the segment's end.
	rec := func(p int64, size int) []byte {
		switch {
		case sc.end+p+int64(size) > sg.size:
			return nil
		case p+int64(size) <= int64(len(b)):
			return b[p : p+int64(size)]
		}
		r := make([]byte, size)
		copy(r, b[p:])
		return r
	}
	hdrZero := lastNonZero(b[:recHeaderSize]) < 0
	if !hdrZero {
		n := int64(binary.LittleEndian.Uint32(b[:4]))
		whole := plausibleLen(uint32(n), sc.end, sg.size) && sc.end+recHeaderSize+n <= to
		if whole && !hasZeroSector(b, sc.end, sc.end+recHeaderSize+n) {
			return corrupt(orBad(sc.reason) + ", in a whole record (no crash tore it: none of its sectors is zero)")
		}
	}
	// Good records after the bad one.
	var batch uint64
	firstGood := int64(-1)
	for p := int64(recAlign); p+recHeaderSize <= int64(len(b)); p += recAlign {
		n := binary.LittleEndian.Uint32(b[p:])
		if n < recFixed {
			continue
		}
		r := rec(p, recordSize(int(n)))
		if r == nil || binary.LittleEndian.Uint64(r[recHeaderSize:]) <= prevLast {
			continue
		}
		h, err := checkRecord(r)
		if err != nil {
			continue
		}
		if (prevLast != 0 && h.batchFirst > prevLast+1) || (batch != 0 && h.batchFirst != batch) {
			return corrupt(fmt.Sprintf("%s, and a good record of a later write (index %d, batch from %d) follows at offset %d",
				orBad(sc.reason), h.index, h.batchFirst, sc.end+p))
		}
		batch = h.batchFirst
		if firstGood < 0 {
			firstGood = p
		}
		p += int64(recordSize(h.n)) - recAlign
	}
	if firstGood >= 0 && !hdrZero && !hasZeroSector(b, sc.end, sc.end+firstGood) {
		return corrupt(fmt.Sprintf("%s, and a good record of the same write follows at offset %d with nothing missing before it",
			orBad(sc.reason), sc.end+firstGood))
	}
	return nil
}

// orBad is the reason a scan gave, or what a zero header means.
func orBad(reason string) string {
	if reason == "" {
		return "the log ends"
	}
	return reason
}

// hasZeroSector reports whether some sector-aligned piece of the record
// spanning [from, to) of the file is all zero; b holds the file's bytes
// from `from` on (shorter when the rest is zero).
func hasZeroSector(b []byte, from, to int64) bool {
	for a := from; a < to; {
		next := min((a/sectorSize+1)*sectorSize, to)
		lo, hi := a-from, next-from
		if lo >= int64(len(b)) {
			return true // beyond the data: zeros
		}
		if lastNonZero(b[lo:min(hi, int64(len(b)))]) < 0 {
			return true
		}
		a = next
	}
	return false
}

// zeroAndSync returns the repair that zeroes sg from from to to.
func zeroAndSync(sg *segment, from, to int64) func() error {
	return func() error {
		if to <= from {
			return nil
		}
		if err := zeroRange(sg.f, from, to); err != nil {
			return err
		}
		return datasync(sg.f)
	}
}

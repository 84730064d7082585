package walstore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	hraft "github.com/hashicorp/raft"
)

// A crash is simulated by editing the files of a closed store as a crash
// leaves them: every write this store acknowledged is synced, so the only
// bytes a crash can change are those of the write in progress (and of the
// file operations in progress).

// where returns the file, offset and length (padding excluded) of the
// record of index i in s.
func where(t *testing.T, s *Store, i uint64) (string, int64, int) {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, sg := range s.segs {
		if len(sg.ents) > 0 && sg.base <= i && i <= sg.lastIndex() {
			e := sg.ents[i-sg.base]
			return sg.path, int64(e.off), int(e.n)
		}
	}
	t.Fatalf("no record of index %d", i)
	return "", 0, 0
}

// copyDir copies the files of src into a fresh directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// edit rewrites file path with fn applied to its bytes.
func edit(t *testing.T, path string, fn func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// snapshotDir returns the contents of every file in dir.
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[de.Name()] = b
	}
	return m
}

// TestTornLastRecordAtEveryByte cuts the last record at every byte
// offset, as a crash in the middle of its append leaves it: once by
// truncating the file there (a file system that does not preallocate),
// once by zeroing the rest (the preallocated segment). Open must recover
// every earlier entry, and the log must take appends again.
func TestTornLastRecordAtEveryByte(t *testing.T) {
	opts := Options{SegmentSize: 64 << 10}
	dir := t.TempDir()
	s := openStore(t, dir, opts)
	var written []*hraft.Log
	for i := uint64(1); i <= 20; i++ {
		b := entries(i, i, 1, 700)
		mustStore(t, s, b)
		written = append(written, b...)
	}
	last := entry(21, 2, 1500)
	mustStore(t, s, []*hraft.Log{last})
	want := byIndex(written, []*hraft.Log{last})
	path, off, n := where(t, s, 21)
	s.Close()

	for _, mode := range []string{"truncate", "zero"} {
		t.Run(mode, func(t *testing.T) {
			for cut := off; cut < off+int64(n); cut++ {
				d := copyDir(t, dir)
				p := filepath.Join(d, filepath.Base(path))
				edit(t, p, func(b []byte) []byte {
					if mode == "truncate" {
						return b[:cut]
					}
					clear(b[cut : off+int64(n)])
					return b
				})
				s, err := Open(d, opts)
				if err != nil {
					t.Fatalf("cut at %d (record at %d, %d bytes): Open: %v", cut, off, n, err)
				}
				checkRange(t, s, 1, 20, want)
				if (cut-off)%61 != 0 && cut != off+int64(n)-1 {
					s.Close()
					os.RemoveAll(d)
					continue
				}
				// Now and then: the log takes the entry again, durably.
				mustStore(t, s, []*hraft.Log{last})
				s.Close()
				s, err = Open(d, opts)
				if err != nil {
					t.Fatalf("cut at %d, reopen after the append: %v", cut, err)
				}
				checkRange(t, s, 1, 21, want)
				s.Close()
				os.RemoveAll(d)
			}
		})
	}
}

// TestTornBatchAtSectors loses sectors of the last batch's write (a crash
// persists any subset of its sectors; the rest stay zero): Open must
// recover a prefix of the log that holds every acknowledged entry, each
// intact, and cut the rest.
func TestTornBatchAtSectors(t *testing.T) {
	opts := Options{SegmentSize: 64 << 10}
	dir := t.TempDir()
	s := openStore(t, dir, opts)
	acked := entries(1, 10, 1, 300)
	mustStore(t, s, acked)
	torn := entries(11, 26, 1, 300)
	mustStore(t, s, torn)
	want := byIndex(acked, torn)
	path, from, _ := where(t, s, 11)
	_, lastOff, lastN := where(t, s, 26)
	s.Close()
	to := lastOff + int64(lastN)
	var sectors []int64
	for a := from / sectorSize * sectorSize; a < to; a += sectorSize {
		sectors = append(sectors, a)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	var cases [][]int64
	for _, a := range sectors {
		cases = append(cases, []int64{a}) // each sector lost alone
	}
	for range 60 {
		var lost []int64
		for _, a := range sectors {
			if rng.IntN(3) == 0 {
				lost = append(lost, a)
			}
		}
		cases = append(cases, lost)
	}
	for _, lost := range cases {
		d := copyDir(t, dir)
		edit(t, filepath.Join(d, filepath.Base(path)), func(b []byte) []byte {
			for _, a := range lost {
				lo, hi := max(a, from), min(a+sectorSize, to) // the batch's bytes only
				clear(b[lo:hi])
			}
			return b
		})
		s, err := Open(d, opts)
		if err != nil {
			t.Fatalf("lost sectors %v of the batch at %d-%d: %v", lost, from, to, err)
		}
		last, _ := s.LastIndex()
		if last < 10 {
			t.Fatalf("lost sectors %v: last index %d, acknowledged 10", lost, last)
		}
		checkRange(t, s, 1, last, want)
		s.Close()
		os.RemoveAll(d)
	}
}

// TestCorruptionIsAnError damages acknowledged data: Open must fail with
// a *CorruptError naming the file and offset, and change nothing on disk.
func TestCorruptionIsAnError(t *testing.T) {
	// Sealed segments of 8 KiB, then a last segment of 64 KiB holding
	// several writes, the last of them one batch of 8 entries.
	dir := t.TempDir()
	s := openStore(t, dir, Options{SegmentSize: 8 << 10})
	for i := uint64(1); i <= 20; i += 2 {
		mustStore(t, s, entries(i, i+1, 1, 600))
	}
	s.Close()
	opts := Options{SegmentSize: 64 << 10}
	s = openStore(t, dir, opts)
	mustStore(t, s, entries(21, 50, 1, 600))
	for i := uint64(51); i <= 60; i += 2 {
		mustStore(t, s, entries(i, i+1, 1, 600))
	}
	mustStore(t, s, entries(61, 68, 1, 200))
	sealedPath, sealedOff, sealedN := where(t, s, 3)
	lastPath, midOff, midN := where(t, s, 53) // later writes follow it
	bigPath, bigOff, bigN := where(t, s, 64)  // in the last batch
	segs := segmentFiles(t, dir)
	if sealedPath == lastPath || bigPath != lastPath || lastPath != segs[len(segs)-1] || len(segs) < 3 {
		t.Fatalf("layout: entry 3 in %s, 53 in %s, 64 in %s of %v", sealedPath, lastPath, bigPath, segs)
	}
	s.Close()

	flip := func(path string, off int64) func(string) string {
		return func(d string) string {
			p := filepath.Join(d, filepath.Base(path))
			edit(t, p, func(b []byte) []byte { b[off] ^= 0x40; return b })
			return p
		}
	}
	tests := []struct {
		name    string
		damage  func(dir string) string // returns the file Open must name
		wantOff int64                   // -1: any
	}{
		{"byte in a sealed segment", flip(sealedPath, sealedOff+int64(sealedN)/2), sealedOff},
		{"length of a record in a sealed segment", flip(sealedPath, sealedOff+1), sealedOff},
		{"byte mid-file in the last segment", flip(lastPath, midOff+int64(midN)/2), midOff},
		{"length mid-file in the last segment", flip(lastPath, midOff+1), midOff},
		{"byte inside the last batch", flip(lastPath, bigOff+int64(bigN)/2), bigOff},
		{"segment header", flip(sealedPath, 3), 0},
		{"a sealed segment missing", func(d string) string {
			p := filepath.Join(d, filepath.Base(segs[1]))
			os.Remove(p)
			return filepath.Join(d, filepath.Base(segs[2]))
		}, segHeaderSize},
		{"both meta slots", func(d string) string {
			p := filepath.Join(d, metaName)
			edit(t, p, func(b []byte) []byte { b[2] ^= 1; b[metaSlotSize+2] ^= 1; return b })
			return p
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := copyDir(t, dir)
			file := tt.damage(d)
			before := snapshotDir(t, d)
			_, err := Open(d, opts)
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open = %v, want a *CorruptError", err)
			}
			if ce.Path != file || (tt.wantOff >= 0 && ce.Offset != tt.wantOff) {
				t.Fatalf("Open = %v; want file %s offset %d", err, file, tt.wantOff)
			}
			after := snapshotDir(t, d)
			for name, b := range before {
				if !bytes.Equal(after[name], b) {
					t.Fatalf("the failed Open changed %s", name)
				}
			}
			if len(after) != len(before) {
				t.Fatalf("the failed Open left %d files, found %d", len(after), len(before))
			}
		})
	}
}

// TestCrashDuringTruncation stops a tail or full truncation at each of its
// steps (the meta file records it first): Open must finish it.
func TestCrashDuringTruncation(t *testing.T) {
	opts := Options{SegmentSize: 8 << 10}
	build := func(t *testing.T) (string, *Store, map[uint64]*hraft.Log) {
		dir := t.TempDir()
		s := openStore(t, dir, opts)
		var all []*hraft.Log
		for i := uint64(1); i <= 60; i += 3 {
			b := entries(i, i+2, 1, 500)
			mustStore(t, s, b)
			all = append(all, b...)
		}
		if err := s.DeleteRange(1, 5); err != nil {
			t.Fatal(err)
		}
		return dir, s, byIndex(all)
	}
	// intent records the truncation from index at as deleteTail's first
	// step does, and nothing else.
	intent := func(t *testing.T, s *Store, at uint64) {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		if err := s.writeMeta(meta{first: s.meta.first, truncAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		at    uint64 // truncation from here
		crash func(t *testing.T, s *Store, dir string)
		last  uint64 // what Open must leave
	}{
		{"after the meta write", 30, func(t *testing.T, s *Store, dir string) {}, 29},
		{"after later segments went", 30, func(t *testing.T, s *Store, dir string) {
			p, _, _ := where(t, s, 30)
			for _, f := range segmentFiles(t, dir) {
				if f > p {
					os.Remove(f)
				}
			}
		}, 29},
		{"zeroing half done, out of order", 30, func(t *testing.T, s *Store, dir string) {
			for _, i := range []uint64{31, 33, 34} {
				p, off, n := where(t, s, i)
				edit(t, p, func(b []byte) []byte { clear(b[off : off+int64(n)]); return b })
			}
		}, 29},
		{"everything, segments half removed", 6, func(t *testing.T, s *Store, dir string) {
			segs := segmentFiles(t, dir)
			os.Remove(segs[len(segs)/2])
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s, want := build(t)
			intent(t, s, tt.at)
			tt.crash(t, s, dir)
			s.Close()
			s = openStore(t, dir, opts)
			if tt.last == 0 {
				checkRange(t, s, 0, 0, nil)
				if segs := segmentFiles(t, dir); len(segs) != 0 {
					t.Fatalf("an emptied log kept segments %v", segs)
				}
				return
			}
			checkRange(t, s, 6, tt.last, want)
			next := entries(tt.last+1, tt.last+4, 9, 100)
			mustStore(t, s, next)
			s.Close()
			s = openStore(t, dir, opts)
			for _, l := range next {
				want[l.Index] = l
			}
			checkRange(t, s, 6, tt.last+4, want)
		})
	}
}

// TestCrashLeftovers: files a crash leaves between steps of other
// operations (a compaction that moved the first index but removed no
// segment, an unfinished segment creation, an empty new segment).
func TestCrashLeftovers(t *testing.T) {
	opts := Options{SegmentSize: 8 << 10}
	dir := t.TempDir()
	s := openStore(t, dir, opts)
	var all []*hraft.Log
	for i := uint64(1); i <= 60; i += 3 {
		b := entries(i, i+2, 1, 500)
		mustStore(t, s, b)
		all = append(all, b...)
	}
	want := byIndex(all)
	// The compaction's meta write, without its segment removals.
	s.wmu.Lock()
	if err := s.writeMeta(meta{first: 40}); err != nil {
		t.Fatal(err)
	}
	s.wmu.Unlock()
	nseg := len(segmentFiles(t, dir))
	nextSeq := s.nextSeq
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, segName(nextSeq)+tmpSuffix), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An empty segment at the end, as a rotation leaves it before the
	// first write.
	f, err := os.Create(filepath.Join(dir, segName(nextSeq+1)))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(encodeSegHeader(nextSeq + 1))
	f.Truncate(opts.SegmentSize)
	f.Close()

	s = openStore(t, dir, opts)
	checkRange(t, s, 40, 60, want)
	if n := len(segmentFiles(t, dir)); n >= nseg {
		t.Fatalf("%d segments after Open, %d before: those below the first index stayed", n, nseg)
	}
	if _, err := os.Stat(filepath.Join(dir, segName(nextSeq)+tmpSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the unfinished segment stayed: %v", err)
	}
	more := entries(61, 70, 2, 100)
	mustStore(t, s, more)
	s.Close()
	s = openStore(t, dir, opts)
	checkRange(t, s, 40, 70, byIndex(all, more))
}

package walstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// entry returns the entry at index of term, with size bytes of data that
// depend on both.
func entry(index, term uint64, size int) *hraft.Log {
	d := make([]byte, size)
	for i := range d {
		d[i] = byte(index*31 + term*7 + uint64(i))
	}
	return &hraft.Log{
		Index:      index,
		Term:       term,
		Type:       hraft.LogCommand,
		Data:       d,
		Extensions: []byte(fmt.Sprintf("ext-%d", index)),
		AppendedAt: time.Unix(1700000000+int64(index), int64(index)).UTC(),
	}
}

// entries returns entries from..to of term with size bytes of data.
func entries(from, to, term uint64, size int) []*hraft.Log {
	var ls []*hraft.Log
	for i := from; i <= to; i++ {
		ls = append(ls, entry(i, term, size))
	}
	return ls
}

func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustStore(t testing.TB, s *Store, ls []*hraft.Log) {
	t.Helper()
	if err := s.StoreLogs(ls); err != nil {
		t.Fatalf("StoreLogs(%d-%d): %v", ls[0].Index, ls[len(ls)-1].Index, err)
	}
}

// sameLog reports how a and b differ ("" if they do not).
func sameLog(a, b *hraft.Log) string {
	switch {
	case a.Index != b.Index, a.Term != b.Term, a.Type != b.Type:
		return fmt.Sprintf("index/term/type %d/%d/%v, want %d/%d/%v", a.Index, a.Term, a.Type, b.Index, b.Term, b.Type)
	case !bytes.Equal(a.Data, b.Data):
		return fmt.Sprintf("entry %d: data differs (%d bytes, want %d)", a.Index, len(a.Data), len(b.Data))
	case !bytes.Equal(a.Extensions, b.Extensions):
		return fmt.Sprintf("entry %d: extensions %q, want %q", a.Index, a.Extensions, b.Extensions)
	case !a.AppendedAt.Equal(b.AppendedAt):
		return fmt.Sprintf("entry %d: appended at %v, want %v", a.Index, a.AppendedAt, b.AppendedAt)
	}
	return ""
}

// checkRange fails t unless s holds exactly want (by index) from first to
// last.
func checkRange(t testing.TB, s *Store, first, last uint64, want map[uint64]*hraft.Log) {
	t.Helper()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("first, last = %d, %d; want %d, %d", f, l, first, last)
	}
	for i := first; i <= last && last != 0; i++ {
		var got hraft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if d := sameLog(&got, want[i]); d != "" {
			t.Fatalf("GetLog(%d): %s", i, d)
		}
	}
	for _, i := range []uint64{first - 1, last + 1} {
		if i == 0 && first == 0 {
			continue
		}
		if err := s.GetLog(i, new(hraft.Log)); err != hraft.ErrLogNotFound {
			t.Fatalf("GetLog(%d) outside %d-%d = %v, want hraft.ErrLogNotFound itself", i, first, last, err)
		}
	}
}

func byIndex(ls ...[]*hraft.Log) map[uint64]*hraft.Log {
	m := map[uint64]*hraft.Log{}
	for _, l := range ls {
		for _, e := range l {
			m[e.Index] = e
		}
	}
	return m
}

// TestContract runs through what hashicorp/raft expects of a LogStore
// (raft-boltdb's and the in-memory store's behaviour), and the
// contiguity this store adds.
func TestContract(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	if f, err := s.FirstIndex(); f != 0 || err != nil {
		t.Fatalf("empty FirstIndex = %d, %v", f, err)
	}
	if l, err := s.LastIndex(); l != 0 || err != nil {
		t.Fatalf("empty LastIndex = %d, %v", l, err)
	}
	if err := s.GetLog(1, new(hraft.Log)); err != hraft.ErrLogNotFound {
		t.Fatalf("GetLog on empty = %v", err)
	}
	if !s.IsMonotonic() {
		t.Fatal("IsMonotonic = false")
	}

	// Every field survives, including a zero time, empty data and types.
	odd := &hraft.Log{Index: 1, Term: 1, Type: hraft.LogConfiguration}
	if err := s.StoreLog(odd); err != nil {
		t.Fatal(err)
	}
	var got hraft.Log
	if err := s.GetLog(1, &got); err != nil {
		t.Fatal(err)
	}
	if d := sameLog(&got, odd); d != "" || !got.AppendedAt.IsZero() || got.Data != nil || got.Extensions != nil {
		t.Fatalf("zero-ish entry came back as %+v (%s)", got, d)
	}
	now := time.Now()
	withTime := &hraft.Log{Index: 2, Term: 3, Type: hraft.LogBarrier, Data: []byte("d"), Extensions: []byte("e"), AppendedAt: now}
	if err := s.StoreLog(withTime); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(2, &got); err != nil || sameLog(&got, withTime) != "" {
		t.Fatalf("GetLog(2) = %+v, %v", got, err)
	}

	batch := entries(3, 10, 3, 100)
	mustStore(t, s, batch)
	all := byIndex([]*hraft.Log{odd, withTime}, batch)
	checkRange(t, s, 1, 10, all)

	tests := []struct {
		name string
		logs []*hraft.Log
	}{
		{"gap after the last", entries(12, 12, 3, 1)},
		{"overlap with the last", entries(10, 11, 3, 1)},
		{"rewrite of the first", entries(1, 1, 3, 1)},
		{"hole inside the batch", []*hraft.Log{entry(11, 3, 1), entry(13, 3, 1)}},
		{"index zero", entries(0, 0, 3, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.StoreLogs(tt.logs); !errors.Is(err, ErrNotContiguous) {
				t.Fatalf("StoreLogs = %v, want ErrNotContiguous", err)
			}
			checkRange(t, s, 1, 10, all)
		})
	}
	if err := s.StoreLogs(nil); err != nil {
		t.Fatalf("StoreLogs(nil) = %v", err)
	}

	// Head (compaction), tail (conflict), middle (never asked for).
	if err := s.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 4, 10, all)
	if err := s.DeleteRange(5, 6); !errors.Is(err, ErrRange) {
		t.Fatalf("middle DeleteRange = %v, want ErrRange", err)
	}
	if err := s.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 4, 7, all)
	// Appends go on from the truncated tail, with other terms.
	tail := entries(8, 12, 4, 50)
	mustStore(t, s, tail)
	all = byIndex([]*hraft.Log{odd, withTime}, batch, tail)
	checkRange(t, s, 4, 12, all)
	// Ranges reaching past either end, and outside the log.
	if err := s.DeleteRange(0, 4); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(11, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(50, 60); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 5, 10, all)
	// Everything: the next append may start anywhere (after a snapshot).
	if err := s.DeleteRange(5, 10); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 0, 0, nil)
	restart := entries(1000, 1003, 5, 10)
	mustStore(t, s, restart)
	checkRange(t, s, 1000, 1003, byIndex(restart))
}

// TestReopen checks that appends and both kinds of delete survive Close
// and Open, across many segments.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: MinSegmentSize}
	s := openStore(t, dir, opts)
	var all []*hraft.Log
	for i := uint64(1); i <= 200; i += 4 {
		b := entries(i, i+3, 1, int(i%300))
		mustStore(t, s, b)
		all = append(all, b...)
	}
	want := byIndex(all)
	segsBefore := segmentFiles(t, dir)
	if len(segsBefore) < 5 {
		t.Fatalf("%d segments of %d bytes for 200 entries; the test wants many", len(segsBefore), MinSegmentSize)
	}
	if err := s.DeleteRange(1, 120); err != nil {
		t.Fatal(err)
	}
	if segs := segmentFiles(t, dir); len(segs) >= len(segsBefore) {
		t.Fatalf("deleting the head left %d of %d segment files", len(segs), len(segsBefore))
	}
	if err := s.DeleteRange(181, 200); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 121, 180, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := s.LastIndex(); !errors.Is(err, ErrClosed) {
		t.Fatalf("LastIndex after Close = %v", err)
	}
	if err := s.StoreLogs(entries(181, 181, 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("StoreLogs after Close = %v", err)
	}

	s = openStore(t, dir, opts)
	checkRange(t, s, 121, 180, want)
	more := entries(181, 190, 2, 700)
	mustStore(t, s, more)
	for _, l := range more {
		want[l.Index] = l
	}
	s.Close()
	s = openStore(t, dir, opts)
	checkRange(t, s, 121, 190, want)
}

// TestBatchLargerThanSegment stores a batch that fits no standard
// segment: it gets a segment of its own size.
func TestBatchLargerThanSegment(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: MinSegmentSize}
	s := openStore(t, dir, opts)
	small := entries(1, 2, 1, 10)
	big := entries(3, 10, 1, 3000)
	mustStore(t, s, small)
	mustStore(t, s, big)
	mustStore(t, s, entries(11, 11, 1, 10))
	want := byIndex(small, big, entries(11, 11, 1, 10))
	checkRange(t, s, 1, 11, want)
	s.Close()
	s = openStore(t, dir, opts)
	checkRange(t, s, 1, 11, want)
}

func TestLockedAndOptions(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if _, err := Open(t.TempDir(), Options{SegmentSize: 100}); err == nil {
		t.Fatal("Open with a 100-byte segment size succeeded")
	}
}

// TestConcurrentReads has readers fetch the newest entries (as
// hashicorp/raft's replication does) while entries are appended and the
// head is compacted; -race checks the locking.
func TestConcurrentReads(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{SegmentSize: 64 << 10})
	const n = 2000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last == 0 {
					continue
				}
				i := last - uint64(rng.IntN(int(min(last-first+1, 50))))
				var l hraft.Log
				err := s.GetLog(i, &l)
				if err == hraft.ErrLogNotFound {
					continue // compacted meanwhile
				}
				if err != nil {
					errs <- fmt.Errorf("GetLog(%d): %w", i, err)
					return
				}
				if d := sameLog(&l, entry(i, 1, int(i%200))); d != "" {
					errs <- fmt.Errorf("GetLog(%d): %s", i, d)
					return
				}
			}
		}()
	}
	for i := uint64(1); i <= n; i += 2 {
		if err := s.StoreLogs([]*hraft.Log{entry(i, 1, int(i%200)), entry(i+1, 1, int((i+1)%200))}); err != nil {
			t.Fatal(err)
		}
		if i%200 == 1 && i > 400 {
			if err := s.DeleteRange(0, i-300); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFailedWriteLeavesNoStaleRecords fails the sync of a batch (a
// failing disk: its bytes may be on disk all the same), then stores a
// shorter batch of another term at the same indexes. The bytes of the
// failed batch beyond the new one must not come back as entries after a
// restart; they are zeroed in the same write.
func TestFailedWriteLeavesNoStaleRecords(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	base := entries(1, 10, 1, 100)
	mustStore(t, s, base)

	failing := errors.New("injected fdatasync failure")
	testHooks.beforeSync = func(*os.File) error { return failing }
	t.Cleanup(func() { testHooks.beforeSync = nil })
	if err := s.StoreLogs(entries(11, 74, 1, 100)); !errors.Is(err, failing) {
		t.Fatalf("StoreLogs with a failing sync = %v", err)
	}
	testHooks.beforeSync = nil
	checkRange(t, s, 1, 10, byIndex(base))

	// Same sizes, so the stale entry 13 sits exactly where 13 would go.
	retry := entries(11, 12, 2, 100)
	mustStore(t, s, retry)
	s.Close()
	s = openStore(t, dir, Options{})
	checkRange(t, s, 1, 12, byIndex(base, retry))
}

// segmentFiles lists the segment files in dir.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

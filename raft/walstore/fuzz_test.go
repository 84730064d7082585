package walstore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	hraft "github.com/hashicorp/raft"
)

// The model check: a sequence of operations, decoded from bytes, runs on a
// Store and on hashicorp/raft's in-memory store (the model); after every
// operation the two must agree, including across Close and Open. Ops are
// what hashicorp/raft does: contiguous appends, head and tail deletes,
// reads, restarts, and appends it would never make (which must fail and
// change nothing).

// opsOptions makes segments small, so that rotation and segment removal
// happen often.
var opsOptions = Options{SegmentSize: MinSegmentSize}

// runOps runs the operations data encodes in dir and returns the first
// disagreement with the model.
func runOps(dir string, data []byte) (err error) {
	model := hraft.NewInmemStore()
	s, err := Open(dir, opsOptions)
	if err != nil {
		return err
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	term := uint64(1)
	for step := 0; step+3 <= len(data); step += 3 {
		kind, a, b := data[step]%8, data[step+1], data[step+2]
		first, _ := model.FirstIndex()
		last, _ := model.LastIndex()
		var what string
		switch kind {
		case 0, 1, 2: // append 1-8 entries of 0-765 bytes
			start := last + 1
			if last == 0 {
				start = 1 + uint64(a%50)
			}
			n := 1 + uint64(a%8)
			var logs, copies []*hraft.Log
			for i := start; i < start+n; i++ {
				logs = append(logs, entry(i, term, int(b)*3))
				copies = append(copies, entry(i, term, int(b)*3))
			}
			what = fmt.Sprintf("StoreLogs(%d-%d)", start, start+n-1)
			if err := s.StoreLogs(logs); err != nil {
				return fmt.Errorf("step %d: %s: %w", step/3, what, err)
			}
			model.StoreLogs(copies)
		case 3: // delete a head, maybe everything
			if last == 0 {
				continue
			}
			lo := max(1, first-min(first, uint64(b%3))) // the model cannot take 0
			hi := first + uint64(a)%(last-first+1)
			what = fmt.Sprintf("DeleteRange(%d, %d) of %d-%d", lo, hi, first, last)
			if err := s.DeleteRange(lo, hi); err != nil {
				return fmt.Errorf("step %d: %s: %w", step/3, what, err)
			}
			model.DeleteRange(lo, hi)
		case 4: // delete a tail (a conflict), maybe everything
			if last == 0 {
				continue
			}
			lo := first + uint64(a)%(last-first+1)
			hi := last + uint64(b%3)
			what = fmt.Sprintf("DeleteRange(%d, %d) of %d-%d", lo, hi, first, last)
			if err := s.DeleteRange(lo, hi); err != nil {
				return fmt.Errorf("step %d: %s: %w", step/3, what, err)
			}
			model.DeleteRange(lo, hi)
			term++
		case 5: // restart
			what = "Close and Open"
			if err := s.Close(); err != nil {
				return fmt.Errorf("step %d: Close: %w", step/3, err)
			}
			if s, err = Open(dir, opsOptions); err != nil {
				return fmt.Errorf("step %d: Open: %w", step/3, err)
			}
		case 6: // an append hashicorp/raft never makes
			bad := last + 2
			if last > 0 && a%2 == 0 {
				bad = last - uint64(a)%last
			}
			what = fmt.Sprintf("StoreLogs(%d) after %d", bad, last)
			if last == 0 {
				continue // any index starts an empty log
			}
			if err := s.StoreLogs([]*hraft.Log{entry(bad, term, 1)}); !errors.Is(err, ErrNotContiguous) {
				return fmt.Errorf("step %d: %s = %v, want ErrNotContiguous", step/3, what, err)
			}
		case 7: // read one entry, in or near the log
			i := first + uint64(a)%(last-first+3)
			if i > 0 && b%2 == 0 {
				i--
			}
			what = fmt.Sprintf("GetLog(%d)", i)
			if err := sameGet(s, model, i); err != nil {
				return fmt.Errorf("step %d: %w", step/3, err)
			}
		}
		if err := agree(s, model, kind == 5); err != nil {
			return fmt.Errorf("step %d, after %s: %w", step/3, what, err)
		}
	}
	return nil
}

// sameGet compares GetLog(i) of s and of the model.
func sameGet(s *Store, model *hraft.InmemStore, i uint64) error {
	var got, want hraft.Log
	gerr, werr := s.GetLog(i, &got), model.GetLog(i, &want)
	switch {
	case werr == hraft.ErrLogNotFound && gerr == hraft.ErrLogNotFound:
		return nil
	case werr != nil || gerr != nil:
		return fmt.Errorf("GetLog(%d) = %v, the model's %v", i, gerr, werr)
	}
	if d := sameLog(&got, &want); d != "" {
		return fmt.Errorf("GetLog(%d): %s", i, d)
	}
	return nil
}

// agree compares the bounds of s and the model and, when full, every
// entry.
func agree(s *Store, model *hraft.InmemStore, full bool) error {
	f, err := s.FirstIndex()
	if err != nil {
		return err
	}
	l, err := s.LastIndex()
	if err != nil {
		return err
	}
	mf, _ := model.FirstIndex()
	ml, _ := model.LastIndex()
	if f != mf || l != ml {
		return fmt.Errorf("log %d-%d, the model's %d-%d", f, l, mf, ml)
	}
	if !full || l == 0 {
		return nil
	}
	for i := f - 1; i <= l+1; i++ {
		if err := sameGet(s, model, i); err != nil {
			return err
		}
	}
	return nil
}

// randomOps returns n random operations, ending with a restart and a full
// check.
func randomOps(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed*7+1))
	b := make([]byte, 0, 3*n+3)
	for range n {
		b = append(b, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)))
	}
	return append(b, 5, 0, 0)
}

// TestRandomOps runs random operation sequences against the model.
func TestRandomOps(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		if err := runOps(t.TempDir(), randomOps(seed, 120)); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// TestOracleCatchesBrokenStore runs the same sequences on a deliberately
// broken store, one whose tail truncation leaves the deleted records on
// disk: the model check must find it.
func TestOracleCatchesBrokenStore(t *testing.T) {
	testHooks.skipTailZero = true
	t.Cleanup(func() { testHooks.skipTailZero = false })
	for seed := uint64(1); seed <= 40; seed++ {
		if err := runOps(t.TempDir(), randomOps(seed, 120)); err != nil {
			t.Logf("seed %d, as expected: %v", seed, err)
			return
		}
	}
	t.Fatal("the model check found nothing wrong with a store that keeps deleted tails on disk")
}

// FuzzStoreOps is the model check under the fuzzer
// (go test -fuzz FuzzStoreOps ./raft/walstore/).
func FuzzStoreOps(f *testing.F) {
	f.Add([]byte{0, 7, 10, 0, 3, 200, 5, 0, 0, 7, 1, 0})
	f.Add([]byte{0, 7, 255, 0, 7, 255, 0, 7, 255, 4, 3, 0, 5, 0, 0, 0, 1, 1, 5, 0, 0})
	f.Add([]byte{0, 5, 9, 3, 2, 0, 3, 255, 0, 0, 9, 9, 5, 0, 0, 6, 0, 0, 6, 1, 0})
	f.Add(randomOps(99, 60))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 3*300 {
			data = data[:3*300]
		}
		if err := runOps(t.TempDir(), data); err != nil {
			t.Fatal(err)
		}
	})
}

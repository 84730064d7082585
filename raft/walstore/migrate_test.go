package walstore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// boltLog opens a raft-boltdb store as cohort's raft package does, holding
// entries from..to, with the range gap (if gap[0] != 0) deleted as a
// follower's log is left after installing a snapshot.
func boltLog(t *testing.T, from, to uint64, gap [2]uint64) (*raftboltdb.BoltStore, map[uint64]*hraft.Log) {
	t.Helper()
	b, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(t.TempDir(), "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	all := entries(from, to, 3, 200)
	for i := 0; i < len(all); i += 100 {
		if err := b.StoreLogs(all[i:min(i+100, len(all))]); err != nil {
			t.Fatal(err)
		}
	}
	if gap[0] != 0 {
		if err := b.DeleteRange(gap[0], gap[1]); err != nil {
			t.Fatal(err)
		}
	}
	return b, byIndex(all)
}

func TestMigrateFrom(t *testing.T) {
	tests := []struct {
		name        string
		gap         [2]uint64
		first, last uint64 // what the copy must hold
		before      []*hraft.Log
	}{
		{"whole log", [2]uint64{}, 101, 500, nil},
		{"log with a gap", [2]uint64{301, 399}, 400, 500, nil},
		{"resumes an interrupted copy", [2]uint64{}, 101, 500, entries(101, 250, 3, 200)},
		{"resumes after the gap", [2]uint64{301, 399}, 400, 500, entries(400, 420, 3, 200)},
		{"replaces another log", [2]uint64{}, 101, 500, entries(101, 250, 9, 200)},
		{"replaces a copy from before the gap", [2]uint64{301, 399}, 400, 500, entries(101, 200, 3, 200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, want := boltLog(t, 101, 500, tt.gap)
			dst := openStore(t, t.TempDir(), Options{SegmentSize: 64 << 10})
			if tt.before != nil {
				mustStore(t, dst, tt.before)
			}
			if err := MigrateFrom(src, dst); err != nil {
				t.Fatal(err)
			}
			checkRange(t, dst, tt.first, tt.last, want)
			// Again: nothing changes.
			if err := MigrateFrom(src, dst); err != nil {
				t.Fatal(err)
			}
			checkRange(t, dst, tt.first, tt.last, want)
		})
	}
}

// TestUpgrade starts on a data dir whose log is in bbolt: the first
// Upgrade copies it (an unfinished copy of an earlier attempt is thrown
// away), later ones open the log and read bbolt no more.
func TestUpgrade(t *testing.T) {
	src, want := boltLog(t, 1, 300, [2]uint64{})
	dir := filepath.Join(t.TempDir(), "wal")
	if err := os.MkdirAll(dir+migratingSuffix, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir+migratingSuffix, "junk"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Upgrade(dir, Options{}, src)
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 1, 300, want)
	if _, err := os.Stat(dir + migratingSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the migration directory stayed: %v", err)
	}
	more := entries(301, 310, 4, 10)
	mustStore(t, s, more)
	s.Close()

	// The old log changes (it would not, in use): Upgrade does not look.
	if err := src.DeleteRange(1, 300); err != nil {
		t.Fatal(err)
	}
	s, err = Upgrade(dir, Options{}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkRange(t, s, 1, 310, byIndex(entries(1, 300, 3, 200), more))

	// A new node: nothing to migrate.
	fresh, err := Upgrade(filepath.Join(t.TempDir(), "wal"), Options{}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	checkRange(t, fresh, 0, 0, nil)
}

// TestUpgradeOfARealDataDir migrates the log of a data dir written by an
// earlier cohort (the raft package's fixture, bbolt): every entry must
// come over unchanged.
func TestUpgradeOfARealDataDir(t *testing.T) {
	b, err := os.ReadFile("../testdata/datadir-0e07a39/raft/raft.db")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "raft.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, _ := src.FirstIndex()
	last, _ := src.LastIndex()
	if last == 0 {
		t.Fatal("the fixture's log is empty")
	}
	s, err := Upgrade(filepath.Join(dir, "wal"), Options{}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[uint64]*hraft.Log{}
	for i := first; i <= last; i++ {
		l := new(hraft.Log)
		if err := src.GetLog(i, l); err != nil {
			t.Fatalf("fixture entry %d: %v", i, err)
		}
		want[i] = l
	}
	checkRange(t, s, first, last, want)
	t.Logf("migrated entries %d-%d", first, last)
}

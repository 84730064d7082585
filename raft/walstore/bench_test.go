package walstore

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// BenchmarkStoreLogs appends batches of 1 KiB entries, durably, to a
// Store and to raft-boltdb/v2 opened as cohort's raft package opens it,
// both in a temp dir (on the same disk):
//
//	go test -run '^$' -bench BenchmarkStoreLogs -benchtime 2s ./raft/walstore/
func BenchmarkStoreLogs(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B, dir string) hraft.LogStore
	}{
		{"wal", func(b *testing.B, dir string) hraft.LogStore {
			s, err := Open(filepath.Join(dir, "wal"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"boltdb", func(b *testing.B, dir string) hraft.LogStore {
			s, err := raftboltdb.New(raftboltdb.Options{
				Path:        filepath.Join(dir, "raft.db"),
				BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(i)
	}
	for _, batch := range []int{1, 64} {
		for _, st := range stores {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, st.name), func(b *testing.B) {
				s := st.open(b, b.TempDir())
				next := uint64(1)
				logs := make([]*hraft.Log, batch)
				store := func() {
					for j := range logs {
						logs[j] = &hraft.Log{Index: next, Term: 1, Type: hraft.LogCommand, Data: data, AppendedAt: time.Now()}
						next++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				store() // the first segment or bucket, outside the timing
				b.SetBytes(int64(batch * len(data)))
				for b.Loop() {
					store()
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}

// BenchmarkOpen opens (recovers) a log of 20,480 entries of 1 KiB: what a
// node holds at most with hashicorp/raft's defaults (TrailingLogs 10240
// plus SnapshotThreshold 8192, and some), in 64 MiB segments.
func BenchmarkOpen(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "wal")
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 1024)
	const n, batch = 20480, 64
	for i := uint64(1); i <= n; i += batch {
		logs := make([]*hraft.Log, batch)
		for j := range logs {
			logs[j] = &hraft.Log{Index: i + uint64(j), Term: 1, Data: data, AppendedAt: time.Now()}
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	for b.Loop() {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if last, _ := s.LastIndex(); last != n {
			b.Fatalf("last index %d after Open", last)
		}
		s.Close()
	}
}

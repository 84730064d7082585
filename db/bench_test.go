package db

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkCheckCached is the cost of the health check on the hot path
// (ready probes, Require) while the cached result is fresh.
func BenchmarkCheckCached(b *testing.B) {
	d, err := New(Config{NodeID: "b", SQLitePath: filepath.Join(b.TempDir(), "b.db")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	if err := d.Check(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Check(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSplitStatements(b *testing.B) {
	src := strings.Repeat("CREATE TABLE t (id INT, s VARCHAR(10) DEFAULT 'a;b'); -- c;\n", 50)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		_ = SplitStatements(src)
	}
}

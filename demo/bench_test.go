package demo_test

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/cohortserver/cohort/db"
	"github.com/cohortserver/cohort/demo"
	"github.com/cohortserver/cohort/testcluster"
)

// benchDB opens a business database without Raft and applies the demo's
// migration directly.
func benchDB(b *testing.B, cfg db.Config) *db.Database {
	d, err := db.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	src, err := fs.ReadFile(demo.Migrations(), "0001_demo.sql")
	if err != nil {
		b.Fatal(err)
	}
	for _, stmt := range db.SplitStatements(string(src)) {
		if _, err := d.SQL().Exec(stmt); err != nil {
			b.Fatal(err)
		}
	}
	return d
}

// BenchmarkTick is one fenced demo-tick write (a transaction: fence
// update, insert, trim).
func BenchmarkTick(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  func() db.Config
	}{
		{"sqlite", func() db.Config { return db.Config{SQLitePath: filepath.Join(b.TempDir(), "b.db")} }},
		{"mariadb", func() db.Config { return db.Config{DSN: testcluster.MySQLDSN(b), MaxOpen: 4, MaxIdle: 4} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			be := &demo.Backend{NodeID: "b", DB: benchDB(b, tc.cfg())}
			ctx := context.Background()
			var tok uint64
			for b.Loop() {
				tok++
				if err := be.Tick(ctx, demo.TickRun{ID: fmt.Sprint("run-", tok), Node: "b", Token: tok}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package db

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/cohortserver/cohort/raft"
)

// soloCluster applies commands straight to the state machine: a node that
// believes it leads alone (the split-brain case the guards are for).
type soloCluster struct {
	mu  sync.Mutex
	sm  raft.StateMachine
	idx uint64
}

func (c *soloCluster) Register(_ string, sm raft.StateMachine, _ ...string) error {
	c.sm = sm
	return nil
}

func (c *soloCluster) Apply(_ context.Context, typ string, payload []byte) (raft.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idx++
	data, err := c.sm.Apply(raft.Entry{Index: c.idx, Type: typ, Time: time.Now(), Payload: payload})
	return raft.Result{Index: c.idx, Data: data}, err
}

func (c *soloCluster) OnLeader(func(context.Context, uint64)) {}

// testDSN creates a fresh database on COHORT_TEST_MYSQL_DSN's server.
func testDSN(t *testing.T) string {
	base := os.Getenv("COHORT_TEST_MYSQL_DSN")
	if base == "" {
		t.Skip("COHORT_TEST_MYSQL_DSN is empty: no MariaDB for this test (run it through scripts/test.sh)")
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 6)
	_, _ = rand.Read(raw)
	name := "cohort_l_" + hex.EncodeToString(raw)
	admin := cfg.Clone()
	admin.DBName = ""
	conn, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec("DROP DATABASE IF EXISTS " + name)
		conn.Close()
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// TestTwoLeadersRunAMigrationOnce: two nodes that both believe they lead
// (each with its own Raft view) migrate at the same time; GET_LOCK and
// schema_migrations make the migration run once.
func TestTwoLeadersRunAMigrationOnce(t *testing.T) {
	dsn := testDSN(t)
	fsys := fstest.MapFS{
		"0001.sql": {Data: []byte("CREATE TABLE once_t (x INT); INSERT INTO once_t VALUES (1); DO SLEEP(0.3);")},
		"0002.sql": {Data: []byte("INSERT INTO once_t VALUES (2);")},
	}
	var dbs []*Database
	for _, id := range []string{"a", "b", "c"} {
		d, err := New(Config{NodeID: id, DSN: dsn, MaxOpen: 4}, &soloCluster{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.AddMigrations("app", fsys); err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, d)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(dbs))
	for i, d := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			errs[i] = d.migrate(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	var rows, migs int
	if err := dbs[0].SQL().QueryRow("SELECT COUNT(*) FROM once_t").Scan(&rows); err != nil || rows != 2 {
		t.Fatalf("once_t holds %d rows (%v); want 2: a migration ran twice", rows, err)
	}
	if err := dbs[0].SQL().QueryRow("SELECT COUNT(*) FROM schema_migrations").Scan(&migs); err != nil || migs != 2 {
		t.Fatalf("schema_migrations holds %d rows (%v), want 2", migs, err)
	}
	for _, d := range dbs {
		if got := len(d.sm.view().Applied); got != 2 {
			t.Fatalf("node %s recorded %d migrations, want 2", d.nodeID, got)
		}
	}
}

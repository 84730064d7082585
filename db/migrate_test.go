package db

import (
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cohortserver/cohort/raft"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"two", "CREATE TABLE a (x INT);\nCREATE TABLE b (y INT);\n", []string{"CREATE TABLE a (x INT)", "CREATE TABLE b (y INT)"}},
		{"no trailing semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"semicolon in quotes", "INSERT INTO t VALUES ('a;b', \"c;d\", `e;f`);", []string{"INSERT INTO t VALUES ('a;b', \"c;d\", `e;f`)"}},
		{"escaped quote", `INSERT INTO t VALUES ('it\'s; ok');SELECT 2`, []string{`INSERT INTO t VALUES ('it\'s; ok')`, "SELECT 2"}},
		{"doubled quote", "INSERT INTO t VALUES ('it''s; ok');", []string{"INSERT INTO t VALUES ('it''s; ok')"}},
		{"comments", "-- first; not a statement\nSELECT 1; # hash; comment\n/* block; */ SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"comment only", "-- nothing here;\n/* nor; here */\n", nil},
		{"empty pieces", ";;  ;\nSELECT 3;;", []string{"SELECT 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SplitStatements(tt.src)
			for i := range got {
				got[i] = strings.Join(strings.Fields(got[i]), " ")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzSplitStatements(f *testing.F) {
	for _, s := range []string{"SELECT 1;", "'a;b';c", "-- x\n;", "/* ; */;", "`a\\`;'", "\"", "#;\n;", "'\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		for _, s := range SplitStatements(src) {
			if strings.TrimSpace(s) == "" {
				t.Fatalf("empty statement from %q", src)
			}
		}
	})
}

func TestLoadMigrations(t *testing.T) {
	fsys := fstest.MapFS{
		"0002_b.sql": {Data: []byte("CREATE TABLE b (x INT);")},
		"0001_a.sql": {Data: []byte("CREATE TABLE a (x INT); CREATE TABLE a2 (x INT);")},
		"README.md":  {Data: []byte("not a migration")},
	}
	ms, err := LoadMigrations("app", fsys)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "app/0001_a.sql" || ms[1].Name != "app/0002_b.sql" || len(ms[0].Statements) != 2 {
		t.Fatalf("got %+v", ms)
	}
	if _, err := LoadMigrations("app", fstest.MapFS{"0001.sql": {Data: []byte("-- nothing")}}); err == nil {
		t.Fatal("a migration without statements must be refused")
	}
	if _, err := LoadMigrations("a/b", fsys); err == nil {
		t.Fatal("a set name with a slash must be refused")
	}
}

func TestFSMApplySnapshotRestore(t *testing.T) {
	f := &fsm{}
	var seen []string
	f.onDSN = func(dsn string) { seen = append(seen, dsn) }
	now := time.Unix(1700000000, 0).UTC()
	steps := []struct {
		typ, payload string
	}{
		{cmdSettings, `{"dsn":"u:p@tcp(h:1)/d"}`},
		{cmdFailed, `{"migration":"app/0001.sql","statement":"CREATE x","error":"Error 1064"}`},
		{cmdMigrated, `{"name":"app/0001.sql","checksum":"aa","node":"n1"}`},
		{cmdMigrated, `{"name":"app/0001.sql","checksum":"bb","node":"n2"}`}, // ignored: once
	}
	for i, s := range steps {
		if _, err := f.Apply(raft.Entry{Index: uint64(i + 1), Type: s.typ, Time: now, Payload: []byte(s.payload)}); err != nil {
			t.Fatalf("apply %s: %v", s.typ, err)
		}
	}
	st := f.view()
	if st.DSN != "u:p@tcp(h:1)/d" || st.Failure != nil || st.Applied["app/0001.sql"].Node != "n1" || st.Applied["app/0001.sql"].Index != 3 {
		t.Fatalf("state %+v", st)
	}
	if _, err := f.Apply(raft.Entry{Type: cmdMigrated, Payload: []byte("{")}); err == nil {
		t.Fatal("malformed payload must be refused")
	}
	snap, _ := f.Snapshot()
	var buf strings.Builder
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	g := &fsm{}
	if err := g.Restore(strings.NewReader(buf.String())); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.view(), st) {
		t.Fatalf("restored %+v, want %+v", g.view(), st)
	}
	if err := g.Restore(strings.NewReader("")); err != nil || g.view().DSN != "" {
		t.Fatalf("empty restore: %v %+v", err, g.view())
	}
	if len(seen) != 1 {
		t.Fatalf("onDSN calls %q", seen)
	}
}

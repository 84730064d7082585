package db_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/internal/syncbuf"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/testcluster"
)

var appMigrations = fstest.MapFS{
	"0001_accounts.sql": {Data: []byte("CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL);\nINSERT INTO accounts (id, name) VALUES (1, 'first; with a semicolon');")},
	"0002_orders.sql":   {Data: []byte("-- orders of an account\nCREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, account_id BIGINT NOT NULL);")},
}

// readyReasons returns each running node's /_cohort/ready answer.
func readyReasons(t *testing.T, c *testcluster.Cluster) map[string]string {
	out := map[string]string{}
	for _, nd := range c.Running() {
		resp, err := http.Get(nd.URL("/_cohort/ready"))
		if err != nil {
			out[nd.ID] = err.Error()
			continue
		}
		var body struct {
			Ready  bool   `json:"ready"`
			Reason string `json:"reason"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if body.Ready {
			out[nd.ID] = "ready"
		} else {
			out[nd.ID] = body.Reason
		}
	}
	return out
}

func allReady(t *testing.T, c *testcluster.Cluster) func() (bool, string) {
	return func() (bool, string) {
		r := readyReasons(t, c)
		for _, v := range r {
			if v != "ready" {
				return false, fmt.Sprint(r)
			}
		}
		return len(r) > 0, fmt.Sprint(r)
	}
}

func TestMigrationsRunOnceOnThreeNodes(t *testing.T) {
	dsn := testcluster.MySQLDSN(t)
	logs := &syncbuf.Buffer{}
	c := testcluster.New(t, 3,
		testcluster.WithConfig(func(cfg *config.Config) {
			cfg.DBDSN = dsn
			cfg.NoDemo = true
			cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}),
		testcluster.WithNodeSetup(func(n *node.Node) {
			if err := n.AddMigrations("app", appMigrations); err != nil {
				t.Errorf("add migrations: %v", err)
			}
		}))
	testcluster.WaitFor(t, 60*time.Second, allReady(t, c))
	leader := c.Leader()
	if leader == nil {
		t.Fatal("no leader")
	}
	sqlDB := leader.Node().DB()
	ctx := context.Background()
	rows, err := sqlDB.QueryContext(ctx, "SELECT name, node FROM schema_migrations ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name, nodeID string
		if err := rows.Scan(&name, &nodeID); err != nil {
			t.Fatal(err)
		}
		got = append(got, name+"@"+nodeID)
	}
	want := []string{"app/0001_accounts.sql@" + leader.ID, "app/0002_orders.sql@" + leader.ID}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("schema_migrations = %v, want %v", got, want)
	}
	var n int
	if err := sqlDB.QueryRowContext(ctx, "SELECT COUNT(*) FROM accounts").Scan(&n); err != nil || n != 1 {
		t.Fatalf("accounts rows = %d (%v): the insert of migration 1 ran %d times", n, err, n)
	}
	// Every node records the same applied set, with the leader as runner.
	for _, nd := range c.Running() {
		st := nd.Node().Database().Status(ctx)
		if len(st.Applied) != 2 || st.Applied["app/0001_accounts.sql"].Node != leader.ID || !st.Healthy {
			t.Fatalf("%s status %+v", nd.ID, st)
		}
		if strings.Contains(fmt.Sprint(st), "cohort:cohort@") {
			t.Fatalf("%s status shows the password: %s", nd.ID, st.DSN)
		}
	}

	// The password shows nowhere: logs, status, the db API.
	pw := strings.SplitN(strings.SplitN(dsn, "@", 2)[0], ":", 2)[1]
	secret := ":" + pw + "@"
	for _, nd := range c.Running() {
		for _, path := range []string{"/_cohort/status", "/_cohort/api/db", "/_cohort/ready"} {
			code, body := nd.Do(t, "GET", path, nil)
			if code != 200 || strings.Contains(string(body), secret) {
				t.Fatalf("%s %s: %d, password shown: %v", nd.ID, path, code, strings.Contains(string(body), secret))
			}
		}
	}
	// The redacted DSN is logged once replicated; wait for it so the check
	// below proves something.
	testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
		return strings.Contains(logs.String(), ":***@"), "no redacted DSN in the logs yet"
	})
	if strings.Contains(logs.String(), secret) {
		t.Fatal("the DSN password appears in the logs")
	}

	// A new leader finds nothing to do: still one row per migration.
	c.Stop(leader.ID)
	c.WaitLeader(t)
	c.Restart(leader.ID)
	testcluster.WaitFor(t, 60*time.Second, allReady(t, c))
	if err := c.Leader().Node().DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&n); err != nil || n != 2 {
		t.Fatalf("schema_migrations rows after leader change = %d (%v)", n, err)
	}
}

func TestFailedMigrationStopsRollout(t *testing.T) {
	dsn := testcluster.MySQLDSN(t)
	bad := fstest.MapFS{
		"0001_ok.sql":   {Data: []byte("CREATE TABLE ok_table (id INT NOT NULL PRIMARY KEY);")},
		"0002_bad.sql":  {Data: []byte("CREATE TABLE fine (id INT);\nCREATE TABLE broken (id INT NOT NULL PRIMARY KEY,, x);")},
		"0003_next.sql": {Data: []byte("CREATE TABLE never_created (id INT);")},
	}
	c := testcluster.New(t, 3,
		testcluster.WithConfig(func(cfg *config.Config) { cfg.DBDSN = dsn; cfg.NoDemo = true }),
		testcluster.WithNodeSetup(func(n *node.Node) { _ = n.AddMigrations("app", bad) }))
	testcluster.WaitFor(t, 60*time.Second, func() (bool, string) {
		r := readyReasons(t, c)
		for _, v := range r {
			if !strings.Contains(v, "app/0002_bad.sql failed") || !strings.Contains(v, "CREATE TABLE broken") || !strings.Contains(v, "Error 1064") {
				return false, fmt.Sprint(r)
			}
		}
		return len(r) == 3, fmt.Sprint(r)
	})
	var n int
	err := c.Leader().Node().DB().QueryRow("SELECT COUNT(*) FROM never_created").Scan(&n)
	if err == nil {
		t.Fatal("migration 3 ran after migration 2 failed")
	}
	if err := c.Leader().Node().DB().QueryRow("SELECT COUNT(*) FROM schema_migrations").Scan(&n); err != nil || n != 1 {
		t.Fatalf("schema_migrations rows = %d (%v), want 1", n, err)
	}
}

func TestDSNReplicatedToNodesWithoutFlag(t *testing.T) {
	dsn := testcluster.MySQLDSN(t)
	c := testcluster.New(t, 3,
		testcluster.WithConfig(func(cfg *config.Config) {
			cfg.NoDemo = true
			if cfg.NodeID == "n1" {
				cfg.DBDSN = dsn
			}
		}),
		testcluster.WithNodeSetup(func(n *node.Node) { _ = n.AddMigrations("app", appMigrations) }))
	joined := c.AddNode(t)
	testcluster.WaitFor(t, 60*time.Second, func() (bool, string) {
		var seen []string
		for _, nd := range c.Running() {
			st := nd.Node().Database().Status(context.Background())
			seen = append(seen, fmt.Sprintf("%s:%s/%v/%s", nd.ID, st.Source, st.Healthy, st.Error))
			if !st.Healthy || st.Error != "" {
				return false, strings.Join(seen, " ")
			}
		}
		return len(seen) == 4, strings.Join(seen, " ")
	})
	st := joined.Node().Database().Status(context.Background())
	if st.Source != "replicated" || strings.Contains(st.DSN, ":cohort@") {
		t.Fatalf("joined node: source %q dsn %q", st.Source, st.DSN)
	}
	var n int
	if err := joined.Node().DB().QueryRow("SELECT COUNT(*) FROM accounts").Scan(&n); err != nil || n != 1 {
		t.Fatalf("joined node query: %d %v", n, err)
	}
}

func TestDatabaseDown(t *testing.T) {
	m := testcluster.StartMariaDB(t)
	c := testcluster.New(t, 3,
		testcluster.WithConfig(func(cfg *config.Config) { cfg.DBDSN = m.DSN() }), // with the demo
		testcluster.WithNodeSetup(func(n *node.Node) {
			_ = n.AddMigrations("app", appMigrations)
			n.HandleApp("GET /needs-db", n.Database().Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var x int
				if err := n.DB().QueryRowContext(r.Context(), "SELECT COUNT(*) FROM accounts").Scan(&x); err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				fmt.Fprint(w, x)
			})))
		}))
	testcluster.WaitFor(t, 60*time.Second, allReady(t, c))

	m.Kill()
	killed := time.Now()
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		r := readyReasons(t, c)
		for _, v := range r {
			if !strings.HasPrefix(v, "business database unreachable: ") {
				return false, fmt.Sprint(r)
			}
		}
		return len(r) == 3, fmt.Sprint(r)
	})
	took := time.Since(killed)
	t.Logf("every node reported the database down %s after the kill", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("ready took %s to report the database down; want within 5 s", took)
	}
	for _, nd := range c.Running() {
		resp, err := http.Get(nd.URL("/needs-db"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "business database unreachable") {
			t.Fatalf("%s /needs-db: %d %s", nd.ID, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "cohort:cohort") {
			t.Fatalf("password in answer: %s", body)
		}
		// The demo's database routes say so too.
		resp, err = http.Get(nd.URL("/demo/api/ticks"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "business database unreachable") {
			t.Fatalf("%s /demo/api/ticks: %d %s", nd.ID, resp.StatusCode, body)
		}
		// Everything else still works: health, the demo page, the session counter.
		for _, path := range []string{"/_cohort/health", "/", "/demo/api/counter", "/demo/api/members"} {
			resp, err = http.Get(nd.URL(path))
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s GET %s while the database is down: %v %v", nd.ID, path, err, resp)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if path == "/" && !strings.Contains(string(body), "business database unreachable") {
				t.Fatalf("%s: the demo page does not say the database is down", nd.ID)
			}
		}
	}

	m.Start()
	back := time.Now()
	testcluster.WaitFor(t, 60*time.Second, allReady(t, c))
	t.Logf("every node ready again %s after the database came back", time.Since(back).Round(time.Millisecond))

	// A hung server (SIGSTOP: the port accepts, nothing answers) is
	// reported as well, within the ping timeout.
	m.Freeze()
	frozen := time.Now()
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		r := readyReasons(t, c)
		for _, v := range r {
			if !strings.HasPrefix(v, "business database unreachable: ") {
				return false, fmt.Sprint(r)
			}
		}
		return len(r) == 3, fmt.Sprint(r)
	})
	took = time.Since(frozen)
	t.Logf("every node reported the hung database %s after SIGSTOP", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("ready took %s to report the hung database; want within 5 s", took)
	}
	m.Thaw()
	testcluster.WaitFor(t, 60*time.Second, allReady(t, c))
	for _, nd := range c.Running() {
		resp, err := http.Get(nd.URL("/needs-db"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "1" {
			t.Fatalf("%s /needs-db after recovery: %d %s", nd.ID, resp.StatusCode, body)
		}
	}
}

func TestSetDSNThroughAdminAPI(t *testing.T) {
	dsn := testcluster.MySQLDSN(t)
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) { cfg.NoDemo = true }),
		testcluster.WithNodeSetup(func(n *node.Node) { _ = n.AddMigrations("app", appMigrations) }))
	// No database: ready does not wait for one.
	testcluster.WaitFor(t, 30*time.Second, allReady(t, c))
	nd := c.Followers()[0]
	if code, body := nd.Do(t, "PUT", "/_cohort/api/db", map[string]string{"dsn": "u:hunter2@tcp(h:1)/"}); code != 400 || strings.Contains(string(body), "hunter2") {
		t.Fatalf("bad DSN: %d %s", code, body)
	}
	code, body := nd.Do(t, "PUT", "/_cohort/api/db", map[string]string{"dsn": dsn})
	if code != 200 || strings.Contains(string(body), ":cohort@") {
		t.Fatalf("set DSN: %d %s", code, body)
	}
	testcluster.WaitFor(t, 60*time.Second, func() (bool, string) {
		var seen []string
		for _, nd := range c.Running() {
			st := nd.Node().Database().Status(context.Background())
			seen = append(seen, fmt.Sprintf("%s:%s/%v/%d/%s", nd.ID, st.Source, st.Healthy, len(st.Applied), st.Error))
			if !st.Healthy || len(st.Applied) != 2 || st.Source != "replicated" {
				return false, strings.Join(seen, " ")
			}
		}
		return true, strings.Join(seen, " ")
	})
}

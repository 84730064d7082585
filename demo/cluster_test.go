package demo_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/demo"
	"github.com/cohortserver/cohort/testcluster"
)

func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d %s: %v", url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

type ticksReply struct {
	Node  string         `json:"node"`
	Ticks []demo.TickRow `json:"ticks"`
}

// TestDemoOnThreeNodes is the acceptance of the demo on one MariaDB: the
// migration ran once by the leader, and the counter, uploads and demo-tick
// rows agree whichever node serves.
func TestDemoOnThreeNodes(t *testing.T) {
	dsn := testcluster.MySQLDSN(t)
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) { cfg.DBDSN = dsn }))
	nodes := c.Nodes()
	testcluster.WaitFor(t, 60*time.Second, func() (bool, string) {
		for _, nd := range nodes {
			if ok, why := nd.Node().Ready(context.Background()); !ok {
				return false, nd.ID + ": " + why
			}
		}
		return true, ""
	})
	leader := c.Leader()
	sqlDB := leader.Node().DB()

	// Migrations ran once, by the leader.
	var n int
	var runner string
	if err := sqlDB.QueryRow("SELECT COUNT(*), MIN(node) FROM schema_migrations WHERE name = 'demo/0001_demo.sql'").Scan(&n, &runner); err != nil || n != 1 || runner != leader.ID {
		t.Fatalf("schema_migrations: %d rows run by %q (%v); want 1 by %s", n, runner, err, leader.ID)
	}

	// The counter follows the session across nodes.
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	for i, nd := range append(nodes, nodes...) {
		resp, err := client.Post(nd.URL("/demo/api/counter"), "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Count int    `json:"count"`
			Node  string `json:"node"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if got.Count != i+1 {
			t.Fatalf("POST counter #%d on %s: count %d, want %d", i+1, nd.ID, got.Count, i+1)
		}
	}

	// An upload through one node is listed and readable on every node.
	content := []byte("shared between nodes\n")
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "notes v1.txt")
	fw.Write(content)
	mw.Close()
	resp, err := client.Post(nodes[1].URL("/demo/api/files"), mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	up, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var upReply struct {
		Node string      `json:"node"`
		File demo.Upload `json:"file"`
	}
	_ = json.Unmarshal(up, &upReply)
	if resp.StatusCode != 200 || upReply.File.Name != "notes_v1.txt" || upReply.File.Node != upReply.Node {
		t.Fatalf("upload: %d %s", resp.StatusCode, up)
	}
	for _, nd := range nodes {
		var list struct {
			Files []demo.Upload `json:"files"`
		}
		if code := getJSON(t, client, nd.URL("/demo/api/files"), &list); code != 200 || len(list.Files) != 1 || list.Files[0].Node != upReply.Node {
			t.Fatalf("%s file list: %d %+v", nd.ID, code, list)
		}
		resp, err := client.Get(nd.URL("/demo/api/files/notes_v1.txt"))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, content) {
			t.Fatalf("%s read %q, want %q", nd.ID, got, content)
		}
	}

	// demo-tick: rows written by the leader only, tokens increasing, the
	// same rows seen through every node.
	var seen ticksReply
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		getJSON(t, client, nodes[0].URL("/demo/api/ticks"), &seen)
		return len(seen.Ticks) >= 3, fmt.Sprintf("%d ticks", len(seen.Ticks))
	})
	byRun := map[string]demo.TickRow{}
	for _, tr := range seen.Ticks {
		byRun[tr.RunID] = tr
		if tr.Node != leader.ID {
			t.Fatalf("tick %s ran on %s, not on the leader %s", tr.RunID, tr.Node, leader.ID)
		}
	}
	for _, nd := range nodes[1:] {
		var other ticksReply
		getJSON(t, client, nd.URL("/demo/api/ticks"), &other)
		for _, tr := range other.Ticks {
			if want, ok := byRun[tr.RunID]; ok && (want.FencingToken != tr.FencingToken || want.Node != tr.Node) {
				t.Fatalf("%s sees %+v, %s saw %+v", nd.ID, tr, nodes[0].ID, want)
			}
		}
	}
	assertTokensIncrease(t, sqlDB)

	// A run holding an old token is refused by the fence.
	b := &demo.Backend{NodeID: "intruder", DB: leader.Node().Database()}
	err = b.Tick(context.Background(), demo.TickRun{ID: "stale-run", Node: "intruder", Token: 1})
	if !errors.Is(err, demo.ErrStaleToken) {
		t.Fatalf("stale tick: %v, want ErrStaleToken", err)
	}

	// After a leader change the new leader's rows carry larger tokens.
	old := leader.ID
	var oldMax int64
	_ = sqlDB.QueryRow("SELECT MAX(fencing_token) FROM demo_ticks").Scan(&oldMax)
	c.Stop(old)
	newLeader := c.WaitLeader(t)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		var cnt int
		_ = newLeader.Node().DB().QueryRow("SELECT COUNT(*) FROM demo_ticks WHERE node = ? AND fencing_token > ?", newLeader.ID, oldMax).Scan(&cnt)
		return cnt >= 2, fmt.Sprintf("%d rows by %s", cnt, newLeader.ID)
	})
	assertTokensIncrease(t, newLeader.Node().DB())
	var stray int
	_ = newLeader.Node().DB().QueryRow("SELECT COUNT(*) FROM demo_ticks WHERE node = 'intruder'").Scan(&stray)
	if stray != 0 {
		t.Fatalf("the stale run wrote %d rows", stray)
	}
}

// assertTokensIncrease checks that, in time order, no row carries a
// smaller fencing token than an earlier one.
func assertTokensIncrease(t *testing.T, db *sql.DB) {
	t.Helper()
	rows, err := db.Query("SELECT run_id, fencing_token FROM demo_ticks ORDER BY ran_at, run_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var prev int64
	for rows.Next() {
		var id string
		var tok int64
		if err := rows.Scan(&id, &tok); err != nil {
			t.Fatal(err)
		}
		if tok <= prev {
			t.Fatalf("run %s has token %d after token %d", id, tok, prev)
		}
		prev = tok
	}
}

package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/testcluster"
)

// TestAppEventsInLogOrderOnEveryNode: broadcasts published through any
// node reach the app on every node in log order, also on a node that was
// down when they were published, and also when the app refused the first
// deliveries; leader events say which node leads.
func TestAppEventsInLogOrderOnEveryNode(t *testing.T) {
	type ev struct {
		Type   string          `json:"type"`
		Seq    uint64          `json:"seq"`
		Topic  string          `json:"topic"`
		Node   string          `json:"node"`
		Leader *bool           `json:"leader"`
		Body   json.RawMessage `json:"payload"`
	}
	var mu sync.Mutex
	got := map[string][]ev{}
	var refuse atomic.Int64
	refuse.Store(5) // the app is "down" for its first five calls
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cohort-events" {
			return
		}
		if refuse.Add(-1) >= 0 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		var e ev
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got[e.Node] = append(got[e.Node], e)
		mu.Unlock()
	}))
	t.Cleanup(app.Close)
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *config.Config) {
		cfg.App.Upstream = app.URL
		cfg.App.EventsPath = "/cohort-events"
	}))
	leader := c.WaitLeader(t)
	ctx := context.Background()
	down := c.Followers()[0]
	for i := 0; i < 6; i++ {
		if i == 3 {
			c.Kill(down.ID)
		}
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			// An outcome lost to a leader change is retried: a duplicate
			// right after its original is allowed below.
			via := c.Running()[i%len(c.Running())]
			err := via.Node().Publish(ctx, "orders", []byte(fmt.Sprintf(`{"n":%d}`, i)))
			return err == nil, fmt.Sprint(err)
		})
	}
	c.Restart(down.ID)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		for _, nd := range c.Nodes() {
			n := 0
			for _, e := range got[nd.ID] {
				if e.Topic == "orders" {
					n++
				}
			}
			if n < 6 {
				_, b := nd.Do(t, http.MethodGet, "/_cohort/api/app", nil)
				var seen []string
				for _, e := range got[nd.ID] {
					seen = append(seen, fmt.Sprintf("%s/%d/%s", e.Type, e.Seq, e.Body))
				}
				return false, fmt.Sprintf("%s got %d of 6 messages %v; app %s", nd.ID, n, seen, b)
			}
		}
		return true, ""
	})
	func() {
		mu.Lock()
		defer mu.Unlock()
		for _, nd := range c.Nodes() {
			var last uint64
			next := 0
			sawLeader := false
			for _, e := range got[nd.ID] {
				if e.Seq != 0 && e.Seq < last {
					t.Fatalf("%s: event seq %d after %d: not in log order", nd.ID, e.Seq, last)
				}
				if e.Seq != 0 {
					last = e.Seq
				}
				if e.Topic == "orders" {
					var p struct{ N int }
					_ = json.Unmarshal(e.Body, &p)
					if p.N < next-1 || p.N > next {
						t.Fatalf("%s: message %d after %d", nd.ID, p.N, next-1)
					}
					if p.N == next {
						next++
					}
				}
				if e.Type == "leader" && e.Leader != nil {
					sawLeader = true
				}
			}
			if next != 6 || !sawLeader && nd.ID != down.ID {
				t.Fatalf("%s: %d orders in order, leader event %v: %+v", nd.ID, next, sawLeader, got[nd.ID])
			}
		}
	}()
	_ = leader
	// Leader events match what the nodes' status says: the last one each
	// running node's app got says "leader" on the node the status names,
	// and "not leader" (or nothing) on the others.
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		lead := c.Running()[0].Status(t).LeaderID
		mu.Lock()
		defer mu.Unlock()
		for _, nd := range c.Running() {
			var last *bool
			for _, e := range got[nd.ID] {
				if e.Type == "leader" && e.Leader != nil {
					last = e.Leader
				}
			}
			is := nd.ID == lead
			if (last == nil && is) || (last != nil && *last != is) {
				return false, fmt.Sprintf("status names %q leader, %s's app last heard leader=%v", lead, nd.ID, fmt.Sprint(last != nil && *last))
			}
		}
		return true, ""
	})
}

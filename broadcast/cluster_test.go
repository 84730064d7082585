package broadcast_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/broadcast"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/testcluster"
)

type inbox struct {
	mu  sync.Mutex
	got map[string][]broadcast.Message // node -> messages, across restarts
}

func (b *inbox) add(id string, m broadcast.Message) {
	b.mu.Lock()
	b.got[id] = append(b.got[id], m)
	b.mu.Unlock()
}

func (b *inbox) topic(id, topic string) []broadcast.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []broadcast.Message
	for _, m := range b.got[id] {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

func payloads(ms []broadcast.Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, string(m.Payload))
	}
	return strings.Join(s, ",")
}

// TestDeliveredOnceEverywhereIncludingRestarted publishes while a node is
// down: after its restart it gets the message exactly once, and none of
// the messages it had already seen (even though it restores a snapshot
// that holds them and replays the log after it).
func TestDeliveredOnceEverywhereIncludingRestarted(t *testing.T) {
	box := &inbox{got: make(map[string][]broadcast.Message)}
	c := testcluster.New(t, 3, testcluster.WithNodeSetup(func(n *node.Node) {
		id := n.ID()
		n.Subscribe(broadcast.All, func(m broadcast.Message) { box.add(id, m) })
	}))
	ctx := context.Background()
	want := func(ids []string, ps string) {
		t.Helper()
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			for _, id := range ids {
				if got := payloads(box.topic(id, "inv")); got != ps {
					return false, fmt.Sprintf("%s received %q, want %q", id, got, ps)
				}
			}
			return true, ""
		})
	}
	all := []string{"n1", "n2", "n3"}
	// Every node announced itself (member events need it, and so does a
	// graceful stop).
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		for _, nd := range c.Running() {
			if got := len(nd.Node().Members().All()); got != 3 {
				return false, fmt.Sprintf("%s knows %d members", nd.ID, got)
			}
		}
		return true, ""
	})
	f := c.Followers()
	if err := f[0].Node().Publish(ctx, "inv", []byte("m1")); err != nil {
		t.Fatal(err)
	}
	want(all, "m1")
	// Snapshots hold m1: a restarted node restores it and must not deliver it again.
	for _, nd := range c.Running() {
		if err := nd.Node().Cluster().Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	down := f[1].ID
	c.Stop(down)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		for _, m := range box.topic(c.WaitLeader(t).ID, broadcast.TopicMembers) {
			var ev broadcast.MemberEvent
			_ = json.Unmarshal(m.Payload, &ev)
			if ev.Node == down && ev.Event == "failed" {
				return true, ""
			}
		}
		return false, "no failed event for " + down
	})
	if err := c.WaitLeader(t).Node().Publish(ctx, "inv", []byte("m2")); err != nil {
		t.Fatal(err)
	}
	c.Restart(down)
	if err := c.Node(down).Node().Publish(ctx, "inv", []byte("m3")); err != nil {
		t.Fatal(err)
	}
	want(all, "m1,m2,m3")
	for _, id := range all {
		var prev uint64
		for _, m := range box.got[id] {
			if m.Seq == 0 {
				continue // local observations
			}
			if m.Seq <= prev {
				t.Errorf("%s: seq %d after %d: not once in log order", id, m.Seq, prev)
			}
			prev = m.Seq
		}
		if len(box.topic(id, broadcast.TopicLeader)) == 0 || len(box.topic(id, broadcast.TopicMembers)) == 0 {
			t.Errorf("%s saw no leader or member events", id)
		}
	}
	// The status view lists the retained messages on any node.
	code, body := c.Node(down).Do(t, "GET", "/_cohort/api/messages?since=0&topic=inv", nil)
	var out struct {
		Messages []struct {
			Topic, Payload string
		}
	}
	if err := json.Unmarshal(body, &out); err != nil || code != 200 || len(out.Messages) != 3 || out.Messages[2].Payload != "m3" {
		t.Fatalf("messages API: %d %s", code, body)
	}
	for _, q := range []string{"since=yesterday", "since=-5m"} {
		if code, body := c.Node(down).Do(t, "GET", "/_cohort/api/messages?"+q, nil); code != 400 {
			t.Errorf("%s: %d %s, want 400", q, code, body)
		}
	}
	if code, body := c.Node(down).Do(t, "POST", "/_cohort/api/messages", map[string]string{"topic": "cohort.members", "payload": "x"}); code != 400 {
		t.Errorf("publish on a reserved topic: %d %s, want 400", code, body)
	}
}

func BenchmarkPublish(b *testing.B) {
	c := testcluster.New(b, 3)
	leader := c.WaitLeader(b).Node()
	ctx := context.Background()
	payload := []byte(`{"invalidate":"customer:42"}`)
	b.Run("sequential", func(b *testing.B) {
		for b.Loop() {
			if err := leader.Publish(ctx, "bench", payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel-32", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := leader.Publish(ctx, "bench", payload); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

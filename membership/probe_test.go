package membership

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/raft"
)

// answerLog is a Log whose peers answered Raft at the times it is told.
type answerLog struct {
	mu       sync.Mutex
	answered map[string]bool // peer -> answers now
}

func (l *answerLog) Apply(context.Context, string, []byte) (raft.Result, error) {
	return raft.Result{}, nil
}
func (l *answerLog) Register(string, raft.StateMachine, ...string) error { return nil }

func (l *answerLog) LastAnswered(peer string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.answered[peer] {
		return time.Now()
	}
	return time.Time{}
}

func (l *answerLog) set(peer string, ok bool) {
	l.mu.Lock()
	l.answered[peer] = ok
	l.mu.Unlock()
}

// pingCounter answers /_internal/ping for the hosts marked up and counts
// the pings each host got.
type pingCounter struct {
	mu    sync.Mutex
	up    map[string]bool
	pings map[string]*atomic.Int64
}

func (p *pingCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	up := p.up[r.URL.Host]
	n := p.pings[r.URL.Host]
	p.mu.Unlock()
	n.Add(1)
	if !up {
		return nil, errors.New("connection refused")
	}
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
}

func (p *pingCounter) setUp(host string, up bool) {
	p.mu.Lock()
	p.up[host] = up
	p.mu.Unlock()
}

// A peer that answers this node over the cluster port (the leader's
// heartbeats) is healthy without a ping; one that does not is pinged, and
// marked unhealthy when the pings fail too.
func TestProbesSkipPeersThatAnswerRaft(t *testing.T) {
	lg := &answerLog{answered: map[string]bool{"b": true}}
	tbl := &Table{log: lg, selfID: "a", logger: slog.New(slog.DiscardHandler), members: map[string]Member{
		"a": {ID: "a", Address: "a:1"},
		"b": {ID: "b", Address: "b:1"},
		"c": {ID: "c", Address: "c:1"},
	}}
	pc := &pingCounter{up: map[string]bool{"b:1": true}, pings: map[string]*atomic.Int64{"b:1": {}, "c:1": {}}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tbl.StartProbing(ctx, &http.Client{Transport: pc}, 5*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()

	poll.Until(t, 5*time.Second, func() (bool, string) {
		return !tbl.Healthy("c"), "c, which neither answers Raft nor pings, is still healthy"
	})
	if n := pc.pings["b:1"].Load(); n != 0 {
		t.Fatalf("b answered Raft all along but was pinged %d times", n)
	}
	if !tbl.Healthy("b") {
		t.Fatal("b answers Raft but is unhealthy")
	}

	if tbl.Unresponsive("b") || !tbl.Unresponsive("c") {
		t.Fatalf("unresponsive: b %v, c %v; want only c", tbl.Unresponsive("b"), tbl.Unresponsive("c"))
	}
	// A caller's failed call makes b unhealthy until its next answer, but
	// not unresponsive: the calls in flight to it are left alone.
	tbl.MarkFailed("b")
	if tbl.Healthy("b") || tbl.Unresponsive("b") {
		t.Fatalf("b marked failed: healthy %v, unresponsive %v; want false, false", tbl.Healthy("b"), tbl.Unresponsive("b"))
	}
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return tbl.Healthy("b"), "b answers Raft but stays unhealthy after one failed call"
	})

	// b stops answering Raft and its pings fail: it is found out.
	lg.set("b", false)
	pc.setUp("b:1", false)
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return !tbl.Healthy("b") && tbl.Unresponsive("b"), "b stopped answering and is still healthy"
	})
	// It comes back on the cluster port: healthy again without a ping.
	before := pc.pings["b:1"].Load()
	lg.set("b", true)
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return tbl.Healthy("b"), "b answers again but is still unhealthy"
	})
	if n := pc.pings["b:1"].Load() - before; n > 1 {
		t.Fatalf("b answered Raft again but was pinged %d more times", n)
	}
}

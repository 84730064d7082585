package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortserver/cohort/broadcast"
)

// Bounds of the app's event delivery (--app-events-path).
const (
	appEventsQueue   = 10_000          // local events waiting; beyond, the oldest are dropped
	appEventGiveUp   = 2 * time.Minute // one event is retried this long
	appEventsTimeout = 10 * time.Second
)

// appEvents delivers the cluster's broadcast messages — the app's own
// topics, cohort.members and cohort.leader (and this node's observed
// leader changes) — to the app beside this node as JSON POSTs to
// --app-events-path, one at a time in log order, at least once: each is
// retried with backoff while the app is down, for at most appEventGiveUp.
// The last sequence the app acknowledged is kept in the data dir
// (app-events.cursor): after a restart, what the bus had handed over but
// the app had not acknowledged is read back from the retained messages (on
// a node's first start: every retained message, up to 24 h).
type appEvents struct {
	mu      sync.Mutex
	queue   []broadcast.Message
	wake    chan struct{}
	acked   atomic.Uint64 // last Seq delivered or given up
	sent    atomic.Int64
	failed  atomic.Int64
	dropped atomic.Int64
}

// AppEventsStatus is the delivery of events to the app.
type AppEventsStatus struct {
	Path      string `json:"path"`
	Delivered int64  `json:"delivered"`
	Failed    int64  `json:"failed"`  // given up after retrying
	Dropped   int64  `json:"dropped"` // the queue overflowed
	Pending   int    `json:"pending"`
}

// appEvent is the JSON body the app receives.
type appEvent struct {
	Type    string          `json:"type"` // message, members, leader, leader.observed
	Seq     uint64          `json:"seq"`  // Raft log index (0 for leader.observed)
	Topic   string          `json:"topic"`
	Time    time.Time       `json:"time"`
	Origin  string          `json:"origin"`
	Node    string          `json:"node"`             // the node delivering it
	Leader  *bool           `json:"leader,omitempty"` // leader events: whether this node leads now
	Payload json.RawMessage `json:"payload"`          // the JSON payload, or a JSON string
}

func (n *Node) setupAppEvents() error {
	if n.cfg.App.EventsPath == "" || n.upstream == nil || n.bus == nil {
		return nil
	}
	e := &appEvents{wake: make(chan struct{}, 1)}
	n.appEv = e
	n.bus.Subscribe(broadcast.All, func(m broadcast.Message) {
		if m.Seq == 0 { // local-only: not in the retained log
			e.mu.Lock()
			if len(e.queue) >= appEventsQueue {
				e.queue = e.queue[1:]
				e.dropped.Add(1)
			}
			e.queue = append(e.queue, m)
			e.mu.Unlock()
		}
		select {
		case e.wake <- struct{}{}:
		default:
		}
	})
	n.OnStart(func(ctx context.Context) error {
		n.goBackground(func() { n.deliverAppEvents(ctx) })
		return nil
	}, nil)
	return nil
}

func (n *Node) deliverAppEvents(ctx context.Context) {
	cursorFile := filepath.Join(n.cfg.DataDir, "app-events.cursor")
	acked := readCursor(cursorFile)
	n.appEv.acked.Store(acked)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		// This node's own observations (Seq 0) first, then the retained
		// messages after the cursor in log order: the bus's log, not the
		// queue, is what must reach the app, so nothing the bus handed over
		// before a crash is lost.
		e := n.appEv
		e.mu.Lock()
		var local []broadcast.Message
		for _, m := range e.queue {
			if m.Seq == 0 {
				local = append(local, m)
			}
		}
		e.queue = e.queue[:0]
		e.mu.Unlock()
		for _, m := range local {
			if !n.deliverAppEvent(ctx, m) && ctx.Err() != nil {
				return
			}
		}
		for _, m := range n.bus.Since(acked, time.Time{}, "") {
			if !broadcast.Internal(m.Topic) && !n.deliverAppEvent(ctx, m) && ctx.Err() != nil {
				return
			}
			acked = m.Seq // delivered, or given up and counted
			e.acked.Store(acked)
			if err := writeCursor(cursorFile, acked); err != nil {
				n.log.Warn("app events: cursor not saved; a restart may deliver again", "component", "app", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-tick.C: // messages applied while the bus's cursor skipped them (after a restart)
		}
	}
}

// deliverAppEvent POSTs one event, retrying with backoff for at most
// appEventGiveUp; it reports whether the app acknowledged it.
func (n *Node) deliverAppEvent(ctx context.Context, m broadcast.Message) bool {
	e := n.appEv
	client := n.upstream.Client()
	url := n.upstream.URL(n.cfg.App.EventsPath)
	body := n.appEventBody(m)
	deadline := time.Now().Add(appEventGiveUp)
	backoff := 100 * time.Millisecond
	for {
		err := postEvent(ctx, client, url, body)
		if err == nil {
			e.sent.Add(1)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if time.Now().After(deadline) {
			e.failed.Add(1)
			n.log.Warn("app event given up after retrying", "component", "app", "seq", m.Seq, "topic", m.Topic, "err", err)
			return false
		}
		n.log.Debug("app event not delivered; retrying", "component", "app", "seq", m.Seq, "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

func readCursor(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

func writeCursor(path string, v uint64) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(v, 10)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (n *Node) appEventBody(m broadcast.Message) []byte {
	ev := appEvent{Type: "message", Seq: m.Seq, Topic: m.Topic, Time: m.Time, Origin: m.Origin, Node: n.cfg.NodeID}
	switch m.Topic {
	case broadcast.TopicMembers:
		ev.Type = "members"
	case broadcast.TopicLeader, broadcast.TopicLeaderObserved:
		ev.Type = m.Topic[len("cohort."):]
		var le struct {
			Leader string `json:"leader"`
		}
		_ = json.Unmarshal(m.Payload, &le)
		leads := le.Leader == n.cfg.NodeID
		ev.Leader = &leads
	}
	if json.Valid(m.Payload) {
		ev.Payload = m.Payload
	} else {
		ev.Payload, _ = json.Marshal(string(m.Payload))
	}
	b, _ := json.Marshal(ev)
	return b
}

func postEvent(ctx context.Context, client *http.Client, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, appEventsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s answered %s", url, res.Status)
	}
	return nil
}

// appEventsStatus reports the delivery; nil without --app-events-path.
func (n *Node) appEventsStatus() *AppEventsStatus {
	e := n.appEv
	if e == nil {
		return nil
	}
	e.mu.Lock()
	pending := len(e.queue)
	e.mu.Unlock()
	pending += len(n.bus.Since(e.acked.Load(), time.Time{}, ""))
	return &AppEventsStatus{Path: n.cfg.App.EventsPath, Delivered: e.sent.Load(), Failed: e.failed.Load(), Dropped: e.dropped.Load(), Pending: pending}
}

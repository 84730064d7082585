package broadcast

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/raft"
)

// Reserved topics. Messages on them come from cohort itself; Publish
// refuses every topic starting with "cohort.".
const (
	// TopicMembers carries MemberEvent payloads (joined, left, failed,
	// recovered, state), published through the log by the leader.
	TopicMembers = "cohort.members"
	// TopicLeader carries a LeaderEvent published through the log by each
	// new leader once it passed Barrier: every node sees it once, in order.
	TopicLeader = "cohort.leader"
	// TopicLeaderObserved carries a LeaderEvent for every leader change
	// this node observes locally (including "no leader"). It is not
	// replicated, has Seq 0, and may differ from node to node.
	TopicLeaderObserved = "cohort.leader.observed"
	// TopicLoginFailures carries a node's failed console logins,
	// {"failures":N}, published by the console (package console) so the
	// all-clients login limit is cluster-wide. Not delivered to the app.
	TopicLoginFailures = "cohort.console.login-failures"
	// All subscribes to every topic.
	All = "*"
)

// Internal reports whether messages on topic are cohort's own business and
// are not delivered to the application's events endpoint.
func Internal(topic string) bool { return topic == TopicLoginFailures }

// Limits.
const (
	// Retention is how long the replicated state keeps a message.
	Retention = 24 * time.Hour
	// MaxRetained bounds the retained messages whatever their age.
	MaxRetained = 100_000
	// MaxPayload bounds one message's payload.
	MaxPayload = 64 << 10
	maxTopic   = 200
)

// Command types owned by this package.
const (
	cmdPublish = "broadcast.publish"
	cmdMember  = "broadcast.member"
	cmdLeader  = "broadcast.leader"
)

// Errors of the broadcast.
var (
	// ErrBadTopic is returned for an empty, too long or reserved topic.
	ErrBadTopic = errors.New("topic must be 1..200 bytes and must not start with \"cohort.\"")
	// ErrTooLarge is returned for a payload over MaxPayload.
	ErrTooLarge = errors.New("payload larger than 64 KiB")
)

// Message is one broadcast as subscribers and the status view see it.
type Message struct {
	Seq     uint64    `json:"seq"` // Raft log index; 0 for local-only messages
	Topic   string    `json:"topic"`
	Payload []byte    `json:"payload"`
	Time    time.Time `json:"time"`   // leader's clock when published
	Origin  string    `json:"origin"` // node that published
}

// MemberEvent is the payload of TopicMembers (JSON).
type MemberEvent struct {
	Event   string `json:"event"` // joined, left, failed, recovered, state
	Node    string `json:"node"`
	State   string `json:"state,omitempty"` // active, draining, disabled
	Healthy bool   `json:"healthy"`
}

// LeaderEvent is the payload of TopicLeader and TopicLeaderObserved (JSON).
type LeaderEvent struct {
	Leader string `json:"leader"`
	Term   uint64 `json:"term,omitempty"`
}

// Log is what the bus needs from the replicated log.
type Log interface {
	Apply(ctx context.Context, typ string, payload []byte) (raft.Result, error)
	Register(name string, sm raft.StateMachine, types ...string) error
	OnLeader(fn func(ctx context.Context, term uint64))
	OnLeaderChange(fn func(leaderID string))
	NodeID() string
}

// Members is what the membership watcher reads.
type Members interface {
	All() []membership.Member
	Healthy(id string) bool
}

// Config configures a Bus.
type Config struct {
	Log Log // required
	// Members, if non-nil, makes the leader publish member events.
	Members Members
	// DataDir holds the delivery cursor (broadcast.cursor) so a restart
	// neither re-delivers nor misses messages. "" keeps it in memory.
	DataDir string
	// WatchInterval is how often the leader compares members (0: 500ms).
	WatchInterval time.Duration
	Logger        *slog.Logger
}

// Handler receives messages in log order on one goroutine per node.
type Handler func(Message)

type memberView struct {
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
}

// Bus is the cluster broadcast: a replicated message log delivered once,
// in order, to this node's subscribers.
type Bus struct {
	cfg Config
	lg  *slog.Logger

	// replicated state
	smu  sync.RWMutex
	msgs []Message
	view map[string]memberView

	// delivery (local)
	dmu       sync.Mutex
	queue     []Message
	signal    chan struct{}
	subs      map[uint64]sub
	nextSub   uint64
	delivered uint64 // last Seq delivered (or skipped as already delivered)
	started   bool
	closed    bool
	stop      chan struct{}
	wg        sync.WaitGroup
}

type sub struct {
	topic string
	h     Handler
}

var _ raft.StateMachine = (*Bus)(nil)

// New returns a Bus and registers its state machine and leader hooks. It
// does no I/O.
func New(cfg Config) (*Bus, error) {
	if cfg.Log == nil {
		return nil, errors.New("broadcast: Config.Log is required")
	}
	if cfg.WatchInterval <= 0 {
		cfg.WatchInterval = 500 * time.Millisecond
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	b := &Bus{cfg: cfg, lg: lg.With("component", "broadcast"), view: make(map[string]memberView),
		signal: make(chan struct{}, 1), subs: make(map[uint64]sub), stop: make(chan struct{})}
	if err := cfg.Log.Register("broadcast", b, cmdPublish, cmdMember, cmdLeader); err != nil {
		return nil, fmt.Errorf("register broadcast state machine: %w", err)
	}
	cfg.Log.OnLeader(b.lead)
	cfg.Log.OnLeaderChange(func(id string) {
		p, _ := json.Marshal(LeaderEvent{Leader: id})
		b.enqueue(Message{Topic: TopicLeaderObserved, Payload: p, Time: time.Now().UTC(), Origin: cfg.Log.NodeID()})
	})
	return b, nil
}

// ValidTopic reports whether a user may publish on topic.
func ValidTopic(topic string) bool {
	return topic != "" && len(topic) <= maxTopic && topic != All && !strings.HasPrefix(topic, "cohort.")
}

type publishCmd struct {
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
}

// Publish commits a message to the log from any node; it returns its
// sequence number once this node applied it. Every node's subscribers get
// it once, in log order, including nodes that are down now (when they are
// back).
func (b *Bus) Publish(ctx context.Context, topic string, payload []byte) (uint64, error) {
	if !ValidTopic(topic) {
		return 0, fmt.Errorf("publish on %q: %w", topic, ErrBadTopic)
	}
	if len(payload) > MaxPayload {
		return 0, fmt.Errorf("publish on %q: %d bytes: %w", topic, len(payload), ErrTooLarge)
	}
	return b.apply(ctx, cmdPublish, publishCmd{Topic: topic, Payload: payload})
}

// PublishSystem is Publish for cohort's own components on a reserved
// topic that no node publishes on its own (TopicLoginFailures). The entry is an ordinary
// publish, so nodes of older versions apply it too.
func (b *Bus) PublishSystem(ctx context.Context, topic string, payload []byte) (uint64, error) {
	if topic != TopicLoginFailures {
		return 0, fmt.Errorf("publish on %q: %w", topic, ErrBadTopic)
	}
	if len(payload) > MaxPayload {
		return 0, fmt.Errorf("publish on %q: %d bytes: %w", topic, len(payload), ErrTooLarge)
	}
	return b.apply(ctx, cmdPublish, publishCmd{Topic: topic, Payload: payload})
}

func (b *Bus) apply(ctx context.Context, typ string, v any) (uint64, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", typ, err)
	}
	res, err := b.cfg.Log.Apply(ctx, typ, p)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", typ, err)
	}
	return res.Index, nil
}

// Subscribe calls h for every message on topic (All for every topic),
// from the next message this node delivers on. Subscribe before Start to
// see messages replayed at startup. cancel stops the subscription.
func (b *Bus) Subscribe(topic string, h Handler) (cancel func()) {
	b.dmu.Lock()
	b.nextSub++
	id := b.nextSub
	b.subs[id] = sub{topic: topic, h: h}
	b.dmu.Unlock()
	return func() {
		b.dmu.Lock()
		delete(b.subs, id)
		b.dmu.Unlock()
	}
}

// Since returns the retained messages with Seq > seq and Time >= t, oldest
// first, optionally only on topic ("" for all).
func (b *Bus) Since(seq uint64, t time.Time, topic string) []Message {
	b.smu.RLock()
	defer b.smu.RUnlock()
	i, _ := slices.BinarySearchFunc(b.msgs, seq+1, func(m Message, s uint64) int {
		switch {
		case m.Seq < s:
			return -1
		case m.Seq > s:
			return 1
		}
		return 0
	})
	out := []Message{}
	for _, m := range b.msgs[i:] {
		if m.Time.Before(t) || (topic != "" && m.Topic != topic) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// Apply implements raft.StateMachine. It records the message and queues
// it for local delivery without waiting for subscribers.
func (b *Bus) Apply(e raft.Entry) ([]byte, error) {
	m := Message{Seq: e.Index, Time: e.Time, Origin: e.Origin}
	switch e.Type {
	case cmdPublish:
		var c publishCmd
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		m.Topic, m.Payload = c.Topic, c.Payload
	case cmdMember:
		var ev MemberEvent
		if err := json.Unmarshal(e.Payload, &ev); err != nil {
			return nil, fmt.Errorf("decode %s: %w", e.Type, err)
		}
		m.Topic, m.Payload = TopicMembers, e.Payload
		b.smu.Lock()
		if ev.Event == "left" {
			delete(b.view, ev.Node)
		} else {
			b.view[ev.Node] = memberView{State: ev.State, Healthy: ev.Healthy}
		}
		b.smu.Unlock()
	case cmdLeader:
		m.Topic, m.Payload = TopicLeader, e.Payload
	default:
		return nil, fmt.Errorf("broadcast: unknown command type %q", e.Type)
	}
	b.smu.Lock()
	b.msgs = append(b.msgs, m)
	cut := 0
	for cut < len(b.msgs) && (b.msgs[cut].Time.Before(e.Time.Add(-Retention)) || len(b.msgs)-cut > MaxRetained) {
		cut++
	}
	if cut > 0 {
		b.msgs = slices.Delete(b.msgs, 0, cut)
	}
	b.smu.Unlock()
	b.enqueue(m)
	return []byte(strconv.FormatUint(e.Index, 10)), nil
}

type snapshot struct {
	Messages []Message             `json:"messages"`
	View     map[string]memberView `json:"view"`
}

type snap struct{ b []byte }

func (s *snap) Persist(w io.Writer) error {
	_, err := w.Write(s.b)
	return err
}
func (s *snap) Release() {}

// Snapshot implements raft.StateMachine.
func (b *Bus) Snapshot() (raft.Snapshot, error) {
	b.smu.RLock()
	defer b.smu.RUnlock()
	p, err := json.Marshal(snapshot{Messages: b.msgs, View: b.view})
	if err != nil {
		return nil, fmt.Errorf("encode broadcast state: %w", err)
	}
	return &snap{b: p}, nil
}

// Restore implements raft.StateMachine. Retained messages newer than the
// delivery cursor are delivered (a node that was down past a snapshot);
// older ones are not delivered again.
func (b *Bus) Restore(r io.Reader) error {
	p, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read broadcast state: %w", err)
	}
	var s snapshot
	if len(strings.TrimSpace(string(p))) > 0 {
		if err := json.Unmarshal(p, &s); err != nil {
			return fmt.Errorf("decode broadcast state: %w", err)
		}
	}
	if s.View == nil {
		s.View = make(map[string]memberView)
	}
	b.smu.Lock()
	b.msgs, b.view = s.Messages, s.View
	b.smu.Unlock()
	for _, m := range s.Messages {
		b.enqueue(m)
	}
	return nil
}

func (b *Bus) enqueue(m Message) {
	b.dmu.Lock()
	b.queue = append(b.queue, m)
	b.dmu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *Bus) cursorPath() string {
	if b.cfg.DataDir == "" {
		return ""
	}
	return filepath.Join(b.cfg.DataDir, "broadcast.cursor")
}

// Start loads the delivery cursor and starts delivering. Messages applied
// before Start wait in the queue.
func (b *Bus) Start(ctx context.Context) error {
	if p := b.cursorPath(); p != "" {
		raw, err := os.ReadFile(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("read broadcast cursor: %w", err)
		default:
			v, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
			if err != nil {
				return fmt.Errorf("broadcast cursor %s: %w", p, err)
			}
			b.dmu.Lock()
			b.delivered = v
			b.dmu.Unlock()
		}
	}
	b.dmu.Lock()
	b.started = true
	b.dmu.Unlock()
	b.wg.Add(1)
	go b.deliverLoop()
	return nil
}

// Close stops delivery after the message being delivered; it saves the
// cursor. It is idempotent.
func (b *Bus) Close() error {
	b.dmu.Lock()
	if b.closed || !b.started {
		b.closed = true
		b.dmu.Unlock()
		return nil
	}
	b.closed = true
	b.dmu.Unlock()
	close(b.stop)
	b.wg.Wait()
	return nil
}

// cursorEvery bounds how often the delivery cursor is synced to disk; a
// crash may re-deliver what was delivered within the last interval.
const cursorEvery = 100 * time.Millisecond

func (b *Bus) deliverLoop() {
	defer b.wg.Done()
	b.dmu.Lock()
	saved := b.delivered
	b.dmu.Unlock()
	var lastSave time.Time
	var flush <-chan time.Time
	for {
		b.dmu.Lock()
		batch := b.queue
		b.queue = nil
		b.dmu.Unlock()
		for _, m := range batch {
			select {
			case <-b.stop:
				b.flushCursor(&saved)
				return
			default:
			}
			b.deliver(m)
		}
		if flush == nil {
			b.dmu.Lock()
			dirty := b.delivered != saved
			b.dmu.Unlock()
			if dirty {
				if time.Since(lastSave) >= cursorEvery {
					b.flushCursor(&saved)
					lastSave = time.Now()
				} else {
					flush = time.After(cursorEvery - time.Since(lastSave))
				}
			}
		}
		select {
		case <-b.stop:
			b.flushCursor(&saved)
			return
		case <-b.signal:
		case <-flush:
			flush = nil
			b.flushCursor(&saved)
			lastSave = time.Now()
		}
	}
}

func (b *Bus) flushCursor(saved *uint64) {
	b.dmu.Lock()
	cur := b.delivered
	b.dmu.Unlock()
	if cur != *saved {
		b.saveCursor(cur)
		*saved = cur
	}
}

func (b *Bus) deliver(m Message) {
	b.dmu.Lock()
	if m.Seq != 0 {
		if m.Seq <= b.delivered {
			b.dmu.Unlock()
			return
		}
		b.delivered = m.Seq
	}
	var hs []Handler
	for _, s := range b.subs {
		if s.topic == m.Topic || s.topic == All {
			hs = append(hs, s.h)
		}
	}
	b.dmu.Unlock()
	for _, h := range hs {
		func() {
			defer func() {
				if p := recover(); p != nil {
					b.lg.Error("broadcast subscriber panicked", "topic", m.Topic, "seq", m.Seq, "panic", fmt.Sprint(p))
				}
			}()
			h(m)
		}()
	}
}

// saveCursor writes the cursor atomically (temp, fsync, rename). A crash
// between delivery and save re-delivers what was delivered since.
func (b *Bus) saveCursor(v uint64) {
	p := b.cursorPath()
	if p == "" {
		return
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.WriteString(strconv.FormatUint(v, 10) + "\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		b.lg.Warn("save broadcast cursor", "err", err)
	}
}

// lead publishes the new leader and watches the member table while this
// node leads.
func (b *Bus) lead(ctx context.Context, term uint64) {
	if _, err := b.apply(ctx, cmdLeader, LeaderEvent{Leader: b.cfg.Log.NodeID(), Term: term}); err != nil && ctx.Err() == nil {
		b.lg.Warn("publish leader change", "err", err)
	}
	if b.cfg.Members == nil {
		return
	}
	// Let this node's failure detector probe everyone once or twice first,
	// or a new leader would report dead peers as recovered.
	first := time.NewTimer(2 * b.cfg.WatchInterval)
	select {
	case <-ctx.Done():
		first.Stop()
		return
	case <-b.stop:
		first.Stop()
		return
	case <-first.C:
	}
	t := time.NewTicker(b.cfg.WatchInterval)
	defer t.Stop()
	for {
		b.watchMembers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-b.stop:
			return
		case <-t.C:
		}
	}
}

// watchMembers publishes the differences between the member table (and
// this leader's health view) and the replicated view of the last events.
func (b *Bus) watchMembers(ctx context.Context) {
	b.smu.RLock()
	view := make(map[string]memberView, len(b.view))
	for k, v := range b.view {
		view[k] = v
	}
	b.smu.RUnlock()
	var events []MemberEvent
	seen := make(map[string]bool)
	for _, m := range b.cfg.Members.All() {
		seen[m.ID] = true
		now := memberView{State: m.State, Healthy: b.cfg.Members.Healthy(m.ID)}
		old, ok := view[m.ID]
		switch {
		case !ok:
			events = append(events, MemberEvent{Event: "joined", Node: m.ID, State: now.State, Healthy: now.Healthy})
		case old.Healthy && !now.Healthy:
			events = append(events, MemberEvent{Event: "failed", Node: m.ID, State: now.State, Healthy: false})
		case !old.Healthy && now.Healthy:
			events = append(events, MemberEvent{Event: "recovered", Node: m.ID, State: now.State, Healthy: true})
		case old.State != now.State:
			events = append(events, MemberEvent{Event: "state", Node: m.ID, State: now.State, Healthy: now.Healthy})
		}
	}
	for id := range view {
		if !seen[id] {
			events = append(events, MemberEvent{Event: "left", Node: id})
		}
	}
	for _, ev := range events {
		if _, err := b.apply(ctx, cmdMember, ev); err != nil {
			if ctx.Err() == nil {
				b.lg.Warn("publish member event", "event", ev.Event, "node", ev.Node, "err", err)
			}
			return
		}
	}
}

package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortserver/cohort/buildinfo"
	"github.com/cohortserver/cohort/console"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/metrics"
	"github.com/cohortserver/cohort/raft"
)

// ops is the operator's surface of a node: metrics, the event log, the
// console and the admin endpoints beyond the foundation's.
type ops struct {
	metrics *metrics.Registry
	raft    *metrics.Raft
	events  *eventLog
	console *console.Console
	// stopWatch ends the member watcher; done closes when it returned.
	stopWatch context.CancelFunc
	done      chan struct{}
}

// setupOps wires metrics, the event log, the console and the operations
// endpoints (members, ping, snapshot, backup, events).
func (n *Node) setupOps() error {
	o := &ops{metrics: metrics.New(), events: newEventLog(24*time.Hour, 5000), done: make(chan struct{})}
	o.metrics.SetLogger(n.log)
	n.ops = o
	o.raft = metrics.NewRaft(n.cluster)
	if err := o.metrics.Register(o.raft); err != nil {
		return err
	}
	n.cluster.OnApply(o.raft.Applied)
	if err := n.registerCapabilityMetrics(); err != nil {
		return err
	}
	n.cluster.OnLeaderChange(func(id string) {
		o.raft.LeaderChanged(id)
		if id == "" {
			o.events.add("leader", n.cfg.NodeID, "lost contact with the leader; no leader known")
		} else {
			o.events.add("leader", id, fmt.Sprintf("%s is the leader (term %d)", id, n.cluster.Info().Term))
		}
	})
	c, err := console.New(console.Options{
		Token:  func() []byte { return n.adminToken },
		NodeID: n.cfg.NodeID,
		Logger: n.log,
		Bus:    n.bus, // the all-clients login limit is cluster-wide
	})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	o.console = c
	n.OnStart(nil, func() error { c.Close(); return nil })

	n.mux.Handle("GET /_cohort/metrics", n.admin(o.metrics.Handler().ServeHTTP))
	n.mux.Handle(console.Prefix, c)
	n.mux.Handle("GET /_cohort/ui", http.RedirectHandler(console.Prefix, http.StatusMovedPermanently))
	n.HandleAdmin("GET /_cohort/api/members", n.handleMembers)
	n.HandleAdmin("POST /_cohort/api/nodes/{id}/ping", n.handlePing)
	n.HandleAdmin("POST /_cohort/api/snapshot", n.handleSnapshot)
	n.HandleAdmin("GET /_cohort/api/backup", n.handleBackup)
	n.HandleAdmin("GET /_cohort/api/events", n.handleEvents)
	n.cluster.HandleInternal("GET /_internal/ops/info", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, n.localInfo())
	}))

	n.OnStart(func(ctx context.Context) error {
		// The business DB pool (setupApp's hook, run before this one,
		// opened it).
		if db := n.DB(); db != nil {
			if err := o.metrics.Register(metrics.NewDBPool("business", db)); err != nil {
				n.log.Warn("db pool metrics not registered", "err", err)
			}
		}
		o.events.add("node", n.cfg.NodeID, "node started, version "+buildinfo.Version)
		wctx, cancel := context.WithCancel(ctx)
		o.stopWatch = cancel
		go func() {
			defer close(o.done)
			n.watchMembers(wctx)
		}()
		return nil
	}, func() error { // runs only after the start hook above
		o.stopWatch()
		<-o.done
		return nil
	})
	return nil
}

// registerCapabilityMetrics registers the collectors the capabilities
// export themselves (each package declares its figures next to the counts
// it keeps, see metrics/doc.go); a new capability adds its Collector here.
// setupOps runs after every capability's setup, so none is nil.
func (n *Node) registerCapabilityMetrics() error {
	cs := []prometheus.Collector{n.events,
		n.sessions.Collector(), n.files.Collector(), n.jobs.Collector(), n.front.Collector()}
	if n.upstream != nil {
		cs = append(cs, n.appMetrics())
	}
	if n.singles != nil {
		cs = append(cs, n.singletonMetrics())
	}
	if n.kv != nil {
		cs = append(cs, n.kvMetrics())
	}
	return n.ops.metrics.Register(cs...)
}

// Metrics returns the node's metric registry; packages register their
// collectors there (before or after Start).
func (n *Node) Metrics() *metrics.Registry { return n.ops.metrics }

// Events returns the node's local log of cluster events.
func (n *Node) Events() []Event { return n.ops.events.since(time.Time{}) }

// consoleAuthorized reports whether r carries a valid console session
// (and, for a state-changing method, its CSRF proof). The admin guard
// accepts it in place of the bearer token.
func (n *Node) consoleAuthorized(r *http.Request) bool {
	return n.ops.console.Authorized(r) // setupOps ran in New
}

// Event is one entry of the event log.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // leader, member, state, health, node
	Node    string    `json:"node,omitempty"`
	Message string    `json:"message"`
}

// eventLog is a bounded, time-limited ring of events seen by this node.
type eventLog struct {
	keep time.Duration
	max  int

	mu  sync.Mutex
	evs []Event
}

func newEventLog(keep time.Duration, max int) *eventLog {
	return &eventLog{keep: keep, max: max}
}

func (l *eventLog) add(kind, node, msg string) {
	now := time.Now().UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, Event{Time: now, Kind: kind, Node: node, Message: msg})
	cut := 0
	for cut < len(l.evs) && (len(l.evs)-cut > l.max || now.Sub(l.evs[cut].Time) > l.keep) {
		cut++
	}
	if cut > 0 {
		l.evs = append(l.evs[:0:0], l.evs[cut:]...)
	}
}

// since returns the events after t, newest first.
func (l *eventLog) since(t time.Time) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	horizon := time.Now().Add(-l.keep)
	out := make([]Event, 0, len(l.evs))
	for i := len(l.evs) - 1; i >= 0; i-- {
		e := l.evs[i]
		if e.Time.After(t) && e.Time.After(horizon) {
			out = append(out, e)
		}
	}
	return out
}

// watchMembers turns changes of the Raft configuration, the member table
// and health into events, until ctx ends.
func (n *Node) watchMembers(ctx context.Context) {
	prev := map[string]memberSeen{}
	first := true
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		cur := map[string]memberSeen{}
		servers, err := n.cluster.Servers()
		if err == nil {
			for _, s := range servers {
				cur[s.ID] = memberSeen{addr: s.Address, voter: s.Voter, inRaft: true, healthy: n.members.Healthy(s.ID), state: membership.StateActive}
			}
			for _, m := range n.members.All() {
				if s, ok := cur[m.ID]; ok {
					s.state = m.State
					cur[m.ID] = s
				}
			}
			if !first {
				n.diffMembers(prev, cur)
			}
			prev, first = cur, false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// memberSeen is what watchMembers compares between two looks.
type memberSeen struct {
	state, addr string
	voter       bool
	healthy     bool
	inRaft      bool
}

func (n *Node) diffMembers(prev, cur map[string]memberSeen) {
	ev := n.ops.events
	ids := make([]string, 0, len(cur)+len(prev))
	for id := range cur {
		ids = append(ids, id)
	}
	for id := range prev {
		if _, ok := cur[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		p, had := prev[id]
		c, has := cur[id]
		switch {
		case !had && has:
			ev.add("member", id, fmt.Sprintf("%s joined the cluster at %s", id, c.addr))
		case had && !has:
			ev.add("member", id, fmt.Sprintf("%s left the cluster", id))
		default:
			if p.state != c.state {
				ev.add("state", id, fmt.Sprintf("%s: %s → %s", id, p.state, c.state))
			}
			if p.healthy != c.healthy {
				if c.healthy {
					ev.add("health", id, id+" is reachable again")
				} else {
					ev.add("health", id, id+" stopped answering probes")
				}
			}
		}
	}
}

// Load is a node's resource use, for the console and `cohort members`.
type Load struct {
	Goroutines int    `json:"goroutines"`
	HeapBytes  uint64 `json:"heap_bytes"`
}

// NodeInfo is one node's own view of itself, exchanged between nodes.
type NodeInfo struct {
	ID            string `json:"id"`
	RaftState     string `json:"raft_state"`
	Term          uint64 `json:"term"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	LastIndex     uint64 `json:"last_index"`
	LastContactMS int64  `json:"last_contact_ms"` // -1 on the leader or when never in contact
	UptimeSeconds int64  `json:"uptime_seconds"`
	Version       string `json:"version"`
	Load          *Load  `json:"load,omitempty"`
}

func (n *Node) localInfo() NodeInfo {
	in := n.cluster.Info()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ni := NodeInfo{
		ID: n.cfg.NodeID, RaftState: in.State, Term: in.Term, CommitIndex: in.CommitIndex,
		AppliedIndex: in.AppliedIndex, LastIndex: in.LastIndex, LastContactMS: -1,
		UptimeSeconds: int64(time.Since(n.started).Seconds()), Version: buildinfo.Version,
		Load: &Load{Goroutines: runtime.NumGoroutine(), HeapBytes: ms.HeapAlloc},
	}
	if !in.LastContact.IsZero() {
		ni.LastContactMS = time.Since(in.LastContact).Milliseconds()
	}
	return ni
}

// MemberView is one member in GET /_cohort/api/members: the replicated
// facts plus what the member itself reports (when it answers).
type MemberView struct {
	MemberStatus
	Reachable     bool   `json:"reachable"` // answered through the cluster port
	RaftState     string `json:"raft_state,omitempty"`
	Term          uint64 `json:"term"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	LastIndex     uint64 `json:"last_index"`
	LastContactMS int64  `json:"last_contact_ms"` // -1 on the leader or when unknown
	UptimeSeconds int64  `json:"uptime_seconds"`
	Load          *Load  `json:"load,omitempty"`
	Error         string `json:"error,omitempty"`
}

func (v *MemberView) fill(ni NodeInfo) {
	v.Reachable = true
	v.RaftState, v.Term, v.CommitIndex, v.AppliedIndex, v.LastIndex = ni.RaftState, ni.Term, ni.CommitIndex, ni.AppliedIndex, ni.LastIndex
	v.LastContactMS, v.UptimeSeconds, v.Load = ni.LastContactMS, ni.UptimeSeconds, ni.Load
	if v.Version == "" {
		v.Version = ni.Version
	}
}

// MembersView is the answer of GET /_cohort/api/members.
type MembersView struct {
	NodeID      string       `json:"node_id"`
	LeaderID    string       `json:"leader_id"`
	Term        uint64       `json:"term"`
	CommitIndex uint64       `json:"commit_index"`
	Time        time.Time    `json:"time"`
	Members     []MemberView `json:"members"`
}

// MembersOverview asks every member for its own figures (in parallel, bounded by
// ctx) and returns the cluster as this node sees it.
func (n *Node) MembersOverview(ctx context.Context) MembersView {
	// Not n.Status: its readiness checks (the business DB) may take
	// seconds, and the console polls this every second or two.
	in := n.cluster.Info()
	v := MembersView{NodeID: n.cfg.NodeID, LeaderID: in.LeaderID, Term: in.Term, CommitIndex: in.CommitIndex, Time: time.Now().UTC()}
	var ms []MemberStatus
	servers, _ := n.cluster.Servers()
	for _, s := range servers {
		m, _ := n.members.Get(s.ID)
		st := MemberStatus{ID: s.ID, Address: s.Address, HTTPAddress: m.HTTPAddress, Voter: s.Voter, State: m.State,
			Healthy: n.members.Healthy(s.ID), Leader: s.ID == in.LeaderID, Version: m.Version, Since: m.Since}
		if st.State == "" {
			st.State = membership.StateActive
		}
		ms = append(ms, st)
	}
	v.Members = make([]MemberView, len(ms))
	ctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for i, m := range ms {
		v.Members[i].MemberStatus = m
		if m.ID == n.cfg.NodeID {
			v.Members[i].fill(n.localInfo())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := n.remoteInfo(ctx, m.Address)
			if err != nil {
				v.Members[i].LastContactMS = -1
				v.Members[i].Error = err.Error()
				return
			}
			v.Members[i].fill(info)
		}()
	}
	wg.Wait()
	return v
}

func (n *Node) remoteInfo(ctx context.Context, addr string) (NodeInfo, error) {
	var ni NodeInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_internal/ops/info", nil)
	if err != nil {
		return ni, fmt.Errorf("ask %s: %w", addr, err)
	}
	resp, err := n.cluster.Client().Do(req)
	if err != nil {
		return ni, fmt.Errorf("unreachable through the cluster port: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ni, fmt.Errorf("ask %s: HTTP %d", addr, resp.StatusCode)
	}
	if err := decodeLimited(resp.Body, &ni); err != nil {
		return ni, fmt.Errorf("ask %s: %w", addr, err)
	}
	return ni, nil
}

// decodeLimited decodes one JSON value of at most 1 MiB.
func decodeLimited(r io.Reader, v any) error {
	if err := json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

func (n *Node) handleMembers(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, n.MembersOverview(r.Context()))
}

// PingResult is the answer of POST /_cohort/api/nodes/ID/ping.
type PingResult struct {
	ID      string    `json:"id"`
	Address string    `json:"address"`
	RTTMS   float64   `json:"rtt_ms"` // mean of the samples
	MinMS   float64   `json:"min_ms"`
	MaxMS   float64   `json:"max_ms"`
	Samples []float64 `json:"samples_ms"`
}

// Ping measures the round trip to a member through the cluster port
// (count requests to its /_internal/ping, one after the other).
func (n *Node) Ping(ctx context.Context, id string, count int) (PingResult, error) {
	res := PingResult{ID: id}
	servers, err := n.cluster.Servers()
	if err != nil {
		return res, err
	}
	for _, s := range servers {
		if s.ID == id {
			res.Address = s.Address
		}
	}
	if res.Address == "" {
		return res, fmt.Errorf("ping %q: %w", id, errNoSuchMember)
	}
	for i := 0; i < count; i++ {
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+res.Address+"/_internal/ping", nil)
		if err != nil {
			return res, fmt.Errorf("ping %s: %w", id, err)
		}
		resp, err := n.cluster.Client().Do(req)
		if err != nil {
			return res, fmt.Errorf("ping %s at %s: %w", id, res.Address, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		rtt := float64(time.Since(start).Microseconds()) / 1000
		if err != nil || resp.StatusCode != http.StatusOK {
			return res, fmt.Errorf("ping %s at %s: HTTP %d", id, res.Address, resp.StatusCode)
		}
		if string(body) != id {
			return res, fmt.Errorf("ping %s: %s answered as %q", id, res.Address, body)
		}
		res.Samples = append(res.Samples, rtt)
	}
	sum := 0.0
	res.MinMS, res.MaxMS = res.Samples[0], res.Samples[0]
	for _, s := range res.Samples {
		sum += s
		res.MinMS, res.MaxMS = min(res.MinMS, s), max(res.MaxMS, s)
	}
	res.RTTMS = sum / float64(len(res.Samples))
	return res, nil
}

// errNoSuchMember is a ping of an id outside the Raft configuration.
var errNoSuchMember = errors.New("no such member in the raft configuration")

func (n *Node) handlePing(w http.ResponseWriter, r *http.Request) {
	count := 3
	if c := r.URL.Query().Get("count"); c != "" {
		v, err := strconv.Atoi(c)
		if err != nil || v < 1 || v > 100 {
			WriteError(w, http.StatusBadRequest, "count must be 1..100")
			return
		}
		count = v
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	res, err := n.Ping(ctx, r.PathValue("id"), count)
	switch {
	case errors.Is(err, errNoSuchMember):
		WriteError(w, http.StatusNotFound, err.Error())
	case err != nil:
		WriteError(w, http.StatusBadGateway, err.Error())
	default:
		WriteJSON(w, http.StatusOK, res)
	}
}

func (n *Node) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	err := n.cluster.Snapshot()
	if err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		writeClusterErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"node_id": n.cfg.NodeID, "index": n.cluster.AppliedIndex(), "new": err == nil})
}

// lazyHeader sets the backup's headers at its first byte, so a failure
// before any data still answers with a JSON error.
type lazyHeader struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyHeader) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		h := l.w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Disposition", `attachment; filename="cohort-backup.snap"`)
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

// Backup headers and trailers.
const (
	// BackupFilesHeader says how many live files and bytes the backup's
	// files hold ("N files, B bytes"); their contents follow the snapshot.
	BackupFilesHeader = "X-Cohort-Backup-Files"
	// BackupMissingTrailer, a trailer, counts the files whose content no
	// node could serve, so the backup lists them without content ("0"
	// when complete). The backup's own end record says the same.
	BackupMissingTrailer = "X-Cohort-Backup-Missing"
)

func (n *Node) handleBackup(w http.ResponseWriter, r *http.Request) {
	u := n.files.Status().Usage
	w.Header().Set(BackupFilesHeader, fmt.Sprintf("%d files, %d bytes", u.Files, u.Bytes))
	w.Header().Set("Trailer", BackupMissingTrailer)
	lw := &lazyHeader{w: w}
	meta, blobs, err := n.Backup(r.Context(), lw)
	if err != nil {
		if !lw.started {
			WriteError(w, http.StatusInternalServerError, "backup: "+err.Error())
			return
		}
		// The client sees a body that ends before the blob section's end
		// record, and the cli says the backup is truncated.
		n.log.Error("backup stream failed", "err", err)
		return
	}
	w.Header().Set(BackupMissingTrailer, strconv.Itoa(len(blobs.Missing)))
	msg := fmt.Sprintf("backup taken at index %d (%d bytes of state, %d blobs of %d bytes)", meta.Index, meta.Size, blobs.Blobs, blobs.Bytes)
	if len(blobs.Missing) > 0 {
		msg += fmt.Sprintf("; %d files without content (no node served it)", len(blobs.Missing))
		n.log.Error("backup lacks the content of files no node could serve", "files", len(blobs.Missing), "first", blobs.Missing[0])
	}
	n.ops.events.add("node", n.cfg.NodeID, msg)
}

// Backup writes a complete backup to w: the replicated state at one index
// and, after it, the content of every live file that state names (blobs
// are streamed from this node's store, fetched from peers when missing
// here). See raft.Cluster.Backup and files.BackupTail for the format.
// It first waits (briefly) until this node applied what the leader
// committed, so a backup holds every write acknowledged before it began.
func (n *Node) Backup(ctx context.Context, w io.Writer) (raft.BackupMeta, files.BackupSummary, error) {
	n.files.Barrier(ctx)
	var refs []files.BlobRef
	var blobs files.BackupSummary
	meta, err := n.cluster.BackupWith(w, raft.BackupOptions{
		Section: files.Section,
		Observe: func(r io.Reader) error {
			var err error
			refs, err = files.ManifestBlobs(r)
			return err
		},
		TailName: files.BackupTail,
		Tail: func(w io.Writer) error {
			var err error
			blobs, err = n.files.WriteBackupBlobs(ctx, w, refs)
			return err
		},
	})
	return meta, blobs, err
}

func (n *Node) handleEvents(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			WriteError(w, http.StatusBadRequest, "since must be an RFC 3339 time")
			return
		}
		since = t
	}
	WriteJSON(w, http.StatusOK, map[string]any{"node_id": n.cfg.NodeID, "events": n.ops.events.since(since)})
}

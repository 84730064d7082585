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

	hraft "github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortserver/cohort/buildinfo"
	"github.com/cohortserver/cohort/console"
	"github.com/cohortserver/cohort/membership"
	"github.com/cohortserver/cohort/metrics"
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
	})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	o.console = c

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
	}, func() error {
		if o.stopWatch != nil {
			o.stopWatch()
			<-o.done
		}
		return nil
	})
	return nil
}

// registerCapabilityMetrics exposes the figures the capabilities already
// keep (sessions, files, jobs, the front), read at scrape time.
func (n *Node) registerCapabilityMetrics() error {
	reg := n.ops.metrics
	var cs []prometheus.Collector
	if n.sessions != nil {
		cs = append(cs, metrics.NewFunc("sessions", []metrics.Figure{
			{Name: "sessions", Help: "Sessions this node holds (the replicated set)."},
			{Name: "in_memory", Help: "Sessions held in memory."},
			{Name: "passivated", Help: "Sessions passivated to disk."},
			{Name: "bytes", Help: "Bytes of session data."},
			{Name: "memory_bytes", Help: "Bytes of session data held in memory."},
			{Name: "principals", Help: "Distinct signed-in users."},
			{Name: "applied_entries_total", Help: "Session log entries applied on this node.", Counter: true},
			{Name: "commits_total", Help: "Session changes this node proposed.", Counter: true},
			{Name: "touches_total", Help: "Session expiry extensions this node proposed.", Counter: true},
			{Name: "sweeps_total", Help: "Expiry sweeps this node proposed.", Counter: true},
			{Name: "catch_ups_total", Help: "Requests that waited for this node to catch up with a session written elsewhere.", Counter: true},
		}, func(emit metrics.Emit) {
			st := n.sessions.Stats()
			emit("sessions", float64(st.Total))
			emit("in_memory", float64(st.InMemory))
			emit("passivated", float64(st.Passivated))
			emit("bytes", float64(st.Bytes))
			emit("memory_bytes", float64(st.MemBytes))
			emit("principals", float64(st.Principals))
			emit("applied_entries_total", float64(st.Applied))
			emit("commits_total", float64(st.Commits))
			emit("touches_total", float64(st.Touches))
			emit("sweeps_total", float64(st.Sweeps))
			emit("catch_ups_total", float64(st.CatchUps))
		}))
	}
	if n.files != nil {
		cs = append(cs, metrics.NewFunc("files", []metrics.Figure{
			{Name: "files", Help: "Files in the shared tree."},
			{Name: "bytes", Help: "Bytes of the files in the shared tree."},
			{Name: "tombstones", Help: "Deleted files remembered for replication."},
			{Name: "catchup_running", Help: "1 while this node copies blobs it lacks."},
			{Name: "catchup_missing_files", Help: "Blobs this node lacked when the current catch-up pass started."},
			{Name: "catchup_done_files", Help: "Blobs copied in the current catch-up pass."},
			{Name: "catchup_failed_files", Help: "Blobs the current catch-up pass failed to copy."},
			{Name: "repaired_total", Help: "Corrupt blobs replaced since start.", Counter: true},
		}, func(emit metrics.Emit) {
			st := n.files.Status()
			emit("files", float64(st.Usage.Files))
			emit("bytes", float64(st.Usage.Bytes))
			emit("tombstones", float64(st.Usage.Tombstones))
			emit("catchup_running", boolFloat(st.Sync.Running))
			emit("catchup_missing_files", float64(st.Sync.MissingFiles))
			emit("catchup_done_files", float64(st.Sync.DoneFiles))
			emit("catchup_failed_files", float64(st.Sync.FailedFiles))
			emit("repaired_total", float64(st.Sync.Repaired))
		}))
	}
	if n.jobs != nil {
		cs = append(cs, metrics.NewFunc("jobs", []metrics.Figure{
			{Name: "suspended", Help: "1 when the job is suspended.", Labels: []string{"job"}},
			{Name: "running", Help: "Runs of the job in progress.", Labels: []string{"job"}},
			{Name: "next_run_timestamp_seconds", Help: "When the job runs next (Unix time).", Labels: []string{"job"}},
			{Name: "last_run_timestamp_seconds", Help: "When the job's last run started (Unix time).", Labels: []string{"job"}},
			{Name: "last_run_duration_seconds", Help: "How long the job's last run took.", Labels: []string{"job"}},
			{Name: "last_run_succeeded", Help: "1 when the job's last run succeeded, 0 when it did not.", Labels: []string{"job"}},
			{Name: "schedule_lag_seconds", Help: "How far the job's next run is overdue (0 when on time).", Labels: []string{"job"}},
		}, func(emit metrics.Emit) {
			now := time.Now()
			for _, j := range n.jobs.Jobs() {
				emit("suspended", boolFloat(j.Suspended), j.Name)
				emit("running", float64(len(j.Running)), j.Name)
				if !j.NextRun.IsZero() {
					emit("next_run_timestamp_seconds", float64(j.NextRun.UnixMilli())/1000, j.Name)
					lag := 0.0
					if !j.Suspended && now.After(j.NextRun) {
						lag = now.Sub(j.NextRun).Seconds()
					}
					emit("schedule_lag_seconds", lag, j.Name)
				}
				if lr := j.LastRun; lr != nil {
					if !lr.StartedAt.IsZero() {
						emit("last_run_timestamp_seconds", float64(lr.StartedAt.UnixMilli())/1000, j.Name)
					}
					emit("last_run_duration_seconds", float64(lr.DurationMS)/1000, j.Name)
					emit("last_run_succeeded", boolFloat(lr.Status == "succeeded"), j.Name)
				}
			}
		}))
	}
	if n.kv != nil {
		cs = append(cs, metrics.NewFunc("kv", []metrics.Figure{
			{Name: "keys", Help: "Keys in the replicated store (every namespace, expired ones not yet removed included)."},
			{Name: "used_bytes", Help: "Approximate bytes the store's data takes."},
			{Name: "max_bytes", Help: "Memory cap of the store (0 = none)."},
			{Name: "batches_total", Help: "Raft entries of store writes this node proposed (group commit).", Counter: true},
			{Name: "batched_ops_total", Help: "Store writes in those entries.", Counter: true},
			{Name: "read_indexes_total", Help: "Read index rounds passed for store reads.", Counter: true},
			{Name: "lease_reads_total", Help: "Store reads the leader answered under its read lease.", Counter: true},
			{Name: "commands_total", Help: "Commands served, per protocol.", Labels: []string{"protocol"}, Counter: true},
			{Name: "errors_total", Help: "Error replies, per protocol.", Labels: []string{"protocol"}, Counter: true},
			{Name: "connections_total", Help: "Client connections accepted, per protocol.", Labels: []string{"protocol"}, Counter: true},
		}, func(emit metrics.Emit) {
			st := n.kv.Stats()
			emit("keys", float64(st.Keys))
			emit("used_bytes", float64(st.UsedBytes))
			emit("max_bytes", float64(st.MaxBytes))
			emit("batches_total", float64(st.Batches))
			emit("batched_ops_total", float64(st.BatchedOps))
			emit("read_indexes_total", float64(st.ReadIndexes))
			emit("lease_reads_total", float64(st.LeaseReads))
			for proto, c := range n.kvCounters() {
				emit("commands_total", float64(c.Commands.Load()), proto)
				emit("errors_total", float64(c.Errors.Load()), proto)
				emit("connections_total", float64(c.Connections.Load()), proto)
			}
		}))
	}
	if n.front != nil {
		cs = append(cs, metrics.NewFunc("front", []metrics.Figure{
			{Name: "inflight_requests", Help: "Application requests in flight on this node's front."},
		}, func(emit metrics.Emit) {
			emit("inflight_requests", float64(n.front.InFlight()))
		}))
	}
	cs = append(cs, n.events)
	return reg.Register(cs...)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
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
	return n.ops != nil && n.ops.console != nil && n.ops.console.Authorized(r)
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
	if err != nil && !errors.Is(err, hraft.ErrNothingNewToSnapshot) {
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

func (n *Node) handleBackup(w http.ResponseWriter, r *http.Request) {
	lw := &lazyHeader{w: w}
	meta, err := n.cluster.Backup(lw)
	if err != nil {
		if !lw.started {
			WriteError(w, http.StatusInternalServerError, "backup: "+err.Error())
			return
		}
		// The client sees a body shorter than the header's size.
		n.log.Error("backup stream failed", "err", err)
		return
	}
	n.ops.events.add("node", n.cfg.NodeID, fmt.Sprintf("backup taken at index %d (%d bytes)", meta.Index, meta.Size))
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

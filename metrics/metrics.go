package metrics

import (
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cohortserver/cohort/raft"
)

// Namespace prefixes every cohort metric.
const Namespace = "cohort"

// Registry is one node's metric registry.
type Registry struct {
	reg *prometheus.Registry
	lg  *slog.Logger
}

// New returns a registry holding the Go runtime and process collectors.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Registry{reg: reg, lg: slog.New(slog.DiscardHandler)}
}

// SetLogger makes the handler log collector errors (an undeclared figure,
// a failing source) to lg; call it before Handler. If never called, the
// errors are only counted in promhttp_metric_handler_errors_total.
func (r *Registry) SetLogger(lg *slog.Logger) {
	if lg != nil {
		r.lg = lg.With("component", "metrics")
	}
}

// Register adds collectors; a duplicate or inconsistent metric is an error.
func (r *Registry) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := r.reg.Register(c); err != nil {
			return fmt.Errorf("register metrics collector: %w", err)
		}
	}
	return nil
}

// Gatherer returns the registry for reading (tests, other exporters).
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the registry in the Prometheus text (or negotiated)
// exposition format. Errors of single collectors are logged into the
// answer instead of failing the scrape.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          slog.NewLogLogger(r.lg.Handler(), slog.LevelError),
		Registry:          r.reg,
		EnableOpenMetrics: false,
	})
}

// RaftSource is what the Raft collector reads at scrape time; *raft.Cluster
// implements it.
type RaftSource interface {
	Info() raft.Info
	Servers() ([]raft.Server, error)
}

// Raft collects the consensus figures of one node. Create it with NewRaft,
// register it, and feed it with LeaderChanged and Applied (the node wires
// them to raft.Cluster.OnLeaderChange and OnApply).
type Raft struct {
	src RaftSource

	term, commit, applied, last, contact, servers *prometheus.Desc
	state                                         *prometheus.Desc
	leaderChanges                                 prometheus.Counter
	applyLatency                                  *prometheus.HistogramVec
}

var _ prometheus.Collector = (*Raft)(nil)

// NewRaft returns a Raft collector reading src.
func NewRaft(src RaftSource) *Raft {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "raft", name), help, labels, nil)
	}
	return &Raft{
		src:     src,
		term:    d("term", "Current Raft term of this node."),
		commit:  d("commit_index", "Highest log index known to be committed."),
		applied: d("applied_index", "Last log index applied to the state machines."),
		last:    d("last_index", "Last index in this node's log."),
		contact: d("last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader)."),
		servers: d("servers", "Servers in the Raft configuration.", "suffrage"),
		state:   d("state", "1 for the Raft state this node is in.", "state"),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "raft", Name: "leader_changes_total",
			Help: "Leader changes this node observed (including to no leader).",
		}),
		applyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "raft", Name: "apply_duration_seconds",
			Help:    "Time a command proposed on this node took to commit on a quorum and apply here, by command type.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
	}
}

// LeaderChanged counts a leader change; wire it to OnLeaderChange.
func (m *Raft) LeaderChanged(string) { m.leaderChanges.Inc() }

// Applied records one Apply's latency; wire it to OnApply.
func (m *Raft) Applied(typ string, took time.Duration) {
	m.applyLatency.WithLabelValues(typ).Observe(took.Seconds())
}

// Describe implements prometheus.Collector.
func (m *Raft) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.term, m.commit, m.applied, m.last, m.contact, m.servers, m.state} {
		ch <- d
	}
	m.leaderChanges.Describe(ch)
	m.applyLatency.Describe(ch)
}

// raftStates are every value of the state label, so each series always
// exists (a dashboard can sum them).
var raftStates = []string{"leader", "follower", "candidate", "shutdown"}

// Collect implements prometheus.Collector.
func (m *Raft) Collect(ch chan<- prometheus.Metric) {
	in := m.src.Info()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(m.term, float64(in.Term))
	g(m.commit, float64(in.CommitIndex))
	g(m.applied, float64(in.AppliedIndex))
	g(m.last, float64(in.LastIndex))
	contact := 0.0
	if in.State != "leader" && !in.LastContact.IsZero() {
		contact = time.Since(in.LastContact).Seconds()
	}
	g(m.contact, contact)
	for _, s := range raftStates {
		v := 0.0
		if s == in.State {
			v = 1
		}
		g(m.state, v, s)
	}
	voters, nonvoters := 0, 0
	if servers, err := m.src.Servers(); err == nil {
		for _, s := range servers {
			if s.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
	}
	g(m.servers, float64(voters), "voter")
	g(m.servers, float64(nonvoters), "nonvoter")
	m.leaderChanges.Collect(ch)
	m.applyLatency.Collect(ch)
}

// NewDBPool returns a collector of a database pool's statistics
// (sql.DBStats, read at scrape time); name labels the pool as db_name
// ("business" for the application DB).
func NewDBPool(name string, db *sql.DB) prometheus.Collector {
	return collectors.NewDBStatsCollector(db, name)
}

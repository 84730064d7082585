package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Events counts what happens as it happens: requests through the sticky
// front and finished job runs. The capabilities report through hooks
// (proxy.Config.Observe, jobs.Config.OnFinish); the zero value is not
// usable, use NewEvents.
type Events struct {
	frontRequests *prometheus.CounterVec
	frontDuration *prometheus.HistogramVec
	frontRetries  *prometheus.CounterVec
	jobRuns       *prometheus.CounterVec
	jobDuration   *prometheus.HistogramVec
	quorumRefused *prometheus.CounterVec

	// routes caches the series of a route kind (*routeSeries by kind),
	// each made at its first use as WithLabelValues would: FrontRequest
	// runs on every request, and WithLabelValues hashes and looks up its
	// labels each time.
	routes sync.Map
}

// routeSeries are the front's series of one route kind, resolved once.
type routeSeries struct {
	kind     string
	requests [6]atomic.Pointer[prometheus.Counter] // by status/100, each made at its first request
	duration prometheus.Observer
}

// request returns the requests_total series of the status class c
// (status/100).
func (s *routeSeries) request(e *Events, c int) prometheus.Counter {
	if c < 1 || c >= len(s.requests) {
		return e.frontRequests.WithLabelValues(s.kind, strconv.Itoa(c)+"xx")
	}
	if p := s.requests[c].Load(); p != nil {
		return *p
	}
	ctr := e.frontRequests.WithLabelValues(s.kind, strconv.Itoa(c)+"xx")
	s.requests[c].Store(&ctr)
	return ctr
}

func (e *Events) route(kind string) *routeSeries {
	if s, ok := e.routes.Load(kind); ok {
		return s.(*routeSeries)
	}
	s := &routeSeries{kind: kind, duration: e.frontDuration.WithLabelValues(kind)}
	got, _ := e.routes.LoadOrStore(kind, s)
	return got.(*routeSeries)
}

// NewEvents returns the collectors, not yet registered.
func NewEvents() *Events {
	return &Events{
		frontRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "front", Name: "requests_total",
			Help: "Application requests by route kind (local, forwarded, failover, balanced, hop) and status class.",
		}, []string{"route", "code"}),
		frontDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "front", Name: "request_duration_seconds",
			Help:    "Duration of application requests by route kind.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		frontRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "front", Name: "retries_total",
			Help: "Extra tries of requests whose first upstream failed, by route kind.",
		}, []string{"route"}),
		jobRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "jobs", Name: "runs_total",
			Help: "Job runs this node executed, by job and final status.",
		}, []string{"job", "status"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "jobs", Name: "run_duration_seconds",
			Help:    "Duration of job runs this node executed.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"job"}),
		quorumRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "cluster", Name: "quorum_refused_total",
			Help: "Requests answered at once or cut short because this node could not reach a quorum, by route kind (app, api, redis, ...) and what they waited for (catch-up, read index, apply TYPE).",
		}, []string{"route", "wait"}),
	}
}

// InitRoutes creates the front's retry counters of the given route kinds
// at zero, so the series exist (and rate() and alerts see 0) before the
// first retry.
func (e *Events) InitRoutes(kinds ...string) {
	for _, k := range kinds {
		e.frontRetries.WithLabelValues(k)
	}
}

// FrontRequest records one application request.
func (e *Events) FrontRequest(kind string, status int, took time.Duration, tries int) {
	s := e.route(kind)
	s.request(e, status/100).Inc()
	s.duration.Observe(took.Seconds())
	if tries > 1 {
		e.frontRetries.WithLabelValues(kind).Add(float64(tries - 1)) // rare
	}
}

// JobFinished records one finished job run.
func (e *Events) JobFinished(job, status string, took time.Duration) {
	e.jobRuns.WithLabelValues(job, status).Inc()
	e.jobDuration.WithLabelValues(job).Observe(took.Seconds())
}

// QuorumRefused records one wait refused for lack of quorum
// (raft.Cluster.OnRefused).
func (e *Events) QuorumRefused(route, wait string) {
	e.quorumRefused.WithLabelValues(route, wait).Inc()
}

// Describe implements prometheus.Collector.
func (e *Events) Describe(ch chan<- *prometheus.Desc) {
	e.frontRequests.Describe(ch)
	e.frontDuration.Describe(ch)
	e.frontRetries.Describe(ch)
	e.jobRuns.Describe(ch)
	e.jobDuration.Describe(ch)
	e.quorumRefused.Describe(ch)
}

// Collect implements prometheus.Collector.
func (e *Events) Collect(ch chan<- prometheus.Metric) {
	e.frontRequests.Collect(ch)
	e.frontDuration.Collect(ch)
	e.frontRetries.Collect(ch)
	e.jobRuns.Collect(ch)
	e.jobDuration.Collect(ch)
	e.quorumRefused.Collect(ch)
}

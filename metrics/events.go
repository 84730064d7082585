package metrics

import (
	"strconv"
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
	e.frontRequests.WithLabelValues(kind, strconv.Itoa(status/100)+"xx").Inc()
	e.frontDuration.WithLabelValues(kind).Observe(took.Seconds())
	if tries > 1 {
		e.frontRetries.WithLabelValues(kind).Add(float64(tries - 1))
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

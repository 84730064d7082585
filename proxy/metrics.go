package proxy

import "github.com/cohortserver/cohort/metrics"

// Collector returns the collector of the front's figures
// (cohort_front_*), read at scrape time.
func (f *Front) Collector() *metrics.Func {
	return metrics.NewStats("front", f.InFlight,
		metrics.Gauge("inflight_requests", "Application requests in flight on this node's front.", func(n int64) float64 { return float64(n) }),
	)
}

package sessions

import "github.com/cohortserver/cohort/metrics"

// Collector returns the collector of this node's session figures
// (cohort_sessions_*), read from Stats at scrape time.
func (m *Manager) Collector() *metrics.Func {
	n := func(v int) float64 { return float64(v) }
	return metrics.NewStats("sessions", m.Stats,
		metrics.Gauge("sessions", "Sessions this node holds (the replicated set).", func(s Stats) float64 { return n(s.Total) }),
		metrics.Gauge("in_memory", "Sessions held in memory.", func(s Stats) float64 { return n(s.InMemory) }),
		metrics.Gauge("passivated", "Sessions passivated to disk.", func(s Stats) float64 { return n(s.Passivated) }),
		metrics.Gauge("bytes", "Bytes of session data.", func(s Stats) float64 { return float64(s.Bytes) }),
		metrics.Gauge("memory_bytes", "Bytes of session data held in memory.", func(s Stats) float64 { return float64(s.MemBytes) }),
		metrics.Gauge("principals", "Distinct signed-in users.", func(s Stats) float64 { return n(s.Principals) }),
		metrics.Counter("applied_entries_total", "Session log entries applied on this node.", func(s Stats) float64 { return float64(s.Applied) }),
		metrics.Counter("commits_total", "Session changes this node proposed.", func(s Stats) float64 { return float64(s.Commits) }),
		metrics.Counter("touches_total", "Session expiry extensions this node proposed.", func(s Stats) float64 { return float64(s.Touches) }),
		metrics.Counter("sweeps_total", "Expiry sweeps this node proposed.", func(s Stats) float64 { return float64(s.Sweeps) }),
		metrics.Counter("catch_ups_total", "Requests that waited for this node to catch up with a session written elsewhere.", func(s Stats) float64 { return float64(s.CatchUps) }),
	)
}

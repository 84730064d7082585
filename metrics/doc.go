// Package metrics owns a node's Prometheus registry and the collectors of
// the parts every node has: Raft (term, state, leader changes, commit and
// applied index, last contact, commit latency), the Go runtime and the
// process, and database pools (sql.DBStats).
//
// Each node has its own registry — never prometheus.DefaultRegisterer — so
// several nodes can live in one process (tests) and their figures never
// mix. Other packages register their own collectors through
// Registry.Register; the node serves the whole registry at
// /_cohort/metrics behind the admin token.
//
// # How a package exports its figures
//
// A package that keeps its own counts (sessions, files, jobs, the front
// in proxy; and every new capability the same way) exports a collector
// built with NewStats, in a metrics.go beside the counts:
//
//	func (s *Store) Collector() *metrics.Func {
//		return metrics.NewStats("files", s.Status,
//			metrics.Gauge("files", "Files in the shared tree.",
//				func(st Status) float64 { return float64(st.Usage.Files) }),
//			metrics.Counter("repaired_total", "Corrupt blobs replaced since start.",
//				func(st Status) float64 { return float64(st.Sync.Repaired) }),
//		)
//	}
//
// The series is cohort_<subsystem>_<name>. Each name is written once, with
// the function that reads it from one snapshot (s.Status) taken per scrape;
// labelled figures use GaugeVec. node registers the collector in
// registerCapabilityMetrics (node/ops.go), one line per capability. The
// package imports metrics, never Prometheus itself. A figure emitted
// through the lower-level Func without being declared fails the scrape
// loudly (ErrUndeclared: Gather returns it, the handler logs it and counts
// it in promhttp_metric_handler_errors_total). A figure an operator should
// alert on also gets a panel in ops/grafana (node's dashboard test checks
// every panel's series exists).
//
// It does not own what it measures: collectors read the figures at scrape
// time through small interfaces (RaftSource, a DBStats func), so scraping
// never blocks the measured code.
package metrics

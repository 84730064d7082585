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
// It does not own what it measures: collectors read the figures at scrape
// time through small interfaces (RaftSource, a DBStats func), so scraping
// never blocks the measured code.
package metrics

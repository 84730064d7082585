package files

import "github.com/cohortserver/cohort/metrics"

// Collector returns the collector of this node's shared-files figures
// (cohort_files_*), read from Status at scrape time.
func (s *Store) Collector() *metrics.Func {
	return metrics.NewStats("files", s.Status,
		metrics.Gauge("files", "Files in the shared tree.", func(st Status) float64 { return float64(st.Usage.Files) }),
		metrics.Gauge("bytes", "Bytes of the files in the shared tree.", func(st Status) float64 { return float64(st.Usage.Bytes) }),
		metrics.Gauge("tombstones", "Deleted files remembered for replication.", func(st Status) float64 { return float64(st.Usage.Tombstones) }),
		metrics.Gauge("catchup_running", "1 while this node copies blobs it lacks.", func(st Status) float64 { return metrics.Bool(st.Sync.Running) }),
		metrics.Gauge("catchup_missing_files", "Blobs this node lacked when the current catch-up pass started.", func(st Status) float64 { return float64(st.Sync.MissingFiles) }),
		metrics.Gauge("catchup_done_files", "Blobs copied in the current catch-up pass.", func(st Status) float64 { return float64(st.Sync.DoneFiles) }),
		metrics.Gauge("catchup_failed_files", "Blobs the current catch-up pass failed to copy.", func(st Status) float64 { return float64(st.Sync.FailedFiles) }),
		metrics.Counter("repaired_total", "Corrupt blobs replaced since start.", func(st Status) float64 { return float64(st.Sync.Repaired) }),
	)
}

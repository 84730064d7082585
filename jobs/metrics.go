package jobs

import (
	"time"

	"github.com/cohortserver/cohort/metrics"
)

// jobsSnap is what one scrape reads: every job and the time of the read.
type jobsSnap struct {
	jobs []JobStatus
	now  time.Time
}

// perJob declares a gauge labelled by job, read from each job that has a
// value for it (ok false: the job reports none).
func perJob(name, help string, value func(j JobStatus, now time.Time) (float64, bool)) metrics.Stat[jobsSnap] {
	return metrics.GaugeVec(name, help, []string{"job"}, func(s jobsSnap, emit func(float64, ...string)) {
		for _, j := range s.jobs {
			if v, ok := value(j, s.now); ok {
				emit(v, j.Name)
			}
		}
	})
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// Collector returns the collector of the jobs' figures (cohort_jobs_*,
// labelled by job), read from Jobs at scrape time.
func (r *Runner) Collector() *metrics.Func {
	read := func() jobsSnap { return jobsSnap{jobs: r.Jobs(), now: time.Now()} }
	return metrics.NewStats("jobs", read,
		perJob("suspended", "1 when the job is suspended.", func(j JobStatus, _ time.Time) (float64, bool) {
			return metrics.Bool(j.Suspended), true
		}),
		perJob("running", "Runs of the job in progress.", func(j JobStatus, _ time.Time) (float64, bool) {
			return float64(len(j.Running)), true
		}),
		perJob("next_run_timestamp_seconds", "When the job runs next (Unix time).", func(j JobStatus, _ time.Time) (float64, bool) {
			return unixSeconds(j.NextRun), !j.NextRun.IsZero()
		}),
		perJob("last_run_timestamp_seconds", "When the job's last run started (Unix time).", func(j JobStatus, _ time.Time) (float64, bool) {
			if j.LastRun == nil || j.LastRun.StartedAt.IsZero() {
				return 0, false
			}
			return unixSeconds(j.LastRun.StartedAt), true
		}),
		perJob("last_run_duration_seconds", "How long the job's last run took.", func(j JobStatus, _ time.Time) (float64, bool) {
			if j.LastRun == nil {
				return 0, false
			}
			return float64(j.LastRun.DurationMS) / 1000, true
		}),
		perJob("last_run_succeeded", "1 when the job's last run succeeded, 0 when it did not.", func(j JobStatus, _ time.Time) (float64, bool) {
			if j.LastRun == nil {
				return 0, false
			}
			return metrics.Bool(j.LastRun.Status == StatusSucceeded), true
		}),
		perJob("schedule_lag_seconds", "How far the job's next run is overdue (0 when on time).", func(j JobStatus, now time.Time) (float64, bool) {
			if j.NextRun.IsZero() {
				return 0, false
			}
			if !j.Suspended && now.After(j.NextRun) {
				return now.Sub(j.NextRun).Seconds(), true
			}
			return 0, true
		}),
	)
}

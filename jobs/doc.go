// Package jobs runs scheduled jobs on the Raft leader only, each scheduled
// occurrence exactly once across the cluster, and keeps their bookkeeping
// in the replicated log.
//
// It owns: schedules (cron with 5 or 6 fields, @descriptors, @every, an
// IANA time zone per job with DST handled), the scheduler that runs while
// this node leads (started from raft.Cluster.OnLeader after Barrier,
// stopped and every run's context cancelled the moment leadership is lost),
// the "jobs" state machine (run started / finished / misfired records,
// suspend, run-now requests, history), fencing tokens, the HTTP and command
// executors of config-declared jobs, and the jobs admin API handlers.
//
// It does not own: leader election (package raft), what a job does to the
// business database (the job's own code; docs/jobs.md shows the fencing
// guard), or the broadcast (package broadcast).
//
// See DESIGN.md for the invariants and what happens on leader change.
package jobs

// Package node owns the wiring of one cohort process and its admin surface.
//
// New is the single composition root: it builds the Raft cluster member,
// the member table and every capability (sessions, files, jobs, the
// application and the sticky front) through one setup function per
// capability, each in its own file, and does no I/O. Start opens the data
// dir, the cluster port and the public front, then bootstraps or joins;
// Close shuts down gracefully in reverse order (a leader hands over
// leadership first); Abort stops abruptly for crash tests.
//
// The public front serves /_cohort/health, /_cohort/ready, /_cohort/status
// and the admin API under /_cohort/api/ (bearer token, compared in constant
// time, JSON errors), and the application routes behind the sessions
// middleware and the sticky front. testcluster builds nodes through New,
// never by hand.
package node

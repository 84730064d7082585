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
//
// One piece of replicated state lives here: the placements of the
// --singleton-nodes singletons (state machine "singletons", command
// singleton.assign, node/singletonplace.go). The leader commits
// name -> {node, token = log index}; an assignment names the token it
// replaces and is refused when that is no longer current, so concurrent
// leaders cannot both move a singleton. The holder runs it only after a
// ReadIndex confirmed its placement and while it hears from a leader
// within --singleton-lease; the leader moves it off a silent holder only
// after 2 × lease + stop grace (docs/jobs.md).
package node

package raft

// stageFn observes the steps of the write path on one node: the stage and
// the log index it concerns (0 when not known yet). It is a test seam for
// the per-stage timing of a write (TestWriteStages); nil in production,
// where each call site costs one nil check.
type stageFn func(stage string, index uint64)

// Stages of the write path, in the order one write passes them.
const (
	stageApply       = "apply"        // Cluster.Apply entered
	stageForward     = "forward"      // a follower sends the command to the leader
	stageLeaderRecv  = "leader.recv"  // the leader received a forwarded command
	stagePropose     = "propose"      // raft.Apply called on the leader
	stageStoreStart  = "store.start"  // a log write (index = first entry) starts
	stageStoreEnd    = "store.end"    // that log write is durable (index = last entry)
	stageFSM         = "fsm"          // the state machines applied index
	stageProposed    = "proposed"     // the leader's raft.Apply future answered
	stageLeaderReply = "leader.reply" // the leader answers the forwarded command
	stageForwarded   = "forwarded"    // the follower has the leader's answer
	stageApplied     = "applied"      // Cluster.Apply returns

	// Not a stage of a write: the stable store is about to record a
	// term or vote (index = the value).
	stageStableSet = "stable.set"
)

// mark reports a stage to the test seam, if one is set.
func (f stageFn) mark(stage string, index uint64) {
	if f != nil {
		f(stage, index)
	}
}

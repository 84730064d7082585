package raft

import "time"

// OnApply registers fn to be called after every Apply made through this
// node returns, with the command type and how long the proposer waited
// (commit on a quorum plus apply on this node, forwarding included).
// Metrics use it for commit latency. Only one function is kept; call it
// before Start. fn must be cheap: it runs on the proposer's goroutine.
func (c *Cluster) OnApply(fn func(typ string, took time.Duration)) {
	c.applyFn = fn
}

// Package membership owns the replicated member table: for every node its
// cluster and HTTP addresses, its state (active, draining, disabled) and
// version, applied through Raft so every node agrees. It also keeps this
// node's local view of the others' liveness (probes over the cluster port
// every 250 ms to each peer that did not answer this node's Raft traffic in
// that time, plus failures reported by callers) and derives the opaque
// route tags that session cookies carry (an HMAC of the node id under the
// cluster key, so a cookie reveals nothing of the topology).
//
// Raft's own configuration stays the source of truth for who votes; this
// table adds what Raft does not know.
package membership

// Package broadcast is the cluster broadcast: Publish commits a message to
// the Raft log from any node, and every node delivers it once, in log
// order, to its local subscribers, including nodes that were down when it
// was published (they deliver it when they catch up).
//
// It owns: the "broadcast" state machine (the last 24 h of messages and
// the replicated view of member events), the per-node delivery queue and
// its durable cursor (DATA_DIR/broadcast.cursor) that keeps a restart from
// re-delivering or missing messages, and the reserved topics
// cohort.members (member joined, left, failed, recovered, state changed,
// published by the leader), cohort.leader (published by each new leader
// through the log) and cohort.leader.observed (local, unreplicated
// observations of leader changes). cohort.console.login-failures is
// reserved for package console (PublishSystem), which shares failed
// logins on it; the app's events skip it (Internal).
//
// It does not own: the member table or failure detection (package
// membership), Raft (package raft), or the admin endpoints (package node
// mounts them).
package broadcast

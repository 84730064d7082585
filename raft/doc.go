// Package raft owns consensus and the cluster port.
//
// It wraps hashicorp/raft (the log in walstore, one fdatasync per append;
// the term and vote in raft-boltdb/v2 on bbolt; file snapshots) and adds
// what hashicorp/raft leaves to its user:
//
//   - One cluster port for Raft and every node-to-node exchange. Each
//     connection proves the shared cluster key with an HMAC
//     challenge-response (optionally inside mutual TLS) before a single byte
//     reaches Raft or the internal HTTP server; then one channel byte picks
//     Raft, HTTP, forwarded commands or leader calls (Transport).
//   - A versioned command envelope stamped by the leader (type, origin node,
//     time) and an FSM router: packages Register the command types they own
//     and their section of the single snapshot (StateMachine).
//   - Apply from any node: followers forward to the leader over the cluster
//     port, and Apply returns only after the serving node applied the index
//     (read-your-writes where the request was served). With
//     Config.FollowerCatchUp (node turns it on) a follower applies from its
//     own log as soon as the leader answers, without waiting for Raft's
//     next append. Commands travel multiplexed on one connection per
//     leader (forward.go), as do leader calls (CallLeader,
//     HandleLeaderCall: a follower's read index, the commit index, a
//     package's own questions), with HTTP kept for older leaders.
//   - Apply leases (LeaseCommands, LeaseHeld): the leader acknowledges a
//     leased command only once every follower holding a lease applied it,
//     so such a follower answers reads of that state from its own
//     (close-to-open, not linearizable: the files mount uses them).
//   - Settle: after ErrOutcomeUnknown, a read index that first waits on
//     the leader for every command this node sent on the forward
//     connection the outcome was lost on (closing it when a command may
//     still be on its way), so a command not in the local state afterwards
//     never lands (settle.go).
//   - Leadership for subscribers (OnLeader): from a drained, buffered
//     NotifyCh (never LeaderCh, which drops transitions), after a Barrier,
//     with a context cancelled the moment leadership is lost.
//   - Join, remove and leadership transfer forwarded to the leader;
//     leadership handed over on graceful Close; crash-like Abort for tests.
//   - A fault seam (Faults) that cuts links between nodes for partition
//     tests.
//   - Knowing when this node is cut off from its quorum (QuorumContact,
//     CutOff) and bounding a request's waits on the cluster by one budget
//     (Bounded, Within; Apply and ReadIndex honour it): a cut-off node
//     answers at once with a *QuorumError (ErrNoQuorum) instead of waiting
//     for a leader. Other listeners (Redis, memcached, the files mount)
//     call CutOff, or Bounded once per command, and answer such errors
//     with their protocol's retryable error; see DESIGN.md.
//
// It does not own what the commands mean (sessions, files, jobs, members
// do), nor the public HTTP front (node and proxy do). See DESIGN.md.
package raft

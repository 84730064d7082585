// Package kv is cohort's replicated key-value store and the two wire
// protocols that serve it: Redis' RESP (RESP2 and RESP3) and memcached's
// text protocol, so that unmodified applications keep their sessions and
// small shared state in the cluster with their existing clients.
//
// It owns the keyspace (strings with counters, hashes, sets, per-key
// expiry in the leader's clock) as one state machine registered with the
// raft FSM router under the command type "kv.batch"; the group commit that
// packs concurrent writes into Raft entries; the linearizable read path
// (the leader's read lease, else a shared read index); the leader's
// background expiry; the RESP server (tidwall/redcon parses the wire) and
// the memcached text server (its parser is here).
//
// It does not own Raft, node-to-node transport, authentication of the
// cluster, or the listeners' flags (package config) and their wiring and
// metrics (package node). See DESIGN.md for the invariants.
package kv

// Package files is cohort's shared directory: a tree of files written
// through any node, readable on every node right after the write is
// acknowledged, surviving the loss of any one node (of three), with no NFS.
//
// It owns:
//   - the replicated manifest (path → size, SHA-256, mode, mtime, version,
//     writer, tombstone), a Raft state machine registered as "files";
//   - the content-addressed blob store under <data-dir>/files on each node;
//   - the node-to-node blob exchange on the cluster port
//     (/_internal/files/...);
//   - catch-up, the scrubber, the garbage collector and the mirror
//     directory, which keep the local disk in step with the manifest;
//   - the Go API (Store: Create, Writer, Stage and CreateStaged, Open,
//     Stat, List, Remove, Rename, Watch) and the HTTP handlers node mounts
//     under /_cohort/api/files.
//
// It does not own: consensus and the cluster port (package raft), member
// addresses and liveness (membership), authentication of the admin API and
// route registration (node), flags (config), or any application's upload
// routes (the demo uses the Go API).
//
// See DESIGN.md for the invariants and what happens on failures.
package files

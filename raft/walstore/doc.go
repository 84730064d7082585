// Package walstore is a Raft log store (hashicorp/raft's LogStore) on
// preallocated, append-only segment files, whose append costs one
// fdatasync per batch.
//
// It owns the Raft log entries of one node on disk: their framing (length
// and CRC32C per record), the segment files, the durable first index and
// an in-memory offset index for reads by index. A Store is safe for
// concurrent use: hashicorp/raft reads (GetLog) from its replication and
// apply goroutines while its main loop appends.
//
// It does not own the stable store (current term, vote: they stay in
// bbolt), snapshots, or what the entries mean. It does not cache decoded
// entries: hashicorp/raft's LogCache in front of it serves the newest.
//
// Appends must be contiguous: StoreLogs takes entries whose indexes follow
// the last one (any first index into an empty store). The Store says so to
// hashicorp/raft through IsMonotonic, so that after installing or restoring
// a snapshot Raft empties the log instead of leaving a gap; any wrapper in
// front of it must forward IsMonotonic.
//
// MigrateFrom copies an existing log store (raft-boltdb) into a Store, for
// data dirs written before this package existed; Upgrade does the whole
// switch of a data dir (copy into a temporary directory, then rename).
//
// See DESIGN.md for the on-disk format, what makes an append durable with
// one fdatasync, and how recovery tells a torn write from corruption.
package walstore

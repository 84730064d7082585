// Package testcluster runs real cohort clusters inside a test process.
//
// New starts N nodes through node.New, exactly as `cohort serve` does, on
// 127.0.0.1 ports with data in the test's temp dir and logs in t.Log.
// It offers WaitLeader and WaitFor (bounded polls, never sleeps to wait for a
// state), Kill (abrupt, like kill -9), Stop (graceful), Restart (same data
// dir and ports), AddNode (--join), and Partition, Isolate and Heal through
// the cluster transport's fault seam. WithDiskLimit mounts a size-limited
// tmpfs at each node's data dir (root only), on which FillDisk and FreeDisk
// make the disk full (real ENOSPC) and free again. KV is a tiny replicated
// state machine for tests that need to count acknowledged writes.
package testcluster

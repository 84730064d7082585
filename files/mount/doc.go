// Package mount serves the shared files tree (package files) as a FUSE
// file system at --files-mount, so any program can read and write it with
// open, write, rename and close, with NFS's close-to-open promise: once
// close(2) or fsync(2) of a written file returns on one node, an open(2)
// on any node sees the new content, and no reader ever sees a partial file.
//
// It owns: the FUSE server and its lifecycle (mount after the node caught
// up, unmount at Close, clearing a stale mount left by a killed process),
// the translation of file system calls into the store's operations and of
// its errors into errno values, the temp files of handles open for writing,
// the invalidation of the kernel's caches when a change is applied on this
// node, which version's pages the kernel's page cache of a file may hold
// (pagecache.go), the hash check of a large file while it is read
// (readcheck.go), and FUSE passthrough of known good large files, with a
// new inode for an open that conflicts with it (passthrough.go).
//
// It does not own: the replicated manifest, the blobs and their
// replication (package files), flags (config) or the wiring and readiness
// (node).
//
// The mount is Linux only; on other systems (mount_other.go) the package
// builds so that the rest of cohort does, and Prepare and Start fail with
// ErrNoFUSE.
//
// See DESIGN.md for the consistency model, how directories are
// represented and what is not supported.
package mount

//go:build linux

package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// inlineSeq numbers the temp files of writeInline; with the process id
// (inlinePrefix) it makes their names unique without a random name and a
// retry.
var (
	inlineSeq    atomic.Uint64
	inlinePrefix = "inline-" + strconv.Itoa(os.Getpid()) + "-"
)

// writeInline stores a small blob carried in the Raft log, without fsync:
// the log is its durable copy until the next snapshot (see syncAll). It
// reports whether it wrote anything.
//
// Every node runs it for every small file committed, so it is kept to four
// system calls: create a temp file, write, close, and a rename that never
// replaces a blob already there (renameat2 RENAME_NOREPLACE: the one there
// has the same content and keeps its good-blob mark). Before, a stat of the
// blob, os.CreateTemp (an open and four fcntl to set up an
// *os.File) and os.Rename (an lstat of the target first) made ten; the
// whole took a sixth of the CPU the three nodes spent on 4 KiB files
// written through the mount (files/mount/DESIGN.md, Performance).
func (b *blobStore) writeInline(sum string, data []byte) (bool, error) {
	if err := b.shard(sum); err != nil {
		return false, err
	}
	tmp, err := writeTemp(filepath.Join(b.dir, "tmp"), data)
	if err != nil {
		return false, fmt.Errorf("store blob %s: %w", sum[:12], err)
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, b.path(sum), unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: the same content
		// replaces the blob.
		err = unix.Rename(tmp, b.path(sum))
	}
	if err != nil {
		_ = unix.Unlink(tmp)
		if errors.Is(err, unix.EEXIST) {
			return false, nil
		}
		return false, fmt.Errorf("store blob %s: %w", sum[:12], err)
	}
	return true, nil
}

// writeTemp creates a new file in dir holding data and returns its name.
func writeTemp(dir string, data []byte) (string, error) {
	for {
		name := filepath.Join(dir, inlinePrefix+strconv.FormatUint(inlineSeq.Add(1), 36))
		fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue // left by an earlier process with the same id
		}
		if err != nil {
			return "", fmt.Errorf("create %s: %w", name, err)
		}
		for rest := data; len(rest) > 0 && err == nil; {
			var n int
			n, err = unix.Write(fd, rest)
			if errors.Is(err, unix.EINTR) {
				err = nil
			}
			rest = rest[max(n, 0):]
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			_ = unix.Unlink(name)
			return "", fmt.Errorf("write %s: %w", name, err)
		}
		return name, nil
	}
}

//go:build !linux

package files

import (
	"os"
	"path/filepath"
)

// writeInline stores a small blob carried in the Raft log, without fsync:
// the log is its durable copy until the next snapshot (see syncAll). It
// reports whether it wrote anything.
func (b *blobStore) writeInline(sum string, data []byte) (bool, error) {
	dst := b.path(sum)
	if _, err := os.Stat(dst); err == nil {
		return false, nil
	}
	if err := b.shard(sum); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "inline-*")
	if err != nil {
		return false, err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return false, err
	}
	return true, nil
}

//go:build linux

package walstore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// preallocate gives f size bytes of allocated, zero-reading blocks, so
// writes within them change no metadata a later fdatasync must write (the
// file size above all) and cannot fail for want of space. Where the file
// system cannot fallocate it falls back to a sparse file: appends then
// allocate as they go and may fail with ENOSPC, which StoreLogs handles.
func preallocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = f.Truncate(size)
	}
	if err != nil {
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
	return nil
}

// datasync flushes f's data and the metadata needed to read it back.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
		return nil
	}
}

// nextData returns the offset of the first byte at or after off that may
// hold data (not a hole, not an unwritten preallocated extent), or end
// when there is none before end. Where the file system cannot tell, it
// returns off: everything counts as data.
func nextData(f *os.File, off, end int64) int64 {
	d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return end
	case err != nil:
		return off
	}
	return min(d, end)
}

// nextHole returns the end of the data region that starts at off (at most
// end).
func nextHole(f *os.File, off, end int64) int64 {
	h, err := unix.Seek(int(f.Fd()), off, unix.SEEK_HOLE)
	if err != nil || h <= off {
		return end
	}
	return min(h, end)
}

// lockFile takes an exclusive advisory lock on f for this open file, or
// fails with ErrLocked when another holds one.
func lockFile(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%w: %s is locked by another open store", ErrLocked, f.Name())
	}
	if err != nil {
		return &os.PathError{Op: "flock", Path: f.Name(), Err: err}
	}
	return nil
}

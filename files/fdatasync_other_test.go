//go:build !linux

package files_test

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

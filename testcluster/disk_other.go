//go:build !linux

package testcluster

import "errors"

// Disk limits are tmpfs mounts: Linux only.

func mountTmpfs(string, int64) error { return errors.ErrUnsupported }

func unmountTmpfs(string, bool) error { return errors.ErrUnsupported }

func freeBytes(string) (int64, error) { return 0, errors.ErrUnsupported }

//go:build !unix

package proxy

import "time"

// processCPU is not measured on this platform; load counts in-flight
// requests only.
func processCPU() (time.Duration, bool) { return 0, false }

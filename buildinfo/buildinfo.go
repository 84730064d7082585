package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version; "dev" for an unstamped build.
var Version = "dev"

// Commit is the source commit; read from the Go build info when unstamped.
var Commit = ""

// String returns "cohort VERSION (commit COMMIT, GOVERSION)".
func String() string {
	return fmt.Sprintf("cohort %s (commit %s, %s %s/%s)", Version, commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func commit() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

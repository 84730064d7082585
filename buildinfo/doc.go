// Package buildinfo holds the version and commit stamped into the binary
// at link time:
//
//	go build -ldflags "-X github.com/cohortserver/cohort/buildinfo.Version=v1.2.3 -X github.com/cohortserver/cohort/buildinfo.Commit=abc123"
package buildinfo

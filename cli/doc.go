// Package cli owns the command line: `cohort serve`, `dev`, `status`,
// `version` and the operator commands, with exit codes scripts can trust
// (ExitOK, ExitFailure, ExitUsage, ExitNotReady). Commands other than serve
// and dev talk to a node's admin API over HTTP.
package cli

package testcluster

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyNoLeaks runs a package's tests and fails them if goroutines are
// left behind: every node a test started must have stopped everything it
// started. Use it as the package's TestMain:
//
//	func TestMain(m *testing.M) { testcluster.VerifyNoLeaks(m) }
func VerifyNoLeaks(m *testing.M, extra ...goleak.Option) {
	opts := append([]goleak.Option{
		// Keep-alive connections of the tests' own HTTP clients.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// A server connection closed after an answer whose request body
		// was not read (a 413) lingers a fixed 500 ms so the client sees
		// the answer before a reset; goleak's retries end sooner.
		goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"),
		// hashicorp/raft drops the futures of commands queued for the state
		// machine when it shuts down and never answers them; the goroutine
		// raft.Cluster.applyLocal waits on such a future with stays blocked
		// (the caller itself returned at shutdown). It happens only when a
		// node stops while a command is committed but not applied: once per
		// hundreds of kills in the linearizability runs.
		goleak.IgnoreAnyFunction("github.com/cohortserver/cohort/raft.(*Cluster).applyLocal.func1"),
		// Likewise a leadership verification queued just before raft shut
		// down is never answered; raft's verifyLeader leaves its waiter
		// behind once the read index's context ends.
		goleak.IgnoreAnyFunction("github.com/cohortserver/cohort/raft.verifyLeader.func1"),
	}, extra...)
	goleak.VerifyTestMain(m, opts...)
}

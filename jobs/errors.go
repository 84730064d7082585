package jobs

import "errors"

// Errors of the jobs package. Those refused by the replicated state carry a
// code (see raft.CodedError) so they survive forwarding to the leader.
var (
	// ErrBadSchedule is wrapped by every schedule parse error.
	ErrBadSchedule = errors.New("invalid schedule")
	// ErrUnknownJob is returned for a job name that is not registered.
	ErrUnknownJob = errors.New("no such job")
	// ErrDuplicateRun is returned when a run with the same key was already
	// started, finished or recorded as misfired.
	ErrDuplicateRun = errors.New("a run with this key already exists")
	// ErrBusy is returned when concurrency forbid refuses an occurrence
	// because the previous run still runs.
	ErrBusy = errors.New("the previous run of this job is still running (concurrency forbid)")
	// ErrStaleFence is returned when a run's fencing token is no longer the
	// current one: a newer leader restarted or finished it.
	ErrStaleFence = errors.New("stale fencing token: the run was taken over or finished")
	// ErrSuspended is returned when a suspended job is asked to run on schedule.
	ErrSuspended = errors.New("job is suspended")
	// ErrStarted is returned by Register after Start.
	ErrStarted = errors.New("jobs runner already started")
	// ErrNotLeader is returned by Run.StillValid when this node no longer leads.
	ErrNotLeader = errors.New("this node is no longer the leader")
)

// codedError gives a sentinel a code that survives forwarding.
type codedError struct {
	code string
	err  error
	msg  string
}

func (e *codedError) Error() string     { return e.msg }
func (e *codedError) Unwrap() error     { return e.err }
func (e *codedError) ApplyCode() string { return e.code }

var codes = map[string]error{
	"jobs.duplicate": ErrDuplicateRun,
	"jobs.busy":      ErrBusy,
	"jobs.stale":     ErrStaleFence,
	"jobs.suspended": ErrSuspended,
}

func coded(code, msg string) error {
	return &codedError{code: code, err: codes[code], msg: msg}
}

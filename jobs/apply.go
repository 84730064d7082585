package jobs

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/cohortserver/cohort/raft"
)

// applyFunc applies one decoded entry. It returns the result bytes, the job
// it touched (to wake its scheduler; "" for none) and the application error.
type applyFunc func(s *state, e raft.Entry) ([]byte, string, error)

// handle binds one command's apply method to the one decode step every
// command shares (etcd's apply/uber_applier.go has the same shape).
func handle[C any](apply func(s *state, e raft.Entry, c C) ([]byte, string, error)) applyFunc {
	return func(s *state, e raft.Entry) ([]byte, string, error) {
		var c C
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			return nil, "", fmt.Errorf("decode %s: %w", e.Type, err)
		}
		return apply(s, e, c)
	}
}

// appliers maps each command type to its apply method.
var appliers = map[string]applyFunc{
	cmdInit:    handle((*state).applyInit),
	cmdStart:   handle((*state).applyStart),
	cmdRestart: handle((*state).applyRestart),
	cmdFinish:  handle((*state).applyFinish),
	cmdMisfire: handle((*state).applyMisfire),
	cmdSuspend: handle((*state).applySuspend),
	cmdRequest: handle((*state).applyRequest),
	cmdCheck:   handle((*state).applyCheck),
}

func (s *state) apply(e raft.Entry) ([]byte, string, error) {
	fn, ok := appliers[e.Type]
	if !ok {
		return nil, "", fmt.Errorf("jobs: unknown command type %q", e.Type)
	}
	return fn(s, e)
}

func (s *state) applyInit(_ raft.Entry, c initCmd) ([]byte, string, error) {
	j := s.job(c.Job)
	if j.Cursor.IsZero() {
		j.Cursor = c.Cursor
	}
	return nil, c.Job, nil
}

func (s *state) applyStart(e raft.Entry, c startCmd) ([]byte, string, error) {
	j := s.job(c.Job)
	rec := RunRecord{Job: c.Job, ScheduledAt: c.ScheduledAt, Fence: Fence{e.Term, e.Index},
		Node: e.Origin, StartedAt: e.Time, Status: StatusRunning}
	if c.Request != 0 {
		i := slices.Index(j.Pending, c.Request)
		if i < 0 {
			return nil, c.Job, coded("jobs.duplicate", fmt.Sprintf("run-now request %d of job %s was already served: %s", c.Request, c.Job, ErrDuplicateRun))
		}
		j.Pending = slices.Delete(j.Pending, i, i+1)
		rec.Key, rec.Manual = manualKey(c.Job, c.Request), true
	} else {
		rec.Key = RunKey(c.Job, c.ScheduledAt)
		if !c.ScheduledAt.After(j.Cursor) {
			return nil, c.Job, coded("jobs.duplicate", fmt.Sprintf("run %s: %s", rec.Key, ErrDuplicateRun))
		}
		if j.Suspended {
			return nil, c.Job, coded("jobs.suspended", fmt.Sprintf("job %s: %s", c.Job, ErrSuspended))
		}
		j.Cursor = c.ScheduledAt
	}
	if _, dup := j.Active[rec.Key]; dup {
		return nil, c.Job, coded("jobs.duplicate", fmt.Sprintf("run %s: %s", rec.Key, ErrDuplicateRun))
	}
	if c.Concurrency == ConcurrencyForbid && len(j.Active) > 0 {
		rec.Status, rec.Error, rec.FinishedAt = StatusSkipped, ErrBusy.Error(), e.Time
		addHistory(j, rec, c.Keep)
		return nil, c.Job, coded("jobs.busy", fmt.Sprintf("run %s: %s", rec.Key, ErrBusy))
	}
	j.Active[rec.Key] = &rec
	b, err := json.Marshal(rec)
	return b, c.Job, err
}

func (s *state) applyRestart(e raft.Entry, c keyCmd) ([]byte, string, error) {
	j := s.job(c.Job)
	rec, ok := j.Active[c.Key]
	if !ok || rec.Fence != c.Fence {
		return nil, c.Job, coded("jobs.stale", fmt.Sprintf("take over run %s: %s", c.Key, ErrStaleFence))
	}
	rec.Fence, rec.Node, rec.StartedAt = Fence{e.Term, e.Index}, e.Origin, e.Time
	rec.Takeovers++
	b, err := json.Marshal(rec)
	return b, c.Job, err
}

func (s *state) applyFinish(e raft.Entry, c finishCmd) ([]byte, string, error) {
	j := s.job(c.Job)
	rec, ok := j.Active[c.Key]
	if !ok || rec.Fence != c.Fence {
		return nil, c.Job, coded("jobs.stale", fmt.Sprintf("finish run %s with token %s: %s", c.Key, c.Fence, ErrStaleFence))
	}
	delete(j.Active, c.Key)
	rec.Status, rec.Error, rec.DurationMS, rec.Attempts = c.Status, c.Error, c.DurationMS, c.Attempts
	rec.FinishedAt = e.Time
	if c.Status == StatusAbandoned {
		rec.Node = e.Origin
	}
	addHistory(j, *rec, c.Keep)
	return nil, c.Job, nil
}

func (s *state) applyMisfire(e raft.Entry, c misfireCmd) ([]byte, string, error) {
	j := s.job(c.Job)
	n := 0
	for _, t := range c.Times {
		if !t.After(j.Cursor) {
			continue
		}
		addHistory(j, RunRecord{Key: RunKey(c.Job, t), Job: c.Job, ScheduledAt: t, Node: e.Origin,
			FinishedAt: e.Time, Status: StatusMisfired}, c.Keep)
		n++
	}
	if c.More > 0 {
		addHistory(j, RunRecord{Key: RunKey(c.Job, c.Cursor) + "+more", Job: c.Job, ScheduledAt: c.Cursor, Node: e.Origin,
			FinishedAt: e.Time, Status: StatusMisfired, Error: fmt.Sprintf("%d earlier occurrences misfired too", c.More)}, c.Keep)
	}
	if c.Cursor.After(j.Cursor) {
		j.Cursor = c.Cursor
	}
	return []byte(strconv.Itoa(n)), c.Job, nil
}

func (s *state) applySuspend(e raft.Entry, c suspendCmd) ([]byte, string, error) {
	j := s.job(c.Job)
	if j.Suspended && !c.Suspended && e.Time.After(j.Cursor) {
		// Occurrences due while suspended are skipped, not misfired.
		j.Cursor = e.Time
	}
	j.Suspended = c.Suspended
	return nil, c.Job, nil
}

func (s *state) applyRequest(e raft.Entry, c requestCmd) ([]byte, string, error) {
	j := s.job(c.Job)
	j.Pending = append(j.Pending, e.Index)
	return []byte(manualKey(c.Job, e.Index)), c.Job, nil
}

func (s *state) applyCheck(_ raft.Entry, c keyCmd) ([]byte, string, error) {
	j := s.jobs[c.Job]
	if j == nil || j.Active[c.Key] == nil || j.Active[c.Key].Fence != c.Fence {
		return nil, "", coded("jobs.stale", fmt.Sprintf("run %s token %s: %s", c.Key, c.Fence, ErrStaleFence))
	}
	return nil, "", nil
}

package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cohortserver/cohort/httpapi"
)

// JobStatus is a job as the jobs API shows it, on any node.
type JobStatus struct {
	Name        string      `json:"name"`
	Schedule    string      `json:"schedule"`
	TimeZone    string      `json:"time_zone"`
	Description string      `json:"description,omitempty"`
	Concurrency string      `json:"concurrency"`
	Misfire     string      `json:"misfire"`
	Recover     string      `json:"recover"`
	TimeoutMS   int64       `json:"timeout_ms,omitempty"`
	Retries     int         `json:"retries,omitempty"`
	Suspended   bool        `json:"suspended"`
	NextRun     time.Time   `json:"next_run,omitzero"`
	LastRun     *RunRecord  `json:"last_run,omitempty"`
	Running     []RunRecord `json:"running"`
	Pending     int         `json:"pending_requests,omitempty"`
}

// Jobs returns every registered job with its replicated state as this node
// has applied it.
func (r *Runner) Jobs() []JobStatus {
	var out []JobStatus
	now := time.Now()
	for _, j := range r.jobList() {
		out = append(out, r.status(j, now))
	}
	return out
}

// Job returns one job's status.
func (r *Runner) Job(name string) (JobStatus, error) {
	j := r.lookup(name)
	if j == nil {
		return JobStatus{}, fmt.Errorf("job %q: %w", name, ErrUnknownJob)
	}
	return r.status(j, time.Now()), nil
}

func (r *Runner) lookup(name string) *job {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jobs[name]
}

func (r *Runner) status(j *job, now time.Time) JobStatus {
	st := r.state.view(j.name)
	s := JobStatus{Name: j.name, Schedule: j.spec, TimeZone: j.loc.String(), Description: j.description,
		Concurrency: j.concurrency, Misfire: j.misfire, Recover: j.recover, TimeoutMS: j.timeout.Milliseconds(),
		Retries: j.retries, Suspended: st.Suspended, Running: st.activeRuns(), Pending: len(st.Pending)}
	if !st.Suspended {
		from := now
		if st.Cursor.After(from) {
			from = st.Cursor
		}
		s.NextRun = j.sched.Next(from)
	}
	if n := len(st.History); n > 0 {
		last := st.History[n-1]
		s.LastRun = &last
	}
	return s
}

// Runs returns a job's history, newest first, then the runs still running.
func (r *Runner) Runs(name string) ([]RunRecord, error) {
	if r.lookup(name) == nil && !r.known(name) {
		return nil, fmt.Errorf("job %q: %w", name, ErrUnknownJob)
	}
	st := r.state.view(name)
	out := st.activeRuns()
	for i := len(st.History) - 1; i >= 0; i-- {
		out = append(out, st.History[i])
	}
	return out, nil
}

func (r *Runner) known(name string) bool {
	for _, n := range r.state.names() {
		if n == name {
			return true
		}
	}
	return false
}

// RunNow asks the leader to run the job at once; it works from any node
// and survives a leader change. It returns the key the run will have.
func (r *Runner) RunNow(ctx context.Context, name string) (string, error) {
	if r.lookup(name) == nil {
		return "", fmt.Errorf("job %q: %w", name, ErrUnknownJob)
	}
	data, err := r.propose(ctx, cmdRequest, requestCmd{Job: name})
	if err != nil {
		return "", fmt.Errorf("run %s now: %w", name, err)
	}
	return string(data), nil
}

// Suspend stops scheduling the job on every node (replicated). Running runs
// go on; run-now still works.
func (r *Runner) Suspend(ctx context.Context, name string) error {
	return r.setSuspended(ctx, name, true)
}

// Resume schedules the job again from the next occurrence; occurrences due
// while it was suspended are skipped.
func (r *Runner) Resume(ctx context.Context, name string) error {
	return r.setSuspended(ctx, name, false)
}

func (r *Runner) setSuspended(ctx context.Context, name string, v bool) error {
	if r.lookup(name) == nil {
		return fmt.Errorf("job %q: %w", name, ErrUnknownJob)
	}
	if _, err := r.propose(ctx, cmdSuspend, suspendCmd{Job: name, Suspended: v}); err != nil {
		return fmt.Errorf("suspend %s: %w", name, err)
	}
	return nil
}

// CurrentFence returns the token of the job's newest unfinished run, and
// whether there is one, as this node has applied it.
func (r *Runner) CurrentFence(name string) (Fence, bool) {
	runs := r.state.view(name).activeRuns()
	if len(runs) == 0 {
		return Fence{}, false
	}
	return runs[len(runs)-1].Fence, true
}

// Routes mounts the admin API with mount (node.HandleAdmin):
// GET /_cohort/api/jobs, GET /_cohort/api/jobs/{name}, GET .../{name}/runs,
// POST .../{name}/run, .../suspend, .../resume.
func (r *Runner) Routes(mount func(pattern string, h http.HandlerFunc)) {
	mount("GET /_cohort/api/jobs", func(w http.ResponseWriter, _ *http.Request) {
		jobs := r.Jobs()
		if jobs == nil {
			jobs = []JobStatus{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"jobs": jobs})
	})
	mount("GET /_cohort/api/jobs/{name}", func(w http.ResponseWriter, req *http.Request) {
		s, err := r.Job(req.PathValue("name"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	})
	mount("GET /_cohort/api/jobs/{name}/runs", func(w http.ResponseWriter, req *http.Request) {
		runs, err := r.Runs(req.PathValue("name"))
		if err != nil {
			writeErr(w, err)
			return
		}
		if limit := req.URL.Query().Get("limit"); limit != "" {
			n, err := strconv.Atoi(limit)
			if err != nil || n < 1 {
				httpapi.WriteError(w, http.StatusBadRequest, "limit must be a positive integer")
				return
			}
			runs = runs[:min(n, len(runs))]
		}
		if runs == nil {
			runs = []RunRecord{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"job": req.PathValue("name"), "runs": runs})
	})
	mount("POST /_cohort/api/jobs/{name}/{action}", func(w http.ResponseWriter, req *http.Request) {
		name := req.PathValue("name")
		ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
		defer cancel()
		switch req.PathValue("action") {
		case "run":
			key, err := r.RunNow(ctx, name)
			if err != nil {
				writeErr(w, err)
				return
			}
			writeJSON(w, http.StatusAccepted, map[string]string{"job": name, "key": key})
		case "suspend", "resume":
			var err error
			if req.PathValue("action") == "suspend" {
				err = r.Suspend(ctx, name)
			} else {
				err = r.Resume(ctx, name)
			}
			if err != nil {
				writeErr(w, err)
				return
			}
			s, _ := r.Job(name)
			writeJSON(w, http.StatusOK, s)
		default:
			httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such action %q: use run, suspend or resume", req.PathValue("action")))
		}
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) { httpapi.WriteJSON(w, code, v) }

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	switch {
	case errors.Is(err, ErrUnknownJob):
		code = http.StatusNotFound
	case errors.Is(err, ErrDuplicateRun), errors.Is(err, ErrBusy):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	httpapi.WriteError(w, code, err.Error())
}

package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// Command types owned by this package's state machine.
const (
	cmdInit    = "jobs.init"    // set a job's cursor when it has none
	cmdStart   = "jobs.start"   // a run starts: refused for a known key
	cmdRestart = "jobs.restart" // a new leader takes over an unfinished run
	cmdFinish  = "jobs.finish"  // a run ended
	cmdMisfire = "jobs.misfire" // occurrences that will not run
	cmdSuspend = "jobs.suspend" // suspend or resume
	cmdRequest = "jobs.request" // run now, from any node
	cmdCheck   = "jobs.check"   // is this fencing token still current?
)

// Run statuses in the history.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusTimeout   = "timeout"
	StatusCancelled = "cancelled"
	StatusReplaced  = "replaced"  // cancelled by a newer run (concurrency replace)
	StatusAbandoned = "abandoned" // its leader died; recover: skip
	StatusSkipped   = "skipped"   // refused by concurrency forbid
	StatusMisfired  = "misfired"  // missed while no leader ran; misfire policy
)

// Fence is a run's fencing token: the Raft term and log index of the entry
// that started (or took over) the run. Tokens of later runs compare greater;
// Index alone is strictly increasing too, which makes it the value to store
// in a database column (see docs/jobs.md).
type Fence struct {
	Term  uint64 `json:"term"`
	Index uint64 `json:"index"`
}

// Less reports whether f was issued before o.
func (f Fence) Less(o Fence) bool {
	if f.Term != o.Term {
		return f.Term < o.Term
	}
	return f.Index < o.Index
}

// Value is the token as one strictly increasing number (the log index).
func (f Fence) Value() uint64 { return f.Index }

// String formats the token as TERM.INDEX.
func (f Fence) String() string {
	return strconv.FormatUint(f.Term, 10) + "." + strconv.FormatUint(f.Index, 10)
}

// RunRecord is one run as the replicated history keeps it.
type RunRecord struct {
	Key         string    `json:"key"`
	Job         string    `json:"job"`
	ScheduledAt time.Time `json:"scheduled_at"`
	Manual      bool      `json:"manual,omitempty"`
	Fence       Fence     `json:"fence"`
	Node        string    `json:"node,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	Status      string    `json:"status"`
	Error       string    `json:"error,omitempty"`
	DurationMS  int64     `json:"duration_ms"`
	Attempts    int       `json:"attempts,omitempty"`
	Takeovers   int       `json:"takeovers,omitempty"`
}

// jobState is the replicated state of one job.
type jobState struct {
	Cursor    time.Time             `json:"cursor"` // latest scheduled occurrence handled
	Suspended bool                  `json:"suspended,omitempty"`
	Active    map[string]*RunRecord `json:"active,omitempty"`
	History   []RunRecord           `json:"history,omitempty"` // oldest first
	Pending   []uint64              `json:"pending,omitempty"` // run-now requests (log index)
}

type initCmd struct {
	Job    string    `json:"job"`
	Cursor time.Time `json:"cursor"`
}

type startCmd struct {
	Job         string    `json:"job"`
	ScheduledAt time.Time `json:"scheduled_at"`
	Request     uint64    `json:"request,omitempty"` // run-now request it serves
	Concurrency string    `json:"concurrency"`
	Keep        int       `json:"keep"`
}

type keyCmd struct {
	Job   string `json:"job"`
	Key   string `json:"key"`
	Fence Fence  `json:"fence"`
}

type finishCmd struct {
	Job        string `json:"job"`
	Key        string `json:"key"`
	Fence      Fence  `json:"fence"`
	Status     string `json:"status"`
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	Attempts   int    `json:"attempts"`
	Keep       int    `json:"keep"`
}

type misfireCmd struct {
	Job    string      `json:"job"`
	Times  []time.Time `json:"times"`
	More   int         `json:"more,omitempty"` // occurrences beyond Times, summarised
	Cursor time.Time   `json:"cursor"`
	Keep   int         `json:"keep"`
}

type suspendCmd struct {
	Job       string `json:"job"`
	Suspended bool   `json:"suspended"`
}

// requestCmd asks for a run now. Entries written before it had its own
// type carry a suspendCmd payload ({"job":…,"suspended":false}); the
// extra field is ignored when decoding, so they apply the same.
type requestCmd struct {
	Job string `json:"job"`
}

// RunKey is the key of a scheduled run: the job and its scheduled time, as
// Kubernetes names a CronJob's Job. Two proposals of one key cannot both start.
func RunKey(job string, scheduled time.Time) string {
	return job + "@" + scheduled.UTC().Format(time.RFC3339)
}

func manualKey(job string, request uint64) string {
	return job + "@manual-" + strconv.FormatUint(request, 10)
}

// state is the replicated jobs state machine. Apply is deterministic; the
// notify callback only wakes the local scheduler.
type state struct {
	mu     sync.RWMutex
	jobs   map[string]*jobState
	notify func(job string)
}

var _ raft.StateMachine = (*state)(nil)

func newState(notify func(string)) *state {
	return &state{jobs: make(map[string]*jobState), notify: notify}
}

func (s *state) job(name string) *jobState {
	j := s.jobs[name]
	if j == nil {
		j = &jobState{}
		s.jobs[name] = j
	}
	if j.Active == nil {
		j.Active = make(map[string]*RunRecord)
	}
	return j
}

func addHistory(j *jobState, r RunRecord, keep int) {
	if keep <= 0 {
		keep = 50
	}
	j.History = append(j.History, r)
	if over := len(j.History) - keep; over > 0 {
		j.History = slices.Delete(j.History, 0, over)
	}
}

// Apply implements raft.StateMachine.
func (s *state) Apply(e raft.Entry) ([]byte, error) {
	s.mu.Lock()
	out, job, err := s.apply(e)
	s.mu.Unlock()
	if job != "" && s.notify != nil {
		s.notify(job)
	}
	return out, err
}

// view returns a deep copy of one job's state.
func (s *state) view(name string) jobState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	j := s.jobs[name]
	if j == nil {
		return jobState{}
	}
	out := jobState{Cursor: j.Cursor, Suspended: j.Suspended, History: slices.Clone(j.History), Pending: slices.Clone(j.Pending)}
	if len(j.Active) > 0 {
		out.Active = make(map[string]*RunRecord, len(j.Active))
		for k, r := range j.Active {
			c := *r
			out.Active[k] = &c
		}
	}
	return out
}

// active returns the job's unfinished runs ordered by fence.
func (j jobState) activeRuns() []RunRecord {
	out := make([]RunRecord, 0, len(j.Active))
	for _, r := range j.Active {
		out = append(out, *r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Fence.Less(out[b].Fence) })
	return out
}

func (s *state) names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.jobs))
	for n := range s.jobs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

type stateSnap struct{ b []byte }

// Snapshot implements raft.StateMachine. The state is small (bounded
// history per job), so it is encoded here.
func (s *state) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, err := json.Marshal(s.jobs)
	if err != nil {
		return nil, fmt.Errorf("encode jobs state: %w", err)
	}
	return &stateSnap{b: b}, nil
}

func (p *stateSnap) Persist(w io.Writer) error {
	_, err := w.Write(p.b)
	return err
}

func (p *stateSnap) Release() {}

// Restore implements raft.StateMachine.
func (s *state) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read jobs state: %w", err)
	}
	jobs := make(map[string]*jobState)
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &jobs); err != nil {
			return fmt.Errorf("decode jobs state: %w", err)
		}
	}
	s.mu.Lock()
	s.jobs = jobs
	s.mu.Unlock()
	return nil
}

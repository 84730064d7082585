package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/cohortserver/cohort/raft"
)

// Policies.
const (
	ConcurrencyForbid  = "forbid"  // an occurrence is skipped while the previous run runs (default)
	ConcurrencyAllow   = "allow"   // runs may overlap
	ConcurrencyReplace = "replace" // the running run is cancelled for the new one

	MisfireFireOnce = "fire_once" // run the latest missed occurrence, record the others as misfired (default)
	MisfireSkip     = "skip"      // record every missed occurrence as misfired
	MisfireFireAll  = "fire_all"  // run missed occurrences in order, up to the catch-up bound

	RecoverRerun = "rerun" // a new leader runs a run its predecessor never finished again, with a new token (default)
	RecoverSkip  = "skip"  // a new leader records such a run as abandoned
)

// Log is what the runner needs from the replicated log.
type Log interface {
	Apply(ctx context.Context, typ string, payload []byte) (raft.Result, error)
	Register(name string, sm raft.StateMachine, types ...string) error
	OnLeader(fn func(ctx context.Context, term uint64))
	IsLeader() bool
	NodeID() string
}

// Func is a job. ctx ends when the run times out, is replaced, or this node
// loses leadership; a job must return soon after.
type Func func(ctx context.Context, run Run) error

// Run describes one execution handed to a Func.
type Run struct {
	Job         string    // job name
	Key         string    // run id: job@scheduled-time (RFC3339 UTC) or job@manual-N
	ScheduledAt time.Time // the occurrence (the request time for a manual run)
	Manual      bool      // started by "run now"
	Fence       Fence     // fencing token; compare Fence.Value() in side effects
	Node        string    // node id executing the run
	Attempt     int       // 1 for the first try, 2 for the first retry, ...

	r *Runner
}

// RunID returns the run's key.
func (run Run) RunID() string { return run.Key }

// FencingToken returns Fence.Value(): strictly increasing across runs and leaders.
func (run Run) FencingToken() uint64 { return run.Fence.Value() }

// StillValid reports, through the Raft log (linearizable), whether this run
// still holds the current token: nil, or ErrStaleFence / ErrNotLeader. Call
// it before an irreversible side effect that cannot itself check the token.
func (run Run) StillValid(ctx context.Context) error {
	if run.r == nil {
		return nil
	}
	if !run.r.log.IsLeader() {
		return ErrNotLeader
	}
	b, _ := json.Marshal(keyCmd{Job: run.Job, Key: run.Key, Fence: run.Fence})
	if _, err := run.r.log.Apply(ctx, cmdCheck, b); err != nil {
		return fromApply(err)
	}
	return nil
}

// Option configures one job.
type Option func(*job) error

// WithTimeZone reads the cron expression in the IANA zone name (default UTC).
func WithTimeZone(name string) Option {
	return func(j *job) error {
		loc, err := time.LoadLocation(name)
		if err != nil {
			return fmt.Errorf("time zone %q: %w", name, err)
		}
		j.loc = loc
		return nil
	}
}

// WithConcurrency sets forbid (default), allow or replace.
func WithConcurrency(policy string) Option {
	return func(j *job) error {
		switch policy {
		case ConcurrencyForbid, ConcurrencyAllow, ConcurrencyReplace:
			j.concurrency = policy
			return nil
		}
		return fmt.Errorf("concurrency %q: want forbid, allow or replace", policy)
	}
}

// WithTimeout bounds each attempt (0, the default, means none).
func WithTimeout(d time.Duration) Option {
	return func(j *job) error {
		if d < 0 {
			return fmt.Errorf("timeout %s: must not be negative", d)
		}
		j.timeout = d
		return nil
	}
}

// WithRetries retries a failed attempt up to n times, waiting backoff,
// doubled each time up to maxBackoff, with ±50% jitter.
func WithRetries(n int, backoff, maxBackoff time.Duration) Option {
	return func(j *job) error {
		if n < 0 || backoff < 0 || maxBackoff < backoff {
			return fmt.Errorf("retries %d backoff %s max %s: want n >= 0 and 0 <= backoff <= max", n, backoff, maxBackoff)
		}
		j.retries, j.backoff, j.maxBackoff = n, backoff, maxBackoff
		return nil
	}
}

// WithMisfire sets the policy for occurrences missed while no leader ran
// them: fire_once (default), skip or fire_all; catchUp bounds fire_all (0:
// 10). threshold is how late an occurrence may start and still count as on
// time (0: 5s).
func WithMisfire(policy string, catchUp int, threshold time.Duration) Option {
	return func(j *job) error {
		switch policy {
		case MisfireFireOnce, MisfireSkip, MisfireFireAll:
		default:
			return fmt.Errorf("misfire %q: want fire_once, skip or fire_all", policy)
		}
		if catchUp < 0 || threshold < 0 {
			return fmt.Errorf("misfire catch-up %d threshold %s: must not be negative", catchUp, threshold)
		}
		j.misfire = policy
		if catchUp > 0 {
			j.catchUp = catchUp
		}
		if threshold > 0 {
			j.threshold = threshold
		}
		return nil
	}
}

// WithRecover sets what a new leader does with a run its predecessor
// started and never finished: rerun (default) or skip.
func WithRecover(policy string) Option {
	return func(j *job) error {
		switch policy {
		case RecoverRerun, RecoverSkip:
			j.recover = policy
			return nil
		}
		return fmt.Errorf("recover %q: want rerun or skip", policy)
	}
}

// WithDescription sets a line shown in the jobs API.
func WithDescription(s string) Option {
	return func(j *job) error { j.description = s; return nil }
}

type job struct {
	name, spec, description string
	sched                   Schedule
	loc                     *time.Location
	fn                      Func
	concurrency             string
	timeout                 time.Duration
	retries                 int
	backoff, maxBackoff     time.Duration
	misfire                 string
	catchUp                 int
	threshold               time.Duration
	recover                 string

	wake chan struct{}
}

// Config configures a Runner.
type Config struct {
	// Log is the replicated log; required.
	Log Log
	// Logger receives the runner's logs; nil discards them.
	Logger *slog.Logger
	// History is how many finished runs each job keeps (0: 50).
	History int
	// StartGrace is how long a new leader waits before its first run, so a
	// partitioned old leader has surely noticed its loss and cancelled its
	// runs (0: none). node sets it to raft.StepDown.
	StartGrace time.Duration
	// OnFinish, if set, is called on the node that ran it when a run ends
	// and its record committed (metrics).
	OnFinish func(job, status string, took time.Duration)
	// Now is the leader's clock for scheduling decisions; if nil, time.Now.
	// Tests set it to decide what is due without waiting for the wall clock.
	Now func() time.Time
}

// Runner schedules registered jobs on the Raft leader and keeps their
// replicated bookkeeping.
type Runner struct {
	cfg   Config
	log   Log
	lg    *slog.Logger
	state *state

	mu      sync.Mutex
	jobs    map[string]*job
	started bool
	closed  bool
	startCh chan struct{}
	stopCh  chan struct{}
	running map[string]*execution // key -> local execution
	runsWG  sync.WaitGroup
	leadWG  sync.WaitGroup
}

type execution struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// errReplaced is the cancel cause of a run replaced by a newer one.
var errReplaced = errors.New("replaced by a newer run (concurrency replace)")

// New returns a Runner and registers its state machine with the log. It
// does no I/O.
func New(cfg Config) (*Runner, error) {
	if cfg.Log == nil {
		return nil, errors.New("jobs: Config.Log is required")
	}
	if cfg.History <= 0 {
		cfg.History = 50
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	r := &Runner{cfg: cfg, log: cfg.Log, lg: lg.With("component", "jobs"), jobs: make(map[string]*job),
		startCh: make(chan struct{}), stopCh: make(chan struct{}), running: make(map[string]*execution)}
	r.state = newState(r.wake)
	if err := cfg.Log.Register("jobs", r.state, cmdInit, cmdStart, cmdRestart, cmdFinish, cmdMisfire, cmdSuspend, cmdRequest, cmdCheck); err != nil {
		return nil, fmt.Errorf("register jobs state machine: %w", err)
	}
	cfg.Log.OnLeader(r.lead)
	return r, nil
}

// Register adds a job. name is [A-Za-z0-9._-]{1,64}; spec is a schedule
// (see ParseSchedule). Call it before Start, on every node alike.
func (r *Runner) Register(name, spec string, fn Func, opts ...Option) error {
	if !validName(name) {
		return fmt.Errorf("register job %q: name must be 1..64 of A-Z a-z 0-9 . _ -", name)
	}
	if fn == nil {
		return fmt.Errorf("register job %q: nil func", name)
	}
	j := &job{name: name, spec: spec, fn: fn, loc: time.UTC, concurrency: ConcurrencyForbid,
		misfire: MisfireFireOnce, catchUp: 10, threshold: 5 * time.Second, recover: RecoverRerun,
		wake: make(chan struct{}, 1)}
	for _, o := range opts {
		if err := o(j); err != nil {
			return fmt.Errorf("register job %q: %w", name, err)
		}
	}
	s, err := ParseSchedule(spec, j.loc)
	if err != nil {
		return fmt.Errorf("register job %q: %w", name, err)
	}
	j.sched = s
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return fmt.Errorf("register job %q: %w", name, ErrStarted)
	}
	if _, dup := r.jobs[name]; dup {
		return fmt.Errorf("register job %q: a job of that name is already registered", name)
	}
	r.jobs[name] = j
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Start lets the scheduler run whenever this node leads. The registered
// jobs are fixed from here on.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return ErrStarted
	}
	r.started = true
	close(r.startCh)
	return nil
}

// Close stops scheduling, cancels local runs and waits for them. It is
// idempotent.
func (r *Runner) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.stopCh)
	for _, ex := range r.running {
		ex.cancel(errors.New("node shutting down"))
	}
	r.mu.Unlock()
	r.leadWG.Wait()
	r.runsWG.Wait()
	return nil
}

func (r *Runner) wake(name string) {
	r.mu.Lock()
	j := r.jobs[name]
	r.mu.Unlock()
	if j != nil {
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
}

func (r *Runner) jobList() []*job {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*job, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].name < out[b].name })
	return out
}

// lead runs while this node is the leader (after Barrier): one scheduling
// loop per job. ctx ends the moment leadership is lost, which cancels every
// run this node started.
func (r *Runner) lead(ctx context.Context, term uint64) {
	select {
	case <-r.startCh:
	case <-ctx.Done():
		return
	case <-r.stopCh:
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.leadWG.Add(1)
	r.mu.Unlock()
	defer r.leadWG.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	r.lg.Info("scheduler started on the leader", "term", term, "jobs", len(r.jobList()))
	if r.cfg.StartGrace > 0 {
		t := time.NewTimer(r.cfg.StartGrace)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	var wg sync.WaitGroup
	for _, j := range r.jobList() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.jobLoop(ctx, j)
		}()
	}
	wg.Wait()
	r.lg.Info("scheduler stopped: leadership lost", "term", term)
}

// now reads the scheduling clock (Config.Now).
func (r *Runner) now() time.Time { return r.cfg.Now() }

func (r *Runner) propose(ctx context.Context, typ string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	res, err := r.log.Apply(ctx, typ, b)
	if err != nil {
		return nil, fromApply(err)
	}
	return res.Data, nil
}

// fromApply maps a refused command back to this package's sentinels.
func fromApply(err error) error {
	var ae *raft.ApplyError
	if errors.As(err, &ae) {
		if s, ok := codes[ae.Code]; ok {
			return &codedError{code: ae.Code, err: s, msg: ae.Message}
		}
	}
	return err
}

// jobLoop schedules one job until ctx ends.
func (r *Runner) jobLoop(ctx context.Context, j *job) {
	lg := r.lg.With("job", j.name)
	if st := r.state.view(j.name); st.Cursor.IsZero() {
		if _, err := r.propose(ctx, cmdInit, initCmd{Job: j.name, Cursor: r.now().UTC()}); err != nil {
			lg.Warn("record job start point", "err", err)
		}
	}
	retry := time.Duration(0)
	for ctx.Err() == nil {
		err := r.step(ctx, j, lg)
		wait := time.Hour
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			lg.Warn("scheduling step failed; retrying", "err", err)
			retry = min(max(retry*2, 50*time.Millisecond), 2*time.Second)
			wait = retry
		} else {
			retry = 0
			st := r.state.view(j.name)
			if !st.Suspended {
				now := r.now()
				from := now
				if st.Cursor.After(from) {
					from = st.Cursor
				}
				if next := j.sched.Next(from); !next.IsZero() {
					wait = min(wait, next.Sub(now))
				}
			}
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-j.wake:
			t.Stop()
		}
	}
}

// step recovers orphaned runs, serves run-now requests and starts or
// misfires the occurrences that are due.
func (r *Runner) step(ctx context.Context, j *job, lg *slog.Logger) error {
	st := r.state.view(j.name)
	// Runs started but not running here: their leader died (or the outcome
	// of our own start was lost).
	for _, rec := range st.activeRuns() {
		if r.isRunning(rec.Key) {
			continue
		}
		if j.recover == RecoverSkip {
			_, err := r.propose(ctx, cmdFinish, finishCmd{Job: j.name, Key: rec.Key, Fence: rec.Fence, Status: StatusAbandoned,
				Error: "its leader stopped before it finished (recover: skip)", Keep: r.cfg.History})
			if err != nil && !errors.Is(err, ErrStaleFence) {
				return fmt.Errorf("abandon run %s: %w", rec.Key, err)
			}
			lg.Info("abandoned a run its leader never finished", "key", rec.Key)
			continue
		}
		ex := r.reserve(rec.Key)
		data, err := r.propose(ctx, cmdRestart, keyCmd{Job: j.name, Key: rec.Key, Fence: rec.Fence})
		if err != nil {
			r.release(rec.Key)
			if errors.Is(err, ErrStaleFence) {
				continue
			}
			return fmt.Errorf("take over run %s: %w", rec.Key, err)
		}
		var took RunRecord
		if err := json.Unmarshal(data, &took); err != nil {
			r.release(rec.Key)
			return fmt.Errorf("decode taken-over run: %w", err)
		}
		lg.Info("re-running a run its leader never finished", "key", took.Key, "fence", took.Fence.String())
		r.execute(ctx, j, took, ex)
	}
	for _, req := range st.Pending {
		if err := r.start(ctx, j, startCmd{Job: j.name, ScheduledAt: r.now().UTC(), Request: req}, lg); err != nil {
			return err
		}
	}
	if st.Suspended {
		return nil
	}
	if st.Cursor.IsZero() {
		if _, err := r.propose(ctx, cmdInit, initCmd{Job: j.name, Cursor: r.now().UTC()}); err != nil {
			return fmt.Errorf("record job start point: %w", err)
		}
		return nil
	}
	p := j.plan(st.Cursor, r.now())
	if len(p.missed) > 0 || p.more > 0 {
		if _, err := r.propose(ctx, cmdMisfire, misfireCmd{Job: j.name, Times: p.missed, More: p.more, Cursor: p.cursor, Keep: r.cfg.History}); err != nil {
			return fmt.Errorf("record misfires: %w", err)
		}
		lg.Warn("occurrences misfired", "count", len(p.missed)+p.more, "policy", j.misfire)
	}
	for _, t := range p.run {
		if err := r.start(ctx, j, startCmd{Job: j.name, ScheduledAt: t}, lg); err != nil {
			return err
		}
	}
	return nil
}

// start commits a run's start record and executes it.
func (r *Runner) start(ctx context.Context, j *job, c startCmd, lg *slog.Logger) error {
	c.Concurrency, c.Keep = j.concurrency, r.cfg.History
	key := RunKey(j.name, c.ScheduledAt)
	if c.Request != 0 {
		key = manualKey(j.name, c.Request)
	}
	switch j.concurrency {
	case ConcurrencyReplace:
		r.cancelJob(j.name)
	case ConcurrencyForbid:
		// Like Quartz's DisallowConcurrentExecution: wait for this node's
		// running run (e.g. one just taken over) while the occurrence is
		// still on time; the state machine refuses it if still busy.
		r.waitJobIdle(ctx, j.name, c.ScheduledAt.Add(j.threshold))
	}
	ex := r.reserve(key)
	data, err := r.propose(ctx, cmdStart, c)
	if err != nil {
		r.release(key)
		switch {
		case errors.Is(err, ErrBusy):
			lg.Info("occurrence skipped: previous run still running", "key", key)
			return nil
		case errors.Is(err, ErrDuplicateRun), errors.Is(err, ErrSuspended):
			lg.Debug("start refused", "key", key, "err", err)
			return nil
		}
		return fmt.Errorf("start run %s: %w", key, err)
	}
	var rec RunRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		r.release(key)
		return fmt.Errorf("decode started run: %w", err)
	}
	r.execute(ctx, j, rec, ex)
	return nil
}

func (r *Runner) reserve(key string) *execution {
	ex := &execution{done: make(chan struct{})}
	r.mu.Lock()
	r.running[key] = ex
	r.mu.Unlock()
	return ex
}

func (r *Runner) release(key string) {
	r.mu.Lock()
	delete(r.running, key)
	r.mu.Unlock()
}

func (r *Runner) isRunning(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.running[key]
	return ok
}

// cancelJob cancels this node's runs of a job (concurrency replace) and
// waits for them to return.
func (r *Runner) cancelJob(name string) {
	var wait []chan struct{}
	r.mu.Lock()
	for key, ex := range r.running {
		if ex.cancel != nil && keyJob(key) == name {
			ex.cancel(errReplaced)
			wait = append(wait, ex.done)
		}
	}
	r.mu.Unlock()
	for _, d := range wait {
		<-d
	}
}

// waitJobIdle waits until this node runs nothing of the job, ctx ends or
// the deadline passes.
func (r *Runner) waitJobIdle(ctx context.Context, name string, deadline time.Time) {
	for {
		var wait chan struct{}
		r.mu.Lock()
		for key, ex := range r.running {
			if ex.cancel != nil && keyJob(key) == name {
				wait = ex.done
				break
			}
		}
		r.mu.Unlock()
		if wait == nil {
			return
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-wait:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			return
		}
	}
}

func keyJob(key string) string {
	for i := len(key) - 1; i >= 0; i-- {
		if key[i] == '@' {
			return key[:i]
		}
	}
	return key
}

// execute runs a started run in its own goroutine: attempts with timeout,
// retries with backoff and jitter, then the finish record. When leadership
// was lost no finish is recorded: the next leader recovers the run.
func (r *Runner) execute(leaderCtx context.Context, j *job, rec RunRecord, ex *execution) {
	ctx, cancel := context.WithCancelCause(leaderCtx)
	r.mu.Lock()
	ex.cancel = cancel
	if r.closed {
		cancel(errors.New("node shutting down"))
	}
	r.mu.Unlock()
	r.runsWG.Add(1)
	go func() {
		defer r.runsWG.Done()
		defer close(ex.done)
		defer r.wake(j.name)
		defer r.release(rec.Key)
		defer cancel(nil)
		lg := r.lg.With("job", j.name, "key", rec.Key, "fence", rec.Fence.String())
		lg.Debug("run starting")
		begin := time.Now()
		run := Run{Job: j.name, Key: rec.Key, ScheduledAt: rec.ScheduledAt, Manual: rec.Manual, Fence: rec.Fence, Node: rec.Node, r: r}
		var err error
		attempt := 0
		for {
			attempt++
			run.Attempt = attempt
			err = r.attempt(ctx, j, run)
			if err == nil || ctx.Err() != nil || attempt > j.retries {
				break
			}
			d := j.backoff << (attempt - 1)
			if d > j.maxBackoff || d <= 0 {
				d = j.maxBackoff
			}
			d = d/2 + rand.N(d/2+1) // jitter: 50..100%
			lg.Info("run failed; retrying", "attempt", attempt, "in", d, "err", err)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			if ctx.Err() != nil {
				break
			}
		}
		status := StatusSucceeded
		msg := ""
		switch {
		case err == nil:
		case errors.Is(context.Cause(ctx), errReplaced):
			status, msg = StatusReplaced, errReplaced.Error()
		case errors.Is(err, context.DeadlineExceeded):
			status, msg = StatusTimeout, err.Error()
		case ctx.Err() != nil:
			status, msg = StatusCancelled, context.Cause(ctx).Error()
		default:
			status, msg = StatusFailed, err.Error()
		}
		if leaderCtx.Err() != nil {
			lg.Warn("run cancelled: leadership lost; the next leader recovers it", "err", err)
			return
		}
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer fcancel()
		_, ferr := r.propose(fctx, cmdFinish, finishCmd{Job: j.name, Key: rec.Key, Fence: rec.Fence, Status: status, Error: msg,
			DurationMS: time.Since(begin).Milliseconds(), Attempts: attempt, Keep: r.cfg.History})
		if ferr != nil {
			lg.Warn("record run finish", "err", ferr)
			return
		}
		lg.Debug("run finished", "status", status, "attempts", attempt)
		if r.cfg.OnFinish != nil {
			r.cfg.OnFinish(j.name, status, time.Since(begin))
		}
	}()
}

// attempt calls the job once, with the per-attempt timeout, turning a panic
// into an error.
func (r *Runner) attempt(ctx context.Context, j *job, run Run) (err error) {
	if j.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, j.timeout)
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("job panicked: %v", p)
		}
	}()
	err = j.fn(ctx, run)
	if err == nil && ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = ctx.Err()
	}
	return err
}

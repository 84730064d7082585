package appproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// States of the supervised process, as status and metrics show them.
const (
	StateRunning = "running" // launched, not exited
	StateBackoff = "backoff" // exited; waiting before the next start
	StateStopped = "stopped" // stopped by cohort (or never started)
)

// Errors of the supervisor.
var (
	// ErrClosed is returned by Restart after Close.
	ErrClosed = errors.New("app supervisor closed")
	// ErrNotStarted is returned by Restart before Start.
	ErrNotStarted = errors.New("app supervisor not started")

	errRunning = errors.New("app already running")
)

// MarkerEnv is the environment variable every supervised process gets; its
// value names the node's data dir, so a later start of the same node finds
// the leftovers of an earlier one (a kill -9 of cohort) and kills them.
const MarkerEnv = "COHORT_APP_INSTANCE"

// guardScript runs the command ($1) under a small shell that leads the
// process group. Its parent-death signal (SIGUSR1, sysProcAttr) makes it
// kill the whole group, so nothing the command started outlives cohort,
// even after a kill -9; it ignores the SIGTERM of a graceful stop (the
// command gets it, with its default action) and exits with the command's
// status. The TERM trap is set after the command was forked: a child
// forked with it set resets it to the default only after the fork, and a
// TERM in between (a stop right after a start) was lost, so the stop
// waited out the whole grace. A TERM before the trap kills the shell
// instead, and the stop kills the group.
const guardScript = `trap 'kill -KILL 0' USR1
/bin/sh -c "$1" &
pid=$!
trap ':' TERM
while :; do
	wait "$pid"
	st=$?
	kill -0 "$pid" 2>/dev/null || exit "$st"
done`

// Config configures a Supervisor.
type Config struct {
	// Command runs with /bin/sh -c.
	Command string
	// Dir is its working directory; "" means cohort's.
	Dir string
	// Env is added to cohort's own environment (K=V).
	Env []string
	// Instance is a value unique to this node on this machine (its data
	// dir): the marker of its processes.
	Instance string
	// StopGrace is the time between SIGTERM and SIGKILL; 0 means 10 s.
	StopGrace time.Duration
	// MinBackoff and MaxBackoff bound the wait before a restart after an
	// exit; 0 means 200 ms and 30 s. A process that ran for ResetAfter
	// (0: 10 s) restarts after MinBackoff again.
	MinBackoff, MaxBackoff, ResetAfter time.Duration
	// OnExit, if set, is called after each exit of the process with its
	// error (nil for exit status 0).
	OnExit func(err error)
	// Logger receives the app's output lines and the supervisor's events;
	// nil discards.
	Logger *slog.Logger
}

// Status is what the supervisor reports.
type Status struct {
	State     string    `json:"state"`
	Command   string    `json:"command"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int64     `json:"restarts"`            // starts after the first, whatever caused them
	Exits     int64     `json:"exits"`               // exits not asked for by cohort
	CrashLoop bool      `json:"crash_loop"`          // three or more unasked exits within the last minute
	LastExit  string    `json:"last_exit,omitempty"` // how the last process ended
	Since     time.Time `json:"since"`               // when State was entered
}

// Supervisor runs one application process and keeps it running.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	st       Status
	exitLog  []time.Time // unasked exits within the last minute
	cmd      *exec.Cmd
	run      *run          // the current (or last) process
	kick     chan struct{} // Restart asks the loop to start now
	hold     bool          // Restart: the loop must not start one itself
	started  bool
	closed   bool
	cancel   context.CancelFunc
	loopDone chan struct{}
}

// run is one started process. Each has its own asked mark: the loop may
// see a process's exit after the next one was started and asked to stop
// too, so one mark for the supervisor would count an asked exit as a crash.
type run struct {
	done  chan struct{} // closed when the process was reaped
	began time.Time     // when it started
	asked bool          // stop ended it on purpose; guarded by mu
}

// New builds a supervisor; it does no I/O.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Command == "" {
		return nil, errors.New("appproc: Command is required")
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ResetAfter <= 0 {
		cfg.ResetAfter = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "app"),
		st:   Status{State: StateStopped, Since: time.Now()},
		kick: make(chan struct{}, 1),
	}, nil
}

// Start kills what an earlier run of this node left behind, then starts
// the process and the loop that restarts it; the loop ends with Close.
func (s *Supervisor) Start(context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("appproc: already started")
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.loopDone = make(chan struct{})
	s.mu.Unlock()
	if s.cfg.Instance != "" {
		if n := killLeftovers(s.cfg.Instance); n > 0 {
			s.log.Warn("killed app processes left by an earlier run of this node", "processes", n)
		}
	}
	if err := s.launch(); err != nil {
		s.log.Error("app did not start", "err", err)
	}
	go s.loop(ctx)
	return nil
}

// Status returns the process's state now.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Command = s.cfg.Command
	cut := time.Now().Add(-time.Minute)
	n := 0
	for _, t := range s.exitLog {
		if t.After(cut) {
			n++
		}
	}
	st.CrashLoop = n >= 3
	return st
}

func (s *Supervisor) setState(state string) {
	s.st.State, s.st.Since = state, time.Now()
}

// launch starts one process; the caller holds no lock.
func (s *Supervisor) launch() error {
	s.mu.Lock()
	command := s.cfg.Command
	s.mu.Unlock()
	cmd := exec.Command("/bin/sh", "-c", guardScript, "cohort-app", command)
	cmd.Dir = s.cfg.Dir
	cmd.Env = append(append(os.Environ(), s.cfg.Env...), MarkerEnv+"="+s.cfg.Instance)
	cmd.SysProcAttr = sysProcAttr()
	// Plain pipes, not StdoutPipe: Wait must return when the command
	// exits, although what it started may still hold the write ends.
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("app stdout: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("app stderr: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	defer outW.Close() // the child has its copies once started
	defer errW.Close()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.cmd != nil {
		s.mu.Unlock()
		return errRunning
	}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		outR.Close()
		errR.Close()
		return fmt.Errorf("start %q: %w", command, err)
	}
	if s.st.PID != 0 || s.st.LastExit != "" {
		s.st.Restarts++
	}
	s.cmd = cmd
	r := &run{done: make(chan struct{}), began: time.Now()}
	s.run = r
	s.st.PID = cmd.Process.Pid
	s.setState(StateRunning)
	s.mu.Unlock()
	s.log.Info("app started", "pid", cmd.Process.Pid, "command", command)
	go s.pipe(outR, "stdout")
	go s.pipe(errR, "stderr")
	go func() {
		err := cmd.Wait()
		// What the command left in its group (workers of a killed master)
		// would hold its port: the next start must find it free.
		_ = signalGroup(cmd.Process.Pid, syscall.SIGKILL)
		s.mu.Lock()
		s.cmd = nil
		s.st.PID = 0
		s.st.LastExit = exitText(err)
		s.mu.Unlock()
		close(r.done)
	}()
	return nil
}

func exitText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "exit status 0"
}

// pipe sends the lines of one output stream to the log.
func (s *Supervisor) pipe(r *os.File, stream string) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		s.log.Info(sc.Text(), "stream", stream)
	}
	_, _ = io.Copy(io.Discard, r) // a line longer than the buffer: drain the rest
}

// loop restarts the process after each exit it did not ask for.
func (s *Supervisor) loop(ctx context.Context) {
	defer close(s.loopDone)
	backoff := s.cfg.MinBackoff
	var handled *run // the last process whose exit was handled
	for {
		s.mu.Lock()
		r := s.run
		s.mu.Unlock()
		if r == nil || r == handled {
			// Stopped on purpose (Restart starts the next; Close ends us),
			// or the last start failed: wait, then start if nobody did.
			select {
			case <-ctx.Done():
				return
			case <-s.kick:
			case <-time.After(backoff):
				backoff = min(2*backoff, s.cfg.MaxBackoff)
			}
			s.launchIfIdle()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-r.done:
		}
		handled = r
		s.mu.Lock()
		asked := r.asked
		if !asked {
			s.st.Exits++
			s.exitLog = append(s.exitLog, time.Now())
			if len(s.exitLog) > 10 {
				s.exitLog = s.exitLog[1:]
			}
			s.setState(StateBackoff)
		}
		last := s.st.LastExit
		s.mu.Unlock()
		if asked {
			continue
		}
		if s.cfg.OnExit != nil {
			s.cfg.OnExit(errors.New(last))
		}
		if time.Since(r.began) >= s.cfg.ResetAfter {
			backoff = s.cfg.MinBackoff
		}
		s.log.Warn("app exited; restarting", "exit", last, "after", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		case <-s.kick:
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
		s.launchIfIdle()
	}
}

// launchIfIdle starts the process unless one runs, a Restart or Close is
// under way, or the supervisor is closed.
func (s *Supervisor) launchIfIdle() {
	s.mu.Lock()
	idle := s.cmd == nil && !s.hold && !s.closed
	s.mu.Unlock()
	if !idle {
		return
	}
	if err := s.launch(); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, errRunning) {
		s.log.Error("app did not start", "err", err)
		s.mu.Lock()
		s.exitLog = append(s.exitLog, time.Now())
		s.st.LastExit = err.Error()
		s.mu.Unlock()
	}
}

// SetCommand replaces the command for the next start (a deploy's new
// --app-command, applied by Restart).
func (s *Supervisor) SetCommand(command string) {
	s.mu.Lock()
	s.cfg.Command = command
	s.mu.Unlock()
}

// Restart stops the running process gracefully (SIGTERM to its group,
// SIGKILL after StopGrace) and starts a new one at once.
func (s *Supervisor) Restart(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case !s.started:
		s.mu.Unlock()
		return ErrNotStarted
	}
	s.hold = true
	s.mu.Unlock()
	s.stop(ctx)
	// The loop stays held until this start is done: it wakes on its own
	// timer and would otherwise start a process between the stop and this
	// launch, which would then fail with errRunning.
	err := s.launch()
	s.mu.Lock()
	s.hold = false
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return err
}

// stop ends the current process, if any, and waits until it was reaped.
func (s *Supervisor) stop(ctx context.Context) {
	s.mu.Lock()
	cmd, r := s.cmd, s.run
	if cmd != nil {
		r.asked = true
	}
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	pid := cmd.Process.Pid
	s.log.Info("stopping app", "pid", pid, "grace", s.cfg.StopGrace)
	_ = signalGroup(pid, syscall.SIGTERM)
	t := time.NewTimer(s.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		s.log.Warn("app did not stop within the grace; killing it", "pid", pid)
	case <-ctx.Done():
	}
	// Whatever the shell left in its group goes too.
	_ = signalGroup(pid, syscall.SIGKILL)
	<-r.done
	s.mu.Lock()
	s.setState(StateStopped)
	s.mu.Unlock()
}

// Close stops the process gracefully and ends the restart loop. It is
// idempotent, and every call returns only once the process is stopped and
// the loop has ended, whichever call runs the stop.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	if !s.started {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	if s.closed {
		// Another Close runs the stop; the loop ends only after it.
		done := s.loopDone
		s.mu.Unlock()
		<-done
		return nil
	}
	// Closed before the stop: a Restart under way then cannot start a
	// process after it (launch refuses), nor can the loop.
	s.closed = true
	s.mu.Unlock()
	s.stop(context.Background())
	s.cancel()
	<-s.loopDone
	return nil
}

package appproc

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newSup(t *testing.T, cfg Config) (*Supervisor, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(lb, nil))
	if cfg.Instance == "" {
		cfg.Instance = t.TempDir()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, lb
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		<-time.After(20 * time.Millisecond) // poll interval of a bounded wait
	}
}

// readPID waits for a pid file the command writes.
func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitUntil(t, 10*time.Second, "pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func TestOutputLinesAndRestartsWithCrashLoop(t *testing.T) {
	s, lb := newSup(t, Config{
		Command:    `echo "hello from $COHORT_TEST_NAME"; echo oops >&2; exit 3`,
		Env:        []string{"COHORT_TEST_NAME=app"},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
	})
	waitUntil(t, 10*time.Second, "three exits", func() bool { return s.Status().Exits >= 3 })
	st := s.Status()
	if !st.CrashLoop || st.Restarts < 2 || st.LastExit != "exit status 3" {
		t.Fatalf("status after three exits = %+v, want a crash loop, restarts and exit status 3", st)
	}
	out := lb.String()
	for _, want := range []string{`msg="hello from app" component=app stream=stdout`, `msg=oops component=app stream=stderr`, "app exited; restarting"} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestCloseStopsTheWholeGroupTermThenKill(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child.pid")
	// The command ignores SIGTERM and leaves a background child: Close
	// must still end both, after the grace.
	s, lb := newSup(t, Config{
		Command:   `trap '' TERM; sleep 1000 & echo $! > ` + child + `; while :; do sleep 1; done`,
		StopGrace: 300 * time.Millisecond,
	})
	pid := readPID(t, child)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "background child gone", func() bool { return !alive(pid) })
	if st := s.Status(); st.State != StateStopped || st.PID != 0 {
		t.Fatalf("status after Close = %+v", st)
	}
	if !strings.Contains(lb.String(), "did not stop within the grace") {
		t.Fatalf("log does not say the app was killed after the grace:\n%s", lb.String())
	}
}

func TestRestartStartsANewProcess(t *testing.T) {
	dir := t.TempDir()
	pidf := filepath.Join(dir, "pid")
	s, _ := newSup(t, Config{Command: `echo $$ > ` + pidf + `.tmp && mv ` + pidf + `.tmp ` + pidf + `; exec sleep 1000`})
	first := readPID(t, pidf)
	_ = os.Remove(pidf)
	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := readPID(t, pidf)
	if first == second || alive(first) {
		t.Fatalf("restart kept the old process %d (new %d)", first, second)
	}
	if st := s.Status(); st.Exits != 0 || st.Restarts != 1 {
		t.Fatalf("an asked restart counted as an exit: %+v", st)
	}
}

// TestRestartNeverRacesTheLoop restarts many times in a row while the
// supervisor's loop wakes every microsecond. The loop must not start the
// next process between Restart's stop and its start (Restart then failed
// with "app already running", and a rolling restart stopped at that
// node); a loop that sees an exit late must not count an asked stop as a
// crash; a stop right after a start must not lose its SIGTERM and wait
// out the grace.
func TestRestartNeverRacesTheLoop(t *testing.T) {
	s, lb := newSup(t, Config{Command: `exec sleep 1000`, MinBackoff: time.Microsecond, MaxBackoff: time.Microsecond, StopGrace: 5 * time.Second})
	for i := range 100 {
		if err := s.Restart(context.Background()); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
	}
	if st := s.Status(); st.Exits != 0 || st.Restarts != 100 || st.State != StateRunning {
		t.Fatalf("after 100 asked restarts: %+v\n%s", st, lb)
	}
	if strings.Contains(lb.String(), "did not stop within the grace") {
		t.Fatalf("a stop waited out the grace:\n%s", lb)
	}
}

// TestCloseDuringRestartsLeavesNoProcess closes the supervisor while
// another goroutine restarts the app over and over (a shutdown during a
// rolling restart): once Close and the last Restart returned, no process
// of the instance may be left running.
func TestCloseDuringRestartsLeavesNoProcess(t *testing.T) {
	for i := range 20 {
		inst := t.TempDir()
		s, err := New(Config{Command: `exec sleep 1000`, Instance: inst})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for s.Restart(context.Background()) == nil {
			}
		}()
		waitUntil(t, 10*time.Second, "a few restarts", func() bool { return s.Status().Restarts >= 2 })
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		<-done
		// The group's SIGKILL is delivered asynchronously: poll.
		t.Cleanup(func() { killLeftovers(inst) })
		waitUntil(t, 5*time.Second, fmt.Sprintf("round %d: no process left after Close", i), func() bool { return marked(inst) == 0 })
	}
}

func TestEveryCloseWaitsForTheStop(t *testing.T) {
	dir := t.TempDir()
	pidf := filepath.Join(dir, "pid")
	// The command ignores SIGTERM: the stop lasts the whole grace, and a
	// Close that returned before its end would see the app not stopped.
	s, _ := newSup(t, Config{
		Command:   `trap '' TERM; echo $$ > ` + pidf + `.tmp && mv ` + pidf + `.tmp ` + pidf + `; while :; do sleep 1; done`,
		StopGrace: 500 * time.Millisecond,
	})
	readPID(t, pidf)
	var wg sync.WaitGroup
	after := make(chan Status, 4)
	for range 4 {
		wg.Go(func() {
			_ = s.Close()
			after <- s.Status()
		})
	}
	wg.Wait()
	close(after)
	for st := range after {
		if st.State != StateStopped || st.PID != 0 {
			t.Fatalf("a Close returned before the stop ended: status %+v", st)
		}
	}
}

// marked counts the live processes carrying instance's marker.
func marked(instance string) int {
	want := []byte(MarkerEnv + "=" + instance + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	n := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || !alive(pid) {
			continue
		}
		if env, err := os.ReadFile(filepath.Join(d, "environ")); err == nil && bytes.Contains(append(env, 0), want) {
			n++
		}
	}
	return n
}
func TestStartKillsLeftoversOfTheSameInstance(t *testing.T) {
	inst := t.TempDir()
	left := exec.Command("sleep", "1000")
	left.Env = append(os.Environ(), MarkerEnv+"="+inst)
	other := exec.Command("sleep", "1000")
	other.Env = append(os.Environ(), MarkerEnv+"="+inst+"-other")
	for _, c := range []*exec.Cmd{left, other} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = c.Wait() }()
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = left.Process.Kill() })
	newSup(t, Config{Command: "exec sleep 1000", Instance: inst})
	waitUntil(t, 5*time.Second, "leftover killed", func() bool { return !alive(left.Process.Pid) })
	if !alive(other.Process.Pid) {
		t.Fatal("Start killed a process of another instance")
	}
}

// TestAppDiesWithItsParent runs a supervisor in a child process (this test
// binary in helper mode), kills that child with SIGKILL, and checks that
// the app and what it started in the background die too.
func TestAppDiesWithItsParent(t *testing.T) {
	if os.Getenv("APPPROC_HELPER") != "" {
		s, err := New(Config{Command: os.Getenv("APPPROC_HELPER"), Instance: os.Getenv("APPPROC_INSTANCE")})
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Start(context.Background())
		select {} // until killed
	}
	dir := t.TempDir()
	pidf := filepath.Join(dir, "pids")
	helper := exec.Command(os.Args[0], "-test.run=^TestAppDiesWithItsParent$")
	helper.Env = append(os.Environ(),
		"APPPROC_HELPER=sleep 1000 & echo $! $$ > "+pidf+".tmp && mv "+pidf+".tmp "+pidf+"; wait",
		"APPPROC_INSTANCE="+dir)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	waitUntil(t, 20*time.Second, "app pids", func() bool {
		b, err := os.ReadFile(pidf)
		if err != nil {
			return false
		}
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return len(pids) == 2
	})
	t.Cleanup(func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	_ = helper.Process.Signal(syscall.SIGKILL)
	_ = helper.Wait()
	waitUntil(t, 5*time.Second, "app processes gone after their parent's kill -9", func() bool {
		return !alive(pids[0]) && !alive(pids[1])
	})
}

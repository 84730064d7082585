package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/raft"
)

// directLog applies commands straight to the state machine, as a
// single-node log would, so the scheduler's decisions can be tested
// without Raft.
type directLog struct {
	mu    sync.Mutex
	sm    raft.StateMachine
	index uint64
}

func (l *directLog) Apply(_ context.Context, typ string, payload []byte) (raft.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.index++
	data, err := l.sm.Apply(raft.Entry{Index: l.index, Term: 1, Type: typ, Origin: "n1", Time: time.Now().UTC(), Payload: payload})
	return raft.Result{Index: l.index, Data: data}, err
}

func (l *directLog) Register(_ string, sm raft.StateMachine, _ ...string) error {
	l.sm = sm
	return nil
}
func (l *directLog) OnLeader(func(context.Context, uint64)) {}
func (l *directLog) IsLeader() bool                         { return true }
func (l *directLog) NodeID() string                         { return "n1" }

func TestMisfirePolicies(t *testing.T) {
	tests := []struct {
		policy  string
		catchUp int
		ran     int // runs started for the 11 missed occurrences
		misfire int
	}{
		{MisfireFireOnce, 0, 1, 10},
		{MisfireSkip, 0, 0, 11},
		{MisfireFireAll, 3, 3, 8},
		{MisfireFireAll, 20, 11, 0},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			// The scheduler's clock stands 30 s past a minute, so the newest
			// occurrence is late whatever the wall clock says.
			now := time.Now().UTC().Truncate(time.Minute).Add(30 * time.Second)
			r, err := New(Config{Log: &directLog{}, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			started := make(chan string, 32)
			err = r.Register("m", "@every 1m", func(ctx context.Context, run Run) error {
				started <- run.Key
				return nil
			}, WithMisfire(tt.policy, tt.catchUp, time.Second), WithConcurrency(ConcurrencyAllow))
			if err != nil {
				t.Fatal(err)
			}
			// The job's cursor lies 11 occurrences in the past (a leaderless
			// gap), the newest at least 2 s late.
			cursor := now.Truncate(time.Minute).Add(-10*time.Minute - time.Second)
			if _, err := r.propose(context.Background(), cmdInit, initCmd{Job: "m", Cursor: cursor}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := r.step(ctx, r.jobs["m"], r.lg); err != nil {
				t.Fatal(err)
			}
			for range tt.ran {
				select {
				case <-started:
				case <-time.After(10 * time.Second):
					t.Fatal("a run did not start")
				}
			}
			cancel()
			r.runsWG.Wait()
			var misfired int
			for _, h := range r.state.view("m").History {
				if h.Status == StatusMisfired {
					misfired++
				}
			}
			if misfired != tt.misfire || len(started) != 0 {
				t.Fatalf("misfired %d (want %d), extra runs %d", misfired, tt.misfire, len(started))
			}
			// The next step finds nothing due: every occurrence was handled once.
			ctx2, cancel2 := context.WithCancel(context.Background())
			defer cancel2()
			if err := r.step(ctx2, r.jobs["m"], r.lg); err != nil {
				t.Fatal(err)
			}
			select {
			case k := <-started:
				if tt.ran > 0 {
					// A leftover active run is recovered (rerun): the earlier
					// runs were cancelled with their leader context.
					t.Logf("rerun of %s after its leader context ended", k)
				} else {
					t.Fatalf("unexpected run %s", k)
				}
			default:
			}
			cancel2()
			r.runsWG.Wait()
		})
	}
}

func TestRunOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		fn       func(calls int) Func
		opts     []Option
		status   string
		attempts int
	}{
		{"retries until success", func(calls int) Func {
			return func(ctx context.Context, run Run) error {
				if run.Attempt < 3 {
					return errors.New("flaky")
				}
				return nil
			}
		}, []Option{WithRetries(3, 10*time.Millisecond, 40*time.Millisecond)}, StatusSucceeded, 3},
		{"retries exhausted", func(int) Func {
			return func(ctx context.Context, run Run) error { return errors.New("broken") }
		}, []Option{WithRetries(1, time.Millisecond, time.Millisecond)}, StatusFailed, 2},
		{"timeout", func(int) Func {
			return func(ctx context.Context, run Run) error { <-ctx.Done(); return ctx.Err() }
		}, []Option{WithTimeout(20 * time.Millisecond)}, StatusTimeout, 1},
		{"panic is a failure", func(int) Func {
			return func(ctx context.Context, run Run) error { panic("boom") }
		}, nil, StatusFailed, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(Config{Log: &directLog{}})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Register("j", "@daily", tt.fn(0), tt.opts...); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := r.propose(ctx, cmdRequest, suspendCmd{Job: "j"}); err != nil {
				t.Fatal(err)
			}
			if _, err := r.propose(ctx, cmdInit, initCmd{Job: "j", Cursor: time.Now().UTC()}); err != nil {
				t.Fatal(err)
			}
			if err := r.step(ctx, r.jobs["j"], r.lg); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 10*time.Second, func() (bool, string) {
				return len(r.state.view("j").History) == 1, fmt.Sprintf("no finished run; state %+v", r.state.view("j"))
			})
			if h := r.state.view("j").History; h[0].Status != tt.status || h[0].Attempts != tt.attempts || !h[0].Manual {
				t.Fatalf("run %+v, want status %s after %d attempts", h[0], tt.status, tt.attempts)
			}
			cancel()
			r.runsWG.Wait()
		})
	}
}

func TestConcurrencyReplace(t *testing.T) {
	r, err := New(Config{Log: &directLog{}})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan string, 4)
	if err := r.Register("j", "@daily", func(ctx context.Context, run Run) error {
		started <- run.Key
		<-ctx.Done()
		return ctx.Err()
	}, WithConcurrency(ConcurrencyReplace)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, _ = r.propose(ctx, cmdInit, initCmd{Job: "j", Cursor: time.Now().UTC()})
	for i := range 2 {
		if _, err := r.propose(ctx, cmdRequest, suspendCmd{Job: "j"}); err != nil {
			t.Fatal(err)
		}
		if err := r.step(ctx, r.jobs["j"], r.lg); err != nil {
			t.Fatal(err)
		}
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d did not start", i)
		}
	}
	st := r.state.view("j")
	if len(st.Active) != 1 || len(st.History) != 1 || st.History[0].Status != StatusReplaced {
		t.Fatalf("state %+v, want one replaced run and one running", st)
	}
	cancel()
	r.runsWG.Wait()
}

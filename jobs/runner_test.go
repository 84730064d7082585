package jobs

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

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
			r, err := New(Config{Log: &directLog{}, Logger: slog.New(slog.DiscardHandler)})
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
			now := time.Now().UTC()
			if d := now.Sub(now.Truncate(time.Minute)); d < 2*time.Second {
				time.Sleep(2*time.Second - d) // the clock, not a state: keep clear of the minute
				now = time.Now().UTC()
			}
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

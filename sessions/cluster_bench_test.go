package sessions_test

import (
	"context"
	"testing"

	"github.com/cohortserver/cohort/sessions"
	"github.com/cohortserver/cohort/testcluster"
)

// BenchmarkCommit is one request's change committed through Raft on a
// 3-node in-process cluster (real sockets, bbolt logs with fsync): from the
// leader and from a follower (forwarded), sequential and with 64 requests
// in flight on as many sessions.
func BenchmarkCommit(b *testing.B) {
	c := testcluster.New(b, 3)
	leader := c.WaitLeader(b)
	follower := c.Followers()[0]
	for _, tc := range []struct {
		name string
		nd   *testcluster.Node
		par  bool
	}{
		{"leader/sequential", leader, false},
		{"follower/sequential", follower, false},
		{"leader/64-concurrent", leader, true},
		{"follower/64-concurrent", follower, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := tc.nd.Node().Sessions()
			if !tc.par {
				ctx := sessions.NewTestContext(context.Background(), m)
				i := 0
				for b.Loop() {
					i++
					m.Put(ctx, "n", i)
					if err := m.Save(ctx); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(32) // 2 CPUs: 64 goroutines
			b.RunParallel(func(pb *testing.PB) {
				ctx := sessions.NewTestContext(context.Background(), m)
				i := 0
				for pb.Next() {
					i++
					m.Put(ctx, "n", i)
					if err := m.Save(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

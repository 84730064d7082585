package kv

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkExpiryPass times one background expiry pass over a store of a
// million keys, one in a hundred with an expiry and none expired: the
// store's lock is held for that long, once a second, on the leader.
func BenchmarkExpiryPass(b *testing.B) {
	clk := newFakeClock()
	s := newLocal(Config{}, clk.now)
	defer s.Close()
	for batch := range 100 {
		mset := []string{"mset"}
		for i := range 10_000 {
			mset = append(mset, fmt.Sprintf("k%d-%d", batch, i), "v")
		}
		r, err := s.Do(b.Context(), 0, argv(mset...))
		if err != nil || r.Kind == kindErr {
			b.Fatal(err, show(r))
		}
		if _, err := s.Do(b.Context(), 0, argv("set", fmt.Sprintf("ttl%d", batch), "v", "EX", "100")); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 9_900 {
		if _, err := s.Do(b.Context(), 0, argv("expire", fmt.Sprintf("k0-%d", i), "100")); err != nil {
			b.Fatal(err)
		}
	}
	now := clk.now().Add(time.Second).UnixNano()
	b.ResetTimer()
	for b.Loop() {
		if keys, _ := s.expiredKeys(now); len(keys) != 0 {
			b.Fatalf("%d keys expired", len(keys))
		}
	}
}

package metrics

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFrontRequestSeries checks that the front's per-request counts land
// in the series of their route kind and status class, from many
// goroutines at once (the series are cached per kind), and that no series
// exists before its first request.
func TestFrontRequestSeries(t *testing.T) {
	e := NewEvents()
	reg := New()
	if err := reg.Register(e); err != nil {
		t.Fatal(err)
	}
	e.InitRoutes("forwarded")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				e.FrontRequest("local", 200, time.Millisecond, 1)
				e.FrontRequest("local", 404, time.Millisecond, 1)
				e.FrontRequest("forwarded", 502, time.Millisecond, 3)
			}
		})
	}
	wg.Wait()
	e.FrontRequest("local", 0, time.Millisecond, 1)   // out of range: its own class
	e.FrontRequest("local", 700, time.Millisecond, 1) // likewise
	want := map[string]float64{
		"cohort_front_requests_total|code=0xx|route=local":      1,
		"cohort_front_requests_total|code=2xx|route=local":      800,
		"cohort_front_requests_total|code=4xx|route=local":      800,
		"cohort_front_requests_total|code=5xx|route=forwarded":  800,
		"cohort_front_requests_total|code=7xx|route=local":      1,
		"cohort_front_retries_total|route=forwarded":            1600,
		"cohort_front_request_duration_seconds|route=local":     1602,
		"cohort_front_request_duration_seconds|route=forwarded": 800,
	}
	got := scrape(t, reg)
	for k := range got {
		if !strings.HasPrefix(k, "cohort_front_") {
			delete(got, k)
		}
	}
	if !maps.Equal(got, want) {
		keys := slices.Sorted(maps.Keys(got))
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %g\n", k, got[k])
		}
		t.Fatalf("series:\n%s\nwant %v", b.String(), want)
	}
}

package metrics

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gather returns every series of reg as name|label=value...: value (the
// sample count for a histogram).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "|" + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestFrontRequestSeries checks that the front's per-request counts land
// in the series of their route kind and status class, from many
// goroutines at once (the series are cached per kind), and that no series
// exists before its first request.
func TestFrontRequestSeries(t *testing.T) {
	e := NewEvents()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
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
	got := gather(t, reg)
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

package main

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// sample is what one round of load measured.
type sample struct {
	ops      float64 // successful operations per second
	p50, p99 time.Duration
	ok, fail int
	errs     map[string]int // a few failure reasons with counts

	writeP50, writeP99 time.Duration // of the POSTs alone, when a mix has them
}

// summarize builds a sample from the latencies of successful operations.
func summarize(lat []time.Duration, fail int, wall time.Duration, errs map[string]int) sample {
	slices.Sort(lat)
	s := sample{ok: len(lat), fail: fail, errs: errs}
	if wall > 0 {
		s.ops = float64(len(lat)) / wall.Seconds()
	}
	s.p50 = quantile(lat, 0.50)
	s.p99 = quantile(lat, 0.99)
	return s
}

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// attackHTTP drives HTTP load with vegeta as a closed loop: conc workers,
// each sends its next request when the previous one answered (rate 0 =
// as fast as the workers go). next fills the target of each request.
func attackHTTP(ctx context.Context, conc int, d time.Duration, next vegeta.Targeter) sample {
	tr := &http.Transport{
		MaxIdleConns:        4 * conc,
		MaxIdleConnsPerHost: conc,
		MaxConnsPerHost:     conc,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	atk := vegeta.NewAttacker(
		vegeta.Client(&http.Client{Transport: tr, Timeout: 30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}),
		vegeta.Workers(uint64(conc)),
		vegeta.MaxWorkers(uint64(conc)),
	)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	lat := make([]time.Duration, 0, 1<<16)
	var posts []time.Duration
	errs := map[string]int{}
	fail := 0
	start := time.Now()
	for res := range atk.Attack(next, vegeta.Rate{}, d, "bench") {
		if res.Code >= 200 && res.Code < 300 && res.Error == "" {
			lat = append(lat, res.Latency)
			if res.Method == http.MethodPost {
				posts = append(posts, res.Latency)
			}
			continue
		}
		fail++
		reason := res.Error
		if reason == "" {
			reason = http.StatusText(int(res.Code))
		}
		if len(errs) < 8 || errs[reason] > 0 {
			errs[reason]++
		}
	}
	smp := summarize(lat, fail, time.Since(start), errs)
	slices.Sort(posts)
	smp.writeP50, smp.writeP99 = quantile(posts, 0.5), quantile(posts, 0.99)
	return smp
}

// closedLoop runs op from conc goroutines for d, each calling it again as
// soon as it returns. It is the load for the peers that do not speak
// HTTP (etcd's gRPC, Redis, memcached) and for the cohort side of the
// same scenarios, so both sides face the same loop.
func closedLoop(ctx context.Context, conc int, d time.Duration, op func(ctx context.Context, worker int) error) sample {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu    sync.Mutex
		all   []time.Duration
		fails atomic.Int64
		errs  = map[string]int{}
		wg    sync.WaitGroup
	)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx, w)
				if err != nil {
					if ctx.Err() != nil {
						break // cut by the end of the round, not a failure
					}
					fails.Add(1)
					mu.Lock()
					if len(errs) < 8 || errs[err.Error()] > 0 {
						errs[err.Error()]++
					}
					mu.Unlock()
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(all, int(fails.Load()), time.Since(start), errs)
}

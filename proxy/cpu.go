package proxy

import (
	"context"
	"math"
	"runtime"
	"sync/atomic"
	"time"
)

// cpuMeter samples this process's CPU use once a second.
type cpuMeter struct {
	frac atomic.Uint64 // float64 bits: share of all CPUs, 0..1
}

func newCPUMeter() *cpuMeter { return &cpuMeter{} }

func (c *cpuMeter) load() float64 { return math.Float64frombits(c.frac.Load()) }

func (c *cpuMeter) run(ctx context.Context) {
	prevCPU, ok := processCPU()
	if !ok {
		return
	}
	prevWall := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur, _ := processCPU()
			wall := now.Sub(prevWall)
			if wall > 0 {
				f := float64(cur-prevCPU) / float64(wall) / float64(runtime.NumCPU())
				c.frac.Store(math.Float64bits(min(max(f, 0), 1)))
			}
			prevCPU, prevWall = cur, now
		}
	}
}

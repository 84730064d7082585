package sessions

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func benchManager(b *testing.B) *Manager {
	m, err := New(&localLog{}, Config{})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkLocalRead is one attribute read from a handler: no network, no
// Raft, a map lookup and a scan of the session's blob.
func BenchmarkLocalRead(b *testing.B) {
	m := benchManager(b)
	ctx := NewTestContext(context.Background(), m)
	for i := range 10 {
		m.Put(ctx, fmt.Sprintf("key%d", i), fmt.Sprintf("value-%d", i))
	}
	if err := m.Save(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if m.GetString(ctx, "key7") != "value-7" {
			b.Fatal("wrong value")
		}
	}
}

// BenchmarkMiddlewareLoad is a whole read-only request through the
// middleware: cookie parse, token hash, lookup, local touch, one read.
func BenchmarkMiddlewareLoad(b *testing.B) {
	m := benchManager(b)
	var cookie string
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			m.Put(r.Context(), "user", "ann")
			return
		}
		_ = m.GetString(r.Context(), "user")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	cookie = rec.Header().Get("Set-Cookie")
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Cookie", cookie)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(discardWriter{h: http.Header{}}, req)
	}
	if s := m.Stats(); s.Applied != 1 {
		b.Fatalf("read-only requests appended entries: %+v", s)
	}
}

// cpuTime is the user+system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// BenchmarkMemoryPerSession reports the heap bytes each idle session
// costs beyond its payload (1 KiB in one attribute).
func BenchmarkMemoryPerSession(b *testing.B) {
	const n = 100_000
	payload, _ := encodeValue(bytes.Repeat([]byte("p"), 1024))
	t0 := time.Now()
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		st := newStore()
		for i := range n {
			c := commit{flags: flagCreate, newID: fmt.Sprintf("%016d", i), maxBytes: 1 << 20,
				idle: int64(time.Hour), lifetime: int64(time.Hour), ops: []op{{kind: opSet, key: "data", val: payload}}}
			if _, err := st.Apply(entry(cmdCommit, c.encode(), t0)); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / n
		b.ReportMetric(per, "B/session")
		b.ReportMetric(per-float64(len(payload)+len("data")+2), "B/overhead")
		runtime.KeepAlive(st)
	}
}

// BenchmarkSnapshotRestore persists and restores N sessions of 1 KiB:
// 100,000 by default, 1,000,000 with COHORT_BENCH_LARGE=1.
func BenchmarkSnapshotRestore(b *testing.B) {
	n := 100_000
	if os.Getenv("COHORT_BENCH_LARGE") == "1" {
		n = 1_000_000
	}
	payload, _ := encodeValue(bytes.Repeat([]byte("p"), 1000))
	st := newStore()
	t0 := time.Now()
	for i := range n {
		c := commit{flags: flagCreate, newID: fmt.Sprintf("%016d", i), maxBytes: 1 << 20,
			idle: int64(time.Hour), lifetime: int64(time.Hour), ops: []op{{kind: opSet, key: "data", val: payload}, {kind: opPrincipal, key: fmt.Sprint("user", i%1000)}}}
		if _, err := st.Apply(entry(cmdCommit, c.encode(), t0)); err != nil {
			b.Fatal(err)
		}
	}
	f, err := os.CreateTemp(b.TempDir(), "snap")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for b.Loop() {
		cpu0 := cpuTime()
		start := time.Now()
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		snap, err := st.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if err := snap.Persist(f); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		snap.Release()
		persisted := time.Since(start)
		cpu1 := cpuTime()
		size, _ := f.Seek(0, io.SeekCurrent)
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		st2 := newStore()
		if err := st2.Restore(io.LimitReader(f, size)); err != nil {
			b.Fatal(err)
		}
		total := time.Since(start)
		cpu2 := cpuTime()
		if len(st2.sessions) != n {
			b.Fatalf("restored %d of %d", len(st2.sessions), n)
		}
		b.ReportMetric(took.Seconds()*1000, "ms-snapshot")
		b.ReportMetric((persisted - took).Seconds(), "s-persist")
		b.ReportMetric((total - persisted).Seconds(), "s-restore")
		b.ReportMetric(float64(size)/(1<<20), "MiB")
		// CPU seconds of this process: what the wall times would be on an
		// idle machine (ours is shared by several engineers' builds).
		b.ReportMetric((cpu1 - cpu0).Seconds(), "cpu-s-persist")
		b.ReportMetric((cpu2 - cpu1).Seconds(), "cpu-s-restore")
	}
}

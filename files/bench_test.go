package files_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/testcluster"
)

// benchConfig slows the Raft timers: on a loaded shared machine the
// default LAN timers cause elections that measure the machine, not files.
var benchConfig = testcluster.WithConfig(func(cfg *config.Config) { cfg.RaftTimeoutScale = 4 })

// seqWriteBaseline writes size bytes to a file in dir in 1 MiB chunks and
// fdatasyncs it: the machine's own sequential write speed, in bytes/s.
func seqWriteBaseline(b *testing.B, dir string, size int64) float64 {
	b.Helper()
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	f, err := os.Create(filepath.Join(dir, "baseline.bin"))
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	start := time.Now()
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			b.Fatal(err)
		}
	}
	if err := fdatasync(f); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	f.Close()
	return float64(size) / el.Seconds()
}

// BenchmarkUpload3Copies: one upload through the Go API, stored on 3
// nodes, against the local sequential write with fdatasync measured in the
// same run. Size: 256 MiB, 1 GiB with COHORT_LONG=1.
func BenchmarkUpload3Copies(b *testing.B) {
	size := int64(256 << 20)
	if long() {
		size = 1 << 30
	}
	c := testcluster.New(b, 3, benchConfig)
	st := store(b, c.Node("n1"))
	base := seqWriteBaseline(b, c.Dir(), size)
	block := make([]byte, 1<<20)
	rand.Read(block)
	b.SetBytes(size)
	b.ResetTimer()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := st.Create(b.Context(), fmt.Sprintf("bench/%d", i), &repeatReader{buf: block, left: size, salt: byte(i)}, &files.WriteOptions{Size: size, SizeKnown: true}); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		if _, err := st.Remove(b.Context(), fmt.Sprintf("bench/%d", i), nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	rate := float64(size) * float64(b.N) / total.Seconds()
	b.ReportMetric(rate/1e6, "replicated-MB/s")
	b.ReportMetric(base/1e6, "local-fdatasync-MB/s")
	b.ReportMetric(rate/base, "ratio")
	// All three copies share this machine's one disk: the disk writes
	// three times the file.
	b.ReportMetric(3*rate/base, "disk-ratio-3-copies")
}

// repeatReader is left bytes of buf repeated (cheap: the benchmark
// measures the store, not a random generator); salt varies the content.
type repeatReader struct {
	buf  []byte
	left int64
	salt byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := copy(p, r.buf[r.off:])
	if r.off == 0 && n > 0 {
		p[0] ^= r.salt
	}
	r.off = (r.off + n) % len(r.buf)
	r.left -= int64(n)
	return n, nil
}

// BenchmarkSmallFiles16: 4 KiB files committed with 3 copies by 16
// concurrent writers; reports files/s.
func BenchmarkSmallFiles16(b *testing.B) {
	c := testcluster.New(b, 3, benchConfig)
	st := store(b, c.Node("n1"))
	body := strings.Repeat("x", 4096-16)
	var seq atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				i := seq.Add(1)
				content := fmt.Sprintf("%016d", i) + body
				if _, err := st.Create(b.Context(), fmt.Sprintf("small/%d/%d", i%64, i), strings.NewReader(content), nil); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "files/s")
}

// BenchmarkRaftFloor16: the same 16 writers proposing bare metadata
// commands (no content, no blob) straight to Raft. It is the floor the
// small-file figure is bounded by on this machine, measured the same way.
func BenchmarkRaftFloor16(b *testing.B) {
	c := testcluster.New(b, 3, benchConfig)
	cl := c.Node("n1").Node().Cluster()
	var seq atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				i := seq.Add(1)
				p := fmt.Sprintf(`{"path":"floor/%d/%d","sha256":"%064d","size":1,"mode":420}`, i%64, i, i)
				if _, err := cl.Apply(b.Context(), "files.put", []byte(p)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commits/s")
}

package files

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"
)

// fullSyncEvery is how often catch-up compares the whole manifest with the
// local blobs even when no commit asked for it.
const fullSyncEvery = time.Minute

// syncDebounce is how long catch-up waits after a commit for more commits
// before it starts a pass.
const syncDebounce = 200 * time.Millisecond

// SyncStatus is the progress of catch-up: fetching the blobs the manifest
// names and this node lacks.
type SyncStatus struct {
	Running      bool  `json:"running"`
	Passes       int   `json:"passes"`
	MissingFiles int   `json:"missing_files"` // blobs lacking when the pass started
	MissingBytes int64 `json:"missing_bytes"`
	DoneFiles    int   `json:"done_files"`
	DoneBytes    int64 `json:"done_bytes"`
	FailedFiles  int   `json:"failed_files"`
	Repaired     int   `json:"repaired"` // corrupt blobs replaced, since start
	// FetchedFiles and FetchedBytes count every blob catch-up pulled
	// since the node started, over all passes.
	FetchedFiles int       `json:"fetched_files"`
	FetchedBytes int64     `json:"fetched_bytes"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	FinishedAt   time.Time `json:"finished_at,omitzero"`
	BytesPerSec  float64   `json:"bytes_per_sec"`
	ETA          string    `json:"eta,omitempty"`
}

func (st *SyncStatus) finish() {
	if st.StartedAt.IsZero() {
		return
	}
	end := st.FinishedAt
	if st.Running {
		end = time.Now()
	}
	if el := end.Sub(st.StartedAt).Seconds(); el > 0 {
		st.BytesPerSec = float64(st.DoneBytes) / el
	}
	if st.Running && st.BytesPerSec > 0 {
		left := float64(st.MissingBytes-st.DoneBytes) / st.BytesPerSec
		st.ETA = (time.Duration(left * float64(time.Second))).Round(time.Second).String()
	}
}

// ScrubStatus is the progress of the scrubber.
type ScrubStatus struct {
	Passes       int       `json:"passes"`
	LastStarted  time.Time `json:"last_started,omitzero"`
	LastFinished time.Time `json:"last_finished,omitzero"`
	Checked      int       `json:"checked"`       // blobs in the last pass
	CheckedBytes int64     `json:"checked_bytes"` // bytes in the last pass
	Corrupt      int       `json:"corrupt"`       // found since start
}

func (s *Store) syncLoop(ctx context.Context) {
	t := time.NewTicker(fullSyncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.syncKick:
			// Coalesce the kicks of a burst of commits (a restarted node
			// replaying its log) into one pass.
			select {
			case <-ctx.Done():
				return
			case <-time.After(syncDebounce):
			}
		case <-t.C:
			s.mu.Lock()
			s.full = true
			s.mu.Unlock()
		}
		s.syncOnce(ctx)
	}
}

// syncOnce runs one catch-up pass: repairs, then the blobs named since the
// last pass (or the whole manifest when asked).
func (s *Store) syncOnce(ctx context.Context) {
	s.mu.Lock()
	full, pending, repair := s.full, s.pending, s.repair
	s.full, s.pending, s.repair = false, make(map[string]int64), make(map[string]bool)
	s.mu.Unlock()

	for sum := range repair {
		s.repairBlob(ctx, sum)
	}
	want := pending
	if full {
		want = s.state.blobSizes()
	}
	type job struct {
		sum  string
		size int64
	}
	var jobs []job
	var bytes int64
	for sum, size := range want {
		if !s.state.referenced(sum) || s.inline.queued(sum) || s.blobs.has(sum) {
			continue
		}
		jobs = append(jobs, job{sum, size})
		bytes += size
	}
	if len(jobs) == 0 {
		return
	}
	names := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		names[j.sum] = true
	}
	holders := s.state.blobHolders(names)
	start := time.Now()
	s.mu.Lock()
	s.progress = SyncStatus{Running: true, Passes: s.progress.Passes + 1, Repaired: s.progress.Repaired,
		FetchedFiles: s.progress.FetchedFiles, FetchedBytes: s.progress.FetchedBytes,
		MissingFiles: len(jobs), MissingBytes: bytes, StartedAt: start}
	s.mu.Unlock()
	s.log.Info("catch-up started", "missing_files", len(jobs), "missing_bytes", bytes)

	var doneFiles, failed atomic.Int64
	var doneBytes atomic.Int64
	ch := make(chan job)
	var wg sync.WaitGroup
	for range min(s.cfg.SyncWorkers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if err := s.ensureLocal(ctx, j.sum, holders[j.sum]); err != nil {
					if ctx.Err() == nil {
						s.log.Warn("catch-up could not fetch a blob", "sha256", j.sum, "err", err)
					}
					failed.Add(1)
					continue
				}
				doneFiles.Add(1)
				doneBytes.Add(j.size)
				s.mu.Lock()
				s.progress.DoneFiles, s.progress.DoneBytes = int(doneFiles.Load()), doneBytes.Load()
				s.progress.FetchedFiles++
				s.progress.FetchedBytes += j.size
				s.mu.Unlock()
			}
		}()
	}
	logT := time.NewTicker(2 * time.Second)
	defer logT.Stop()
feed:
	for _, j := range jobs {
		for {
			select {
			case ch <- j:
				continue feed
			case <-ctx.Done():
				break feed
			case <-logT.C:
				st := s.Status().Sync
				s.log.Info("catch-up progress", "files", st.DoneFiles, "of_files", st.MissingFiles,
					"bytes", st.DoneBytes, "of_bytes", st.MissingBytes, "eta", st.ETA)
			}
		}
	}
	close(ch)
	wg.Wait()
	s.mu.Lock()
	s.progress.Running = false
	s.progress.FinishedAt = time.Now()
	s.progress.DoneFiles, s.progress.DoneBytes = int(doneFiles.Load()), doneBytes.Load()
	s.progress.FailedFiles = int(failed.Load())
	st := s.progress
	s.mu.Unlock()
	st.finish()
	s.log.Info("catch-up finished", "files", st.DoneFiles, "bytes", st.DoneBytes, "failed", st.FailedFiles,
		"took", time.Since(start).Round(time.Millisecond), "bytes_per_sec", int64(st.BytesPerSec))
	if failed.Load() > 0 {
		// Try again at the next full pass (or commit).
		s.mu.Lock()
		s.full = true
		s.mu.Unlock()
	}
	s.kickMirror()
}

// repairBlob re-checks a blob reported corrupt and, when it is, moves it
// aside and fetches a good copy.
func (s *Store) repairBlob(ctx context.Context, sum string) {
	if _, err := s.blobs.verify(ctx, sum, 0); err == nil || errors.Is(err, fs.ErrNotExist) && !s.state.referenced(sum) {
		return
	} else if errors.Is(err, ErrCorrupt) {
		if err := s.blobs.quarantine(sum); err != nil {
			s.log.Error("cannot move a corrupt blob aside", "sha256", sum, "err", err)
			return
		}
	}
	if !s.state.referenced(sum) {
		return
	}
	if err := s.ensureLocal(ctx, sum, s.state.holders(sum)); err != nil {
		s.log.Error("corrupt blob could not be repaired yet", "sha256", sum, "err", err)
		s.mu.Lock()
		s.repair[sum] = true
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.progress.Repaired++
	s.mu.Unlock()
	s.log.Warn("corrupt blob repaired from a peer", "sha256", sum)
}

func (s *Store) scrubLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.ScrubInterval):
		}
		if _, err := s.ScrubNow(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scrub failed", "err", err)
		}
	}
}

// ScrubNow re-hashes every referenced local blob (at most ScrubRate bytes
// per second), repairs the corrupt ones from peers, and reports how many
// were corrupt.
func (s *Store) ScrubNow(ctx context.Context) (ScrubStatus, error) {
	start := time.Now()
	s.mu.Lock()
	s.scrub.LastStarted = start
	s.mu.Unlock()
	var checked, corrupt int
	var bytes int64
	for sum := range s.state.blobSizes() {
		if ctx.Err() != nil {
			return s.Status().Scrub, ctx.Err()
		}
		n, err := s.blobs.verify(ctx, sum, s.cfg.ScrubRate)
		bytes += n
		switch {
		case err == nil:
			checked++
		case errors.Is(err, ErrCorrupt):
			checked++
			corrupt++
			s.log.Error("scrubber found a corrupt blob", "sha256", sum, "err", err)
			s.reportCorrupt(sum)
		}
	}
	s.mu.Lock()
	s.scrub.Passes++
	s.scrub.LastFinished = time.Now()
	s.scrub.Checked, s.scrub.CheckedBytes = checked, bytes
	s.scrub.Corrupt += corrupt
	st := s.scrub
	s.mu.Unlock()
	s.log.Info("scrub finished", "blobs", checked, "bytes", bytes, "corrupt", corrupt, "took", time.Since(start).Round(time.Millisecond))
	return st, nil
}

func (s *Store) gcLoop(ctx context.Context) {
	every := min(max(s.cfg.GCGrace/4, time.Second), 10*time.Minute)
	for {
		wait := every
		if s.lowDisk() {
			wait = min(wait, emergencyEvery)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		s.GCNow()
	}
}

// Emergency collection, when the disk runs low (Config.LowDiskBytes).
const (
	// EmergencyGrace is how old an unreferenced blob must be to go under
	// disk pressure: a write between its blob and its commit is held
	// (Store.hold) on the node it entered, and the peers it pushed the
	// blob to commit well within this.
	EmergencyGrace = time.Minute
	emergencyEvery = 5 * time.Second
)

// lowDisk reports whether the disk holding the blobs has less free space
// than Config.LowDiskBytes.
func (s *Store) lowDisk() bool {
	if s.cfg.LowDiskBytes < 0 {
		return false
	}
	free, ok := freeSpace(s.cfg.Dir)
	return ok && free < s.cfg.LowDiskBytes
}

// hold keeps blob sum from emergency collection until the returned
// function is called (a write through this node, until its commit).
func (s *Store) hold(sum string) (release func()) {
	s.mu.Lock()
	s.held[sum]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.held[sum]--; s.held[sum] <= 0 {
			delete(s.held, sum)
		}
		s.mu.Unlock()
	}
}

func (s *Store) isHeld(sum string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[sum] > 0
}

// GCNow removes the blobs no live file references, and the temp and
// quarantined files, that are older than the grace period. When the disk
// is low (Config.LowDiskBytes), unreferenced blobs that no write through
// this node holds go once older than EmergencyGrace instead. It returns
// how many files it removed.
func (s *Store) GCNow() int {
	cutoff := time.Now().Add(-s.cfg.GCGrace)
	blobCutoff := cutoff
	emergency := s.lowDisk()
	if emergency {
		blobCutoff = time.Now().Add(-min(EmergencyGrace, s.cfg.GCGrace))
	}
	var doomed []string
	_ = s.blobs.walk(func(b blobEntry) {
		if b.modTime.Before(blobCutoff) && !s.state.referenced(b.sum) {
			doomed = append(doomed, b.sum)
		}
	})
	n := 0
	for _, sum := range doomed {
		// Re-check: a commit may have referenced it since the walk.
		if s.state.referenced(sum) || (emergency && s.isHeld(sum)) {
			continue
		}
		if err := s.blobs.remove(sum); err == nil {
			n++
		}
	}
	n += s.blobs.sweepDir("tmp", cutoff)
	n += s.blobs.sweepDir("quarantine", cutoff)
	if n > 0 {
		s.log.Info("garbage collected", "files", n, "emergency", emergency)
	} else if emergency {
		s.log.Debug("disk low and no unreferenced blob to collect", "dir", s.cfg.Dir)
	}
	return n
}

package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Node-to-node endpoints, on the cluster port.
const (
	internalBlobs  = "/_internal/files/blobs"
	internalCommit = "/_internal/files/commit"
	headerExpect   = "X-Cohort-Sha256"
	// A writer streaming new content to its peers declares what it sent
	// in two trailers: the SHA-256 that names the blob and the CRC-32C the
	// peer checks the transfer with (see ingestOpts.declared).
	trailerSum = "X-Cohort-Content-Sha256"
	trailerCRC = "X-Cohort-Content-Crc32c"
)

// emptySum is the SHA-256 of no bytes: every node can make that blob.
const emptySum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// stallTimeout aborts a push to a peer that accepts no byte for this long;
// the write goes on with the other nodes.
const stallTimeout = 15 * time.Second

func (s *Store) routesInternal() {
	s.cfg.Log.HandleInternal("POST "+internalBlobs, http.HandlerFunc(s.handlePush))
	s.cfg.Log.HandleInternal("GET "+internalBlobs+"/{sum}", http.HandlerFunc(s.handleFetch))
	s.cfg.Log.HandleInternal("GET "+internalExists, http.HandlerFunc(s.handleExists))
	s.cfg.Log.HandleLeaderCall(existsCall, s.callExists)
	s.cfg.Log.HandleInternal("GET "+internalCommit, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]uint64{"index": s.cfg.Log.Info().CommitIndex})
	}))
}

// handlePush stores a blob a writer streams to this node.
func (s *Store) handlePush(w http.ResponseWriter, r *http.Request) {
	if !s.running() {
		writeErr(w, http.StatusServiceUnavailable, "files store is not running")
		return
	}
	expect := r.Header.Get(headerExpect)
	if expect != "" && !validSum(expect) {
		writeErr(w, http.StatusBadRequest, "bad "+headerExpect)
		return
	}
	o := ingestOpts{limit: s.cfg.MaxFileBytes, expect: expect}
	if _, sealed := r.Trailer[trailerCRC]; sealed && expect == "" {
		o.declared = func() (string, uint32, error) { return declaredBy(r.Trailer) }
	}
	res, err := s.blobs.ingest(r.Context(), r.Body, o)
	if err != nil {
		err = s.noSpace(err)
		s.log.Debug("blob push refused", "from", peerOf(r), "err", err)
		writeErr(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// handleFetch serves a local blob to a peer. The content is verified as it
// is sent; on a mismatch the answer is cut short, so the peer never takes
// a corrupt blob for a good one.
func (s *Store) handleFetch(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sum")
	if !validSum(sum) {
		writeErr(w, http.StatusBadRequest, "bad blob name")
		return
	}
	f, err := s.blobs.openBlob(sum)
	if err != nil && s.inline.flush(sum) {
		// a small file's blob applied here and not yet written
		f, err = s.blobs.openBlob(sum)
	}
	if err != nil {
		writeErr(w, http.StatusNotFound, "blob not here")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	vf := newFile(Info{Path: "blob " + sum[:12], Size: fi.Size(), SHA256: sum}, f, func() { s.reportCorrupt(sum) })
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	bp := s.blobs.bufs.Get().(*[]byte)
	defer s.blobs.bufs.Put(bp)
	if _, err := io.CopyBuffer(w, vf, *bp); err != nil {
		s.log.Warn("blob fetch cut short", "sha256", sum, "to", peerOf(r), "err", err)
	}
}

// declaredBy reads the trailers of a sealed push.
func declaredBy(t http.Header) (string, uint32, error) {
	sum, crc := t.Get(trailerSum), t.Get(trailerCRC)
	if sum == "" || crc == "" {
		return "", 0, errors.New("the push ended without its checksum trailers")
	}
	v, err := strconv.ParseUint(crc, 16, 32)
	if err != nil {
		return "", 0, fmt.Errorf("bad %s trailer %q", trailerCRC, crc)
	}
	return sum, uint32(v), nil
}

func peerOf(r *http.Request) string { return r.Header.Get("X-Cohort-Node") }

// pushResult is a peer's answer to a push.
type pushResult struct {
	peer peer
	res  ingestResult
	err  error
}

// store writes the content to the local blob store while streaming it to
// every healthy peer, then makes sure a quorum holds it. It returns the
// blob and the nodes that hold it.
func (s *Store) store(ctx context.Context, r io.Reader, o WriteOptions) (ingestResult, []string, error) {
	peers, quorum, err := s.peers()
	if err != nil {
		return ingestResult{}, nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan pushResult, len(peers))
	fan := &fanout{}
	seal := new(sealedSum)
	var streamed []peer
	for _, p := range peers {
		if !s.healthy(p.id) {
			continue
		}
		pr, pw := io.Pipe()
		fan.add(pw)
		streamed = append(streamed, p)
		go func() {
			res, err := s.push(pctx, p, pr, "", seal, o)
			pr.CloseWithError(errOr(err, io.ErrClosedPipe))
			results <- pushResult{peer: p, res: res, err: err}
		}()
	}
	res, err := s.blobs.ingest(ctx, io.TeeReader(r, fan), ingestOpts{
		limit: s.cfg.MaxFileBytes,
		// The peers end their copies while this one is fsynced.
		complete: func(sum string) {
			seal.set(sum)
			fan.closeAll(nil)
		},
	})
	if err != nil {
		err = s.noSpace(err)
		fan.closeAll(err)
		cancel()
		for range streamed {
			<-results
		}
		return res, nil, err
	}
	fan.closeAll(nil)
	holders := []string{s.cfg.NodeID}
	var failed []peer
	for range streamed {
		pr := <-results
		switch {
		case pr.err != nil:
			s.log.Warn("blob push to peer failed", "peer", pr.peer.id, "err", pr.err)
			failed = append(failed, pr.peer)
		case pr.res.SHA256 != res.SHA256:
			s.log.Error("peer stored different content", "peer", pr.peer.id, "want", res.SHA256, "got", pr.res.SHA256)
			failed = append(failed, pr.peer)
		default:
			holders = append(holders, pr.peer.id)
		}
	}
	if len(holders) < quorum {
		// Second chance from the local blob, to peers that failed or were
		// skipped as unhealthy.
		for _, p := range peers {
			if len(holders) >= quorum {
				break
			}
			if containsID(holders, p.id) {
				continue
			}
			f, err := s.blobs.openBlob(res.SHA256)
			if err != nil {
				return res, nil, err
			}
			_, err = s.push(ctx, p, f, res.SHA256, nil, WriteOptions{Size: res.Size, SizeKnown: true})
			f.Close()
			if err == nil {
				holders = append(holders, p.id)
			}
		}
	}
	if len(holders) < quorum {
		return res, nil, fmt.Errorf("%w: %d of the %d needed hold it", ErrNoQuorum, len(holders), quorum)
	}
	return res, holders, nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// push streams body to peer p. The peer checks it against expect when
// that is set; otherwise, with seal, against the checksums the writer
// declares in trailers once it has hashed the whole stream.
func (s *Store) push(ctx context.Context, p peer, body io.Reader, expect string, seal *sealedSum, o WriteOptions) (ingestResult, error) {
	client := s.cfg.Log.Client()
	if client == nil {
		return ingestResult{}, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var trailer http.Header
	if expect == "" && seal != nil {
		// Trailers need a chunked body: the length stays unannounced.
		trailer = http.Header{trailerSum: nil, trailerCRC: nil}
		body = &sealedBody{r: body, seal: seal, trailer: trailer}
	}
	wd := &watchdog{cancel: cancel, r: body}
	stop := wd.start(stallTimeout)
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.addr+internalBlobs, wd)
	if err != nil {
		return ingestResult{}, fmt.Errorf("push to %s: %w", p.id, err)
	}
	if trailer != nil {
		req.Trailer = trailer
	} else if o.SizeKnown || o.Size > 0 {
		req.ContentLength = o.Size
	}
	req.Header.Set("X-Cohort-Node", s.cfg.NodeID)
	if expect != "" {
		req.Header.Set(headerExpect, expect)
	}
	resp, err := client.Do(req)
	if err != nil {
		return ingestResult{}, fmt.Errorf("push to %s: %w", p.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ingestResult{}, fmt.Errorf("push to %s: %s", p.id, readErr(resp))
	}
	var res ingestResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("push to %s: decode answer: %w", p.id, err)
	}
	return res, nil
}

// sealedSum is the SHA-256 of a stream being pushed, known once the writer
// has hashed the stream's last byte.
type sealedSum struct{ v atomic.Pointer[string] }

func (s *sealedSum) set(sum string) { s.v.Store(&sum) }

func (s *sealedSum) get() string {
	if p := s.v.Load(); p != nil {
		return *p
	}
	return ""
}

// sealedBody is a push's body: it computes the CRC-32C of what it sends and,
// at its end, puts it and the writer's SHA-256 in the request's trailers
// (net/http sends them once Read returns io.EOF).
type sealedBody struct {
	r       io.Reader
	crc     uint32
	seal    *sealedSum
	trailer http.Header
}

func (b *sealedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.crc = crc32.Update(b.crc, castagnoli, p[:n])
	if err == io.EOF {
		b.trailer.Set(trailerSum, b.seal.get())
		b.trailer.Set(trailerCRC, fmt.Sprintf("%08x", b.crc))
	}
	return n, err
}

func readErr(resp *http.Response) string {
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Sprintf("%d %s", resp.StatusCode, e.Error)
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// fanout copies every write to the peers' pipes. A peer whose pipe fails
// is dropped; the writer never fails because of a peer.
type fanout struct {
	ws   []*io.PipeWriter
	dead []bool
}

func (f *fanout) add(w *io.PipeWriter) {
	f.ws = append(f.ws, w)
	f.dead = append(f.dead, false)
}

func (f *fanout) Write(p []byte) (int, error) {
	for i, w := range f.ws {
		if f.dead[i] {
			continue
		}
		if _, err := w.Write(p); err != nil {
			f.dead[i] = true
		}
	}
	return len(p), nil
}

func (f *fanout) closeAll(err error) {
	for _, w := range f.ws {
		w.CloseWithError(err)
	}
}

// watchdog cancels a transfer whose body made no progress for a while.
type watchdog struct {
	cancel context.CancelFunc
	r      io.Reader
	mu     sync.Mutex
	last   time.Time
}

func (w *watchdog) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.mu.Lock()
	w.last = time.Now()
	w.mu.Unlock()
	return n, err
}

func (w *watchdog) start(limit time.Duration) func() {
	w.last = time.Now()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(limit / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				w.mu.Lock()
				idle := time.Since(w.last)
				w.mu.Unlock()
				if idle > limit {
					w.cancel()
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// fetchCall is one fetch of a blob that concurrent readers share.
type fetchCall struct {
	done chan struct{}
	err  error
}

// ensureLocal makes sure blob sum is in the local store, fetching it from
// a peer (holders first) when it is not.
func (s *Store) ensureLocal(ctx context.Context, sum string, holders []string) error {
	if s.blobs.has(sum) {
		return nil
	}
	if s.inline.flush(sum) && s.blobs.has(sum) {
		return nil
	}
	if sum == emptySum {
		_, err := s.blobs.ingest(ctx, bytes.NewReader(nil), ingestOpts{expect: sum})
		return err
	}
	s.mu.Lock()
	c := s.fetching[sum]
	if c == nil {
		c = &fetchCall{done: make(chan struct{})}
		s.fetching[sum] = c
		s.mu.Unlock()
		c.err = s.fetch(ctx, sum, holders)
		s.mu.Lock()
		delete(s.fetching, sum)
		s.mu.Unlock()
		close(c.done)
		return c.err
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch pulls blob sum from the first peer that serves a copy with the
// right hash.
func (s *Store) fetch(ctx context.Context, sum string, holders []string) error {
	peers, _, err := s.peers()
	if err != nil {
		return err
	}
	// Holders first, then healthy nodes, then the rest.
	rank := func(p peer) int {
		switch {
		case containsID(holders, p.id):
			return 0
		case s.healthy(p.id):
			return 1
		}
		return 2
	}
	ordered := make([]peer, 0, len(peers))
	for r := 0; r < 3; r++ {
		for _, p := range peers {
			if rank(p) == r {
				ordered = append(ordered, p)
			}
		}
	}
	var errs []error
	for _, p := range ordered {
		if err := s.fetchFrom(ctx, p, sum); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		return nil
	}
	return fmt.Errorf("%w: blob %s: %w", ErrUnavailable, sum[:12], errors.Join(errs...))
}

func (s *Store) fetchFrom(ctx context.Context, p peer, sum string) error {
	client := s.cfg.Log.Client()
	if client == nil {
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+internalBlobs+"/"+sum, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Cohort-Node", s.cfg.NodeID)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch from %s: %w", p.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch from %s: %s", p.id, readErr(resp))
	}
	wd := &watchdog{cancel: cancel, r: resp.Body}
	stop := wd.start(stallTimeout)
	defer stop()
	if _, err := s.blobs.ingest(ctx, wd, ingestOpts{expect: sum}); err != nil {
		return fmt.Errorf("fetch from %s: %w", p.id, s.noSpace(err))
	}
	return nil
}

// reportCorrupt queues blob sum for repair by the syncer.
func (s *Store) reportCorrupt(sum string) {
	s.blobs.good.forget(sum)
	s.mu.Lock()
	s.repair[sum] = true
	s.mu.Unlock()
	s.kickSync(false)
}

func (s *Store) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started && !s.closed
}

package membership

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// failThreshold consecutive failed probes mark a node unhealthy; one
// success marks it healthy again.
const failThreshold = 2

type peerHealth struct {
	fails     int
	probeFail int // failed probes in a row, whatever the callers report
	healthy   bool
	lastOK    time.Time
	firstFail time.Time // first failure since the last success; zero when fine
}

type prober struct {
	t        *Table
	client   *http.Client
	interval time.Duration
	log      *slog.Logger
	// answered, when set, is when a peer last answered this node over the
	// cluster port: one that answered within the last interval is alive
	// and reachable without a ping. Every follower answers the leader's
	// heartbeats, so an idle leader pings nobody (the pings were a fifth
	// of its CPU).
	answered func(peer string) time.Time

	mu    sync.Mutex
	peers map[string]*peerHealth
}

func newProber(t *Table, client *http.Client, interval time.Duration, log *slog.Logger) *prober {
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	return &prober{t: t, client: client, interval: interval, log: log, peers: make(map[string]*peerHealth)}
}

func (p *prober) run(ctx context.Context) {
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for _, m := range p.t.All() {
			if m.ID == p.t.selfID || m.Address == "" {
				continue
			}
			if p.answered != nil && time.Since(p.answered(m.ID)) < p.interval {
				p.record(m.ID, true)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.record(m.ID, p.ping(ctx, m.Address))
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *prober) ping(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*p.interval)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_internal/ping", nil)
	if err != nil {
		return false
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 256))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (p *prober) entry(id string) *peerHealth {
	h := p.peers[id]
	if h == nil {
		h = &peerHealth{healthy: true}
		p.peers[id] = h
	}
	return h
}

func (p *prober) record(id string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.entry(id)
	was := h.healthy
	if ok {
		h.fails, h.probeFail = 0, 0
		h.healthy = true
		h.lastOK = time.Now()
	} else {
		h.fails++
		h.probeFail++
		if h.fails >= failThreshold {
			h.healthy = false
		}
	}
	if was != h.healthy {
		p.log.Info("peer health changed", "node", id, "healthy", h.healthy)
	}
}

func (p *prober) markFailed(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.entry(id)
	if h.healthy {
		p.log.Info("peer marked unhealthy by a failed call", "node", id)
	}
	h.fails = failThreshold
	h.healthy = false
}

func (p *prober) healthy(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.peers[id]
	return !ok || h.healthy
}

func (p *prober) unresponsive(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.peers[id]
	return ok && h.probeFail >= failThreshold
}

package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// cpuWeight turns a CPU fraction (0..1 of the machine) into in-flight
// request equivalents: a saturated node scores like one with 8 more
// requests in flight.
const cpuWeight = 8

func score(inflight, cpu float64) float64 { return inflight + cpuWeight*cpu }

// Load is what a node reports to its peers for least-loaded balancing,
// in the manner of mod_cluster's load factors.
type Load struct {
	InFlight int64   `json:"in_flight"` // requests being served now
	CPU      float64 `json:"cpu"`       // this process's share of the machine's CPUs, 0..1
}

type peerLoad struct {
	load Load
	at   time.Time
	sent int // new sessions this front sent there since the last report
}

// loadBook holds the last load each peer reported.
type loadBook struct {
	mu    sync.Mutex
	peers map[string]*peerLoad
}

func newLoadBook() *loadBook { return &loadBook{peers: make(map[string]*peerLoad)} }

func (b *loadBook) entry(id string) *peerLoad {
	p := b.peers[id]
	if p == nil {
		p = &peerLoad{}
		b.peers[id] = p
	}
	return p
}

func (b *loadBook) set(id string, l Load) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.entry(id)
	p.load, p.at, p.sent = l, time.Now(), 0
}

// score is a peer's last reported load plus what this front sent it
// since, so a burst does not all land on the node that looked idlest.
func (b *loadBook) score(id string) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.entry(id)
	return score(float64(p.load.InFlight), p.load.CPU) + float64(p.sent)
}

func (b *loadBook) sentSince(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entry(id).sent
}

func (b *loadBook) noteSent(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entry(id).sent++
}

// pollLoads asks every peer for its load each LoadInterval while the
// policy is least-loaded, and refreshes the route cache.
func (f *Front) pollLoads(ctx context.Context, client *http.Client) {
	t := time.NewTicker(f.cfg.LoadInterval)
	defer t.Stop()
	for {
		f.refreshRoutes()
		if f.cfg.Balance == BalanceLeastLoaded {
			var wg sync.WaitGroup
			for _, m := range f.cfg.Members.All() {
				if m.ID == f.cfg.SelfID || m.Address == "" || !f.cfg.Members.Healthy(m.ID) {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if l, err := fetchLoad(ctx, client, m.Address, f.cfg.LoadInterval); err == nil {
						f.loads.set(m.ID, l)
					}
				}()
			}
			wg.Wait()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.loads.noteSelf(f.cfg.SelfID)
		}
	}
}

// noteSelf resets this node's own sent counter each interval.
func (b *loadBook) noteSelf(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entry(id).sent = 0
}

func fetchLoad(ctx context.Context, client *http.Client, addr string, timeout time.Duration) (Load, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_internal/front/load", nil)
	if err != nil {
		return Load{}, err
	}
	res, err := client.Do(req)
	if err != nil {
		return Load{}, err
	}
	defer res.Body.Close()
	var l Load
	err = json.NewDecoder(io.LimitReader(res.Body, 4096)).Decode(&l)
	return l, err
}

// refreshRoutes rebuilds the route cache from the member table, dropping
// members that left.
func (f *Front) refreshRoutes() {
	next := make(map[string]string)
	for _, m := range f.cfg.Members.All() {
		next[f.cfg.Members.Route(m.ID)] = m.ID
	}
	f.routesMu.Lock()
	f.routes.Store(&next)
	f.routesMu.Unlock()
}

// currentLoad is this node's report.
func (f *Front) currentLoad() Load {
	return Load{InFlight: f.inflight.Load(), CPU: f.cpu.load()}
}

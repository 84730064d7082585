package proxy

import (
	"context"
	"errors"
	"sync"
	"time"
)

// A peer that freezes (SIGSTOP, a dead VM, a cut cable) refuses nothing:
// the requests already sent to it wait on open connections for as long as
// it stays frozen. Only the probes tell, so the front keeps its forwarded
// attempts by peer and cancels those whose peer the probes declared
// failed; judge then retries what is safe to retry, which serves it here.
// (The fast front checks the same on its own, fast.go's upstreamSilent.)

// errPeerUnhealthy ends an attempt whose peer the cluster declared failed
// while the front waited for it.
var errPeerUnhealthy = errors.New("peer stopped answering the cluster's probes")

// watchInterval is how often the attempts in flight are checked against
// the peers' health.
const watchInterval = 250 * time.Millisecond

// attemptWatch holds the cancel functions of the attempts in flight, by
// peer address.
type attemptWatch struct {
	mu     sync.Mutex
	byAddr map[string]map[*watched]struct{}
}

type watched struct{ cancel context.CancelCauseFunc }

func (w *attemptWatch) add(addr string, cancel context.CancelCauseFunc) *watched {
	e := &watched{cancel: cancel}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byAddr == nil {
		w.byAddr = make(map[string]map[*watched]struct{})
	}
	set := w.byAddr[addr]
	if set == nil {
		set = make(map[*watched]struct{})
		w.byAddr[addr] = set
	}
	set[e] = struct{}{}
	return e
}

func (w *attemptWatch) remove(addr string, e *watched) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byAddr[addr], e)
	if len(w.byAddr[addr]) == 0 {
		delete(w.byAddr, addr)
	}
}

// cancel ends every attempt in flight to addr.
func (w *attemptWatch) cancel(addr string, cause error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for e := range w.byAddr[addr] {
		e.cancel(cause)
		n++
	}
	return n
}

func (w *attemptWatch) addrs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.byAddr))
	for a := range w.byAddr {
		out = append(out, a)
	}
	return out
}

// watchPeers cancels, every watchInterval, the attempts in flight to a
// member whose probes failed.
func (f *Front) watchPeers(ctx context.Context) {
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		busy := f.watch.addrs()
		if len(busy) == 0 {
			continue
		}
		for _, m := range f.cfg.Members.All() {
			// Only the probes' verdict: a peer marked failed by one call
			// (MarkFailed) may be answering every other request in flight
			// to it, and cancelling them all turned one failure into many.
			if m.ID == f.cfg.SelfID || !f.cfg.Members.Unresponsive(m.ID) {
				continue
			}
			for _, a := range busy {
				if a == m.Address {
					if n := f.watch.cancel(a, errPeerUnhealthy); n > 0 {
						f.log.Info("requests waiting on a failed peer cancelled", "node", m.ID, "requests", n)
					}
				}
			}
		}
	}
}

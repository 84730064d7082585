package console

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/cohortserver/cohort/broadcast"
)

// The all-clients limit is cluster-wide: every node charges its own failed
// logins at once and tells the others on the cluster broadcast
// (broadcast.TopicLoginFailures, an ordinary publish in the replicated
// log), in batches (what gathered while the previous one committed), and
// charges theirs when its bus delivers them. A successful login costs
// nothing. While the log cannot commit (no quorum) the batches are dropped
// and each node still enforces the limit on its own failures, so a
// degraded cluster is never less protected than one node.
const (
	// shareTimeout bounds one batch's commit.
	shareTimeout = 5 * time.Second
	// shareMaxAge: messages older than this when delivered (a node that
	// was down catching up) are not charged; the bucket would have
	// refilled since.
	shareMaxAge = time.Minute
)

// Bus is what the console needs from the cluster broadcast to share
// failed logins (*broadcast.Bus); nil Options.Bus keeps the all-clients
// limit per node.
type Bus interface {
	PublishSystem(ctx context.Context, topic string, payload []byte) (uint64, error)
	Subscribe(topic string, h broadcast.Handler) (cancel func())
}

type failuresMsg struct {
	Failures int `json:"failures"`
}

// share batches this node's failed logins onto the bus and charges the
// other nodes' to the limiter.
type share struct {
	bus    Bus
	self   string
	lim    *loginLimiter
	logg   *slog.Logger
	now    func() time.Time
	cancel func()             // the subscription
	ctx    context.Context    // cancelled by close: a batch in flight ends
	stop   context.CancelFunc // cancels ctx

	mu      sync.Mutex
	pending int  // failures not yet sent
	sending bool // a send goroutine runs
	closed  bool
	wg      sync.WaitGroup
}

func newShare(bus Bus, self string, lim *loginLimiter, log *slog.Logger, now func() time.Time) *share {
	s := &share{bus: bus, self: self, lim: lim, logg: log, now: now}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.cancel = bus.Subscribe(broadcast.TopicLoginFailures, s.deliver)
	return s
}

// deliver charges another node's failures to this node's all-clients
// bucket unless they are too old to matter.
func (s *share) deliver(m broadcast.Message) {
	var f failuresMsg
	if m.Origin == s.self || json.Unmarshal(m.Payload, &f) != nil || f.Failures <= 0 || s.now().Sub(m.Time) > shareMaxAge {
		return
	}
	s.lim.chargeAll(f.Failures)
}

// add queues one failed login of this node: when no batch is in flight
// it goes at once, else with the next batch, sent as soon as the one in
// flight committed. So a burst costs one entry per commit, and the other
// nodes learn of a failure one commit after it.
func (s *share) add() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.pending++
	if !s.sending {
		s.sending = true
		s.wg.Add(1)
		go s.send()
	}
}

// send commits the pending failures, one entry per round, until none are
// left; failures whose entry fails are dropped (this node charged them
// already).
func (s *share) send() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		n := s.pending
		s.pending = 0
		if n == 0 || s.closed {
			s.sending = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		p, err := json.Marshal(failuresMsg{Failures: n})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, shareTimeout)
		_, err = s.bus.PublishSystem(ctx, broadcast.TopicLoginFailures, p)
		cancel()
		if err != nil && s.ctx.Err() == nil {
			s.logg.Warn("could not share failed console logins with the cluster; this node's limit still applies",
				"failures", n, "err", err)
		}
	}
}

// close stops sharing and waits for a batch in flight.
func (s *share) close() {
	s.cancel()
	s.stop()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

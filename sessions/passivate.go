package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

var passiveBucket = []byte("sessions")

// passivator keeps the attribute data of cold sessions in a local bbolt
// file when the in-memory data passes the budget (JBoss max-active-sessions
// with passivation). The file is a cache of replicated state, not state: it
// is wiped at every start and on Restore. Only its own goroutine writes;
// Apply and requests only read it.
type passivator struct {
	db       *bbolt.DB
	maxBytes int64 // in-memory attribute bytes; 0 = no limit
	maxCount int   // in-memory sessions; 0 = no limit
	log      *slog.Logger

	wake    chan struct{}
	garbage map[string]struct{} // ids whose record is stale (store.mu)
	evicted int64               // sessions passivated since start (store.mu)
	loaded  int64               // sessions read back (store.mu)
	wg      sync.WaitGroup
}

func openPassivator(path string, maxBytes int64, maxCount int, log *slog.Logger) (*passivator, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("wipe passivation file: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: time.Second, NoSync: true, NoFreelistSync: true, InitialMmapSize: 1 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("open passivation file %s: %w", path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(passiveBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("init passivation file: %w", err)
	}
	return &passivator{db: db, maxBytes: maxBytes, maxCount: maxCount, log: log,
		wake: make(chan struct{}, 1), garbage: make(map[string]struct{})}, nil
}

// over reports whether memory holds more than the budget (store.mu held).
func (p *passivator) over(s *store) bool {
	if p.maxBytes > 0 && s.memBytes > p.maxBytes {
		return true
	}
	return p.maxCount > 0 && len(s.sessions)-s.passive > p.maxCount
}

// rebalanceLocked wakes the passivation goroutine when memory is over
// budget or stale records wait for deletion.
func (p *passivator) rebalanceLocked(s *store) {
	if p.over(s) || len(p.garbage) > 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

func (p *passivator) inserted(id string, x *session) {}

func (p *passivator) replaced(old, x *session) {}

// removed marks the record of a removed passive session stale.
func (p *passivator) removed(id string, x *session) {
	if x.passive {
		p.garbage[id] = struct{}{}
	}
}

// load reads a passivated blob.
func (p *passivator) load(id string) ([]byte, error) {
	var out []byte
	err := p.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(passiveBucket).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("passivated session %s: %w", idPrefix(id), errPassiveMissing)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// reset forgets every record (store.mu held, after Restore).
func (p *passivator) reset(s *store) {
	p.garbage = make(map[string]struct{})
	if err := p.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(passiveBucket); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
			return err
		}
		_, err := tx.CreateBucket(passiveBucket)
		return err
	}); err != nil {
		p.log.Error("wipe passivation file", "err", err)
	}
}

// passiveView is a consistent read view for a snapshot.
type passiveView interface {
	get(id string) ([]byte, error)
	release()
}

type boltView struct{ tx *bbolt.Tx }

func (v boltView) get(id string) ([]byte, error) {
	b := v.tx.Bucket(passiveBucket).Get([]byte(id))
	if b == nil {
		return nil, fmt.Errorf("passivated session %s: %w", idPrefix(id), errPassiveMissing)
	}
	return b, nil
}

func (v boltView) release() { _ = v.tx.Rollback() }

func (p *passivator) view() (passiveView, error) {
	tx, err := p.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("passivation view: %w", err)
	}
	return boltView{tx: tx}, nil
}

// run passivates until ctx ends.
func (p *passivator) run(ctx context.Context, s *store) {
	defer p.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		if err := p.pass(s); err != nil && ctx.Err() == nil {
			p.log.Error("passivation failed; sessions stay in memory", "err", err)
		}
	}
}

// pass deletes stale records, then moves the coldest sessions to disk
// until memory is within budget.
func (p *passivator) pass(s *store) error {
	s.mu.Lock()
	var stale []string
	for id := range p.garbage {
		stale = append(stale, id)
	}
	clear(p.garbage)
	s.mu.Unlock()
	if len(stale) > 0 {
		if err := p.db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(passiveBucket)
			for _, id := range stale {
				if err := b.Delete([]byte(id)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("delete stale passivated sessions: %w", err)
		}
	}
	for range 10000 {
		victims := p.pick(s)
		if len(victims) == 0 {
			return nil
		}
		if err := p.db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(passiveBucket)
			for _, v := range victims {
				if err := b.Put([]byte(v.id), v.x.data); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("passivate sessions: %w", err)
		}
		s.mu.Lock()
		for _, v := range victims {
			if s.sessions[v.id] != v.x {
				// Changed meanwhile: its record is stale.
				p.garbage[v.id] = struct{}{}
				continue
			}
			nx := *v.x
			nx.data, nx.passive = nil, true
			s.sessions[v.id] = &nx
			s.memBytes -= nx.size
			s.passive++
			p.evicted++
			delete(p.garbage, v.id)
		}
		s.mu.Unlock()
	}
	return nil
}

type victim struct {
	id     string
	x      *session
	access int64
}

// pick samples sessions (map iteration starts at a random place) and
// returns the coldest of the sample: an approximate LRU, as Redis does.
func (p *passivator) pick(s *store) []victim {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !p.over(s) {
		return nil
	}
	var sample []victim
	for id, x := range s.sessions {
		if x.passive || x.size == 0 {
			continue
		}
		sample = append(sample, victim{id, x, x.loc.access.Load()})
		if len(sample) == 256 {
			break
		}
	}
	sort.Slice(sample, func(i, j int) bool { return sample[i].access < sample[j].access })
	var need int64
	if p.maxBytes > 0 {
		need = s.memBytes - p.maxBytes
	}
	count := 0
	if p.maxCount > 0 {
		count = len(s.sessions) - s.passive - p.maxCount
	}
	out := sample[:0]
	for _, v := range sample[:min(len(sample), 64)] {
		if need <= 0 && count <= 0 {
			break
		}
		out = append(out, v)
		need -= v.x.size
		count--
	}
	return out
}

// activate brings a passivated session back into memory for a request.
func (p *passivator) activate(s *store, id string, x *session) (*session, error) {
	data, err := p.load(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.sessions[id]
	if cur != x {
		if cur != nil && cur.passive {
			return nil, fmt.Errorf("passivated session %s: %w", idPrefix(id), errPassiveMissing)
		}
		return cur, nil
	}
	nx := *x
	nx.data, nx.passive = data, false
	s.sessions[id] = &nx
	s.memBytes += nx.size
	s.passive--
	p.loaded++
	p.garbage[id] = struct{}{}
	p.rebalanceLocked(s)
	return &nx, nil
}

func (p *passivator) close() error {
	p.wg.Wait()
	if err := p.db.Close(); err != nil {
		return fmt.Errorf("close passivation file: %w", err)
	}
	return nil
}

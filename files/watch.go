package files

import (
	"context"
	"strings"
	"sync"
)

// Watch returns a channel of the changes under prefix ("" for all), in
// commit order, starting with the next commit this node applies. Events
// are queued without bound per watcher so a slow reader never blocks
// Raft; the channel closes when ctx ends or the store closes. An Event
// with Reset set means the tree was replaced from a snapshot.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan Event, error) {
	p, err := CleanPrefix(prefix)
	if err != nil {
		return nil, err
	}
	w := &watcher{prefix: p, out: make(chan Event), wake: make(chan struct{}, 1), quit: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	go func() {
		defer close(w.out)
		defer func() {
			s.mu.Lock()
			delete(s.watchers, w)
			s.mu.Unlock()
		}()
		for {
			ev, ok := w.next()
			if !ok {
				select {
				case <-w.wake:
					continue
				case <-ctx.Done():
					return
				case <-w.quit:
					return
				}
			}
			select {
			case w.out <- ev:
			case <-ctx.Done():
				return
			case <-w.quit:
				return
			}
		}
	}()
	return w.out, nil
}

// OnChange calls fn for every change under prefix, in commit order, on a
// goroutine of its own, until ctx ends.
func (s *Store) OnChange(ctx context.Context, prefix string, fn func(Event)) error {
	ch, err := s.Watch(ctx, prefix)
	if err != nil {
		return err
	}
	go func() {
		for ev := range ch {
			fn(ev)
		}
	}()
	return nil
}

type watcher struct {
	prefix string
	out    chan Event
	wake   chan struct{}
	quit   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	queue []Event
}

// offer queues ev when it concerns the watcher; it never blocks.
func (w *watcher) offer(ev Event) {
	if !ev.Reset && !strings.HasPrefix(ev.Info.Path, w.prefix) {
		return
	}
	w.mu.Lock()
	w.queue = append(w.queue, ev)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) next() (Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return Event{}, false
	}
	ev := w.queue[0]
	w.queue[0] = Event{}
	w.queue = w.queue[1:]
	return ev, true
}

func (w *watcher) stop() { w.once.Do(func() { close(w.quit) }) }

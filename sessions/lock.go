package sessions

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// sessionLocks serializes the requests of one session on this node
// (Config.Lock). A request takes its session's lock before the ownership
// check (ensureOwner) and keeps it until its changes are committed (the
// response starts) or it ends. Because a node takes a session over only
// under the lock, a request holding it cannot have its session move away
// and back meanwhile: if another node claims it, the holder's commit is
// refused (ErrSessionMoved) and the requests waiting here are refused too,
// so no request's write can be based on a read that another node's
// request overtook.
type sessionLocks struct {
	mu sync.Mutex
	m  map[string]*sessionLock
}

// sessionLock is the lock of one session, kept in the map while a request
// holds or waits for it.
type sessionLock struct {
	sem   chan struct{} // holds one token while a request holds the lock
	refs  int           // holder and waiters
	moved chan struct{} // closed when another node takes the session over
}

// acquire takes the lock of session id, waiting at most wait. It returns
// the release (call it once), or ErrSessionBusy after wait,
// ErrSessionMoved when another node took the session over meanwhile, or
// ctx's error.
func (l *sessionLocks) acquire(ctx context.Context, id string, wait time.Duration) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*sessionLock)
	}
	e := l.m[id]
	if e == nil {
		e = &sessionLock{sem: make(chan struct{}, 1), moved: make(chan struct{})}
		l.m[id] = e
	}
	e.refs++
	moved := e.moved
	l.mu.Unlock()

	select {
	case e.sem <- struct{}{}:
		return l.releaser(id, e), nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	var err error
	select {
	case e.sem <- struct{}{}:
		return l.releaser(id, e), nil
	case <-t.C:
		err = fmt.Errorf("%w (waited %s for the session lock)", ErrSessionBusy, wait)
	case <-moved:
		err = ErrSessionMoved
	case <-ctx.Done():
		err = fmt.Errorf("wait for the session lock: %w", ctx.Err())
	}
	l.unref(id, e)
	return nil, err
}

func (l *sessionLocks) releaser(id string, e *sessionLock) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.sem
			l.unref(id, e)
		})
	}
}

func (l *sessionLocks) unref(id string, e *sessionLock) {
	l.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(l.m, id)
	}
	l.mu.Unlock()
}

// movedAway refuses the requests waiting for session id's lock: another
// node took the session over (the store calls it from Apply).
func (l *sessionLocks) movedAway(id string) {
	l.mu.Lock()
	if e := l.m[id]; e != nil {
		close(e.moved)
		e.moved = make(chan struct{})
	}
	l.mu.Unlock()
}

// held reports how many sessions have a lock held or waited for (tests).
func (l *sessionLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

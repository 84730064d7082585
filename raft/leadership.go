package raft

import (
	"context"
	"time"

	hraft "github.com/hashicorp/raft"
)

// leaderLoop turns NotifyCh transitions into leader sessions. NotifyCh is
// buffered and drained here, unlike LeaderCh which drops transitions.
func (c *Cluster) leaderLoop(notify <-chan bool) {
	defer c.loops.Done()
	for {
		select {
		case <-c.stop:
			c.stepDown()
			return
		case leader := <-notify:
			if leader {
				c.becomeLeader()
			} else {
				c.stepDown()
			}
		}
	}
}

func (c *Cluster) becomeLeader() {
	c.mu.Lock()
	if c.leaderCancel != nil {
		c.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.leaderCancel = cancel
	r := c.raft
	c.mu.Unlock()
	term := r.CurrentTerm()
	c.leaseFence()
	c.log.Info("became leader", "term", term)
	c.leaderWG.Add(1)
	go func() {
		defer c.leaderWG.Done()
		// Apply everything the previous leader committed before acting.
		for {
			err := r.Barrier(5 * time.Second).Error()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("barrier as new leader failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.barrierDone.Store(term)
		if !c.noPush && c.cfg.FollowerCatchUp && c.commitTimeout() > pushAbove {
			c.leaderWG.Add(1)
			go func() {
				defer c.leaderWG.Done()
				c.pushCommits(ctx, r)
			}()
		}
		for _, fn := range c.leaderFns {
			c.leaderWG.Add(1)
			go func() {
				defer c.leaderWG.Done()
				fn(ctx, term)
			}()
		}
	}()
}

func (c *Cluster) stepDown() {
	c.mu.Lock()
	cancel := c.leaderCancel
	c.leaderCancel = nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		c.log.Info("leadership lost; leader work cancelled")
	}
}

func (c *Cluster) observeLoop() {
	defer c.loops.Done()
	for {
		select {
		case <-c.stop:
			return
		case o := <-c.obsCh:
			lo, ok := o.Data.(hraft.LeaderObservation)
			if !ok {
				continue
			}
			for _, fn := range c.changeFns {
				fn(string(lo.LeaderID))
			}
		}
	}
}

// standBackFactor multiplies the heartbeat and election timeouts of a
// node that cannot write its Raft log.
const standBackFactor = 10

// standBack keeps a node that cannot write its log out of the race for
// leadership: its log is as long as the others' right after it fails, so
// it can win an election, only to fail the first entry of its term and
// step down again (seen five times in a row in TestDiskFullLeader, 9 s
// without a leader). With timeouts ten times longer it lets the others
// elect a leader first; once a log write succeeds the timers are restored.
// It runs on the goroutine that wrote the log (Raft's main loop), before
// the follower loop that follows a step-down reads the timeout.
func (c *Cluster) standBack(r *hraft.Raft, failing bool) {
	hb, el, _ := Timing(c.cfg.TimeoutScale)
	if failing {
		hb, el = hb*standBackFactor, el*standBackFactor
	}
	rc := r.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = hb, el
	if err := r.ReloadConfig(rc); err != nil {
		c.log.Error("change raft timers", "err", err)
		return
	}
	if failing {
		c.log.Warn("raft log cannot be written; standing back from elections until it can", "heartbeat_timeout", hb)
	} else {
		c.log.Info("raft log written again; election timers restored", "heartbeat_timeout", hb)
	}
}

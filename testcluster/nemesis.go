package testcluster

import (
	"math/rand/v2"
	"time"
)

// A Fault is one kind of trouble the nemesis causes. Inject starts it on c
// and returns what it did, for the test's log, and how to undo it. victim
// is a node the nemesis drew at random; faults aimed at the leader use
// c.Leader() instead (the victim when there is none). Inject may draw more
// numbers from rng (a delay, say) but must not block until a state is
// reached: the nemesis strikes while clients are working.
type Fault struct {
	Name   string
	Inject func(c *Cluster, rng *rand.Rand, victim *Node) (what string, undo func())
}

// NemesisFaults returns the faults Strike chooses from, in a fixed order:
// a seed picks a fault by its index, so a new fault goes at the end (the
// existing seeds then replay other schedules, since the draw is over more
// faults, but each fault keeps its index). The slice is new on every call.
//
//	kill           kill -9 a random node; undo restarts it on its data dir
//	isolate-leader cut the leader off from every other node; undo heals
//	pause-leader   freeze the leader's cluster connections (its timers run,
//	               as after SIGSTOP seen from its peers); undo resumes it
//	isolate        cut a random node off; undo heals
//	delay          5–34 ms more latency on every link; undo heals
//	disk-full      fill a random node's data dir to ENOSPC (the cluster
//	               needs WithDiskLimit, see NemesisDisk); undo frees it
func NemesisFaults() []Fault {
	return []Fault{
		{Name: "kill", Inject: func(c *Cluster, _ *rand.Rand, victim *Node) (string, func()) {
			c.Kill(victim.ID)
			return "kill " + victim.ID, func() { c.Restart(victim.ID) }
		}},
		{Name: "isolate-leader", Inject: func(c *Cluster, _ *rand.Rand, victim *Node) (string, func()) {
			leader := c.leaderOr(victim)
			c.Isolate(leader.ID)
			return "isolate leader " + leader.ID, c.Heal
		}},
		{Name: "pause-leader", Inject: func(c *Cluster, _ *rand.Rand, victim *Node) (string, func()) {
			leader := c.leaderOr(victim)
			c.Pause(leader.ID)
			return "pause leader " + leader.ID, func() { c.Resume(leader.ID) }
		}},
		{Name: "isolate", Inject: func(c *Cluster, _ *rand.Rand, victim *Node) (string, func()) {
			c.Isolate(victim.ID)
			return "isolate " + victim.ID, c.Heal
		}},
		{Name: "delay", Inject: func(c *Cluster, rng *rand.Rand, _ *Node) (string, func()) {
			c.DelayAll(time.Duration(5+rng.IntN(30)) * time.Millisecond)
			return "delay all links", c.Heal
		}},
		// Needs the cluster started WithDiskLimit (a real ENOSPC on the
		// victim's data dir: Raft log, blobs, snapshots).
		{Name: "disk-full", Inject: func(c *Cluster, _ *rand.Rand, victim *Node) (string, func()) {
			c.FillDisk(victim.ID)
			return "fill the disk of " + victim.ID, func() { c.FreeDisk(victim.ID) }
		}},
	}
}

// NemesisDisk is the disk limit the fault-injection tests start their
// clusters with, so the disk-full fault has a disk to fill.
const NemesisDisk = 256 << 20

// leaderOr returns the current leader, or fallback when there is none.
func (c *Cluster) leaderOr(fallback *Node) *Node {
	if l := c.Leader(); l != nil {
		return l
	}
	return fallback
}

// Strike is the nemesis of the fault-injection tests: it draws a victim
// node and one of NemesisFaults from rng, injects the fault and returns a
// description and the undo. A test strikes while its clients run, waits,
// calls undo, then Heal and WaitLeader before it checks. The same rng
// state gives the same fault on the same node id, so a printed seed
// replays the schedule.
func (c *Cluster) Strike(rng *rand.Rand) (what string, undo func()) {
	nodes := c.Nodes()
	victim := nodes[rng.IntN(len(nodes))]
	faults := NemesisFaults()
	return faults[rng.IntN(len(faults))].Inject(c, rng, victim)
}

// StrikeWith is Strike with the fault chosen by the caller (a test that
// must cover every fault in a few schedules): it draws the victim from rng
// the same way and injects f.
func (c *Cluster) StrikeWith(rng *rand.Rand, f Fault) (what string, undo func()) {
	nodes := c.Nodes()
	victim := nodes[rng.IntN(len(nodes))]
	return f.Inject(c, rng, victim)
}

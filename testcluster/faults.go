package testcluster

import "time"

// Pause freezes a node's cluster connections in both directions, as a
// SIGSTOP would look to its peers; Resume lets them flow again. The node's
// own timers keep running (a paused leader steps down after its lease).
func (c *Cluster) Pause(id string) { c.faults.Pause(id) }

// Resume undoes Pause.
func (c *Cluster) Resume(id string) { c.faults.Resume(id) }

// CutOneWay stalls every byte sent from one node to another.
func (c *Cluster) CutOneWay(from, to string) { c.faults.CutOneWay(from, to) }

// Delay adds latency to every write between a and b.
func (c *Cluster) Delay(a, b string, d time.Duration) { c.faults.Delay(a, b, d) }

// DelayAll adds latency between every pair of nodes.
func (c *Cluster) DelayAll(d time.Duration) {
	nodes := c.Nodes()
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			c.faults.Delay(a.ID, b.ID, d)
		}
	}
}

// DropAll resets connections between every pair at each write with
// probability p.
func (c *Cluster) DropAll(p float64) {
	nodes := c.Nodes()
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			c.faults.Drop(a.ID, b.ID, p)
		}
	}
}

package raft

import (
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// hashicorp/raft answers a heartbeat on its connection's goroutine, which
// Raft's Shutdown does not wait for. A heartbeat carrying a newer term
// writes that term to the stable store; if Close closed the store under
// it, hashicorp/raft panics ("failed to save current term: database not
// open"), as a CI run once did while a test cluster stopped. Close must
// wait for the handler before closing the stores.
func TestCloseWaitsForAHeartbeatThatRaisesTheTerm(t *testing.T) {
	const term = 1000 // far above any term the cluster reaches by itself
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	cs := startTestCluster(t, 3, func(c *Cluster) {
		if c.cfg.NodeID != "n3" {
			return
		}
		c.stages = func(stage string, val uint64) {
			if stage == stageStableSet && val == term {
				once.Do(func() {
					close(entered)
					<-release
				})
			}
		}
	})
	var target *Cluster
	for _, c := range cs {
		if c.cfg.NodeID == "n3" {
			target = c
		}
	}

	// A stranger holding the cluster key sends n3 a heartbeat from a
	// leader of a newer term.
	tr, err := Listen("127.0.0.1:0", TransportConfig{NodeID: "stranger", Key: []byte("0123456789abcdef0123")})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	nt := hraft.NewNetworkTransport(&streamLayer{t: tr}, 1, 5*time.Second, nil)
	defer nt.Close()
	go func() {
		var resp hraft.AppendEntriesResponse
		_ = nt.AppendEntries("n3", hraft.ServerAddress(target.transport.AdvertiseAddr().String()), &hraft.AppendEntriesRequest{
			RPCHeader: hraft.RPCHeader{ID: []byte("stranger"), Addr: []byte(tr.AdvertiseAddr().String())},
			Term:      term,
		}, &resp)
	}()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("n3 never began to record the heartbeat's term")
	}

	// The handler is inside the stable store's write. Close n3; let the
	// write go on once Close returned (it must not, before) or after a
	// while, whichever is first.
	closed := make(chan error, 1)
	go func() { closed <- target.Close() }()
	select {
	case err := <-closed:
		close(release)
		t.Fatalf("Close returned (err %v) while a heartbeat handler was still writing to the stable store", err)
	case <-time.After(2 * time.Second):
		close(release)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Logf("close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return once the heartbeat handler finished")
	}
}

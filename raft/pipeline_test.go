package raft

import (
	"io"
	"log/slog"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// hashicorp/raft#612, at the transport: a follower answers a pipelined
// append with Success=false, hashicorp/raft's decoder stops reading
// answers (as pipelineDecode does), and the replication goroutine goes on
// sending. Through the transport's own pipeline the sends park once the
// requests in flight fill it, for good; through guardedTransport a send
// fails instead, and hashicorp/raft falls back to synchronous appends.
func TestGuardedPipelineFreesASendAfterAFailedAppend(t *testing.T) {
	follower, err := hraft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	go func() {
		for rpc := range follower.Consumer() {
			rpc.Respond(&hraft.AppendEntriesResponse{Success: false}, nil) // its log write failed
		}
	}()
	leader, err := hraft.NewTCPTransportWithConfig("127.0.0.1:0", nil, &hraft.NetworkTransportConfig{
		MaxPool: 2, Timeout: 5 * time.Second, MaxRPCsInFlight: 8,
		Logger: newHCLog(slog.New(slog.DiscardHandler), "test"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	p, err := guardedTransport{NetworkTransport: leader}.AppendEntriesPipeline("f", follower.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	decoded := make(chan bool)
	go func() { // hashicorp/raft's pipelineDecode: returns on Success=false
		f := <-p.Consumer()
		decoded <- f.Response().Success
	}()
	sent := make(chan error, 1)
	go func() { // pipelineSend, as long as sends succeed
		for i := range 80 {
			req := &hraft.AppendEntriesRequest{Term: 1, PrevLogEntry: uint64(i)}
			if _, err := p.AppendEntries(req, new(hraft.AppendEntriesResponse)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	if ok := <-decoded; ok {
		t.Fatal("the follower's answer was a success")
	}
	select {
	case err := <-sent:
		if err == nil {
			t.Fatal("every send went through although nobody reads the answers")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a send is parked on the pipeline after the decoder stopped (hashicorp/raft#612)")
	}
}

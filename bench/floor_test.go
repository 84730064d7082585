package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/cohortserver/cohort/internal/poll"
)

// TestRESPFloorStoresWhatItIsSent drives the kv scenario's floor server
// as the load does: SET then GET of the same key, a pipeline, and an
// unknown command.
func TestRESPFloorStoresWhatItIsSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runRESPFloor(ctx, []string{"-addr", addr}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("resp-floor: %v", err)
		}
	})
	var c redis.Conn
	poll.Until(t, 10*time.Second, func() (bool, string) {
		c, err = redis.Dial("tcp", addr)
		return err == nil, fmt.Sprintf("dial %s: %v", addr, err)
	})
	defer c.Close()
	if v, err := redis.String(c.Do("SET", "k", "v1")); err != nil || v != "OK" {
		t.Fatalf("SET: %q, %v", v, err)
	}
	if v, err := redis.String(c.Do("GET", "k")); err != nil || v != "v1" {
		t.Fatalf("GET after SET: %q, %v; want v1", v, err)
	}
	if _, err := c.Do("GET", "missing"); err != nil {
		t.Fatalf("GET of a missing key: %v", err)
	}
	for i := range 16 {
		if err := c.Send("SET", fmt.Sprint("p", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Do(""); err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	if v, err := redis.String(c.Do("GET", "p15")); err != nil || v != "15" {
		t.Fatalf("GET p15 after the pipeline: %q, %v", v, err)
	}
	if _, err := c.Do("FLUSHALL"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("FLUSHALL: %v; want unknown command", err)
	}
}

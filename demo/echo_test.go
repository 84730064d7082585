package demo_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/cohortserver/cohort/testcluster"
)

// TestEchoOnOneNode checks the echo websocket where it is served: text
// echoes with the node and the session's counter; a binary message or a
// plain GET gets a clear refusal.
func TestEchoOnOneNode(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Nodes()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	resp, err := http.Get(nd.URL("/demo/api/echo"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 4 {
		t.Fatalf("plain GET of the echo route: HTTP %d, want a 4xx refusal", resp.StatusCode)
	}

	conn, _, err := websocket.Dial(ctx, "ws"+nd.URL("/demo/api/echo")[len("http"):], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Node    string `json:"node"`
		Count   int    `json:"count"`
		Message string `json:"message"`
	}
	if err := wsjson.Read(ctx, conn, &got); err != nil {
		t.Fatal(err)
	}
	if got.Node != nd.ID || got.Count != 0 || got.Message != "ping" {
		t.Fatalf("echo answered %+v", got)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	_, _, err = conn.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusUnsupportedData {
		t.Fatalf("after a binary message: %v (close code %d), want %d", err, code, websocket.StatusUnsupportedData)
	}
}

package demo

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// echoLimit is the largest message the echo route reads.
const echoLimit = 64 << 10

// echoReply is one message of the echo route.
type echoReply struct {
	Node    string `json:"node"`
	Count   int64  `json:"count"`
	Message string `json:"message"`
}

// mountEcho registers GET /demo/api/echo: a websocket that answers every
// message with the node that holds the connection and the session's
// counter as it stood when the socket opened. Through a node that does
// not own the session it shows the front forwarding an upgrade to the
// owner and relaying frames both ways.
func (a *App) mountEcho(handle func(string, http.Handler)) {
	handle("GET /demo/api/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count := a.Sessions.GetInt64(r.Context(), counterKey)
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered the client (400 or 426)
		}
		defer c.CloseNow()
		c.SetReadLimit(echoLimit)
		// The request's context ends when the server shuts down; the
		// socket then closes with "going away".
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					c.Close(websocket.StatusGoingAway, "node shutting down")
				}
				return
			}
			if typ != websocket.MessageText {
				c.Close(websocket.StatusUnsupportedData, "send text messages")
				return
			}
			b, _ := json.Marshal(echoReply{Node: a.NodeID, Count: count, Message: string(msg)})
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = c.Write(wctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				return
			}
		}
	}))
}

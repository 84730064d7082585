package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/tidwall/redcon"
)

// runRESPFloor is the "resp-floor" command: the least a Go server built
// like cohort's RESP listener can do. It speaks RESP through the same
// library (tidwall/redcon, one goroutine per connection) and keeps SET
// and GET in a map: no log, no fsync, no replication, no expiry. The kv
// scenario measures it beside cohort and Redis, so that the CPU time a
// command costs in the wire path alone — on this machine, in Go — can be
// told from what replication and durability add.
func runRESPFloor(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("resp-floor", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("resp-floor flags: %w", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("resp-floor: %w", err)
	}
	var (
		mu   sync.RWMutex
		keys = map[string][]byte{}
	)
	srv := redcon.NewServer(*addr, func(c redcon.Conn, cmd redcon.Command) {
		switch strings.ToUpper(string(cmd.Args[0])) {
		case "SET":
			if len(cmd.Args) < 3 {
				c.WriteError("ERR wrong number of arguments for 'set' command")
				return
			}
			v := append([]byte(nil), cmd.Args[2]...)
			mu.Lock()
			keys[string(cmd.Args[1])] = v
			mu.Unlock()
			c.WriteString("OK")
		case "GET":
			if len(cmd.Args) != 2 {
				c.WriteError("ERR wrong number of arguments for 'get' command")
				return
			}
			mu.RLock()
			v, ok := keys[string(cmd.Args[1])]
			mu.RUnlock()
			if !ok {
				c.WriteNull()
				return
			}
			c.WriteBulk(v)
		case "PING":
			c.WriteString("PONG")
		default:
			c.WriteError(fmt.Sprintf("ERR unknown command '%s'", cmd.Args[0]))
		}
	}, nil, nil)
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		return fmt.Errorf("resp-floor: %w", err)
	}
	return nil
}

package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"

	"github.com/cohortserver/cohort/internal/testport"

	"github.com/cohortserver/cohort/app"
	"github.com/cohortserver/cohort/sessions"
)

// A one-node application with a handler that counts visits in the
// replicated session. In production every node runs the same binary with
// app.LoadConfig(os.Args[1:]) and the flags of `cohort serve`.
func Example() {
	dir, _ := os.MkdirTemp("", "cohort-example-")
	defer os.RemoveAll(dir)

	cfg := app.DevConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.HTTPAddr, cfg.ClusterAddr = freeAddr(), freeAddr()
	cfg.Peers[0].Address = cfg.ClusterAddr
	cfg.AdvertiseAddr = cfg.ClusterAddr
	cfg.NoDemo = true
	cfg.KV.RedisAddr = "" // dev serves Redis on 127.0.0.1:6380; not needed here
	cfg.Logger = slog.New(slog.DiscardHandler)

	a, err := app.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	a.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		// Incr is atomic: concurrent requests of one session all count.
		visits, err := a.Sessions().Incr(r.Context(), "visits", 1)
		if err != nil {
			http.Error(w, err.Error(), sessions.StatusFor(err))
			return
		}
		fmt.Fprintf(w, "hello from node %s, visit %d", a.ID(), visits)
	})

	if err := a.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	for range 2 {
		resp, err := client.Get(a.URL() + "/hello")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// hello from node dev, visit 1
	// hello from node dev, visit 2
}

func freeAddr() string { return testport.MustAddr() }

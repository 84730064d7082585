// Command cohort is a single-binary clustered application server: a
// Raft-replicated session and metadata log, shared files, a sticky HTTP front
// and a master-only job runner, in one process that every node runs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cohortserver/cohort/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/cohortserver/cohort/buildinfo"
	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/node"
)

// Exit codes scripts can rely on, all of them (exitCode in members.go maps
// an operations command's error to one).
const (
	ExitOK          = 0
	ExitFailure     = 1 // the command ran and failed (node error, API error)
	ExitUsage       = 2 // bad flags or configuration
	ExitNotReady    = 3 // status: the node answered but is not ready
	ExitNotFound    = 4 // the named node or job does not exist (HTTP 404)
	ExitUnavailable = 5 // the node is unreachable or the cluster cannot act now (no leader, HTTP 503); retry later
)

const usage = `cohort — one binary, a highly available application server

Usage:
  cohort serve [flags]     run one node of a cluster (cohort serve --help)
  cohort dev [flags]       single-node dev mode, zero setup
  cohort status [--addr URL] [--token-file F] [--json]
                           the cluster as the node at URL sees it
  cohort healthcheck [--addr URL]
                           exit 0 when the node is ready (for container health checks)
  cohort version           version, commit, Go version

Operations (admin API; --addr URL, --token-file F or COHORT_ADMIN_TOKEN, --json):
  cohort members           every node: role, state, health, indexes, uptime
  cohort drain ID | disable ID | enable ID
                           change a node's state cluster-wide
  cohort transfer-leader [ID]
                           hand Raft leadership to ID (or the best follower)
  cohort remove ID         take a node out of the cluster
  cohort ping ID           round trip to a node through the cluster port
  cohort jobs [run|suspend|resume|runs NAME]
                           the scheduled jobs, or act on one
  cohort app restart       rolling restart of the supervised app, one node at a time
  cohort kv [KEY] [--db N | --memcached]
                           inspect a key of the replicated store (no KEY: its figures)
  cohort backup FILE       download a consistent snapshot of the cluster state
Offline, on a stopped node's data dir:
  cohort restore FILE --node-id ID --data-dir DIR [--cluster-addr HOST:PORT]
                           seed a new one-node cluster from a backup
  cohort recover --node-id ID --data-dir DIR --peers ID=HOST:PORT,...
                           rewrite the Raft configuration after a quorum loss
Exit codes: 0 ok, 1 failed, 2 usage, 3 not ready, 4 not found, 5 unavailable (retry)
`

// Run runs the command line args (without the program name) and returns
// the exit code. ctx ends on SIGINT/SIGTERM.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, false, args[1:], stdout, stderr)
	case "dev":
		return serve(ctx, true, args[1:], stdout, stderr)
	case "status":
		return status(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheck(ctx, args[1:], stdout, stderr)
	case "members":
		return members(ctx, args[1:], stdout, stderr)
	case "drain", "disable", "enable":
		return nodeState(ctx, args[0], args[1:], stdout, stderr)
	case "transfer-leader":
		return transferLeader(ctx, args[1:], stdout, stderr)
	case "remove":
		return remove(ctx, args[1:], stdout, stderr)
	case "ping":
		return ping(ctx, args[1:], stdout, stderr)
	case "jobs":
		return jobs(ctx, args[1:], stdout, stderr)
	case "app":
		return app(ctx, args[1:], stdout, stderr)
	case "kv":
		return kvCmd(ctx, args[1:], stdout, stderr)
	case "backup":
		return backup(ctx, args[1:], stdout, stderr)
	case "restore":
		return restore(ctx, args[1:], stdout, stderr)
	case "recover":
		return recoverCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, buildinfo.String())
		return ExitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(stderr, "cohort: unknown command %q\n\n%s", args[0], usage)
		return ExitUsage
	}
}

func serve(ctx context.Context, dev bool, args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(dev, args, stderr)
	if errors.Is(err, config.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "cohort: %v\n", err)
		return ExitUsage
	}
	cfg.Logger = cfg.NewLogger(os.Stderr)
	n, err := node.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "cohort: %v\n", err)
		return ExitFailure
	}
	if err := n.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "cohort: %v\n", err)
		return ExitFailure
	}
	if dev {
		fmt.Fprintf(stdout, "\ncohort dev is running (data in %s)\n", cfg.DataDir)
		fmt.Fprintf(stdout, "  app:     http://%s/\n", n.HTTPAddr())
		fmt.Fprintf(stdout, "  console: http://%s/_cohort/ui/\n", n.HTTPAddr())
		fmt.Fprintf(stdout, "  db:      %s\n", n.Database().Describe())
		if addr := n.RedisAddr(); addr != "" {
			fmt.Fprintf(stdout, "  redis:   redis-cli -p %s (the replicated store)\n", portOf(addr))
		}
		fmt.Fprintf(stdout, "  status:  curl -H 'Authorization: Bearer %s' http://%s/_cohort/status\n", n.AdminToken(), n.HTTPAddr())
		fmt.Fprintf(stdout, "  admin token: %s\n\n", n.AdminToken())
	}
	<-ctx.Done()
	n.Logger().Info("signal received; shutting down")
	if err := n.Close(); err != nil {
		fmt.Fprintf(stderr, "cohort: shutdown: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// portOf is the port of HOST:PORT.
func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return port
}

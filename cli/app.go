package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/cohortserver/cohort/node"
)

// app runs `cohort app SUBCOMMAND`: today only restart.
func app(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "restart" {
		fmt.Fprintln(stderr, "Usage: cohort app restart [--addr URL] [--token-file F] [--command CMD] [--timeout D] [--json]")
		return ExitUsage
	}
	var timeout time.Duration
	var command string
	return runAPI(ctx, apiCommand{
		name: "app restart", args: exactly(0),
		flags: func(fs *pflag.FlagSet) {
			fs.DurationVar(&timeout, "timeout", 30*time.Minute, "how long the whole rolling restart may take")
			fs.StringVar(&command, "command", "", "a new --app-command to start from now on (a deploy); also put it in each node's configuration")
		},
		run: func(ctx context.Context, a *apiFlags, _ []string, w io.Writer) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			fmt.Fprintln(w, "rolling restart of the app, one node at a time (drain, restart, wait healthy, enable)...")
			var out node.AppRestartResult
			var body any
			if command != "" {
				body = map[string]string{"command": command}
			}
			err := do(ctx, a, http.MethodPost, "/_cohort/api/app/restart", body, &out)
			if a.json && err == nil {
				printJSON(w, out)
				return nil
			}
			for _, s := range out.Nodes {
				if s.OK {
					fmt.Fprintf(w, "%s: restarted, healthy again after %.1fs\n", s.ID, s.Seconds)
				} else {
					fmt.Fprintf(w, "%s: %s\n", s.ID, s.Error)
				}
			}
			if err == nil {
				fmt.Fprintln(w, "done")
			}
			return err
		},
	}, args[1:], stdout, stderr)
}

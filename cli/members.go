package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/cohortserver/cohort/node"
)

// apiCommand is one operations command that calls the admin API.
type apiCommand struct {
	name  string
	usage string // arguments after the command name
	args  func(n int) bool
	flags func(fs *pflag.FlagSet)
	run   func(ctx context.Context, a *apiFlags, args []string, stdout io.Writer) error
}

// apiError carries the HTTP status of a failed call to choose the exit code.
type apiError struct {
	code int
	err  error
}

func (e *apiError) Error() string { return e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }

// do calls the API and wraps a failure with its status.
func do(ctx context.Context, a *apiFlags, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = strings.NewReader(string(b))
	}
	code, err := a.call(ctx, method, path, rd, out)
	if err != nil {
		return &apiError{code: code, err: err}
	}
	return nil
}

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		switch {
		case ae.code == 0 || ae.code == http.StatusServiceUnavailable || ae.code == http.StatusBadGateway || ae.code == http.StatusGatewayTimeout:
			return ExitUnavailable
		case ae.code == http.StatusNotFound:
			return ExitNotFound
		}
	}
	return ExitFailure
}

// runAPI parses the shared flags and runs c.
func runAPI(ctx context.Context, c apiCommand, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cohort %s %s [--addr URL] [--token-file F] [--json]\n", c.name, c.usage)
		fs.PrintDefaults()
	}
	var a apiFlags
	a.register(fs)
	if c.flags != nil {
		c.flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if c.args != nil && !c.args(fs.NArg()) {
		fmt.Fprintf(stderr, "cohort %s: wrong arguments\n", c.name)
		fs.Usage()
		return ExitUsage
	}
	if err := a.resolveToken(); err != nil {
		fmt.Fprintf(stderr, "cohort %s: %v\n", c.name, err)
		return ExitUsage
	}
	if err := c.run(ctx, &a, fs.Args(), stdout); err != nil {
		fmt.Fprintf(stderr, "cohort %s: %v\n", c.name, err)
		return exitCode(err)
	}
	return ExitOK
}

func exactly(k int) func(int) bool { return func(n int) bool { return n == k } }

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// members prints every member with its role, state, health and figures.
func members(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAPI(ctx, apiCommand{
		name: "members", args: exactly(0),
		run: func(ctx context.Context, a *apiFlags, _ []string, w io.Writer) error {
			var v node.MembersView
			if err := do(ctx, a, http.MethodGet, "/_cohort/api/members", nil, &v); err != nil {
				return err
			}
			if a.json {
				printJSON(w, v)
				return nil
			}
			printMembers(w, v)
			return nil
		},
	}, args, stdout, stderr)
}

func printMembers(w io.Writer, v node.MembersView) {
	leader := v.LeaderID
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "leader %s, term %d, commit %d (seen from %s)\n\n", leader, v.Term, v.CommitIndex, v.NodeID)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tSTATE\tHEALTH\tAPPLIED/COMMIT\tLAST CONTACT\tUPTIME\tVERSION\tCLUSTER ADDRESS\tHTTP ADDRESS")
	for _, m := range v.Members {
		role := m.RaftState
		if m.Leader {
			role = "leader"
		}
		if !m.Reachable {
			role = "unreachable"
		}
		if !m.Voter {
			role += " (nonvoter)"
		}
		health := "healthy"
		if !m.Healthy {
			health = "UNHEALTHY"
		}
		idx, contact, up := "-", "-", "-"
		if m.Reachable {
			idx = fmt.Sprintf("%d/%d", m.AppliedIndex, m.CommitIndex)
			up = (time.Duration(m.UptimeSeconds) * time.Second).String()
			if m.LastContactMS >= 0 {
				contact = fmt.Sprintf("%dms", m.LastContactMS)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, role, m.State, health, idx, contact, up,
			dash(m.Version), m.Address, dash(m.HTTPAddress))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nodeState runs drain, disable or enable.
func nodeState(ctx context.Context, action string, args []string, stdout, stderr io.Writer) int {
	return runAPI(ctx, apiCommand{
		name: action, usage: "ID", args: exactly(1),
		run: func(ctx context.Context, a *apiFlags, args []string, w io.Writer) error {
			var out struct {
				ID    string `json:"id"`
				State string `json:"state"`
			}
			if err := do(ctx, a, http.MethodPost, "/_cohort/api/nodes/"+url.PathEscape(args[0])+"/"+action, nil, &out); err != nil {
				return err
			}
			if a.json {
				printJSON(w, out)
			} else {
				fmt.Fprintf(w, "%s is now %s\n", out.ID, out.State)
			}
			return nil
		},
	}, args, stdout, stderr)
}

// transferLeader hands leadership to ID, or to the best follower.
func transferLeader(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAPI(ctx, apiCommand{
		name: "transfer-leader", usage: "[ID]", args: func(n int) bool { return n <= 1 },
		run: func(ctx context.Context, a *apiFlags, args []string, w io.Writer) error {
			req := map[string]string{}
			if len(args) == 1 {
				req["to"] = args[0]
			}
			var out struct {
				Transferred bool   `json:"transferred"`
				To          string `json:"to"`
				LeaderID    string `json:"leader_id"`
			}
			if err := do(ctx, a, http.MethodPost, "/_cohort/api/leader/transfer", req, &out); err != nil {
				return err
			}
			out.LeaderID = awaitLeader(ctx, a, req["to"], out.LeaderID)
			if a.json {
				printJSON(w, out)
			} else {
				fmt.Fprintf(w, "leadership transferred; leader is now %s\n", dash(out.LeaderID))
			}
			return nil
		},
	}, args, stdout, stderr)
}

// awaitLeader polls the node's status until it knows a leader (to, when
// given) for a few seconds: the node that handled a transfer may learn the
// new leader a moment after answering. It returns the last leader seen.
func awaitLeader(ctx context.Context, a *apiFlags, to, seen string) string {
	deadline := time.Now().Add(10 * time.Second)
	for (seen == "" || (to != "" && seen != to)) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return seen
		case <-time.After(100 * time.Millisecond):
		}
		var st node.Status
		if err := do(ctx, a, http.MethodGet, "/_cohort/status", nil, &st); err == nil {
			seen = st.LeaderID
		}
	}
	return seen
}

// remove takes a node out of the cluster.
func remove(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAPI(ctx, apiCommand{
		name: "remove", usage: "ID", args: exactly(1),
		run: func(ctx context.Context, a *apiFlags, args []string, w io.Writer) error {
			var out struct {
				Removed string `json:"removed"`
			}
			if err := do(ctx, a, http.MethodDelete, "/_cohort/api/nodes/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if a.json {
				printJSON(w, out)
			} else {
				fmt.Fprintf(w, "%s removed; to come back it needs an empty --data-dir or a new --node-id\n", out.Removed)
			}
			return nil
		},
	}, args, stdout, stderr)
}

// ping measures the round trip to a node through the cluster port.
func ping(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	count := 3
	return runAPI(ctx, apiCommand{
		name: "ping", usage: "ID", args: exactly(1),
		flags: func(fs *pflag.FlagSet) { fs.IntVar(&count, "count", 3, "round trips to measure (1-100)") },
		run: func(ctx context.Context, a *apiFlags, args []string, w io.Writer) error {
			var out node.PingResult
			path := "/_cohort/api/nodes/" + url.PathEscape(args[0]) + "/ping?count=" + strconv.Itoa(count)
			if err := do(ctx, a, http.MethodPost, path, nil, &out); err != nil {
				return err
			}
			if a.json {
				printJSON(w, out)
			} else {
				fmt.Fprintf(w, "%s (%s) answered through the cluster port: rtt avg %.2f ms, min %.2f, max %.2f over %d\n",
					out.ID, out.Address, out.RTTMS, out.MinMS, out.MaxMS, len(out.Samples))
			}
			return nil
		},
	}, args, stdout, stderr)
}

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/node"
)

// apiFlags are the flags every API-calling command shares.
type apiFlags struct {
	addr      string
	token     string
	tokenFile string
	json      bool
}

func (a *apiFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&a.addr, "addr", envOr("COHORT_ADDR", "http://127.0.0.1:8080"), "URL of any node's public front (env COHORT_ADDR)")
	fs.StringVar(&a.tokenFile, "token-file", os.Getenv("COHORT_ADMIN_TOKEN_FILE"), "file holding the admin token (env COHORT_ADMIN_TOKEN_FILE)")
	fs.BoolVar(&a.json, "json", false, "print JSON for scripts")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (a *apiFlags) resolveToken() error {
	a.token = os.Getenv("COHORT_ADMIN_TOKEN")
	if a.tokenFile != "" {
		b, err := config.ReadSecret(a.tokenFile, 1)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		a.token = string(b)
	}
	if a.token == "" {
		// Dev mode keeps its token in the data dir: make `cohort status`
		// work there with no flags.
		if b, err := config.ReadSecret("data/dev/admin.token", 1); err == nil {
			a.token = string(b)
		}
	}
	if !strings.Contains(a.addr, "://") {
		a.addr = "http://" + a.addr
	}
	a.addr = strings.TrimRight(a.addr, "/")
	return nil
}

// call performs an API request and decodes a JSON answer into out.
func (a *apiFlags) call(ctx context.Context, method, path string, body io.Reader, out any) (int, error) {
	if _, ok := ctx.Deadline(); !ok { // long calls (app restart) set their own
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, a.addr+path, body)
	if err != nil {
		return 0, fmt.Errorf("--addr %s: %w", a.addr, err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach %s: %w", a.addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read answer of %s: %w", a.addr, err)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return resp.StatusCode, fmt.Errorf("%s %s: %s (HTTP %d)", method, path, e.Error, resp.StatusCode)
		}
		return resp.StatusCode, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var a apiFlags
	a.register(fs)
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return ExitOK
		}
		return ExitUsage
	}
	if err := a.resolveToken(); err != nil {
		fmt.Fprintf(stderr, "cohort status: %v\n", err)
		return ExitUsage
	}
	var st node.Status
	if _, err := a.call(ctx, http.MethodGet, "/_cohort/status", nil, &st); err != nil {
		fmt.Fprintf(stderr, "cohort status: %v\n", err)
		return ExitFailure
	}
	if a.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		printStatus(stdout, st)
	}
	if !st.Ready {
		return ExitNotReady
	}
	return ExitOK
}

func printStatus(w io.Writer, st node.Status) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY: " + st.ReadyReason
	}
	leader := st.LeaderID
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "node %s: %s, term %d, leader %s, commit %d, applied %d, %s\n\n",
		st.NodeID, st.State, st.Term, leader, st.CommitIndex, st.AppliedIndex, ready)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tSTATE\tHEALTHY\tCLUSTER ADDRESS\tHTTP ADDRESS")
	for _, m := range st.Members {
		role := "follower"
		if m.Leader {
			role = "leader"
		}
		if !m.Voter {
			role = "nonvoter"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", m.ID, role, m.State, m.Healthy, m.Address, m.HTTPAddress)
	}
	tw.Flush()
	if len(st.Singletons) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SINGLETON\tPLACEMENT\tRUNS ON\tFENCE")
	for _, s := range st.Singletons {
		placement, runsOn, fence := "leader", s.RunsOn, "-"
		if len(s.Nodes) > 0 {
			placement = strings.Join(s.Nodes, ",")
		}
		if runsOn == "" {
			runsOn = "(nowhere)"
		}
		if f := max(s.PlacedFence, s.Fence); f > 0 {
			fence = strconv.FormatUint(f, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, placement, runsOn, fence)
	}
	tw.Flush()
}

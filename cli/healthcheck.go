package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// healthcheck runs `cohort healthcheck [--addr URL] [--path P] [--timeout D]`:
// one GET of the node's readiness endpoint, exit 0 on 200 and 1 otherwise.
// It exists for container HEALTHCHECKs: a FROM scratch image has no curl.
func healthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("healthcheck", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("COHORT_ADDR", "http://127.0.0.1:8080"), "URL of the node's public front (env COHORT_ADDR)")
	path := fs.String("path", "/_cohort/ready", "path to GET; /_cohort/health checks only that the process serves")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	quiet := fs.BoolP("quiet", "q", false, "print nothing on success")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: cohort healthcheck [--addr URL] [--path P] [--timeout D]\n\nExits 0 when GET URL+P answers 200, 1 otherwise.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cohort healthcheck: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	url := strings.TrimRight(*addr, "/")
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url += *path

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "cohort healthcheck: --addr %s: %v\n", *addr, err)
		return ExitUsage
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "cohort healthcheck: %v\n", err)
		return ExitFailure
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "cohort healthcheck: %s: %s %s\n", url, resp.Status, strings.TrimSpace(string(body)))
		return ExitFailure
	}
	if !*quiet {
		fmt.Fprintf(stdout, "%s: %s\n", url, resp.Status)
	}
	return ExitOK
}

package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/pflag"
)

// kvCmd shows one key of the replicated store (linearizably, through the
// admin API), or the store's figures on that node without a key.
func kvCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var db string
	var memcached bool
	return runAPI(ctx, apiCommand{
		name: "kv", usage: "[KEY] [--db N | --memcached]",
		args: func(n int) bool { return n <= 1 },
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&db, "db", "", "Redis database of KEY (default 0)")
			fs.BoolVar(&memcached, "memcached", false, "KEY is in memcached's namespace")
		},
		run: func(ctx context.Context, a *apiFlags, args []string, w io.Writer) error {
			q := url.Values{}
			if len(args) == 1 {
				q.Set("key", args[0])
			}
			if db != "" {
				q.Set("db", db)
			}
			if memcached {
				q.Set("ns", "memcached")
			}
			var out map[string]any
			if err := do(ctx, a, http.MethodGet, "/_cohort/api/kv?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if a.json || len(args) == 0 {
				printJSON(w, out)
				return nil
			}
			if out["exists"] != true {
				fmt.Fprintf(w, "%s: no such key\n", args[0])
				return nil
			}
			fmt.Fprintf(w, "key:      %s\ntype:     %v\n", args[0], out["type"])
			ttl := "none"
			if v, ok := out["ttl_ms"].(float64); ok && v >= 0 {
				ttl = fmt.Sprintf("%.3fs", v/1000)
			}
			fmt.Fprintf(w, "ttl:      %s\nrevision: %v\nsize:     %v bytes\n", ttl, out["revision"], out["size_bytes"])
			if v, ok := out["value"].(string); ok {
				fmt.Fprintf(w, "value:    %q\n", v)
			}
			if f, ok := out["fields"].([]any); ok && len(f) > 0 {
				parts := make([]string, len(f))
				for i, x := range f {
					parts[i] = fmt.Sprint(x)
				}
				fmt.Fprintf(w, "fields:   %s\n", strings.Join(parts, " "))
			}
			return nil
		},
	}, args, stdout, stderr)
}

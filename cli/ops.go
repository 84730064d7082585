package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/cohortserver/cohort/config"
	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/node"
	"github.com/cohortserver/cohort/raft"
)

// jobStatus is the part of GET /_cohort/api/jobs the table shows.
type jobStatus struct {
	Name      string    `json:"name"`
	Schedule  string    `json:"schedule"`
	Suspended bool      `json:"suspended"`
	NextRun   time.Time `json:"next_run"`
	LastRun   *struct {
		Status    string    `json:"status"`
		Node      string    `json:"node"`
		StartedAt time.Time `json:"started_at"`
		Error     string    `json:"error"`
	} `json:"last_run"`
	Running []any `json:"running"`
}

// jobs lists the jobs, or runs, suspends or resumes one.
func jobs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAPI(ctx, apiCommand{
		name: "jobs", usage: "[run|suspend|resume|runs NAME]",
		args: func(n int) bool { return n == 0 || n == 2 },
		run: func(ctx context.Context, a *apiFlags, args []string, w io.Writer) error {
			if len(args) == 2 {
				return jobAction(ctx, a, args[0], args[1], w)
			}
			var raw map[string]any
			if err := do(ctx, a, http.MethodGet, "/_cohort/api/jobs", nil, &raw); err != nil {
				return err
			}
			if a.json {
				printJSON(w, raw)
				return nil
			}
			var v struct {
				Jobs []jobStatus `json:"jobs"`
			}
			if err := do(ctx, a, http.MethodGet, "/_cohort/api/jobs", nil, &v); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB\tSCHEDULE\tLAST RUN\tRESULT\tON\tNEXT RUN")
			for _, j := range v.Jobs {
				last, result, on := "-", "-", "-"
				if j.LastRun != nil {
					last, result, on = fmtTime(j.LastRun.StartedAt), j.LastRun.Status, dash(j.LastRun.Node)
				}
				if len(j.Running) > 0 {
					result = "running"
				}
				next := fmtTime(j.NextRun)
				if j.Suspended {
					next = "suspended"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.Name, j.Schedule, last, result, on, next)
			}
			tw.Flush()
			return nil
		},
	}, args, stdout, stderr)
}

func jobAction(ctx context.Context, a *apiFlags, action, name string, w io.Writer) error {
	p := "/_cohort/api/jobs/" + url.PathEscape(name)
	var out map[string]any
	var err error
	switch action {
	case "run", "suspend", "resume":
		err = do(ctx, a, http.MethodPost, p+"/"+action, nil, &out)
	case "runs":
		err = do(ctx, a, http.MethodGet, p+"/runs", nil, &out)
	default:
		return &apiError{code: http.StatusNotFound, err: fmt.Errorf("unknown jobs action %q: use run, suspend, resume or runs", action)}
	}
	if err != nil {
		return err
	}
	if a.json || action == "runs" {
		printJSON(w, out)
		return nil
	}
	fmt.Fprintf(w, "%s: %s done\n", name, action)
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// backup downloads a consistent backup into FILE ("-" for stdout). The
// file is written beside FILE first and renamed once complete and checked.
func backup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAPI(ctx, apiCommand{
		name: "backup", usage: "FILE", args: exactly(1),
		run: func(ctx context.Context, a *apiFlags, args []string, w io.Writer) error {
			meta, blobs, err := fetchBackup(ctx, a, args[0], w)
			if err != nil {
				return err
			}
			warn := backupWarning(meta, blobs)
			if warn != "" {
				fmt.Fprintf(stderr, "WARNING: %s\n", warn)
			}
			if args[0] == "-" {
				return nil
			}
			if a.json {
				printJSON(w, map[string]any{"file": args[0], "meta": meta, "blobs": blobs, "incomplete": warn})
			} else {
				fmt.Fprintf(w, "backup of index %d (term %d, %d bytes of state and %d file contents of %d bytes, taken on %s) written to %s\n",
					meta.Index, meta.Term, meta.Size, blobs.Blobs, blobs.Bytes, meta.NodeID, args[0])
			}
			return nil
		},
	}, args, stdout, stderr)
}

// backupWarning says what a backup leaves out, or "" when it is complete.
func backupWarning(meta raft.BackupMeta, blobs files.BackupSummary) string {
	switch {
	case meta.Tail == "":
		return "this backup (format 1, from an older node) holds the shared files' metadata but not their contents; " +
			"a restore from it alone loses them: copy the files directory of a node's data dir with it"
	case len(blobs.Missing) > 0:
		return fmt.Sprintf("no node could serve the content of %d files (first: %s); the backup lists them without content",
			len(blobs.Missing), blobs.Missing[0])
	}
	return ""
}

// fetchBackup downloads the backup into file ("-": stdout), checking its
// framing on the way, and returns its header and what its blob section
// holds.
func fetchBackup(ctx context.Context, a *apiFlags, file string, stdout io.Writer) (meta raft.BackupMeta, blobs files.BackupSummary, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.addr+"/_cohort/api/backup", nil)
	if err != nil {
		return meta, blobs, fmt.Errorf("--addr %s: %w", a.addr, err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return meta, blobs, &apiError{err: fmt.Errorf("cannot reach %s: %w", a.addr, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return meta, blobs, &apiError{code: resp.StatusCode, err: fmt.Errorf("GET /_cohort/api/backup: HTTP %d: %s", resp.StatusCode, b)}
	}
	var out io.Writer = stdout
	var tmp *os.File
	if file != "-" {
		tmp, err = os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".part*")
		if err != nil {
			return meta, blobs, fmt.Errorf("create %s: %w", file, err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		out = tmp
	}
	// Check the stream while copying it: the header must parse, the
	// snapshot must have the size it announces and the blob section must
	// end with an end record that matches what it holds.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReaderSize(pr, 256<<10)
		m, err := raft.ReadBackupHeader(br)
		if err == nil {
			meta = m
			var n int64
			n, err = io.Copy(io.Discard, io.LimitReader(br, m.Size))
			if err == nil && n != m.Size {
				err = fmt.Errorf("backup truncated: %d of %d bytes", n, m.Size)
			}
		}
		if err == nil && m.Tail == files.BackupTail {
			blobs, err = files.ReadBackupBlobs(br, func(string, int64, io.Reader) error { return nil })
		} else if err == nil && m.Tail != "" {
			err = fmt.Errorf("backup holds %q after its state, which this version cannot check", m.Tail)
		}
		if err == nil {
			if _, perr := br.Peek(1); perr == nil {
				err = errors.New("backup holds bytes after its end")
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		done <- err
	}()
	_, cerr := io.Copy(io.MultiWriter(out, pw), resp.Body)
	pw.CloseWithError(cerr)
	if err := <-done; err != nil {
		return meta, blobs, fmt.Errorf("check backup: %w", err)
	}
	if cerr != nil {
		return meta, blobs, &apiError{err: fmt.Errorf("download backup: %w", cerr)}
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return meta, blobs, fmt.Errorf("write %s: %w", file, err)
		}
		if err := tmp.Close(); err != nil {
			return meta, blobs, fmt.Errorf("write %s: %w", file, err)
		}
		if err := os.Rename(tmp.Name(), file); err != nil {
			return meta, blobs, fmt.Errorf("write %s: %w", file, err)
		}
	}
	return meta, blobs, nil
}

// offlineFlags are the flags of the commands that work on a stopped
// node's data dir.
type offlineFlags struct {
	nodeID, dataDir, clusterAddr, advertise, peers, logLevel string
	json                                                     bool
}

func (o *offlineFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.nodeID, "node-id", "", "id of the node whose data dir this is (required)")
	fs.StringVar(&o.dataDir, "data-dir", "", "the node's data dir (default ./data/<node-id>)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level while working")
	fs.BoolVar(&o.json, "json", false, "print JSON for scripts")
}

func (o *offlineFlags) config(stderr io.Writer) (config.Config, error) {
	cfg := config.Default()
	if !config.ValidNodeID(o.nodeID) {
		return cfg, fmt.Errorf("--node-id %q must match [a-z0-9][a-z0-9-]{0,31}", o.nodeID)
	}
	cfg.NodeID, cfg.DataDir = o.nodeID, o.dataDir
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join("data", o.nodeID)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: %w", o.logLevel, err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	return cfg, nil
}

func parseOffline(name, usage string, nargs int, args []string, stderr io.Writer, extra func(*pflag.FlagSet, *offlineFlags)) (*offlineFlags, []string, int) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cohort %s %s\n", name, usage)
		fs.PrintDefaults()
	}
	var o offlineFlags
	o.register(fs)
	extra(fs, &o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, nil, ExitOK
		}
		return nil, nil, ExitUsage
	}
	if fs.NArg() != nargs || o.nodeID == "" {
		fmt.Fprintf(stderr, "cohort %s: wrong arguments\n", name)
		fs.Usage()
		return nil, nil, ExitUsage
	}
	return &o, fs.Args(), -1
}

// restore seeds an empty data dir from a backup as a new one-node cluster.
func restore(_ context.Context, args []string, stdout, stderr io.Writer) int {
	o, rest, code := parseOffline("restore", "FILE --node-id ID [--data-dir DIR] [--cluster-addr HOST:PORT] [--advertise-addr HOST:PORT]", 1, args, stderr,
		func(fs *pflag.FlagSet, o *offlineFlags) {
			fs.StringVar(&o.clusterAddr, "cluster-addr", "127.0.0.1:7070", "cluster address the restored node will serve on")
			fs.StringVar(&o.advertise, "advertise-addr", "", "cluster address other nodes dial (default --cluster-addr)")
		})
	if o == nil {
		return code
	}
	cfg, err := o.config(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "cohort restore: %v\n", err)
		return ExitUsage
	}
	cfg.ClusterAddr, cfg.AdvertiseAddr = o.clusterAddr, o.advertise
	if cfg.AdvertiseAddr == "" {
		cfg.AdvertiseAddr = cfg.ClusterAddr
	}
	f, err := os.Open(rest[0])
	if err != nil {
		fmt.Fprintf(stderr, "cohort restore: %v\n", err)
		return ExitFailure
	}
	defer f.Close()
	meta, err := node.Restore(cfg, f)
	if err != nil {
		fmt.Fprintf(stderr, "cohort restore: %v\n", err)
		return ExitFailure
	}
	if warn := backupWarning(meta.BackupMeta, meta.Blobs); warn != "" {
		fmt.Fprintf(stderr, "WARNING: %s\n", warn)
	}
	if o.json {
		printJSON(stdout, map[string]any{"data_dir": cfg.DataDir, "node_id": cfg.NodeID, "cluster_addr": cfg.AdvertiseAddr,
			"meta": meta.BackupMeta, "blobs": meta.Blobs, "no_contents": meta.NoContents})
		return ExitOK
	}
	fmt.Fprintf(stdout, "restored index %d (term %d, backup of %s taken %s) and %d file contents of %d bytes into %s as a one-node cluster of %s at %s\n",
		meta.Index, meta.Term, meta.NodeID, meta.Created.Format(time.RFC3339), meta.Blobs.Blobs, meta.Blobs.Bytes, cfg.DataDir, cfg.NodeID, cfg.AdvertiseAddr)
	fmt.Fprintf(stdout, "next: cohort serve --node-id %s --data-dir %s --cluster-addr %s ...; then add nodes with --join %s\n",
		cfg.NodeID, cfg.DataDir, cfg.ClusterAddr, cfg.AdvertiseAddr)
	return ExitOK
}

// recoverCmd rewrites a stopped node's Raft configuration after a quorum
// loss (the peers.json procedure).
func recoverCmd(_ context.Context, args []string, stdout, stderr io.Writer) int {
	o, _, code := parseOffline("recover", "--node-id ID [--data-dir DIR] --peers ID=HOST:PORT,...", 0, args, stderr,
		func(fs *pflag.FlagSet, o *offlineFlags) {
			fs.StringVar(&o.peers, "peers", "", "the new configuration: every surviving voter, ID=HOST:PORT,... (required; must name this node)")
		})
	if o == nil {
		return code
	}
	cfg, err := o.config(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "cohort recover: %v\n", err)
		return ExitUsage
	}
	peers, err := config.ParsePeers(strings.Split(o.peers, ","))
	if err != nil || len(peers) == 0 {
		fmt.Fprintf(stderr, "cohort recover: --peers %q: give ID=HOST:PORT,... (%v)\n", o.peers, err)
		return ExitUsage
	}
	for _, p := range peers {
		if p.ID == cfg.NodeID {
			cfg.ClusterAddr, cfg.AdvertiseAddr = p.Address, p.Address
		}
	}
	if err := node.Recover(cfg, peers); err != nil {
		fmt.Fprintf(stderr, "cohort recover: %v\n", err)
		return ExitFailure
	}
	if o.json {
		printJSON(stdout, map[string]any{"data_dir": cfg.DataDir, "node_id": cfg.NodeID, "peers": peers})
		return ExitOK
	}
	fmt.Fprintf(stdout, "recovered %s: the raft configuration is now %s\n", cfg.DataDir, o.peers)
	fmt.Fprintf(stdout, "next: start the node(s) of --peers with `cohort serve` on their data dirs; add new nodes with --join\n")
	return ExitOK
}

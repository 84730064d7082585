// Command bench measures cohort against the stacks it replaces, side by
// side in one run on one machine, and writes bench/results/DATE.md with
// PNG charts. See bench/README.md.
//
// bench is its own Go module (its load generators and peers' clients stay
// out of the root go.mod); run it from its directory:
//
//	cd bench && go run .                      # every scenario, full length
//	cd bench && go run . -short               # smoke run, under 3 minutes
//	cd bench && go run . -scenario stack,hop  # some scenarios alone
//
// It also carries three commands the harness starts as processes:
// "stack-app" (the conventional stack's Go app server), "cohort-node"
// (cohort serve through node.New with two benchmark routes) and
// "resp-floor" (a RESP server on cohort's wire library with nothing
// behind it, the kv scenario's floor).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// scenarios in the order they run.
var scenarios = []struct {
	key  string
	num  string
	run  func(ctx context.Context, e *env) *section
	desc string
}{
	{"stack", "1", runStack, "the stack: 3 cohort nodes vs HAProxy + 3 scs apps + Redis, 90/10 session reads/writes"},
	{"writes", "2", runWrites, "replicated writes: 1 KiB session writes through Raft vs etcd puts"},
	{"reads", "3", runReads, "session reads: a handler's session read vs Redis GET vs memcached get"},
	{"hop", "4", runHop, "the forwarded hop: cohort's front vs HAProxy"},
	{"failover", "5", runFailover, "failover: kill -9 of the leader under load"},
	{"files", "6", runFiles, "files: 1 GiB upload with 3 copies vs fdatasync'd write; 4 KiB files/s"},
	{"scale", "7", runScale, "scale: memory, snapshot, restore, 3 vs 5 nodes, catch-up"},
	{"kv", "8", runKV, "the replicated store: Redis and memcached protocols vs Redis appendfsync always, Redis, memcached"},
	{"mount", "9", runMount, "files mount: fio through the FUSE mount of the leader and a follower vs a local directory"},
}

// options are the command line.
type options struct {
	short    bool
	only     []string
	out      string
	work     string
	cohort   string
	keep     bool
	rounds   int
	round    time.Duration
	warmup   time.Duration
	command  string
	failReps int
	profile  bool

	cohortDesc string // what binary and source were measured
	tag        string // added to the date in file names
	sessions   []int  // sizes of the scale curve
}

func (o options) modeName() string {
	if o.short {
		return "-short (smoke run)"
	}
	return "full"
}

// env is what every scenario gets.
type env struct {
	opts   options
	p      *procs
	cohort string // the real cohort binary
	self   string // this binary (stack-app, cohort-node)
	out    string // results directory (charts go there)
	stamp  string // date prefix of chart files
	logf   func(string, ...any)
}

// cohortCmd is the real binary; benchNodeCmd adds the benchmark routes.
func (e *env) cohortCmd() []string    { return []string{e.cohort} }
func (e *env) benchNodeCmd() []string { return []string{e.self, "cohort-node"} }

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "stack-app", "cohort-node", "resp-floor":
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			switch os.Args[1] {
			case "stack-app":
				err = runStackApp(ctx, os.Args[2:])
			case "cohort-node":
				err = runCohortNode(ctx, os.Args[2:])
			default:
				err = runRESPFloor(ctx, os.Args[2:])
			}
			stop()
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// toRepoRoot makes the paths given on the command line absolute and moves
// to the repository root (the directory holding go.mod and bench/go.mod),
// which the defaults are relative to: -out bench/results, cohort built
// from ".". bench is its own module, run from its directory
// (cd bench && go run . ...).
func toRepoRoot(fs *flag.FlagSet, o *options) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		for name, p := range map[string]*string{"out": &o.out, "work": &o.work, "cohort": &o.cohort} {
			if f.Name == name && *p != "" && err == nil {
				*p, err = filepath.Abs(*p)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("resolve paths: %w", err)
	}
	dir, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "bench", "go.mod")); err == nil {
			if err := os.Chdir(dir); err != nil {
				return fmt.Errorf("go to the repository root: %w", err)
			}
			return nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return errors.New("run bench inside the cohort repository (cd bench && go run . ...)")
		}
		dir = parent
	}
}

func run() error {
	var o options
	var only string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.short, "short", false, "smoke run: fewer and shorter rounds, small sizes (under 3 minutes)")
	fs.StringVar(&only, "scenario", "", "comma-separated scenarios to run alone, by name or number: "+scenarioNames())
	fs.StringVar(&o.out, "out", "bench/results", "directory of the results note and charts")
	fs.StringVar(&o.work, "work", "", "working directory for data and logs (default: a new temp dir, removed unless -keep)")
	fs.StringVar(&o.cohort, "cohort", "", "cohort binary to measure (default: go build the repository root)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (data, logs of every process)")
	fs.IntVar(&o.rounds, "rounds", 0, "measured rounds per setting (default 3, 2 with -short)")
	fs.DurationVar(&o.round, "round", 0, "length of one round (default 5s, 1.5s with -short)")
	fs.StringVar(&o.tag, "tag", "", "added to the date in the names of the note and charts (DATE-TAG.md)")
	var sizes string
	fs.StringVar(&sizes, "sessions", "", "session counts of the scale curve (default 10000,100000; 10000 with -short)")
	fs.IntVar(&o.failReps, "kills", 0, "leader kills in the failover scenario (default 5, 1 with -short)")
	fs.BoolVar(&o.profile, "profile", true, "sample a cohort node with perf during one extra, unmeasured round of the stack, writes, hop, files and kv scenarios")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	o.command = "cd bench && go run . " + strings.Join(os.Args[1:], " ")
	if err := toRepoRoot(fs, &o); err != nil {
		return err
	}
	for _, f := range strings.Split(sizes, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("%w: -sessions: %q is not a positive count", errUsage, f)
		}
		o.sessions = append(o.sessions, n)
	}
	o.warmup = 3 * time.Second
	if o.failReps == 0 {
		o.failReps = 5
		if o.short {
			o.failReps = 1
		}
	}
	if o.short {
		o.warmup = time.Second
		if o.rounds == 0 {
			o.rounds = 2
		}
		if o.round == 0 {
			o.round = 1500 * time.Millisecond
		}
	}
	if o.rounds == 0 {
		o.rounds = 3
	}
	if o.round == 0 {
		o.round = 5 * time.Second
	}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		found := false
		for _, sc := range scenarios {
			if s == sc.key || s == sc.num {
				o.only = append(o.only, sc.key)
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%w: unknown scenario %q; use %s", errUsage, s, scenarioNames())
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(f, a...))
	}
	started := time.Now()
	if o.work == "" {
		dir, err := os.MkdirTemp("", "cohort-bench-")
		if err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
		o.work = dir
	}
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if !o.keep {
		defer os.RemoveAll(o.work)
	} else {
		defer logf("kept the working directory %s", o.work)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	if err := ensurePeers(ctx, logf); err != nil {
		return err
	}
	p := newProcs(o.work)
	defer p.stopAll()

	e := &env{opts: o, p: p, out: o.out, stamp: started.UTC().Format("2006-01-02"), logf: logf}
	if o.short {
		e.stamp += "-short"
	}
	if o.tag != "" {
		e.stamp += "-" + o.tag
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	e.self = self
	// `go run` strips its binary of symbols, and perf profiles of the
	// cohort-node processes need them: build an unstripped copy.
	selfBin := filepath.Join(o.work, "bench")
	build := exec.CommandContext(ctx, "go", "build", "-o", selfBin, ".")
	build.Dir = "bench" // its own module
	if out, err := build.CombinedOutput(); err == nil {
		e.self = selfBin
	} else {
		logf("using this binary for the helper processes (go build in bench/: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	e.cohort = o.cohort
	if e.cohort == "" {
		e.cohort = filepath.Join(o.work, "cohort")
		logf("building cohort: go build -o %s .", e.cohort)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", e.cohort, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build cohort: %w\n%s", err, out)
		}
	}
	e.opts.cohortDesc = describeCohort(ctx, e.cohort, o.cohort == "")
	loadStart := loadavg()
	var secs []*section
	for _, sc := range scenarios {
		if len(o.only) > 0 && !slices.Contains(o.only, sc.key) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		logf("scenario %s: %s", sc.num, sc.desc)
		t0 := time.Now()
		sec := sc.run(ctx, e)
		sec.key = sc.key
		sec.took = time.Since(t0)
		p.stopAll() // whatever the scenario left, even on failure
		if sec.err != nil {
			logf("scenario %s failed: %v", sc.key, sec.err)
		}
		secs = append(secs, sec)
	}
	path := filepath.Join(o.out, e.stamp+".md")
	if err := writeReport(path, secs, e.opts, started, loadStart, loadavg()); err != nil {
		return err
	}
	logf("wrote %s in %s", path, time.Since(started).Round(time.Second))
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return nil
}

func scenarioNames() string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.num+"|"+s.key)
	}
	return strings.Join(n, ", ")
}

// describeCohort names the measured binary: its version line and, when
// built here, the commit of the working tree and whether it had changes.
func describeCohort(ctx context.Context, bin string, built bool) string {
	ver, _ := exec.CommandContext(ctx, bin, "version").Output()
	desc := strings.Join(strings.Fields(string(ver)), " ")
	if !built {
		return fmt.Sprintf("`%s` (%s)", bin, desc)
	}
	head, _ := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	dirty, _ := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output()
	state := "clean tree"
	if n := len(strings.Fields(string(dirty))) / 2; n > 0 {
		state = fmt.Sprintf("%d files changed since that commit", n)
	}
	return fmt.Sprintf("built from the working tree at %s (%s); `cohort version`: %s", strings.TrimSpace(string(head)), state, desc)
}

package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestJobsFile(t *testing.T) {
	tests := []struct {
		name, file, ext string
		wantErr         string // substring; "" = valid
	}{
		{name: "command and http", ext: "yaml", file: `
jobs:
  - name: echo
    schedule: "@every 1s"
    command: ["/bin/echo", "hi"]
    timeout: 10s
    time_zone: Australia/Lord_Howe
  - name: report
    schedule: "0 3 * * *"
    http: {url: "http://127.0.0.1:1/x"}
`},
		{name: "json", ext: "json", file: `{"jobs":[{"name":"a","schedule":"@daily","command":["true"]}]}`},
		{name: "both executors", ext: "yaml", file: "jobs:\n  - {name: a, schedule: '@daily', command: [x], http: {url: y}}\n", wantErr: "exactly one of"},
		{name: "no schedule", ext: "yaml", file: "jobs:\n  - {name: a, command: [x]}\n", wantErr: "schedule is required"},
		{name: "bad zone", ext: "yaml", file: "jobs:\n  - {name: a, schedule: '@daily', command: [x], time_zone: Mars/Base}\n", wantErr: "time_zone"},
		{name: "bad policy", ext: "yaml", file: "jobs:\n  - {name: a, schedule: '@daily', command: [x], misfire: later}\n", wantErr: "misfire"},
		{name: "duplicate", ext: "yaml", file: "jobs:\n  - {name: a, schedule: '@daily', command: [x]}\n  - {name: a, schedule: '@daily', command: [x]}\n", wantErr: "used twice"},
		{name: "typo key", ext: "yaml", file: "jobs:\n  - {name: a, schedule: '@daily', command: [x], timout: 5s}\n", wantErr: "timout"},
		{name: "unknown top key", ext: "yaml", file: "job:\n  - {name: a}\n", wantErr: "top-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "jobs."+tt.ext)
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			c := defaultJobs()
			c.File = path
			c.Specs, c.Singletons, c.fileErr = readJobs(path)
			var errs []error
			c.validate(func(err error) { errs = append(errs, err) })
			if tt.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("unexpected problems: %v", errs)
				}
				return
			}
			if len(errs) == 0 || !strings.Contains(errors.Join(errs...).Error(), tt.wantErr) || !errors.Is(errs[0], ErrInvalid) {
				t.Fatalf("problems %v, want one mentioning %q", errs, tt.wantErr)
			}
		})
	}
	// Durations and zones decode.
	path := filepath.Join(t.TempDir(), "j.yaml")
	_ = os.WriteFile(path, []byte("jobs:\n  - {name: a, schedule: '@daily', command: [x], timeout: 90s, backoff: 2s}\n"), 0o600)
	f, err := ReadJobsFile(path)
	specs := f.Jobs
	if err != nil || len(specs) != 1 || specs[0].Timeout != 90*time.Second || specs[0].Backoff != 2*time.Second {
		t.Fatalf("specs %+v err %v", specs, err)
	}
}

// readJobs is ReadJobsFile spread over the fields of JobsConfig.
func readJobs(path string) ([]JobSpec, []Singleton, error) {
	f, err := ReadJobsFile(path)
	return f.Jobs, f.Singletons, err
}

// TestJobsFileSingletons reads the "singletons" list of --jobs-file, merges
// it with --singleton and --singleton-nodes, and names both places of every
// name given twice.
func TestJobsFileSingletons(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123")
	base := []string{"--node-id", "n1", "--cluster-key-file", key, "--cluster-addr", "127.0.0.1:1"}
	tests := []struct {
		name, file string
		flags      []string
		want       []Singleton // when valid: App.Singletons in order
		wantErr    []string    // substrings of the error, all present
	}{
		{name: "file only", file: `
singletons:
  - name: mailer
    command: exec php worker.php
  - {name: indexer, command: ./bin/indexer, nodes: [" n2", n3, n2, n1]}
`, want: []Singleton{{Name: "mailer", Command: "exec php worker.php"}, {Name: "indexer", Command: "./bin/indexer", Nodes: []string{"n2", "n3", "n1"}}}},
		{name: "with jobs and flags", file: `
jobs:
  - {name: j, schedule: '@daily', command: [x]}
singletons:
  - {name: b, command: run b}
`, flags: []string{"--singleton", "a=run a", "--singleton-nodes", "b=n3,n1"},
			want: []Singleton{{Name: "a", Command: "run a"}, {Name: "b", Command: "run b", Nodes: []string{"n3", "n1"}}}},
		{name: "flag and file", file: "singletons:\n  - {name: a, command: x}\n", flags: []string{"--singleton", "a=y"},
			wantErr: []string{"--jobs-file", `singleton 1 ("a")`, "also defined by --singleton a="}},
		{name: "twice in file", file: "singletons:\n  - {name: a, command: x}\n  - {name: a, command: y}\n",
			wantErr: []string{"--jobs-file", `singleton 2 ("a")`, "already used by singleton 1"}},
		{name: "bad name", file: "singletons:\n  - {name: Mail, command: x}\n", wantErr: []string{`singleton 1 ("Mail")`, "name must match"}},
		{name: "no name", file: "singletons:\n  - {command: x}\n", wantErr: []string{"name must match"}},
		{name: "empty command", file: "singletons:\n  - {name: a, command: '  '}\n", wantErr: []string{`singleton 1 ("a")`, "command is required"}},
		{name: "blank nodes", file: "singletons:\n  - {name: a, command: x, nodes: ['', ' ']}\n", wantErr: []string{"names no node"}},
		{name: "nodes twice", file: "singletons:\n  - {name: a, command: x, nodes: [n2]}\n", flags: []string{"--singleton-nodes", "a=n3"},
			wantErr: []string{"--singleton-nodes", "already has nodes in"}},
		{name: "typo key", file: "singletons:\n  - {name: a, comand: x}\n", wantErr: []string{"--jobs-file", "comand"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "jobs.yaml", tt.file)
			c, err := Load(false, append(append(slices.Clone(base), "--jobs-file", path), tt.flags...), io.Discard)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !slices.EqualFunc(c.App.Singletons, tt.want, func(a, b Singleton) bool {
					return a.Name == b.Name && a.Command == b.Command && slices.Equal(a.Nodes, b.Nodes)
				}) {
					t.Fatalf("singletons %+v, want %+v", c.App.Singletons, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func FuzzReadJobsFile(f *testing.F) {
	for _, s := range []string{
		"jobs:\n  - {name: a, schedule: '@daily', command: [x]}\n",
		"jobs:\n  - name: r\n    http: {url: u, headers: {A: b}}\n",
		"jobs: 5\n", "jobs:\n  - [1,2]\n", ":", "",
		"singletons:\n  - {name: a, command: run a, nodes: [n2, n1]}\n  - {name: b, command: run b}\n",
		"jobs:\n  - {name: a, schedule: '@daily', command: [x]}\nsingletons:\n  - {name: a, command: x}\n  - {name: a, command: ''}\n",
		"singletons:\n  - {name: a, command: x}\n  - {name: a, command: y, nodes: [n1]}\n  - {name: flag, command: z}\n",
		"singletons: {name: a}\n", "singletons:\n  - {name: a, command: [x], nodes: n1}\n",
	} {

		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string) {
		path := filepath.Join(dir, "jobs.yaml")
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		c := defaultJobs()
		c.File = path
		c.Specs, c.Singletons, c.fileErr = readJobs(path)
		c.validate(func(error) {})
		// Whatever the file holds, only well-formed singletons with
		// distinct names reach the node; the rest are problems.
		a := defaultApp()
		a.Singletons = []Singleton{{Name: "flag", Command: "x"}}
		a.addFileSingletons(path, c.Singletons)
		seen := map[string]bool{}
		for _, s := range a.Singletons {
			if !singletonNameRe.MatchString(s.Name) || s.Command == "" || seen[s.Name] || (s.Nodes != nil && len(s.Nodes) == 0) {
				t.Fatalf("merged singleton %+v (of %+v)", s, a.Singletons)
			}
			seen[s.Name] = true
		}
		if len(a.Singletons)+len(a.singletonErr) != 1+len(c.Singletons) {
			t.Fatalf("%d file singletons gave %d singletons and %d problems", len(c.Singletons), len(a.Singletons)-1, len(a.singletonErr))
		}
	})
}

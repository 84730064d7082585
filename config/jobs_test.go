package config

import (
	"errors"
	"os"
	"path/filepath"
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
			c.Specs, c.fileErr = ReadJobsFile(path)
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
	specs, err := ReadJobsFile(path)
	if err != nil || len(specs) != 1 || specs[0].Timeout != 90*time.Second || specs[0].Backoff != 2*time.Second {
		t.Fatalf("specs %+v err %v", specs, err)
	}
}

func FuzzReadJobsFile(f *testing.F) {
	for _, s := range []string{
		"jobs:\n  - {name: a, schedule: '@daily', command: [x]}\n",
		"jobs:\n  - name: r\n    http: {url: u, headers: {A: b}}\n",
		"jobs: 5\n", "jobs:\n  - [1,2]\n", ":", "",
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
		c.Specs, c.fileErr = ReadJobsFile(path)
		c.validate(func(error) {})
	})
}

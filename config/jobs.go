package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// JobsConfig holds the settings of the jobs capability.
type JobsConfig struct {
	// File is --jobs-file: a YAML, TOML or JSON file with a top-level
	// "jobs" list of JobSpec and a "singletons" list of Singleton. ""
	// declares none.
	File string
	// History is --jobs-history: finished runs kept per job (replicated).
	History int
	// Specs are the jobs read from File.
	Specs []JobSpec
	// Singletons are the singletons read from File, as written; config
	// checks them and merges them into AppConfig.Singletons, which is what
	// the node runs.
	Singletons []Singleton

	fileErr error
}

// JobSpec is one job declared in --jobs-file. Exactly one of Command and
// HTTP says what a run does. Keys are snake_case in the file.
type JobSpec struct {
	Name             string        `mapstructure:"name"`
	Schedule         string        `mapstructure:"schedule"`  // cron (5 or 6 fields), @daily..., @every 30s
	TimeZone         string        `mapstructure:"time_zone"` // IANA zone, default UTC
	Description      string        `mapstructure:"description"`
	Concurrency      string        `mapstructure:"concurrency"` // forbid (default), allow, replace
	Misfire          string        `mapstructure:"misfire"`     // fire_once (default), skip, fire_all
	CatchUp          int           `mapstructure:"catch_up"`    // fire_all bound (default 10)
	MisfireThreshold time.Duration `mapstructure:"misfire_threshold"`
	Recover          string        `mapstructure:"recover"` // rerun (default), skip
	Timeout          time.Duration `mapstructure:"timeout"`
	Retries          int           `mapstructure:"retries"`
	Backoff          time.Duration `mapstructure:"backoff"`
	MaxBackoff       time.Duration `mapstructure:"max_backoff"`

	Command []string          `mapstructure:"command"` // argv; use ["/bin/sh","-c","..."] for a shell
	Dir     string            `mapstructure:"dir"`
	Env     map[string]string `mapstructure:"env"`
	HTTP    *JobHTTP          `mapstructure:"http"`
}

// JobHTTP is the HTTP executor of a declared job.
type JobHTTP struct {
	URL string `mapstructure:"url"`
	// Path, instead of URL, is a path of this node's own app
	// (--app-upstream): the leader calls its local app.
	Path    string            `mapstructure:"path"`
	Method  string            `mapstructure:"method"` // default POST
	Headers map[string]string `mapstructure:"headers"`
	Body    string            `mapstructure:"body"`
}

func defaultJobs() JobsConfig { return JobsConfig{History: 50} }

// flags registers this capability's flags with its defaults.
func (d JobsConfig) flags(fs *pflag.FlagSet) {
	fs.String("jobs-file", d.File, "YAML, TOML or JSON file declaring jobs and singleton processes (top-level \"jobs\" and \"singletons\" lists)")
	fs.Int("jobs-history", d.History, "finished runs kept per job in the replicated history")
}

// load reads the merged flag/env/file values.
func (c *JobsConfig) load(v *viper.Viper) {
	c.File = v.GetString("jobs-file")
	c.History = v.GetInt("jobs-history")
	c.Specs, c.Singletons, c.fileErr = nil, nil, nil
	if c.File != "" {
		var f JobsFile
		f, c.fileErr = ReadJobsFile(c.File)
		c.Specs, c.Singletons = f.Jobs, f.Singletons
	}
}

// JobsFile is the content of a --jobs-file.
type JobsFile struct {
	Jobs       []JobSpec   `mapstructure:"jobs"`
	Singletons []Singleton `mapstructure:"singletons"`
}

// ReadJobsFile reads a jobs file: {"jobs": [JobSpec...], "singletons":
// [Singleton...]}, both optional. It checks the file's shape only; the
// values are checked by Validate.
func ReadJobsFile(path string) (JobsFile, error) {
	if _, err := os.Stat(path); err != nil {
		return JobsFile{}, err
	}
	fv := viper.New()
	fv.SetConfigFile(path)
	if err := fv.ReadInConfig(); err != nil {
		return JobsFile{}, err
	}
	for _, k := range fv.AllKeys() {
		if !strings.HasPrefix(k, "jobs") && !strings.HasPrefix(k, "singletons") {
			return JobsFile{}, fmt.Errorf("unknown top-level key %q (want a \"jobs\" or \"singletons\" list)", k)
		}
	}
	var file JobsFile
	if err := fv.Unmarshal(&file, func(dc *mapstructure.DecoderConfig) { dc.ErrorUnused = true }); err != nil {
		return JobsFile{}, err
	}
	return file, nil
}

var jobNameRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// validate reports each problem through add, naming the flag (see problem).
func (c *JobsConfig) validate(add func(error)) {
	if c.History < 1 || c.History > 10000 {
		add(problem("jobs-history", "%d: want 1..10000", c.History))
	}
	if c.fileErr != nil {
		add(problem("jobs-file", "%s: %v", c.File, c.fileErr))
		return
	}
	seen := make(map[string]bool)
	for i, s := range c.Specs {
		where := fmt.Sprintf("%s: job %d (%q)", c.File, i+1, s.Name)
		switch {
		case !jobNameRe.MatchString(s.Name):
			add(problem("jobs-file", "%s: name must be 1..64 of A-Z a-z 0-9 . _ -", where))
		case seen[s.Name]:
			add(problem("jobs-file", "%s: name used twice", where))
		}
		seen[s.Name] = true
		if s.Schedule == "" {
			add(problem("jobs-file", "%s: schedule is required, e.g. \"*/5 * * * *\" or \"@every 30s\"", where))
		}
		if (len(s.Command) > 0) == (s.HTTP != nil) {
			add(problem("jobs-file", "%s: give exactly one of command (argv list) or http (url)", where))
		}
		if s.HTTP != nil && (s.HTTP.URL == "") == (s.HTTP.Path == "") {
			add(problem("jobs-file", "%s: http needs exactly one of url or path (a path of the local app, --app-upstream)", where))
		}
		if s.HTTP != nil && s.HTTP.Path != "" && s.HTTP.Path[0] != '/' {
			add(problem("jobs-file", "%s: http.path %q must start with /", where, s.HTTP.Path))
		}
		if s.TimeZone != "" {
			if _, err := time.LoadLocation(s.TimeZone); err != nil {
				add(problem("jobs-file", "%s: time_zone %q: %v", where, s.TimeZone, err))
			}
		}
		if !oneOf(s.Concurrency, "", "forbid", "allow", "replace") {
			add(problem("jobs-file", "%s: concurrency %q: want forbid, allow or replace", where, s.Concurrency))
		}
		if !oneOf(s.Misfire, "", "fire_once", "skip", "fire_all") {
			add(problem("jobs-file", "%s: misfire %q: want fire_once, skip or fire_all", where, s.Misfire))
		}
		if !oneOf(s.Recover, "", "rerun", "skip") {
			add(problem("jobs-file", "%s: recover %q: want rerun or skip", where, s.Recover))
		}
		if s.Retries < 0 || s.CatchUp < 0 || s.Timeout < 0 || s.Backoff < 0 || s.MaxBackoff < 0 || s.MisfireThreshold < 0 {
			add(problem("jobs-file", "%s: retries, catch_up and durations must not be negative", where))
		}
	}
}

func oneOf(s string, opts ...string) bool {
	for _, o := range opts {
		if s == o {
			return true
		}
	}
	return false
}

package config

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// FilesConfig holds the settings of the shared files.
type FilesConfig struct {
	// MaxBytes bounds the total size of the live shared files; 0 = no limit.
	MaxBytes int64
	// MaxFileBytes bounds one file; 0 = no limit.
	MaxFileBytes int64
	// MirrorDir, when set, is a read-only copy of the tree each node keeps.
	MirrorDir string
	// GCGrace is how long unreferenced blobs and temp files stay.
	GCGrace time.Duration
	// ScrubInterval is the pause between two background scrubs; 0 = off.
	ScrubInterval time.Duration
	// ScrubRate bounds the scrubber's reads in bytes per second; 0 = no limit.
	ScrubRate int64
	// Mount, when set, is where the shared files are mounted (FUSE),
	// readable and writable by any program.
	Mount string

	bad []error // sizes that did not parse, reported by validate
}

func defaultFiles() FilesConfig {
	return FilesConfig{
		MaxFileBytes:  16 << 30,
		GCGrace:       time.Hour,
		ScrubInterval: 24 * time.Hour,
		ScrubRate:     32 << 20,
	}
}

// flags registers this capability's flags with its defaults.
func (d FilesConfig) flags(fs *pflag.FlagSet) {
	fs.String("files-max-bytes", FormatBytes(d.MaxBytes), "total size of the shared files, e.g. 50GiB (0 = no limit)")
	fs.String("files-max-file-bytes", FormatBytes(d.MaxFileBytes), "largest shared file, e.g. 2GiB (0 = no limit)")
	fs.String("files-mirror-dir", d.MirrorDir, "keep a read-only copy of the shared files in this directory")
	fs.String("files-mount", d.Mount, "mount the shared files at this directory (FUSE), readable and writable by any program")
	fs.Duration("files-gc-grace", d.GCGrace, "how long unreferenced blobs and temp files stay before removal")
	fs.Duration("files-scrub-interval", d.ScrubInterval, "pause between two background re-hashes of every blob (0 = off)")
	fs.String("files-scrub-rate", FormatBytes(d.ScrubRate), "bytes per second the scrubber may read (0 = no limit)")
}

// load reads the merged flag/env/file values.
func (c *FilesConfig) load(v *viper.Viper) {
	c.bad = nil
	size := func(key string, dst *int64) {
		if !v.IsSet(key) {
			return
		}
		n, err := ParseBytes(v.GetString(key))
		if err != nil {
			c.bad = append(c.bad, problem(key, "%v", err))
			return
		}
		*dst = n
	}
	size("files-max-bytes", &c.MaxBytes)
	size("files-max-file-bytes", &c.MaxFileBytes)
	size("files-scrub-rate", &c.ScrubRate)
	c.MirrorDir = v.GetString("files-mirror-dir")
	c.Mount = v.GetString("files-mount")
	if v.IsSet("files-gc-grace") {
		c.GCGrace = v.GetDuration("files-gc-grace")
	}
	if v.IsSet("files-scrub-interval") {
		c.ScrubInterval = v.GetDuration("files-scrub-interval")
	}
}

// validate reports each problem through add, naming the flag (see problem).
func (c *FilesConfig) validate(add func(error)) {
	for _, e := range c.bad {
		add(e)
	}
	if c.MaxBytes < 0 {
		add(problem("files-max-bytes", "%d must not be negative", c.MaxBytes))
	}
	if c.MaxFileBytes < 0 {
		add(problem("files-max-file-bytes", "%d must not be negative", c.MaxFileBytes))
	}
	if c.GCGrace < time.Minute {
		add(problem("files-gc-grace", "%s is too short: an upload in flight could lose its blob; use at least 1m", c.GCGrace))
	}
	if c.ScrubInterval < 0 {
		add(problem("files-scrub-interval", "%s must not be negative", c.ScrubInterval))
	}
	if c.ScrubRate < 0 {
		add(problem("files-scrub-rate", "%d must not be negative", c.ScrubRate))
	}
	if c.Mount != "" && c.MirrorDir != "" && filepath.Clean(c.Mount) == filepath.Clean(c.MirrorDir) {
		add(problem("files-mount", "%s is also --files-mirror-dir; the mount needs a directory of its own", c.Mount))
	}
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseBytes reads a size such as 0, 1048576, 512MiB, 2GB or 10G (single
// letters are binary units).
func ParseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || n*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q is not a size: write e.g. 0, 1048576, 512MiB or 2GiB", s)
	}
	return int64(n * float64(mult)), nil
}

// FormatBytes writes n with the largest binary unit that divides it.
func FormatBytes(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

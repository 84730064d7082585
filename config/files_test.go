package config

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1048576", 1 << 20, true},
		{"512KiB", 512 << 10, true},
		{"100MiB", 100 << 20, true},
		{"2GiB", 2 << 30, true},
		{"2G", 2 << 30, true},
		{"2GB", 2e9, true},
		{" 1.5 MiB ", 3 << 19, true},
		{"-1", 0, false},
		{"lots", 0, false},
		{"10XB", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBytes(tt.in)
			if tt.ok != (err == nil) || got != tt.want {
				t.Fatalf("ParseBytes(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
			if tt.ok && tt.want > 0 {
				if back, err := ParseBytes(FormatBytes(got)); err != nil || back != got {
					t.Fatalf("FormatBytes round trip: %q -> %d, %v", FormatBytes(got), back, err)
				}
			}
		})
	}
}

func TestFilesFlags(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123")
	t.Setenv("COHORT_FILES_MAX_BYTES", "10GiB")
	c, err := Load(false, []string{"--node-id", "n1", "--cluster-key-file", key, "--cluster-addr", "127.0.0.1:1",
		"--files-max-file-bytes", "1GiB", "--files-mirror-dir", "/srv/shared", "--files-gc-grace", "2h", "--files-scrub-interval", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Files
	if f.MaxBytes != 10<<30 || f.MaxFileBytes != 1<<30 || f.MirrorDir != "/srv/shared" || f.GCGrace != 2*time.Hour || f.ScrubInterval != 0 || f.ScrubRate != 32<<20 {
		t.Fatalf("files config = %+v", f)
	}
	_, err = Load(false, []string{"--node-id", "n1", "--cluster-key-file", key, "--cluster-addr", "127.0.0.1:1",
		"--files-max-file-bytes", "-5", "--files-scrub-rate", "fast", "--files-gc-grace", "1s"}, io.Discard)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want invalid, got %v", err)
	}
	for _, key := range []string{"--files-max-file-bytes", "--files-scrub-rate", "--files-gc-grace"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
}

func TestFilesMountFlag(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123")
	base := []string{"--node-id", "n1", "--cluster-key-file", key, "--cluster-addr", "127.0.0.1:1"}
	t.Setenv("COHORT_FILES_MOUNT", "/srv/env")
	c, err := Load(false, base, io.Discard)
	if err != nil || c.Files.Mount != "/srv/env" {
		t.Fatalf("from the environment: %q, %v", c.Files.Mount, err)
	}
	c, err = Load(false, append(base, "--files-mount", "/srv/shared"), io.Discard)
	if err != nil || c.Files.Mount != "/srv/shared" {
		t.Fatalf("flag over env: %q, %v", c.Files.Mount, err)
	}
	_, err = Load(false, append(base, "--files-mount", "/srv/shared", "--files-mirror-dir", "/srv/shared/"), io.Discard)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--files-mount") {
		t.Fatalf("mount = mirror dir: %v, want invalid naming --files-mount", err)
	}
}

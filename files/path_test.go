package files

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCleanPath(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"simple", "a.txt", "a.txt", true},
		{"nested", "conf/app/x.yaml", "conf/app/x.yaml", true},
		{"leading slash dropped", "/conf/x", "conf/x", true},
		{"unicode", "données/été.txt", "données/été.txt", true},
		{"dots inside names", "a..b/.hidden/x..", "a..b/.hidden/x..", true},
		{"empty", "", "", false},
		{"only slash", "/", "", false},
		{"dotdot", "../etc/passwd", "", false},
		{"dotdot inside", "a/../../b", "", false},
		{"dot", "a/./b", "", false},
		{"double slash", "a//b", "", false},
		{"absolute twice", "//etc/passwd", "", false},
		{"trailing slash", "a/", "", false},
		{"nul", "a\x00b", "", false},
		{"control", "a\nb", "", false},
		{"backslash", `a\..\b`, "", false},
		{"bad utf8", "a\xffb", "", false},
		{"segment too long", strings.Repeat("x", MaxSegmentBytes+1), "", false},
		{"segment at limit", strings.Repeat("x", MaxSegmentBytes), strings.Repeat("x", MaxSegmentBytes), true},
		{"path too long", strings.Repeat("abc/", 300), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CleanPath(tt.in)
			if tt.ok {
				if err != nil || got != tt.want {
					t.Fatalf("CleanPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("CleanPath(%q) = %q, %v; want ErrBadPath", tt.in, got, err)
			}
		})
	}
}

func TestCleanPrefix(t *testing.T) {
	for in, want := range map[string]string{"": "", "/": "", "conf/": "conf/", "conf": "conf", "/a/b/": "a/b/"} {
		got, err := CleanPrefix(in)
		if err != nil || got != want {
			t.Errorf("CleanPrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"../", "a//", "a/../b/"} {
		if _, err := CleanPrefix(in); !errors.Is(err, ErrBadPath) {
			t.Errorf("CleanPrefix(%q): want ErrBadPath, got %v", in, err)
		}
	}
}

// FuzzCleanPath checks the invariants of an accepted path: it is stable
// under a second cleaning and cannot name anything outside the tree.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"a", "/a/b", "../x", "a/./b", "a//b", "a\x00", "é/ü", "a\\b", "\xff", strings.Repeat("a/", 600), ".", "..", "...", "a/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := CleanPath(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("error %v does not wrap ErrBadPath", err)
			}
			return
		}
		again, err := CleanPath(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", in, got, again, err)
		}
		if got == "" || len(got) > MaxPathBytes || !utf8.ValidString(got) || strings.HasPrefix(got, "/") {
			t.Fatalf("accepted bad path %q", got)
		}
		for _, seg := range strings.Split(got, "/") {
			if seg == "" || seg == "." || seg == ".." || len(seg) > MaxSegmentBytes || strings.ContainsAny(seg, "\x00\\") {
				t.Fatalf("accepted bad segment %q in %q", seg, got)
			}
		}
	})
}

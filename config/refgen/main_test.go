package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/cohortserver/cohort/config"
)

// unescapedPipe splits a Markdown table row into cells.
var unescapedPipe = regexp.MustCompile(`(^|[^\\])\|`)

func TestReferenceListsEveryFlagInWellFormedRows(t *testing.T) {
	var buf bytes.Buffer
	serve := config.Flags(false)
	write(&buf, serve, config.Flags(true))
	out := buf.String()

	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := len(unescapedPipe.FindAllStringIndex(line, -1)) - 1
		name := strings.Fields(strings.Trim(line[2:], "`| "))[0]
		name = strings.TrimSuffix(name, "`")
		if _, dup := rows[name]; dup {
			if cells != 3 { // the second table: flag, serve default, dev default
				t.Errorf("dev-defaults row of %s has %d cells, want 3: %s", name, cells, line)
			}
			continue
		}
		if cells != 5 {
			t.Errorf("row of %s has %d cells, want 5: %s", name, cells, line)
		}
		rows[name] = line
	}
	serve.VisitAll(func(f *pflag.Flag) {
		line, ok := rows["--"+f.Name]
		if !ok {
			t.Errorf("flag --%s missing from the reference", f.Name)
			return
		}
		env := "`COHORT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")) + "`"
		if !strings.Contains(line, env) {
			t.Errorf("row of --%s does not name %s: %s", f.Name, env, line)
		}
	})
}

func TestCellEscapes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a|b", `a\|b`},
		{"./data/<node-id>", "./data/&lt;node-id&gt;"},
		{"two\nlines", "two lines"},
		{"plain", "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := cell(tt.in); got != tt.want {
				t.Errorf("cell(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

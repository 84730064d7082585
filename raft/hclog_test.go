package raft

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

// TestHCLogRendersFormattedValues: hashicorp/raft passes values hclog
// formats itself (hclog.Fmt for its initial configuration, and the number
// and quoting wrappers); the adapter renders them instead of logging the
// format string.
func TestHCLogRendersFormattedValues(t *testing.T) {
	servers := []hraft.Server{{ID: "n1", Address: "127.0.0.1:7070", Suffrage: hraft.Voter}}
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"Fmt", hclog.Fmt("%+v", servers), `servers="[{Suffrage:Voter ID:n1 Address:127.0.0.1:7070}]"`},
		{"Hex", hclog.Hex(255), "servers=0xff"},
		{"Octal", hclog.Octal(8), "servers=010"},
		{"Binary", hclog.Binary(5), "servers=0b101"},
		{"Quote", hclog.Quote("ab"), `servers="\"ab\""`},
		{"plain", "n1", "servers=n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			newHCLog(slog.New(slog.NewTextHandler(&buf, nil)), "raft").Info("initial configuration", "servers", tt.v)
			if got := buf.String(); !strings.Contains(got, tt.want) || strings.Contains(got, "%+v") {
				t.Fatalf("logged %q, want %s", got, tt.want)
			}
		})
	}
}

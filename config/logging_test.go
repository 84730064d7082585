package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestParseLogLevels(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		def     slog.Level
		comps   map[string]slog.Level
		wantErr bool
	}{
		{name: "empty is info", in: "", def: slog.LevelInfo},
		{name: "bare level", in: "debug", def: slog.LevelDebug},
		{name: "components and default", in: "raft=warn,front=debug,info", def: slog.LevelInfo,
			comps: map[string]slog.Level{"raft": slog.LevelWarn, "front": slog.LevelDebug}},
		{name: "default first, spaces", in: " error , jobs = debug ", def: slog.LevelError, comps: map[string]slog.Level{"jobs": slog.LevelDebug}},
		{name: "warning alias", in: "warning", def: slog.LevelWarn},
		{name: "bad level", in: "loud", wantErr: true},
		{name: "bad component level", in: "raft=loud", wantErr: true},
		{name: "missing component", in: "=warn", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ll, err := ParseLogLevels(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if ll.Default != tt.def {
				t.Errorf("default = %v, want %v", ll.Default, tt.def)
			}
			if len(ll.Components) != len(tt.comps) {
				t.Errorf("components = %v, want %v", ll.Components, tt.comps)
			}
			for k, v := range tt.comps {
				if ll.Components[k] != v {
					t.Errorf("component %s = %v, want %v", k, ll.Components[k], v)
				}
			}
		})
	}
}

func TestComponentLevels(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			ll, err := ParseLogLevels("raft=warn,front=debug,info")
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			log := slog.New(newLogHandler(&buf, format, ll)).With("node", "n1")
			log.With("component", "raft").Info("raft-info")
			log.With("component", "raft").Warn("raft-warn")
			log.With("component", "front").Debug("front-debug")
			log.With("component", "jobs").Debug("jobs-debug")
			log.With("component", "jobs").Info("jobs-info")
			log.WithGroup("g").With("component", "front").Debug("grouped-front-debug")
			out := buf.String()
			for _, want := range []string{"raft-warn", "front-debug", "jobs-info"} {
				if !strings.Contains(out, want) {
					t.Errorf("missing %q in\n%s", want, out)
				}
			}
			for _, not := range []string{"raft-info", "jobs-debug"} {
				if strings.Contains(out, not) {
					t.Errorf("unexpected %q in\n%s", not, out)
				}
			}
		})
	}
}

func TestValidateLogLevel(t *testing.T) {
	c := Default()
	c.LogLevel = "raft=nope"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("Validate = %v, want a --log-level problem", err)
	}
}

func FuzzParseLogLevels(f *testing.F) {
	for _, s := range []string{"", "info", "raft=warn,front=debug,info", "=", ",,,", "a=b=c", "raft=WARN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ll, err := ParseLogLevels(s)
		if err != nil {
			return
		}
		if ll.min() > ll.Default {
			t.Fatalf("min %v above default %v", ll.min(), ll.Default)
		}
	})
}

package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedenceFlagOverEnvOverFileOverDefault(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123")
	file := writeFile(t, "c.yaml", "node-id: from-file\nhttp-addr: 127.0.0.1:1111\ncluster-addr: 127.0.0.1:2222\nbalance: round-robin\ncluster-key-file: "+key+"\n")
	t.Setenv("COHORT_HTTP_ADDR", "127.0.0.1:3333")
	t.Setenv("COHORT_CLUSTER_ADDR", "127.0.0.1:4444")
	c, err := Load(false, []string{"--config", file, "--cluster-addr", "127.0.0.1:5555"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, got, want string }{
		{"file beats default", c.NodeID, "from-file"},
		{"file value kept", c.Balance, "round-robin"},
		{"env beats file", c.HTTPAddr, "127.0.0.1:3333"},
		{"flag beats env", c.ClusterAddr, "127.0.0.1:5555"},
		{"default kept", c.SessionCookie, "cohort_session"},
		{"advertise derived", c.AdvertiseAddr, "127.0.0.1:5555"},
		{"data dir derived", c.DataDir, filepath.Join("data", "from-file")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestConfigFileFormats(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123")
	tests := []struct{ name, file, body string }{
		{"yaml", "c.yaml", "node-id: n1\npeers: [\"n1=127.0.0.1:7071\", \"n2=127.0.0.1:7072\"]\ncluster-key-file: " + key + "\n"},
		{"toml", "c.toml", "node-id = \"n1\"\npeers = \"n1=127.0.0.1:7071,n2=127.0.0.1:7072\"\ncluster-key-file = \"" + key + "\"\n"},
		{"json", "c.json", `{"node-id":"n1","peers":"n1=127.0.0.1:7071,n2=127.0.0.1:7072","cluster-key-file":"` + key + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(false, []string{"--config", writeFile(t, tt.file, tt.body)}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.NodeID != "n1" || len(c.Peers) != 2 || c.Peers[1].Address != "127.0.0.1:7072" || c.AdvertiseAddr != "127.0.0.1:7071" {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func TestUnknownFileKeyIsAnError(t *testing.T) {
	file := writeFile(t, "c.yaml", "node-id: n1\nnode_idd: typo\n")
	_, err := Load(false, []string{"--config", file}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unknown key node_idd") {
		t.Fatalf("err = %v", err)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	c := Default()
	c.NodeID = "Bad_ID"
	c.HTTPAddr = "nope"
	c.Peers = []Peer{{ID: "n1", Address: "127.0.0.1:1"}}
	c.Balance = "random"
	c.ClusterKeyFile = "/does/not/exist"
	err := c.Validate()
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"--node-id", "--http-addr", "--peers", "--balance", "--cluster-key-file"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q not named in %q", want, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message spans lines: %q", msg)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Error("not ErrInvalid")
	}
}

func TestValidateCases(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123")
	short := writeFile(t, "short", "abc")
	tests := []struct {
		name    string
		mod     func(*Config)
		wantKey string // "" = valid
	}{
		{"minimal valid", func(c *Config) {}, ""},
		{"missing node id", func(c *Config) { c.NodeID = "" }, "--node-id"},
		{"key too short", func(c *Config) { c.ClusterKeyFile = short }, "--cluster-key-file"},
		{"peers without self", func(c *Config) { c.Peers = []Peer{{ID: "n2", Address: "127.0.0.1:1"}} }, "--peers"},
		{"peers and join", func(c *Config) {
			c.Peers = []Peer{{ID: "n1", Address: "127.0.0.1:1"}}
			c.Join = []string{"127.0.0.1:2"}
		}, "--join"},
		{"join without advertise", func(c *Config) { c.Join = []string{"127.0.0.1:2"} }, "--advertise-addr"},
		{"partial tls", func(c *Config) { c.TLSCertFile = key }, "--tls-cert-file"},
		{"bad cookie", func(c *Config) { c.SessionCookie = "a b" }, "--session-cookie"},
		{"dev needs no key", func(c *Config) { c.Dev = true; c.ClusterKeyFile = "" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.NodeID = "n1"
			c.ClusterKeyFile = key
			tt.mod(&c)
			err := c.Validate()
			if tt.wantKey == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantKey) {
				t.Fatalf("err = %v, want one naming %s", err, tt.wantKey)
			}
		})
	}
}

func TestDevNeedsNoFlags(t *testing.T) {
	c, err := Load(true, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Dev || c.NodeID != "dev" || c.DataDir != filepath.Join("data", "dev") || len(c.Peers) != 1 {
		t.Fatalf("got %+v", c)
	}
	c, err = Load(true, []string{"--cluster-addr", "127.0.0.1:9999"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Peers[0].Address != "127.0.0.1:9999" {
		t.Fatalf("dev peers follow the cluster address: %+v", c.Peers)
	}
}

func FuzzParsePeers(f *testing.F) {
	f.Add("n1=127.0.0.1:7070,n2=127.0.0.1:7071")
	f.Add("=,==,a=")
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePeers(list(s))
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.ID == "" || p.Address == "" {
				t.Fatalf("accepted empty part: %+v", p)
			}
		}
	})
}

// FuzzLoadConfigFile feeds arbitrary YAML to --config: Load returns a
// configuration or an error naming what is wrong, never panics.
func FuzzLoadConfigFile(f *testing.F) {
	f.Add("node-id: n1\npeers: [\"n1=127.0.0.1:7071\"]\n")
	f.Add("node-id: [1, 2]\nhttp-addr: {a: b}\n")
	f.Add("join-timeout: -5s\nraft-timeout-scale: nan\n")
	f.Add("\x00\xff")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body string) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(false, []string{"--config", p}, io.Discard)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error does not wrap ErrInvalid: %v", err)
		}
	})
}

package config

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSingletonNodes reads --singleton-nodes preference lists onto their
// --singleton and names every bad one.
func TestSingletonNodes(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123")
	base := []string{"--node-id", "n1", "--cluster-key-file", key, "--cluster-addr", "127.0.0.1:1"}
	c, err := Load(false, append(base, "--singleton", "a=run a", "--singleton", "b=run b",
		"--singleton-nodes", "b= n2, n3,n2 ,n1", "--singleton-lease", "5s"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := c.App.Singletons
	if len(s) != 2 || s[0].Nodes != nil || !slices.Equal(s[1].Nodes, []string{"n2", "n3", "n1"}) || c.App.SingletonLease != 5*time.Second {
		t.Fatalf("singletons %+v, lease %s", s, c.App.SingletonLease)
	}
	for _, bad := range [][]string{
		{"--singleton", "a=x", "--singleton-nodes", "zz=n1"},
		{"--singleton", "a=x", "--singleton-nodes", "a= , "},
		{"--singleton", "a=x", "--singleton-nodes", "a=n1", "--singleton-nodes", "a=n2"},
		{"--singleton", "a=x", "--singleton-lease", "0s"},
	} {
		_, err := Load(false, append(slices.Clone(base), bad...), io.Discard)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--singleton-") {
			t.Errorf("%q: err = %v, want one naming --singleton-nodes or --singleton-lease", bad, err)
		}
	}
}

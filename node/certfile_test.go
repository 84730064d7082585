package node

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortserver/cohort/internal/testcert"
)

// writePair writes a new certificate and key over certPath and keyPath
// and returns the certificate's serial number.
func writePair(t *testing.T, certPath, keyPath string) int64 {
	t.Helper()
	return testcert.Write(t, certPath, keyPath).Cert.SerialNumber.Int64()
}

func TestCertFileReloadsAndKeepsAWorkingPair(t *testing.T) {
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	first := writePair(t, cp, kp)
	cf, err := loadCertFile(cp, kp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		t.Helper()
		cf.mu.Lock()
		cf.checked = time.Time{} // as if a second had passed
		cf.mu.Unlock()
		c, err := cf.getCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.SerialNumber.Int64()
	}
	if got := serial(); got != first {
		t.Fatalf("serial %d, want %d", got, first)
	}
	var renewed, again int64
	for _, tt := range []struct {
		name   string
		change func()
		want   *int64
	}{
		{"renewed pair", func() { renewed = writePair(t, cp, kp) }, &renewed},
		{"key not a key", func() { must(t, os.WriteFile(kp, []byte("not a key\n"), 0o600)) }, &renewed},
		{"key missing", func() { must(t, os.Remove(kp)) }, &renewed},
		{"renewed again", func() { again = writePair(t, cp, kp) }, &again},
		{"key of another certificate", func() {
			other := filepath.Join(dir, "other.pem")
			writePair(t, filepath.Join(dir, "oc.pem"), other)
			b, err := os.ReadFile(other)
			must(t, err)
			must(t, os.WriteFile(kp, b, 0o600))
		}, &again},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.change()
			if got := serial(); got != *tt.want {
				t.Fatalf("serial %d, want %d", got, *tt.want)
			}
		})
	}
	if _, err := loadCertFile(cp, filepath.Join(dir, "nope.pem"), nil); err == nil {
		t.Fatal("loading a missing key succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

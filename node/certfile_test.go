package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a self-signed certificate with the given serial and
// its key to certPath and keyPath.
func writePair(t *testing.T, certPath, keyPath string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCertFileReloadsAndKeepsAWorkingPair(t *testing.T) {
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writePair(t, cp, kp, 1)
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
	if got := serial(); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	for _, tt := range []struct {
		name   string
		change func()
		want   int64
	}{
		{"renewed pair", func() { writePair(t, cp, kp, 2) }, 2},
		{"key not a key", func() { must(t, os.WriteFile(kp, []byte("not a key\n"), 0o600)) }, 2},
		{"key missing", func() { must(t, os.Remove(kp)) }, 2},
		{"renewed again", func() { writePair(t, cp, kp, 3) }, 3},
		{"key of another certificate", func() {
			other := filepath.Join(dir, "other.pem")
			writePair(t, filepath.Join(dir, "oc.pem"), other, 9)
			b, err := os.ReadFile(other)
			must(t, err)
			must(t, os.WriteFile(kp, b, 0o600))
		}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.change()
			if got := serial(); got != tt.want {
				t.Fatalf("serial %d, want %d", got, tt.want)
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

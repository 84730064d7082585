package raft

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// nodeTLS issues a certificate for 127.0.0.1 usable as client and server.
func (ca *testCA) nodeTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.pool, ClientCAs: ca.pool, MinVersion: tls.VersionTLS13,
	}
}

func listenTest(t *testing.T, id string, key []byte, tc *tls.Config) *Transport {
	t.Helper()
	tr, err := Listen("127.0.0.1:0", TransportConfig{NodeID: id, Key: key, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	// Accept and hold HTTP-channel connections so dials complete.
	go func() {
		for {
			c, err := tr.HTTPListener().Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	return tr
}

func TestMutualTLSOnTheClusterPort(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	ca, other := newTestCA(t, "cluster CA"), newTestCA(t, "another CA")
	server := listenTest(t, "server", key, ca.nodeTLS(t))
	tests := []struct {
		name   string
		client *Transport
		ok     bool
	}{
		{"same CA and key", listenTest(t, "good", key, ca.nodeTLS(t)), true},
		{"certificate from another CA", listenTest(t, "foreign", key, other.nodeTLS(t)), false},
		{"no TLS at all", listenTest(t, "plain", key, nil), false},
		{"right CA, wrong key", listenTest(t, "keyless", []byte("fedcba9876543210fedcba9876543210"), ca.nodeTLS(t)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := tt.client.dial(ctx, server.Addr().String(), chanHTTP)
			if c != nil {
				c.Close()
			}
			if tt.ok && err != nil {
				t.Fatalf("dial failed: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("dial succeeded")
			}
		})
	}
}

func TestRotationKeysAreAcceptedButNeverDialled(t *testing.T) {
	oldKey := []byte("old-key-0123456789abcdef")
	newKey := []byte("new-key-0123456789abcdef")
	// A node mid-rotation dials with the new key and still accepts the old.
	mid, err := Listen("127.0.0.1:0", TransportConfig{NodeID: "mid", Key: newKey, AcceptKeys: [][]byte{oldKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer mid.Close()
	go func() {
		for {
			c, err := mid.HTTPListener().Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, k := range [][]byte{oldKey, newKey} {
		cl := listenTest(t, "client-"+string(k[:3]), k, nil)
		c, err := cl.dial(ctx, mid.Addr().String(), chanHTTP)
		if err != nil {
			t.Fatalf("key %s refused by a node accepting it: %v", k[:3], err)
		}
		c.Close()
	}
	// A node that only knows the old key cannot be dialled by mid.
	oldOnly := listenTest(t, "old-only", oldKey, nil)
	if c, err := mid.dial(ctx, oldOnly.Addr().String(), chanHTTP); err == nil {
		c.Close()
		t.Fatal("mid dialled with the old key; it must use its first key")
	}
}

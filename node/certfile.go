package node

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckEvery is how often a handshake may look at the certificate
// files again.
const certCheckEvery = time.Second

// certFile serves a certificate and key from disk and reads them again
// when either file changes (checked at most once a second, on a
// handshake), so a renewed public certificate (certbot, cert-manager)
// takes effect without a restart. A pair that does not load — a renewal
// half written, a key that does not match — leaves the previous pair in
// service and is logged once.
type certFile struct {
	certPath, keyPath string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	loaded  [2]fileStamp // the files as they were when cert was read
	failed  [2]fileStamp // the files as they were when they last failed to load
	checked time.Time
}

// fileStamp tells whether a file changed.
type fileStamp struct {
	mod  time.Time
	size int64
}

// loadCertFile reads the pair once; an error here stops the start.
func loadCertFile(certPath, keyPath string, log *slog.Logger) (*certFile, error) {
	c := &certFile{certPath: certPath, keyPath: keyPath, log: log}
	st, err := c.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	c.cert, c.loaded, c.checked = &cert, st, time.Now()
	return c, nil
}

// getCertificate is tls.Config.GetCertificate.
func (c *certFile) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= certCheckEvery {
		c.checked = now
		c.refresh()
	}
	return c.cert, nil
}

// refresh reloads the pair if a file changed since it was read.
func (c *certFile) refresh() {
	st, err := c.stamps()
	if err == nil && st == c.loaded {
		return
	}
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.LoadX509KeyPair(c.certPath, c.keyPath)
	}
	if err != nil {
		if st != c.failed { // once per state of the files
			c.failed = st
			c.log.Warn("public TLS certificate not reloaded; keeping the one in service",
				"cert", c.certPath, "key", c.keyPath, "err", err)
		}
		return
	}
	c.cert, c.loaded, c.failed = &cert, st, [2]fileStamp{}
	c.log.Info("public TLS certificate reloaded", "cert", c.certPath)
}

func (c *certFile) stamps() ([2]fileStamp, error) {
	var st [2]fileStamp
	for i, p := range []string{c.certPath, c.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			return st, fmt.Errorf("stat %s: %w", p, err)
		}
		st[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

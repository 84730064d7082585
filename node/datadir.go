package node

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const nodeIDFile = "node-id"

// ErrWrongDataDir means the data dir belongs to another node id.
var ErrWrongDataDir = errors.New("data dir belongs to another node")

// prepareDataDir creates the data dir and pins the node id in it: a later
// start with a different id is refused, since Raft would otherwise see one
// server under two names.
func (n *Node) prepareDataDir() error {
	dir := n.cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeFileAtomic(path, []byte(n.cfg.NodeID+"\n"), 0o600); err != nil {
			return fmt.Errorf("--data-dir %s: record node id: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	if got := strings.TrimSpace(string(b)); got != n.cfg.NodeID {
		return fmt.Errorf("--node-id %q: --data-dir %s holds node %q (%w); start with --node-id %s or use another data dir",
			n.cfg.NodeID, dir, got, ErrWrongDataDir, got)
	}
	return nil
}

// generatedSecret returns the secret stored in the data dir under name,
// creating a random one on first use (dev mode only).
func generatedSecret(dir, name string) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= 16 {
			return []byte(s), nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate %s: %w", name, err)
	}
	s := base64.RawURLEncoding.EncodeToString(raw)
	if err := writeFileAtomic(path, []byte(s+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	return []byte(s), nil
}

// writeFileAtomic writes via a temp file, fsync and rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

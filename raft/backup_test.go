package raft

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func backupBytes(t testing.TB, meta BackupMeta, body []byte) []byte {
	t.Helper()
	head, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte(backupMagic), append(head, '\n')...), body...)
}

func TestReadBackupHeader(t *testing.T) {
	body := []byte(snapshotMagic + "rest")
	good := BackupMeta{NodeID: "n1", Index: 42, Term: 3, Size: int64(len(body))}
	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{"valid", backupBytes(t, good, body), nil},
		{"empty", nil, ErrNotBackup},
		{"wrong magic", []byte("COHORT-BACKUP 2\n{}\n"), ErrNotBackup},
		{"not json", []byte(backupMagic + "{nope\n"), ErrNotBackup},
		{"zero index", backupBytes(t, BackupMeta{Size: 100}, body), ErrNotBackup},
		{"no newline", []byte(backupMagic + `{"index":1}`), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(bytes.NewReader(tt.in))
			m, err := ReadBackupHeader(br)
			if tt.name == "no newline" {
				if err == nil {
					t.Fatal("a header without its newline was accepted")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				rest, _ := br.ReadString(0)
				if m.Index != 42 || rest != string(body) {
					t.Fatalf("meta %+v rest %q", m, rest)
				}
			}
		})
	}
}

func TestSeedFromBackupRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{NodeID: "r1", DataDir: dir, BindAddr: "127.0.0.1:1"}
	body := []byte("not a cohort snapshot at all")
	_, err := SeedFromBackup(cfg, bytes.NewReader(backupBytes(t, BackupMeta{Index: 5, Term: 1, Size: int64(len(body))}, body)))
	if !errors.Is(err, ErrNotBackup) {
		t.Fatalf("seed with a foreign body: %v", err)
	}
	good := []byte(snapshotMagic + "\x05\x00")
	if _, err := SeedFromBackup(cfg, bytes.NewReader(backupBytes(t, BackupMeta{Index: 5, Term: 1, Size: int64(len(good)) + 10}, good))); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("seed with a truncated body: %v", err)
	}
	if _, err := SeedFromBackup(cfg, bytes.NewReader(backupBytes(t, BackupMeta{Index: 5, Term: 1, Size: int64(len(good))}, good))); err != nil {
		t.Fatalf("seed: %v", err)
	}
	if _, err := SeedFromBackup(cfg, bytes.NewReader(backupBytes(t, BackupMeta{Index: 5, Term: 1, Size: int64(len(good))}, good))); !errors.Is(err, ErrHasState) {
		t.Fatalf("second seed: %v, want ErrHasState", err)
	}
}

func FuzzReadBackupHeader(f *testing.F) {
	f.Add([]byte(backupMagic + `{"node_id":"n1","index":7,"term":2,"size":12}` + "\n" + snapshotMagic + "abcd"))
	f.Add([]byte(backupMagic + "\n"))
	f.Add([]byte(backupMagic + `{"index":18446744073709551615,"size":-1}` + "\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadBackupHeader(bufio.NewReader(bytes.NewReader(b)))
		if err == nil && (m.Index == 0 || m.Size < int64(len(snapshotMagic))) {
			t.Fatalf("accepted %+v", m)
		}
	})
}

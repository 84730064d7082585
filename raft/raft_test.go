package raft

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789).UTC()
	tests := []struct {
		name, typ, origin string
		payload           []byte
	}{
		{"empty payload", "session.put", "n1", nil},
		{"binary payload", "files.commit", "node-with-long-id", []byte{0, 1, 2, 255}},
		{"empty origin", "member.upsert", "", []byte(`{"id":"n1"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := decodeEnvelope(encodeEnvelope(tt.typ, tt.origin, at, tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if e.Type != tt.typ || e.Origin != tt.origin || !e.Time.Equal(at) || !bytes.Equal(e.Payload, tt.payload) {
				t.Fatalf("got %+v", e)
			}
		})
	}
}

func TestEnvelopeRejectsMalformed(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown version", []byte{9, 1, 'a'}},
		{"type longer than data", []byte{1, 50, 'a'}},
		{"type too long", append([]byte{1, 100}, bytes.Repeat([]byte{'a'}, 100)...)},
		{"no time", []byte{1, 1, 'a', 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeEnvelope(tt.b); !errors.Is(err, errEnvelope) {
				t.Fatalf("err = %v, want errEnvelope", err)
			}
		})
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(encodeEnvelope("session.put", "n1", time.Unix(1, 2), []byte("x")))
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEnvelope(b)
		if err != nil {
			return
		}
		// What decodes must encode back to the same bytes.
		again := encodeEnvelope(e.Type, e.Origin, e.Time, e.Payload)
		if !bytes.Equal(again, b) {
			e2, err := decodeEnvelope(again)
			if err != nil || e2.Type != e.Type || e2.Origin != e.Origin || !e2.Time.Equal(e.Time) || !bytes.Equal(e2.Payload, e.Payload) {
				t.Fatalf("round trip changed the entry: %+v vs %+v (%v)", e, e2, err)
			}
		}
	})
}

func FuzzDecodeApplyAnswer(f *testing.F) {
	f.Add(encodeApplyAnswer(Result{Index: 7, Data: []byte("ok")}, nil))
	f.Add(encodeApplyAnswer(Result{Index: 9}, &ApplyError{Code: "too_large", Message: "too large"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeApplyAnswer(b) // must not panic
	})
}

// pipeHandshake runs both sides of the handshake over a real TCP pair.
func pipeHandshake(t *testing.T, serverKey, clientKey []byte) (peer string, ch byte, serr, cerr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			serr = err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		peer, ch, serr = serverHandshake(c, [][]byte{serverKey}, "server", "RHF")
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, cerr = clientHandshake(c, clientKey, "client", chanHTTP)
	c.Close()
	wg.Wait()
	return peer, ch, serr, cerr
}

func TestHandshake(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name      string
		clientKey []byte
		wantErr   error
	}{
		{"same key", key, nil},
		{"other key", []byte("fedcba9876543210fedcba9876543210"), errBadMAC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer, ch, serr, cerr := pipeHandshake(t, key, tt.clientKey)
			if tt.wantErr == nil {
				if serr != nil || cerr != nil || peer != "client" || ch != chanHTTP {
					t.Fatalf("peer %q ch %q serr %v cerr %v", peer, ch, serr, cerr)
				}
				return
			}
			if !errors.Is(serr, tt.wantErr) {
				t.Fatalf("server err %v, want %v", serr, tt.wantErr)
			}
			if cerr == nil {
				t.Fatal("client believed the handshake succeeded")
			}
		})
	}
}

// recordConn records what the client writes.
type recordConn struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.buf.Write(p)
	return r.Conn.Write(p)
}

func TestReplayedHandshakeIsRefused(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	results := make(chan error, 2)
	go func() {
		for i := 0; i < 2; i++ {
			c, err := ln.Accept()
			if err != nil {
				results <- err
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _, err = serverHandshake(c, [][]byte{key}, "server", "RHF")
			results <- err
			c.Close()
		}
	}()
	// A genuine client, recorded.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := &recordConn{Conn: c}
	if _, err := clientHandshake(rc, key, "client", chanRaft); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-results; err != nil {
		t.Fatalf("genuine handshake: %v", err)
	}
	// An attacker replays the recorded bytes on a new connection.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _ = c2.Write(rc.buf.Bytes())
	if err := <-results; !errors.Is(err, errBadMAC) {
		t.Fatalf("replayed handshake: err %v, want errBadMAC", err)
	}
}

type memMachine struct {
	mu   sync.Mutex
	data []byte
}

func (m *memMachine) Apply(e Entry) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append(m.data, e.Payload...)
	return nil, nil
}

func (m *memMachine) Snapshot() (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return memSnap(bytes.Clone(m.data)), nil
}

func (m *memMachine) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	m.mu.Lock()
	m.data = b
	m.mu.Unlock()
	return err
}

type memSnap []byte

func (s memSnap) Persist(w io.Writer) error {
	// Write in odd-sized pieces to exercise the chunk framing.
	for b := []byte(s); len(b) > 0; {
		n := min(len(b), 777)
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
func (memSnap) Release() {}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (b *bufSink) ID() string    { return "test" }
func (b *bufSink) Cancel() error { b.cancelled = true; return nil }
func (b *bufSink) Close() error  { return nil }

func TestRouterSnapshotRestoresEveryMachine(t *testing.T) {
	r := newRouter()
	a, b, c := &memMachine{}, &memMachine{}, &memMachine{}
	for name, m := range map[string]*memMachine{"a": a, "b": b, "c": c} {
		if err := r.register(name, m, "cmd."+name); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("0123456789"), 100_000)
	apply := func(typ string, p []byte, idx uint64) {
		r.Apply(&hraft.Log{Index: idx, Type: hraft.LogCommand, Data: encodeEnvelope(typ, "n1", time.Unix(0, 0), p)})
	}
	apply("cmd.a", big, 1)
	apply("cmd.b", []byte("bee"), 2)
	snap, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &bufSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	r2 := newRouter()
	a2, b2, c2 := &memMachine{}, &memMachine{}, &memMachine{data: []byte("stale")}
	_ = r2.register("a", a2, "cmd.a")
	_ = r2.register("b", b2, "cmd.b")
	_ = r2.register("c", c2, "cmd.c")
	if err := r2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a2.data, big) || string(b2.data) != "bee" || len(c2.data) != 0 {
		t.Fatalf("restored a=%d bytes b=%q c=%q", len(a2.data), b2.data, c2.data)
	}
	if r2.applied.get() != 2 {
		t.Fatalf("applied index after restore = %d, want 2", r2.applied.get())
	}
	if err := r2.Restore(io.NopCloser(strings.NewReader("not a snapshot"))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
}

func TestRegisterRefusesDuplicatesAndLateRegistration(t *testing.T) {
	r := newRouter()
	if err := r.register("a", &memMachine{}, "x"); err != nil {
		t.Fatal(err)
	}
	if err := r.register("b", &memMachine{}, "x"); err == nil {
		t.Fatal("second owner of command type x accepted")
	}
	if err := r.register("a", &memMachine{}, "y"); err == nil {
		t.Fatal("duplicate section name accepted")
	}
	r.seal()
	if err := r.register("c", &memMachine{}, "z"); err == nil {
		t.Fatal("registration after start accepted")
	}
}

func TestWaitAppliedHonoursContext(t *testing.T) {
	c := New(Config{NodeID: "n1", Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.WaitApplied(ctx, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	c.router.applied.set(5)
	if err := c.WaitApplied(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
}

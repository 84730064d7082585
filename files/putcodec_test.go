package files

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// putSeeds are payloads as the store writes them, and near misses.
func putSeeds(t testing.TB) [][]byte {
	v := uint64(7)
	zero := uint64(0)
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var out [][]byte
	for _, c := range []putCmd{
		{},
		{Path: "a/b.txt", SHA256: "ab12", Size: 3, Mode: 0o644, Data: []byte("abc"), Inline: true},
		{Path: "dir/.cohort-dir", SHA256: "e3b0", Mode: 0o755, IfVersion: &zero, Data: []byte{}, Inline: true},
		{Path: "big.bin", SHA256: "ff", Size: 1 << 40, Mode: 0o600, IfVersion: &v, Holders: []string{"n1", "n2"}, MaxBytes: 24 << 20},
		{Path: "héllo wörld/ü.txt", Size: 1, Data: []byte{0, 1, 2, 255}, Inline: true, Holders: []string{}},
		{Path: "<script>&", Data: []byte("x")},
		{Path: "t", MTime: &now, Data: []byte("y"), Inline: true},
	} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	for _, s := range []string{
		`{"path":"a","path":"b","if_version":1,"if_version":null}`,
		`{"Path":"a"}`, `{"path":"a\u0062"}`, `{"size":1e3}`, `{"size":-0}`, `{"mode":-1}`,
		`{"mode":4294967296}`, `{"size":01}`, `{"data":"!!"}`, `{"data":"YQ"}`, `{"data":""}`,
		`{"holders":["a",]}`, `{"holders":null,"data":null}`, ` { "path" : "a" , "inline" : true } `,
		`{"path":"a"} x`, `{"path":"a",}`, `{"inline":null,"path":null}`, `{"path":"` + "\x7f\xff" + `"}`,
		`{"path":5}`, `{"extra":1}`, `{}`, `[]`, `null`, ``,
	} {
		out = append(out, []byte(s))
	}
	return out
}

// The fast decoder answers exactly what encoding/json does, or leaves
// the payload to it.
func FuzzDecodePut(f *testing.F) {
	for _, b := range putSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodePut(t, b)
	})
}

func checkDecodePut(t *testing.T, b []byte) {
	t.Helper()
	var want putCmd
	werr := json.Unmarshal(b, &want)
	if fast, ok := fastPut(b); ok {
		if werr != nil {
			t.Fatalf("%q: fast path decoded %+v where encoding/json fails: %v", b, fast, werr)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", b, fast, want)
		}
	}
	got, gerr := decodePut(b)
	if (gerr != nil) != (werr != nil) {
		t.Fatalf("%q: decodePut error %v, encoding/json error %v", b, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: decodePut %+v, encoding/json %+v", b, got, want)
	}
}

// The payloads the store writes take the fast path (else it saves
// nothing): every field but set_mtime.
func TestDecodePutTakesTheFastPath(t *testing.T) {
	for i, b := range putSeeds(t)[:5] {
		if _, ok := fastPut(b); !ok {
			t.Errorf("seed %d %s: not decoded by the fast path", i, b)
		}
		checkDecodePut(t, b)
	}
}

// BenchmarkDecodePut decodes the put of a 4 KiB small file, as every
// node does for every small file it applies.
func BenchmarkDecodePut(b *testing.B) {
	v := uint64(3)
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	p, err := json.Marshal(putCmd{Path: "bench/small/r1/w3/1234", SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Size: 4096, Mode: 0o644, IfVersion: &v, Data: data, Inline: true, MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var c putCmd
			if err := json.Unmarshal(p, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decodePut", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodePut(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package demo

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "report.pdf", want: "report.pdf"},
		{in: "my notes v1.txt", want: "my_notes_v1.txt"},
		{in: "../../etc/passwd", want: "passwd"},
		{in: `C:\Users\me\photo.jpg`, want: "photo.jpg"},
		{in: "héllo.txt", want: "h_llo.txt"},
		{in: "..", bad: true},
		{in: "", bad: true},
		{in: "/", bad: true},
		{in: strings.Repeat("a", 101), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := CleanName(tt.in)
			if tt.bad {
				if !errors.Is(err, ErrBadName) {
					t.Fatalf("CleanName(%q) = %q, %v; want ErrBadName", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("CleanName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"a.txt", "../x", "..", "", "a/b\\c", "\x00", "日本.txt"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, err := CleanName(raw)
		if err != nil {
			return
		}
		if strings.ContainsAny(name, "/\\") || strings.Trim(name, ".") == "" || len(name) > maxNameLen {
			t.Fatalf("CleanName(%q) = %q", raw, name)
		}
		if again, err := CleanName(name); err != nil || again != name {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", raw, name, again, err)
		}
	})
}

func TestPageRenders(t *testing.T) {
	tmpl, err := parsePage()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	d := pageData{Node: "n2", Leader: true, Dialect: "mysql",
		Members: []Member{{ID: "n1", HTTPAddress: "10.0.0.1:8080", State: "active", Healthy: true}, {ID: "n2", Leader: true, Healthy: false, State: "draining"}},
		Ticks:   []TickRow{{RunID: "demo-tick@x", Node: "n2", FencingToken: 42, RanAt: time.Now()}},
		Uploads: []Upload{{Name: "<script>.txt", Size: 2048, Node: "n1", URL: "/demo/api/files/x", UploadedAt: time.Now()}},
	}
	if err := tmpl.Execute(&buf, d); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"Served by node <b id=\"served-by\">n2</b>", "demo-tick@x", "2 KiB", "&lt;script&gt;.txt", "★ leader", "id=\"inc\"", "id=\"upload\""} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func BenchmarkPageRender(b *testing.B) {
	tmpl, err := parsePage()
	if err != nil {
		b.Fatal(err)
	}
	d := pageData{Node: "n1", Members: []Member{{ID: "n1"}, {ID: "n2"}, {ID: "n3"}}}
	for range 10 {
		d.Ticks = append(d.Ticks, TickRow{RunID: "demo-tick@2026", Node: "n1", FencingToken: 7, RanAt: time.Now()})
	}
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		_ = tmpl.Execute(&buf, d)
	}
}

package demo

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
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

// multipartBody builds a form with the given fields (name → file name and
// content; an empty file name makes a plain field).
func multipartBody(t testing.TB, fields ...[3]string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		var w io.Writer
		var err error
		if f[1] == "" {
			w, err = mw.CreateFormField(f[0])
		} else {
			w, err = mw.CreateFormFile(f[0], f[1])
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f[2])
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

func TestFilePart(t *testing.T) {
	ct, body := multipartBody(t, [3]string{"note", "", "hello"}, [3]string{"file", "../../etc/pass wd", "content"})
	ctNoFile, bodyNoFile := multipartBody(t, [3]string{"note", "", "hello"})
	ctBadName, bodyBadName := multipartBody(t, [3]string{"file", "..", "x"})
	cases := []struct {
		name, ct, body, wantName, wantErr string
	}{
		{"file after a plain field", ct, string(body), "pass_wd", ""},
		{"not multipart", "application/json", "{}", "", `multipart/form-data in a field named "file"`},
		{"no content type", "", "x", "", `multipart/form-data in a field named "file"`},
		{"no file field", ctNoFile, string(bodyNoFile), "", `no field named "file"`},
		{"dots only", ctBadName, string(bodyBadName), "", "not only dots"},
		{"ends before the file", ct, string(body[:len(body)/3]), "", `no field named "file"`},
		{"wrong boundary", "multipart/form-data; boundary=nope", string(body), "", "boundary is not the one in Content-Type"},
		{"bad part header", "multipart/form-data; boundary=x", "--x\r\nno colon here\r\n\r\nz\r\n--x--\r\n", "", "malformed multipart body"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/demo/api/files", strings.NewReader(tc.body))
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			name, part, err := filePart(r)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer part.Close()
			got, err := io.ReadAll(part)
			if name != tc.wantName || err != nil || string(got) != "content" {
				t.Fatalf("got %q %q %v, want %q with \"content\"", name, got, err, tc.wantName)
			}
		})
	}
}

// FuzzFilePart feeds arbitrary bodies and content types to the upload
// form's parser: it must never panic, and a part it accepts must be the
// "file" field with a name that CleanName accepts unchanged.
func FuzzFilePart(f *testing.F) {
	ct, body := multipartBody(f, [3]string{"note", "", "hello"}, [3]string{"file", "a/../b.txt", "content"})
	f.Add(ct, body)
	f.Add(ct, body[:len(body)/2])
	f.Add("multipart/form-data; boundary=x", []byte("--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"..\"\r\n\r\nz\r\n--x--\r\n"))
	f.Add("multipart/form-data; boundary=x", []byte("--x\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''%2e%2e%2fx\r\n\r\nz\r\n--x--\r\n"))
	f.Add("text/plain", []byte("x"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/demo/api/files", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		name, part, err := filePart(r)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		defer part.Close()
		if part.FormName() != "file" {
			t.Fatalf("accepted field %q", part.FormName())
		}
		if again, err := CleanName(name); err != nil || again != name || strings.ContainsAny(name, "/\\\x00") {
			t.Fatalf("accepted name %q (%q, %v)", name, again, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(part, 1<<20))
	})
}

package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_cohort/ready":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"ready":false,"reason":"no leader"}`))
		case "/_cohort/health":
			_, _ = w.Write([]byte("ok"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name string
		args []string
		want int
	}{
		{"ready 503 fails", []string{"--addr", srv.URL}, ExitFailure},
		{"health 200 passes", []string{"--addr", srv.URL, "--path", "/_cohort/health", "-q"}, ExitOK},
		{"addr without scheme", []string{"--addr", srv.Listener.Addr().String(), "--path", "/_cohort/health"}, ExitOK},
		{"nothing listening fails", []string{"--addr", closed.URL}, ExitFailure},
		{"bad flag is usage", []string{"--nope"}, ExitUsage},
		{"extra argument is usage", []string{"extra"}, ExitUsage},
		{"help", []string{"--help"}, ExitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if got := Run(context.Background(), append([]string{"healthcheck"}, tt.args...), &out, &errOut); got != tt.want {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", got, tt.want, out.String(), errOut.String())
			}
		})
	}
}

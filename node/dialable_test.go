package node

import "testing"

func TestDialable(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{":6380", "127.0.0.1:6380"},
		{"0.0.0.0:11211", "127.0.0.1:11211"},
		{"[::]:6380", "127.0.0.1:6380"},
		{"127.0.0.2:6380", "127.0.0.2:6380"},
		{"[::1]:6380", "[::1]:6380"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			if got := dialable(tt.in); got != tt.want {
				t.Fatalf("dialable(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

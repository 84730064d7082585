package config

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1048576", 1 << 20, true},
		{"64MiB", 64 << 20, true},
		{"64MB", 64 << 20, true},
		{"64M", 64 << 20, true},
		{"2 GiB", 2 << 30, true},
		{"10KiB", 10 << 10, true},
		{"12B", 12, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5MiB", 0, false},
		{"MiB", 0, false},
		{"99999999999GiB", 0, false},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
			if tt.ok {
				if back, err := ParseSize(FormatSize(got)); err != nil || back != got {
					t.Fatalf("FormatSize(%d) = %q does not parse back", got, FormatSize(got))
				}
			}
		})
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "64MiB", "1 K", "9223372036854775807", "4611686018427387904", "1GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if back, err := ParseSize(FormatSize(n)); err != nil || back != n {
			t.Fatalf("round trip of %d via %q: %d %v", n, FormatSize(n), back, err)
		}
	})
}

func TestFrontValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*FrontConfig)
		bad  bool
	}{
		{"defaults", func(*FrontConfig) {}, false},
		{"trusted CIDRs and IPs", func(c *FrontConfig) { c.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "::1"} }, false},
		{"bad CIDR", func(c *FrontConfig) { c.TrustedProxies = []string{"10.0.0.0/33"} }, true},
		{"bad IP", func(c *FrontConfig) { c.TrustedProxies = []string{"proxy.example"} }, true},
		{"bad size", func(c *FrontConfig) { c.MaxRequestBody = -1 }, true},
		{"cert without key", func(c *FrontConfig) { c.PublicTLSCertFile = "x" }, true},
		{"zero tries", func(c *FrontConfig) { c.MaxTries = 0 }, true},
		{"negative drain", func(c *FrontConfig) { c.DrainTimeout = -1 }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultFront()
			tt.mod(&c)
			var errs []error
			c.validate(func(err error) { errs = append(errs, err) })
			if (len(errs) > 0) != tt.bad {
				t.Fatalf("problems %v, want bad=%v", errs, tt.bad)
			}
			for _, err := range errs {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%v does not wrap ErrInvalid", err)
				}
			}
		})
	}
}

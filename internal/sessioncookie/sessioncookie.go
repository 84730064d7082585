package sessioncookie

import (
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed is returned by Parse for a value that is not TOKEN.ROUTE.
var ErrMalformed = errors.New("malformed session cookie")

const (
	// TokenLen is the length of a token in unpadded base64url.
	TokenLen = 43
	// MaxRouteLen bounds the route part of a cookie value.
	MaxRouteLen = 64
	// maxCookies is net/http's default limit on the cookies of a request
	// (GODEBUG httpcookiemaxnum); beyond it net/http reads none.
	maxCookies = 3000
)

// Parse splits a session cookie value TOKEN.ROUTE and checks both parts
// strictly: TOKEN is exactly 43 base64url characters encoding 256 bits
// (canonically: the 4 padding bits of the last character are zero),
// ROUTE is 1 to 64 base64url characters. Anything else wraps ErrMalformed.
func Parse(value string) (token, route string, err error) {
	dot := strings.IndexByte(value, '.')
	if dot < 0 {
		return "", "", fmt.Errorf("%w: no route separator", ErrMalformed)
	}
	token, route = value[:dot], value[dot+1:]
	if len(token) != TokenLen {
		return "", "", fmt.Errorf("%w: token of %d characters, want %d", ErrMalformed, len(token), TokenLen)
	}
	if len(route) == 0 || len(route) > MaxRouteLen {
		return "", "", fmt.Errorf("%w: route of %d characters, want 1..%d", ErrMalformed, len(route), MaxRouteLen)
	}
	if !b64URL(token) || !b64URL(route) {
		return "", "", fmt.Errorf("%w: characters outside base64url", ErrMalformed)
	}
	if !canonicalLast(token[TokenLen-1]) {
		return "", "", fmt.Errorf("%w: token is not canonical base64url", ErrMalformed)
	}
	return token, route, nil
}

// Split returns the token and the route of v, a value that Find or FindIn
// returned (or WellFormed accepted), without checking it again.
func Split[T string | []byte](v T) (token, route T) { return v[:TokenLen], v[TokenLen+1:] }

// WellFormed reports whether Parse accepts v, without allocating.
func WellFormed[T string | []byte](v T) bool {
	if len(v) < TokenLen+2 || len(v) > TokenLen+1+MaxRouteLen || v[TokenLen] != '.' {
		return false
	}
	return b64URL(v[:TokenLen]) && b64URL(v[TokenLen+1:]) && canonicalLast(v[TokenLen-1])
}

// canonicalLast reports whether c, the last character of a 43-character
// encoding of 32 bytes (258 bits for 256), has its 2 padding bits zero,
// as base64.RawURLEncoding.Strict() requires; otherwise two spellings
// would name one token.
func canonicalLast(c byte) bool {
	i := strings.IndexByte(alphabet, c)
	return i >= 0 && i&3 == 0
}

// alphabet is base64.RawURLEncoding's, in value order.
const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func b64URL[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if !inAlphabet[s[i]] {
			return false
		}
	}
	return len(s) > 0
}

// inAlphabet marks the bytes of alphabet: one load per byte of a cookie,
// which the front and the middleware check on every request.
var inAlphabet = func() (t [256]bool) {
	for i := range len(alphabet) {
		t[alphabet[i]] = true
	}
	return t
}()

// Find applies the rule to a request's Cookie header lines (the values of
// http.Header["Cookie"], in order): the first cookie called name whose
// value is well-formed.
func Find(lines []string, name string) (string, bool) {
	n := 0
	for _, line := range lines {
		n += Count(line)
	}
	if n > maxCookies {
		return "", false
	}
	for _, line := range lines {
		if v, ok := FindIn(line, name); ok {
			return v, true
		}
	}
	return "", false
}

// Count is how many cookies net/http counts in one Cookie line towards
// its limit. A caller that scans lines itself with FindIn must add them
// up and treat more than TooMany as no cookie at all.
func Count[T string | []byte](line T) int {
	n := 1
	for i := 0; i < len(line); i++ {
		if line[i] == ';' {
			n++
		}
	}
	return n
}

// TooMany reports whether n cookies (the sum of Count over a request's
// Cookie lines) exceed net/http's limit, which makes it read none.
func TooMany(n int) bool { return n > maxCookies }

// FindIn is Find for one Cookie line, without the limit on the number of
// cookies (see Count); it does not allocate.
func FindIn[T string | []byte](line T, name string) (T, bool) {
	line = trim(line)
	for len(line) > 0 {
		i := 0
		for i < len(line) && line[i] != ';' {
			i++
		}
		part := trim(line[:i])
		if i < len(line) {
			i++
		}
		line = line[i:]
		eq := 0
		for eq < len(part) && part[eq] != '=' {
			eq++
		}
		if !same(trim(part[:eq]), name) {
			continue
		}
		var v T
		if eq < len(part) {
			v = part[eq+1:]
		}
		if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if WellFormed(v) {
			return v, true
		}
	}
	var none T
	return none, false
}

// trim removes the ASCII white space net/http's textproto.TrimString does.
func trim[T string | []byte](s T) T {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func same[T string | []byte](a T, b string) bool {
	if len(a) != len(b) || len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

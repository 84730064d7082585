package sessions

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"github.com/cohortserver/cohort/internal/sessioncookie"
)

// tokenBytes is the entropy of a session token: 256 bits.
const tokenBytes = 32

// newToken returns a fresh token from crypto/rand, base64url-encoded.
func newToken() (string, error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// idLen is the length of a session id: a session is stored under a hash of
// its token, so neither the Raft log nor snapshots hold a usable credential.
const idLen = 16

// sessionID derives the stored id of a token.
func sessionID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return string(sum[:idLen])
}

// idPrefix is the short, non-secret name of a session shown to operators:
// the first 12 hex digits of its stored id (a hash of the token).
func idPrefix(id string) string {
	const hexdigits = "0123456789abcdef"
	var b [12]byte
	for i := 0; i < 6 && i < len(id); i++ {
		b[2*i] = hexdigits[id[i]>>4]
		b[2*i+1] = hexdigits[id[i]&0xf]
	}
	return string(b[:])
}

// ParseCookie splits a session cookie value TOKEN.ROUTE and checks both
// parts strictly: TOKEN is exactly 43 base64url characters encoding 256
// bits, ROUTE is 1 to 64 base64url characters (an opaque tag of the node
// that last served the session). Anything else is ErrMalformedCookie.
// The rule lives in internal/sessioncookie, shared with the front.
func ParseCookie(value string) (token, route string, err error) {
	return sessioncookie.Parse(value)
}

// FormatCookie joins a token and a route into a cookie value.
func FormatCookie(token, route string) string { return token + "." + route }

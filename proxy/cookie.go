package proxy

import (
	"net/http"
	"strings"

	"github.com/cohortserver/cohort/internal/sessioncookie"
)

// maxRouteLen bounds a route tag; membership's tags are 12 characters.
const maxRouteLen = 64

// RouteFromCookie returns the ROUTE of a session cookie value TOKEN.ROUTE,
// split at the last '.'. Both halves must be non-empty base64url (the
// alphabet A-Z a-z 0-9 - _), the route at most 64 characters; anything
// else is not a routable cookie and ok is false.
func RouteFromCookie(value string) (route string, ok bool) {
	i := strings.LastIndexByte(value, '.')
	if i <= 0 || i == len(value)-1 {
		return "", false
	}
	token, route := value[:i], value[i+1:]
	if len(route) > maxRouteLen || !base64URL(route) || !base64URL(token) {
		return "", false
	}
	return route, true
}

func base64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return s != ""
}

// cookieValue is the request's session cookie by the rule the sessions
// middleware applies too (internal/sessioncookie): the first well-formed
// cookie called name, read as net/http reads cookies. It does not
// allocate (r.Cookie parses every cookie).
func cookieValue(h http.Header, name string) (string, bool) {
	return sessioncookie.Find(h["Cookie"], name)
}

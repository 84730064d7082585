package files

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// decodePut decodes a files.put payload. Every node decodes every put it
// applies, and a small file's content travels inside it as base64: with
// encoding/json that was a tenth of a node's CPU under a stream of small
// files (a validation pass over the whole payload, then a decoding pass,
// then the base64). fastPut reads the payloads this package writes in one
// pass; anything else it does not read exactly as encoding/json would
// (escapes, other spellings of a key, numbers in another form, unknown
// keys, set_mtime) goes to json.Unmarshal, so the result is always what
// json.Unmarshal gives (FuzzDecodePut holds it to that).
func decodePut(b []byte) (putCmd, error) {
	if c, ok := fastPut(b); ok {
		return c, nil
	}
	var c putCmd
	err := json.Unmarshal(b, &c)
	return c, err
}

// putScanner reads one JSON value after another from b; ok turns false
// at the first thing it does not handle, and stays false.
type putScanner struct {
	b  []byte
	i  int
	ok bool
}

func (s *putScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c after optional white space.
func (s *putScanner) byte(c byte) bool {
	s.space()
	if s.ok && s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// peek is the next byte after white space (0 at the end).
func (s *putScanner) peek() byte {
	s.space()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str reads a string without escapes or control characters, in valid
// UTF-8, and returns its bytes (aliasing b).
func (s *putScanner) str() []byte {
	if !s.byte('"') {
		s.ok = false
		return nil
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			out := s.b[start:s.i]
			s.i++
			if !utf8.Valid(out) {
				s.ok = false
			}
			return out
		case c == '\\' || c < 0x20:
			s.ok = false
			return nil
		}
		s.i++
	}
	s.ok = false
	return nil
}

// digits reads an optional minus sign and decimal digits with no leading
// zero (JSON's integers) and returns them.
func (s *putScanner) digits(signed bool) []byte {
	s.space()
	start := s.i
	if signed && s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	d := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	n := s.i - d
	if n == 0 || (n > 1 && s.b[d] == '0') {
		s.ok = false
		return nil
	}
	// A fraction or an exponent follows: not an integer as written.
	if s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.ok = false
		return nil
	}
	return s.b[start:s.i]
}

func (s *putScanner) int64() int64 {
	v, err := strconv.ParseInt(string(s.digits(true)), 10, 64)
	if err != nil {
		s.ok = false
	}
	return v
}

func (s *putScanner) uint(bits int) uint64 {
	v, err := strconv.ParseUint(string(s.digits(false)), 10, bits)
	if err != nil {
		s.ok = false
	}
	return v
}

// null consumes a JSON null if one comes next.
func (s *putScanner) null() bool {
	s.space()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// literal consumes true or false.
func (s *putScanner) boolean() bool {
	s.space()
	switch {
	case len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "true":
		s.i += 4
		return true
	case len(s.b)-s.i >= 5 && string(s.b[s.i:s.i+5]) == "false":
		s.i += 5
		return false
	}
	s.ok = false
	return false
}

// fastPut decodes b when it is a put as this package writes it; false
// means: ask encoding/json.
func fastPut(b []byte) (putCmd, bool) {
	var c putCmd
	s := &putScanner{b: b, ok: true}
	if !s.byte('{') {
		return c, false
	}
	if s.peek() == '}' {
		s.i++
		return c, s.end()
	}
	for s.ok {
		key := s.str()
		if !s.ok || !s.byte(':') {
			return c, false
		}
		switch string(key) {
		case "path":
			if s.null() { // json leaves the field as it was
				break
			}
			c.Path = string(s.str())
		case "sha256":
			if s.null() {
				break
			}
			c.SHA256 = string(s.str())
		case "size":
			if s.null() {
				break
			}
			c.Size = s.int64()
		case "mode":
			if s.null() {
				break
			}
			c.Mode = uint32(s.uint(32))
		case "max_bytes":
			if s.null() {
				break
			}
			c.MaxBytes = s.int64()
		case "if_version":
			if s.null() {
				c.IfVersion = nil
				break
			}
			v := s.uint(64)
			c.IfVersion = &v
		case "holders":
			if s.null() {
				c.Holders = nil
				break
			}
			c.Holders = s.strings()
		case "data":
			if s.null() {
				c.Data = nil
				break
			}
			enc := s.str()
			if !s.ok {
				return c, false
			}
			out := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
			n, err := base64.StdEncoding.Decode(out, enc)
			if err != nil {
				return c, false
			}
			c.Data = out[:n]
		case "inline":
			if s.null() {
				break
			}
			c.Inline = s.boolean()
		default: // set_mtime, another spelling, a field of a newer version
			return c, false
		}
		if !s.ok {
			return c, false
		}
		if s.byte(',') {
			continue
		}
		if s.byte('}') {
			return c, s.end()
		}
		return c, false
	}
	return c, false
}

// strings reads an array of strings.
func (s *putScanner) strings() []string {
	if !s.byte('[') {
		s.ok = false
		return nil
	}
	out := []string{}
	if s.byte(']') {
		return out
	}
	for s.ok {
		out = append(out, string(s.str()))
		if s.byte(',') {
			continue
		}
		if s.byte(']') {
			return out
		}
		s.ok = false
	}
	return nil
}

// end reports whether only white space follows.
func (s *putScanner) end() bool {
	s.space()
	return s.ok && s.i == len(s.b)
}

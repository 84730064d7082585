package files

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of a file path.
const (
	// MaxPathBytes bounds a whole path.
	MaxPathBytes = 1024
	// MaxSegmentBytes bounds one path segment (a file or directory name).
	MaxSegmentBytes = 255
)

// CleanPath validates p and returns its normal form: segments joined by
// single slashes, no leading slash. A leading slash is accepted and dropped
// (paths are always relative to the shared directory). Refused, with
// ErrBadPath: the empty path, empty segments ("a//b", "a/"), "." and ".."
// segments, NUL and other control characters, backslashes, invalid UTF-8,
// and paths or segments over MaxPathBytes or MaxSegmentBytes.
func CleanPath(p string) (string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return "", fmt.Errorf("%w: the path is empty", ErrBadPath)
	}
	if len(p) > MaxPathBytes {
		return "", fmt.Errorf("%w: %d bytes is longer than the %d allowed", ErrBadPath, len(p), MaxPathBytes)
	}
	if !utf8.ValidString(p) {
		return "", fmt.Errorf("%w: %q is not valid UTF-8", ErrBadPath, p)
	}
	for _, r := range p {
		switch {
		case r == 0:
			return "", fmt.Errorf("%w: %q contains a NUL byte", ErrBadPath, p)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return "", fmt.Errorf("%w: %q contains a control character", ErrBadPath, p)
		case r == '\\':
			return "", fmt.Errorf("%w: %q contains a backslash; separate directories with /", ErrBadPath, p)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "":
			return "", fmt.Errorf("%w: %q has an empty segment (a double or trailing slash)", ErrBadPath, p)
		case seg == "." || seg == "..":
			return "", fmt.Errorf("%w: %q has a %q segment; paths cannot leave or refer to the current directory", ErrBadPath, p, seg)
		case len(seg) > MaxSegmentBytes:
			return "", fmt.Errorf("%w: a segment of %q is %d bytes, longer than the %d allowed", ErrBadPath, p, len(seg), MaxSegmentBytes)
		}
	}
	return p, nil
}

// CleanPrefix validates a listing prefix: "" (everything) or a path with an
// optional trailing slash ("conf/" lists the directory conf).
func CleanPrefix(p string) (string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return "", nil
	}
	dir := strings.HasSuffix(p, "/")
	c, err := CleanPath(strings.TrimSuffix(p, "/"))
	if err != nil {
		return "", err
	}
	if dir {
		c += "/"
	}
	return c, nil
}

package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Reply kinds. They follow RESP3's type bytes; the RESP writer lowers them
// to RESP2 for clients that did not say HELLO 3.
const (
	kindNil      byte = '_' // null bulk string (RESP2 $-1)
	kindNilArray byte = 'N' // null array (RESP2 *-1), EXEC aborted by WATCH
	kindInt      byte = ':'
	kindBulk     byte = '$'
	kindStatus   byte = '+'
	kindErr      byte = '-'
	kindArray    byte = '*'
	kindMap      byte = '%' // Arr holds key, value, key, value...
	kindSet      byte = '~'
)

// Reply is the answer of one command, independent of the wire protocol. It
// travels from the leader's state machine to the proposing node inside the
// Raft result, so it has a compact binary encoding.
type Reply struct {
	Kind byte
	Int  int64
	Str  []byte
	Arr  []Reply
}

func rNil() Reply                    { return Reply{Kind: kindNil} }
func rInt(n int64) Reply             { return Reply{Kind: kindInt, Int: n} }
func rBulk(b []byte) Reply           { return Reply{Kind: kindBulk, Str: b} }
func rStatus(s string) Reply         { return Reply{Kind: kindStatus, Str: []byte(s)} }
func rErr(s string) Reply            { return Reply{Kind: kindErr, Str: []byte(s)} }
func rArr(a []Reply) Reply           { return Reply{Kind: kindArray, Arr: a} }
func rOK() Reply                     { return rStatus("OK") }
func rBool(b bool) Reply             { return rInt(map[bool]int64{false: 0, true: 1}[b]) }
func rErrf(f string, a ...any) Reply { return rErr(fmt.Sprintf(f, a...)) }

// IsErr reports whether r is an error reply.
func (r Reply) IsErr() bool { return r.Kind == kindErr }

func appendReply(b []byte, r Reply) []byte {
	b = append(b, r.Kind)
	switch r.Kind {
	case kindInt:
		b = binary.AppendVarint(b, r.Int)
	case kindBulk, kindStatus, kindErr:
		b = binary.AppendUvarint(b, uint64(len(r.Str)))
		b = append(b, r.Str...)
	case kindArray, kindMap, kindSet:
		b = binary.AppendUvarint(b, uint64(len(r.Arr)))
		for _, e := range r.Arr {
			b = appendReply(b, e)
		}
	}
	return b
}

var errReplyCodec = errors.New("malformed reply")

func readReply(b []byte, depth int) (Reply, []byte, error) {
	if len(b) == 0 || depth > 8 {
		return Reply{}, nil, errReplyCodec
	}
	r := Reply{Kind: b[0]}
	b = b[1:]
	switch r.Kind {
	case kindNil, kindNilArray:
	case kindInt:
		v, n := binary.Varint(b)
		if n <= 0 {
			return r, nil, errReplyCodec
		}
		r.Int, b = v, b[n:]
	case kindBulk, kindStatus, kindErr:
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return r, nil, errReplyCodec
		}
		r.Str, b = b[n:n+int(l)], b[n+int(l):]
	case kindArray, kindMap, kindSet:
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return r, nil, errReplyCodec
		}
		b = b[n:]
		r.Arr = make([]Reply, l)
		for i := range r.Arr {
			var err error
			if r.Arr[i], b, err = readReply(b, depth+1); err != nil {
				return r, nil, err
			}
		}
	default:
		return r, nil, fmt.Errorf("%w: kind %q", errReplyCodec, r.Kind)
	}
	return r, b, nil
}

// appendRESP writes r in RESP2 (proto 2) or RESP3 (proto 3).
func appendRESP(b []byte, r Reply, proto int) []byte {
	switch r.Kind {
	case kindNil:
		if proto >= 3 {
			return append(b, "_\r\n"...)
		}
		return append(b, "$-1\r\n"...)
	case kindNilArray:
		if proto >= 3 {
			return append(b, "_\r\n"...)
		}
		return append(b, "*-1\r\n"...)
	case kindInt:
		b = append(b, ':')
		b = strconv.AppendInt(b, r.Int, 10)
		return append(b, '\r', '\n')
	case kindBulk:
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(r.Str)), 10)
		b = append(b, '\r', '\n')
		b = append(b, r.Str...)
		return append(b, '\r', '\n')
	case kindStatus, kindErr:
		b = append(b, r.Kind)
		for _, c := range r.Str { // a simple string cannot hold CR or LF
			if c == '\r' || c == '\n' {
				c = ' '
			}
			b = append(b, c)
		}
		return append(b, '\r', '\n')
	case kindMap:
		if proto >= 3 {
			b = append(b, '%')
			b = strconv.AppendInt(b, int64(len(r.Arr)/2), 10)
		} else {
			b = append(b, '*')
			b = strconv.AppendInt(b, int64(len(r.Arr)), 10)
		}
	case kindSet:
		if proto >= 3 {
			b = append(b, '~')
		} else {
			b = append(b, '*')
		}
		b = strconv.AppendInt(b, int64(len(r.Arr)), 10)
	default: // array
		b = append(b, '*')
		b = strconv.AppendInt(b, int64(len(r.Arr)), 10)
	}
	b = append(b, '\r', '\n')
	for _, e := range r.Arr {
		b = appendRESP(b, e, proto)
	}
	return b
}

// kindRaw carries bytes already in the wire format (pub/sub frames); it
// never crosses the network.
const kindRaw byte = 'R'

package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// envelopeVersion is the version byte every command starts with. A node
// refuses (panics on) a version it does not know: applying it wrongly would
// fork the state machines.
const envelopeVersion byte = 1

// maxTypeLen bounds a command type name.
const maxTypeLen = 64

// Entry is one committed command as a state machine sees it. Everything a
// state machine may depend on is in here: Apply must not read clocks,
// randomness or anything outside the state it owns.
type Entry struct {
	Index   uint64    // Raft log index
	Term    uint64    // Raft term of the entry
	Type    string    // command type, owned by one state machine
	Origin  string    // node id that proposed the command
	Time    time.Time // stamped by the leader when it appended the command
	Payload []byte    // the owner's encoding
}

var errEnvelope = errors.New("malformed command envelope")

// encodeEnvelope writes version | uvarint len | type | uvarint len | origin |
// varint unix-nanos | payload.
func encodeEnvelope(typ, origin string, t time.Time, payload []byte) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(typ)+len(origin)+binary.MaxVarintLen64+len(payload))
	b = append(b, envelopeVersion)
	b = binary.AppendUvarint(b, uint64(len(typ)))
	b = append(b, typ...)
	b = binary.AppendUvarint(b, uint64(len(origin)))
	b = append(b, origin...)
	b = binary.AppendVarint(b, t.UnixNano())
	return append(b, payload...)
}

// decodeEnvelope is the inverse of encodeEnvelope. The payload aliases b.
func decodeEnvelope(b []byte) (e Entry, err error) {
	if len(b) < 1 {
		return e, fmt.Errorf("%w: empty", errEnvelope)
	}
	if b[0] != envelopeVersion {
		return e, fmt.Errorf("%w: version %d, this node knows %d", errEnvelope, b[0], envelopeVersion)
	}
	b = b[1:]
	typ, b, err := readString(b, maxTypeLen)
	if err != nil {
		return e, fmt.Errorf("%w: type: %w", errEnvelope, err)
	}
	origin, b, err := readString(b, maxIDLen)
	if err != nil {
		return e, fmt.Errorf("%w: origin: %w", errEnvelope, err)
	}
	ns, n := binary.Varint(b)
	if n <= 0 {
		return e, fmt.Errorf("%w: time", errEnvelope)
	}
	e.Type = typ
	e.Origin = origin
	e.Time = time.Unix(0, ns).UTC()
	e.Payload = b[n:]
	return e, nil
}

func readString(b []byte, max int) (string, []byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 {
		return "", nil, errors.New("bad length")
	}
	if l > uint64(max) || l > uint64(len(b)-n) {
		return "", nil, fmt.Errorf("length %d out of range", l)
	}
	return string(b[n : n+int(l)]), b[n+int(l):], nil
}

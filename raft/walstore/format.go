package walstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	hraft "github.com/hashicorp/raft"
)

// The on-disk format (DESIGN.md explains why it is so). Every integer is
// little-endian.
//
// Segment header, at offset 0 of every segment file:
//
//	0  [8]byte segMagic
//	8  u32     formatVersion
//	12 u32     0
//	16 u64     sequence number (the one in the file name)
//	24 u32     CRC32C of bytes 0..24
//	28 u32     0
//
// Record, at an 8-byte aligned offset, from segHeaderSize on:
//
//	0  u32 payload length n (recFixed ≤ n)
//	4  u32 CRC32C of bytes 0..4 and of the payload
//	8  payload: u64 index, u64 term, u64 index of the first entry of the
//	   StoreLogs batch the record was written with, i64 AppendedAt Unix
//	   seconds, u32 its nanoseconds, u8 type, [3]byte 0, u32 len(Data),
//	   u32 len(Extensions), Data, Extensions
//	8+n zero padding up to the next multiple of 8
//
// A record header of eight zero bytes marks the end of the written part of
// a segment: every byte after it is zero (preallocated, or zeroed when a
// tail was truncated or a torn write repaired).
const (
	formatVersion = 1
	segHeaderSize = 32
	recHeaderSize = 8
	recFixed      = 48 // the payload's fixed part
	recAlign      = 8

	// sectorSize is the unit a torn write leaves whole or not at all: a
	// record with an all-zero piece at this alignment was being written
	// when the machine stopped (etcd's WAL uses the same test).
	sectorSize = 512
)

var (
	segMagic   = [8]byte{'c', 'o', 'h', 'w', 'a', 'l', 's', 'g'}
	metaMagic  = [8]byte{'c', 'o', 'h', 'w', 'a', 'l', 'm', 't'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// recordSize is the bytes a record with a payload of n bytes takes.
func recordSize(n int) int {
	return (recHeaderSize + n + recAlign - 1) &^ (recAlign - 1)
}

// payloadLen is the payload length of l's record, or an error when it
// does not fit the format's 32-bit length.
func payloadLen(l *hraft.Log) (int, error) {
	n := recFixed + len(l.Data) + len(l.Extensions)
	if n > math.MaxUint32-recAlign || len(l.Data) > math.MaxUint32 || len(l.Extensions) > math.MaxUint32 {
		return 0, fmt.Errorf("raft log entry %d of %d bytes: too large for a record", l.Index, n)
	}
	return n, nil
}

// appendRecord appends l's record (batch first index batchFirst) to b.
// The caller checked payloadLen.
func appendRecord(b []byte, l *hraft.Log, batchFirst uint64) []byte {
	n := recFixed + len(l.Data) + len(l.Extensions)
	start := len(b)
	size := recordSize(n)
	b = append(b, make([]byte, size)...)
	r := b[start : start+size]
	binary.LittleEndian.PutUint32(r[0:], uint32(n))
	p := r[recHeaderSize : recHeaderSize+n]
	binary.LittleEndian.PutUint64(p[0:], l.Index)
	binary.LittleEndian.PutUint64(p[8:], l.Term)
	binary.LittleEndian.PutUint64(p[16:], batchFirst)
	binary.LittleEndian.PutUint64(p[24:], uint64(l.AppendedAt.Unix()))
	binary.LittleEndian.PutUint32(p[32:], uint32(l.AppendedAt.Nanosecond()))
	p[36] = byte(l.Type)
	binary.LittleEndian.PutUint32(p[40:], uint32(len(l.Data)))
	binary.LittleEndian.PutUint32(p[44:], uint32(len(l.Extensions)))
	copy(p[recFixed:], l.Data)
	copy(p[recFixed+len(l.Data):], l.Extensions)
	binary.LittleEndian.PutUint32(r[4:], recordCRC(r[0:4], p))
	return b
}

// recordCRC is the checksum of a record: its length field and payload.
func recordCRC(lenField, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(lenField, castagnoli), castagnoli, payload)
}

// recordHead is a record's header and the fields of its payload that
// recovery looks at.
type recordHead struct {
	n          int // payload length
	index      uint64
	batchFirst uint64
}

// errBadRecord is a record that fails a check; checkRecord says which.
var errBadRecord = errors.New("bad record")

// plausibleLen reports whether a record header's length field could be
// right for a record at off in a segment of size bytes.
func plausibleLen(n uint32, off, size int64) bool {
	return n >= recFixed && off+int64(recordSize(int(n))) <= size
}

// checkRecord verifies the record r (its header, payload and padding,
// len(r) == recordSize(n)) and returns its head.
func checkRecord(r []byte) (recordHead, error) {
	n := int(binary.LittleEndian.Uint32(r[0:]))
	if n < recFixed || recordSize(n) > len(r) {
		return recordHead{}, fmt.Errorf("%w: length %d", errBadRecord, n)
	}
	p := r[recHeaderSize : recHeaderSize+n]
	if got, want := recordCRC(r[0:4], p), binary.LittleEndian.Uint32(r[4:]); got != want {
		return recordHead{}, fmt.Errorf("%w: checksum %08x, want %08x", errBadRecord, got, want)
	}
	h := recordHead{
		n:          n,
		index:      binary.LittleEndian.Uint64(p[0:]),
		batchFirst: binary.LittleEndian.Uint64(p[16:]),
	}
	dl, el := binary.LittleEndian.Uint32(p[40:]), binary.LittleEndian.Uint32(p[44:])
	if uint64(dl)+uint64(el)+recFixed != uint64(n) {
		return recordHead{}, fmt.Errorf("%w: data %d and extensions %d bytes in a payload of %d", errBadRecord, dl, el, n)
	}
	if h.index == 0 || h.batchFirst == 0 || h.batchFirst > h.index {
		return recordHead{}, fmt.Errorf("%w: index %d, batch first %d", errBadRecord, h.index, h.batchFirst)
	}
	return h, nil
}

// decodeRecord fills l from the verified record r. Data and Extensions
// alias r.
func decodeRecord(r []byte, l *hraft.Log) {
	p := r[recHeaderSize:]
	dl := int(binary.LittleEndian.Uint32(p[40:]))
	el := int(binary.LittleEndian.Uint32(p[44:]))
	l.Index = binary.LittleEndian.Uint64(p[0:])
	l.Term = binary.LittleEndian.Uint64(p[8:])
	l.AppendedAt = time.Unix(int64(binary.LittleEndian.Uint64(p[24:])), int64(binary.LittleEndian.Uint32(p[32:]))).UTC()
	l.Type = hraft.LogType(p[36])
	l.Data, l.Extensions = nil, nil
	if dl > 0 {
		l.Data = p[recFixed : recFixed+dl : recFixed+dl]
	}
	if el > 0 {
		l.Extensions = p[recFixed+dl : recFixed+dl+el : recFixed+dl+el]
	}
}

// encodeSegHeader returns the header of segment seq.
func encodeSegHeader(seq uint64) []byte {
	h := make([]byte, segHeaderSize)
	copy(h, segMagic[:])
	binary.LittleEndian.PutUint32(h[8:], formatVersion)
	binary.LittleEndian.PutUint64(h[16:], seq)
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(h[:24], castagnoli))
	return h
}

// checkSegHeader verifies h as the header of segment seq.
func checkSegHeader(h []byte, seq uint64) error {
	switch {
	case [8]byte(h[:8]) != segMagic:
		return errors.New("not a segment header")
	case crc32.Checksum(h[:24], castagnoli) != binary.LittleEndian.Uint32(h[24:]):
		return errors.New("segment header checksum mismatch")
	case binary.LittleEndian.Uint32(h[8:]) != formatVersion:
		return fmt.Errorf("segment format version %d, this build reads %d", binary.LittleEndian.Uint32(h[8:]), formatVersion)
	case binary.LittleEndian.Uint64(h[16:]) != seq:
		return fmt.Errorf("segment header names sequence %d, the file name %d", binary.LittleEndian.Uint64(h[16:]), seq)
	}
	return nil
}

// The meta file: two slots of metaSlotSize bytes at 0 and metaSlotSize,
// each in its own page. An update writes the slot of its generation's
// parity in place and syncs it: a torn slot fails its checksum and the
// other slot, the previous state, counts.
//
//	0  [8]byte metaMagic
//	8  u32     formatVersion
//	12 u32     0
//	16 u64     generation
//	24 u64     first index (0: no entry below the first record is dead)
//	32 u64     pending tail truncation: entries from this index on are
//	           deleted (0: none)
//	40 u32     CRC32C of bytes 0..40
const (
	metaSlotSize = 4096
	metaFileSize = 2 * metaSlotSize
	metaUsed     = 44
)

// meta is the durable state that records cannot carry.
type meta struct {
	gen     uint64
	first   uint64 // entries below are deleted; 0: none
	truncAt uint64 // a tail truncation in progress: entries from it on are deleted; 0: none
}

func encodeMeta(m meta) []byte {
	b := make([]byte, metaUsed)
	copy(b, metaMagic[:])
	binary.LittleEndian.PutUint32(b[8:], formatVersion)
	binary.LittleEndian.PutUint64(b[16:], m.gen)
	binary.LittleEndian.PutUint64(b[24:], m.first)
	binary.LittleEndian.PutUint64(b[32:], m.truncAt)
	binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
	return b
}

// decodeMeta returns the slot's state, or false when the slot is not a
// valid one (never written, or torn).
func decodeMeta(b []byte) (meta, bool) {
	if len(b) < metaUsed || [8]byte(b[:8]) != metaMagic ||
		crc32.Checksum(b[:40], castagnoli) != binary.LittleEndian.Uint32(b[40:]) ||
		binary.LittleEndian.Uint32(b[8:]) != formatVersion {
		return meta{}, false
	}
	return meta{
		gen:     binary.LittleEndian.Uint64(b[16:]),
		first:   binary.LittleEndian.Uint64(b[24:]),
		truncAt: binary.LittleEndian.Uint64(b[32:]),
	}, true
}

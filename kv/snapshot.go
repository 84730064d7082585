package kv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"

	"github.com/cohortserver/cohort/raft"
)

// snapshotMagic opens the store's snapshot section.
const snapshotMagic = "CKV1"

type snapshot struct {
	keys       map[string]*item
	lastDelete uint64
}

// Snapshot implements raft.StateMachine: items are immutable, so a shallow
// clone of the map is a consistent view.
func (s *Store) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &snapshot{keys: maps.Clone(s.st.keys), lastDelete: s.st.lastDelete}, nil
}

// Persist writes magic | lastDelete | (1 | item)... | 0.
func (sn *snapshot) Persist(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.WriteString(snapshotMagic)
	var buf []byte
	buf = binary.AppendUvarint(buf[:0], sn.lastDelete)
	bw.Write(buf)
	for k, it := range sn.keys {
		buf = append(buf[:0], 1)
		buf = appendBytes(buf, []byte(k))
		buf = append(buf, it.typ)
		buf = binary.AppendVarint(buf, it.expire)
		buf = binary.AppendUvarint(buf, it.rev)
		buf = binary.AppendUvarint(buf, uint64(it.flags))
		switch it.typ {
		case typeString:
			buf = appendBytes(buf, it.str)
		case typeHash:
			buf = binary.AppendUvarint(buf, uint64(len(it.hash)))
			for f, v := range it.hash {
				buf = appendBytes(buf, []byte(f))
				buf = appendBytes(buf, v)
			}
		case typeSet:
			buf = binary.AppendUvarint(buf, uint64(len(it.set)))
			for m := range it.set {
				buf = appendBytes(buf, []byte(m))
			}
		case typeList:
			buf = binary.AppendUvarint(buf, uint64(len(it.list)))
			for _, e := range it.list {
				buf = appendBytes(buf, e)
			}
		}
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("kv snapshot: %w", err)
		}
	}
	bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("kv snapshot: %w", err)
	}
	return nil
}

// Release implements raft.Snapshot.
func (sn *snapshot) Release() {}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// maxSnapshotString bounds one string read back from a snapshot.
const maxSnapshotString = 1 << 30

func readBytes(r *bufio.Reader) ([]byte, error) {
	l, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if l > maxSnapshotString {
		return nil, fmt.Errorf("string of %d bytes", l)
	}
	b := make([]byte, l)
	_, err = io.ReadFull(r, b)
	return b, err
}

// Restore implements raft.StateMachine: the state is replaced by r's (an
// empty reader means an empty store).
func (s *Store) Restore(r io.Reader) error {
	st, err := readState(bufio.NewReaderSize(r, 256<<10))
	if err != nil {
		return fmt.Errorf("kv restore: %w", err)
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	return nil
}

func readState(br *bufio.Reader) (*state, error) {
	st := newState()
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		return nil, err
	}
	if string(magic) != snapshotMagic {
		return nil, fmt.Errorf("section header %q", magic)
	}
	var err error
	if st.lastDelete, err = binary.ReadUvarint(br); err != nil {
		return nil, err
	}
	for {
		more, err := br.ReadByte()
		if err != nil {
			return nil, err
		}
		if more == 0 {
			return st, nil
		}
		k, err := readBytes(br)
		if err != nil || len(k) == 0 {
			return nil, fmt.Errorf("key: %w", errors.Join(err, errCodec))
		}
		it := &item{}
		if it.typ, err = br.ReadByte(); err != nil {
			return nil, err
		}
		if it.expire, err = binary.ReadVarint(br); err != nil {
			return nil, err
		}
		if it.rev, err = binary.ReadUvarint(br); err != nil {
			return nil, err
		}
		fl, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		it.flags = uint32(fl)
		switch it.typ {
		case typeString:
			if it.str, err = readBytes(br); err != nil {
				return nil, err
			}
		case typeList:
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, err
			}
			it.list = make([][]byte, 0, min(n, 1<<16))
			for range n {
				e, err := readBytes(br)
				if err != nil {
					return nil, err
				}
				it.list = append(it.list, e)
			}
		case typeHash, typeSet:
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, err
			}
			if it.typ == typeHash {
				it.hash = make(map[string][]byte, min(n, 1<<16))
			} else {
				it.set = make(map[string]struct{}, min(n, 1<<16))
			}
			for range n {
				f, err := readBytes(br)
				if err != nil {
					return nil, err
				}
				if it.typ == typeSet {
					it.set[string(f)] = struct{}{}
					continue
				}
				v, err := readBytes(br)
				if err != nil {
					return nil, err
				}
				it.hash[string(f)] = v
			}
		default:
			return nil, fmt.Errorf("key type %d: %w", it.typ, errCodec)
		}
		st.set(string(k), it)
	}
}

package files

// HTTPExists is how many lookups this node answered over HTTP.
func (s *Store) HTTPExists() int64 { return s.httpExists.Load() }

// EncodeWire and DecodeWire expose the exists answer's encoding.
var (
	EncodeWire = func(exists, dir bool, version uint64) []byte {
		return encodeWire(wire{Exists: exists, Dir: dir, Version: version})
	}
	DecodeWire = func(b []byte) (exists, dir bool, version uint64, err error) {
		w, err := decodeWire(b)
		return w.Exists, w.Dir, w.Version, err
	}
)

package testcluster

import "github.com/anishathalye/porcupine"

// PartitionBy splits a history into independent parts by key (one
// register per key, say), so that porcupine checks each alone: a model's
// Partition.
func PartitionBy(key func(porcupine.Operation) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := key(op)
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(by))
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	}
}

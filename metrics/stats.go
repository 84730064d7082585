package metrics

// Stat declares one figure of a Stats collector and how to read it from
// the snapshot T the collector takes once per scrape. The name is written
// once, here: there is no second place for it to be misspelt.
type Stat[T any] struct {
	Name    string   // without namespace and subsystem, e.g. "in_memory"
	Help    string   // what it measures
	Counter bool     // a monotonically growing count (name should end in _total)
	Labels  []string // label names; set Each instead of Value
	// Value reads an unlabelled figure.
	Value func(T) float64
	// Each reports every labelled value of the figure, with label values in
	// the order of Labels.
	Each func(T, func(value float64, labelValues ...string))
}

// Gauge declares an unlabelled gauge read by value.
func Gauge[T any](name, help string, value func(T) float64) Stat[T] {
	return Stat[T]{Name: name, Help: help, Value: value}
}

// Counter declares an unlabelled counter read by value.
func Counter[T any](name, help string, value func(T) float64) Stat[T] {
	return Stat[T]{Name: name, Help: help, Counter: true, Value: value}
}

// GaugeVec declares a labelled gauge whose values each reports.
func GaugeVec[T any](name, help string, labels []string, each func(T, func(value float64, labelValues ...string))) Stat[T] {
	return Stat[T]{Name: name, Help: help, Labels: labels, Each: each}
}

// NewStats returns the collector of cohort_<subsystem>_<stat> for a package
// that keeps its own figures: at each scrape it calls read once and reads
// every stat from that snapshot. This is how a package exports its
// collector (see the package doc).
func NewStats[T any](subsystem string, read func() T, stats ...Stat[T]) *Func {
	figs := make([]Figure, len(stats))
	for i, s := range stats {
		figs[i] = Figure{Name: s.Name, Help: s.Help, Counter: s.Counter, Labels: s.Labels}
	}
	return NewFunc(subsystem, figs, func(emit Emit) {
		snap := read()
		for _, s := range stats {
			switch {
			case s.Value != nil:
				emit(s.Name, s.Value(snap))
			case s.Each != nil:
				s.Each(snap, func(v float64, lv ...string) { emit(s.Name, v, lv...) })
			}
		}
	})
}

// Bool is 1 for true and 0 for false, the Prometheus way of a flag.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

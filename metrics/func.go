package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrUndeclared is the scrape error of a figure a Func emitted without
// declaring it.
var ErrUndeclared = errors.New("metrics: figure emitted but not declared")

// Figure declares one metric a Func collector reports.
type Figure struct {
	Name    string   // without namespace and subsystem, e.g. "in_memory"
	Help    string   // what it measures
	Counter bool     // a monotonically growing count (name should end in _total)
	Labels  []string // label names, in the order Emit gets their values
}

// Emit reports one value of the figure named name, with label values in
// the order the Figure declared.
type Emit func(name string, value float64, labelValues ...string)

// Func is a collector that reads a package's figures at scrape time: it
// calls read once per scrape, which reports values through emit. Packages
// that already keep counts (sessions, files, jobs) expose them this way
// without importing Prometheus themselves. Emitting an undeclared name
// fails loudly: the scrape reports an error for it (Gather returns it,
// promhttp_metric_handler_errors_total counts it and the handler logs it)
// instead of the figure silently going missing. Prefer NewStats, where
// each name is written once.
type Func struct {
	subsystem string
	descs     map[string]*prometheus.Desc
	kinds     map[string]prometheus.ValueType
	read      func(emit Emit)
}

var _ prometheus.Collector = (*Func)(nil)

// NewFunc returns a Func collector of cohort_<subsystem>_<figure>.
func NewFunc(subsystem string, figs []Figure, read func(emit Emit)) *Func {
	f := &Func{subsystem: subsystem, descs: map[string]*prometheus.Desc{}, kinds: map[string]prometheus.ValueType{}, read: read}
	for _, fig := range figs {
		f.descs[fig.Name] = prometheus.NewDesc(prometheus.BuildFQName(Namespace, subsystem, fig.Name), fig.Help, fig.Labels, nil)
		f.kinds[fig.Name] = prometheus.GaugeValue
		if fig.Counter {
			f.kinds[fig.Name] = prometheus.CounterValue
		}
	}
	return f
}

// Describe implements prometheus.Collector.
func (f *Func) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range f.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (f *Func) Collect(ch chan<- prometheus.Metric) {
	f.read(func(name string, v float64, labels ...string) {
		d, ok := f.descs[name]
		if !ok {
			fq := prometheus.BuildFQName(Namespace, f.subsystem, name)
			ch <- prometheus.NewInvalidMetric(prometheus.NewDesc(fq, "undeclared", nil, nil),
				fmt.Errorf("%w: %s (declare it in the collector's figures)", ErrUndeclared, fq))
			return
		}
		m, err := prometheus.NewConstMetric(d, f.kinds[name], v, labels...)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(d, err)
			return
		}
		ch <- m
	})
}

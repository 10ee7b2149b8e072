package policy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the policy stage's Prometheus metrics; register them with
// the agent's registry (Engine.Metrics).
//
// The decisions themselves (sextant_policy_verdicts_total) are counted
// from the flows they become, by the Prometheus sink
// (exporters/prometheus), with every other consumer of flows.
type Metrics struct {
	revision     prometheus.Gauge
	rejected     prometheus.Gauge
	applies      *prometheus.CounterVec
	applySeconds prometheus.Histogram
	lost         prometheus.CounterFunc
}

// lost counts the verdict records the kernel could not write.
func newMetrics(lost func() uint64) *Metrics {
	return &Metrics{
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sextant_policy_revision",
			Help: "The policy revision in force.",
		}),
		rejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sextant_policy_rejected_files",
			Help: "Policy files whose latest content was rejected (their last good version stays in force).",
		}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sextant_policy_applies_total",
			Help: "Policy revisions applied to the kernel, by result (ok, error).",
		}, []string{"result"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sextant_policy_apply_seconds",
			Help:    "Time to write a revision into the kernel and switch to it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		lost: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sextant_policy_verdicts_lost_total",
			Help: "Verdicts lost because the kernel's verdict ring was full (the agent read it too slowly).",
		}, func() float64 { return float64(lost()) }),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.revision, m.rejected, m.applies, m.applySeconds, m.lost}
}

// Metrics returns the engine's collector.
func (e *Engine) Metrics() prometheus.Collector { return e.metrics }

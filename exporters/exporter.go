// Package exporters is where flows leave sextant: each subpackage sends
// them to one kind of system (Prometheus, OpenTelemetry, ClickHouse).
package exporters

import (
	"context"

	"github.com/sextant/sextant/flow"
)

// Exporter receives every flow once. Export must not block the pipeline:
// an exporter queues and counts what it had to drop.
type Exporter interface {
	Export(f *flow.Flow)
	Close(ctx context.Context) error // flush what is queued, then stop
}

// Fanout sends each flow to every exporter in order.
type Fanout []Exporter

func (fo Fanout) Export(f *flow.Flow) {
	for _, e := range fo {
		e.Export(f)
	}
}

// Close closes every exporter and returns the first error.
func (fo Fanout) Close(ctx context.Context) error {
	var first error
	for _, e := range fo {
		if err := e.Close(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

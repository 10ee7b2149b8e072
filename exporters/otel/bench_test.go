package otel

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"

	"github.com/sextant/sextant/flow"
)

func benchFlows() []*flow.Flow {
	var fs []*flow.Flow
	for _, f := range knownFlows(time.Now()) {
		fs = append(fs, f)
	}
	return fs
}

// BenchmarkSpan: the worker's cost to turn one flow into a span.
func BenchmarkSpan(b *testing.B) {
	cfg, _ := Config{Endpoint: "x"}.withDefaults()
	sb := newSpanBuilder(cfg, newResourceCache(4096), [32]byte{1})
	fs := benchFlows()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f := fs[i%len(fs)]
		sb.span(f, testRoute(f.Path))
	}
}

// BenchmarkRecordMetrics: the worker's cost to record one flow in its
// service's histograms (exporting happens elsewhere, per interval).
func BenchmarkRecordMetrics(b *testing.B) {
	exp, err := otlpmetricgrpc.New(context.Background(), otlpmetricgrpc.WithEndpoint("127.0.0.1:1"), otlpmetricgrpc.WithInsecure())
	if err != nil {
		b.Fatal(err)
	}
	cfg, _ := Config{Endpoint: "x"}.withDefaults()
	m := newMeters(exp, cfg)
	fs := benchFlows()
	var scratch = m.record(fs[0], "/users/{id}", nil)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f := fs[i%len(fs)]
		scratch = m.record(f, testRoute(f.Path), scratch)
	}
}

// BenchmarkExportJaeger: flows through the whole exporter into a real
// Jaeger, Close included (every span accepted by the backend). ns/op is
// per flow; the pipeline's own cost is the Export call alone (see
// BenchmarkExportCall).
func BenchmarkExportJaeger(b *testing.B) {
	j := startJaeger(b)
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		b.Run(proto, func(b *testing.B) {
			endpoint := map[string]string{ProtocolGRPC: j.OTLPGRPC, ProtocolHTTP: j.OTLPHTTP}[proto]
			e, err := New(context.Background(), Config{Endpoint: endpoint, Protocol: proto, Insecure: true,
				MaxQueueSize: b.N + 1, BatchTimeout: 100 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			fs := benchFlows()
			for _, f := range fs {
				f.TraceParent = "" // each span its own trace, as most unsampled traffic
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				e.Export(fs[i%len(fs)])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := e.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			st := e.Stats()
			if st.SpansSent != uint64(b.N) || st.Dropped != 0 {
				b.Fatalf("stats %+v, want %d spans sent, none dropped", st, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

// BenchmarkExportCall: what Export costs the pipeline goroutine (queueing;
// a worker drains the queue into a real Jaeger meanwhile, and when it
// falls behind the flow is dropped and counted instead).
func BenchmarkExportCall(b *testing.B) {
	j := startJaeger(b)
	e, err := New(context.Background(), Config{Endpoint: j.OTLPGRPC, Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	defer closeExporter(b, e)
	fs := benchFlows()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e.Export(fs[i%len(fs)])
	}
	st := e.Stats()
	b.ReportMetric(float64(st.Dropped)/float64(st.Received), "dropped/flow")
}

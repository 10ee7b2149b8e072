package otel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/sextant/sextant/flow"
)

// Bucket boundaries. Durations: the semantic conventions' advice for
// http.*.request.duration (seconds), used for the RPC durations too. Sizes:
// powers of four from 64 B to 16 MiB (the conventions give no advice).
var (
	durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	sizeBuckets     = []float64{0, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216}
)

// instruments are one service's histograms. Names are the semantic
// conventions' (HTTP: stable; RPC: rpc.{server,client}.call.duration in
// seconds, the current name that replaced rpc.*.duration in milliseconds).
type instruments struct {
	httpServerDuration, httpClientDuration metric.Float64Histogram
	httpServerReqBody, httpServerRespBody  metric.Int64Histogram
	httpClientReqBody, httpClientRespBody  metric.Int64Histogram
	rpcServerDuration, rpcClientDuration   metric.Float64Histogram
}

func newInstruments(m metric.Meter) (*instruments, error) {
	var in instruments
	var errs []error
	dur := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(durationBuckets...))
		errs = append(errs, err)
		return h
	}
	size := func(name, desc string) metric.Int64Histogram {
		h, err := m.Int64Histogram(name, metric.WithUnit("By"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(sizeBuckets...))
		errs = append(errs, err)
		return h
	}
	in.httpServerDuration = dur("http.server.request.duration", "Duration of HTTP server requests.")
	in.httpClientDuration = dur("http.client.request.duration", "Duration of HTTP client requests.")
	in.httpServerReqBody = size("http.server.request.body.size", "Size of HTTP server request bodies.")
	in.httpServerRespBody = size("http.server.response.body.size", "Size of HTTP server response bodies.")
	in.httpClientReqBody = size("http.client.request.body.size", "Size of HTTP client request bodies.")
	in.httpClientRespBody = size("http.client.response.body.size", "Size of HTTP client response bodies.")
	in.rpcServerDuration = dur("rpc.server.call.duration", "Measures the duration of inbound remote procedure calls.")
	in.rpcClientDuration = dur("rpc.client.call.duration", "Measures the duration of outbound remote procedure calls.")
	return &in, errors.Join(errs...)
}

// meterEntry is the metrics state of one service: its own MeterProvider
// (the resource names the service), read by hand at each interval.
type meterEntry struct {
	provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
	inst     *instruments
	lastUsed time.Time // under meters.mu
}

// meters keeps one MeterProvider per service and exports them all through
// one OTLP exporter: one request per service per interval. ManualReaders
// instead of PeriodicReaders: no goroutine per service, and an idle service
// is exported one last time before it is forgotten.
type meters struct {
	exporter sdkmetric.Exporter
	cfg      Config

	mu       sync.Mutex
	services map[service]*meterEntry

	overflow     atomic.Uint64
	exports      atomic.Uint64
	exportErrors atomic.Uint64
	lastErr      atomic.Pointer[string]
}

func newMeters(exp sdkmetric.Exporter, cfg Config) *meters {
	return &meters{exporter: exp, cfg: cfg, services: make(map[service]*meterEntry)}
}

// entry returns the service's instruments, creating them; nil past MaxServices.
func (m *meters) entry(s service, now time.Time) *meterEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.services[s]; ok {
		e.lastUsed = now
		return e
	}
	if len(m.services) >= m.cfg.MaxServices {
		m.overflow.Add(1)
		return nil
	}
	reader := sdkmetric.NewManualReader(
		sdkmetric.WithTemporalitySelector(m.exporter.Temporality),
		sdkmetric.WithAggregationSelector(m.exporter.Aggregation),
	)
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(s.resource()))
	inst, err := newInstruments(provider.Meter(sextantScope.name,
		metric.WithInstrumentationVersion(sextantScope.version), metric.WithSchemaURL(semconv.SchemaURL)))
	if err != nil {
		// Only invalid names or units fail, which are constants: a bug.
		panic(fmt.Sprintf("otel exporter: instruments: %v", err))
	}
	e := &meterEntry{provider: provider, reader: reader, inst: inst, lastUsed: now}
	m.services[s] = e
	return e
}

// record adds one flow to its service's histograms. Flows of an unknown
// side are not recorded: server and client instruments mean different things.
func (m *meters) record(f *flow.Flow, route string, attrs []attribute.KeyValue) []attribute.KeyValue {
	if f.Observer != flow.SideServer && f.Observer != flow.SideClient {
		return attrs
	}
	e := m.entry(serviceOf(f), time.Now())
	if e == nil {
		return attrs
	}
	ctx := context.Background()
	server := f.Observer == flow.SideServer
	seconds := f.Latency.Seconds()
	attrs = attrs[:0]

	if g := f.GRPC; g != nil {
		attrs = append(attrs, semconv.RPCSystemGRPC)
		if g.Service != "" {
			attrs = append(attrs, semconv.RPCService(g.Service))
		}
		if g.Method != "" {
			attrs = append(attrs, semconv.RPCMethod(g.Method))
		}
		if g.Status != nil {
			attrs = append(attrs, semconv.RPCGRPCStatusCodeKey.Int(int(*g.Status)))
		}
		attrs = appendCommonMetricAttrs(attrs, f)
		opt := metric.WithAttributeSet(attribute.NewSet(attrs...))
		if server {
			e.inst.rpcServerDuration.Record(ctx, seconds, opt)
		} else {
			e.inst.rpcClientDuration.Record(ctx, seconds, opt)
		}
		return attrs
	}

	if f.Method != "" {
		meth, _ := httpMethod(f.Method)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(meth))
	}
	if f.Status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(int(f.Status)))
	}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	if f.Scheme != "" {
		attrs = append(attrs, semconv.URLScheme(f.Scheme))
	}
	attrs = appendCommonMetricAttrs(attrs, f)
	opt := metric.WithAttributeSet(attribute.NewSet(attrs...))
	if server {
		e.inst.httpServerDuration.Record(ctx, seconds, opt)
		e.inst.httpServerReqBody.Record(ctx, int64(f.RequestBytes), opt)
		if f.Status != 0 {
			e.inst.httpServerRespBody.Record(ctx, int64(f.ResponseBytes), opt)
		}
	} else {
		e.inst.httpClientDuration.Record(ctx, seconds, opt)
		e.inst.httpClientReqBody.Record(ctx, int64(f.RequestBytes), opt)
		if f.Status != 0 {
			e.inst.httpClientRespBody.Record(ctx, int64(f.ResponseBytes), opt)
		}
	}
	return attrs
}

func appendCommonMetricAttrs(attrs []attribute.KeyValue, f *flow.Flow) []attribute.KeyValue {
	if host, port := serverAddr(f); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if port != 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	if v := f.ProtocolVersion(); v != "" {
		attrs = append(attrs, semconv.NetworkProtocolName("http"), semconv.NetworkProtocolVersion(v))
	}
	if et := errorType(f); et != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(et))
	}
	return attrs
}

// export collects and sends every service's data; services idle for
// MetricIdleTimeout (all of them when final) are sent one last time and
// dropped.
func (m *meters) export(ctx context.Context, final bool) error {
	now := time.Now()
	type job struct {
		e       *meterEntry
		evicted bool
	}
	m.mu.Lock()
	jobs := make([]job, 0, len(m.services))
	for s, e := range m.services {
		idle := final || now.Sub(e.lastUsed) >= m.cfg.MetricIdleTimeout
		if idle {
			delete(m.services, s)
		}
		jobs = append(jobs, job{e, idle})
	}
	m.mu.Unlock()

	var errs []error
	for _, j := range jobs {
		var rm metricdata.ResourceMetrics
		if err := j.e.reader.Collect(ctx, &rm); err != nil {
			errs = append(errs, fmt.Errorf("collect metrics: %w", err))
		} else if len(rm.ScopeMetrics) > 0 {
			ectx, cancel := context.WithTimeout(ctx, m.cfg.ExportTimeout)
			err := m.exporter.Export(ectx, &rm)
			cancel()
			if err != nil {
				m.exportErrors.Add(1)
				msg := err.Error()
				m.lastErr.Store(&msg)
				errs = append(errs, fmt.Errorf("export metrics to %s: %w", m.cfg.Endpoint, err))
			} else {
				m.exports.Add(1)
			}
		}
		if j.evicted {
			_ = j.e.provider.Shutdown(ctx) // only stops the reader; nothing to flush
		}
	}
	return errors.Join(errs...)
}

func (m *meters) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.services)
}

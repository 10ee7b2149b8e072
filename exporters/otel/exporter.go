package otel

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/flow"
)

// Exporter sends flows as OTLP spans and metrics.
//
// Why not a TracerProvider: a provider has one resource, and our spans come
// from many services, so it would take one provider (with its own batch
// processor, queue and goroutine) per service, each shutting down the shared
// OTLP exporter when evicted, and the SDK does not count what its queues
// drop. Instead each flow becomes a finished span (a tracetest.SpanStub
// snapshot — the SDK's public way to make a ReadOnlySpan) carrying its own
// resource, and one queue, one batcher and one otlptrace exporter serve all
// services: the OTLP exporter groups the spans of a batch by resource
// itself. Ids, times and parents are set exactly, as nothing is sampled or
// timed by an SDK.
type Exporter struct {
	cfg     Config
	queue   chan *flow.Flow
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once
	shut    sync.Once // the OTLP exporters are shut down once, by the first Close that gets there
	shutErr error

	traces  *otlptrace.Exporter // nil when traces are off
	meters  *meters             // nil when metrics are off
	spans   *spanBuilder
	metrics chan struct{} // closed when the metrics loop ended

	received, dropped, exported, failedSpans, exportErrors atomic.Uint64
	lastErr                                                atomic.Pointer[string]
}

var _ exporters.Exporter = (*Exporter)(nil)

// Stats counts what the exporter did with the flows it was given.
type Stats struct {
	Received     uint64 // flows passed to Export
	Dropped      uint64 // flows dropped because the queue was full (or the exporter closed)
	Queued       int    // flows waiting now
	QueueSize    int
	SpansSent    uint64 // spans the backend accepted
	SpansFailed  uint64 // spans in export requests that failed
	ExportErrors uint64 // failed span export requests

	MetricExports          uint64 // successful metric export requests (one per service per interval)
	MetricExportErrors     uint64
	MetricServices         int    // services with live instruments
	MetricServicesOverflow uint64 // flows not recorded as metrics: MaxServices reached

	LastError string // last export error, traces or metrics
}

// New connects (lazily: no request is sent until there is data) to the OTLP
// endpoint and starts the worker. Close stops it.
func New(ctx context.Context, cfg Config) (*Exporter, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("otel exporter: seed span ids: %w", err)
	}
	e := &Exporter{
		cfg:     cfg,
		queue:   make(chan *flow.Flow, cfg.MaxQueueSize),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		metrics: make(chan struct{}),
		spans:   newSpanBuilder(cfg, newResourceCache(4096), seed),
	}
	if cfg.Traces {
		e.traces, err = otlptrace.New(ctx, traceClient(cfg))
		if err != nil {
			return nil, fmt.Errorf("otel exporter: traces to %s: %w", cfg.Endpoint, err)
		}
	}
	if cfg.Metrics {
		exp, err := metricExporter(ctx, cfg)
		if err != nil {
			if e.traces != nil {
				_ = e.traces.Shutdown(ctx)
			}
			return nil, fmt.Errorf("otel exporter: metrics to %s: %w", cfg.Endpoint, err)
		}
		e.meters = newMeters(exp, cfg)
		go e.metricsLoop()
	} else {
		close(e.metrics)
	}
	go e.run()
	return e, nil
}

func traceClient(cfg Config) otlptrace.Client {
	if cfg.Protocol == ProtocolHTTP {
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(cfg.Endpoint), otlptracehttp.WithHeaders(cfg.Headers)}
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		if cfg.Compression == "gzip" {
			opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		}
		return otlptracehttp.NewClient(opts...)
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint), otlptracegrpc.WithHeaders(cfg.Headers)}
	if cfg.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	if cfg.Compression == "gzip" {
		opts = append(opts, otlptracegrpc.WithCompressor("gzip"))
	}
	return otlptracegrpc.NewClient(opts...)
}

func metricExporter(ctx context.Context, cfg Config) (sdkmetric.Exporter, error) {
	if cfg.Protocol == ProtocolHTTP {
		opts := []otlpmetrichttp.Option{otlpmetrichttp.WithEndpoint(cfg.Endpoint), otlpmetrichttp.WithHeaders(cfg.Headers)}
		if cfg.Insecure {
			opts = append(opts, otlpmetrichttp.WithInsecure())
		}
		if cfg.Compression == "gzip" {
			opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
		}
		return otlpmetrichttp.New(ctx, opts...)
	}
	opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(cfg.Endpoint), otlpmetricgrpc.WithHeaders(cfg.Headers)}
	if cfg.Insecure {
		opts = append(opts, otlpmetricgrpc.WithInsecure())
	}
	if cfg.Compression == "gzip" {
		opts = append(opts, otlpmetricgrpc.WithCompressor("gzip"))
	}
	return otlpmetricgrpc.New(ctx, opts...)
}

// Export queues f; when the queue is full f is dropped and counted. The
// flow must not change afterwards (the exporter reads it later).
func (e *Exporter) Export(f *flow.Flow) {
	e.received.Add(1)
	select {
	case <-e.stop:
		e.dropped.Add(1)
		return
	default:
	}
	select {
	case e.queue <- f:
	default:
		e.dropped.Add(1)
	}
}

// Close stops accepting flows, converts and sends everything queued, sends
// the metrics a last time and shuts the OTLP exporters down. When ctx ends
// first, what is left is abandoned and ctx's error returned. Calling it
// again returns the first shutdown's result.
func (e *Exporter) Close(ctx context.Context) error {
	e.closing.Do(func() { close(e.stop) })
	select {
	case <-e.done:
		// Flows that slipped in while the worker drained are counted lost.
		for drained := false; !drained; {
			select {
			case <-e.queue:
				e.dropped.Add(1)
			default:
				drained = true
			}
		}
	case <-ctx.Done():
		return fmt.Errorf("otel exporter: close: %w", ctx.Err())
	}
	select {
	case <-e.metrics:
	case <-ctx.Done():
		return fmt.Errorf("otel exporter: close: %w", ctx.Err())
	}
	e.shut.Do(func() { e.shutErr = e.shutdown(ctx) })
	return e.shutErr
}

// shutdown sends the metrics a last time and stops the OTLP exporters.
func (e *Exporter) shutdown(ctx context.Context) error {
	var errs []error
	if e.meters != nil {
		if err := e.meters.export(ctx, true); err != nil {
			errs = append(errs, err)
		}
		if err := e.meters.exporter.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("otel exporter: shut down metrics: %w", err))
		}
	}
	if e.traces != nil {
		if err := e.traces.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("otel exporter: shut down traces: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Stats returns the exporter's counters.
func (e *Exporter) Stats() Stats {
	s := Stats{
		Received:     e.received.Load(),
		Dropped:      e.dropped.Load(),
		Queued:       len(e.queue),
		QueueSize:    cap(e.queue),
		SpansSent:    e.exported.Load(),
		SpansFailed:  e.failedSpans.Load(),
		ExportErrors: e.exportErrors.Load(),
	}
	if p := e.lastErr.Load(); p != nil {
		s.LastError = *p
	}
	if m := e.meters; m != nil {
		s.MetricExports = m.exports.Load()
		s.MetricExportErrors = m.exportErrors.Load()
		s.MetricServices = m.count()
		s.MetricServicesOverflow = m.overflow.Load()
		if p := m.lastErr.Load(); p != nil && s.LastError == "" {
			s.LastError = *p
		}
	}
	return s
}

// run is the one worker: it turns queued flows into spans and metric
// records and sends spans in batches of MaxExportBatchSize, or whatever
// is there after BatchTimeout.
func (e *Exporter) run() {
	defer close(e.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, e.cfg.MaxExportBatchSize)
	timer := time.NewTimer(e.cfg.BatchTimeout)
	defer timer.Stop()
	var scratch []attribute.KeyValue

	flush := func() {
		if len(batch) > 0 {
			e.send(batch)
			clear(batch) // let the sent spans go
			batch = batch[:0]
		}
		timer.Reset(e.cfg.BatchTimeout)
	}
	handle := func(f *flow.Flow) {
		if f.Kind != flow.KindExchange {
			// A policy verdict is no operation of a service: neither a
			// span nor a request metric (its counts are Prometheus's,
			// its history ClickHouse's).
			return
		}
		// http.route, from the agent's route stage; without one an HTTP
		// span is named by its method alone (semantic conventions: a span
		// name must be low-cardinality, a raw path is not).
		route := ""
		if f.GRPC == nil {
			route = f.Route
		}
		if e.meters != nil {
			scratch = e.meters.record(f, route, scratch)
		}
		if e.traces != nil {
			batch = append(batch, e.spans.span(f, route))
			if len(batch) >= e.cfg.MaxExportBatchSize {
				flush()
			}
		}
	}
	for {
		select {
		case f := <-e.queue:
			handle(f)
		case <-timer.C:
			flush()
		case <-e.stop:
			for {
				select {
				case f := <-e.queue:
					handle(f)
				default:
					flush()
					return
				}
			}
		}
	}
}

func (e *Exporter) send(batch []sdktrace.ReadOnlySpan) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.ExportTimeout)
	defer cancel()
	if err := e.traces.ExportSpans(ctx, batch); err != nil {
		e.exportErrors.Add(1)
		e.failedSpans.Add(uint64(len(batch)))
		msg := fmt.Sprintf("export %d spans to %s: %v", len(batch), e.cfg.Endpoint, err)
		e.lastErr.Store(&msg)
		return
	}
	e.exported.Add(uint64(len(batch)))
}

func (e *Exporter) metricsLoop() {
	defer close(e.metrics)
	t := time.NewTicker(e.cfg.MetricInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = e.meters.export(context.Background(), false) // counted in Stats
		case <-e.stop:
			return
		}
	}
}

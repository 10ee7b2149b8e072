// Package otel sends flows to an OpenTelemetry backend over OTLP: one span
// per observed exchange (server or client side), and the golden-signal
// histograms as OTLP metrics for backends that do not scrape.
//
// Flows are complete when they reach us, so spans are built after the fact
// with their real start and end times and written straight to the OTLP
// trace exporter (see exporter.go for why not through a TracerProvider).
package otel

import (
	"fmt"
	"time"
)

// Protocols of Config.Protocol.
const (
	ProtocolGRPC = "grpc" // OTLP/gRPC, default port 4317
	ProtocolHTTP = "http" // OTLP/HTTP protobuf, default port 4318
)

// Config configures an Exporter. The zero value of every field but
// Endpoint means its default.
type Config struct {
	// Endpoint is the collector's host:port, e.g. 127.0.0.1:4317.
	Endpoint string
	// Protocol is "grpc" (default) or "http".
	Protocol string
	// Insecure sends in plaintext (no TLS).
	Insecure bool
	// Headers are sent with every export request (e.g. authentication).
	Headers map[string]string
	// Compression is "gzip" or "" (none).
	Compression string

	// Traces and Metrics choose the signals; when both are false both are on.
	Traces  bool
	Metrics bool

	// MaxQueueSize bounds the flows waiting to be converted and sent;
	// past it Export drops and counts (Stats().Dropped). Default 8192.
	MaxQueueSize int
	// MaxExportBatchSize is the most spans in one export request. Default 512.
	MaxExportBatchSize int
	// BatchTimeout is the longest a span waits for its batch to fill. Default 5s.
	BatchTimeout time.Duration
	// ExportTimeout bounds one export request, retries included. Default 10s.
	ExportTimeout time.Duration

	// MetricInterval is how often the histograms are exported. Default 60s.
	MetricInterval time.Duration
	// MetricIdleTimeout: a service whose instruments saw no flow for this
	// long is exported one last time and forgotten. Default 10m.
	MetricIdleTimeout time.Duration
	// MaxServices bounds the services with live instruments; flows of further
	// services are not recorded as metrics and are counted
	// (Stats().MetricServicesOverflow). Default 1024.
	MaxServices int

	// CaptureHeaders lists header names (lower case) exported as
	// http.request.header.<name> / http.response.header.<name> span
	// attributes. Secret headers never reach the exporter.
	CaptureHeaders []string
}

func (c Config) withDefaults() (Config, error) {
	if c.Endpoint == "" {
		return c, fmt.Errorf("otel exporter: no endpoint")
	}
	switch c.Protocol {
	case "":
		c.Protocol = ProtocolGRPC
	case ProtocolGRPC, ProtocolHTTP:
	default:
		return c, fmt.Errorf("otel exporter: protocol %q: want %q or %q", c.Protocol, ProtocolGRPC, ProtocolHTTP)
	}
	switch c.Compression {
	case "", "gzip":
	default:
		return c, fmt.Errorf("otel exporter: compression %q: want \"gzip\" or none", c.Compression)
	}
	if !c.Traces && !c.Metrics {
		c.Traces, c.Metrics = true, true
	}
	if c.MaxQueueSize <= 0 {
		c.MaxQueueSize = 8192
	}
	if c.MaxExportBatchSize <= 0 {
		c.MaxExportBatchSize = 512
	}
	if c.BatchTimeout <= 0 {
		c.BatchTimeout = 5 * time.Second
	}
	if c.ExportTimeout <= 0 {
		c.ExportTimeout = 10 * time.Second
	}
	if c.MetricInterval <= 0 {
		c.MetricInterval = 60 * time.Second
	}
	if c.MetricIdleTimeout <= 0 {
		c.MetricIdleTimeout = 10 * time.Minute
	}
	if c.MaxServices <= 0 {
		c.MaxServices = 1024
	}
	return c, nil
}

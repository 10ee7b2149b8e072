// Package prometheus turns flows into Prometheus golden-signal metrics named
// after the OpenTelemetry semantic conventions (http.server.request.duration
// becomes http_server_request_duration_seconds, …) and serves them, with
// exemplars carrying trace ids, in the OpenMetrics format.
//
// Export only queues the flow: the collector's goroutine pays for one
// channel send. A worker goroutine turns flows into observations through
// cached histogram children (no label hashing, no allocation per flow in the
// steady state). Each metric has a hard series limit; observations beyond it
// go to one series whose labels are all "_overflow_", and are counted.
package prometheus

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/flow"
)

// Defaults of Config.
const (
	DefaultMaxSeries = 2000
	DefaultQueueSize = 8192
)

// DurationBuckets are the explicit bucket boundaries (seconds) the
// semantic conventions recommend for http.*.request.duration and
// rpc.*.call.duration.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// SizeBuckets (bytes) for the body size histograms, for which the semantic
// conventions recommend none: powers of four from 64 B to 16 MiB.
var SizeBuckets = prom.ExponentialBuckets(64, 4, 10)

// Config configures the exporter. Zero values take the defaults.
type Config struct {
	// Exemplars attaches the trace id of each flow's traceparent to its
	// duration observation. Off by default: a trace id is a header value,
	// and /metrics is readable by whoever reaches its address.
	Exemplars bool
	// MaxSeries is the hard limit of series per metric (DefaultMaxSeries).
	MaxSeries int
	// QueueSize is how many flows may wait for the worker
	// (DefaultQueueSize); beyond it flows are dropped and counted.
	QueueSize int
	// Registerer receives the metrics (default prometheus.DefaultRegisterer).
	Registerer prom.Registerer
}

// Exporter implements exporters.Exporter for Prometheus.
type Exporter struct {
	queue chan *flow.Flow
	done  chan struct{}
	close sync.Once

	// Used by the worker only.
	names    *interner
	peers    *peers
	httpFams [2]*family[httpKey] // index: side (0 server, 1 client)
	rpcFams  [2]*family[rpcKey]
	policy   *policyFamily
	exemplar prom.Labels // reused: client_golang copies it into the exemplar
	// exemplars: trace ids of the traceparent header are exposed (opt-in:
	// a header value on an endpoint anyone reaching it can read).
	exemplars bool

	exported   atomic.Uint64 // flows observed
	dropped    atomic.Uint64 // flows dropped because the queue was full
	unobserved atomic.Uint64 // flows without an observer side (never happens with today's collector)
}

var _ exporters.Exporter = (*Exporter)(nil)

// httpKey is the label set of the HTTP metrics of one side.
type httpKey struct {
	service, peer, method, status, route, addr, port, proto, errType string
}

var httpLabels = []string{
	"observer", "service", "peer_service",
	"http_request_method", "http_response_status_code", "http_route",
	"server_address", "server_port", "network_protocol_version", "error_type",
}

// rpcKey is the label set of the RPC metrics of one side.
type rpcKey struct {
	service, peer, rpcService, rpcMethod, status, addr, port, errType string
}

var rpcLabels = []string{
	"observer", "service", "peer_service",
	"rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code",
	"server_address", "server_port", "error_type",
}

var sides = [2]string{"server", "client"}

// New registers the exporter's metrics and starts its worker.
func New(cfg Config) (*Exporter, error) {
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prom.DefaultRegisterer
	}
	e := &Exporter{
		queue:     make(chan *flow.Flow, cfg.QueueSize),
		done:      make(chan struct{}),
		names:     newInterner(4 * cfg.MaxSeries),
		peers:     newPeers(16 * cfg.MaxSeries),
		exemplar:  prom.Labels{"trace_id": ""},
		exemplars: cfg.Exemplars,
	}
	var all []prom.Collector
	for i, side := range sides {
		durName := "http_" + side + "_request_duration_seconds"
		reqName := "http_" + side + "_request_body_size_bytes"
		respName := "http_" + side + "_response_body_size_bytes"
		rpcName := "rpc_" + side + "_call_duration_seconds"
		dur := histogram(durName,
			fmt.Sprintf("Duration of HTTP %s requests seen by sextant (OpenTelemetry http.%s.request.duration).", side, side),
			DurationBuckets, httpLabels)
		req := histogram(reqName,
			fmt.Sprintf("Size of HTTP %s request bodies on the wire (OpenTelemetry http.%s.request.body.size).", side, side),
			SizeBuckets, httpLabels)
		resp := histogram(respName,
			fmt.Sprintf("Size of HTTP %s response bodies on the wire (OpenTelemetry http.%s.response.body.size).", side, side),
			SizeBuckets, httpLabels)
		rpc := histogram(rpcName,
			fmt.Sprintf("Duration of gRPC %s calls seen by sextant (OpenTelemetry rpc.%s.call.duration).", side, side),
			DurationBuckets, rpcLabels)
		all = append(all, dur, req, resp, rpc)
		e.httpFams[i] = newFamily([]string{durName, reqName, respName},
			[]*prom.HistogramVec{dur, req, resp}, len(httpLabels), httpValues(side), cfg.MaxSeries)
		e.rpcFams[i] = newFamily([]string{rpcName},
			[]*prom.HistogramVec{rpc}, len(rpcLabels), rpcValues(side), cfg.MaxSeries)
	}
	e.policy = newPolicyFamily(cfg.MaxSeries)
	all = append(all, e.policy.vec, &selfCollector{e: e})
	for _, c := range all {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("register Prometheus metrics: %w", err)
		}
	}
	go e.run()
	return e, nil
}

func histogram(name, help string, buckets []float64, labels []string) *prom.HistogramVec {
	return prom.NewHistogramVec(prom.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

func httpValues(side string) func(httpKey) []string {
	return func(k httpKey) []string {
		return []string{side, k.service, k.peer, k.method, k.status, k.route, k.addr, k.port, k.proto, k.errType}
	}
}

func rpcValues(side string) func(rpcKey) []string {
	return func(k rpcKey) []string {
		return []string{side, k.service, k.peer, "grpc", k.rpcService, k.rpcMethod, k.status, k.addr, k.port, k.errType}
	}
}

// Export queues f; it never blocks. f must not change afterwards.
// Export must not be called after (or concurrently with) Close.
func (e *Exporter) Export(f *flow.Flow) {
	select {
	case e.queue <- f:
	default:
		e.dropped.Add(1)
	}
}

// Close observes what is queued, then stops the worker.
func (e *Exporter) Close(ctx context.Context) error {
	e.close.Do(func() { close(e.queue) })
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("prometheus exporter: %d flows still queued: %w", len(e.queue), ctx.Err())
	}
}

// QueueStats says how full the queue is, for self-metrics.
func (e *Exporter) QueueStats() (length, capacity int, dropped uint64) {
	return len(e.queue), cap(e.queue), e.dropped.Load()
}

func (e *Exporter) run() {
	defer close(e.done)
	for f := range e.queue {
		e.observe(f)
	}
}

// observe turns one flow into observations. Worker goroutine only.
func (e *Exporter) observe(f *flow.Flow) {
	if f.Decided() {
		e.policy.observe(f)
	}
	if f.Kind != flow.KindExchange {
		e.exported.Add(1)
		return // a policy verdict has no golden signals
	}
	var side int
	switch f.Observer {
	case flow.SideServer:
		side = 0
	case flow.SideClient:
		side = 1
	default:
		e.unobserved.Add(1)
		return
	}
	e.exported.Add(1)

	svc := f.Process.Service()
	peer := e.peers.learn(f, svc)
	// The server's IP, not the :authority/Host it was asked as: /metrics
	// is readable by whoever reaches it, and must carry no header value
	// (docs/security.md); the address is what `ss` shows anyone anyway.
	addr := e.names.addr(f.Destination.Addr())
	port := e.names.port(f.Destination.Port())
	secs := f.Latency.Seconds()
	tid := ""
	if e.exemplars {
		tid = traceID(f.TraceParent)
	}
	complete := f.Outcome == flow.OutcomeComplete

	status := code(f.Status, f.Status != 0)
	errType := ""
	switch {
	case !complete:
		errType = f.Outcome.String()
	case f.Status >= 500, side == 1 && f.Status >= 400:
		errType = status
	}
	route := f.Route // set by the agent's route stage
	h := e.httpFams[side].get(httpKey{
		service: svc, peer: peer, method: method(f.Method), status: status, route: route,
		addr: addr, port: port, proto: f.ProtocolVersion(), errType: errType,
	})
	e.observeDuration(h, secs, tid)
	h.obs[1].Observe(float64(f.RequestBytes))
	h.obs[2].Observe(float64(f.ResponseBytes))

	if g := f.GRPC; g != nil {
		var gs string
		if g.Status != nil {
			gs = code(*g.Status, true)
		}
		rpcErr := ""
		switch {
		case !complete && g.Status == nil:
			rpcErr = f.Outcome.String()
		case g.Status != nil && *g.Status != 0:
			rpcErr = gs
		}
		r := e.rpcFams[side].get(rpcKey{
			service: svc, peer: peer, rpcService: g.Service, rpcMethod: g.Method, status: gs,
			addr: addr, port: port, errType: rpcErr,
		})
		e.observeDuration(r, secs, tid)
	}
}

func (e *Exporter) observeDuration(c *children, secs float64, tid string) {
	if tid == "" || c.exemplar == nil {
		c.obs[0].Observe(secs)
		return
	}
	e.exemplar["trace_id"] = tid
	c.exemplar.ObserveWithExemplar(secs, e.exemplar)
}

// Handler serves g in the OpenMetrics format when the scraper asks for it
// (exemplars exist only there) and in the classic text format otherwise.
func Handler(g prom.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

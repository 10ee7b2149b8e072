package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/collector/http2"
	promexp "github.com/sextant/sextant/exporters/prometheus"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/stage"
)

// DefaultMetricsListen is where the agent serves Prometheus metrics.
const DefaultMetricsListen = "127.0.0.1:9962"

// MetricsConfig configures the agent's Prometheus endpoint.
type MetricsConfig struct {
	// Listen is the TCP address of /metrics ("" for none). It is plain
	// HTTP, readable by anyone who reaches it: its labels hold only what
	// docs/security.md lists (route templates, methods, status codes,
	// workload names, peer addresses), never header values or query
	// strings.
	Listen string `yaml:"listen"`
	// MaxSeries and QueueSize tune the exporter (see
	// exporters/prometheus.Config).
	MaxSeries int `yaml:"maxSeries"`
	QueueSize int `yaml:"queueSize"`
	// Exemplars exposes the trace ids of traceparent headers as exemplars
	// (a header value: off by default, /metrics is readable by whoever
	// reaches it).
	Exemplars bool `yaml:"exemplars"`
	// Pprof also serves Go's profiles under /debug/pprof/ on the same
	// address: where the agent's CPU and memory go, on a live node.
	Pprof bool `yaml:"pprof"`
}

// agentMetrics is the Prometheus exporter fed by the collector, the agent's
// self-metrics, and the HTTP server of /metrics.
type agentMetrics struct {
	cfg MetricsConfig
	log *slog.Logger
	reg *prom.Registry
	// labelled registers into reg with component="agent".
	labelled prom.Registerer
	exp      *promexp.Exporter
	// also are registered with the self-metrics (e.g. the API's ring).
	also []prom.Collector
	self *selfMetrics
	http *serve.HTTP
	// ready: /metrics answers 503 until every stage started, so that a
	// scrape that succeeds means the probes are attached.
	ready atomic.Bool
}

// newMetrics builds the exporter (nil when metrics are off).
func newMetrics(cfg MetricsConfig, log *slog.Logger) (*agentMetrics, error) {
	if cfg.Listen == "" {
		return nil, nil
	}
	reg := prom.NewRegistry()
	// Every series says which daemon it comes from: the relay reports its
	// pipeline with the same families.
	labelled := prom.WrapRegistererWith(prom.Labels{"component": "agent"}, reg)
	exp, err := promexp.New(promexp.Config{MaxSeries: cfg.MaxSeries, QueueSize: cfg.QueueSize, Exemplars: cfg.Exemplars, Registerer: labelled})
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	labelled.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &agentMetrics{cfg: cfg, log: log, reg: reg, labelled: labelled, exp: exp}, nil
}

// stage binds the metrics address early (a taken port fails at once) and
// serves /metrics until the API stops.
func (m *agentMetrics) stage() stage.Stage {
	return stage.Stage{
		Name: "metrics",
		Start: func(context.Context) error {
			m.labelled.MustRegister(append(m.also, m.self)...)
			ln, err := net.Listen("tcp", m.cfg.Listen)
			if err != nil {
				return fmt.Errorf("metrics: listen on %s: %w", m.cfg.Listen, err)
			}
			m.http = &serve.HTTP{Listener: serve.LimitConns(ln, 0), Handler: m.gate(metricsHandler(m.reg, m.cfg.Pprof))}
			m.log.Info("serving Prometheus metrics", "url", "http://"+ln.Addr().String()+"/metrics")
			return nil
		},
		Run:  func(ctx context.Context) error { return m.http.Run(ctx) },
		Stop: func(ctx context.Context) error { return m.http.Stop(ctx) },
	}
}

func (m *agentMetrics) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "starting: the probes are not attached yet", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func metricsHandler(reg *prom.Registry, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promexp.Handler(reg))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// selfMetrics reports the agent's own counters at scrape time, from the
// Stats snapshots the probes, the collector and the ring keep anyway:
// nothing is done per record or per flow for them.
type selfMetrics struct {
	probes *probesStage
	api    *observerAPI // nil: metrics only
	coll   *collector.Collector
}

func desc(name, help string, labels ...string) *prom.Desc {
	return prom.NewDesc("sextant_"+name, help, labels, nil)
}

var (
	probeRecordsDesc = desc("probe_records_total", "Records read from the kernel ring buffer (rate() is the agent's events/s).")
	probeDropsDesc   = desc("probe_drops_total", "Traffic the kernel saw but could not deliver, by reason (ringbuf_full: the ring buffer was full). Input the probes stopped parsing is a decode error (sextant_decode_errors_total), not a drop.", "reason")
	probeInvalidDesc = desc("probe_invalid_records_total", "Records user space could not decode (a bug if ever non-zero).")
	probeRunDesc     = desc("probe_program_run_seconds_total", "CPU time spent in each eBPF program (only with BPF run-time statistics enabled).", "program")
	probeRunsDesc    = desc("probe_program_runs_total", "Runs of each eBPF program (only with BPF run-time statistics enabled).", "program")

	collRecordsDesc  = desc("collector_records_total", "Records the collector handled.")
	collFlowsDesc    = desc("collector_flows_total", "Flows (request/response exchanges) the collector emitted.")
	collConnsDesc    = desc("collector_connections", "Connections tracked now.")
	collStreamsDesc  = desc("collector_streams", "Exchanges in flight now: open HTTP/2 streams and HTTP/1 requests awaiting their response.")
	collEvictedDesc  = desc("collector_connections_evicted_total", "Connections closed to stay under the limit, or whose process was gone.")
	collOrphanDesc   = desc("collector_orphan_records_total", "Records of connections without state (first record lost, or out of scope).")
	collSeqGapsDesc  = desc("collector_sequence_gaps_total", "Record losses detected from sequence gaps.")
	decodeErrorsDesc = desc("decode_errors_total", "Decoding problems by protocol and kind.", "protocol", "kind")
	hpackUnknownDesc = desc("hpack_unknown_fields_total", "HTTP/2 header fields that referenced HPACK state the agent never saw.")
	h2StreamsDesc    = desc("http2_streams_incomplete_total", "HTTP/2 exchanges not seen whole, by reason.", "reason")
	h1EventsDesc     = desc("http1_events_total", "HTTP/1.x decoder events other than complete exchanges, by kind.", "kind")
)

func (s *selfMetrics) Describe(ch chan<- *prom.Desc) {
	for _, d := range []*prom.Desc{
		probeRecordsDesc, probeDropsDesc, probeInvalidDesc, probeRunDesc, probeRunsDesc,
		collRecordsDesc, collFlowsDesc, collConnsDesc, collStreamsDesc, collEvictedDesc, collOrphanDesc, collSeqGapsDesc,
		decodeErrorsDesc, hpackUnknownDesc, h2StreamsDesc, h1EventsDesc,
	} {
		ch <- d
	}
}

func (s *selfMetrics) Collect(ch chan<- prom.Metric) {
	counter := func(d *prom.Desc, v uint64, lvs ...string) {
		ch <- prom.MustNewConstMetric(d, prom.CounterValue, float64(v), lvs...)
	}
	gauge := func(d *prom.Desc, v int, lvs ...string) {
		ch <- prom.MustNewConstMetric(d, prom.GaugeValue, float64(v), lvs...)
	}

	ps := s.probes.Stats()
	counter(probeRecordsDesc, ps.Events)
	counter(probeInvalidDesc, ps.Invalid)
	for reason, n := range dropsByName(ps.Drops[:]) {
		counter(probeDropsDesc, n, reason)
	}
	for _, prog := range ps.Programs {
		if prog.RunCount == 0 {
			continue // statistics off, or never ran
		}
		ch <- prom.MustNewConstMetric(probeRunDesc, prom.CounterValue, float64(prog.RunTimeNs)/1e9, prog.Name)
		counter(probeRunsDesc, prog.RunCount, prog.Name)
	}

	cs := s.coll.Stats()
	collectorStats(cs, counter, gauge)
}

func collectorStats(cs collector.Stats, counter func(*prom.Desc, uint64, ...string), gauge func(*prom.Desc, int, ...string)) {
	counter(collRecordsDesc, cs.Events)
	counter(collFlowsDesc, cs.Flows)
	gauge(collConnsDesc, cs.Conns)
	gauge(collStreamsDesc, cs.Streams)
	counter(collEvictedDesc, cs.ConnsEvicted)
	counter(collOrphanDesc, cs.OrphanRecords)
	counter(collSeqGapsDesc, cs.SeqGaps)

	for k := range http2.NumErrorKinds {
		counter(decodeErrorsDesc, cs.HTTP2.Errors[k], "http2", k.String())
	}
	counter(decodeErrorsDesc, cs.ParseErrors, "http2", "kernel_parse_stopped")
	counter(decodeErrorsDesc, cs.HTTP1.Malformed, "http1", "malformed")
	counter(hpackUnknownDesc, cs.HTTP2.UnknownFields)
	counter(h2StreamsDesc, cs.HTTP2.StreamsJoinedMidway, "joined_midway")
	counter(h2StreamsDesc, cs.HTTP2.StreamsLost, "lost")
	counter(h2StreamsDesc, cs.HTTP2.StreamsEvicted, "evicted")

	h1 := cs.HTTP1
	for _, e := range []struct {
		kind string
		n    uint64
	}{
		{"truncated_headers", h1.TruncatedHeaders}, {"lost", h1.Lost}, {"resync", h1.Resyncs},
		{"hidden", h1.Hidden}, {"orphan_response", h1.OrphanResponses}, {"evicted", h1.Evicted},
		{"upgrade", h1.Upgrades},
	} {
		counter(h1EventsDesc, e.n, e.kind)
	}
}
